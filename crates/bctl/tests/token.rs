//! `bctl token`: the printed JWT verifies with jsonwebtoken, carries the
//! right claims, and fails with another secret.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

const SECRET: &str = "bctl-token-test-secret-0123456789abcdef";

fn bctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bctl")).args(args).env_remove("BCTL_TOKEN").output().unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "bctl failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap().trim().to_string()
}

fn stderr(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn decode(
    token: &str,
    secret: &str,
    aud: Option<&str>,
    iss: Option<&str>,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.set_required_spec_claims(&["exp"]);
    match aud {
        Some(a) => v.set_audience(&[a]),
        None => v.validate_aud = false,
    }
    if let Some(i) = iss {
        v.set_issuer(&[i]);
    }
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(secret.as_bytes()), &v).map(|d| d.claims)
}

fn write_config(dir: &Path, rest_extra: &str) -> String {
    let secret = dir.join("jwt.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let config = dir.join("pgbalancer.yml");
    std::fs::write(
        &config,
        format!(
            "auth_type: trust\nrest_api:\n  enabled: true\n  port: 18080\n  jwt_secret_file: {}\n{rest_extra}",
            secret.display()
        ),
    )
    .unwrap();
    config.display().to_string()
}

#[test]
fn token_from_config_has_the_claims_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "  jwt_audience: pgbalancer\n  jwt_issuer: ops\n  jwt_max_ttl: 30m\n");
    let before = now();
    let token = stdout(&bctl(&["token", "--config", &config, "--role", "admin", "--ttl", "15m"]));
    let claims = decode(&token, SECRET, Some("pgbalancer"), Some("ops")).expect("verifies");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["aud"], "pgbalancer");
    assert_eq!(claims["iss"], "ops");
    let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
    assert!(iat >= before && iat <= now(), "{claims}");
    assert_eq!(exp - iat, 900, "{claims}");

    // Refused with another secret.
    let err = decode(&token, "another-secret-0123456789abcdef-0123456", Some("pgbalancer"), Some("ops")).unwrap_err();
    assert!(matches!(err.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature), "{err:?}");

    // Defaults: role read, 10 minutes; --aud/--iss override the config.
    let token = stdout(&bctl(&["token", "--config", &config, "--aud", "other", "--iss", "me"]));
    let claims = decode(&token, SECRET, Some("other"), Some("me")).expect("verifies");
    assert_eq!(claims["role"], "read");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 600);
}

#[test]
fn token_ttl_is_limited_by_jwt_max_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "  jwt_max_ttl: 5m\n");
    let err = stderr(&bctl(&["token", "--config", &config, "--ttl", "6m"]));
    assert!(err.contains("jwt_max_ttl"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Without --ttl, the default is cut to jwt_max_ttl.
    let token = stdout(&bctl(&["token", "--config", &config]));
    let claims = decode(&token, SECRET, None, None).unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 300);
    assert!(claims.get("aud").is_none() && claims.get("iss").is_none(), "{claims}");
}

#[test]
fn token_from_secret_file_and_the_old_flag() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let secret = secret.display().to_string();
    let token = stdout(&bctl(&["token", "--jwt-secret-file", &secret, "--role", "admin", "--ttl", "90s"]));
    let claims = decode(&token, SECRET, None, None).unwrap();
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 90);

    let token = stdout(&bctl(&["--jwt-secret-file", &secret, "--generate-token"]));
    assert_eq!(decode(&token, SECRET, None, None).unwrap()["role"], "read");

    // Over the default jwt_max_ttl (1h) without a config.
    let err = stderr(&bctl(&["token", "--jwt-secret-file", &secret, "--ttl", "2h"]));
    assert!(err.contains("jwt_max_ttl"), "{err}");
}

#[test]
fn token_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let err = stderr(&bctl(&["token"]));
    assert!(err.contains("--config") && err.contains("--jwt-secret-file"), "{err}");

    let short = dir.path().join("short");
    std::fs::write(&short, "tooshort\n").unwrap();
    let err = stderr(&bctl(&["token", "--jwt-secret-file", short.to_str().unwrap()]));
    assert!(err.contains("32"), "{err}");

    let config = dir.path().join("nosecret.yml");
    std::fs::write(&config, "auth_type: trust\n").unwrap();
    let err = stderr(&bctl(&["token", "--config", config.to_str().unwrap()]));
    assert!(err.contains("jwt_secret"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn completions_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let out = stdout(&bctl(&["completions", shell]));
        assert!(out.contains("bctl") && out.contains("status"), "{shell}: {out}");
    }
}
