//! `bctl token`: JWTs for the admin API — HS256 signed with the daemon's
//! secret, or RS256/EdDSA signed with a private key (`--private-key`, or the
//! config's `rest_api.jwt_private_key_file`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pgbalancer_config::{JwtAlgorithm, RestApiConfig, MIN_JWT_SECRET_LEN};

/// What a token is signed with.
pub enum Key {
    /// HS256.
    Secret(String),
    /// RS256 or EdDSA.
    Private(Algorithm, EncodingKey),
}

/// What a token is signed with and checked against.
pub struct Signer {
    pub key: Key,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub max_ttl: Duration,
}

impl Signer {
    /// From a config's `rest_api` block; `private_key` (`--private-key`)
    /// overrides `jwt_private_key_file`. `Ok(None)` when there is nothing
    /// to sign with (no secret; for RS256/EdDSA no private key).
    pub fn from_rest_api(
        rest: &RestApiConfig,
        origin: &Path,
        private_key: Option<&Path>,
    ) -> Result<Option<Signer>, String> {
        let key = match rest.jwt_algorithm {
            JwtAlgorithm::HS256 => {
                if private_key.is_some() {
                    return Err(format!(
                        "{}: rest_api.jwt_algorithm is HS256: tokens are signed with its secret, not --private-key",
                        origin.display()
                    ));
                }
                rest.jwt_secret().map_err(|e| e.to_string())?.map(Key::Secret)
            }
            alg @ (JwtAlgorithm::RS256 | JwtAlgorithm::EdDSA) => {
                let algorithm = if alg == JwtAlgorithm::RS256 { Algorithm::RS256 } else { Algorithm::EdDSA };
                match private_key.or(rest.jwt_private_key_file.as_deref()) {
                    Some(file) => Some(Key::Private(algorithm, read_private_key(file, Some(algorithm))?.1)),
                    None => None,
                }
            }
        };
        Ok(key.map(|key| Signer {
            key,
            audience: rest.jwt_audience.clone(),
            issuer: rest.jwt_issuer.clone(),
            max_ttl: rest.jwt_max_ttl,
        }))
    }

    /// From a secret file alone (trailing newline trimmed, as pgbalancer does);
    /// no aud/iss, the default maximum lifetime.
    pub fn from_secret_file(file: &Path) -> Result<Signer, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let secret = text.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            return Err(format!("{}: secret file is empty", file.display()));
        }
        Ok(Signer::bare(Key::Secret(secret.to_string())))
    }

    /// From a private key file alone: RS256 for an RSA key, EdDSA for an
    /// Ed25519 one; no aud/iss, the default maximum lifetime.
    pub fn from_private_key_file(file: &Path) -> Result<Signer, String> {
        let (algorithm, key) = read_private_key(file, None)?;
        Ok(Signer::bare(Key::Private(algorithm, key)))
    }

    fn bare(key: Key) -> Signer {
        Signer { key, audience: None, issuer: None, max_ttl: RestApiConfig::default().jwt_max_ttl }
    }

    /// A token for `role` valid `ttl` from now; `aud`/`iss` override the signer's.
    pub fn mint(&self, role: &str, ttl: Duration, aud: Option<&str>, iss: Option<&str>) -> Result<String, String> {
        if let Key::Secret(secret) = &self.key {
            if secret.len() < MIN_JWT_SECRET_LEN {
                return Err(format!(
                    "the JWT secret is {} bytes; pgbalancer refuses secrets under {MIN_JWT_SECRET_LEN} bytes",
                    secret.len()
                ));
            }
        }
        if ttl.is_zero() {
            return Err("--ttl must be more than 0".into());
        }
        if ttl > self.max_ttl {
            return Err(format!(
                "--ttl {} is over jwt_max_ttl ({}): pgbalancer would refuse the token",
                pgbalancer_config::units::format_duration(ttl),
                pgbalancer_config::units::format_duration(self.max_ttl)
            ));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
        let mut claims = serde_json::json!({"role": role, "iat": now, "exp": now + ttl.as_secs().max(1)});
        if let Some(a) = aud.or(self.audience.as_deref()) {
            claims["aud"] = a.into();
        }
        if let Some(i) = iss.or(self.issuer.as_deref()) {
            claims["iss"] = i.into();
        }
        let signed = match &self.key {
            Key::Secret(secret) => jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(secret.as_bytes()),
            ),
            Key::Private(algorithm, key) => jsonwebtoken::encode(&Header::new(*algorithm), &claims, key),
        };
        signed.map_err(|e| format!("cannot sign the token: {e}"))
    }
}

/// A PEM private key: RSA (PKCS#8 or PKCS#1) or Ed25519 (PKCS#8). With
/// `want`, it must be a key of that algorithm. Errors never quote the file.
fn read_private_key(file: &Path, want: Option<Algorithm>) -> Result<(Algorithm, EncodingKey), String> {
    let shown = file.display();
    let pem = std::fs::read(file).map_err(|e| format!("{shown}: {e}"))?;
    let rsa = EncodingKey::from_rsa_pem(&pem).ok().map(|k| (Algorithm::RS256, k));
    let found = rsa.or_else(|| EncodingKey::from_ed_pem(&pem).ok().map(|k| (Algorithm::EdDSA, k)));
    match (found, want) {
        (None, _) => Err(format!("{shown}: not an RSA or Ed25519 private key in PEM (unencrypted PKCS#8 or PKCS#1)")),
        (Some((got, _)), Some(want)) if got != want => Err(format!(
            "{shown}: an {} key, but rest_api.jwt_algorithm is {}",
            if got == Algorithm::RS256 { "RSA" } else { "Ed25519" },
            if want == Algorithm::RS256 { "RS256" } else { "EdDSA" },
        )),
        (Some(k), _) => Ok(k),
    }
}
