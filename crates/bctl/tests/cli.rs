//! bctl end to end: the real binary.

use std::io::Write;
use std::process::{Command, Stdio};

fn bctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bctl"))
}

#[test]
fn check_config_ok_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yml");
    std::fs::write(&good, "port: 9999\npool_mode: session\nauth_type: trust\n").unwrap();
    let out = bctl().arg("check-config").arg(&good).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK:"));

    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "pool_mode: sometimes\nbackends:\n  - host: h\n    prot: 1\n").unwrap();
    let out = bctl().arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("pool_mode") || err.contains("backends[0]"), "{err}");
}

#[test]
fn password_hash_prints_a_verifier_the_config_accepts() {
    let mut child = bctl().arg("password-hash").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let verifier = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    assert!(!verifier.contains("s3cret"));
    let yaml = format!("users:\n  - name: app\n    password: '{verifier}'\n");
    let config = pgbalancer_config::Config::from_yaml_str(&yaml, "test").expect("verifier accepted");
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}
