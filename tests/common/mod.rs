//! Shared harness for the end-to-end tests: one real PostgreSQL cluster per
//! test binary (primary + streaming replica, from pgcluster), an in-process
//! pgbalancer per test, raw-socket helpers for protocol tests, and runners
//! for real clients (psql, pgbench, tokio-postgres).
#![allow(dead_code)]

pub mod raw;
pub mod routing;

use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::future::Future;

use pgbalancer_config::{AuthType, BackendConfig, BackendRole, Config, PoolMode, UserEntry};
use pgbalancer_proxy::ProxyHandle;
use pgcluster::Cluster;
use raw::Raw;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret";

/// The cluster of this test binary, with role `app` created once.
pub fn cluster() -> &'static Cluster {
    static READY: OnceLock<()> = OnceLock::new();
    let c = pgcluster::shared();
    READY.get_or_init(|| {
        c.create_role(APP_USER, APP_PASSWORD).expect("create role app");
        c.psql(&c.primary, "postgres", "ALTER ROLE app CREATEDB").expect("grant createdb");
    });
    c
}

/// `app`'s SCRAM verifier as PostgreSQL stores it (so pgbalancer can pass
/// the client's proof through).
pub fn app_verifier() -> String {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let c = cluster();
        c.psql(&c.primary, "postgres", "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'").expect("verifier")
    })
    .clone()
}

/// A new database owned by `app`, unique within this run.
pub fn fresh_db(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    cluster().create_database(&name, APP_USER).expect("create database");
    name
}

/// Runs SQL as the superuser on the primary, directly (not through pgbalancer).
pub fn admin_sql(db: &str, sql: &str) -> String {
    let c = cluster();
    c.psql(&c.primary, db, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Server connections PostgreSQL sees for `app` on `db`.
pub fn server_connections(db: &str) -> i64 {
    admin_sql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND usename = 'app' AND backend_type = 'client backend'"
        ),
    )
    .parse()
    .expect("count")
}

/// A config for tests: loopback, a free port, the cluster's primary, SCRAM
/// with `app`'s verifier, transaction mode, pool of 10.
pub fn base_config() -> Config {
    let c = cluster();
    Config {
        listen_addresses: "127.0.0.1".into(),
        port: 0,
        pool_mode: PoolMode::Transaction,
        pool_size: 10,
        auth_type: AuthType::ScramSha256,
        users: vec![UserEntry { name: APP_USER.into(), password: Some(app_verifier()) }],
        backends: vec![BackendConfig {
            host: c.primary.host.clone(),
            port: c.primary.port,
            role: BackendRole::Primary,
            weight: 1,
        }],
        query_wait_timeout: Duration::from_secs(30),
        client_login_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

/// One pgbalancer running inside the test's runtime.
pub struct TestProxy {
    pub handle: ProxyHandle,
    pub addr: SocketAddr,
}

impl TestProxy {
    pub async fn start(config: Config) -> TestProxy {
        config.validate("test").expect("valid test config");
        let handle = ProxyHandle::start(config).await.expect("start proxy");
        let addr = handle.local_addrs()[0];
        TestProxy { handle, addr }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// libpq/tokio-postgres connection string for `app` on `db`.
    pub fn conninfo(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={db}", self.port())
    }

    /// A tokio-postgres client through pgbalancer; its connection task is
    /// spawned.
    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        self.try_connect(db).await.expect("connect through pgbalancer")
    }

    pub async fn try_connect(&self, db: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(&self.conninfo(db), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// "Proxy alive": a fresh client's `SELECT 1` works.
    pub async fn assert_alive(&self, db: &str) {
        let c = tokio::time::timeout(Duration::from_secs(20), self.connect(db)).await.expect("connect in time");
        let row = c.query_one("SELECT 1::int4", &[]).await.expect("SELECT 1");
        assert_eq!(row.get::<_, i32>(0), 1);
    }
}

/// Runs a PostgreSQL client binary (psql, pgbench) with `app`'s password
/// and returns its output.
pub async fn run_client(bin: &str, args: &[String]) -> Output {
    let path = cluster().bin(bin);
    let out = tokio::process::Command::new(&path)
        .args(args)
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "20")
        .env_remove("PGSERVICE")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
    out
}

/// psql through pgbalancer: `-X -q -At -v ON_ERROR_STOP=1` plus `args`.
pub async fn psql(proxy: &TestProxy, db: &str, args: &[&str]) -> Output {
    let mut a: Vec<String> = ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"].map(String::from).to_vec();
    a.extend(["-p".into(), proxy.port().to_string(), "-U".into(), APP_USER.into(), "-d".into(), db.into()]);
    a.extend(args.iter().map(|s| s.to_string()));
    run_client("psql", &a).await
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

/// A base config with `auth_type: trust` (for raw-socket tests).
pub fn trust_config() -> Config {
    let mut c = base_config();
    c.auth_type = AuthType::Trust;
    c.users = vec![UserEntry { name: APP_USER.into(), password: Some(APP_PASSWORD.into()) }];
    c
}

/// A superuser connection straight to the primary (not through
/// pgbalancer); the cluster trusts `postgres` on 127.0.0.1.
pub async fn superuser(db: &str) -> Client {
    let c = cluster();
    let (client, conn) =
        tokio_postgres::connect(&c.primary.conninfo(c.superuser(), db), NoTls).await.expect("superuser connection");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// First column of the first row of a simple query.
pub async fn one(c: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let msgs = c.simple_query(sql).await?;
    Ok(msgs
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row")))
}

/// Creates table `t (a int)` owned by `app` in `db`.
pub async fn create_table(db: &str) {
    superuser(db).await.batch_execute("CREATE TABLE t (a int); ALTER TABLE t OWNER TO app").await.expect("create t");
}

/// Rows in `t`, counted directly on the primary.
pub async fn row_count(db: &str) -> i64 {
    superuser(db).await.query_one("SELECT count(*) FROM t", &[]).await.expect("count t").get(0)
}

/// The primary's address, for direct (not proxied) raw connections.
pub fn primary() -> SocketAddr {
    let p = &cluster().primary;
    format!("{}:{}", p.host, p.port).parse().expect("primary address")
}

/// `query_wait_timeout` of every pool-of-one proxy.
pub const POOL_OF_ONE_WAIT: Duration = Duration::from_secs(1);

/// `cfg` with one server and a short `query_wait_timeout`: what a client
/// leaves behind shows up for the next one, and a client waiting for a
/// pinned server is told so quickly.
pub fn pool_of_one(mut cfg: Config) -> Config {
    cfg.pool_size = 1;
    cfg.query_wait_timeout = POOL_OF_ONE_WAIT;
    cfg
}

/// A trust proxy with a pool of one, as `tweak` leaves it.
pub async fn proxy_with(tweak: impl FnOnce(&mut Config)) -> TestProxy {
    let mut cfg = pool_of_one(trust_config());
    tweak(&mut cfg);
    TestProxy::start(cfg).await
}

/// Raw connections as `postgres` to `db`: straight to the primary, and
/// through `proxy` (a trust proxy).
pub async fn raw_pair(db: &str, proxy: &TestProxy) -> (Raw, Raw) {
    (raw::login(primary(), db, None).await, raw::login(proxy.addr, db, None).await)
}

/// A raw client logged in as `app` on `db` through a trust proxy.
pub async fn app_login(proxy: &TestProxy, db: &str) -> Raw {
    let mut r = Raw::connect(proxy.addr).await;
    r.login(&[("user", APP_USER), ("database", db)]).await;
    r
}

/// Polls `cond` (bounded) until it holds.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Bye (Terminate), and wait until the proxy has let the client's server go.
pub async fn leave(c: Raw, proxy: &TestProxy) {
    let mut c = c;
    c.send(&raw::msg(b'X', b"")).await;
    assert!(c.until_closed().await.is_empty(), "nothing after Terminate");
    let stats = proxy.handle.stats();
    wait_until("no client pinned", || stats.pinned_clients() == 0).await;
}

/// Starts the real daemon: `pgbalancer --config CONFIG`, stderr (the log)
/// into `log`, no colours, `RUST_LOG` unset, plus `env`.
pub fn spawn_daemon(
    config: &std::path::Path,
    log: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> std::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgbalancer"));
    cmd.arg("--config").arg(config).env_remove("RUST_LOG").env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("create daemon log"))
        .spawn()
        .expect("start pgbalancer")
}
