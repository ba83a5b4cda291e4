//! Typed `pgbalancer.yml`: schema with defaults, parsing with key-path errors,
//! validation that reports every problem at once, and warnings.
//!
//! ```
//! let cfg = pgbalancer_config::Config::from_yaml_str("port: 6432\npool_size: 10\n", "inline").unwrap();
//! assert_eq!(cfg.port, 6432);
//! assert_eq!(cfg.backends[0].port, 5432);
//! ```

use std::path::Path;

pub use std::time::Duration;

mod error;
mod schema;
mod secret;
pub mod units;
mod validate;

pub use error::{ConfigError, Problem};
pub use schema::{
    AuthType, BackendConfig, BackendRole, BackendSslMode, ClientSslMode, Config, FollowPrimary, HbaEntry, HbaType,
    JwtAlgorithm, LoadBalance, LoadBalanceMode, LogFormat, PoolMode, ReadYourWrites, RestApiConfig, TransactionRouting,
    UserEntry, DEFAULT_AUTH_QUERY,
};
pub use secret::{SecretRef, REDACTED};
pub use units::ByteSize;
pub use validate::{
    check_hba_entry, check_scram_verifier, is_md5_hash, mask_prefix_len, parse_hba_address, HbaAddress, MAX_DURATION,
    MIN_JWT_SECRET_LEN,
};

/// Where pgbalancer looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pgbalancer/pgbalancer.yml";

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { file: file.clone(), source })?;
        Config::from_yaml_str(&text, &file)
    }

    /// Parses and validates `yaml`; `origin` (a file name) prefixes every message.
    /// An empty document (or only comments) gives the defaults.
    pub fn from_yaml_str(yaml: &str, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |problem| ConfigError::Invalid { file: origin.to_string(), problems: vec![problem] };
        // A document with no content is the default config, not "EOF while parsing".
        let value: serde_yaml::Value = match serde_yaml::from_str(yaml) {
            Ok(v) => v,
            Err(e) => return Err(invalid(error::parse_problem("", e))),
        };
        let config = if value.is_null() {
            Config::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(yaml);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                invalid(error::parse_problem(&path, e.into_inner()))
            })?
        };
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks the whole configuration and reports every problem found.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { file: origin.to_string(), problems })
        }
    }

    /// Every validation problem (empty when the configuration is valid).
    pub fn problems(&self) -> Vec<Problem> {
        validate::problems(self)
    }

    /// Non-fatal remarks about a valid configuration, each `key.path: message`
    /// (plaintext passwords, trust auth on public addresses, ignored keys, ...).
    pub fn warnings(&self) -> Vec<String> {
        validate::warnings(self)
    }

    /// Warnings about the file itself (Unix: readable or writable by group/others).
    pub fn file_warnings(path: &Path) -> Vec<String> {
        validate::file_warnings(path)
    }

    /// The password for server logins: `server_password` (resolved) or the contents of
    /// `server_password_file` (trailing newline trimmed); `None` if neither is set.
    pub fn server_password(&self) -> Result<Option<String>, ConfigError> {
        match (&self.server_password, &self.server_password_file) {
            (Some(s), _) => s.resolve().map(Some),
            (None, Some(file)) => secret::read_secret_file(file).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// How the health checker logs in: (user, password). `health_check_user`
    /// with `health_check_password`; else `server_user` with its password;
    /// else `postgres` with no password.
    pub fn health_check_login(&self) -> Result<(String, Option<String>), ConfigError> {
        match (&self.health_check_user, &self.server_user) {
            (Some(u), _) => Ok((u.clone(), self.health_check_password.as_ref().map(|s| s.resolve()).transpose()?)),
            (None, Some(u)) => {
                let pw = match &self.health_check_password {
                    Some(s) => Some(s.resolve()?),
                    None => self.server_password()?,
                };
                Ok((u.clone(), pw))
            }
            (None, None) => {
                Ok(("postgres".to_string(), self.health_check_password.as_ref().map(|s| s.resolve()).transpose()?))
            }
        }
    }

    /// Whether clients must, may or cannot use TLS: `ssl_mode`, or when
    /// unset `allow` with `ssl: true` and `disable` without.
    pub fn client_ssl_mode(&self) -> ClientSslMode {
        match self.ssl_mode {
            Some(m) => m,
            None if self.ssl => ClientSslMode::Allow,
            None => ClientSslMode::Disable,
        }
    }

    /// TLS to the backends: `backend_sslmode`, or when unset `require`
    /// with `backend_encryption: true` and `disable` without.
    pub fn backend_ssl_mode(&self) -> BackendSslMode {
        match self.backend_sslmode {
            Some(m) => m,
            None if self.backend_encryption => BackendSslMode::Require,
            None => BackendSslMode::Disable,
        }
    }

    /// Every setting as (dotted key, value), in schema order, secrets
    /// redacted: `SHOW CONFIG` of the SQL admin console. Lists are one
    /// value each (`backends[0].host`).
    pub fn settings(&self) -> Vec<(String, String)> {
        fn flatten(prefix: &str, v: &serde_yaml::Value, out: &mut Vec<(String, String)>) {
            use serde_yaml::Value;
            match v {
                Value::Mapping(m) => {
                    for (k, v) in m {
                        let k = k.as_str().unwrap_or("?");
                        let key = if prefix.is_empty() { k.to_owned() } else { format!("{prefix}.{k}") };
                        flatten(&key, v, out);
                    }
                }
                Value::Sequence(items) if !items.is_empty() => {
                    for (i, v) in items.iter().enumerate() {
                        flatten(&format!("{prefix}[{i}]"), v, out);
                    }
                }
                Value::Sequence(_) => out.push((prefix.to_owned(), "[]".to_owned())),
                Value::Null => out.push((prefix.to_owned(), String::new())),
                Value::String(s) => out.push((prefix.to_owned(), s.clone())),
                Value::Bool(b) => out.push((prefix.to_owned(), b.to_string())),
                Value::Number(n) => out.push((prefix.to_owned(), n.to_string())),
                other => {
                    let text = serde_yaml::to_string(other).unwrap_or_default();
                    out.push((prefix.to_owned(), text.trim().to_owned()))
                }
            }
        }
        let mut out = Vec::new();
        if let Ok(v) = serde_yaml::to_value(self) {
            flatten("", &v, &mut out);
        }
        out
    }

    /// `listen_addresses` split on ',' and trimmed; `*` becomes `0.0.0.0` and `::`.
    pub fn listen_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for h in self.listen_addresses.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let expanded: &[&str] = if h == "*" { &["0.0.0.0", "::"] } else { &[h] };
            for e in expanded {
                if !hosts.iter().any(|x| x == e) {
                    hosts.push(e.to_string());
                }
            }
        }
        hosts
    }

    /// The `users` entry called `name`.
    pub fn user(&self, name: &str) -> Option<&UserEntry> {
        self.users.iter().find(|u| u.name == name)
    }
}
