//! Harness for the read/write routing and failover tests: clusters with
//! replicas (a shared one with two replicas for `tests/routing.rs`, one
//! per test for `tests/failover.rs`), a routing config over all their
//! nodes, per-node evidence of where work ran, and pgbench.
//!
//! Which node served a query is read from its result:
//! `inet_server_port()` is the node's port. Per-node counts are
//! cross-checked with `pg_stat_statements` (preloaded on every node by
//! pgcluster), which counts a statement when it finishes, per database.
//!
//! Nothing here uses `super::cluster()` (the 1-replica shared cluster):
//! a test binary that routes must not start a cluster it does not use.
//! Blocking pgcluster calls run in `spawn_blocking`, so the in-process
//! proxy keeps its worker threads.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pgbalancer_config::{AuthType, BackendConfig, BackendRole, Config, PoolMode, UserEntry};
use pgcluster::{Cluster, ClusterOptions, Node};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::{TestProxy, APP_PASSWORD, APP_USER};

/// How long a state change (a node marked down, banned, back) may take.
pub const STATE_DEADLINE: Duration = Duration::from_secs(20);

/// The health check period of routing configs: short, so tests are quick.
pub const CHECK_PERIOD: Duration = Duration::from_millis(200);

/// The 2-replica cluster shared by one test binary, with role `app`.
/// Never dropped: the watchdog stops it when the process exits.
pub fn shared_cluster() -> Arc<Cluster> {
    static SHARED: OnceLock<Arc<Cluster>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let c = Cluster::start(ClusterOptions { replicas: 2, ..Default::default() })
                .unwrap_or_else(|e| panic!("start the 2-replica cluster: {e}"));
            setup_app_role(&c);
            Arc::new(c)
        })
        .clone()
}

/// A cluster of its own (primary + `replicas`), with role `app`; stopped
/// (thawed first) when the last `Arc` goes.
pub async fn own_cluster(replicas: usize) -> Arc<Cluster> {
    blocking_plain(move || {
        let c = Cluster::start(ClusterOptions { replicas, ..Default::default() })
            .unwrap_or_else(|e| panic!("start a {replicas}-replica cluster: {e}"));
        setup_app_role(&c);
        Arc::new(c)
    })
    .await
}

fn setup_app_role(c: &Cluster) {
    c.create_role(APP_USER, APP_PASSWORD).expect("create role app");
    c.wait_replicas_caught_up().expect("role app on the replicas");
}

async fn blocking_plain<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs `f` with the cluster on a blocking thread (pgcluster runs psql
/// and pg_ctl as child processes and waits for them).
pub async fn blocking<R: Send + 'static>(c: &Arc<Cluster>, f: impl FnOnce(&Cluster) -> R + Send + 'static) -> R {
    let c = c.clone();
    blocking_plain(move || f(&c)).await
}

/// `app`'s SCRAM verifier as this cluster stores it (read from the first
/// node that answers: the primary may be stopped by then).
pub fn verifier(c: &Cluster) -> String {
    let sql = "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'";
    let mut errors = Vec::new();
    for n in c.nodes() {
        match n.psql("postgres", sql) {
            Ok(v) => return v,
            Err(e) => errors.push(e.to_string()),
        }
    }
    panic!("app's verifier from no node: {errors:?}")
}

/// A new database owned by `app`, present on every running replica that
/// is not paused when this returns.
pub async fn new_db(c: &Arc<Cluster>, prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let n = name.clone();
    blocking(c, move |c| {
        c.create_database(&n, APP_USER).expect("create database");
        c.wait_replicas_caught_up().expect("database on the replicas");
    })
    .await;
    name
}

/// Runs `sql` on the primary (superuser, directly), then waits until
/// every running replica has replayed it.
pub async fn setup_sql(c: &Arc<Cluster>, db: &str, sql: &str) {
    let (db, sql) = (db.to_owned(), sql.to_owned());
    blocking(c, move |c| {
        c.psql(&c.primary, &db, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.wait_replicas_caught_up().expect("replicas caught up");
    })
    .await
}

/// Backend `node` as pgbalancer sees it.
pub fn backend(node: &Node, role: BackendRole, weight: u32) -> BackendConfig {
    BackendConfig { host: node.host.clone(), port: node.port(), role, weight }
}

/// A routing config over every node of `c` (primary first, then the
/// replicas in order: node id = index), SCRAM pass-through for `app`,
/// transaction mode, health checks every 200 ms, the primary out of reads
/// (`primary_reads: false`) so a read's port tells it went to a replica.
pub fn rw_config(c: &Cluster) -> Config {
    let mut backends = vec![backend(&c.primary, BackendRole::Primary, 1)];
    backends.extend(c.replicas.iter().map(|r| backend(r, BackendRole::Replica, 1)));
    Config {
        listen_addresses: "127.0.0.1".into(),
        port: 0,
        pool_mode: PoolMode::Transaction,
        pool_size: 10,
        auth_type: AuthType::ScramSha256,
        users: vec![UserEntry { name: APP_USER.into(), password: Some(verifier(c)) }],
        backends,
        query_wait_timeout: Duration::from_secs(30),
        client_login_timeout: Duration::from_secs(10),
        server_connect_timeout: Duration::from_secs(3),
        server_login_retry: Duration::from_millis(200),
        health_check_period: CHECK_PERIOD,
        health_check_timeout: Duration::from_millis(1000),
        health_check_max_retries: 1,
        health_check_retry_delay: Duration::from_millis(100),
        failover_wait_timeout: Duration::from_secs(15),
        primary_reads: false,
        ..Config::default()
    }
}

/// A proxy with `rw_config(c)` as `tweak` leaves it.
pub async fn rw_proxy(c: &Arc<Cluster>, tweak: impl FnOnce(&mut Config)) -> TestProxy {
    let mut cfg = blocking(c, rw_config).await;
    tweak(&mut cfg);
    TestProxy::start(cfg).await
}

/// Port → node name, for readable failure messages.
pub fn names(c: &Cluster) -> BTreeMap<u16, String> {
    c.nodes().map(|n| (n.port(), n.name.clone())).collect()
}

/// How many of `ports` are each node's, by name (`{"replica1": 10, ...}`).
pub fn tally(c: &Cluster, ports: &[u16]) -> BTreeMap<String, usize> {
    let names = names(c);
    let mut t = BTreeMap::new();
    for p in ports {
        *t.entry(names.get(p).cloned().unwrap_or_else(|| format!("port {p}"))).or_insert(0) += 1;
    }
    t
}

pub fn count(ports: &[u16], port: u16) -> usize {
    ports.iter().filter(|p| **p == port).count()
}

/// SQLSTATE and message of a failed query.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => format!("{e}"),
    }
}

pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_owned())
}

/// Every row of a simple query (one or more statements), first column.
pub async fn column(c: &Client, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(c.simple_query(sql)
        .await?
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .collect())
}

/// The first row of a simple query, every column.
pub async fn row(c: &Client, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    let msgs = c.simple_query(sql).await?;
    Ok(msgs
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_owned()).collect()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row")))
}

/// The port in the first column of the first row of `sql` (simple
/// protocol): the node that ran it.
pub async fn port_of(c: &Client, sql: &str) -> Result<u16, tokio_postgres::Error> {
    let r = row(c, sql).await?;
    Ok(r[0].parse().unwrap_or_else(|_| panic!("{sql}: first column {:?} is not a port", r[0])))
}

/// `n` times `sql` in a row on one client; the port of each.
pub async fn ports_of(c: &Client, sql: &str, n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    for i in 0..n {
        match port_of(c, sql).await {
            Ok(p) => ports.push(p),
            Err(e) => panic!("query {i} of {n} ({sql}) failed: {}", describe(&e)),
        }
    }
    ports
}

/// A read that names its node.
pub const WHERE: &str = "SELECT inet_server_port()";

/// Issues reads until every port in `want` served one: the proxy has seen
/// every reader up. A new client every 5 reads (with
/// `load_balance_mode: session` a client keeps its node). Returns the
/// ports seen.
pub async fn warm_up(proxy: &TestProxy, db: &str, want: &[u16]) -> Vec<u16> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let c = proxy.connect(db).await;
        for _ in 0..5 {
            match port_of(&c, WHERE).await {
                Ok(p) => seen.push(p),
                Err(e) => panic!("warm-up read failed: {}", describe(&e)),
            }
            if want.iter().all(|w| seen.contains(w)) {
                return seen;
            }
        }
        if start.elapsed() > STATE_DEADLINE {
            let mut t = BTreeMap::new();
            for p in &seen {
                *t.entry(*p).or_insert(0) += 1;
            }
            panic!(
                "warm-up: reads never reached every one of {want:?} (reads by port: {t:?}); nodes: {}",
                topology(proxy)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A superuser connection straight to `node` (trusted on 127.0.0.1).
pub async fn direct(node: &Node, db: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(&node.conninfo(pgcluster::SUPERUSER, db), NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {} ({db}): {e}", node.name));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// One value, straight from `node` as the superuser.
pub async fn direct_one(node: &Node, db: &str, sql: &str) -> String {
    let c = direct(node, db).await;
    match row(&c, sql).await {
        Ok(r) => r[0].clone(),
        Err(e) => panic!("{sql} on {}: {}", node.name, describe(&e)),
    }
}

/// Calls of statements in database `db` whose normalized text matches the
/// SQL `LIKE` pattern `pattern`, as `node`'s pg_stat_statements counts
/// them (the view lives in the `postgres` database of every node).
pub async fn calls(node: &Node, db: &str, pattern: &str) -> i64 {
    let sql = format!(
        "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
          WHERE d.datname = {} AND s.query LIKE {}",
        pgcluster::quote_literal(db),
        pgcluster::quote_literal(pattern)
    );
    direct_one(node, "postgres", &sql).await.parse().expect("calls")
}

/// `calls` on every node, by name.
pub async fn calls_by_node(c: &Cluster, db: &str, pattern: &str) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for n in c.nodes() {
        m.insert(n.name.clone(), calls(n, db, pattern).await);
    }
    m
}

/// The proxy's view of its nodes, for failure messages: id, port, health,
/// role, ban, outstanding.
pub fn topology(proxy: &TestProxy) -> String {
    let t = &proxy.handle.shared().topology;
    let table = t.table();
    let nodes: Vec<String> = t
        .nodes()
        .iter()
        .map(|n| {
            format!(
                "#{} :{} {} {}{}{} reads={} writes={}",
                n.id,
                n.port,
                n.health().as_str(),
                n.role().as_str(),
                n.ban().as_str().map(|b| format!(" banned ({b})")).unwrap_or_default(),
                if n.detached() { " detached" } else { "" },
                n.stats.reads.load(Ordering::Relaxed),
                n.stats.writes.load(Ordering::Relaxed),
            )
        })
        .collect();
    format!("[{}] primary={:?} readers={:?}", nodes.join("; "), table.primary, table.readers)
}

/// Whether the proxy has node `id` down (its health checks failed).
pub fn is_down(proxy: &TestProxy, id: usize) -> bool {
    proxy.handle.shared().topology.node(id).expect("node id").health() == pgbalancer_proxy::topology::Health::Down
}

/// Whether the proxy bans node `id` from reads for lag.
pub fn is_banned(proxy: &TestProxy, id: usize) -> bool {
    proxy.handle.shared().topology.node(id).expect("node id").ban() != pgbalancer_proxy::topology::Ban::None
}

/// Polls the async `check` every 20 ms until it gives `Some`; panics after
/// `limit` with `what` and the proxy's view of its nodes.
pub async fn poll<T, F, Fut>(proxy: &TestProxy, limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}; nodes: {}", topology(proxy));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a client binary of the cluster (pgbench, psql) with `app`'s password.
pub async fn run_bin(c: &Cluster, bin: &str, args: &[String]) -> Output {
    let path = c.bin(bin);
    tokio::process::Command::new(&path)
        .args(args)
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "20")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {}: {e}", path.display()))
}

/// pgbench as `app` against `port` (the proxy or a node) on `db`.
pub async fn pgbench(c: &Cluster, port: u16, db: &str, args: &[&str]) -> Output {
    let mut a: Vec<String> =
        vec!["-h".into(), "127.0.0.1".into(), "-p".into(), port.to_string(), "-U".into(), APP_USER.into()];
    a.extend(args.iter().map(|s| s.to_string()));
    a.push(db.into());
    run_bin(c, "pgbench", &a).await
}

/// `number of transactions actually processed: N/M` → N (None if absent).
pub fn pgbench_processed(out: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.starts_with("number of transactions actually processed:"))?;
    line.split(':').nth(1)?.trim().split('/').next()?.trim().parse().ok()
}

/// `number of failed transactions: N (...)` → N (None if absent).
pub fn pgbench_failed(out: &str) -> Option<u64> {
    let line = out.lines().find(|l| l.starts_with("number of failed transactions:"))?;
    line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}
