//! How pgbalancer logs in to PostgreSQL (md5, cleartext, SCRAM with a
//! password, SCRAM pass-through, `server_user`), and the pool limits and
//! timers: `max_client_conn`, `server_idle_timeout`, `server_lifetime`,
//! `min_pool_size`. This binary rewrites its cluster's pg_hba.conf, so it
//! has a cluster of its own.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use pgbalancer_config::UserEntry;

const MD5_USER: &str = "md5user";
const PW_USER: &str = "pwuser";
const SECRET: &str = "s3cret-pw";

/// Roles whose logins PostgreSQL checks with md5 and with a cleartext
/// password (hba lines ahead of the cluster's scram-sha-256 default).
fn hba_roles() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let c = cluster();
        admin_sql(
            "postgres",
            &format!(
                "SET password_encryption = 'md5'; CREATE ROLE {MD5_USER} LOGIN PASSWORD '{SECRET}'; \
                 SET password_encryption = 'scram-sha-256'; CREATE ROLE {PW_USER} LOGIN PASSWORD '{SECRET}'"
            ),
        );
        let hba = c.primary.data_dir.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        let new = format!("host all {MD5_USER} 127.0.0.1/32 md5\nhost all {PW_USER} 127.0.0.1/32 password\n{old}");
        std::fs::write(&hba, new).expect("write pg_hba.conf");
        assert_eq!(admin_sql("postgres", "SELECT pg_reload_conf()"), "t");
        let rules = admin_sql(
            "postgres",
            &format!("SELECT string_agg(auth_method, ',' ORDER BY line_number) FROM pg_hba_file_rules WHERE '{MD5_USER}' = ANY(user_name) OR '{PW_USER}' = ANY(user_name)"),
        );
        assert_eq!(rules, "md5,password");
    });
}

fn config_with(users: Vec<UserEntry>) -> pgbalancer_config::Config {
    let mut cfg = base_config();
    cfg.users.extend(users);
    cfg
}

async fn current_user(
    proxy: &TestProxy,
    user: &str,
    password: &str,
    db: &str,
) -> Result<String, tokio_postgres::Error> {
    let info = format!("host=127.0.0.1 port={} user={user} password={password} dbname={db}", proxy.port());
    let (c, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let r = c.query_one("SELECT current_user::text", &[]).await?;
    Ok(r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_cleartext_server_logins() {
    hba_roles();
    let db = fresh_db("srvauth");
    admin_sql(&db, &format!("GRANT CONNECT ON DATABASE {db} TO PUBLIC"));
    // pgbalancer needs the password itself for md5 and cleartext servers.
    let proxy = TestProxy::start(config_with(vec![
        UserEntry { name: MD5_USER.into(), password: Some(SECRET.into()) },
        UserEntry { name: PW_USER.into(), password: Some(SECRET.into()) },
    ]))
    .await;
    assert_eq!(current_user(&proxy, MD5_USER, SECRET, &db).await.unwrap(), MD5_USER);
    assert_eq!(current_user(&proxy, PW_USER, SECRET, &db).await.unwrap(), PW_USER);
    // pgbalancer still checks the client: a wrong password fails with 28P01.
    let e = current_user(&proxy, MD5_USER, "wrong", &db).await.unwrap_err();
    assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD), "{e}");
}

/// A verifier in `users:` that differs from PostgreSQL's (another salt)
/// cannot be passed through: the client gets a clear error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_pass_through_needs_the_same_verifier() {
    let db = fresh_db("passthru");
    let other = postgres_protocol::password::scram_sha_256(APP_PASSWORD.as_bytes());
    let mut cfg = base_config();
    cfg.users = vec![UserEntry { name: APP_USER.into(), password: Some(other) }];
    let proxy = TestProxy::start(cfg).await;
    let e = within(Duration::from_secs(20), "login", proxy.try_connect(&db)).await.unwrap_err();
    let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string());
    eprintln!("pass-through refused: {msg}");
    assert!(msg.contains("cannot use server connection"), "{msg}");
    // The same config with PostgreSQL's own verifier works.
    let proxy = TestProxy::start(base_config()).await;
    proxy.assert_alive(&db).await;
}

/// `server_user` + `server_password`: every client's work runs as that role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_user_with_password() {
    hba_roles();
    let db = fresh_db("srvuser");
    admin_sql(&db, &format!("GRANT CONNECT ON DATABASE {db} TO PUBLIC"));
    let mut cfg = base_config();
    cfg.server_user = Some(PW_USER.into());
    cfg.server_password = Some(pgbalancer_config::SecretRef::Plain(SECRET.into()));
    let proxy = TestProxy::start(cfg).await;
    assert_eq!(current_user(&proxy, APP_USER, APP_PASSWORD, &db).await.unwrap(), PW_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_rejects_the_excess() {
    let db = fresh_db("maxconn");
    let mut cfg = base_config();
    cfg.max_client_conn = 2;
    let proxy = TestProxy::start(cfg).await;
    let a = proxy.connect(&db).await;
    let b = proxy.connect(&db).await;
    let e = proxy.try_connect(&db).await.unwrap_err();
    assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS), "{e}");
    // The two connected clients keep working; a place frees when one leaves.
    one(&a, "SELECT 1").await.unwrap();
    drop(b);
    let start = Instant::now();
    loop {
        match proxy.try_connect(&db).await {
            Ok(c) => {
                one(&c, "SELECT 1").await.unwrap();
                break;
            }
            Err(_) if start.elapsed() < Duration::from_secs(10) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("no place freed: {e}"),
        }
    }
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0)
}

/// Polls `f` until it returns Some, failing after 20 s.
async fn eventually<T, F: FnMut() -> Option<T>>(what: &str, mut f: F) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_idle_timeout_closes_idle_servers_down_to_min_pool_size() {
    let db = fresh_db("idle");
    let mut cfg = base_config();
    cfg.server_idle_timeout = Duration::from_secs(1);
    cfg.min_pool_size = 1;
    cfg.pool_size = 4;
    let proxy = TestProxy::start(cfg).await;
    // Open several servers at once: four clients inside transactions.
    let clients: Vec<_> = futures_util::future::join_all((0..4).map(|_| proxy.connect(&db))).await;
    for c in &clients {
        c.batch_execute("BEGIN").await.unwrap();
    }
    assert_eq!(server_connections(&db), 4);
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }
    // Idle past the timeout, the pool shrinks to min_pool_size and stays.
    eventually("idle servers closed", || (server_connections(&db) == 1).then_some(())).await;
    one(&clients[0], "SELECT 1").await.unwrap();
    assert_eq!(server_connections(&db), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_replaces_old_servers() {
    let db = fresh_db("lifetime");
    let mut cfg = base_config();
    cfg.server_lifetime = Duration::from_secs(1);
    cfg.pool_size = 1;
    let proxy = TestProxy::start(cfg).await;
    let c = proxy.connect(&db).await;
    let first = backend_pid(&c).await;
    // The old server is closed once its lifetime is over, never mid-use.
    let start = Instant::now();
    loop {
        let pid = backend_pid(&c).await;
        if pid != first {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "server never replaced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("old server gone", || {
        (admin_sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {first}")) == "0")
            .then_some(())
    })
    .await;
}

/// A server (or a man in the middle) that answers SCRAM's client-final with
/// AuthenticationOk, skipping the SASLFinal that proves it knows the
/// verifier, is refused: the client gets an error, not a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_without_the_server_signature_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_port = fake.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = fake.accept().await.unwrap();
        async fn message(s: &mut tokio::net::TcpStream, tagged: bool) -> (u8, Vec<u8>) {
            let tag = if tagged { s.read_u8().await.unwrap() } else { 0 };
            let len = s.read_u32().await.unwrap() as usize;
            let mut body = vec![0; len - 4];
            s.read_exact(&mut body).await.unwrap();
            (tag, body)
        }
        let auth = |code: u32, data: &[u8]| {
            let mut m = vec![b'R'];
            m.extend_from_slice(&((8 + data.len()) as u32).to_be_bytes());
            m.extend_from_slice(&code.to_be_bytes());
            m.extend_from_slice(data);
            m
        };
        message(&mut s, false).await; // StartupMessage
        s.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await.unwrap();
        let (_, first) = message(&mut s, true).await; // SASLInitialResponse
        let text = String::from_utf8_lossy(&first).into_owned();
        let nonce = text.split("r=").nth(1).unwrap().split(',').next().unwrap().to_owned();
        let server_first = format!("r={nonce}srv,s=c2FsdHNhbHRzYWx0c2FsdA==,i=4096");
        s.write_all(&auth(11, server_first.as_bytes())).await.unwrap();
        message(&mut s, true).await; // SASLResponse (client-final)
                                     // No SASLFinal: straight to AuthenticationOk and ReadyForQuery.
        s.write_all(&auth(0, b"")).await.unwrap();
        s.write_all(&[b'Z', 0, 0, 0, 5, b'I']).await.unwrap();
        // Whatever comes next (a Terminate, or a query if accepted).
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    });
    let mut cfg = base_config();
    cfg.backends[0].port = fake_port;
    cfg.server_user = Some("someone".into());
    cfg.server_password = Some(pgbalancer_config::SecretRef::Plain("a-password".into()));
    let proxy = TestProxy::start(cfg).await;
    let e = current_user(&proxy, APP_USER, APP_PASSWORD, "postgres").await.expect_err("a forged server");
    let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string());
    assert!(msg.contains("without proving its signature"), "{msg}");
    server.abort();
}
