//! Authentication primitives without I/O.

pub mod md5;
pub mod scram;
