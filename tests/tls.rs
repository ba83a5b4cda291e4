//! TLS end to end (issue 5 items 1-2; scenarios 7, 8, 9, 27 and 47 of
//! test-scenarios.md with TLS on): real PostgreSQL, real clients (psql,
//! pgbench), rustls clients for what psql 15 cannot do (direct TLS, looking
//! at the served certificate), and raw bytes for bad input.
//!
//! Certificates are made here with rcgen: a CA, a server certificate for
//! `localhost` and 127.0.0.1, a client certificate, and a second CA with a
//! client certificate of its own. Nothing sleeps to wait for state: waits
//! are reads with a deadline or bounded polls.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use common::raw::{field, query, sqlstate, startup, Raw};
use common::*;
use pgbalancer_config::{AuthType, BackendConfig, BackendRole, BackendSslMode, ClientSslMode, Config, UserEntry};
use pgbalancer_proxy::server::{ServerConn, ServerLogin, ServerSecret};
use pgbalancer_proxy::tls::BackendTls;
use pgbalancer_proxy::ProxyHandle;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A test CA that issues certificates into its directory.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: PathBuf,
}

/// One issued certificate: PEM files and the DER the peer will see.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("pgbalancer test {name}"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        let path = dir.join(format!("{name}.crt"));
        std::fs::write(&path, cert.pem()).expect("write CA");
        Ca { issuer: Issuer::new(params, key), cert: path }
    }

    /// A server (`client == false`) or client certificate named `cn`, for
    /// `sans`, written as `<file>.crt` and `<file>.key` (mode 0600).
    fn issue(&self, dir: &Path, file: &str, cn: &str, sans: &[&str], client: bool) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let leaf = Leaf {
            cert: dir.join(format!("{file}.crt")),
            key: dir.join(format!("{file}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        write_private(&leaf.key, &key.serialize_pem());
        leaf
    }
}

fn write_private(path: &Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
}

/// The certificates every test shares.
struct Pki {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ca: Ca,
    server: Leaf,
    client: Leaf,
    other_ca: Ca,
    other_client: Leaf,
}

fn pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let ca = Ca::new(&dir, "ca");
        let server = ca.issue(&dir, "server", "localhost", &["localhost", "127.0.0.1"], false);
        let client = ca.issue(&dir, "client", APP_USER, &[], true);
        let other_ca = Ca::new(&dir, "other-ca");
        let other_client = other_ca.issue(&dir, "other-client", APP_USER, &[], true);
        Pki { _dir: tmp, dir, ca, server, client, other_ca, other_client }
    })
}

/// `cfg` with TLS on, serving the shared server certificate.
fn with_tls(mut cfg: Config) -> Config {
    let p = pki();
    cfg.ssl = true;
    cfg.ssl_cert = Some(p.server.cert.clone());
    cfg.ssl_key = Some(p.server.key.clone());
    cfg
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client trusting `ca`, offering `alpn`, presenting `cert`.
fn client_config(ca: &Path, alpn: &[&[u8]], cert: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let der = CertificateDer::from_pem_file(ca).expect("read CA");
    roots.add(der).expect("add CA");
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(leaf) => {
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).expect("client key");
            builder.with_client_auth_cert(vec![leaf.der.clone()], key).expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// SSLRequest on a fresh connection; returns the socket once `S` came.
async fn ssl_request(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&packet(SSL_REQUEST)).await.expect("send SSLRequest");
    let mut answer = [0u8; 1];
    within(DEADLINE, "answer to SSLRequest", tcp.read_exact(&mut answer)).await.expect("read answer");
    assert_eq!(answer[0], b'S', "SSLRequest must be accepted with TLS on");
    tcp
}

/// SSLRequest, `S`, then a verified handshake for `localhost`.
async fn tls_connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = ssl_request(addr).await;
    handshake(tcp, config).await
}

async fn handshake(tcp: TcpStream, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream> {
    let name = ServerName::try_from("localhost").expect("name");
    within(DEADLINE, "TLS handshake", tokio_rustls::TlsConnector::from(config).connect(name, tcp)).await
}

/// A startup-phase packet with no body.
fn packet(code: i32) -> Vec<u8> {
    let mut p = 8i32.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p
}

/// Protocol messages over any stream (plaintext or TLS), with deadlines.
struct Wire<S> {
    s: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    fn new(s: S) -> Wire<S> {
        Wire { s, buf: BytesMut::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The peer may already have closed; tests look at what comes back.
        let _ = self.s.write_all(bytes).await;
        let _ = self.s.flush().await;
    }

    /// The next whole message, or None once the peer closed (or broke
    /// the connection, which over TLS is how a refusal often looks).
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() > len {
                    let tag = self.buf.get_u8();
                    self.buf.advance(4);
                    return Some((tag, self.buf.split_to(len - 4).to_vec()));
                }
            }
            self.buf.reserve(8192);
            match tokio::time::timeout(DEADLINE, self.s.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
                Err(_) => panic!("peer neither answered nor closed within {DEADLINE:?}"),
            }
        }
    }

    /// Messages up to and including the first of type `tag`; stops at close.
    async fn until(&mut self, tag: u8) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            let done = m.0 == tag;
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// Logs in as `app` on `db` (trust proxy) and runs `SELECT 1`.
    async fn login_and_select(&mut self, db: &str) {
        self.send(&startup(&[("user", APP_USER), ("database", db)])).await;
        let msgs = self.until(b'Z').await;
        assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'), "login failed: {msgs:?}");
        self.select_one().await;
    }

    async fn select_one(&mut self) {
        self.send(&query("SELECT 1")).await;
        let msgs = self.until(b'Z').await;
        assert_eq!(types(&msgs), "TDCZ", "SELECT 1: {msgs:?}");
    }

    /// Reads to close and returns the single FATAL's (sqlstate, message).
    async fn fatal_then_close(&mut self, what: &str) -> (String, String) {
        let mut msgs = Vec::new();
        while let Some(m) = self.next().await {
            msgs.push(m);
        }
        assert_eq!(msgs.len(), 1, "{what}: one message then close: {msgs:?}");
        let (tag, body) = &msgs[0];
        assert_eq!(*tag, b'E', "{what}: {msgs:?}");
        assert_eq!(field(body, b'S').as_deref(), Some("FATAL"), "{what}");
        (sqlstate(body).unwrap_or_default(), field(body, b'M').unwrap_or_default())
    }
}

fn types(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter().map(|(t, _)| *t as char).collect()
}

/// psql with a connection string (`-X -At -v ON_ERROR_STOP=1`).
async fn psql_at(conninfo: &str, args: &[&str]) -> Output {
    let mut a: Vec<String> = ["-X", "-At", "-v", "ON_ERROR_STOP=1"].map(String::from).to_vec();
    a.extend(args.iter().map(|s| s.to_string()));
    a.push(conninfo.to_owned());
    run_client("psql", &a).await
}

fn conninfo(proxy: &TestProxy, db: &str, extra: &str) -> String {
    format!("host=localhost port={} user={APP_USER} dbname={db} {extra}", proxy.port())
}

fn verify_full() -> String {
    format!("sslmode=verify-full sslrootcert={}", pki().ca.cert.display())
}

fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}\n{}", stdout(o), stderr(o));
}

fn assert_fails_with(o: &Output, needle: &str, what: &str) {
    assert!(!o.status.success(), "{what}: must fail, printed {}", stdout(o));
    assert!(stderr(o).contains(needle), "{what}: expected {needle:?} in {:?}", stderr(o));
}

// ---------------------------------------------------------------------------
// Client side: real clients
// ---------------------------------------------------------------------------

/// psql with `sslmode=verify-full` (by name and by IP) logs in with SCRAM
/// over TLS and says so in `\conninfo`; `sslmode=disable` still works with
/// `ssl_mode` allow (the default with `ssl: true`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verify_full_over_tls() {
    let db = fresh_db("tls_psql");
    let proxy = TestProxy::start(with_tls(base_config())).await;
    for host in ["localhost", "127.0.0.1"] {
        let info = format!("host={host} port={} user={APP_USER} dbname={db} {}", proxy.port(), verify_full());
        let o = psql_at(&info, &["-c", "\\conninfo", "-c", "SELECT 1"]).await;
        assert_ok(&o, host);
        let out = stdout(&o);
        assert!(out.contains("SSL connection (protocol: TLSv1.3"), "{host}: not TLS 1.3: {out}");
        assert_eq!(out.lines().last(), Some("1"), "{host}: {out}");
    }
    let o = psql_at(&conninfo(&proxy, &db, "sslmode=disable"), &["-c", "\\conninfo", "-c", "SELECT 1"]).await;
    assert_ok(&o, "plaintext with ssl_mode allow");
    assert!(!stdout(&o).contains("SSL connection"), "{}", stdout(&o));
}

/// `sslmode=require` against a pgbalancer without TLS fails with libpq's
/// own words, as against PostgreSQL with `ssl = off`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_tls_off_fails_as_postgresql_would() {
    let db = fresh_db("tls_off");
    let mut cfg = base_config();
    cfg.ssl_mode = Some(ClientSslMode::Disable);
    let proxy = TestProxy::start(cfg).await;
    let o = psql_at(&conninfo(&proxy, &db, "sslmode=require"), &["-c", "SELECT 1"]).await;
    assert_fails_with(&o, "server does not support SSL, but SSL was required", "sslmode=require");
    // And PostgreSQL says the same (the shared cluster runs with ssl off).
    let c = cluster();
    let direct = format!("host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require", c.primary.port);
    let o = psql_at(&direct, &["-c", "SELECT 1"]).await;
    assert_fails_with(&o, "server does not support SSL, but SSL was required", "PostgreSQL itself");
    proxy.assert_alive(&db).await;
}

/// `ssl_mode: require`: a plaintext StartupMessage gets PostgreSQL's
/// hostssl-only refusal (FATAL 28000), also after GSSENCRequest → `N`;
/// TLS clients log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_mode_require_refuses_plaintext() {
    let db = fresh_db("tls_req");
    let mut cfg = with_tls(base_config());
    cfg.ssl_mode = Some(ClientSslMode::Require);
    let proxy = TestProxy::start(cfg).await;
    let expected =
        format!("no pg_hba.conf entry for host \"127.0.0.1\", user \"{APP_USER}\", database \"{db}\", no encryption");

    let o = psql_at(&conninfo(&proxy, &db, "sslmode=disable"), &["-c", "SELECT 1"]).await;
    assert_fails_with(&o, &expected, "psql sslmode=disable");

    for gss_first in [false, true] {
        let mut w = Wire::new(TcpStream::connect(proxy.addr).await.expect("connect"));
        if gss_first {
            w.send(&packet(GSSENC_REQUEST)).await;
            let mut b = [0u8; 1];
            w.s.read_exact(&mut b).await.expect("answer");
            assert_eq!(b[0], b'N');
        }
        w.send(&startup(&[("user", APP_USER), ("database", &db)])).await;
        let (code, msg) = w.fatal_then_close("plaintext startup").await;
        assert_eq!((code.as_str(), msg.as_str()), ("28000", expected.as_str()), "gss first: {gss_first}");
    }
    assert_eq!(server_connections(&db), 0, "a refused login opens no server connection");

    let o = psql_at(&conninfo(&proxy, &db, &verify_full()), &["-c", "SELECT 1"]).await;
    assert_ok(&o, "psql over TLS");
    assert_eq!(stdout(&o), "1");
}

/// Scenario 47 with TLS: pgbench `-C` (a TLS handshake and a SCRAM login
/// per transaction) with 0 failures; afterwards no accepted socket is left
/// open on the proxy's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_connect_per_transaction_over_tls() {
    let db = fresh_db("tls_bench");
    let proxy = TestProxy::start(with_tls(base_config())).await;
    let script = pki().dir.join("select1.sql");
    std::fs::write(&script, "SELECT 1;\n").expect("write script");
    let args: Vec<String> = ["-n", "-C", "-c", "4", "-j", "2", "-t", "50", "-f"]
        .iter()
        .map(|s| s.to_string())
        .chain([script.display().to_string(), conninfo(&proxy, &db, &verify_full())])
        .collect();
    let o = run_client("pgbench", &args).await;
    assert_ok(&o, "pgbench -C over TLS");
    let out = stdout(&o);
    assert!(out.contains("number of transactions actually processed: 200/200"), "{out}");
    assert!(out.contains("number of failed transactions: 0 (0.000%)"), "{out}");

    // Every accepted connection was closed by the proxy (an unclosed one
    // stays in CLOSE_WAIT with its descriptor).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let open = open_accepted_sockets(proxy.port());
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} accepted sockets still open on port {}", proxy.port());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.assert_alive(&db).await;
}

/// Sockets with local port `port` that hold a descriptor: any state but
/// LISTEN and TIME_WAIT, from /proc/net/tcp{,6}.
fn open_accepted_sockets(port: u16) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else { continue };
            let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state != "0A" && *state != "06" {
                n += 1;
            }
        }
    }
    n
}

/// With `ssl_ca_cert`: a client certificate from that CA is accepted, one
/// from another CA is refused, and no certificate is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_when_presented() {
    let db = fresh_db("tls_ccert");
    let p = pki();
    let mut cfg = with_tls(trust_config());
    cfg.ssl_ca_cert = Some(p.ca.cert.clone());
    let proxy = TestProxy::start(cfg).await;
    let with_cert =
        |leaf: &Leaf| format!("{} sslcert={} sslkey={}", verify_full(), leaf.cert.display(), leaf.key.display());
    let o = psql_at(&conninfo(&proxy, &db, &with_cert(&p.client)), &["-c", "SELECT 1"]).await;
    assert_ok(&o, "certificate from the configured CA");
    assert_eq!(stdout(&o), "1");
    let o = psql_at(&conninfo(&proxy, &db, &verify_full()), &["-c", "SELECT 1"]).await;
    assert_ok(&o, "no client certificate");
    let o = psql_at(&conninfo(&proxy, &db, &with_cert(&p.other_client)), &["-c", "SELECT 1"]).await;
    assert_fails_with(&o, "SSL error: tlsv1 alert unknown ca", "a certificate from another CA");

    // The same with rustls: the refusal comes at the handshake or at the
    // first read (TLS 1.3 checks the client's certificate after its Finished).
    let config = client_config(&p.ca.cert, &[], Some(&p.other_client));
    if let Ok(tls) = tls_connect(proxy.addr, config).await {
        let mut w = Wire::new(tls);
        w.send(&startup(&[("user", APP_USER), ("database", &db)])).await;
        assert_eq!(w.next().await, None, "a foreign client certificate must not get a login");
    }
    let mut w = Wire::new(tls_connect(proxy.addr, client_config(&p.ca.cert, &[], Some(&p.client))).await.expect("TLS"));
    w.login_and_select(&db).await;
    proxy.assert_alive(&db).await;
}

/// A certificate, key or CA file that cannot be used stops the start (and
/// a reload) with the key named, and no key material in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tls_files_name_their_key() {
    let p = pki();
    let key_text = std::fs::read_to_string(&p.server.key).expect("read key");
    let key_body: Vec<&str> = key_text.lines().filter(|l| !l.starts_with("-----")).collect();
    let other_key = p.dir.join("unrelated.key");
    write_private(&other_key, &KeyPair::generate().expect("key").serialize_pem());
    let garbage = p.dir.join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n").expect("write");
    let tls = || with_tls(trust_config());
    let cases = [
        ("ssl_cert", Config { ssl_cert: Some(p.server.key.clone()), ..tls() }),
        ("ssl_key", Config { ssl_key: Some(p.server.cert.clone()), ..tls() }),
        ("ssl_key", Config { ssl_key: Some(garbage), ..tls() }),
        ("ssl_key", Config { ssl_key: Some(other_key), ..tls() }),
        ("ssl_ca_cert", Config { ssl_ca_cert: Some(p.server.key.clone()), ..tls() }),
    ];
    let good = TestProxy::start(tls()).await;
    for (key, cfg) in cases {
        let err = match ProxyHandle::start(cfg.clone()).await {
            Ok(_) => panic!("{key}: start must fail"),
            Err(e) => e.to_string(),
        };
        assert!(err.starts_with(&format!("{key}: ")), "{key}: {err}");
        assert!(key_body.iter().all(|l| !err.contains(l)), "{key}: key material in {err}");
        let reload = good.handle.reload(cfg).expect_err("reload must fail").to_string();
        assert!(reload.starts_with(&format!("{key}: ")), "{key}: {reload}");
    }
    // The failed reloads changed nothing: the old certificate is served.
    let tls = tls_connect(good.addr, client_config(&p.ca.cert, &[], None)).await.expect("TLS after failed reloads");
    assert_eq!(served(&tls), p.server.der);
}

fn served(tls: &TlsStream) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().expect("server certificate")[0].clone()
}

// ---------------------------------------------------------------------------
// Scenarios 7, 8, 9 with TLS on
// ---------------------------------------------------------------------------

/// Scenario 7 with TLS on: SSLRequest plus plaintext bytes in one write →
/// FATAL 08P01 before any `S`, and no server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_after_ssl_request_is_refused_with_tls_on() {
    let db = fresh_db("tls_inject");
    let proxy = TestProxy::start(with_tls(trust_config())).await;
    let login = startup(&[("user", APP_USER), ("database", &db)]);
    for (what, code, extra) in [
        ("SSLRequest + StartupMessage", SSL_REQUEST, login.clone()),
        ("GSSENCRequest + StartupMessage", GSSENC_REQUEST, login.clone()),
        ("SSLRequest + TLS ClientHello byte", SSL_REQUEST, vec![0x16]),
    ] {
        let mut w = Wire::new(TcpStream::connect(proxy.addr).await.expect("connect"));
        let mut b = packet(code);
        b.extend_from_slice(&extra);
        w.send(&b).await;
        let (code, msg) = w.fatal_then_close(what).await;
        assert_eq!(code, "08P01", "{what}");
        assert_eq!(msg, "received unencrypted data after SSL request", "{what}");
    }
    assert_eq!(server_connections(&db), 0, "no server connection was opened for the injected login");
    proxy.assert_alive(&db).await;
}

/// Scenario 8 with TLS on: GSSENCRequest → `N`, SSLRequest → `S`, the
/// handshake, then a StartupMessage logs in; inside TLS a second
/// SSLRequest (or a GSSENCRequest) gets a FATAL and a close; a client that
/// sends garbage instead of a ClientHello is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiation_with_tls_on() {
    let db = fresh_db("tls_neg");
    let proxy = TestProxy::start(with_tls(trust_config())).await;
    let config = client_config(&pki().ca.cert, &[b"postgresql"], None);

    let mut tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    tcp.write_all(&packet(GSSENC_REQUEST)).await.expect("send");
    let mut b = [0u8; 1];
    tcp.read_exact(&mut b).await.expect("answer");
    assert_eq!(b[0], b'N', "GSSENCRequest");
    tcp.write_all(&packet(SSL_REQUEST)).await.expect("send");
    tcp.read_exact(&mut b).await.expect("answer");
    assert_eq!(b[0], b'S', "SSLRequest after GSS");
    let tls = handshake(tcp, config.clone()).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]), "ALPN offered is negotiated");
    let mut w = Wire::new(tls);
    w.login_and_select(&db).await;

    // As PostgreSQL 17: a client that offers ALPN must offer `postgresql`;
    // one that offers none is fine on this path (older libpq).
    let http = client_config(&pki().ca.cert, &[b"http/1.1"], None);
    assert!(tls_connect(proxy.addr, http).await.is_err(), "ALPN without postgresql must fail the handshake");
    let no_alpn = tls_connect(proxy.addr, client_config(&pki().ca.cert, &[], None)).await.expect("no ALPN");
    assert_eq!(no_alpn.get_ref().1.alpn_protocol(), None);
    Wire::new(no_alpn).login_and_select(&db).await;

    for (what, code) in [("SSLRequest inside TLS", SSL_REQUEST), ("GSSENCRequest inside TLS", GSSENC_REQUEST)] {
        let mut w = Wire::new(tls_connect(proxy.addr, config.clone()).await.expect("TLS"));
        w.send(&packet(code)).await;
        let (code, _) = w.fatal_then_close(what).await;
        assert_eq!(code, "0A000", "{what}");
    }

    let mut r = Raw::connect(proxy.addr).await;
    r.send(&packet(SSL_REQUEST)).await;
    assert_eq!(r.read_byte().await, Some(b'S'));
    r.send(b"this is not a ClientHello at all, just bytes").await;
    let mut rest = Vec::new();
    let _ = within(DEADLINE, "close after a bad handshake", r.stream.read_to_end(&mut rest)).await;
    // At most a TLS alert record (type 0x15), nothing in plaintext.
    assert!(rest.first().is_none_or(|b| *b == 0x15), "after a failed handshake: {rest:?}");

    // The client that logged in before is undisturbed.
    w.select_one().await;
    proxy.assert_alive(&db).await;
}

/// Scenario 9: direct TLS (first byte 0x16) with ALPN `postgresql` logs in
/// when `ssl_direct` is on; without ALPN, with another protocol, or with
/// `ssl_direct` off it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls() {
    let db = fresh_db("tls_direct");
    let ca = &pki().ca.cert;
    let mut cfg = with_tls(trust_config());
    cfg.ssl_direct = true;
    let direct = TestProxy::start(cfg).await;
    let negotiated_only = TestProxy::start(with_tls(trust_config())).await;

    let tcp = TcpStream::connect(direct.addr).await.expect("connect");
    let tls = handshake(tcp, client_config(ca, &[b"postgresql"], None)).await.expect("direct TLS with ALPN");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let mut w = Wire::new(tls);
    w.login_and_select(&db).await;
    // As after `S`: no encryption request inside TLS.
    let mut w2 = Wire::new(
        handshake(TcpStream::connect(direct.addr).await.expect("connect"), client_config(ca, &[b"postgresql"], None))
            .await
            .expect("direct TLS"),
    );
    w2.send(&packet(SSL_REQUEST)).await;
    assert_eq!(w2.fatal_then_close("SSLRequest inside direct TLS").await.0, "0A000");

    for (what, addr, alpn) in [
        ("no ALPN", direct.addr, &[][..]),
        ("ALPN http/1.1 only", direct.addr, &[&b"http/1.1"[..]][..]),
        ("ssl_direct off", negotiated_only.addr, &[&b"postgresql"[..]][..]),
    ] {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let result = handshake(tcp, client_config(ca, alpn, None)).await;
        assert!(result.is_err(), "{what}: the handshake must fail");
    }
    // The SSLRequest path still works beside direct TLS.
    let mut w3 = Wire::new(tls_connect(direct.addr, client_config(ca, &[], None)).await.expect("SSLRequest path"));
    w3.login_and_select(&db).await;
    w.select_one().await;
    direct.assert_alive(&db).await;
    negotiated_only.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// Scenario 27: certificate reload
// ---------------------------------------------------------------------------

/// Scenario 27: a reload re-reads the certificate files; a TLS client
/// connected before keeps working, a new one is served the new
/// certificate; a reload that breaks the files is refused and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_keeps_connected_clients() {
    let db = fresh_db("tls_reload");
    let p = pki();
    let dir = tempfile::tempdir().expect("temp dir");
    let first = p.ca.issue(dir.path(), "live", "localhost", &["localhost"], false);
    let mut cfg = trust_config();
    cfg.ssl = true;
    cfg.ssl_cert = Some(first.cert.clone());
    cfg.ssl_key = Some(first.key.clone());
    let proxy = TestProxy::start(cfg.clone()).await;
    let config = client_config(&p.ca.cert, &[], None);

    let before = tls_connect(proxy.addr, config.clone()).await.expect("TLS");
    assert_eq!(served(&before), first.der);
    let mut connected = Wire::new(before);
    connected.login_and_select(&db).await;

    // Renewed in place, as certbot and friends do, then reloaded.
    let renewed = p.ca.issue(dir.path(), "live", "localhost", &["localhost"], false);
    assert_ne!(renewed.der, first.der);
    proxy.handle.reload(cfg.clone()).expect("reload");

    let after = tls_connect(proxy.addr, config.clone()).await.expect("TLS after reload");
    assert_eq!(served(&after), renewed.der, "a new client sees the new certificate");
    Wire::new(after).login_and_select(&db).await;
    connected.select_one().await;

    // A broken key file: the reload is refused, the renewed certificate stays.
    write_private(&renewed.key, "not a key\n");
    let err = proxy.handle.reload(cfg).expect_err("reload with a broken key").to_string();
    assert!(err.starts_with("ssl_key: "), "{err}");
    let again = tls_connect(proxy.addr, config).await.expect("TLS after the refused reload");
    assert_eq!(served(&again), renewed.der);
    connected.select_one().await;
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

/// A PostgreSQL of its own with `ssl = on`, a certificate for `localhost`
/// only from the test CA, and `hostssl`-only hba.
fn tls_cluster() -> &'static pgcluster::Cluster {
    static C: OnceLock<pgcluster::Cluster> = OnceLock::new();
    C.get_or_init(|| {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        let opts = pgcluster::ClusterOptions { replicas: 0, ..Default::default() };
        let c = pgcluster::Cluster::start(opts).expect("start the TLS cluster");
        let data = &c.primary.data_dir;
        let dir = tempfile::tempdir().expect("temp dir");
        let leaf = pki().ca.issue(dir.path(), "pg", "localhost", &["localhost"], false);
        let meta = std::fs::metadata(data).expect("data dir");
        for (from, to) in [(&leaf.cert, "server.crt"), (&leaf.key, "server.key")] {
            let dest = data.join(to);
            std::fs::copy(from, &dest).expect("copy into data dir");
            std::os::unix::fs::chown(&dest, Some(meta.uid()), Some(meta.gid())).expect("chown to postgres");
        }
        let mut conf =
            std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).expect("postgresql.conf");
        writeln!(conf, "ssl = on").expect("write conf");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all postgres 127.0.0.1/32 trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        c.primary.restart().expect("restart with ssl = on");
        c
    })
}

fn backend_tls(mode: BackendSslMode, ca: Option<&Path>) -> BackendTls {
    let c = Config { backend_sslmode: Some(mode), backend_sslrootcert: ca.map(Path::to_path_buf), ..Config::default() };
    c.validate("test").expect("valid backend TLS config");
    BackendTls::from_config(&c).expect("backend TLS")
}

async fn server_connect(host: &str, port: u16, tls: &BackendTls) -> Result<Box<ServerConn>, String> {
    let login = ServerLogin { user: "postgres".into(), database: "postgres".into(), secret: ServerSecret::None };
    ServerConn::connect_tls(host, port, tls, &login, Duration::from_secs(10)).await.map_err(|e| e.to_string())
}

/// What PostgreSQL says about the connection's encryption.
async fn pg_ssl(conn: &mut ServerConn) -> String {
    let row = conn
        .query_row("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .expect("query")
        .expect("row");
    row[0].clone().unwrap_or_default()
}

/// Server connections to a PostgreSQL with `ssl = on` and `hostssl`-only
/// hba: verify-full by name (not by an address the certificate does not
/// name), verify-ca by address, require and prefer without a CA; a wrong
/// CA and plaintext are refused with clear errors. Against the shared
/// cluster (ssl off), require fails as libpq would and prefer falls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_over_tls() {
    let c = tls_cluster();
    let port = c.primary.port;
    let p = pki();
    let good_ca = Some(p.ca.cert.as_path());

    let full = backend_tls(BackendSslMode::VerifyFull, good_ca);
    let mut conn = server_connect("localhost", port, &full).await.expect("verify-full by name");
    assert!(conn.is_tls());
    assert_eq!(pg_ssl(&mut conn).await, "true");
    let leaf = CertificateDer::from_pem_file(c.primary.data_dir.join("server.crt")).expect("read server.crt");
    assert_eq!(conn.peer_certificates().expect("certificates")[0], leaf);

    let err = server_connect("127.0.0.1", port, &full).await.expect_err("the certificate names localhost only");
    assert!(err.contains("invalid peer certificate: certificate not valid for name \"127.0.0.1\""), "{err}");

    let mut conn = server_connect("127.0.0.1", port, &backend_tls(BackendSslMode::VerifyCa, good_ca))
        .await
        .expect("verify-ca checks the chain, not the name");
    assert_eq!(pg_ssl(&mut conn).await, "true");

    for mode in [BackendSslMode::VerifyFull, BackendSslMode::VerifyCa] {
        let wrong = backend_tls(mode, Some(p.other_ca.cert.as_path()));
        let err = server_connect("localhost", port, &wrong).await.expect_err("wrong CA");
        assert!(err.contains("invalid peer certificate: UnknownIssuer"), "{mode}: {err}");
    }
    for mode in [BackendSslMode::Require, BackendSslMode::Prefer] {
        let mut conn = server_connect("127.0.0.1", port, &backend_tls(mode, None)).await.expect("unverified TLS");
        assert!(conn.is_tls(), "{mode}");
        assert_eq!(pg_ssl(&mut conn).await, "true", "{mode}");
    }
    let err = server_connect("127.0.0.1", port, &BackendTls::PLAINTEXT).await.expect_err("hostssl only");
    assert!(err.contains("no pg_hba.conf entry") && err.contains("no encryption"), "{err}");

    // The shared cluster runs with ssl off.
    let plain = &cluster().primary;
    let err = server_connect(&plain.host, plain.port, &backend_tls(BackendSslMode::Require, None))
        .await
        .expect_err("require against ssl off");
    assert!(err.contains("server does not support SSL, but SSL was required"), "{err}");
    let mut conn =
        server_connect(&plain.host, plain.port, &backend_tls(BackendSslMode::Prefer, None)).await.expect("prefer");
    assert!(!conn.is_tls());
    assert_eq!(pg_ssl(&mut conn).await, "false");
}

/// Backend TLS through the proxy: with verify-full, clients' queries run
/// on TLS server connections; with a wrong CA the client is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_through_the_proxy() {
    let c = tls_cluster();
    let p = pki();
    let config = |ca: &Path| {
        let mut cfg = trust_config();
        cfg.auth_type = AuthType::Trust;
        cfg.users = vec![UserEntry { name: "postgres".into(), password: None }];
        cfg.backends = vec![BackendConfig {
            host: "localhost".into(),
            port: c.primary.port,
            role: BackendRole::Primary,
            weight: 1,
        }];
        cfg.backend_sslmode = Some(BackendSslMode::VerifyFull);
        cfg.backend_sslrootcert = Some(ca.to_path_buf());
        cfg
    };
    let proxy = TestProxy::start(config(&p.ca.cert)).await;
    let info = format!("host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable", proxy.port());
    // Transaction mode: each statement takes a server from the pool; the
    // same backend pid twice shows an idle TLS connection is judged quiet
    // and reused, not closed and reopened.
    let ask = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let o = psql_at(&info, &["-c", ask, "-c", "SELECT pg_backend_pid()", "-c", "SELECT pg_backend_pid()"]).await;
    assert_ok(&o, "through the proxy with verify-full");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "t", "{out}");
    assert_eq!(lines[1], lines[2], "the pooled TLS connection is reused: {out}");

    // A long pipeline in one write whose answers (~8 MB) outgrow what is
    // buffered while writing: writes and reads interleave over TLS.
    let mut r = Raw::connect(proxy.addr).await;
    r.login(&[("user", "postgres"), ("database", "postgres")]).await;
    let n = 4000;
    let batch: Vec<u8> = (0..n).flat_map(|i| query(&format!("SELECT {i}, repeat('x', 2000)"))).collect();
    r.send(&batch).await;
    let (mut rows, mut ready) = (0, 0);
    while ready < n {
        match r.next().await {
            common::raw::Next::Message(b'D', _) => rows += 1,
            common::raw::Next::Message(b'Z', _) => ready += 1,
            common::raw::Next::Message(b'E', body) => panic!("error in the pipeline: {:?}", field(&body, b'M')),
            common::raw::Next::Message(..) => {}
            common::raw::Next::Closed => panic!("closed after {ready} of {n} answers"),
        }
    }
    assert_eq!(rows, n);

    let wrong = TestProxy::start(config(&p.other_ca.cert)).await;
    let info = format!("host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable", wrong.port());
    let o = psql_at(&info, &["-c", "SELECT 1"]).await;
    assert_fails_with(&o, "invalid peer certificate: UnknownIssuer", "wrong CA");

    // Health checks (two backends) connect with TLS too: the TLS cluster is
    // seen as primary (its hba takes TLS only); the shared cluster, with
    // ssl off, fails its checks with libpq's words.
    let mut cfg = config(&p.ca.cert);
    let plain = &cluster().primary;
    cfg.backends.push(BackendConfig {
        host: plain.host.clone(),
        port: plain.port,
        role: BackendRole::Replica,
        weight: 1,
    });
    cfg.health_check_period = Duration::from_millis(200);
    cfg.health_check_retry_delay = Duration::from_millis(200);
    let checked = TestProxy::start(cfg).await;
    let nodes = checked.handle.shared().topology.nodes();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let primary_seen = nodes[0].observed_role() == pgbalancer_proxy::topology::Role::Primary;
        let refused = nodes[1].last_error.lock().unwrap().clone().unwrap_or_default();
        if primary_seen && refused.contains("server does not support SSL, but SSL was required") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health checks over TLS: node 0 primary {primary_seen}, node 1: {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
