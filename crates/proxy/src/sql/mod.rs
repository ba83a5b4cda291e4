//! Just enough SQL understanding for pooling and routing: a lexer that
//! knows comments, literals and quoting, and classifiers built on it.
//!
//! - [`lexer`]: an allocation-free tokenizer over `&str` following
//!   PostgreSQL's lexical rules.
//! - [`session`]: which statements of a Query leave session state behind
//!   (transaction pooling pins the client or replays settings).

pub mod classify;
pub mod lexer;
pub mod session;
