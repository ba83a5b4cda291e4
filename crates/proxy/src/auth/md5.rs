//! PostgreSQL `md5` password authentication primitives.
//!
//! Pure functions, no I/O. PostgreSQL stores md5 passwords in `pg_authid` as
//! `"md5" + hex(md5(password + user))`; on the wire (AuthenticationMD5Password)
//! the client answers with `"md5" + hex(md5(hex(md5(password + user)) + salt))`.
//! Because the response only needs the stored hash, a pooler can answer
//! PostgreSQL's challenge from a stored `md5...` hash without the plaintext
//! ([`md5_response_from_stored`]) and can check a client's response against it
//! ([`verify_md5_response`]).

use ::md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// Length of a stored hash: `"md5"` + 32 lowercase hex digits.
const STORED_LEN: usize = 35;

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0x0f) as usize] as char);
    }
    s
}

/// The inner 32 hex digits of a well-formed stored hash, if `stored` is one.
fn stored_hex(stored: &str) -> Option<&str> {
    let hex = stored.strip_prefix("md5")?;
    let ok = stored.len() == STORED_LEN && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(hex)
}

fn salted(inner_hex: &str, salt: [u8; 4]) -> String {
    let mut h = Md5::new();
    h.update(inner_hex.as_bytes());
    h.update(salt);
    format!("md5{}", hex_lower(&h.finalize()))
}

/// The hash PostgreSQL stores for an md5 password: `"md5" + hex(md5(password + user))`.
pub fn md5_stored_hash(user: &str, password: &str) -> String {
    let mut h = Md5::new();
    h.update(password.as_bytes());
    h.update(user.as_bytes());
    format!("md5{}", hex_lower(&h.finalize()))
}

/// PostgreSQL md5 password response: `"md5" + hex(md5(hex(md5(password + user)) + salt))`.
pub fn md5_password_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    let stored = md5_stored_hash(user, password);
    salted(&stored[3..], salt)
}

/// The md5 response computed from a stored `"md5<32 hex>"` hash instead of the
/// plaintext password (md5 pass-through). `None` if `stored` is not such a hash
/// (e.g. a SCRAM verifier or a plaintext password). Uppercase hex is rejected,
/// as PostgreSQL only ever writes lowercase.
pub fn md5_response_from_stored(stored: &str, salt: [u8; 4]) -> Option<String> {
    stored_hex(stored).map(|hex| salted(hex, salt))
}

/// Checks a client's md5 response (the PasswordMessage payload, without the
/// trailing NUL) against a stored `"md5<32 hex>"` hash, in constant time with
/// respect to the expected value. A malformed `stored` never matches.
pub fn verify_md5_response(stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    match md5_response_from_stored(stored, salt) {
        // ct_eq on slices of different lengths returns false (length is not secret).
        Some(expected) => expected.as_bytes().ct_eq(response).into(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed independently (Python hashlib).
    #[test]
    fn known_answers() {
        assert_eq!(md5_password_response("postgres", "secret", [1, 2, 3, 4]), "md5bb41a296aab6baccb36ff243a562abff");
        assert_eq!(md5_stored_hash("postgres", "secret"), "md553f48b7c4b76a86ce72276c5755f217d");
        assert_eq!(
            md5_password_response("md5_user", "password", [0x2a, 0x3d, 0x8f, 0xe0]),
            "md562af4dd09bbb41884907a838a3233294"
        );
        assert_eq!(md5_stored_hash("md5_user", "password"), "md57cd2b9a92689eab2e58caf2da80afa15");
    }

    #[test]
    fn response_from_stored_matches_plaintext() {
        let salt = [9, 8, 7, 6];
        let stored = md5_stored_hash("alice", "s3cr3t");
        assert_eq!(md5_response_from_stored(&stored, salt).unwrap(), md5_password_response("alice", "s3cr3t", salt));
    }

    #[test]
    fn verify() {
        let salt = [0xde, 0xad, 0xbe, 0xef];
        let stored = md5_stored_hash("bob", "pw");
        let good = md5_password_response("bob", "pw", salt);
        assert!(verify_md5_response(&stored, salt, good.as_bytes()));
        assert!(!verify_md5_response(&stored, salt, md5_password_response("bob", "px", salt).as_bytes()));
        assert!(!verify_md5_response(&stored, [0, 0, 0, 0], good.as_bytes()));
        assert!(!verify_md5_response(&stored, salt, &good.as_bytes()[..34]));
        assert!(!verify_md5_response(&stored, salt, b""));
    }

    #[test]
    fn malformed_stored_hashes() {
        let salt = [1, 1, 1, 1];
        for bad in [
            "",
            "md5",
            "pw",
            "md553F48B7C4B76A86CE72276C5755F217D",
            "md553f48b7c4b76a86ce72276c5755f217",
            "md553f48b7c4b76a86ce72276c5755f217dd",
            "md553f48b7c4b76a86ce72276c5755f217g",
            "SCRAM-SHA-256$4096:c2FsdA==$a:b",
            "md553f48b7c4b76a86ce72276c5755f21é",
        ] {
            assert!(md5_response_from_stored(bad, salt).is_none(), "{bad:?}");
            assert!(!verify_md5_response(bad, salt, b"md5"), "{bad:?}");
        }
    }
}
