//! The admin API over HTTPS (`rest_api.ssl_cert` / `rest_api.ssl_key`), end
//! to end: the real `pgbalancer` binary in front of real PostgreSQL, a
//! rustls + hyper client, and certificates made here with rcgen (a CA, and
//! server certificates for `localhost` and 127.0.0.1 it signed).
//!
//! Checked: every kind of endpoint answers over HTTPS; plain HTTP on the
//! port gets no HTTP answer; a client that does not trust the certificate
//! fails its handshake; a reload serves a renewed certificate to new
//! connections, and one whose key cannot be used is rejected naming
//! `rest_api.ssl_key` (the old certificate stays); a key file others may
//! read gives a warning; an unusable key refuses to start. Waits are bounded
//! polls; every daemon is killed by a Drop guard.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(20);
const SECRET: &str = "admin-tls-test-secret-0123456789abcdef-0123";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn token(role: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"role": role, "iat": now, "exp": now + 300}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("pgbalancer admin test {name}"));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { issuer: Issuer::new(params, key), pem }
    }

    /// A server certificate for localhost and 127.0.0.1: (chain PEM — the
    /// certificate then this CA —, key PEM, the certificate's DER).
    fn server(&self) -> (String, String, CertificateDer<'static>) {
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (format!("{}{}", cert.pem(), self.pem), key.serialize_pem(), cert.der().clone())
    }
}

fn write_mode(path: &Path, contents: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A rustls client trusting the certificates of `ca_pem`.
fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to `127.0.0.1:port`, verified against `config`.
async fn tls_connect(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
    within(DEADLINE, "TLS handshake", tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp)).await
}

/// The certificate the server presented.
fn peer_cert(s: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().expect("a certificate")[0].clone().into_owned()
}

struct Resp {
    status: u16,
    body: Value,
}

/// One HTTPS request over a new connection.
async fn https(port: u16, config: &Arc<rustls::ClientConfig>, method: &str, path: &str, token: Option<&str>) -> Resp {
    let tls = tls_connect(port, config).await.unwrap_or_else(|e| panic!("TLS to the admin API: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("HTTP handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", format!("127.0.0.1:{port}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = within(DEADLINE, "HTTPS request", sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let is_json = resp.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = if is_json {
        serde_json::from_slice(&bytes).unwrap()
    } else {
        Value::String(String::from_utf8(bytes.to_vec()).unwrap())
    };
    Resp { status, body }
}

// ---------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------

struct Daemon {
    child: Child,
    api: u16,
    config: PathBuf,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// pgbalancer in front of the shared primary, admin API on HTTPS with
    /// `cert` and `key`; does not wait.
    fn spawn(dir: &Path, cert: &Path, key: &Path) -> Daemon {
        let (port, api) = (free_port(), free_port());
        let secret = dir.join("jwt.secret");
        std::fs::write(&secret, SECRET).unwrap();
        let config = dir.join("pgbalancer.yml");
        std::fs::write(
            &config,
            format!(
                "listen_addresses: '127.0.0.1'\nport: {port}\npool_mode: transaction\nauth_type: trust\n\
                 users:\n  - name: {APP_USER}\n    password: {APP_PASSWORD}\n\
                 backends:\n  - host: 127.0.0.1\n    port: {}\n    role: primary\n\
                 workers: 1\nshutdown_timeout: 5s\n\
                 rest_api:\n  enabled: true\n  port: {api}\n  bind_address: 127.0.0.1\n  \
                 jwt_secret_file: {}\n  ssl_cert: {}\n  ssl_key: {}\n",
                cluster().primary.port,
                secret.display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let log = dir.join("pgbalancer.log");
        let child = spawn_daemon(&config, &log, &[]);
        Daemon { child, api, config, log, status: None }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits until health answers 200 over HTTPS trusting `config`.
    async fn wait_healthy(&mut self, config: &Arc<rustls::ClientConfig>) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                panic!("pgbalancer exited during startup ({st}); log:\n{}", self.log());
            }
            if tls_connect(self.api, config).await.is_ok()
                && https(self.api, config, "GET", "/api/v1/health", None).await.status == 200
            {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "admin API not healthy over HTTPS; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                return st;
            }
            assert!(start.elapsed() < DEADLINE, "pgbalancer still running; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_over_https() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new("ca");
    let (chain, key, der) = ca.server();
    let (cert_path, key_path) = (dir.join("admin.crt"), dir.join("admin.key"));
    write_mode(&cert_path, &chain, 0o644);
    // Readable by others: works, with a warning.
    write_mode(&key_path, &key, 0o644);
    let trusted = client_config(&ca.pem);
    let mut d = Daemon::spawn(dir, &cert_path, &key_path);
    d.wait_healthy(&trusted).await;
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("rest_api.ssl_key: ") && l.contains("file mode 0644") && l.contains("chmod 600")),
        "no warning about the key file's mode:\n{log}"
    );
    assert!(!log.contains("BEGIN PRIVATE KEY"), "{log}");

    // The certificate served is ours; every kind of endpoint answers.
    let s = tls_connect(d.api, &trusted).await.unwrap();
    assert_eq!(peer_cert(&s), der);
    drop(s);
    let r = https(d.api, &trusted, "GET", "/api/v1/status", Some(&token("read"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["phase"], "running", "{}", r.body);
    let r = https(d.api, &trusted, "GET", "/api/v1/clients", None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = https(d.api, &trusted, "GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.as_str().unwrap().contains("pgbalancer_uptime_seconds "), "{}", r.body);

    // Plain HTTP on the HTTPS port: no HTTP answer, the connection closes.
    let mut plain = TcpStream::connect(("127.0.0.1", d.api)).await.unwrap();
    plain.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = within(DEADLINE, "plain HTTP closed", plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered: {:?}", String::from_utf8_lossy(&answer));

    // A client trusting another CA: the handshake fails.
    let stranger = client_config(&Ca::new("other").pem);
    let e = tls_connect(d.api, &stranger).await.expect_err("untrusted certificate accepted");
    assert!(e.to_string().contains("UnknownIssuer") || e.to_string().contains("invalid peer certificate"), "{e}");

    // Renewal: new files, reload; new connections get the new certificate.
    let (chain2, key2, der2) = ca.server();
    assert_ne!(der, der2);
    write_mode(&cert_path, &chain2, 0o644);
    write_mode(&key_path, &key2, 0o600);
    let r = https(d.api, &trusted, "POST", "/api/v1/control/reload", Some(&token("admin"))).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("reloaded")), "{}", r.body);
    assert_eq!(peer_cert(&tls_connect(d.api, &trusted).await.unwrap()), der2);

    // A key that is not the certificate's: the reload is rejected, naming
    // the key; the renewed certificate stays.
    let other_key = KeyPair::generate().unwrap().serialize_pem();
    write_mode(&key_path, &other_key, 0o600);
    let r = https(d.api, &trusted, "POST", "/api/v1/control/reload", Some(&token("admin"))).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["problems"][0]["key"], "rest_api.ssl_key", "{}", r.body);
    assert!(!r.body.to_string().contains("PRIVATE KEY"), "{}", r.body);
    assert_eq!(peer_cert(&tls_connect(d.api, &trusted).await.unwrap()), der2);
    let stats = https(d.api, &trusted, "GET", "/api/v1/stats", Some(&token("read"))).await;
    assert_eq!((stats.body["reloads"].as_u64(), stats.body["reload_failures"].as_u64()), (Some(1), Some(1)));

    // Stop over HTTPS: the daemon exits 0.
    write_mode(&key_path, &key2, 0o600);
    let r = https(d.api, &trusted, "POST", "/api/v1/control/stop", Some(&token("admin"))).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let st = d.wait_exit().await;
    assert!(st.success(), "exit {st}; log:\n{}", d.log());
}

/// A key file that cannot be used refuses to start, naming the key (and
/// nothing of the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_key_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (chain, _, _) = Ca::new("ca").server();
    let (cert_path, key_path) = (dir.join("admin.crt"), dir.join("admin.key"));
    write_mode(&cert_path, &chain, 0o644);
    write_mode(&key_path, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleQ!!\n-----END PRIVATE KEY-----\n", 0o600);
    let mut d = Daemon::spawn(dir, &cert_path, &key_path);
    let st = d.wait_exit().await;
    let log = d.log();
    assert!(!st.success(), "started with a broken key; log:\n{log}");
    assert!(log.contains(&format!("rest_api.ssl_key: {}", key_path.display())), "{log}");
    assert!(!log.contains("c2VjcmV0"), "{log}");
    // The config file itself is valid: only the daemon reading the key objects.
    pgbalancer_config::Config::load(&d.config).expect("valid config");
}
