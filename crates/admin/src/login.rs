//! `POST /api/v1/auth/login`: a configured admin or stats user exchanges
//! their password for a short-lived token.
//!
//! The password is checked against the user's entry in `users:` — a
//! SCRAM-SHA-256 verifier (SaltedPassword from the verifier's own salt and
//! iterations, then StoredKey and ServerKey compared in constant time) or a
//! plaintext password (compared in constant time). Every attempt costs one
//! key derivation whatever the outcome — unknown user, user with no
//! password, user in neither list, wrong password — and every failure gets
//! the same answer, so the endpoint does not tell which names exist.

use std::time::Duration;

use pgbalancer_config::Config;
use pgbalancer_proxy::auth::scram::{Verifier, DEFAULT_ITERATIONS};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Role;

/// Largest request body read (bytes).
pub const MAX_BODY: usize = 4096;
/// Lifetime of a login token (shorter when `jwt_max_ttl` is).
pub const LOGIN_TTL: Duration = Duration::from_secs(15 * 60);
/// Key derivations running at once; further logins wait for a place.
pub const MAX_CONCURRENT: usize = 2;
/// The one answer to every failed login.
pub const FAILED: &str = "invalid user name or password";

/// Salt of the derivation done when there is no verifier to check against.
const DUMMY_SALT: &[u8] = b"pgbalancer login: no such verifier";

/// The request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("LoginRequest").field("user", &self.user).finish_non_exhaustive()
    }
}

impl LoginRequest {
    /// The body, which must be a JSON object with exactly the string fields
    /// `user` and `password` (no array form, no duplicate keys).
    pub fn parse(body: &[u8]) -> Option<LoginRequest> {
        let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
        if body[start] != b'{' {
            return None;
        }
        serde_json::from_slice(body).ok()
    }
}

/// Whether login is possible with `config` at all (`Err`: why not, for a 403).
pub fn enabled(config: &Config) -> Result<(), String> {
    if config.admin_users.is_empty() && config.stats_users.is_empty() {
        return Err("login is disabled: no admin_users or stats_users are configured".into());
    }
    Ok(())
}

/// The role `user` gets with `password`, or `None`. Blocking: one PBKDF2
/// derivation (run it off the async workers).
pub fn authenticate(config: &Config, user: &str, password: &str) -> Option<Role> {
    let stored = config.users.iter().find(|u| u.name == user).and_then(|u| u.password.as_deref());
    let verifier = stored.filter(|s| s.starts_with("SCRAM-SHA-256$")).and_then(|s| Verifier::parse(s).ok());
    let matches = match (stored, verifier) {
        (_, Some(v)) => {
            let given = Verifier::from_password(password, &v.salt, v.iterations);
            bool::from(given.stored_key.ct_eq(&v.stored_key) & given.server_key.ct_eq(&v.server_key))
        }
        // An md5 hash is not a password: it never matches (validation
        // refuses one for admin_users/stats_users; this holds regardless).
        (Some(hash), None) if pgbalancer_config::is_md5_hash(hash) => {
            std::hint::black_box(Verifier::from_password(password, DUMMY_SALT, DEFAULT_ITERATIONS));
            false
        }
        (Some(plain), None) => {
            // As costly as a verifier's check, then a comparison of equal-length digests.
            std::hint::black_box(Verifier::from_password(password, DUMMY_SALT, DEFAULT_ITERATIONS));
            bool::from(Sha256::digest(password.as_bytes()).ct_eq(&Sha256::digest(plain.as_bytes())))
        }
        (None, None) => {
            std::hint::black_box(Verifier::from_password(password, DUMMY_SALT, DEFAULT_ITERATIONS));
            false
        }
    };
    if !matches || password.is_empty() {
        return None;
    }
    if config.admin_users.iter().any(|u| u == user) {
        Some(Role::Admin)
    } else if config.stats_users.iter().any(|u| u == user) {
        Some(Role::Read)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbalancer_config::UserEntry;

    fn config() -> Config {
        let user = |name: &str, password: Option<String>| UserEntry { name: name.into(), password };
        Config {
            users: vec![
                user("ops", Some(Verifier::generate("ops-password").to_string())),
                user("viewer", Some("viewer-plain".into())),
                user("app", Some(Verifier::generate("app-password").to_string())),
                user("nopass", None),
            ],
            admin_users: vec!["ops".into(), "nopass".into()],
            stats_users: vec!["viewer".into(), "ops".into()],
            ..Config::default()
        }
    }

    #[test]
    fn roles_from_the_lists() {
        let c = config();
        assert_eq!(authenticate(&c, "ops", "ops-password"), Some(Role::Admin), "admin wins over stats");
        assert_eq!(authenticate(&c, "viewer", "viewer-plain"), Some(Role::Read));
    }

    #[test]
    fn every_failure_is_none() {
        let c = config();
        assert_eq!(authenticate(&c, "ops", "wrong"), None);
        assert_eq!(authenticate(&c, "ops", ""), None);
        assert_eq!(authenticate(&c, "ops", "ops-password "), None);
        assert_eq!(authenticate(&c, "viewer", "viewer-plai"), None);
        assert_eq!(authenticate(&c, "viewer", "viewer-plainx"), None);
        // Right password, but in neither list.
        assert_eq!(authenticate(&c, "app", "app-password"), None);
        // No such user; a user without a password (trust) never logs in.
        assert_eq!(authenticate(&c, "ghost", "x"), None);
        assert_eq!(authenticate(&c, "nopass", ""), None);
        assert_eq!(authenticate(&c, "nopass", "anything"), None);
        // A verifier's text is not a password.
        let v = c.users[0].password.clone().unwrap();
        assert_eq!(authenticate(&c, "ops", &v), None);
    }

    #[test]
    fn verifiers_of_another_implementation_match() {
        // postgres-protocol: what tokio-postgres and bctl password-hash use.
        let v = postgres_protocol::password::scram_sha_256(b"pencil");
        let c = Config {
            users: vec![UserEntry { name: "u".into(), password: Some(v) }],
            admin_users: vec!["u".into()],
            ..Config::default()
        };
        assert_eq!(authenticate(&c, "u", "pencil"), Some(Role::Admin));
        assert_eq!(authenticate(&c, "u", "Pencil"), None);
    }

    #[test]
    fn an_md5_hash_is_never_a_password() {
        // An md5 hash as PostgreSQL stores it ("md5" and 32 hex digits).
        let hash = "md5f1c3b9a2c2d8f6e0d7b2a3c4e5f60718".to_string();
        let c = Config {
            users: vec![UserEntry { name: "u".into(), password: Some(hash.clone()) }],
            admin_users: vec!["u".into()],
            ..Config::default()
        };
        assert_eq!(authenticate(&c, "u", &hash), None, "the hash itself");
        assert_eq!(authenticate(&c, "u", "secret"), None, "md5 users cannot log in to the API");
    }

    #[test]
    fn disabled_without_lists() {
        assert!(enabled(&Config::default()).unwrap_err().contains("no admin_users or stats_users"));
        assert!(enabled(&config()).is_ok());
    }

    #[test]
    fn debug_hides_the_password() {
        let r: LoginRequest = serde_json::from_str(r#"{"user":"ops","password":"hunter2"}"#).unwrap();
        assert!(!format!("{r:?}").contains("hunter2"));
        let parse = |s: &str| LoginRequest::parse(s.as_bytes()).map(|r| (r.user, r.password));
        assert_eq!(parse(" {\"user\":\"ops\",\"password\":\"x\"}\n"), Some(("ops".into(), "x".into())));
        for bad in [
            r#"{"user":"ops","password":"x","role":"admin"}"#,
            r#"{"user":"ops"}"#,
            r#"{"user":"ops","password":"x","password":"y"}"#,
            r#"["ops","x"]"#,
            r#"{"user":"ops","password":null}"#,
            "",
            "  ",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
