//! Authentication primitives without I/O: SCRAM-SHA-256 (with channel
//! binding), md5, the failed-login limiter, and what authentication reads
//! from X.509 certificates.

pub mod limit;
pub mod md5;
pub mod scram;
pub mod x509;
