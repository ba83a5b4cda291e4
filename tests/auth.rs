//! Client authentication end to end (issue 5 items 3-6; scenarios 19-23
//! and 26 of test-scenarios.md): every method against real clients (psql
//! with PGPASSWORD, tokio-postgres, raw bytes for what no client sends),
//! SCRAM channel binding as libpq requires it, `users_file`, `auth_query`
//! against this binary's own PostgreSQL role table, hba rules per type and
//! source address (clients bound to 127.0.0.2), the limits on
//! unauthenticated connections and failed logins, and the audit log.
//!
//! This binary rewrites its cluster's pg_hba.conf (an md5 line for one
//! role), so it has a cluster of its own (one per test binary). Waits are
//! reads with deadlines or bounded polls; nothing sleeps to wait for state.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Buf, BytesMut};
use common::raw::{field, msg, sqlstate, startup, Next, Raw};
use common::*;
use pgbalancer_config::{AuthType, Config, HbaEntry, HbaType, UserEntry};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256, Sha384};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const DEADLINE: Duration = Duration::from_secs(20);
const SSL_REQUEST: i32 = 80_877_103;

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// psql with `conninfo` and `password` in PGPASSWORD, never prompting.
async fn psql_as(conninfo: &str, password: &str, sql: &str) -> Output {
    tokio::process::Command::new(cluster().bin("psql"))
        .args(["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql, conninfo])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "20")
        .env_remove("PGSERVICE")
        .env_remove("PGSSLMODE")
        .env_remove("PGCHANNELBINDING")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run psql")
}

fn info(proxy: &TestProxy, user: &str, db: &str, extra: &str) -> String {
    format!("host=localhost port={} user={user} dbname={db} {extra}", proxy.port())
}

fn assert_ok(o: &Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}\n{}", stdout(o), stderr(o));
    stdout(o)
}

fn assert_fails_with(o: &Output, needle: &str, what: &str) {
    assert!(!o.status.success(), "{what}: must fail, printed {}", stdout(o));
    assert!(stderr(o).contains(needle), "{what}: expected {needle:?} in {:?}", stderr(o));
}

/// tokio-postgres through `proxy` from source address `from` (any of
/// 127.0.0.0/8 is this host), in plaintext.
async fn connect_from(
    proxy: &TestProxy,
    from: &str,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().expect("source address")).expect("bind the source address");
    let stream = socket.connect(proxy.addr).await.expect("connect");
    let mut cfg = tokio_postgres::Config::new();
    cfg.user(user).password(password).dbname(db).application_name("auth-tests");
    let (client, conn) =
        within(DEADLINE, "tokio-postgres login", cfg.connect_raw(stream, tokio_postgres::NoTls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// (SQLSTATE, message) of a failed login.
fn refused(r: Result<tokio_postgres::Client, tokio_postgres::Error>) -> (String, String) {
    let e = match r {
        Ok(_) => panic!("the login must fail"),
        Err(e) => e,
    };
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

async fn current_user(c: &tokio_postgres::Client) -> String {
    one(c, "SELECT current_user").await.expect("current_user")
}

/// A raw client: startup as `user`, then the first message back.
async fn first_answer(addr: SocketAddr, user: &str, db: &str) -> (Raw, Next) {
    let mut r = Raw::connect(addr).await;
    r.send(&startup(&[("user", user), ("database", db)])).await;
    let n = r.next().await;
    (r, n)
}

fn auth_code(n: &Next) -> Option<i32> {
    match n {
        Next::Message(b'R', b) if b.len() >= 4 => Some(i32::from_be_bytes(b[..4].try_into().unwrap())),
        _ => None,
    }
}

/// The mechanisms of an AuthenticationSASL message.
fn mechanisms(n: &Next) -> Vec<String> {
    let Next::Message(b'R', b) = n else { panic!("expected AuthenticationSASL, got {n:?}") };
    assert_eq!(auth_code(n), Some(10), "{n:?}");
    b[4..].split(|&c| c == 0).filter(|m| !m.is_empty()).map(|m| String::from_utf8_lossy(m).into_owned()).collect()
}

fn fatal(n: &Next) -> (String, String) {
    match n {
        Next::Message(b'E', b) => {
            assert_eq!(field(b, b'S').as_deref(), Some("FATAL"), "{n:?}");
            (sqlstate(b).unwrap_or_default(), field(b, b'M').unwrap_or_default())
        }
        other => panic!("expected a FATAL, got {other:?}"),
    }
}

fn sasl_initial(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend((data.len() as i32).to_be_bytes());
    body.extend(data);
    msg(b'p', &body)
}

/// A SCRAM login that sends a made-up proof (what a password guesser
/// sends; no PBKDF2 on this side): returns the server's final answer.
async fn wrong_proof_login(addr: SocketAddr, user: &str, db: &str) -> Next {
    let (mut r, n) = first_answer(addr, user, db).await;
    if auth_code(&n) != Some(10) {
        return n;
    }
    let nonce = "stormstormstormstorm";
    r.send(&sasl_initial("SCRAM-SHA-256", format!("n,,n=,r={nonce}").as_bytes())).await;
    let server_first = match r.next().await {
        Next::Message(b'R', b) if b.len() > 4 => String::from_utf8_lossy(&b[4..]).into_owned(),
        other => return other,
    };
    let full_nonce = server_first.split(',').next().unwrap_or_default().to_owned();
    let fin = format!("c=biws,{full_nonce},p={}", B64.encode([7u8; 32]));
    r.send(&msg(b'p', fin.as_bytes())).await;
    r.next().await
}

// ---------------------------------------------------------------------------
// Roles of this binary's cluster
// ---------------------------------------------------------------------------

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A role with a SCRAM password, allowed into every database.
fn scram_role(prefix: &str, password: &str) -> String {
    let name = unique(prefix);
    cluster().create_role(&name, password).expect("create role");
    name
}

const MD5_PASSWORD: &str = "md5-role-secret";

/// A role whose password PostgreSQL stores as md5, checked with md5 by a
/// pg_hba.conf line ahead of the scram-sha-256 default. Returns (role,
/// its stored hash).
fn md5_role() -> &'static (String, String) {
    static R: OnceLock<(String, String)> = OnceLock::new();
    R.get_or_init(|| {
        let c = cluster();
        let name = unique("md5role");
        admin_sql(
            "postgres",
            &format!("SET password_encryption = 'md5'; CREATE ROLE {name} LOGIN PASSWORD '{MD5_PASSWORD}'"),
        );
        let hba = c.primary.data_dir.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(&hba, format!("host all {name} 127.0.0.1/32 md5\n{old}")).expect("write pg_hba.conf");
        assert_eq!(admin_sql("postgres", "SELECT pg_reload_conf()"), "t");
        // The reload is asynchronous: wait until PostgreSQL itself lets the
        // role in with md5 (the old scram-sha-256 rule cannot check an md5
        // password).
        let deadline = Instant::now() + DEADLINE;
        loop {
            let direct = std::process::Command::new(c.bin("psql"))
                .args(["-X", "-w", "-At", "-c", "SELECT 1"])
                .arg(format!("host={} port={} user={name} dbname=postgres", c.primary.host, c.primary.port))
                .env("PGPASSWORD", MD5_PASSWORD)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run psql");
            if direct.status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "the md5 rule never took effect: {}", stderr(&direct));
            std::thread::sleep(Duration::from_millis(20));
        }
        let hash = admin_sql("postgres", &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{name}'"));
        assert!(hash.starts_with("md5") && hash.len() == 35, "{hash}");
        (name, hash)
    })
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

struct Pki {
    _dir: tempfile::TempDir,
    /// Both CAs' certificates.
    ca: PathBuf,
    /// A server certificate for localhost signed with ECDSA SHA-256.
    server: Leaf,
    /// One signed with ECDSA SHA-384 (by a P-384 CA): channel binding
    /// data is its SHA-384 hash.
    server384: Leaf,
    /// Client certificates: CN app, CN intruder.
    client_app: Leaf,
    client_intruder: Leaf,
}

struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

fn pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut bundle = String::new();
        let mut new_ca = |name: &str, alg: &'static rcgen::SignatureAlgorithm| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, format!("pgbalancer auth tests {name}"));
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
            let key = KeyPair::generate_for(alg).expect("CA key");
            let cert = params.self_signed(&key).expect("self-sign CA");
            bundle.push_str(&cert.pem());
            Issuer::<'static, KeyPair>::new(params, key)
        };
        let ca256 = new_ca("CA", &rcgen::PKCS_ECDSA_P256_SHA256);
        let ca384 = new_ca("CA 384", &rcgen::PKCS_ECDSA_P384_SHA384);
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, &bundle).expect("write CAs");
        let issue = |issuer: &Issuer<'static, KeyPair>, file: &str, cn: &str, client: bool| {
            let sans = if client { vec![] } else { vec!["localhost".to_string()] };
            let mut params = CertificateParams::new(sans).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages =
                vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, issuer).expect("sign leaf");
            let leaf = Leaf {
                cert: dir.join(format!("{file}.crt")),
                key: dir.join(format!("{file}.key")),
                der: cert.der().clone(),
            };
            std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
            write_private(&leaf.key, &key.serialize_pem());
            leaf
        };
        let server = issue(&ca256, "server", "localhost", false);
        let server384 = issue(&ca384, "server384", "localhost", false);
        let client_app = issue(&ca256, "client-app", APP_USER, true);
        let client_intruder = issue(&ca256, "client-intruder", "intruder", true);
        Pki { _dir: tmp, ca, server, server384, client_app, client_intruder }
    })
}

fn write_private(path: &Path, contents: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
}

fn with_tls(mut cfg: Config, leaf: &Leaf) -> Config {
    cfg.ssl = true;
    cfg.ssl_cert = Some(leaf.cert.clone());
    cfg.ssl_key = Some(leaf.key.clone());
    cfg
}

fn verify_full() -> String {
    format!("sslmode=verify-full sslrootcert={}", pki().ca.display())
}

/// A rustls client (SSLRequest, then a verified handshake for localhost).
async fn tls_connect(addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&pki().ca).expect("read CAs") {
        roots.add(ca.expect("CA")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut req = 8i32.to_be_bytes().to_vec();
    req.extend(SSL_REQUEST.to_be_bytes());
    tcp.write_all(&req).await.expect("SSLRequest");
    let mut answer = [0u8; 1];
    within(DEADLINE, "SSLRequest answer", tcp.read_exact(&mut answer)).await.expect("answer");
    assert_eq!(answer[0], b'S');
    let name = ServerName::try_from("localhost").expect("name");
    within(DEADLINE, "TLS handshake", tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp))
        .await
        .expect("TLS handshake")
}

/// Protocol messages over any stream, with deadlines.
struct Wire<S> {
    s: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes).await;
        let _ = self.s.flush().await;
    }

    async fn next(&mut self) -> Next {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() > len {
                    let tag = self.buf.get_u8();
                    self.buf.advance(4);
                    return Next::Message(tag, self.buf.split_to(len - 4).to_vec());
                }
            }
            self.buf.reserve(8192);
            match tokio::time::timeout(DEADLINE, self.s.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Next::Closed,
                Ok(Ok(_)) => {}
                Err(_) => panic!("peer neither answered nor closed within {DEADLINE:?}"),
            }
        }
    }
}

/// Over TLS, a SCRAM exchange driven by postgres-protocol (libpq's
/// algorithm) with `mechanism` and `binding`; returns the final answer.
async fn scram_over_tls(addr: SocketAddr, db: &str, mechanism: &str, binding: ChannelBinding) -> Next {
    let mut w = Wire { s: tls_connect(addr).await, buf: BytesMut::new() };
    w.send(&startup(&[("user", APP_USER), ("database", db)])).await;
    let offered = mechanisms(&w.next().await);
    assert_eq!(offered, ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"], "over TLS both are offered, PLUS first");
    let mut scram = ScramSha256::new(APP_PASSWORD.as_bytes(), binding);
    w.send(&sasl_initial(mechanism, scram.message())).await;
    let server_first = match w.next().await {
        Next::Message(b'R', b) if b.len() > 4 && b[..4] == 11i32.to_be_bytes() => b[4..].to_vec(),
        other => return other,
    };
    scram.update(&server_first).expect("server-first-message");
    w.send(&msg(b'p', scram.message())).await;
    w.next().await
}

// ---------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------

/// `trust` logs in with any password; `reject` refuses with PostgreSQL's
/// hba message (FATAL 28000) before any password exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_and_reject() {
    let db = fresh_db("auth_trust");
    let mut cfg = base_config();
    cfg.auth_type = AuthType::Trust;
    cfg.users = vec![UserEntry { name: APP_USER.into(), password: Some(APP_PASSWORD.into()) }];
    let proxy = TestProxy::start(cfg).await;
    let c = connect_from(&proxy, "127.0.0.1", APP_USER, "not the password", &db).await.expect("trust");
    assert_eq!(current_user(&c).await, APP_USER);
    let o = psql_as(&info(&proxy, APP_USER, &db, "sslmode=disable"), "", "SELECT 1").await;
    assert_eq!(assert_ok(&o, "psql with trust"), "1");

    let db = fresh_db("auth_reject");
    let mut cfg = base_config();
    cfg.auth_type = AuthType::Reject;
    let proxy = TestProxy::start(cfg).await;
    let expected = format!(
        "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"{APP_USER}\", database \"{db}\", no encryption"
    );
    let (code, m) = refused(connect_from(&proxy, "127.0.0.1", APP_USER, APP_PASSWORD, &db).await);
    assert_eq!((code.as_str(), m.as_str()), ("28000", expected.as_str()));
    let o = psql_as(&info(&proxy, APP_USER, &db, "sslmode=disable"), APP_PASSWORD, "SELECT 1").await;
    assert_fails_with(&o, &expected, "psql with reject");
    let (_r, n) = first_answer(proxy.addr, APP_USER, &db).await;
    assert_eq!(fatal(&n).0, "28000", "refused before any authentication request");
    assert_eq!(server_connections(&db), 0, "a refused login opens no server connection");
}

/// `md5`: psql and tokio-postgres log in with the md5 challenge against a
/// plaintext password from the config; a wrong password is 28P01, also
/// while a pooled server connection of that user is idle (scenario 22);
/// a user whose secret is a SCRAM verifier gets SCRAM instead (as
/// PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_with_real_clients() {
    let db = fresh_db("auth_md5");
    let scram_user = scram_role("md5scram", "scram-role-pw");
    let verifier = admin_sql("postgres", &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{scram_user}'"));
    let mut cfg = base_config();
    cfg.auth_type = AuthType::Md5;
    cfg.users = vec![
        UserEntry { name: APP_USER.into(), password: Some(APP_PASSWORD.into()) },
        UserEntry { name: scram_user.clone(), password: Some(verifier) },
    ];
    let proxy = TestProxy::start(cfg).await;

    let (_r, n) = first_answer(proxy.addr, APP_USER, &db).await;
    assert_eq!(auth_code(&n), Some(5), "AuthenticationMD5Password: {n:?}");
    let o = psql_as(&info(&proxy, APP_USER, &db, "sslmode=disable"), APP_PASSWORD, "SELECT current_user").await;
    assert_eq!(assert_ok(&o, "psql md5"), APP_USER);
    let c = connect_from(&proxy, "127.0.0.1", APP_USER, APP_PASSWORD, &db).await.expect("tokio-postgres md5");
    assert_eq!(current_user(&c).await, APP_USER);
    // Scenario 22: the pool holds an idle server of app's now.
    assert!(server_connections(&db) >= 1);
    let (code, m) = refused(connect_from(&proxy, "127.0.0.1", APP_USER, "wrong", &db).await);
    assert_eq!((code.as_str(), m.as_str()), ("28P01", "password authentication failed for user \"app\""));
    let o = psql_as(&info(&proxy, APP_USER, &db, "sslmode=disable"), "wrong", "SELECT 1").await;
    assert_fails_with(&o, "password authentication failed for user \"app\"", "psql md5 wrong password");

    // A SCRAM verifier: SCRAM, and the proof passes through to PostgreSQL.
    let (_r, n) = first_answer(proxy.addr, &scram_user, &db).await;
    assert_eq!(mechanisms(&n), ["SCRAM-SHA-256"]);
    let c = connect_from(&proxy, "127.0.0.1", &scram_user, "scram-role-pw", "postgres").await.expect("md5 → SCRAM");
    assert_eq!(current_user(&c).await, scram_user);
    // An unknown user gets a SCRAM exchange (as PostgreSQL with its default
    // password_encryption), not a tell-tale md5 challenge, and the same failure.
    let (_r, n) = first_answer(proxy.addr, "nobody_here", &db).await;
    assert_eq!(mechanisms(&n), ["SCRAM-SHA-256"]);
    let (code, m) = refused(connect_from(&proxy, "127.0.0.1", "nobody_here", "wrong", &db).await);
    assert_eq!((code.as_str(), m.as_str()), ("28P01", "password authentication failed for user \"nobody_here\""));
    c.simple_query("SELECT 1").await.expect("the logged-in client is undisturbed");
}

/// An md5 hash (users_file) checks the client and answers PostgreSQL's
/// own md5 challenge (pass-through without the password); with method
/// scram-sha-256 the same user cannot log in (as PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_hash_passes_through_to_postgresql() {
    let (role, hash) = md5_role();
    let dir = tempfile::tempdir().expect("temp dir");
    let list = dir.path().join("userlist.txt");
    std::fs::write(&list, format!(";; PgBouncer format\n\"{role}\" \"{hash}\"\n")).expect("write userlist");
    let mut cfg = base_config();
    cfg.auth_type = AuthType::Md5;
    cfg.users_file = Some(list);
    let proxy = TestProxy::start(cfg.clone()).await;
    let o = psql_as(&info(&proxy, role, "postgres", "sslmode=disable"), MD5_PASSWORD, "SELECT current_user").await;
    assert_eq!(assert_ok(&o, "md5 hash from users_file"), *role);
    let o = psql_as(&info(&proxy, role, "postgres", "sslmode=disable"), "nope", "SELECT 1").await;
    assert_fails_with(&o, &format!("password authentication failed for user \"{role}\""), "wrong md5 password");

    cfg.auth_type = AuthType::ScramSha256;
    let scram = TestProxy::start(cfg).await;
    let (_r, n) = first_answer(scram.addr, role, "postgres").await;
    assert_eq!(mechanisms(&n), ["SCRAM-SHA-256"], "an md5 hash gets a (mock) SCRAM exchange");
    let (code, _) = refused(connect_from(&scram, "127.0.0.1", role, MD5_PASSWORD, "postgres").await);
    assert_eq!(code, "28P01");
}

/// SCRAM channel binding: over TLS `SCRAM-SHA-256-PLUS` is offered and
/// psql with `channel_binding=require` logs in (its tls-server-end-point
/// data, computed by libpq from the served certificate, matches ours) with
/// SHA-256 and SHA-384 certificates; over plaintext only SCRAM-SHA-256 is
/// offered and `channel_binding=require` fails in libpq. Binding data of
/// another certificate is refused (28000), and a client that says it
/// supports binding but thinks the server does not (`y`) is refused as a
/// downgrade (08P01).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_channel_binding_over_tls() {
    let db = fresh_db("auth_cbind");
    let p = pki();
    for leaf in [&p.server, &p.server384] {
        let proxy = TestProxy::start(with_tls(base_config(), leaf)).await;
        let o = psql_as(
            &info(&proxy, APP_USER, &db, &format!("{} channel_binding=require", verify_full())),
            APP_PASSWORD,
            "SELECT current_user",
        )
        .await;
        assert_eq!(assert_ok(&o, "psql channel_binding=require over TLS"), APP_USER);
    }
    let proxy = TestProxy::start(with_tls(base_config(), &p.server)).await;
    let o = psql_as(&info(&proxy, APP_USER, &db, "sslmode=disable channel_binding=require"), APP_PASSWORD, "SELECT 1")
        .await;
    assert_fails_with(&o, "channel binding", "channel_binding=require in plaintext");
    let (_r, n) = first_answer(proxy.addr, APP_USER, &db).await;
    assert_eq!(mechanisms(&n), ["SCRAM-SHA-256"], "no PLUS in plaintext");
    let o = psql_as(
        &info(&proxy, APP_USER, &db, &format!("{} channel_binding=disable", verify_full())),
        APP_PASSWORD,
        "SELECT 1",
    )
    .await;
    assert_eq!(assert_ok(&o, "TLS without channel binding"), "1");

    // The same by hand: the right data logs in.
    let right = Sha256::digest(p.server.der.as_ref()).to_vec();
    let n = scram_over_tls(proxy.addr, &db, "SCRAM-SHA-256-PLUS", ChannelBinding::tls_server_end_point(right)).await;
    assert_eq!(auth_code(&n), Some(12), "AuthenticationSASLFinal: {n:?}");
    // Another certificate's hash (a man in the middle re-encrypting).
    let other = Sha256::digest(p.server384.der.as_ref()).to_vec();
    let n = scram_over_tls(proxy.addr, &db, "SCRAM-SHA-256-PLUS", ChannelBinding::tls_server_end_point(other)).await;
    assert_eq!(fatal(&n), ("28000".to_owned(), "SCRAM channel binding check failed".to_owned()));
    // `y`: the client supports binding and thinks we do not.
    let n = scram_over_tls(proxy.addr, &db, "SCRAM-SHA-256", ChannelBinding::unrequested()).await;
    let (code, m) = fatal(&n);
    assert_eq!(code, "08P01");
    assert!(m.starts_with("SCRAM channel binding negotiation error"), "{m}");
    // PLUS chosen without binding data.
    let n = scram_over_tls(proxy.addr, &db, "SCRAM-SHA-256-PLUS", ChannelBinding::unsupported()).await;
    assert_eq!(fatal(&n).0, "08P01");
    // The SHA-384 certificate hashes with SHA-384.
    let proxy384 = TestProxy::start(with_tls(base_config(), &p.server384)).await;
    let data = Sha384::digest(p.server384.der.as_ref()).to_vec();
    let n = scram_over_tls(proxy384.addr, &db, "SCRAM-SHA-256-PLUS", ChannelBinding::tls_server_end_point(data)).await;
    assert_eq!(auth_code(&n), Some(12), "{n:?}");
    proxy.assert_alive(&db).await;
}

/// `cert`: a client certificate from `ssl_ca_cert` whose CN is the user
/// name logs in (psql with sslcert/sslkey); another CN, no certificate, or
/// plaintext fail with PostgreSQL's message (28000). The server login uses
/// the password from `users`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_authentication() {
    let db = fresh_db("auth_cert");
    let p = pki();
    let mut cfg = with_tls(base_config(), &p.server);
    cfg.ssl_ca_cert = Some(p.ca.clone());
    cfg.auth_type = AuthType::Cert;
    cfg.users = vec![UserEntry { name: APP_USER.into(), password: Some(APP_PASSWORD.into()) }];
    let proxy = TestProxy::start(cfg).await;
    let with = |leaf: &Leaf| format!("{} sslcert={} sslkey={}", verify_full(), leaf.cert.display(), leaf.key.display());
    let o = psql_as(&info(&proxy, APP_USER, &db, &with(&p.client_app)), "", "SELECT current_user").await;
    assert_eq!(assert_ok(&o, "certificate with CN app"), APP_USER);
    let failed = format!("certificate authentication failed for user \"{APP_USER}\"");
    let o = psql_as(&info(&proxy, APP_USER, &db, &with(&p.client_intruder)), APP_PASSWORD, "SELECT 1").await;
    assert_fails_with(&o, &failed, "CN intruder");
    let o = psql_as(&info(&proxy, APP_USER, &db, &verify_full()), APP_PASSWORD, "SELECT 1").await;
    assert_fails_with(&o, &failed, "no client certificate");
    let o = psql_as(&info(&proxy, APP_USER, &db, "sslmode=disable"), APP_PASSWORD, "SELECT 1").await;
    assert_fails_with(&o, &failed, "plaintext");
    // The intruder's certificate is genuine, but not for user app.
    let o = psql_as(&info(&proxy, "intruder", &db, &with(&p.client_intruder)), "", "SELECT 1").await;
    assert!(!o.status.success(), "intruder has no role (the server refuses it): {}", stdout(&o));
    assert!(!stderr(&o).contains("certificate authentication failed"), "{}", stderr(&o));
}

/// `users_file` (PgBouncer's userlist.txt): a SCRAM verifier and a
/// plaintext password log in; a reload reads the file again; a broken
/// file refuses the reload (file and line named) and keeps the old users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_file_logins_and_reload() {
    let db = fresh_db("auth_ufile");
    let other = scram_role("ufile", "ufile-pw");
    let dir = tempfile::tempdir().expect("temp dir");
    let list = dir.path().join("userlist.txt");
    std::fs::write(&list, format!("\"{APP_USER}\" \"{}\"\n\"{other}\" \"ufile-pw\"\n", app_verifier())).unwrap();
    let mut cfg = base_config();
    cfg.users = Vec::new();
    cfg.users_file = Some(list.clone());
    let proxy = TestProxy::start(cfg.clone()).await;
    let o = psql_as(&info(&proxy, APP_USER, &db, "sslmode=disable"), APP_PASSWORD, "SELECT current_user").await;
    assert_eq!(assert_ok(&o, "verifier from users_file"), APP_USER);
    let c = connect_from(&proxy, "127.0.0.1", &other, "ufile-pw", "postgres").await.expect("plaintext from users_file");
    assert_eq!(current_user(&c).await, other);

    // Drop app from the file: after the reload app is unknown.
    std::fs::write(&list, format!("\"{other}\" \"ufile-pw\"\n")).unwrap();
    proxy.handle.reload(cfg.clone()).expect("reload");
    let (code, _) = refused(connect_from(&proxy, "127.0.0.1", APP_USER, APP_PASSWORD, &db).await);
    assert_eq!(code, "28P01");
    std::fs::write(&list, format!("\"{other}\" \"ufile-pw\"\nnot a line\n")).unwrap();
    let e = proxy.handle.reload(cfg).expect_err("a broken users_file").to_string();
    assert_eq!(e, format!("users_file: {}: line 2: expected \"user\" \"password\"", list.display()));
    connect_from(&proxy, "127.0.0.1", &other, "ufile-pw", "postgres").await.expect("old users kept");
    c.simple_query("SELECT 1").await.expect("connected client undisturbed");
}

// ---------------------------------------------------------------------------
// auth_query
// ---------------------------------------------------------------------------

/// A dedicated, non-superuser auth role and a SECURITY DEFINER lookup
/// function (PgBouncer's recommended setup). Returns (role, password,
/// query).
fn auth_function() -> &'static (String, String, String) {
    static F: OnceLock<(String, String, String)> = OnceLock::new();
    F.get_or_init(|| {
        let role = scram_role("pgb_auth", "auth-role-pw");
        admin_sql(
            "postgres",
            &format!(
                "CREATE SCHEMA {role} AUTHORIZATION postgres;\n\
                 CREATE FUNCTION {role}.lookup(u text, OUT usename name, OUT passwd text) RETURNS SETOF record\n\
                 LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$\n\
                   SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END\n\
                   FROM pg_authid WHERE rolname = u AND rolcanlogin $$;\n\
                 REVOKE ALL ON FUNCTION {role}.lookup(text) FROM PUBLIC;\n\
                 GRANT USAGE ON SCHEMA {role} TO {role};\n\
                 GRANT EXECUTE ON FUNCTION {role}.lookup(text) TO {role};"
            ),
        );
        let query = format!("SELECT usename, passwd FROM {role}.lookup($1)");
        (role, "auth-role-pw".to_owned(), query)
    })
}

/// The auth role's sessions on the primary.
fn sessions_of(role: &str) -> i64 {
    admin_sql(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}' AND backend_type = 'client backend'"),
    )
    .parse()
    .expect("count")
}

/// `auth_query` as a dedicated auth role: a user in neither `users` nor
/// `users_file` is looked up and logs in (SCRAM, its proof passed through
/// to PostgreSQL); a wrong password fails. Scenario 20: an unknown user
/// fails with the same error and never gets a session, as itself or as
/// the auth user. Scenario 21: `VALID UNTIL` in the past refuses the
/// login, and lifting it works at once (nothing cached). Scenario 23: a
/// wrong password for a database that does not exist is the same 28P01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_with_a_dedicated_role() {
    let db = fresh_db("auth_query");
    let (auth_role, auth_pw, query) = auth_function();
    let user = scram_role("looked_up", "looked-up-pw");
    let dir = tempfile::tempdir().expect("temp dir");
    let list = dir.path().join("userlist.txt");
    std::fs::write(&list, format!("\"{auth_role}\" \"{auth_pw}\"\n")).unwrap();
    let mut cfg = base_config();
    cfg.users_file = Some(list);
    cfg.auth_user = Some(auth_role.clone());
    cfg.auth_query = query.clone();
    let proxy = TestProxy::start(cfg).await;

    let c = connect_from(&proxy, "127.0.0.1", &user, "looked-up-pw", &db).await.expect("looked-up user");
    assert_eq!(current_user(&c).await, user);
    let o = psql_as(&info(&proxy, &user, &db, "sslmode=disable"), "looked-up-pw", "SELECT current_user").await;
    assert_eq!(assert_ok(&o, "psql, looked-up user"), user);
    let wrong = refused(connect_from(&proxy, "127.0.0.1", &user, "wrong", &db).await);
    assert_eq!(wrong, ("28P01".to_owned(), format!("password authentication failed for user \"{user}\"")));

    // Scenario 20.
    let ghost = unique("ghost");
    let (code, m) = refused(connect_from(&proxy, "127.0.0.1", &ghost, "whatever", &db).await);
    assert_eq!(
        (code.as_str(), m.as_str()),
        ("28P01", format!("password authentication failed for user \"{ghost}\"").as_str())
    );
    let (code, _) = refused(connect_from(&proxy, "127.0.0.1", &ghost, auth_pw, &db).await);
    assert_eq!(code, "28P01", "the auth user's password does not open another name");
    let pools = proxy.handle.shared().pools.all();
    assert!(pools.iter().all(|p| p.login().user != *auth_role), "no client pool runs as the auth user");
    assert!(pools.iter().all(|p| p.login().user != ghost));
    assert_eq!(sessions_of(&ghost), 0);
    let lookups = sessions_of(auth_role);
    assert!((1..=4).contains(&lookups), "only lookup connections run as the auth user: {lookups}");
    let what = admin_sql(
        "postgres",
        &format!("SELECT string_agg(DISTINCT query, ' | ') FROM pg_stat_activity WHERE usename = '{auth_role}'"),
    );
    assert!(what.split(" | ").all(|q| q == query || q.starts_with("SET search_path")), "{what}");

    // Scenario 23: a database that does not exist changes nothing.
    let missing = refused(connect_from(&proxy, "127.0.0.1", &user, "wrong", "no_such_database_here").await);
    assert_eq!(missing, wrong);

    // Scenario 21.
    admin_sql("postgres", &format!("ALTER ROLE {user} VALID UNTIL '2001-01-01'"));
    let (code, _) = refused(connect_from(&proxy, "127.0.0.1", &user, "looked-up-pw", &db).await);
    assert_eq!(code, "28P01", "an expired role cannot log in");
    admin_sql("postgres", &format!("ALTER ROLE {user} VALID UNTIL 'infinity'"));
    let again = connect_from(&proxy, "127.0.0.1", &user, "looked-up-pw", &db).await.expect("no longer expired");
    assert_eq!(current_user(&again).await, user);
    c.simple_query("SELECT 1").await.expect("first client undisturbed");
}

/// The default `auth_query` (pg_authid, needs a superuser: `postgres`,
/// trusted by this cluster): SCRAM users log in, `VALID UNTIL` in the past
/// is refused (scenario 21), and md5-stored roles log in with md5 and the
/// hash passes through to PostgreSQL's md5 check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_default_query() {
    let db = fresh_db("auth_default");
    let user = scram_role("default_q", "default-q-pw");
    let mut cfg = base_config();
    cfg.auth_type = AuthType::Md5;
    cfg.auth_user = Some("postgres".into());
    let proxy = TestProxy::start(cfg).await;
    let c = connect_from(&proxy, "127.0.0.1", &user, "default-q-pw", &db).await.expect("default auth_query");
    assert_eq!(current_user(&c).await, user);
    admin_sql("postgres", &format!("ALTER ROLE {user} VALID UNTIL '2001-01-01'"));
    let (code, _) = refused(connect_from(&proxy, "127.0.0.1", &user, "default-q-pw", &db).await);
    assert_eq!(code, "28P01", "expired");
    let (role, _) = md5_role();
    let (_r, n) = first_answer(proxy.addr, role, "postgres").await;
    assert_eq!(auth_code(&n), Some(5), "an md5-stored role gets the md5 challenge");
    let o = psql_as(&info(&proxy, role, "postgres", "sslmode=disable"), MD5_PASSWORD, "SELECT current_user").await;
    assert_eq!(assert_ok(&o, "md5 role via auth_query"), *role);
    // A role without LOGIN is not found.
    let nologin = unique("nologin");
    admin_sql("postgres", &format!("CREATE ROLE {nologin} NOLOGIN PASSWORD 'x-pw'"));
    let (code, _) = refused(connect_from(&proxy, "127.0.0.1", &nologin, "x-pw", &db).await);
    assert_eq!(code, "28P01");
}

/// Scenario 19: a `search_path` that puts a schema with its own
/// `pg_authid` ahead of pg_catalog (set for the auth role in the lookup
/// database, and sent by a client in `options`) does not reach the lookup:
/// its connection pins `search_path = pg_catalog, pg_temp`, so even an
/// unqualified query reads the real catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_search_path_is_pinned() {
    let lookup_db = fresh_db("auth_evil");
    let user = scram_role("victim", "real-pw");
    let evil = unique("evil");
    let fake = postgres_verifier("evil-pw");
    admin_sql(
        &lookup_db,
        &format!(
            "CREATE SCHEMA {evil}; CREATE TABLE {evil}.pg_authid (rolname name, rolpassword text);\n\
             INSERT INTO {evil}.pg_authid VALUES ('{user}', '{fake}');\n\
             GRANT USAGE ON SCHEMA {evil} TO PUBLIC; GRANT SELECT ON {evil}.pg_authid TO PUBLIC;"
        ),
    );
    admin_sql("postgres", &format!("ALTER ROLE postgres IN DATABASE {lookup_db} SET search_path = {evil}, pg_catalog"));
    // The trap is armed: in that database, as the auth role, the
    // unqualified name is the fake table.
    let armed = admin_sql(&lookup_db, &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"));
    assert_eq!(armed, fake);

    let mut cfg = base_config();
    cfg.auth_user = Some("postgres".into());
    cfg.auth_dbname = lookup_db.clone();
    cfg.auth_query = "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1".into();
    let proxy = TestProxy::start(cfg).await;
    let options = format!("options='-c search_path={evil},pg_catalog'");
    let o =
        psql_as(&info(&proxy, &user, "postgres", &format!("sslmode=disable {options}")), "evil-pw", "SELECT 1").await;
    assert_fails_with(&o, "password authentication failed", "the fake table's password");
    let o = psql_as(
        &info(&proxy, &user, "postgres", &format!("sslmode=disable {options}")),
        "real-pw",
        "SELECT current_user",
    )
    .await;
    assert_eq!(assert_ok(&o, "the real password"), user);
}

/// A SCRAM verifier as PostgreSQL makes it (for `password`).
fn postgres_verifier(password: &str) -> String {
    let role = scram_role("verifier", password);
    admin_sql("postgres", &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"))
}

// ---------------------------------------------------------------------------
// hba
// ---------------------------------------------------------------------------

fn rule(kind: HbaType, database: &str, user: &str, address: &str, method: AuthType) -> HbaEntry {
    HbaEntry { kind, database: database.into(), user: user.into(), address: Some(address.into()), method }
}

/// hba rules, first match wins, per type and source address: 127.0.0.2 is
/// rejected; TLS from 127.0.0.1 needs SCRAM; plaintext is trusted for one
/// database and md5 for the others; no rule for another user is refused
/// with PostgreSQL's message, saying whether TLS was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_rules_per_type_and_address() {
    let db = fresh_db("auth_hba");
    let trusted = fresh_db("auth_hba_trust");
    let p = pki();
    let mut cfg = with_tls(base_config(), &p.server);
    cfg.users = vec![UserEntry { name: APP_USER.into(), password: Some(APP_PASSWORD.into()) }];
    cfg.hba = vec![
        rule(HbaType::Host, "all", APP_USER, "127.0.0.2/32", AuthType::Reject),
        rule(HbaType::HostSsl, "all", APP_USER, "127.0.0.0/8", AuthType::ScramSha256),
        rule(HbaType::HostNoSsl, &trusted, APP_USER, "127.0.0.1", AuthType::Trust),
        rule(HbaType::HostNoSsl, "all", &format!("{APP_USER},someone"), "127.0.0.0/8", AuthType::Md5),
    ];
    let proxy = TestProxy::start(cfg.clone()).await;
    let refused_127_2 = refused(connect_from(&proxy, "127.0.0.2", APP_USER, APP_PASSWORD, &db).await);
    assert_eq!(
        refused_127_2,
        (
            "28000".to_owned(),
            format!("pg_hba.conf rejects connection for host \"127.0.0.2\", user \"{APP_USER}\", database \"{db}\", no encryption")
        )
    );
    let o = psql_as(&info(&proxy, APP_USER, &db, &verify_full()), APP_PASSWORD, "SELECT current_user").await;
    assert_eq!(assert_ok(&o, "hostssl scram"), APP_USER);
    let c = connect_from(&proxy, "127.0.0.1", APP_USER, "not checked", &trusted).await.expect("hostnossl trust");
    assert_eq!(current_user(&c).await, APP_USER);
    let (_r, n) = first_answer(proxy.addr, APP_USER, &db).await;
    assert_eq!(auth_code(&n), Some(5), "hostnossl md5 for other databases");
    connect_from(&proxy, "127.0.0.1", APP_USER, APP_PASSWORD, &db).await.expect("md5 with the right password");
    assert_eq!(refused(connect_from(&proxy, "127.0.0.1", APP_USER, "wrong", &db).await).0, "28P01");

    let none = refused(connect_from(&proxy, "127.0.0.1", "stranger", "x", &db).await);
    assert_eq!(
        none,
        (
            "28000".to_owned(),
            format!("no pg_hba.conf entry for host \"127.0.0.1\", user \"stranger\", database \"{db}\", no encryption")
        )
    );
    let o = psql_as(&info(&proxy, "stranger", &db, &verify_full()), "x", "SELECT 1").await;
    assert_fails_with(
        &o,
        &format!("no pg_hba.conf entry for host \"127.0.0.1\", user \"stranger\", database \"{db}\", SSL encryption"),
        "no rule, TLS",
    );
}

/// The same kind of rules from an `hba_file` in pg_hba.conf syntax
/// (address and netmask, quoted names, comments); a reload reads the file
/// again, and a broken file refuses the reload, naming the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_file_and_reload() {
    let db = fresh_db("auth_hbafile");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pg_hba.conf");
    std::fs::write(
        &path,
        format!(
            "# TYPE  DATABASE  USER   ADDRESS    MASK             METHOD\n\
             host    all       \"{APP_USER}\"  127.0.0.2  255.255.255.255  reject\n\
             host    {db}      all    127.0.0.0  255.0.0.0        scram-sha-256   # the app\n"
        ),
    )
    .unwrap();
    let mut cfg = base_config();
    cfg.hba_file = Some(path.clone());
    let proxy = TestProxy::start(cfg.clone()).await;
    assert_eq!(refused(connect_from(&proxy, "127.0.0.2", APP_USER, APP_PASSWORD, &db).await).0, "28000");
    let c = connect_from(&proxy, "127.0.0.1", APP_USER, APP_PASSWORD, &db).await.expect("scram rule");
    assert_eq!(current_user(&c).await, APP_USER);
    let (code, m) = refused(connect_from(&proxy, "127.0.0.3", APP_USER, APP_PASSWORD, "postgres").await);
    assert_eq!(code, "28000");
    assert!(m.starts_with("no pg_hba.conf entry for host \"127.0.0.3\""), "{m}");

    // Reload: 127.0.0.2 is let in now.
    std::fs::write(&path, "host all all 127.0.0.0/8 scram-sha-256\n").unwrap();
    proxy.handle.reload(cfg.clone()).expect("reload");
    connect_from(&proxy, "127.0.0.2", APP_USER, APP_PASSWORD, &db).await.expect("allowed after the reload");
    std::fs::write(&path, "host all all 127.0.0.0/8 scram-sha-256\nhost all all 10.0.0.0/8 ldap\n").unwrap();
    let e = proxy.handle.reload(cfg).expect_err("an unsupported method").to_string();
    assert_eq!(
        e,
        format!(
            "hba_file: {}:2: authentication method \"ldap\" is not supported (pgbalancer: trust, reject, md5, \
             scram-sha-256, cert)",
            path.display()
        )
    );
    connect_from(&proxy, "127.0.0.2", APP_USER, APP_PASSWORD, &db).await.expect("old rules kept");
    c.simple_query("SELECT 1").await.expect("connected client undisturbed");
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// `max_unauthenticated_clients`: connections that never finish their
/// startup hold the places; one more is refused at once with FATAL 53300;
/// once one leaves, a real client logs in. Logged-in clients do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_capped() {
    let db = fresh_db("auth_unauth");
    let mut cfg = base_config();
    cfg.max_unauthenticated_clients = 3;
    let proxy = TestProxy::start(cfg).await;
    let stats = proxy.handle.stats();
    let logged_in = proxy.connect(&db).await;
    assert_eq!(stats.unauthenticated(), 0, "a logged-in client is not counted");
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(Raw::connect(proxy.addr).await);
    }
    wait_until("three unauthenticated connections", || stats.unauthenticated() == 3).await;
    let mut extra = Raw::connect(proxy.addr).await;
    let msgs = extra.until_closed().await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let (code, m) = fatal(&Next::Message(msgs[0].0, msgs[0].1.clone()));
    assert_eq!(code, "53300");
    assert!(m.contains("max_unauthenticated_clients"), "{m}");
    assert_eq!(stats.unauthenticated_rejected.load(std::sync::atomic::Ordering::Relaxed), 1);
    drop(silent.pop());
    wait_until("a place is free", || stats.unauthenticated() == 2).await;
    let c = proxy.connect(&db).await;
    one(&c, "SELECT 1").await.expect("a real client logs in");
    one(&logged_in, "SELECT 1").await.expect("logged-in client undisturbed");
    assert_eq!(stats.unauthenticated(), 2);
}

/// `auth_failure_limit`: after 3 failed logins from 127.0.0.2 its logins
/// are refused at once (53300, before any password exchange, even with
/// the right password), while 127.0.0.1 logs in as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_source() {
    let db = fresh_db("auth_limit");
    let mut cfg = base_config();
    cfg.auth_failure_limit = 3;
    cfg.auth_failure_window = Duration::from_secs(300);
    let proxy = TestProxy::start(cfg).await;
    for i in 0..3 {
        let (code, _) = refused(connect_from(&proxy, "127.0.0.2", APP_USER, &format!("guess-{i}"), &db).await);
        assert_eq!(code, "28P01", "attempt {i}");
    }
    let (code, m) = refused(connect_from(&proxy, "127.0.0.2", APP_USER, APP_PASSWORD, &db).await);
    assert_eq!(code, "53300");
    assert!(m.starts_with("too many failed logins from host \"127.0.0.2\""), "{m}");
    // Refused before any exchange: the first answer is the error.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(proxy.addr).await.unwrap();
    s.write_all(&startup(&[("user", "someone_else"), ("database", &db)])).await.unwrap();
    let mut w = Wire { s, buf: BytesMut::new() };
    assert_eq!(fatal(&w.next().await).0, "53300");
    assert!(proxy.handle.stats().auth_throttled.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    let c = connect_from(&proxy, "127.0.0.1", APP_USER, APP_PASSWORD, &db).await.expect("another source logs in");
    assert_eq!(current_user(&c).await, APP_USER);
}

/// Scenario 26: 200 concurrent SCRAM logins with made-up proofs (known
/// and unknown users), limiter off so every one runs the exchange: each
/// fails with 28P01, while an already connected client's `SELECT 1` and a
/// new login keep working within generous bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_storm_keeps_latency_bounded() {
    let db = fresh_db("auth_storm");
    let mut cfg = base_config();
    cfg.auth_failure_limit = 0;
    let proxy = TestProxy::start(cfg).await;
    let client = proxy.connect(&db).await;
    one(&client, "SELECT 1").await.expect("warm up");

    let addr = proxy.addr;
    let storm: Vec<_> = (0..200)
        .map(|i| {
            let db = db.clone();
            let user = if i % 2 == 0 { APP_USER.to_owned() } else { format!("ghost_{i}") };
            tokio::spawn(async move { (user.clone(), wrong_proof_login(addr, &user, &db).await) })
        })
        .collect();
    let storm_done = futures_util::future::join_all(storm);
    tokio::pin!(storm_done);
    let mut during = 0;
    let mut slowest = Duration::ZERO;
    let results = loop {
        let t = Instant::now();
        tokio::select! {
            r = &mut storm_done => break r,
            r = client.simple_query("SELECT 1") => {
                r.expect("SELECT 1 during the storm");
                slowest = slowest.max(t.elapsed());
                during += 1;
            }
        }
    };
    assert!(during >= 1, "no query ran during the storm");
    assert!(slowest < Duration::from_secs(5), "SELECT 1 took {slowest:?} during the storm");
    for r in results {
        let (user, n) = r.expect("storm task");
        let (code, m) = fatal(&n);
        assert_eq!((code.as_str(), m), ("28P01", format!("password authentication failed for user \"{user}\"")));
    }
    let t = Instant::now();
    proxy.assert_alive(&db).await;
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(proxy.handle.stats().unauthenticated(), 0, "every storm connection was let go");
}

// ---------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The proxy's log lines (JSON) from now on, for every test of this
/// binary.
fn log_capture() -> &'static Capture {
    static C: OnceLock<Capture> = OnceLock::new();
    C.get_or_init(|| {
        let c = Capture(Arc::default());
        let writer = c.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter("pgbalancer_proxy=info")
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("install the log capture");
        c
    })
}

/// Failed logins are logged (warn) with user, database, application_name,
/// client address and a reason; never the password or the verifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_are_audited_without_secrets() {
    let log = log_capture();
    let db = fresh_db("auth_audit");
    let proxy = TestProxy::start(base_config()).await;
    let secret_guess = "hunter2-guessed-secret";
    let o =
        psql_as(&info(&proxy, APP_USER, &db, "sslmode=disable application_name=audit-probe"), secret_guess, "SELECT 1")
            .await;
    assert_fails_with(&o, "password authentication failed", "wrong password");
    let ghost = unique("audit_ghost");
    refused(connect_from(&proxy, "127.0.0.2", &ghost, secret_guess, &db).await);

    let deadline = Instant::now() + DEADLINE;
    let entries = loop {
        let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
        let entries: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "authentication failed")
            .filter(|v| v["fields"]["database"] == db.as_str())
            .collect();
        if entries.len() >= 2 {
            assert!(!text.contains(secret_guess), "a password in the log");
            assert!(!text.contains(&app_verifier()), "a verifier in the log");
            break entries;
        }
        assert!(Instant::now() < deadline, "audit lines missing: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let by_user =
        |u: &str| entries.iter().find(|e| e["fields"]["user"] == u).unwrap_or_else(|| panic!("{u}: {entries:?}"));
    let app = by_user(APP_USER);
    assert_eq!(app["level"], "WARN");
    assert_eq!(app["fields"]["application_name"], "audit-probe");
    assert_eq!(app["fields"]["host"], "127.0.0.1");
    assert_eq!(app["fields"]["reason"], "wrong_password");
    assert_eq!(app["fields"]["method"], "scram-sha-256");
    let g = by_user(&ghost);
    assert_eq!(g["fields"]["host"], "127.0.0.2");
    assert_eq!(g["fields"]["reason"], "unknown_user");
    assert_eq!(g["fields"]["application_name"], "auth-tests");
}

/// Scenario 19: a client whose `search_path` puts its own schema before
/// `pg_catalog` (`options=-c search_path=evil,pg_catalog`) cannot redirect
/// pgbalancer's own queries: the read-back of its settings and their
/// replay on a server are schema-qualified, so look-alike functions in
/// `evil` are never called, and the next client's server is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_queries_ignore_a_hostile_search_path() {
    let db = fresh_db("auth_searchpath");
    superuser(&db)
        .await
        .batch_execute(
            "CREATE SCHEMA evil; GRANT USAGE ON SCHEMA evil TO app;\n\
             CREATE FUNCTION evil.current_setting(text) RETURNS text LANGUAGE sql AS $$SELECT 'pwned'::text$$;\n\
             CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE sql AS $$SELECT 'pwned'::text$$;\n\
             CREATE FUNCTION evil.set_config(text, text, boolean) RETURNS text LANGUAGE sql AS $$SELECT 'pwned'::text$$;",
        )
        .await
        .expect("evil schema");
    let proxy = TestProxy::start(pool_of_one(base_config())).await;
    let info = format!(
        "host=127.0.0.1 port={} user=app password={APP_PASSWORD} dbname={db} options='-c search_path=evil,pg_catalog'",
        proxy.port()
    );
    let (hostile, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await.expect("login");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // The client's own view: its search_path holds.
    assert_eq!(one(&hostile, "SHOW search_path").await.unwrap(), "evil,pg_catalog");
    // A setting read back after the transaction and set again on the next
    // server keeps its real value.
    hostile.batch_execute("SET work_mem = '7MB'").await.unwrap();
    assert_eq!(one(&hostile, "SHOW work_mem").await.unwrap(), "7MB");
    // Another client takes the only server in between, so the hostile
    // client's settings must be replayed from what was read back.
    let other = proxy.connect(&db).await;
    assert_eq!(one(&other, "SHOW work_mem").await.unwrap(), "4MB", "settings do not leak");
    assert_eq!(one(&other, "SHOW search_path").await.unwrap(), "\"$user\", public");
    drop(other);
    assert_eq!(one(&hostile, "SHOW work_mem").await.unwrap(), "7MB", "replayed with its real value");
}

/// A user name longer than 63 bytes is cut as PostgreSQL cuts it, so a
/// rule for the 63-byte name still applies to `<name>X` (it is that user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_user_names_are_cut_like_postgresql() {
    let db = fresh_db("auth_longname");
    let name63 = "u".repeat(63);
    let mut cfg = base_config();
    cfg.auth_type = AuthType::Trust;
    cfg.hba = vec![
        rule(HbaType::Host, "all", &name63, "127.0.0.0/8", AuthType::Reject),
        rule(HbaType::Host, "all", "all", "127.0.0.0/8", AuthType::Trust),
    ];
    let proxy = TestProxy::start(cfg).await;
    for asked in [name63.clone(), format!("{name63}X"), format!("{name63}XYZ")] {
        let (code, m) = refused(connect_from(&proxy, "127.0.0.1", &asked, "x", &db).await);
        assert_eq!(code, "28000", "{asked}: {m}");
        assert!(m.contains(&format!("user \"{name63}\"")), "{asked}: {m}");
    }
}

/// Exchanges already in flight when a source reaches `auth_failure_limit`
/// learn nothing more: the limit is checked again when the proof arrives,
/// before it is checked, so even the right password then gets 53300 (not
/// a success that would tell a guesser it was right).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_exchanges_stop_at_the_limit() {
    let db = fresh_db("auth_burst");
    let mut cfg = base_config();
    cfg.auth_failure_limit = 3;
    let proxy = TestProxy::start(cfg).await;
    // Five exchanges up to the server-first message, all before any failure.
    let mut open = Vec::new();
    for _ in 0..5 {
        let (mut r, n) = first_answer(proxy.addr, APP_USER, &db).await;
        assert_eq!(auth_code(&n), Some(10), "{n:?}");
        let mut scram = ScramSha256::new(APP_PASSWORD.as_bytes(), ChannelBinding::unsupported());
        r.send(&sasl_initial("SCRAM-SHA-256", scram.message())).await;
        let server_first = match r.next().await {
            Next::Message(b'R', b) if b.len() > 4 => b[4..].to_vec(),
            other => panic!("server-first expected, got {other:?}"),
        };
        scram.update(&server_first).expect("server-first");
        open.push((r, scram));
    }
    // Three wrong proofs: the source reaches its limit.
    for (r, _) in open.iter_mut().take(3) {
        r.send(&msg(b'p', format!("c=biws,r=x,p={}", B64.encode([7u8; 32])).as_bytes())).await;
        assert_eq!(fatal(&r.next().await).0, "28P01");
    }
    // The fourth sends the right proof: refused without being checked.
    let (r, scram) = &mut open[3];
    r.send(&msg(b'p', scram.message())).await;
    let (code, m) = fatal(&r.next().await);
    assert_eq!(code, "53300", "{m}");
    assert!(m.contains("too many failed logins"), "{m}");
}
