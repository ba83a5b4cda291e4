//! `bctl token`: HS256 JWTs for the admin API, signed with the daemon's secret.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pgbalancer_config::{JwtAlgorithm, RestApiConfig, MIN_JWT_SECRET_LEN};

/// What a token is signed with and checked against.
pub struct Signer {
    pub secret: String,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub max_ttl: Duration,
}

impl Signer {
    /// From a config's `rest_api` block; `Ok(None)` when it has no secret.
    pub fn from_rest_api(rest: &RestApiConfig, origin: &Path) -> Result<Option<Signer>, String> {
        if rest.jwt_algorithm != JwtAlgorithm::HS256 {
            return Err(format!(
                "{}: rest_api.jwt_algorithm is {}; bctl makes HS256 tokens only",
                origin.display(),
                rest.jwt_algorithm
            ));
        }
        let secret = rest.jwt_secret().map_err(|e| e.to_string())?;
        Ok(secret.map(|secret| Signer {
            secret,
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
        Ok(Signer {
            secret: secret.to_string(),
            audience: None,
            issuer: None,
            max_ttl: RestApiConfig::default().jwt_max_ttl,
        })
    }

    /// A token for `role` valid `ttl` from now; `aud`/`iss` override the signer's.
    pub fn mint(&self, role: &str, ttl: Duration, aud: Option<&str>, iss: Option<&str>) -> Result<String, String> {
        if self.secret.len() < MIN_JWT_SECRET_LEN {
            return Err(format!(
                "the JWT secret is {} bytes; pgbalancer refuses secrets under {MIN_JWT_SECRET_LEN} bytes",
                self.secret.len()
            ));
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
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(self.secret.as_bytes()))
            .map_err(|e| format!("cannot sign the token: {e}"))
    }
}
