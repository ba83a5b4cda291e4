//! The REST admin API (JWT-guarded) and Prometheus metrics.
//!
//! Not built yet: the operator's plane is its own issue. This crate exists so
//! the workspace has its final shape and one-way dependencies
//! (admin → proxy → config) from the start.
