//! Bearer-token (JWT) checks and the per-source limiter of failed attempts.
//!
//! A token is accepted only when: it is signed with HS256 and the configured
//! secret (the token's `alg` header must say HS256 — `none` or any other
//! algorithm fails; `kid`, `jwk`, `jku`, `x5u` are ignored), it has `exp` and
//! is not expired, its `nbf` (if any) has passed, `aud`/`iss` match when
//! configured, and its lifetime (`exp - iat`, and `exp - now`) is at most
//! `jwt_max_ttl`. Its `role` claim then decides what it may do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pgbalancer_config::{ConfigError, Problem, RestApiConfig, MIN_JWT_SECRET_LEN};
use serde::Deserialize;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// GET endpoints.
    Read,
    /// Every endpoint, mutations included.
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Longest `Authorization` value looked at; longer tokens fail (401).
pub const MAX_TOKEN_LEN: usize = 8192;

/// The JWT settings in force; swapped whole on reload.
pub struct AuthSettings {
    /// `None` when `jwt_enabled: false`: every request is allowed.
    jwt: Option<Jwt>,
}

struct Jwt {
    key: DecodingKey,
    validation: Validation,
    max_ttl: Duration,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("AuthSettings").field("jwt_enabled", &self.jwt.is_some()).finish_non_exhaustive()
    }
}

impl AuthSettings {
    /// Builds the settings of `rest_api`, reading the secret (inline, file or
    /// variable) now. A missing, unreadable or short secret is an error
    /// (`origin` names the config file in messages).
    pub fn from_config(r: &RestApiConfig, origin: &str) -> Result<AuthSettings, ConfigError> {
        if !r.jwt_enabled {
            return Ok(AuthSettings { jwt: None });
        }
        let invalid = |msg: String| ConfigError::Invalid {
            file: origin.to_string(),
            problems: vec![Problem::new(secret_key(r), msg)],
        };
        let secret = r.jwt_secret()?.ok_or_else(|| invalid("required when rest_api.jwt_enabled is true".into()))?;
        if secret.len() < MIN_JWT_SECRET_LEN {
            return Err(invalid(format!("too short: at least {MIN_JWT_SECRET_LEN} bytes are required")));
        }
        // The algorithm is fixed here (validate() admits only HS256), never
        // taken from the token.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = 0;
        validation.validate_exp = true;
        // jsonwebtoken accepts exp == now; RFC 7519 says the token has
        // expired by then.
        validation.reject_tokens_expiring_in_less_than = 1;
        validation.validate_nbf = true;
        validation.validate_aud = r.jwt_audience.is_some();
        if let Some(aud) = &r.jwt_audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(iss) = &r.jwt_issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        Ok(AuthSettings {
            jwt: Some(Jwt { key: DecodingKey::from_secret(secret.as_bytes()), validation, max_ttl: r.jwt_max_ttl }),
        })
    }

    /// Settings that let every request through (`jwt_enabled: false`).
    pub fn disabled() -> AuthSettings {
        AuthSettings { jwt: None }
    }

    pub fn enabled(&self) -> bool {
        self.jwt.is_some()
    }

    /// Checks the value of an `Authorization` header (`None`: no header) and
    /// returns the token's role.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Role, AuthFailure> {
        let Some(jwt) = &self.jwt else { return Ok(Role::Admin) };
        let invalid = |why: &str| AuthFailure::Invalid(why.to_string());
        let header = authorization.ok_or_else(|| invalid("missing bearer token"))?;
        if header.len() > MAX_TOKEN_LEN {
            return Err(invalid("token too long"));
        }
        let header = std::str::from_utf8(header).map_err(|_| invalid("malformed Authorization header"))?;
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(invalid("expected Authorization: Bearer <token>")),
        };
        jwt.verify(token, unix_now())
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token or a bad one (401). A short reason, safe to return and to
    /// log: it never contains the token.
    Invalid(String),
    /// A valid token whose `role` is neither `read` nor `admin` (403).
    NoRole,
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            AuthFailure::Invalid(why) => f.write_str(why),
            AuthFailure::NoRole => f.write_str("token has no role claim 'read' or 'admin'"),
        }
    }
}

/// `jwt_secret` or `jwt_secret_file`, whichever is in use.
fn secret_key(r: &RestApiConfig) -> &'static str {
    if r.jwt_secret.is_none() && r.jwt_secret_file.is_some() {
        "rest_api.jwt_secret_file"
    } else {
        "rest_api.jwt_secret"
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The claims pgbalancer reads itself (jsonwebtoken checks exp/nbf/aud/iss).
/// Unknown claims are ignored; a duplicate key or a wrong type fails.
#[derive(Deserialize)]
struct Claims {
    /// Required, but checked by jsonwebtoken (so its error names the claim).
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    role: Option<String>,
}

impl Jwt {
    fn verify(&self, token: &str, now: u64) -> Result<Role, AuthFailure> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            AuthFailure::Invalid(match e.kind() {
                ErrorKind::InvalidSignature => "invalid signature".to_string(),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    "token algorithm is not the configured one".to_string()
                }
                ErrorKind::ExpiredSignature => "token expired".to_string(),
                ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_string(),
                ErrorKind::InvalidAudience => "wrong audience (aud)".to_string(),
                ErrorKind::InvalidIssuer => "wrong issuer (iss)".to_string(),
                ErrorKind::MissingRequiredClaim(c) => format!("missing claim {c}"),
                ErrorKind::InvalidClaimFormat(c) => format!("malformed claim {c}"),
                // Base64, JSON, UTF-8 errors and the like: no detail that
                // could echo parts of the token.
                _ => "malformed token".to_string(),
            })
        })?;
        let c = data.claims;
        let exp = c.exp.ok_or_else(|| AuthFailure::Invalid("missing claim exp".into()))?;
        let max = self.max_ttl.as_secs();
        let lifetime = exp.saturating_sub(c.iat.unwrap_or(now).min(now));
        if lifetime > max {
            return Err(AuthFailure::Invalid(format!("token lifetime {lifetime} s exceeds jwt_max_ttl ({max} s)")));
        }
        c.role.as_deref().and_then(Role::parse).ok_or(AuthFailure::NoRole)
    }
}

/// Failed authentications per source address: after `max` failures within
/// `window` (counted from the first), that address gets 429 until the window
/// ends. Memory is bounded: at most `capacity` addresses are tracked; when
/// full, expired entries go first, then the entry whose window began first.
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    capacity: usize,
    map: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration, capacity: usize) -> FailureLimiter {
        FailureLimiter { max, window, capacity: capacity.max(1), map: Mutex::new(HashMap::new()) }
    }

    /// How long `ip` must still wait, if it is limited now.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.map.lock().unwrap();
        let (start, n) = *map.get(&ip)?;
        let elapsed = now.saturating_duration_since(start);
        (n >= self.max && elapsed < self.window).then(|| self.window - elapsed)
    }

    /// Counts one failure of `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut map = self.map.lock().unwrap();
        if !map.contains_key(&ip) && map.len() >= self.capacity {
            map.retain(|_, (start, _)| now.saturating_duration_since(*start) < self.window);
            if map.len() >= self.capacity {
                if let Some(oldest) = map.iter().min_by_key(|(_, (start, _))| *start).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let e = map.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn settings(extra: impl FnOnce(&mut RestApiConfig)) -> AuthSettings {
        let mut r = RestApiConfig {
            enabled: true,
            jwt_secret: Some(pgbalancer_config::SecretRef::Plain(SECRET.into())),
            ..RestApiConfig::default()
        };
        extra(&mut r);
        AuthSettings::from_config(&r, "test").unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    }

    /// The role, or the failure as text ("no role" for [`AuthFailure::NoRole`]).
    fn check(s: &AuthSettings, tok: &str) -> Result<Role, String> {
        s.check(Some(format!("Bearer {tok}").as_bytes())).map_err(|e| match e {
            AuthFailure::Invalid(why) => why,
            AuthFailure::NoRole => "no role".into(),
        })
    }

    /// Unpadded base64url, to forge test tokens by hand.
    fn b64(v: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in v.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn good_tokens_and_roles() {
        let s = settings(|_| {});
        let now = unix_now();
        assert_eq!(check(&s, &token(json!({"exp": now + 60, "role": "read"}))), Ok(Role::Read));
        assert_eq!(check(&s, &token(json!({"exp": now + 60, "iat": now, "role": "admin"}))), Ok(Role::Admin));
        // Unknown header fields and claims are ignored; a kid is never looked up.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("../../etc/passwd".into());
        h.jku = Some("http://127.0.0.1:1/keys".into());
        let t =
            encode(&h, &json!({"exp": now + 60, "role": "read", "x": 1}), &EncodingKey::from_secret(SECRET.as_bytes()))
                .unwrap();
        assert_eq!(check(&s, &t), Ok(Role::Read));
        assert_eq!(s.check(Some(format!("bearer {t}").as_bytes())), Ok(Role::Read));
    }

    #[test]
    fn rejected_tokens() {
        let s = settings(|_| {});
        let now = unix_now();
        let good = token(json!({"exp": now + 60, "role": "admin"}));
        assert_eq!(s.check(None).unwrap_err(), AuthFailure::Invalid("missing bearer token".into()));
        assert!(s.check(Some(good.as_bytes())).is_err(), "no scheme");
        assert!(s.check(Some(format!("Basic {good}").as_bytes())).is_err());
        assert!(s.check(Some(&[0xff, 0xfe])).is_err());
        assert_eq!(check(&s, &"a".repeat(MAX_TOKEN_LEN)).unwrap_err(), "token too long");

        // Wrong secret, flipped signature, stripped signature.
        let other = encode(
            &Header::new(Algorithm::HS256),
            &json!({"exp": now + 60, "role": "admin"}),
            &EncodingKey::from_secret(b"another-secret-0123456789abcdef0123"),
        )
        .unwrap();
        assert_eq!(check(&s, &other).unwrap_err(), "invalid signature");
        let (body, sig) = good.rsplit_once('.').unwrap();
        let mut flipped = sig.as_bytes().to_vec();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        assert!(check(&s, &format!("{body}.{}", String::from_utf8(flipped).unwrap())).is_err());
        assert!(check(&s, &format!("{body}.")).is_err());
        assert!(check(&s, body).is_err());

        // alg none (any spelling) and other algorithms, unsigned or signed with the secret.
        let payload = b64(json!({"exp": now + 60, "role": "admin"}).to_string().as_bytes());
        for alg in ["none", "None", "NONE", "HS384", "HS512", "RS256", "ES256", "EdDSA"] {
            let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
            assert!(check(&s, &format!("{header}.{payload}.")).is_err(), "{alg}");
            assert!(check(&s, &format!("{header}.{payload}.{sig}")).is_err(), "{alg}");
        }
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &json!({"exp": now + 60, "role": "admin"}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(check(&s, &hs512).unwrap_err(), "token algorithm is not the configured one");

        // Claims.
        assert_eq!(check(&s, &token(json!({"role": "admin"}))).unwrap_err(), "missing claim exp");
        assert_eq!(check(&s, &token(json!({"exp": now - 1, "role": "admin"}))).unwrap_err(), "token expired");
        assert_eq!(
            check(&s, &token(json!({"exp": now + 60, "nbf": now + 30, "role": "admin"}))).unwrap_err(),
            "token not valid yet (nbf)"
        );
        assert!(check(&s, &token(json!({"exp": "soon", "role": "admin"}))).is_err());
        assert!(check(&s, &token(json!({"exp": now + 60, "role": 1}))).is_err());
        // Duplicate keys.
        let dup = b64(format!("{{\"exp\":{},\"role\":\"read\",\"role\":\"admin\"}}", now + 60).as_bytes());
        let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        assert!(check(&s, &format!("{header}.{dup}.{sig}")).is_err());
        // Without jwt_audience, aud is not checked.
        assert_eq!(check(&s, &token(json!({"exp": now + 60, "aud": "x", "role": "read"}))), Ok(Role::Read));
    }

    #[test]
    fn lifetime_is_capped() {
        let s = settings(|r| r.jwt_max_ttl = Duration::from_secs(600));
        let now = unix_now();
        assert!(check(&s, &token(json!({"exp": now + 600, "iat": now, "role": "read"}))).is_ok());
        let e = check(&s, &token(json!({"exp": now + 601, "iat": now, "role": "read"}))).unwrap_err();
        assert!(e.contains("exceeds jwt_max_ttl"), "{e}");
        // No iat: exp - now counts.
        assert!(check(&s, &token(json!({"exp": now + 3600, "role": "read"}))).is_err());
        // An iat in the future does not stretch the window.
        assert!(check(&s, &token(json!({"exp": now + 7200, "iat": now + 7000, "role": "read"}))).is_err());
        // An old iat makes a long-lived token fail even if it expires soon.
        assert!(check(&s, &token(json!({"exp": now + 10, "iat": now - 3600, "role": "read"}))).is_err());
    }

    #[test]
    fn audience_and_issuer() {
        let s = settings(|r| {
            r.jwt_audience = Some("pgbalancer".into());
            r.jwt_issuer = Some("ops".into());
        });
        let now = unix_now();
        let ok = json!({"exp": now + 60, "aud": "pgbalancer", "iss": "ops", "role": "read"});
        assert_eq!(check(&s, &token(ok)), Ok(Role::Read));
        let list = json!({"exp": now + 60, "aud": ["x", "pgbalancer"], "iss": "ops", "role": "read"});
        assert_eq!(check(&s, &token(list)), Ok(Role::Read));
        for bad in [
            json!({"exp": now + 60, "aud": "other", "iss": "ops", "role": "read"}),
            json!({"exp": now + 60, "iss": "ops", "role": "read"}),
            json!({"exp": now + 60, "aud": "pgbalancer", "iss": "evil", "role": "read"}),
            json!({"exp": now + 60, "aud": "pgbalancer", "role": "read"}),
        ] {
            assert!(check(&s, &token(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles() {
        let s = settings(|_| {});
        let now = unix_now();
        for bad in [json!({"exp": now + 60}), json!({"exp": now + 60, "role": "root"})] {
            assert_eq!(check(&s, &token(bad)).unwrap_err(), "no role");
        }
        assert_eq!(AuthSettings::disabled().check(None), Ok(Role::Admin));
    }

    #[test]
    fn secrets_are_checked_when_read() {
        let mut r = RestApiConfig {
            enabled: true,
            jwt_secret: Some(pgbalancer_config::SecretRef::Env { env: "PGB_ADMIN_TEST_SHORT".into() }),
            ..RestApiConfig::default()
        };
        std::env::set_var("PGB_ADMIN_TEST_SHORT", "short");
        let e = AuthSettings::from_config(&r, "f.yml").unwrap_err().to_string();
        assert_eq!(e, "f.yml: rest_api.jwt_secret: too short: at least 32 bytes are required");
        r.jwt_secret = None;
        let e = AuthSettings::from_config(&r, "f.yml").unwrap_err().to_string();
        assert!(e.contains("rest_api.jwt_secret: required"), "{e}");
        r.jwt_enabled = false;
        assert!(!AuthSettings::from_config(&r, "f.yml").unwrap().enabled());
        // Debug never shows the secret.
        assert!(!format!("{:?}", settings(|_| {})).contains("0123456789"));
    }

    #[test]
    fn limiter_blocks_after_max_failures_per_source() {
        let l = FailureLimiter::new(3, Duration::from_secs(60), 100);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.blocked(a, t0), None);
            l.record_failure(a, t0);
        }
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(l.blocked(b, t0), None, "other sources are not limited");
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(60)), None, "the window passed");
        l.record_failure(a, t0 + Duration::from_secs(61));
        assert_eq!(l.blocked(a, t0 + Duration::from_secs(61)), None, "a new window starts");
    }

    #[test]
    fn limiter_memory_is_bounded() {
        let l = FailureLimiter::new(2, Duration::from_secs(60), 4);
        let t0 = Instant::now();
        for i in 0..100u32 {
            l.record_failure(IpAddr::from(i.to_be_bytes()), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(l.len(), 4);
    }
}
