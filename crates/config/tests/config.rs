use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgbalancer_config::*;

const SCRAM: &str = "SCRAM-SHA-256$4096:gjx+HmWU8PXRnlOe2kvBKw==$YZ8RqLDsMRKIR/AiDdF+MjUp+Gu8om3vyWbLrSMvqXw=:+Bu+Xzn5KtUivY/DtSG1sFJq5GE2oFOBRekaYkaYGNc=";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_str(yaml, "test.yml")
}

fn problems(yaml: &str) -> Vec<Problem> {
    match parse(yaml) {
        Err(ConfigError::Invalid { file, problems }) => {
            assert_eq!(file, "test.yml");
            problems
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn one_problem(yaml: &str) -> Problem {
    let p = problems(yaml);
    assert_eq!(p.len(), 1, "{p:?}");
    p.into_iter().next().unwrap()
}

/// Top-level keys of the schema, from serializing the defaults.
fn schema_keys() -> Vec<String> {
    let v = serde_yaml::to_value(Config::default()).unwrap();
    let mut keys = Vec::new();
    for (k, v) in v.as_mapping().unwrap() {
        let k = k.as_str().unwrap().to_string();
        if let Some(m) = v.as_mapping() {
            for (sub, _) in m {
                keys.push(format!("{k}.{}", sub.as_str().unwrap()));
            }
        }
        keys.push(k);
    }
    keys
}

#[test]
fn example_file_loads() {
    let path = repo_file("pgbalancer.yml.example");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.auth_type, AuthType::ScramSha256);
    let app = c.user("app").expect("user app");
    assert_eq!(app.password.as_deref(), Some(SCRAM));
    assert_eq!(check_scram_verifier(SCRAM), Ok(()));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    // Apart from the example user and JWT secret reference, the example shows the defaults.
    let d = Config {
        users: c.users.clone(),
        rest_api: RestApiConfig {
            jwt_secret: Some(SecretRef::Env { env: "PGBALANCER_JWT_SECRET".into() }),
            ..RestApiConfig::default()
        },
        ..Config::default()
    };
    assert_eq!(c, d);
}

#[test]
fn example_and_docs_cover_every_key() {
    let example = std::fs::read_to_string(repo_file("pgbalancer.yml.example")).unwrap();
    let docs = std::fs::read_to_string(repo_file("docs/configuration.md")).unwrap();
    for key in schema_keys() {
        let leaf = key.rsplit('.').next().unwrap();
        assert!(example.contains(&format!("{leaf}:")), "example lacks {key}");
        assert!(docs.contains(&format!("`{key}`")), "docs lack {key}");
    }
    for key in ["host", "port", "role", "weight", "name", "password"] {
        assert!(docs.contains(&format!("`{key}`")), "docs lack {key}");
    }
}

#[test]
fn empty_documents_give_defaults() {
    for y in ["", "\n", "# only a comment\n", "---\n", "~\n"] {
        assert_eq!(parse(y).unwrap(), Config::default(), "{y:?}");
    }
}

#[test]
fn each_default() {
    let c = Config::default();
    assert_eq!(c.listen_addresses, "127.0.0.1");
    assert_eq!(c.port, 9999);
    assert_eq!(c.pool_mode, PoolMode::Transaction);
    assert_eq!(c.pool_size, 20);
    assert_eq!(c.min_pool_size, 0);
    assert_eq!(c.max_client_conn, 5000);
    assert_eq!(c.auth_type, AuthType::ScramSha256);
    assert!(c.users.is_empty());
    assert_eq!(
        c.backends,
        vec![BackendConfig { host: "127.0.0.1".into(), port: 5432, role: BackendRole::Primary, weight: 1 }]
    );
    assert_eq!(c.server_user, None);
    assert_eq!(c.server_password, None);
    assert_eq!(c.server_password_file, None);
    assert_eq!(c.query_wait_timeout, Duration::from_secs(120));
    assert_eq!(c.server_idle_timeout, Duration::from_secs(600));
    assert_eq!(c.server_lifetime, Duration::from_secs(3600));
    assert_eq!(c.client_idle_timeout, Duration::ZERO);
    assert_eq!(c.idle_transaction_timeout, Duration::ZERO);
    assert_eq!(c.client_login_timeout, Duration::from_secs(60));
    assert_eq!(c.server_connect_timeout, Duration::from_secs(15));
    assert_eq!(c.server_login_retry, Duration::from_secs(15));
    assert_eq!(c.server_reset_query, "DISCARD ALL");
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(c.max_message_size, ByteSize(64 << 20));
    assert_eq!(c.workers, 0);
    assert!(!c.log_connections && !c.log_disconnections && !c.log_statement);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.log_level, "info");
    assert!(!c.ssl && !c.backend_encryption);
    assert_eq!((c.ssl_cert, c.ssl_key, c.ssl_ca_cert), (None, None, None));
    assert_eq!(
        c.rest_api,
        RestApiConfig {
            enabled: false,
            port: 8080,
            bind_address: "127.0.0.1".into(),
            jwt_enabled: true,
            jwt_secret: None,
            jwt_secret_file: None,
            jwt_algorithm: JwtAlgorithm::HS256,
            jwt_public_key_file: None,
            jwt_private_key_file: None,
            jwt_audience: None,
            jwt_issuer: None,
            jwt_max_ttl: Duration::from_secs(3600),
            ssl_cert: None,
            ssl_key: None,
        }
    );
    assert!(Config::default().validate("x").is_ok());
}

#[test]
fn backend_field_defaults_apply_per_entry() {
    let c = parse(
        "backends:\n  - host: db1\n  - host: db2\n    role: replica\n    weight: 3\n  - {port: 5433, role: auto}\n",
    )
    .unwrap();
    assert_eq!(c.backends[0], BackendConfig { host: "db1".into(), ..BackendConfig::default() });
    assert_eq!(c.backends[1], BackendConfig { host: "db2".into(), port: 5432, role: BackendRole::Replica, weight: 3 });
    assert_eq!(c.backends[2].host, "127.0.0.1");
    assert_eq!(c.backends[2].port, 5433);
    assert_eq!(c.backends[2].role, BackendRole::Auto);
}

#[test]
fn seed_keys_accepted_as_written() {
    let y = "listen_addresses: '*'\nport: 9999\nlog_connections: true\nlog_disconnections: true\n\
             log_statement: true\nssl: false\nssl_cert: /etc/c.crt\nssl_key: /etc/c.key\n\
             ssl_ca_cert: /etc/ca.crt\nbackend_encryption: false\nrest_api:\n  enabled: true\n  \
             port: 8080\n  bind_address: 127.0.0.1\n  jwt_enabled: true\n  \
             jwt_secret: 0123456789abcdef0123456789abcdef\n";
    let c = parse(y).unwrap();
    assert!(c.log_connections && c.log_disconnections && c.log_statement);
    assert_eq!(c.ssl_cert.as_deref(), Some(Path::new("/etc/c.crt")));
    assert!(c.rest_api.enabled);
    assert_eq!(c.rest_api.jwt_secret.as_ref().unwrap().resolve().unwrap().len(), 32);
    assert_eq!(c.listen_hosts(), vec!["0.0.0.0", "::"]);
}

#[test]
fn enums_parse() {
    let c = parse("pool_mode: session\nauth_type: trust\nlog_format: json\n").unwrap();
    assert_eq!((c.pool_mode, c.auth_type, c.log_format), (PoolMode::Session, AuthType::Trust, LogFormat::Json));
}

#[test]
fn routing_keys() {
    let c = parse(
        "load_balance: least_outstanding\nload_balance_mode: session\ntransaction_routing: first_statement\n\
         read_your_writes: lsn\nfollow_primary: first\nmax_lag_bytes: 16MB\nmax_lag: 10s\n\
         write_functions: [audit_*, public.f]\nprimary_reads: false\n",
    )
    .unwrap();
    assert_eq!(c.load_balance, LoadBalance::LeastOutstanding);
    assert_eq!(c.load_balance_mode, LoadBalanceMode::Session);
    assert_eq!(c.transaction_routing, TransactionRouting::FirstStatement);
    assert_eq!(c.read_your_writes, ReadYourWrites::Lsn);
    assert_eq!(c.follow_primary, FollowPrimary::First);
    assert_eq!(c.max_lag_bytes.bytes(), 16 << 20);
    assert_eq!(c.max_lag, Duration::from_secs(10));
    assert!(!c.primary_reads);
    let err = parse("load_balance: ai\n").unwrap_err().to_string();
    assert!(err.contains("load_balance"), "{err}");
    assert_eq!(one_problem("admin_users: [ghost]\n").key, "admin_users[0]");
    // Without checks, nothing observes roles, lag or replay positions.
    assert_eq!(
        one_problem("health_check_period: 0\nbackends: [{host: a}, {host: b, role: auto}]\n").key,
        "backends[1].role"
    );
    assert_eq!(one_problem("health_check_period: 0\nmax_lag: 5s\n").key, "max_lag");
    assert_eq!(one_problem("health_check_period: 0\nread_your_writes: lsn\n").key, "read_your_writes");
    parse("health_check_period: 0\nread_your_writes: primary\n").unwrap();
    assert_eq!(one_problem("health_check_timeout: 0\n").key, "health_check_timeout");
    assert_eq!(one_problem("write_functions: ['*']\n").key, "write_functions[0]");
    assert_eq!(one_problem("read_only_functions: ['']\n").key, "read_only_functions[0]");
    assert_eq!(one_problem("health_check_user: ''\n").key, "health_check_user");
}

#[test]
fn settings_flatten_with_secrets_hidden() {
    let c = parse(&format!(
        "users: [{{name: app, password: '{SCRAM}'}}]\nbackends: [{{host: a}}, {{host: b, role: replica}}]\n\
         server_password: hunter2\nadmin_users: [app]\n"
    ))
    .unwrap();
    let s = c.settings();
    let get = |k: &str| s.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("pool_size"), Some("20"));
    assert_eq!(get("backends[1].host"), Some("b"));
    assert_eq!(get("backends[1].role"), Some("replica"));
    assert_eq!(get("admin_users[0]"), Some("app"));
    assert_eq!(get("stats_users"), Some("[]"));
    assert_eq!(get("rest_api.port"), Some("8080"));
    assert_eq!(get("users[0].name"), Some("app"));
    let all = format!("{s:?}");
    assert!(!all.contains("hunter2") && !all.contains("SCRAM-SHA-256$"), "secrets shown: {all}");
}

#[test]
fn health_check_login_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.health_check_login().unwrap(), ("postgres".to_string(), None));
    let c = parse("server_user: pool\nserver_password: pw\n").unwrap();
    assert_eq!(c.health_check_login().unwrap(), ("pool".to_string(), Some("pw".to_string())));
    let c = parse("server_user: pool\nserver_password: pw\nhealth_check_user: mon\n").unwrap();
    assert_eq!(c.health_check_login().unwrap(), ("mon".to_string(), None), "the server password is not lent");
    let c = parse("health_check_user: mon\nhealth_check_password: x\n").unwrap();
    assert_eq!(c.health_check_login().unwrap(), ("mon".to_string(), Some("x".to_string())));
}

#[test]
fn duration_unit_forms_in_yaml() {
    let cases: [(&str, Duration); 9] = [
        ("0", Duration::ZERO),
        ("45", Duration::from_secs(45)),
        ("'45'", Duration::from_secs(45)),
        ("500ms", Duration::from_millis(500)),
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3600)),
        ("1d", Duration::from_secs(86400)),
        ("\"2 min\"", Duration::from_secs(120)),
    ];
    for (v, want) in cases {
        let c = parse(&format!("query_wait_timeout: {v}\n")).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(c.query_wait_timeout, want, "{v}");
    }
    let p = one_problem("server_lifetime: 1.5h\n");
    assert_eq!(p.key, "server_lifetime");
    assert!(p.message.contains("\"500ms\"") && p.message.contains("integer number of seconds"), "{}", p.message);
    let p = one_problem("shutdown_timeout: -3\n");
    assert_eq!(p.key, "shutdown_timeout");
    assert!(p.message.contains("negative"), "{}", p.message);
}

#[test]
fn size_unit_forms_in_yaml() {
    let cases: [(&str, u64); 9] = [
        ("4096", 4096),
        ("'4096'", 4096),
        ("4096B", 4096),
        ("64kB", 64 << 10),
        ("64KB", 64 << 10),
        ("64KiB", 64 << 10),
        ("16MB", 16 << 20),
        ("16MiB", 16 << 20),
        ("1GiB", 1 << 30),
    ];
    for (v, want) in cases {
        let c = parse(&format!("max_message_size: {v}\n")).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(c.max_message_size.bytes(), want, "{v}");
    }
    assert_eq!(parse("max_message_size: 1GB\n").unwrap().max_message_size, ByteSize(1 << 30));
    let p = one_problem("max_message_size: 12 parsecs\n");
    assert_eq!(p.key, "max_message_size");
    assert!(p.message.contains("\"64kB\""), "{}", p.message);
}

#[test]
fn unknown_keys_name_their_path() {
    let p = one_problem("pool_sise: 3\n");
    assert_eq!(p.key, "pool_sise");
    assert!(p.message.starts_with("unknown key 'pool_sise' (did you mean 'pool_size'?)"), "{}", p.message);

    let p = one_problem("backends:\n  - host: a\n    hots: b\n");
    assert_eq!(p.key, "backends[0].hots");
    assert!(p.message.contains("did you mean 'host'"), "{}", p.message);

    let p = one_problem("rest_api:\n  enable: true\n");
    assert_eq!(p.key, "rest_api.enable");

    let p = one_problem("users:\n  - name: a\n    password: b\n    role: x\n");
    assert_eq!(p.key, "users[0].role");

    let p = one_problem("server_password: {path: /x}\n");
    assert_eq!(p.key, "server_password.path");
    assert!(p.message.contains("file, env"), "{}", p.message);

    let err = parse("listen: '*'\n").unwrap_err().to_string();
    assert!(err.starts_with("test.yml: listen: unknown key 'listen'"), "{err}");
}

#[test]
fn type_errors_name_file_path_and_problem() {
    let err = Config::from_yaml_str("backends:\n  - host: a\n    role: master\n", "/etc/pgbalancer/pgbalancer.yml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/etc/pgbalancer/pgbalancer.yml: backends[0].role: unknown variant 'master', expected one of primary, replica, auto"),
        "{err}"
    );
    assert!(err.contains("line 3"), "{err}");

    let p = one_problem("port: 70000\n");
    assert_eq!(p.key, "port");
    assert!(p.message.contains("70000"), "{}", p.message);

    let p = one_problem("users:\n  - password: x\n");
    assert_eq!(p.key, "users[0]");
    assert!(p.message.starts_with("missing key 'name'"), "{}", p.message);

    let p = one_problem("server_password: 1234\n");
    assert_eq!(p.key, "server_password");
    assert!(p.message.contains("{file:"), "{}", p.message);

    let p = one_problem("port: [\n");
    assert!(p.message.contains("line"), "{}", p.message);

    let p = one_problem("- a\n- b\n");
    assert_eq!(p.key, "");
}

#[test]
fn validation_reports_every_problem_with_its_key() {
    let y = "pool_size: 0\nmin_pool_size: 5\nmax_client_conn: 0\nlisten_addresses: 'a,,b'\n\
             users:\n  - name: app\n  - name: app\n    password: secret\n  - name: ''\n    password: x\n  \
             - name: bad\n    password: 'SCRAM-SHA-256$4096:zz'\n\
             backends:\n  - host: a\n  - {host: '', role: replica}\n  - host: a\n    role: primary\n  - {host: c, port: 0, role: replica}\n\
             server_password: x\nserver_password_file: /x\nserver_connect_timeout: 0\nserver_lifetime: 400d\n\
             max_message_size: 100\nlog_level: ' '\nssl: true\nbackend_encryption: true\n\
             rest_api: {enabled: true, port: 9999, bind_address: '', jwt_secret: short}\n";
    let got: Vec<(String, String)> = problems(y).into_iter().map(|p| (p.key, p.message)).collect();
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "listen_addresses",
            "pool_size",
            "min_pool_size",
            "max_client_conn",
            "users[0].password",
            "users[1].name",
            "users[2].name",
            "users[3].password",
            "backends[1].host",
            "backends[2]",
            "backends[2].role",
            "backends[3].port",
            "server_password_file",
            "server_lifetime",
            "server_connect_timeout",
            "max_message_size",
            "log_level",
            "ssl_cert",
            "ssl_key",
            "rest_api.bind_address",
            "rest_api.port",
            "rest_api.jwt_secret",
        ],
        "{got:#?}"
    );
    let msg = |k: &str| &got.iter().find(|(key, _)| key == k).unwrap().1;
    assert_eq!(msg("ssl_cert"), "required when ssl is true");
    assert!(msg("users[0].password").contains("required with auth_type scram-sha-256"));
    assert!(msg("users[3].password").starts_with("malformed SCRAM verifier"));
    assert!(msg("backends[2].role").contains("more than one"));
    assert!(msg("server_password_file").contains("conflicts with server_password"));
    assert!(msg("rest_api.jwt_secret").contains("32 bytes"));

    let err = parse(y).unwrap_err().to_string();
    assert_eq!(err.lines().count(), got.len());
    assert!(err.lines().all(|l| l.starts_with("test.yml: ")), "{err}");
    assert!(err.contains("\ntest.yml: pool_size: must be at least 1\n"), "{err}");
}

#[test]
fn validation_edge_cases() {
    assert_eq!(one_problem("backends: []\n").key, "backends");
    // port 0 = pick a free port; empty reset query = no reset; trust needs no passwords.
    let c = parse("port: 0\nserver_reset_query: ''\nauth_type: trust\nusers: [{name: a}]\n").unwrap();
    assert_eq!(c.port, 0);
    assert_eq!(c.server_reset_query, "");
    assert_eq!(c.user("a").unwrap().password, None);
    assert!(c.user("b").is_none());
    // Replicas only (no configured primary) is fine: roles are discovered.
    parse("backends: [{host: a, role: replica}, {host: b, role: auto}]\n").unwrap();
    // md5 hashes are accepted (for method md5), with a warning.
    let w = parse("users: [{name: a, password: md50123456789abcdef0123456789abcdef}]\n").unwrap().warnings();
    assert!(w[0].starts_with("users[0].password: an md5 hash only works with method md5"), "{w:?}");
    assert_eq!(one_problem("rest_api: {enabled: true}\n").key, "rest_api.jwt_secret");
    parse("rest_api: {enabled: true, jwt_enabled: false}\n").unwrap();
    assert_eq!(
        one_problem("rest_api: {enabled: true, jwt_enabled: false, bind_address: 0.0.0.0}\n").key,
        "rest_api.jwt_enabled"
    );
    parse("rest_api: {enabled: true, jwt_secret: {env: X}}\n").unwrap();
    assert_eq!(one_problem("server_password: {env: ''}\n").key, "server_password.env");
    assert_eq!(one_problem("server_password: {file: /a, env: B}\n").key, "server_password");
    assert_eq!(one_problem("max_message_size: 2GiB\n").key, "max_message_size");
    parse("max_message_size: 1kB\n").unwrap();
}

#[test]
fn warnings_name_keys() {
    let c = parse("users:\n  - {name: a, password: hunter2}\n  - {name: b, password: 'SCRAM-SHA-256$4096:gjx+HmWU8PXRnlOe2kvBKw==$YZ8RqLDsMRKIR/AiDdF+MjUp+Gu8om3vyWbLrSMvqXw=:+Bu+Xzn5KtUivY/DtSG1sFJq5GE2oFOBRekaYkaYGNc='}\nserver_password: pw\n").unwrap();
    let w = c.warnings();
    assert_eq!(w[0], "users[0].password: plaintext password in config; store a SCRAM verifier instead");
    assert!(w[1].starts_with("server_password: plaintext"), "{w:?}");
    assert_eq!(w.len(), 2, "{w:?}");

    let w = parse("auth_type: trust\nlisten_addresses: '*'\nssl_cert: /c\n").unwrap().warnings();
    assert!(w.iter().any(|m| m.starts_with("auth_type: trust")), "{w:?}");
    assert!(w.iter().any(|m| m.starts_with("ssl_cert: ignored")), "{w:?}");
    assert!(Config::default().warnings().is_empty());
}

#[cfg(unix)]
#[test]
fn file_permission_warnings() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgbalancer.yml");
    std::fs::write(&path, "port: 1\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Config::file_warnings(&path).is_empty());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let w = Config::file_warnings(&path);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("0644") && w[0].contains(&path.display().to_string()), "{w:?}");
    assert_eq!(Config::load(&path).unwrap().port, 1);
}

#[test]
fn load_errors_name_the_file() {
    let err = Config::load(Path::new("/nonexistent/pgbalancer.yml")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().starts_with("/nonexistent/pgbalancer.yml: cannot read: "), "{err}");

    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"pool_size: 0\n").unwrap();
    let err = Config::load(f.path()).unwrap_err().to_string();
    assert_eq!(err, format!("{}: pool_size: must be at least 1", f.path().display()));
}

#[test]
fn secrets_resolve_from_plain_file_and_env() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"s3cret pass\r\n").unwrap();
    let file = SecretRef::File { file: f.path().to_path_buf() };
    assert_eq!(file.resolve().unwrap(), "s3cret pass");
    assert_eq!(SecretRef::Plain("p".into()).resolve().unwrap(), "p");

    std::env::set_var("PGBALANCER_CONFIG_TEST_SECRET", "from-env");
    let env = SecretRef::Env { env: "PGBALANCER_CONFIG_TEST_SECRET".into() };
    assert_eq!(env.resolve().unwrap(), "from-env");

    let missing = SecretRef::Env { env: "PGBALANCER_CONFIG_TEST_UNSET".into() };
    let e = missing.resolve().unwrap_err().to_string();
    assert_eq!(e, "environment variable PGBALANCER_CONFIG_TEST_UNSET: cannot read: is not set");

    let e = SecretRef::File { file: "/nonexistent/secret".into() }.resolve().unwrap_err().to_string();
    assert!(e.starts_with("/nonexistent/secret: cannot read: "), "{e}");

    let empty = tempfile::NamedTempFile::new().unwrap();
    let e = SecretRef::File { file: empty.path().into() }.resolve().unwrap_err().to_string();
    assert!(e.ends_with("secret file is empty"), "{e}");

    // YAML forms.
    let y = format!(
        "server_password: {{file: {}}}\nrest_api:\n  jwt_secret: {{env: PGBALANCER_CONFIG_TEST_SECRET}}\n",
        f.path().display()
    );
    let c = parse(&y).unwrap();
    assert_eq!(c.server_password().unwrap().as_deref(), Some("s3cret pass"));
    assert_eq!(c.rest_api.jwt_secret.unwrap().resolve().unwrap(), "from-env");
}

#[test]
fn rest_api_jwt_keys() {
    let c = parse(
        "rest_api:\n  enabled: true\n  jwt_secret_file: /etc/pgbalancer/jwt\n  jwt_algorithm: HS256\n  \
         jwt_audience: pgbalancer\n  jwt_issuer: ops\n  jwt_max_ttl: 15m\n",
    )
    .unwrap();
    let r = &c.rest_api;
    assert_eq!(r.jwt_secret_file.as_deref(), Some(Path::new("/etc/pgbalancer/jwt")));
    assert_eq!(r.jwt_algorithm, JwtAlgorithm::HS256);
    assert_eq!(r.jwt_audience.as_deref(), Some("pgbalancer"));
    assert_eq!(r.jwt_issuer.as_deref(), Some("ops"));
    assert_eq!(r.jwt_max_ttl, Duration::from_secs(900));

    // RS256 and EdDSA verify with a public key file (required once the API
    // checks tokens); the private key, for login, is optional. A secret next
    // to them, or key files next to HS256, is refused: it would never be used.
    for alg in ["RS256", "EdDSA"] {
        let c = parse(&format!(
            "rest_api: {{enabled: true, jwt_algorithm: {alg}, jwt_public_key_file: /k.pub, \
             jwt_private_key_file: /k.pem}}\n"
        ))
        .unwrap();
        assert_eq!(c.rest_api.jwt_algorithm.to_string(), alg);
        assert_eq!(c.rest_api.jwt_public_key_file.as_deref(), Some(Path::new("/k.pub")));
        assert_eq!(c.rest_api.jwt_private_key_file.as_deref(), Some(Path::new("/k.pem")));
        parse(&format!("rest_api: {{enabled: true, jwt_algorithm: {alg}, jwt_public_key_file: /k.pub}}\n")).unwrap();
        // Not enabled: nothing is required yet.
        parse(&format!("rest_api: {{jwt_algorithm: {alg}}}\n")).unwrap();
        let p = one_problem(&format!("rest_api: {{enabled: true, jwt_algorithm: {alg}}}\n"));
        assert_eq!(p.key, "rest_api.jwt_public_key_file");
        assert!(p.message.contains(&format!("required when jwt_algorithm is {alg}")), "{p:?}");
        let p = one_problem(&format!(
            "rest_api: {{enabled: true, jwt_algorithm: {alg}, jwt_public_key_file: /k.pub, jwt_secret_file: /s}}\n"
        ));
        assert_eq!(p.key, "rest_api.jwt_secret_file");
        assert!(p.message.contains("only used with jwt_algorithm HS256"), "{p:?}");
        let p =
            one_problem(&format!("rest_api: {{jwt_algorithm: {alg}, jwt_secret: 0123456789abcdef0123456789abcdef}}\n"));
        assert_eq!(p.key, "rest_api.jwt_secret");
        let p = one_problem(&format!("rest_api: {{jwt_algorithm: {alg}, jwt_private_key_file: ''}}\n"));
        assert_eq!(p.key, "rest_api.jwt_private_key_file");
    }
    for key in ["jwt_public_key_file", "jwt_private_key_file"] {
        let p = one_problem(&format!("rest_api: {{enabled: true, jwt_secret_file: /s, {key}: /k}}\n"));
        assert_eq!(p.key, format!("rest_api.{key}"));
        assert!(p.message.contains("only used with jwt_algorithm RS256 or EdDSA"), "{p:?}");
    }
    assert_eq!(one_problem("rest_api: {jwt_algorithm: none}\n").key, "rest_api.jwt_algorithm");
    assert_eq!(one_problem("rest_api: {jwt_algorithm: HS512}\n").key, "rest_api.jwt_algorithm");

    let p = one_problem("rest_api: {jwt_secret: {env: X}, jwt_secret_file: /x}\n");
    assert_eq!(p.key, "rest_api.jwt_secret_file");
    assert!(p.message.contains("conflicts with rest_api.jwt_secret"), "{p:?}");
    assert_eq!(one_problem("rest_api: {jwt_secret_file: ''}\n").key, "rest_api.jwt_secret_file");
    assert_eq!(one_problem("rest_api: {jwt_max_ttl: 0}\n").key, "rest_api.jwt_max_ttl");
    assert_eq!(one_problem("rest_api: {jwt_max_ttl: 400d}\n").key, "rest_api.jwt_max_ttl");
    assert_eq!(one_problem("rest_api: {jwt_audience: ''}\n").key, "rest_api.jwt_audience");
    assert_eq!(one_problem("rest_api: {jwt_issuer: ' '}\n").key, "rest_api.jwt_issuer");
    // A secret file satisfies "a secret is required".
    parse("rest_api: {enabled: true, jwt_secret_file: /x}\n").unwrap();
    assert!(one_problem("rest_api: {enabled: true}\n").message.contains("jwt_secret_file"));
}

#[test]
fn jwt_secret_sources() {
    assert_eq!(RestApiConfig::default().jwt_secret().unwrap(), None);
    let inline = "0123456789abcdef0123456789abcdef";
    let c = parse(&format!("rest_api: {{jwt_secret: {inline}}}\n")).unwrap();
    assert_eq!(c.rest_api.jwt_secret().unwrap().as_deref(), Some(inline));

    // Read anew on every call: a rotated file is seen.
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"first-secret-0123456789abcdef0123456789\n").unwrap();
    let c = parse(&format!("rest_api: {{jwt_secret_file: {}}}\n", f.path().display())).unwrap();
    assert_eq!(c.rest_api.jwt_secret().unwrap().as_deref(), Some("first-secret-0123456789abcdef0123456789"));
    std::fs::write(f.path(), "second-secret-0123456789abcdef012345678\n").unwrap();
    assert_eq!(c.rest_api.jwt_secret().unwrap().as_deref(), Some("second-secret-0123456789abcdef012345678"));

    let c = parse("rest_api: {jwt_secret_file: /nonexistent/jwt}\n").unwrap();
    assert!(c.rest_api.jwt_secret().unwrap_err().to_string().starts_with("/nonexistent/jwt: cannot read"));
}

#[test]
fn server_password_sources() {
    assert_eq!(Config::default().server_password().unwrap(), None);
    let c = parse("server_password: inline\n").unwrap();
    assert_eq!(c.server_password().unwrap().as_deref(), Some("inline"));

    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"from-file\n").unwrap();
    let c = parse(&format!("server_password_file: {}\n", f.path().display())).unwrap();
    assert_eq!(c.server_password().unwrap().as_deref(), Some("from-file"));

    let c = parse("server_password_file: /nonexistent/pw\n").unwrap();
    assert!(c.server_password().unwrap_err().to_string().starts_with("/nonexistent/pw: cannot read"));
}

#[test]
fn secrets_never_shown() {
    let c = parse(&format!(
        "server_password: hunter2-server\nusers: [{{name: app, password: hunter2-user}}, {{name: v, password: '{SCRAM}'}}]\n\
         rest_api: {{jwt_secret: hunter2-jwt-0123456789abcdef0123456789}}\n"
    ))
    .unwrap();
    let debug = format!("{c:?} {:?}", c.users);
    let dump = serde_yaml::to_string(&c).unwrap();
    for shown in [&debug, &dump] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("YZ8RqLDs"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
    let refs = parse("server_password: {env: PW_VAR}\n").unwrap();
    assert!(serde_yaml::to_string(&refs).unwrap().contains("env: PW_VAR"));
}

#[test]
fn serialized_config_reads_back() {
    let c = parse(
        "pool_mode: session\nquery_wait_timeout: 1500ms\nmax_message_size: 3kB\nbackends: [{host: x, role: replica}]\n",
    )
    .unwrap();
    let dump = serde_yaml::to_string(&c).unwrap();
    assert!(dump.contains("query_wait_timeout: 1500ms") && dump.contains("max_message_size: 3KiB"), "{dump}");
    assert_eq!(parse(&dump).unwrap(), c);
    let d = Config::default();
    assert_eq!(parse(&serde_yaml::to_string(&d).unwrap()).unwrap(), d);
}

#[test]
fn listen_hosts_split() {
    let mut c = Config::default();
    assert_eq!(c.listen_hosts(), vec!["127.0.0.1"]);
    c.listen_addresses = " 10.0.0.1 , ::1,localhost ".into();
    assert_eq!(c.listen_hosts(), vec!["10.0.0.1", "::1", "localhost"]);
    c.listen_addresses = "*".into();
    assert_eq!(c.listen_hosts(), vec!["0.0.0.0", "::"]);
}

// ---------------------------------------------------------------- TLS keys

/// A temp dir with readable `cert.pem`, `key.pem` (0600) and `ca.pem`
/// (contents do not matter to validation; the proxy parses them).
fn tls_files() -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(dir.path().join(f), "-----BEGIN X-----\n-----END X-----\n").unwrap();
    }
    std::fs::set_permissions(dir.path().join("key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = dir.path().display().to_string();
    (dir, d)
}

#[test]
fn tls_keys_parse_and_resolve_modes() {
    let (_dir, d) = tls_files();
    let c = parse(&format!(
        "ssl: true\nssl_cert: {d}/cert.pem\nssl_key: {d}/key.pem\nssl_ca_cert: {d}/ca.pem\nssl_mode: require\n\
         ssl_direct: true\nbackend_sslmode: verify-full\nbackend_sslrootcert: {d}/ca.pem\n"
    ))
    .unwrap();
    assert_eq!(c.client_ssl_mode(), ClientSslMode::Require);
    assert!(c.ssl_direct);
    assert_eq!(c.backend_ssl_mode(), BackendSslMode::VerifyFull);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());

    // Unset modes follow the seed's booleans.
    let c =
        parse(&format!("ssl: true\nssl_cert: {d}/cert.pem\nssl_key: {d}/key.pem\nbackend_encryption: true\n")).unwrap();
    assert_eq!((c.client_ssl_mode(), c.backend_ssl_mode()), (ClientSslMode::Allow, BackendSslMode::Require));
    let c = Config::default();
    assert_eq!((c.client_ssl_mode(), c.backend_ssl_mode()), (ClientSslMode::Disable, BackendSslMode::Disable));
    for (text, mode) in [
        ("disable", BackendSslMode::Disable),
        ("prefer", BackendSslMode::Prefer),
        ("require", BackendSslMode::Require),
        ("verify-ca", BackendSslMode::VerifyCa),
    ] {
        let extra = if mode.verifies() { format!("\nbackend_sslrootcert: {d}/ca.pem") } else { String::new() };
        assert_eq!(parse(&format!("backend_sslmode: {text}{extra}\n")).unwrap().backend_ssl_mode(), mode);
        assert_eq!(mode.to_string(), text);
    }
    assert_eq!(one_problem("ssl_mode: prefer\n").key, "ssl_mode");
    assert_eq!(one_problem("backend_sslmode: verify_full\n").key, "backend_sslmode");
}

#[test]
fn tls_problems_name_their_keys() {
    let (_dir, d) = tls_files();
    let keys =
        |yaml: &str| -> Vec<(String, String)> { problems(yaml).into_iter().map(|p| (p.key, p.message)).collect() };

    let got = keys("ssl: true\n");
    assert_eq!(
        got,
        [
            ("ssl_cert".to_string(), "required when ssl is true".to_string()),
            ("ssl_key".to_string(), "required when ssl is true".to_string())
        ]
    );
    let got = keys(&format!("ssl: true\nssl_cert: {d}/missing.pem\nssl_key: {d}\nssl_ca_cert: ''\n"));
    let got: Vec<&str> = got.iter().map(|(k, m)| if k == "ssl_cert" { m.as_str() } else { k.as_str() }).collect();
    assert!(got[0].starts_with(&format!("cannot read {d}/missing.pem: ")), "{got:?}");
    assert_eq!(&got[1..], ["ssl_key", "ssl_ca_cert"]);

    for (yaml, key, needle) in [
        ("ssl_mode: require\n", "ssl_mode", "needs ssl: true"),
        ("ssl_mode: allow\n", "ssl_mode", "needs ssl: true"),
        ("ssl_direct: true\n", "ssl_direct", "needs ssl: true"),
        ("backend_sslmode: verify-full\n", "backend_sslrootcert", "required with backend_sslmode verify-full"),
        (
            "backend_sslmode: verify-ca\nbackend_sslrootcert: /nonexistent/ca.pem\n",
            "backend_sslrootcert",
            "cannot read",
        ),
        ("backend_encryption: true\nbackend_sslmode: prefer\n", "backend_sslmode", "contradicts backend_encryption"),
        ("backend_encryption: true\nbackend_sslmode: disable\n", "backend_sslmode", "contradicts backend_encryption"),
    ] {
        let p = one_problem(yaml);
        assert_eq!(p.key, key, "{yaml}");
        assert!(p.message.contains(needle), "{yaml}: {}", p.message);
    }
    let p = one_problem(&format!("ssl: true\nssl_cert: {d}/cert.pem\nssl_key: {d}/key.pem\nssl_mode: disable\n"));
    assert_eq!(p.key, "ssl_mode");
    assert!(p.message.starts_with("disable contradicts ssl: true"), "{}", p.message);
    // A plaintext-only setup spelled out is fine.
    parse("ssl: false\nssl_mode: disable\nbackend_sslmode: disable\n").unwrap();
}

#[cfg(unix)]
#[test]
fn tls_warnings() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, d) = tls_files();
    let w = parse(&format!("backend_sslmode: require\nbackend_sslrootcert: {d}/ca.pem\n")).unwrap().warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("backend_sslrootcert: ignored with backend_sslmode require"), "{w:?}");

    let key = format!("{d}/key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let w = parse(&format!("ssl: true\nssl_cert: {d}/cert.pem\nssl_key: {key}\n")).unwrap().warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with(&format!("ssl_key: {key}: file mode 0640")), "{w:?}");
}

/// HTTPS for the admin API: both files or neither, named by their key;
/// the files are not opened by validation (bctl reads the config too, and
/// may not be allowed to read the daemon's key); a key file others may read
/// gives a warning while the API is enabled.
#[cfg(unix)]
#[test]
fn rest_api_tls_keys() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, d) = tls_files();
    let c = parse(&format!(
        "rest_api:\n  enabled: true\n  jwt_secret_file: /s\n  ssl_cert: {d}/cert.pem\n  ssl_key: {d}/key.pem\n"
    ))
    .unwrap();
    assert_eq!(c.rest_api.ssl_cert, Some(PathBuf::from(format!("{d}/cert.pem"))));
    assert_eq!(c.rest_api.ssl_key, Some(PathBuf::from(format!("{d}/key.pem"))));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    // Files that do not exist (yet, or for this user) pass validation.
    parse("rest_api: {ssl_cert: /nonexistent/cert.pem, ssl_key: /nonexistent/key.pem}\n").unwrap();

    for (yaml, key) in [
        ("rest_api: {ssl_cert: /c.pem}\n", "rest_api.ssl_key"),
        ("rest_api: {ssl_key: /k.pem}\n", "rest_api.ssl_cert"),
        ("rest_api: {enabled: true, jwt_secret_file: /s, ssl_key: /k.pem}\n", "rest_api.ssl_cert"),
    ] {
        let p = one_problem(yaml);
        assert_eq!(p.key, key, "{yaml}");
        assert!(p.message.contains("both or neither"), "{yaml}: {}", p.message);
    }
    let p = one_problem("rest_api: {ssl_cert: '', ssl_key: /k.pem}\n");
    assert_eq!((p.key.as_str(), p.message.as_str()), ("rest_api.ssl_cert", "must not be empty"));

    let key = format!("{d}/key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let yaml = |enabled: bool| {
        format!("rest_api:\n  enabled: {enabled}\n  jwt_secret_file: /s\n  ssl_cert: {d}/cert.pem\n  ssl_key: {key}\n")
    };
    let w = parse(&yaml(true)).unwrap().warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with(&format!("rest_api.ssl_key: {key}: file mode 0644")), "{w:?}");
    assert!(w[0].ends_with("run chmod 600"), "{w:?}");
    assert!(parse(&yaml(false)).unwrap().warnings().is_empty(), "the API is off: its key is not used");
}

#[test]
fn auth_keys_parse_with_defaults() {
    let c = Config::default();
    assert_eq!((c.users_file.as_deref(), c.auth_user.as_deref(), c.auth_dbname.as_str()), (None, None, "postgres"));
    assert_eq!(c.auth_query, DEFAULT_AUTH_QUERY);
    assert!(c.auth_query.contains("$1") && c.auth_query.contains("rolvaliduntil"));
    assert!(c.hba.is_empty() && c.hba_file.is_none());
    assert_eq!(c.max_unauthenticated_clients, 1000);
    assert_eq!((c.auth_failure_limit, c.auth_failure_window), (20, Duration::from_secs(60)));

    let (_dir, d) = tls_files();
    let c = parse(&format!(
        "auth_type: md5\nusers_file: {d}/ca.pem\nauth_user: pgb_auth\nauth_dbname: auth\n\
         auth_query: 'SELECT * FROM pgb.lookup($1)'\nusers: [{{name: app}}]\n\
         max_unauthenticated_clients: 10\nauth_failure_limit: 0\nauth_failure_window: 0\n\
         ssl: true\nssl_cert: {d}/cert.pem\nssl_key: {d}/key.pem\nssl_ca_cert: {d}/ca.pem\n\
         hba:\n\
         \x20 - {{type: hostssl, database: all, user: admin, address: 10.0.0.0/8, method: cert}}\n\
         \x20 - {{type: hostnossl, database: 'app,reports', user: all, address: '::1', method: md5}}\n\
         \x20 - {{type: host, database: sameuser, user: all, address: all, method: reject}}\n"
    ))
    .unwrap();
    assert_eq!(c.auth_type, AuthType::Md5);
    assert_eq!(c.hba.len(), 3);
    assert_eq!(c.hba[0].kind, HbaType::HostSsl);
    assert_eq!(c.hba[0].method, AuthType::Cert);
    assert_eq!(c.hba[1].address.as_deref(), Some("::1"));
    assert_eq!(c.hba[2].method, AuthType::Reject);
    for (m, name) in
        [(AuthType::Trust, "trust"), (AuthType::Reject, "reject"), (AuthType::Md5, "md5"), (AuthType::Cert, "cert")]
    {
        assert_eq!(m.to_string(), name);
        assert_eq!(
            parse(&format!(
                "auth_type: {name}\nssl: true\nssl_cert: {d}/cert.pem\nssl_key: {d}/key.pem\nssl_ca_cert: {d}/ca.pem\n"
            ))
            .unwrap()
            .auth_type,
            m
        );
    }
    let w = c.warnings();
    assert!(w.iter().any(|m| m.starts_with("auth_type: ignored: hba rules")), "{w:?}");
}

#[test]
fn auth_key_problems() {
    let (_dir, d) = tls_files();
    let tls = format!("ssl: true\nssl_cert: {d}/cert.pem\nssl_key: {d}/key.pem\n");
    for (yaml, key, needle) in [
        ("auth_user: ''\n".to_string(), "auth_user", "must not be empty"),
        ("auth_query: 'SELECT 1'\n".into(), "auth_query", "must use $1"),
        ("auth_dbname: ' '\n".into(), "auth_dbname", "must not be empty"),
        ("users_file: /nonexistent/userlist.txt\n".into(), "users_file", "cannot read"),
        ("hba_file: /nonexistent/hba.conf\n".into(), "hba_file", "cannot read"),
        (
            format!(
                "hba_file: {d}/ca.pem\nhba: [{{type: host, database: all, user: all, address: all, method: trust}}]\n"
            ),
            "hba_file",
            "conflicts with hba",
        ),
        ("auth_type: cert\n".into(), "auth_type", "cert needs ssl: true"),
        (format!("auth_type: cert\n{tls}"), "auth_type", "cert needs ssl_ca_cert"),
        ("max_unauthenticated_clients: 0\n".into(), "max_unauthenticated_clients", "at least 1"),
        ("auth_failure_window: 0\n".into(), "auth_failure_window", "greater than 0"),
        (
            "hba: [{type: local, database: all, user: all, method: trust}]\n".into(),
            "hba[0].type",
            "local (Unix socket)",
        ),
        ("hba: [{type: host, database: all, user: all, method: trust}]\n".into(), "hba[0].address", "required"),
        (
            "hba: [{type: host, database: all, user: all, address: db.example.com, method: trust}]\n".into(),
            "hba[0].address",
            "host names are not supported",
        ),
        (
            "hba: [{type: host, database: all, user: all, address: 10.0.0.0/40, method: trust}]\n".into(),
            "hba[0].address",
            "prefix length",
        ),
        (
            "hba: [{type: host, database: all, user: all, address: samenet, method: trust}]\n".into(),
            "hba[0].address",
            "samenet is not supported",
        ),
        (
            "hba: [{type: host, database: 'a,,b', user: all, address: all, method: trust}]\n".into(),
            "hba[0].database",
            "empty name",
        ),
        (
            "hba: [{type: host, database: all, user: '+admins', address: all, method: trust}]\n".into(),
            "hba[0].user",
            "+role",
        ),
        (
            "hba: [{type: host, database: samerole, user: all, address: all, method: trust}]\n".into(),
            "hba[0].database",
            "samerole is not supported",
        ),
        (
            format!("{tls}hba: [{{type: host, database: all, user: all, address: all, method: cert}}]\n"),
            "hba[0].method",
            "only supported on hostssl",
        ),
        (
            format!("{tls}hba: [{{type: hostssl, database: all, user: all, address: all, method: cert}}]\n"),
            "hba[0].method",
            "needs ssl: true and ssl_ca_cert",
        ),
        ("users: [{name: a}]\n".into(), "users[0].password", "required with auth_type scram-sha-256"),
    ] {
        let p = one_problem(&yaml);
        assert_eq!(p.key, key, "{yaml}");
        assert!(p.message.contains(needle), "{yaml}: {}", p.message);
    }
    // Unknown types and methods are parse errors that list the choices.
    let e = parse("hba: [{type: hostgssenc, database: all, user: all, address: all, method: md5}]\n").unwrap_err();
    assert!(e.to_string().contains("hostgssenc"), "{e}");
    let e = parse("auth_type: password\n").unwrap_err();
    assert!(e.to_string().contains("scram-sha-256"), "{e}");
    // A password can come from elsewhere: no problem without one then.
    parse("users: [{name: a}]\nauth_user: lookup\n").unwrap();
    parse(&format!("users: [{{name: a}}]\nusers_file: {d}/ca.pem\n")).unwrap();
    parse("users: [{name: a}]\nhba: [{type: host, database: all, user: all, address: all, method: trust}]\n").unwrap();
    // An md5 hash cannot serve the admin API's password login.
    let p = one_problem("users: [{name: ops, password: md50123456789abcdef0123456789abcdef}]\nstats_users: [ops]\n");
    assert_eq!(p.key, "stats_users[0]");
    assert!(p.message.contains("md5 hash"), "{}", p.message);
    // admin_users must be in users only when nothing else can know them.
    assert_eq!(one_problem("admin_users: [ops]\n").key, "admin_users[0]");
    parse("admin_users: [ops]\nauth_user: lookup\n").unwrap();
}

#[test]
fn hba_addresses() {
    use std::net::IpAddr;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let net = |s: &str| parse_hba_address(s).unwrap();
    assert_eq!(net("all"), HbaAddress::All);
    assert!(net("10.0.0.0/8").contains(ip("10.255.0.1")));
    assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
    assert!(net("10.1.2.3/8").contains(ip("10.9.9.9")), "host bits are masked off");
    assert!(net("127.0.0.1").contains(ip("127.0.0.1")) && !net("127.0.0.1").contains(ip("127.0.0.2")));
    assert!(net("0.0.0.0/0").contains(ip("192.0.2.1")) && !net("0.0.0.0/0").contains(ip("::1")));
    assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.1.1")), "IPv4-mapped clients match IPv4 rules");
    assert!(net("fd00::/8").contains(ip("fd12::1")) && !net("fd00::/8").contains(ip("fe80::1")));
    assert!(net("::/0").contains(ip("::1")) && !net("::/0").contains(ip("10.0.0.1")));
    assert!(net("::1/128").contains(ip("::1")));
    for bad in ["", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "::1/129", "host.example", "10.0.0.0/8/8"] {
        assert!(parse_hba_address(bad).is_err(), "{bad:?}");
    }
    let v4 = ip("10.0.0.0");
    assert_eq!(mask_prefix_len(v4, "255.255.0.0"), Ok(16));
    assert_eq!(mask_prefix_len(v4, "0.0.0.0"), Ok(0));
    assert_eq!(mask_prefix_len(v4, "255.255.255.255"), Ok(32));
    assert!(mask_prefix_len(v4, "255.0.255.0").is_err());
    assert!(mask_prefix_len(v4, "ffff::").is_err());
    assert_eq!(mask_prefix_len(ip("fd00::"), "ffff:ff00::"), Ok(24));
}

#[cfg(unix)]
#[test]
fn users_file_permissions_warn() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, d) = tls_files();
    let f = format!("{d}/ca.pem");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let w = parse(&format!("users_file: {f}\n")).unwrap().warnings();
    assert!(w.iter().any(|m| m.starts_with(&format!("users_file: {f}: file mode 0644"))), "{w:?}");
    let w = parse("hba: [{type: host, database: all, user: all, address: 10.0.0.0/8, method: trust}]\n")
        .unwrap()
        .warnings();
    assert!(w.iter().any(|m| m.starts_with("hba[0]: trust for non-loopback")), "{w:?}");
    let w = parse("hba: [{type: hostssl, database: all, user: all, address: 127.0.0.1, method: trust}]\n")
        .unwrap()
        .warnings();
    assert_eq!(w, ["hba[0]: a hostssl rule never matches while ssl is false"]);
}
