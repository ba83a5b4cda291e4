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
    assert!(err.contains("--config") && err.contains("--jwt-secret-file") && err.contains("--private-key"), "{err}");

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

/// PEM (private, public) of a fresh 2048-bit RSA key.
fn rsa_key() -> (String, String) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    (
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        key.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
    )
}

/// PEM (private, public) of a fresh Ed25519 key.
fn ed25519_key() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    (key.serialize_pem(), key.public_key_pem())
}

fn decode_with(token: &str, alg: Algorithm, key: &DecodingKey, aud: Option<&str>) -> Value {
    let mut v = Validation::new(alg);
    v.leeway = 0;
    match aud {
        Some(a) => v.set_audience(&[a]),
        None => v.validate_aud = false,
    }
    jsonwebtoken::decode::<Value>(token, key, &v)
        .unwrap_or_else(|e| panic!("{alg:?} token does not verify: {e}"))
        .claims
}

#[test]
fn rs256_and_eddsa_tokens_from_a_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (rsa_private, rsa_public) = rsa_key();
    let (ed_private, ed_public) = ed25519_key();
    let (rsa_key_file, ed_key_file) = (write("rsa.key", &rsa_private), write("ed.key", &ed_private));
    let ed_pub_file = write("ed.pub", &ed_public);
    let rsa_dec = DecodingKey::from_rsa_pem(rsa_public.as_bytes()).unwrap();
    let ed_dec = DecodingKey::from_ed_pem(ed_public.as_bytes()).unwrap();

    // --private-key alone: the algorithm follows the key.
    let t = stdout(&bctl(&["token", "--private-key", &rsa_key_file, "--role", "admin", "--ttl", "2m"]));
    assert_eq!(jsonwebtoken::decode_header(&t).unwrap().alg, Algorithm::RS256);
    let claims = decode_with(&t, Algorithm::RS256, &rsa_dec, None);
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 120);
    let t = stdout(&bctl(&["token", "--private-key", &ed_key_file]));
    assert_eq!(jsonwebtoken::decode_header(&t).unwrap().alg, Algorithm::EdDSA);
    assert_eq!(decode_with(&t, Algorithm::EdDSA, &ed_dec, None)["role"], "read");

    // --config with jwt_private_key_file: the config's aud and algorithm.
    let config = write(
        "rs.yml",
        &format!(
            "auth_type: trust\nrest_api:\n  enabled: true\n  jwt_algorithm: RS256\n  jwt_public_key_file: {}\n  \
             jwt_private_key_file: {rsa_key_file}\n  jwt_audience: pgbalancer\n",
            write("rsa.pub", &rsa_public)
        ),
    );
    let t = stdout(&bctl(&["token", "--config", &config, "--role", "admin"]));
    let claims = decode_with(&t, Algorithm::RS256, &rsa_dec, Some("pgbalancer"));
    assert_eq!(claims["aud"], "pgbalancer");
    // The config without a private key: --private-key, of the right kind.
    let config = write(
        "ed.yml",
        &format!("auth_type: trust\nrest_api:\n  enabled: true\n  jwt_algorithm: EdDSA\n  jwt_public_key_file: {ed_pub_file}\n"),
    );
    let err = stderr(&bctl(&["token", "--config", &config]));
    assert!(err.contains("jwt_algorithm is EdDSA: give --private-key FILE"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let t = stdout(&bctl(&["token", "--config", &config, "--private-key", &ed_key_file]));
    decode_with(&t, Algorithm::EdDSA, &ed_dec, None);
    let err = stderr(&bctl(&["token", "--config", &config, "--private-key", &rsa_key_file]));
    assert!(err.contains("an RSA key, but rest_api.jwt_algorithm is EdDSA"), "{err}");

    // Not a private key; --private-key with an HS256 config.
    let err = stderr(&bctl(&["token", "--private-key", &ed_pub_file]));
    assert!(err.contains("not an RSA or Ed25519 private key"), "{err}");
    assert!(!err.contains(ed_public.lines().nth(1).unwrap()), "{err}");
    let hs = write_config(dir.path(), "");
    let err = stderr(&bctl(&["token", "--config", &hs, "--private-key", &ed_key_file]));
    assert!(err.contains("HS256"), "{err}");
}

#[test]
fn completions_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let out = stdout(&bctl(&["completions", shell]));
        assert!(out.contains("bctl") && out.contains("status"), "{shell}: {out}");
    }
}
