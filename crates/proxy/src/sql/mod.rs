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

/// The text after a leading `SELECT` keyword of one plain statement: `sql`
/// starts (after ASCII whitespace) with the word `select` in any case, and
/// one trailing `;` and trailing whitespace are cut off. For the quick looks
/// that spare the lexer the commonest statement; `None` for anything else.
pub(crate) fn plain_select_body(sql: &str) -> Option<&[u8]> {
    let s = sql.trim_start_matches(|c: char| c.is_ascii_whitespace()).as_bytes();
    let rest = s.get(..6).filter(|w| w.eq_ignore_ascii_case(b"select")).map(|_| &s[6..])?;
    // `selectx`, `select_1`, `select$1`: one longer word, not the keyword.
    if rest.first().is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80) {
        return None;
    }
    let body = rest.trim_ascii_end();
    Some(body.strip_suffix(b";").unwrap_or(body))
}

/// The words of a one-statement text with trailing semicolons dropped
/// (`BEGIN WORK;` gives `BEGIN`, `WORK`), for matching short commands
/// word by word without allocating.
pub(crate) fn command_words(text: &str) -> std::str::SplitAsciiWhitespace<'_> {
    text.trim().trim_end_matches(';').trim_end().split_ascii_whitespace()
}
