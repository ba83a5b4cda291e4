//! Bearer-token (JWT) checks, the signer of login tokens, and the
//! per-source limiter of failed attempts.
//!
//! A token is accepted only when: it is signed with the configured
//! algorithm and key — HS256 with the secret, or RS256/EdDSA with the public
//! key of `jwt_public_key_file` — and its `alg` header names that algorithm
//! (`none` or any other fails, so an HS256 token "signed" with the RSA public
//! key as secret is refused; `kid`, `jwk`, `jku`, `x5u` are ignored), it has
//! `exp` and is not expired, its `nbf` (if any) has passed, `aud`/`iss`
//! match when configured, and its lifetime (`exp - iat`, and `exp - now`) is
//! at most `jwt_max_ttl`. Its `role` claim then decides what it may do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pgbalancer_config::{ConfigError, JwtAlgorithm, Problem, RestApiConfig, MIN_JWT_SECRET_LEN};
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

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// Longest `Authorization` value looked at; longer tokens fail (401).
pub const MAX_TOKEN_LEN: usize = 8192;

/// Smallest RSA key accepted (bits).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest key file read.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The JWT settings in force; swapped whole on reload.
pub struct AuthSettings {
    /// `None` when `jwt_enabled: false`: every request is allowed.
    jwt: Option<Jwt>,
    /// What `POST /api/v1/auth/login` signs with, or why it cannot.
    signer: Result<TokenSigner, String>,
}

struct Jwt {
    key: DecodingKey,
    validation: Validation,
    max_ttl: Duration,
}

/// Makes tokens the settings they were built with accept (login).
pub struct TokenSigner {
    algorithm: Algorithm,
    key: EncodingKey,
    audience: Option<String>,
    issuer: Option<String>,
    max_ttl: Duration,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Never the secret or a key.
        f.debug_struct("AuthSettings")
            .field("jwt_enabled", &self.jwt.is_some())
            .field("can_sign", &self.signer.is_ok())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TokenSigner").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

fn jwt_algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

impl AuthSettings {
    /// Builds the settings of `rest_api`, reading the secret (inline, file or
    /// variable) or the key files now. A missing, unreadable or short secret,
    /// a key that is not one of the configured algorithm, an RSA key under
    /// [`MIN_RSA_BITS`], or a private key that is not the public key's other
    /// half is an error (`origin` names the config file in messages).
    pub fn from_config(r: &RestApiConfig, origin: &str) -> Result<AuthSettings, ConfigError> {
        if !r.jwt_enabled {
            return Ok(AuthSettings::disabled());
        }
        let invalid = |key: &str, msg: String| ConfigError::Invalid {
            file: origin.to_string(),
            problems: vec![Problem::new(key, msg)],
        };
        let algorithm = jwt_algorithm(r.jwt_algorithm);
        let (decoding, encoding) = match r.jwt_algorithm {
            JwtAlgorithm::HS256 => {
                let key = secret_key(r);
                let secret =
                    r.jwt_secret()?.ok_or_else(|| invalid(key, "required when rest_api.jwt_enabled is true".into()))?;
                if secret.len() < MIN_JWT_SECRET_LEN {
                    return Err(invalid(key, format!("too short: at least {MIN_JWT_SECRET_LEN} bytes are required")));
                }
                (DecodingKey::from_secret(secret.as_bytes()), Ok(EncodingKey::from_secret(secret.as_bytes())))
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::EdDSA => {
                const PUBLIC: &str = "rest_api.jwt_public_key_file";
                const PRIVATE: &str = "rest_api.jwt_private_key_file";
                let path = r
                    .jwt_public_key_file
                    .as_deref()
                    .ok_or_else(|| invalid(PUBLIC, format!("required when jwt_algorithm is {}", r.jwt_algorithm)))?;
                let pem = read_key_file(path).map_err(|m| invalid(PUBLIC, m))?;
                let decoding =
                    public_key(algorithm, &pem).map_err(|m| invalid(PUBLIC, format!("{}: {m}", path.display())))?;
                let encoding = match r.jwt_private_key_file.as_deref() {
                    None => Err(format!(
                        "login is disabled: rest_api.jwt_algorithm is {} and rest_api.jwt_private_key_file is not set \
                         (pgbalancer has no key to sign tokens with)",
                        r.jwt_algorithm
                    )),
                    Some(path) => {
                        let pem = read_key_file(path).map_err(|m| invalid(PRIVATE, m))?;
                        let key = private_key(algorithm, &pem)
                            .map_err(|m| invalid(PRIVATE, format!("{}: {m}", path.display())))?;
                        if !pair_matches(algorithm, &key, &decoding) {
                            return Err(invalid(
                                PRIVATE,
                                format!(
                                    "{}: not the private key of rest_api.jwt_public_key_file ({})",
                                    path.display(),
                                    r.jwt_public_key_file.as_deref().unwrap_or(Path::new("")).display()
                                ),
                            ));
                        }
                        Ok(key)
                    }
                };
                (decoding, encoding)
            }
        };
        // The algorithm is fixed here, never taken from the token.
        let mut validation = Validation::new(algorithm);
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
        let signer = encoding.map(|key| TokenSigner {
            algorithm,
            key,
            audience: r.jwt_audience.clone(),
            issuer: r.jwt_issuer.clone(),
            max_ttl: r.jwt_max_ttl,
        });
        Ok(AuthSettings { jwt: Some(Jwt { key: decoding, validation, max_ttl: r.jwt_max_ttl }), signer })
    }

    /// Settings that let every request through (`jwt_enabled: false`).
    pub fn disabled() -> AuthSettings {
        AuthSettings {
            jwt: None,
            signer: Err("login is disabled: rest_api.jwt_enabled is false, so the API needs no token".into()),
        }
    }

    /// What login signs tokens with, or why it cannot (a message for a 403).
    pub fn signer(&self) -> Result<&TokenSigner, &str> {
        self.signer.as_ref().map_err(String::as_str)
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

impl TokenSigner {
    /// How long a token may live at most (`jwt_max_ttl`).
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// A token for `subject` with `role`, valid `ttl` (capped at
    /// `jwt_max_ttl`) from now, with the configured `aud`/`iss`.
    pub fn mint(&self, subject: &str, role: Role, ttl: Duration) -> Result<String, String> {
        let now = unix_now();
        let ttl = ttl.min(self.max_ttl).as_secs().max(1);
        let mut claims = serde_json::json!({"sub": subject, "role": role.as_str(), "iat": now, "exp": now + ttl});
        if let Some(a) = &self.audience {
            claims["aud"] = a.as_str().into();
        }
        if let Some(i) = &self.issuer {
            claims["iss"] = i.as_str().into();
        }
        let mut header = Header::new(self.algorithm);
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| format!("cannot sign the token: {e}"))
    }
}

/// Reads a PEM key file (at most 64 KiB).
fn read_key_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1).read_to_string(&mut text).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(format!("{shown}: larger than {MAX_KEY_FILE} bytes: not a PEM key"));
    }
    Ok(text)
}

/// The label of the first PEM block (`PUBLIC KEY`, `RSA PRIVATE KEY`, ...).
fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let len = pem[start..].find("-----")?;
    Some(&pem[start..start + len])
}

/// The verification key of `algorithm` (RS256 or EdDSA) from a PEM public
/// key, checked now so that a bad key fails at start-up (or reload), not as
/// "invalid signature" on every request. Messages never quote the file.
pub fn public_key(algorithm: Algorithm, pem: &str) -> Result<DecodingKey, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::traits::PublicKeyParts;
    let label = pem_label(pem).ok_or("not a PEM file (no -----BEGIN ...----- line)")?;
    if label.contains("PRIVATE") {
        return Err(format!(
            "holds a private key ({label}); jwt_public_key_file needs the public key \
             (e.g. `openssl pkey -in KEY -pubout`)"
        ));
    }
    match algorithm {
        Algorithm::RS256 => {
            if !matches!(label, "PUBLIC KEY" | "RSA PUBLIC KEY") {
                return Err(format!("a PEM {label}, not an RSA public key (PUBLIC KEY or RSA PUBLIC KEY)"));
            }
            let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| "not an RSA public key".to_string())?;
            let rsa = rsa::RsaPublicKey::from_pkcs1_der(key.as_bytes())
                .map_err(|e| format!("not a usable RSA public key: {e}"))?;
            let bits = rsa.n().bits();
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"));
            }
            Ok(key)
        }
        Algorithm::EdDSA => {
            if label != "PUBLIC KEY" {
                return Err(format!("a PEM {label}, not an Ed25519 public key (PUBLIC KEY)"));
            }
            let key = DecodingKey::from_ed_pem(pem.as_bytes()).map_err(|_| "not an Ed25519 public key".to_string())?;
            // jsonwebtoken slices 32 bytes off the key when verifying: a
            // shorter one must never get that far.
            if key.as_bytes().len() != 32 {
                return Err("not an Ed25519 public key (the key is not 32 bytes)".into());
            }
            // A point that is not on the curve fails here rather than on
            // every request.
            jsonwebtoken::crypto::verify("AA", b"probe", &key, algorithm)
                .map_err(|_| "not a valid Ed25519 public key".to_string())?;
            Ok(key)
        }
        other => Err(format!("{other:?} keys are not read from files")),
    }
}

/// The signing key of `algorithm` (RS256 or EdDSA) from a PEM private key.
pub fn private_key(algorithm: Algorithm, pem: &str) -> Result<EncodingKey, String> {
    let label = pem_label(pem).ok_or("not a PEM file (no -----BEGIN ...----- line)")?;
    if label.contains("ENCRYPTED") {
        return Err("an encrypted private key; pgbalancer needs it unencrypted (PKCS#8 PRIVATE KEY)".into());
    }
    if !label.contains("PRIVATE KEY") {
        return Err(format!("a PEM {label}, not a private key"));
    }
    match algorithm {
        Algorithm::RS256 => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| "not an RSA private key".to_string())?;
            let rsa = rsa::RsaPrivateKey::from_pkcs1_der(key.inner())
                .map_err(|e| format!("not a usable RSA private key: {e}"))?;
            let bits = rsa.n().bits();
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"));
            }
            Ok(key)
        }
        Algorithm::EdDSA => {
            EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|_| "not an Ed25519 private key".to_string())
        }
        other => Err(format!("{other:?} keys are not read from files")),
    }
}

/// Whether what `private` signs, `public` verifies.
fn pair_matches(algorithm: Algorithm, private: &EncodingKey, public: &DecodingKey) -> bool {
    match jsonwebtoken::crypto::sign(b"pgbalancer key pair check", private, algorithm) {
        Ok(sig) => jsonwebtoken::crypto::verify(&sig, b"pgbalancer key pair check", public, algorithm).unwrap_or(false),
        Err(_) => false,
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
        let ip = source_key(ip);
        let map = self.map.lock().unwrap();
        let (start, n) = *map.get(&ip)?;
        let elapsed = now.saturating_duration_since(start);
        (n >= self.max && elapsed < self.window).then(|| self.window - elapsed)
    }

    /// Counts one failure of `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let ip = source_key(ip);
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

/// The source a failure counts against: an IPv4 address (IPv4-mapped IPv6
/// included), or an IPv6 /64 — one host can use every address of its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(std::net::Ipv6Addr::from(o))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    #[test]
    fn failures_count_per_ipv6_64_and_mapped_ipv4() {
        let l = FailureLimiter::new(2, Duration::from_secs(60), 100);
        let now = Instant::now();
        l.record_failure("2001:db8::1".parse().unwrap(), now);
        l.record_failure("2001:db8::2:3".parse().unwrap(), now);
        assert!(l.blocked("2001:db8::ffff".parse().unwrap(), now).is_some(), "one /64 is one source");
        assert!(l.blocked("2001:db8:0:1::1".parse().unwrap(), now).is_none(), "another /64 is not");
        l.record_failure("::ffff:10.0.0.1".parse().unwrap(), now);
        l.record_failure("10.0.0.1".parse().unwrap(), now);
        assert!(l.blocked("10.0.0.1".parse().unwrap(), now).is_some(), "mapped IPv4 is IPv4");
    }
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

    /// PEM (private, public) of a fresh RSA key of `bits`.
    fn rsa_pem(bits: usize) -> (String, String) {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), bits).unwrap();
        let private = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        (private, key.to_public_key().to_public_key_pem(LineEnding::LF).unwrap())
    }

    /// One 2048-bit RSA key for the whole test binary (slow to make).
    fn rsa_2048() -> &'static (String, String) {
        static KEY: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
        KEY.get_or_init(|| rsa_pem(2048))
    }

    /// PEM (private, public) of a fresh Ed25519 key.
    fn ed25519_pem() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        (key.serialize_pem(), key.public_key_pem())
    }

    /// Settings for `alg` with key files holding `public` and `private`.
    fn key_settings(
        alg: JwtAlgorithm,
        public: &str,
        private: Option<&str>,
    ) -> (Result<AuthSettings, ConfigError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let pub_path = dir.path().join("jwt.pub");
        std::fs::write(&pub_path, public).unwrap();
        let priv_path = private.map(|p| {
            let path = dir.path().join("jwt.key");
            std::fs::write(&path, p).unwrap();
            path
        });
        let r = RestApiConfig {
            enabled: true,
            jwt_algorithm: alg,
            jwt_public_key_file: Some(pub_path),
            jwt_private_key_file: priv_path,
            jwt_audience: Some("pgbalancer".into()),
            ..RestApiConfig::default()
        };
        (AuthSettings::from_config(&r, "f.yml"), dir)
    }

    fn signed(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
        encode(&Header::new(alg), &claims, key).unwrap()
    }

    #[test]
    fn rs256_and_eddsa_verify_with_the_public_key() {
        let now = unix_now();
        let claims = json!({"exp": now + 60, "aud": "pgbalancer", "role": "admin"});
        let (rsa_private, rsa_public) = rsa_2048();
        let (ed_private, ed_public) = ed25519_pem();
        let rsa_key = EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap();
        let ed_key = EncodingKey::from_ed_pem(ed_private.as_bytes()).unwrap();

        let (s, _dir) = key_settings(JwtAlgorithm::RS256, rsa_public, None);
        let s = s.unwrap();
        assert_eq!(check(&s, &signed(Algorithm::RS256, &rsa_key, claims.clone())), Ok(Role::Admin));
        // Other algorithms, with any key, are refused: EdDSA, RS512 with the
        // same RSA key, HS256 with the public key (PEM or DER) as secret
        // (scenario 52), and alg none.
        for t in [
            signed(Algorithm::EdDSA, &ed_key, claims.clone()),
            signed(Algorithm::RS512, &rsa_key, claims.clone()),
            signed(Algorithm::PS256, &rsa_key, claims.clone()),
            signed(Algorithm::HS256, &EncodingKey::from_secret(rsa_public.as_bytes()), claims.clone()),
            signed(Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes()), claims.clone()),
        ] {
            assert_eq!(check(&s, &t).unwrap_err(), "token algorithm is not the configured one");
        }
        let der = DecodingKey::from_rsa_pem(rsa_public.as_bytes()).unwrap().as_bytes().to_vec();
        let t = signed(Algorithm::HS256, &EncodingKey::from_secret(&der), claims.clone());
        assert!(check(&s, &t).is_err());
        let payload = b64(claims.to_string().as_bytes());
        assert!(check(&s, &format!("{}.{payload}.", b64(br#"{"alg":"none"}"#))).is_err());
        // Another RSA key: a bad signature.
        let (other_private, _) = rsa_pem(2048);
        let other = EncodingKey::from_rsa_pem(other_private.as_bytes()).unwrap();
        assert_eq!(check(&s, &signed(Algorithm::RS256, &other, claims.clone())).unwrap_err(), "invalid signature");
        // Claims are checked as with HS256.
        let expired = json!({"exp": now - 1, "aud": "pgbalancer", "role": "admin"});
        assert_eq!(check(&s, &signed(Algorithm::RS256, &rsa_key, expired)).unwrap_err(), "token expired");
        let no_aud = json!({"exp": now + 60, "role": "admin"});
        assert!(check(&s, &signed(Algorithm::RS256, &rsa_key, no_aud)).is_err());
        assert!(s.signer().unwrap_err().contains("jwt_private_key_file is not set"), "{:?}", s.signer().err());

        let (s, _dir) = key_settings(JwtAlgorithm::EdDSA, &ed_public, None);
        let s = s.unwrap();
        assert_eq!(check(&s, &signed(Algorithm::EdDSA, &ed_key, claims.clone())), Ok(Role::Admin));
        assert!(check(&s, &signed(Algorithm::RS256, &rsa_key, claims.clone())).is_err());
        let t = signed(Algorithm::HS256, &EncodingKey::from_secret(ed_public.as_bytes()), claims.clone());
        assert_eq!(check(&s, &t).unwrap_err(), "token algorithm is not the configured one");
        let (other_private, _) = ed25519_pem();
        let other = EncodingKey::from_ed_pem(other_private.as_bytes()).unwrap();
        assert_eq!(check(&s, &signed(Algorithm::EdDSA, &other, claims)).unwrap_err(), "invalid signature");
    }

    #[test]
    fn login_signer_makes_tokens_the_settings_accept() {
        let (rsa_private, rsa_public) = rsa_2048();
        let (ed_private, ed_public) = ed25519_pem();
        for (alg, private, public) in [
            (JwtAlgorithm::RS256, rsa_private.as_str(), rsa_public.as_str()),
            (JwtAlgorithm::EdDSA, ed_private.as_str(), ed_public.as_str()),
        ] {
            let (s, _dir) = key_settings(alg, public, Some(private));
            let s = s.unwrap();
            let t = s.signer().unwrap().mint("ops", Role::Read, Duration::from_secs(60)).unwrap();
            assert_eq!(check(&s, &t), Ok(Role::Read), "{alg}");
            let header = jsonwebtoken::decode_header(&t).unwrap();
            assert_eq!(header.alg, jwt_algorithm(alg));
        }
        let s = settings(|r| r.jwt_max_ttl = Duration::from_secs(120));
        let signer = s.signer().unwrap();
        assert_eq!(signer.max_ttl(), Duration::from_secs(120));
        // A longer ttl is cut to jwt_max_ttl: the token is accepted.
        let t = signer.mint("ops", Role::Admin, Duration::from_secs(900)).unwrap();
        assert_eq!(check(&s, &t), Ok(Role::Admin));
        assert!(AuthSettings::disabled().signer().unwrap_err().contains("jwt_enabled is false"));
    }

    #[test]
    fn bad_key_files_are_refused_when_read() {
        let (rsa_private, rsa_public) = rsa_2048();
        let (ed_private, ed_public) = ed25519_pem();
        let err = |alg, public: &str, private: Option<&str>| {
            let (s, _dir) = key_settings(alg, public, private);
            let e = s.unwrap_err();
            let p = e.problems()[0].clone();
            // Never the key itself in a message.
            for pem in [Some(public), private].into_iter().flatten() {
                if let Some(line) = pem.lines().nth(1).filter(|l| l.len() > 8) {
                    assert!(!p.message.contains(line), "{p:?}");
                }
            }
            (p.key, p.message)
        };
        use JwtAlgorithm::{EdDSA, RS256};
        let (key, msg) = err(RS256, rsa_private, None);
        assert_eq!(key, "rest_api.jwt_public_key_file");
        assert!(msg.contains("holds a private key"), "{msg}");
        let (_, msg) = err(RS256, &ed_public, None);
        assert!(msg.contains("not an RSA public key"), "{msg}");
        let (_, msg) = err(EdDSA, rsa_public, None);
        assert!(msg.contains("not an Ed25519 public key"), "{msg}");
        let (_, msg) = err(RS256, "hello", None);
        assert!(msg.contains("not a PEM file"), "{msg}");
        let (_, msg) = err(RS256, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", None);
        assert!(msg.contains("not an RSA public key"), "{msg}");
        let (_, small) = rsa_pem(1024);
        let (_, msg) = err(RS256, &small, None);
        assert!(msg.contains("RSA key of 1024 bits; at least 2048"), "{msg}");
        // The private key must be the public key's other half, and of the algorithm.
        let (other_private, _) = rsa_pem(2048);
        let (key, msg) = err(RS256, rsa_public, Some(&other_private));
        assert_eq!(key, "rest_api.jwt_private_key_file");
        assert!(msg.contains("not the private key of rest_api.jwt_public_key_file"), "{msg}");
        let (_, msg) = err(RS256, rsa_public, Some(&ed_private));
        assert!(msg.contains("not an RSA private key"), "{msg}");
        let (_, msg) = err(EdDSA, &ed_public, Some(rsa_private));
        assert!(msg.contains("not an Ed25519 private key"), "{msg}");
        let (_, msg) = err(EdDSA, &ed_public, Some(&ed_public));
        assert!(msg.contains("not a private key"), "{msg}");
        let (key, msg) = err(EdDSA, &ed_public, Some("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        assert_eq!(key, "rest_api.jwt_private_key_file");
        assert!(msg.contains("encrypted"), "{msg}");
        // Missing files.
        let r = RestApiConfig {
            enabled: true,
            jwt_algorithm: RS256,
            jwt_public_key_file: Some("/nonexistent/jwt.pub".into()),
            ..RestApiConfig::default()
        };
        let e = AuthSettings::from_config(&r, "f.yml").unwrap_err().to_string();
        assert!(e.starts_with("f.yml: rest_api.jwt_public_key_file: /nonexistent/jwt.pub: cannot read: "), "{e}");
        // Debug never shows key material.
        let (s, _dir) = key_settings(EdDSA, &ed_public, Some(&ed_private));
        let shown = format!("{:?}", s.unwrap());
        assert!(!shown.contains("MC") && shown.contains("can_sign: true"), "{shown}");
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
