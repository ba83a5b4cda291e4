//! Secrets given inline or by reference to a file or an environment variable.

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConfigError;

/// What secrets serialize as (`SHOW CONFIG`, config dumps).
pub const REDACTED: &str = "<redacted>";

/// A secret given inline, or by reference. YAML forms: `'plain'`, `{file: /path}`,
/// `{env: VAR_NAME}`.
///
/// `Debug` and `Serialize` never show an inline secret (they print `<redacted>`);
/// file paths and variable names are not secret and are shown.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Plain(String),
    File { file: PathBuf },
    Env { env: String },
}

impl SecretRef {
    /// Returns the secret. A file's trailing newline (`\n`, `\r\n`) is trimmed.
    /// A missing/unreadable/empty file or a missing/empty/non-UTF-8 variable is an
    /// error naming the file or the variable.
    pub fn resolve(&self) -> Result<String, ConfigError> {
        match self {
            SecretRef::Plain(s) => Ok(s.clone()),
            SecretRef::File { file } => read_secret_file(file),
            SecretRef::Env { env } => {
                let what = || format!("environment variable {env}");
                let fail =
                    |kind, msg: &str| ConfigError::Io { file: what(), source: io::Error::new(kind, msg.to_string()) };
                match std::env::var(env) {
                    Ok(v) if v.is_empty() => Err(fail(io::ErrorKind::InvalidData, "is empty")),
                    Ok(v) => Ok(v),
                    Err(std::env::VarError::NotPresent) => Err(fail(io::ErrorKind::NotFound, "is not set")),
                    Err(std::env::VarError::NotUnicode(_)) => {
                        Err(fail(io::ErrorKind::InvalidData, "is not valid UTF-8"))
                    }
                }
            }
        }
    }

    /// True for an inline secret (one that sits in the config file itself).
    pub fn is_plain(&self) -> bool {
        matches!(self, SecretRef::Plain(_))
    }
}

/// Reads a secret file: trailing CR/LF trimmed, empty content is an error.
pub(crate) fn read_secret_file(file: &std::path::Path) -> Result<String, ConfigError> {
    let io_err = |source| ConfigError::Io { file: file.display().to_string(), source };
    let text = std::fs::read_to_string(file).map_err(io_err)?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(io_err(io::Error::new(io::ErrorKind::InvalidData, "secret file is empty")));
    }
    Ok(secret.to_string())
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SecretRef::Plain(_) => f.write_str("Plain(<redacted>)"),
            SecretRef::File { file } => f.debug_struct("File").field("file", file).finish(),
            SecretRef::Env { env } => f.debug_struct("Env").field("env", env).finish(),
        }
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SecretRef::Plain(_) => s.serialize_str(REDACTED),
            SecretRef::File { file } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("file", file)?;
                m.end()
            }
            SecretRef::Env { env } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("env", env)?;
                m.end()
            }
        }
    }
}

const FORMS: &str = "a secret: a quoted string, {file: /path/to/file} or {env: VAR_NAME}";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretRef, D::Error> {
        struct SecretVisitor;

        impl<'de> Visitor<'de> for SecretVisitor {
            type Value = SecretRef;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(FORMS)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretRef, E> {
                Ok(SecretRef::Plain(v.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut out: Option<SecretRef> = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value = match key.as_str() {
                        "file" => SecretRef::File { file: map.next_value()? },
                        "env" => SecretRef::Env { env: map.next_value()? },
                        other => return Err(de::Error::unknown_field(other, &["file", "env"])),
                    };
                    if out.is_some() {
                        return Err(de::Error::custom("give exactly one of 'file' or 'env', not both"));
                    }
                    out = Some(value);
                }
                out.ok_or_else(|| de::Error::custom(format!("empty mapping: expected {FORMS}")))
            }
        }

        d.deserialize_any(SecretVisitor)
    }
}

/// `serialize_with` for optional inline secrets such as `users[].password`.
pub(crate) fn serialize_redacted<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}
