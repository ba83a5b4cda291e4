//! Read/write routing end to end (design notes section 4): one PostgreSQL
//! primary with two streaming replicas shared by every test here, each
//! test in its own database with its own pgbalancer (transaction mode,
//! health checks every 200 ms, `primary_reads: false` unless said).
//!
//! Where a statement ran is read from its result: `inet_server_port()` is
//! the port of the node that ran it. A write sent to a replica would fail
//! with SQLSTATE 25006 (read-only transaction), so "no error and the
//! primary's port" proves a write was routed right. Per-node counts of
//! pgbench's statements come from each node's `pg_stat_statements`.
//!
//! Tests that pause replay on a replica take `NODES` for writing; the
//! others take it for reading (a paused replica would hold up their
//! database creation, which waits for every replica to catch up).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::routing::*;
use common::TestProxy;
use pgbalancer_config::{LoadBalance, LoadBalanceMode, ReadYourWrites, TransactionRouting};
use pgcluster::Cluster;
use tokio::sync::RwLock;

static NODES: RwLock<()> = RwLock::const_new(());

/// The shared cluster, a fresh database with table `t (a int)` owned by
/// `app`, and the nodes' ports.
struct Env {
    c: Arc<Cluster>,
    db: String,
    primary: u16,
    r1: u16,
    r2: u16,
}

async fn env(prefix: &str, extra_setup: &str) -> Env {
    let c = tokio::task::spawn_blocking(shared_cluster).await.expect("shared cluster");
    let db = new_db(&c, prefix).await;
    let setup = format!("CREATE TABLE t (a int); ALTER TABLE t OWNER TO app; {extra_setup}");
    setup_sql(&c, &db, &setup).await;
    let (primary, r1, r2) = (c.primary.port(), c.replicas[0].port(), c.replicas[1].port());
    Env { c, db, primary, r1, r2 }
}

impl Env {
    async fn proxy(&self, tweak: impl FnOnce(&mut pgbalancer_config::Config)) -> TestProxy {
        rw_proxy(&self.c, tweak).await
    }

    fn tally(&self, ports: &[u16]) -> std::collections::BTreeMap<String, usize> {
        tally(&self.c, ports)
    }

    fn replicas(&self) -> [u16; 2] {
        [self.r1, self.r2]
    }
}

fn round_robin(cfg: &mut pgbalancer_config::Config) {
    cfg.load_balance = LoadBalance::RoundRobin;
}

/// Runs `sql` (simple protocol), which must succeed; the port in its first
/// column.
async fn served_by(c: &tokio_postgres::Client, sql: &str) -> u16 {
    port_of(c, sql).await.unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
}

// ---------------------------------------------------------------------------
// 1. Writes to the primary, reads to the readers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_to_the_primary_and_reads_to_the_replicas() {
    let _g = NODES.read().await;
    let e = env("rw_basic", "").await;
    let proxy = e.proxy(round_robin).await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;

    for i in 0..10 {
        let sql = format!("INSERT INTO t VALUES ({i}) RETURNING inet_server_port()");
        assert_eq!(served_by(&c, &sql).await, e.primary, "{sql}");
    }
    let ports = ports_of(&c, WHERE, 20).await;
    assert_eq!(count(&ports, e.r1), 10, "round robin over two replicas: {:?}", e.tally(&ports));
    assert_eq!(count(&ports, e.r2), 10, "{:?}", e.tally(&ports));
    // The rows are on the primary (and nowhere else was written).
    assert_eq!(direct_one(&e.c.primary, &e.db, "SELECT count(*) FROM t").await, "10");
    drop(c);
    drop(proxy);

    // primary_reads: the primary takes its share of reads; writes still
    // go there only.
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.primary_reads = true;
        })
        .await;
    warm_up(&proxy, &e.db, &[e.primary, e.r1, e.r2]).await;
    let c = proxy.connect(&e.db).await;
    let ports = ports_of(&c, WHERE, 30).await;
    for p in [e.primary, e.r1, e.r2] {
        assert_eq!(count(&ports, p), 10, "primary_reads: 10 reads each: {:?}", e.tally(&ports));
    }
    for i in 10..15 {
        let sql = format!("INSERT INTO t VALUES ({i}) RETURNING inet_server_port()");
        assert_eq!(served_by(&c, &sql).await, e.primary, "{sql}");
    }
    drop(c);
    drop(proxy);

    // Weight 0 takes a node out of reads: replica2 here...
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.backends[2].weight = 0;
        })
        .await;
    warm_up(&proxy, &e.db, &[e.r1]).await;
    let c = proxy.connect(&e.db).await;
    let ports = ports_of(&c, WHERE, 20).await;
    assert_eq!(count(&ports, e.r1), 20, "replica2 has weight 0: {:?}", e.tally(&ports));
    drop(c);
    drop(proxy);

    // ...and the primary with primary_reads on: still the only writer.
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.primary_reads = true;
            cfg.backends[0].weight = 0;
        })
        .await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;
    let ports = ports_of(&c, WHERE, 20).await;
    assert_eq!(count(&ports, e.primary), 0, "primary has weight 0: {:?}", e.tally(&ports));
    assert_eq!(count(&ports, e.r1), 10, "{:?}", e.tally(&ports));
    let sql = "INSERT INTO t VALUES (99) RETURNING inet_server_port()";
    assert_eq!(served_by(&c, sql).await, e.primary, "weight 0 leaves the primary the writer");
}

/// `health_check_period: 0`: no checks, every backend up in its
/// configured role — routing works from the config alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_health_checks_configured_roles_route() {
    let _g = NODES.read().await;
    let e = env("rw_nochecks", "").await;
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.health_check_period = Duration::ZERO;
        })
        .await;
    let c = proxy.connect(&e.db).await;
    let ports = ports_of(&c, WHERE, 10).await;
    assert_eq!(count(&ports, e.r1), 5, "{:?}", e.tally(&ports));
    assert_eq!(count(&ports, e.r2), 5, "{:?}", e.tally(&ports));
    assert_eq!(served_by(&c, "INSERT INTO t VALUES (1) RETURNING inet_server_port()").await, e.primary);
}

// ---------------------------------------------------------------------------
// 2. Load-balancing algorithms
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_random_follows_the_weights() {
    let _g = NODES.read().await;
    let e = env("rw_weighted", "").await;
    let proxy = e
        .proxy(|cfg| {
            cfg.load_balance = LoadBalance::WeightedRandom;
            cfg.backends[1].weight = 1;
            cfg.backends[2].weight = 3;
        })
        .await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;
    const N: usize = 400;
    let ports = ports_of(&c, WHERE, N).await;
    let (n1, n2) = (count(&ports, e.r1), count(&ports, e.r2));
    assert_eq!(n1 + n2, N, "only replicas read: {:?}", e.tally(&ports));
    // Expected 100 : 300 (binomial sd ~8.7); ±40 is over 4.5 sd.
    assert!((60..=140).contains(&n1), "weights 1:3 over {N} reads gave {n1}:{n2}");
    // Not a fixed sequence: both nodes show up in runs of different lengths.
    let switches = ports.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches > 20, "{switches} switches between nodes in {N} reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_turns_by_weight() {
    let _g = NODES.read().await;
    let e = env("rw_rr", "").await;
    let proxy = e.proxy(round_robin).await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;
    let ports = ports_of(&c, WHERE, 20).await;
    for w in ports.windows(2) {
        assert_ne!(w[0], w[1], "sequential reads alternate: {ports:?} ({:?})", e.tally(&ports));
    }
    assert!(ports.iter().all(|p| e.replicas().contains(p)), "{ports:?}");
    drop(c);
    drop(proxy);

    // Weights 1:2: every 3 consecutive reads are one round.
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.backends[2].weight = 2;
        })
        .await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;
    let ports = ports_of(&c, WHERE, 30).await;
    for (i, w) in ports.windows(3).enumerate() {
        assert_eq!(count(w, e.r1), 1, "reads {i}..{}: weights 1:2 → one of three on replica1: {ports:?}", i + 3);
        assert_eq!(count(w, e.r2), 2, "reads {i}..{}: {ports:?}", i + 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_avoids_the_busy_replica() {
    let _g = NODES.read().await;
    let e = env("rw_least", "").await;
    let proxy = e.proxy(|cfg| cfg.load_balance = LoadBalance::LeastOutstanding).await;
    warm_up(&proxy, &e.db, &e.replicas()).await;

    // A long read holds one replica.
    let holder = proxy.connect(&e.db).await;
    let long = tokio::spawn(async move { port_of(&holder, "SELECT inet_server_port() FROM pg_sleep(4)").await });
    let c = e.c.clone();
    let db = e.db.clone();
    let busy = poll(&proxy, STATE_DEADLINE, "the long read running on a replica", || {
        let (c, db) = (c.clone(), db.clone());
        async move {
            for r in &c.replicas {
                let sql = format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND state = 'active' \
                     AND query LIKE '%pg_sleep(4)%'"
                );
                if direct_one(r, "postgres", &sql).await != "0" {
                    return Some(r.port());
                }
            }
            None
        }
    })
    .await;
    let free = if busy == e.r1 { e.r2 } else { e.r1 };

    // Meanwhile every new read goes to the other one.
    let c = proxy.connect(&e.db).await;
    let ports = ports_of(&c, WHERE, 20).await;
    assert!(!long.is_finished(), "the long read ended before the check; the test proves nothing");
    assert_eq!(count(&ports, free), 20, "reads while {busy} is busy: {:?}", e.tally(&ports));
    let long_port = long.await.unwrap().expect("long read");
    assert_eq!(long_port, busy);

    // Idle again: both take reads.
    let ports = ports_of(&c, WHERE, 20).await;
    assert!(ports.iter().all(|p| e.replicas().contains(p)), "{ports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_sends_fewer_reads_to_the_slow_replica() {
    let _g = NODES.read().await;
    let e = env("rw_latency", "").await;
    let proxy = e.proxy(|cfg| cfg.load_balance = LoadBalance::Latency).await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    // 50 ms on replica1, immediate on replica2.
    let sql = Arc::new(format!(
        "SELECT inet_server_port(), pg_sleep(CASE WHEN inet_server_port() = {} THEN 0.05 ELSE 0 END)",
        e.r1
    ));
    const CLIENTS: usize = 3;
    const EACH: usize = 40;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let c = proxy.connect(&e.db).await;
        let sql = sql.clone();
        tasks.push(tokio::spawn(async move { ports_of(&c, &sql, EACH).await }));
    }
    let mut ports = Vec::new();
    for t in tasks {
        ports.extend(t.await.unwrap());
    }
    let (n1, n2) = (count(&ports, e.r1), count(&ports, e.r2));
    assert_eq!(n1 + n2, CLIENTS * EACH, "{:?}", e.tally(&ports));
    // Even shares would be 60:60; the slow node gets few (the latency
    // picker explores 1 in 20).
    assert!(n1 * 4 <= CLIENTS * EACH, "slow replica1 got {n1} of {} reads ({n2} on replica2)", CLIENTS * EACH);
}

// ---------------------------------------------------------------------------
// 3. What the classifier decides, end to end
// ---------------------------------------------------------------------------

const CLASSIFIER_SETUP: &str = "\
    INSERT INTO t SELECT generate_series(1, 5);
    CREATE SEQUENCE s; ALTER SEQUENCE s OWNER TO app;
    CREATE FUNCTION bump() RETURNS int LANGUAGE plpgsql AS $$BEGIN INSERT INTO t VALUES (-1); RETURN 1; END$$;
    CREATE FUNCTION harmless() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1';
    CREATE FUNCTION unlisted() RETURNS int LANGUAGE sql STABLE AS 'SELECT 2';
    ALTER FUNCTION bump() OWNER TO app; ALTER FUNCTION harmless() OWNER TO app; ALTER FUNCTION unlisted() OWNER TO app;";

/// Statements that must run on the primary (each would fail with 25006 on
/// a replica); the first column is the port.
const PRIMARY_ONLY: &[&str] = &[
    "SELECT inet_server_port() FROM t WHERE a = 1 FOR UPDATE",
    "SELECT inet_server_port() FROM t WHERE a = 1 FOR NO KEY UPDATE",
    "SELECT inet_server_port() FROM t WHERE a = 2 FOR SHARE",
    "SELECT inet_server_port() FROM t WHERE a = 2 FOR KEY SHARE",
    "SELECT inet_server_port(), nextval('s')",
    "SELECT inet_server_port(), setval('s', 100)",
    "WITH x AS (DELETE FROM t WHERE a = -100 RETURNING a) SELECT inet_server_port()",
    "WITH x AS (INSERT INTO t VALUES (-2) RETURNING a) SELECT inet_server_port() FROM x",
    "SELECT inet_server_port(); INSERT INTO t VALUES (100)",
    "select inet_server_port() from t where a = 3 for update skip locked",
    "SELECT inet_server_port(), bump()",
    "/* pgbalancer: primary */ SELECT inet_server_port()",
];

/// Reads that look like writes to a careless classifier; must spread over
/// the replicas.
const READS: &[&str] = &[
    "SELECT inet_server_port()",
    "SELECT inet_server_port() /* FOR UPDATE */",
    "SELECT inet_server_port(), 'INSERT INTO t VALUES (1); nextval(''s'')' AS s",
    "SELECT inet_server_port(), $$ DELETE FROM t $$",
    "-- UPDATE t SET a = 1\nSELECT inet_server_port()",
    "SELECT inet_server_port() FROM t WHERE a = 1",
    "SELECT inet_server_port(); SELECT inet_server_port()",
    "WITH x AS (SELECT a FROM t) SELECT inet_server_port() FROM x LIMIT 1",
    "SELECT inet_server_port(), harmless()",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifier_sends_writes_to_the_primary_simple_protocol() {
    let _g = NODES.read().await;
    let e = env("rw_classify", CLASSIFIER_SETUP).await;
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.write_functions = vec!["bump".into()];
        })
        .await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;
    for sql in PRIMARY_ONLY {
        for _ in 0..2 {
            assert_eq!(served_by(&c, sql).await, e.primary, "{sql}");
        }
    }
    let mut ports = Vec::new();
    for sql in READS {
        for _ in 0..2 {
            let p = served_by(&c, sql).await;
            assert!(e.replicas().contains(&p), "{sql} ran on {p}");
            ports.push(p);
        }
    }
    // Round robin: every read statement ran once on each replica.
    assert_eq!(count(&ports, e.r1), READS.len(), "{:?}", e.tally(&ports));
    // A multi-statement read batch stays on one node.
    let both = column(&c, "SELECT inet_server_port(); SELECT inet_server_port()").await.unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], both[1], "one batch, one node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifier_sends_writes_to_the_primary_extended_protocol() {
    let _g = NODES.read().await;
    let e = env("rw_classify_ext", CLASSIFIER_SETUP).await;
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.write_functions = vec!["bump".into()];
        })
        .await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;
    let port = |r: tokio_postgres::Row| r.get::<_, i32>(0) as u16;

    // Parameters and prepared statements (tokio-postgres names each one).
    for a in 1..=3i32 {
        let r = c.query_one("SELECT inet_server_port() FROM t WHERE a = $1 FOR UPDATE", &[&a]).await;
        assert_eq!(port(r.unwrap_or_else(|e| panic!("FOR UPDATE: {}", describe(&e)))), e.primary);
    }
    let next = c.prepare("SELECT inet_server_port(), nextval('s')").await.unwrap();
    let bump = c.prepare("SELECT inet_server_port(), bump()").await.unwrap();
    let insert = c.prepare("INSERT INTO t VALUES ($1) RETURNING inet_server_port()").await.unwrap();
    let cte = c.prepare("WITH x AS (DELETE FROM t WHERE a = $1 RETURNING a) SELECT inet_server_port()").await.unwrap();
    let read = c.prepare("SELECT inet_server_port() FROM t WHERE a = $1").await.unwrap();
    let mut reads = Vec::new();
    for i in 0..6i32 {
        for (what, st, params) in [
            ("nextval", &next, vec![]),
            ("bump()", &bump, vec![]),
            ("INSERT", &insert, vec![1000 + i]),
            ("DELETE CTE", &cte, vec![-1000 - i]),
        ] {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
            let r = c.query_one(st, &params).await.unwrap_or_else(|err| panic!("{what}: {}", describe(&err)));
            assert_eq!(port(r), e.primary, "{what} (prepared, run {i})");
        }
        let r = c.query_one(&read, &[&1i32]).await.unwrap_or_else(|err| panic!("read: {}", describe(&err)));
        reads.push(port(r));
        // An unnamed statement (query_typed: Parse/Bind/Execute in one go).
        let r = c
            .query_typed("SELECT inet_server_port() FROM t WHERE a = $1", &[(&2i32, tokio_postgres::types::Type::INT4)])
            .await
            .unwrap_or_else(|err| panic!("unnamed read: {}", describe(&err)));
        reads.push(port(r.into_iter().next().expect("one row")));
    }
    assert!(reads.iter().all(|p| e.replicas().contains(p)), "extended reads: {:?}", e.tally(&reads));
    assert!(count(&reads, e.r1) >= 3 && count(&reads, e.r2) >= 3, "spread: {:?}", e.tally(&reads));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_lists_decide_function_calls() {
    let _g = NODES.read().await;
    let e = env("rw_functions", CLASSIFIER_SETUP).await;

    // Without write_functions, a call of bump() is a read: it lands on a
    // replica and fails there (this is what write_functions is for).
    let proxy = e.proxy(round_robin).await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;
    let err = port_of(&c, "SELECT inet_server_port(), bump()").await.expect_err("bump() on a replica");
    assert_eq!(sqlstate(&err).as_deref(), Some("25006"), "{}", describe(&err));
    drop(c);
    drop(proxy);

    // read_only_functions: any call of a function not listed is a write.
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.read_only_functions = vec!["inet_server_port".into(), "harmless".into()];
        })
        .await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;
    for _ in 0..2 {
        assert_eq!(served_by(&c, "SELECT inet_server_port(), bump()").await, e.primary, "bump() not listed");
        assert_eq!(served_by(&c, "SELECT inet_server_port(), unlisted()").await, e.primary, "unlisted()");
        let p = served_by(&c, "SELECT inet_server_port(), harmless()").await;
        assert!(e.replicas().contains(&p), "harmless() is listed read-only, ran on {p}");
    }
}

/// Pipelined queries (tokio-postgres sends concurrent queries of one
/// client back to back, without waiting): each batch is routed on its own,
/// a write behind an unfinished read still reaches the primary. COPY TO
/// STDOUT of a read goes to a replica, COPY FROM to the primary. A cancel
/// reaches the node running the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_copy_and_cancel_follow_the_route() {
    use futures_util::{SinkExt, StreamExt};
    let _g = NODES.read().await;
    let e = env("rw_pipeline", "").await;
    let proxy = e.proxy(round_robin).await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;

    // Simple protocol, pipelined: read (slow), write, read, write. What
    // arrives together is one batch: with a write in it, it all runs on the
    // primary (reads may too); no write ever lands on a replica.
    let (a, b, d, f) = tokio::join!(
        port_of(&c, "SELECT inet_server_port() FROM pg_sleep(0.2)"),
        port_of(&c, "INSERT INTO t VALUES (1) RETURNING inet_server_port()"),
        port_of(&c, WHERE),
        port_of(&c, "INSERT INTO t VALUES (2) RETURNING inet_server_port()"),
    );
    let ports: Vec<u16> =
        [a, b, d, f].into_iter().map(|r| r.unwrap_or_else(|err| panic!("pipelined: {}", describe(&err)))).collect();
    assert_eq!((ports[1], ports[3]), (e.primary, e.primary), "{ports:?}");
    // A pipeline of reads only stays on the replicas.
    for _ in 0..3 {
        let (a, b, d) = tokio::join!(port_of(&c, WHERE), port_of(&c, WHERE), port_of(&c, WHERE));
        for p in [a, b, d] {
            let p = p.unwrap_or_else(|err| panic!("pipelined read: {}", describe(&err)));
            assert!(e.replicas().contains(&p), "pipelined read on {p}");
        }
    }

    // Extended protocol, pipelined.
    let read = c.prepare("SELECT inet_server_port(), $1::int").await.unwrap();
    let write = c.prepare("INSERT INTO t VALUES ($1) RETURNING inet_server_port()").await.unwrap();
    let futs = (0..8i32).map(|i| {
        let (c, read, write) = (&c, &read, &write);
        async move {
            let st = if i % 2 == 0 { read } else { write };
            let r = c.query_one(st, &[&i]).await;
            (i, r.map(|r| r.get::<_, i32>(0) as u16))
        }
    });
    for (i, r) in futures_util::future::join_all(futs).await {
        let p = r.unwrap_or_else(|err| panic!("pipelined extended {i}: {}", describe(&err)));
        if i % 2 == 1 {
            assert_eq!(p, e.primary, "write {i}");
        }
    }
    let futs = (0..6i32).map(|i| {
        let (c, read) = (&c, &read);
        async move { c.query_one(read, &[&i]).await.map(|r| r.get::<_, i32>(0) as u16) }
    });
    for r in futures_util::future::join_all(futs).await {
        let p = r.unwrap_or_else(|err| panic!("pipelined extended read: {}", describe(&err)));
        assert!(e.replicas().contains(&p), "pipelined extended read on {p}");
    }

    // COPY out of a read: a replica (the port is in the data).
    let mut out = Vec::new();
    for _ in 0..2 {
        let stream = c.copy_out("COPY (SELECT inet_server_port()) TO STDOUT").await.unwrap();
        let chunks: Vec<_> = stream.collect().await;
        let data: Vec<u8> = chunks.into_iter().flat_map(|b| b.unwrap().to_vec()).collect();
        out.push(String::from_utf8(data).unwrap().trim().parse::<u16>().unwrap());
    }
    assert!(out.iter().all(|p| e.replicas().contains(p)), "COPY TO STDOUT ran on {out:?}");
    // COPY in: the primary (it would fail with 25006 on a replica).
    let sink = c.copy_in("COPY t FROM STDIN").await.unwrap_or_else(|err| panic!("COPY FROM: {}", describe(&err)));
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"100\n101\n")).await.unwrap();
    let n = sink.finish().await.unwrap_or_else(|err| panic!("COPY FROM: {}", describe(&err)));
    assert_eq!(n, 2);
    assert_eq!(direct_one(&e.c.primary, &e.db, "SELECT count(*) FROM t WHERE a >= 100").await, "2");

    // Cancel a long read on whichever replica runs it.
    let token = c.cancel_token();
    let long = tokio::spawn(async move {
        let t = Instant::now();
        (c.simple_query("SELECT inet_server_port() FROM pg_sleep(30)").await.map(|_| ()), t.elapsed())
    });
    let cc = e.c.clone();
    let db = e.db.clone();
    poll(&proxy, STATE_DEADLINE, "the long read running", || {
        let (cc, db) = (cc.clone(), db.clone());
        async move {
            for r in &cc.replicas {
                let sql = format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND query LIKE '%pg_sleep(30)%' \
                     AND state = 'active'"
                );
                if direct_one(r, "postgres", &sql).await != "0" {
                    return Some(());
                }
            }
            None
        }
    })
    .await;
    token.cancel_query(tokio_postgres::NoTls).await.expect("send cancel");
    let (r, took) = long.await.unwrap();
    let err = r.expect_err("cancelled");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{}", describe(&err));
    assert!(took < Duration::from_secs(15), "{took:?}");
}

// ---------------------------------------------------------------------------
// 4. Transactions, hints, session stickiness
// ---------------------------------------------------------------------------

/// Runs `stmts` one simple query each; the ports of those that return rows.
async fn txn(c: &tokio_postgres::Client, stmts: &[&str]) -> Vec<u16> {
    let mut ports = Vec::new();
    for s in stmts {
        let rows = column(c, s).await.unwrap_or_else(|e| panic!("{s} (in {stmts:?}): {}", describe(&e)));
        if let Some(p) = rows.first() {
            ports.push(p.parse().unwrap());
        }
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_transactions() {
    let _g = NODES.read().await;
    let e = env("rw_txn", "INSERT INTO t VALUES (1);").await;
    let proxy = e.proxy(round_robin).await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;

    // A read-write transaction runs on the primary, start to end.
    for _ in 0..3 {
        let p = txn(&c, &["BEGIN", WHERE, "SELECT inet_server_port() FROM t", WHERE, "COMMIT"]).await;
        assert_eq!(p, vec![e.primary; 3], "BEGIN; reads; COMMIT (transaction_routing: primary)");
        let p =
            txn(&c, &["BEGIN", WHERE, "INSERT INTO t VALUES (2) RETURNING inet_server_port()", WHERE, "COMMIT"]).await;
        assert_eq!(p, vec![e.primary; 3], "BEGIN; read; write; read; COMMIT");
    }
    // BEGIN READ ONLY may go to a replica, and stays on one node.
    let mut seen = Vec::new();
    for begin in ["BEGIN READ ONLY", "START TRANSACTION READ ONLY", "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"]
    {
        for _ in 0..2 {
            let p = txn(&c, &[begin, WHERE, "SELECT inet_server_port() FROM t", WHERE, "COMMIT"]).await;
            assert!(e.replicas().contains(&p[0]), "{begin}: ran on {:?}", e.tally(&p));
            assert!(p.iter().all(|x| *x == p[0]), "{begin}: one node for the whole transaction: {p:?}");
            seen.push(p[0]);
        }
    }
    assert!(seen.contains(&e.r1) && seen.contains(&e.r2), "read-only transactions spread: {:?}", e.tally(&seen));
    // The session is still fine for writes afterwards.
    assert_eq!(served_by(&c, "INSERT INTO t VALUES (3) RETURNING inet_server_port()").await, e.primary);
    drop(c);
    drop(proxy);

    // transaction_routing: first_statement — a transaction of reads may
    // run on a replica; one that starts with a write runs on the primary.
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.transaction_routing = TransactionRouting::FirstStatement;
        })
        .await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let p = txn(&c, &["BEGIN", WHERE, "SELECT inet_server_port() FROM t", WHERE, "COMMIT"]).await;
        assert!(e.replicas().contains(&p[0]), "first_statement, reads only: {:?}", e.tally(&p));
        assert!(p.iter().all(|x| *x == p[0]), "one node per transaction: {p:?}");
        seen.push(p[0]);
        let p = txn(&c, &["BEGIN", "INSERT INTO t VALUES (4) RETURNING inet_server_port()", WHERE, "COMMIT"]).await;
        assert_eq!(p, vec![e.primary; 2], "first_statement, write first");
        let p = txn(&c, &["BEGIN", "SELECT inet_server_port() FROM t WHERE a = 1 FOR UPDATE", WHERE, "ROLLBACK"]).await;
        assert_eq!(p, vec![e.primary; 2], "first_statement, FOR UPDATE first");
    }
    assert!(seen.contains(&e.r1) && seen.contains(&e.r2), "{:?}", e.tally(&seen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_and_session_role() {
    let _g = NODES.read().await;
    let e = env("rw_hints", CLASSIFIER_SETUP).await;
    // With read_only_functions set, unlisted() makes a statement a write:
    // a replica hint is the only way such a read reaches a replica.
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.read_only_functions = vec!["inet_server_port".into()];
        })
        .await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;
    let other = proxy.connect(&e.db).await;

    for _ in 0..4 {
        assert_eq!(served_by(&c, "/* pgbalancer: primary */ SELECT inet_server_port()").await, e.primary);
        assert_eq!(served_by(&c, "SELECT inet_server_port(), unlisted()").await, e.primary, "not listed: a write");
    }
    let mut hinted = Vec::new();
    for _ in 0..4 {
        hinted.push(served_by(&c, "/* pgbalancer: replica */ SELECT inet_server_port(), unlisted()").await);
    }
    assert!(hinted.iter().all(|p| e.replicas().contains(p)), "replica hint: {:?}", e.tally(&hinted));

    // SET pgbalancer.role holds for the session, and only for it.
    column(&c, "SET pgbalancer.role = 'primary'").await.unwrap_or_else(|e| panic!("SET primary: {}", describe(&e)));
    for _ in 0..4 {
        assert_eq!(served_by(&c, WHERE).await, e.primary, "after SET pgbalancer.role = 'primary'");
        let p = served_by(&other, WHERE).await;
        assert!(e.replicas().contains(&p), "another client is not affected: {p}");
    }
    column(&c, "SET pgbalancer.role = 'replica'").await.unwrap_or_else(|e| panic!("SET replica: {}", describe(&e)));
    let mut ports = Vec::new();
    for _ in 0..4 {
        ports.push(served_by(&c, "SELECT inet_server_port(), unlisted()").await);
    }
    assert!(ports.iter().all(|p| e.replicas().contains(p)), "after SET role replica: {:?}", e.tally(&ports));
    column(&c, "SET pgbalancer.role = 'auto'").await.unwrap_or_else(|e| panic!("SET auto: {}", describe(&e)));
    let ports = ports_of(&c, WHERE, 4).await;
    assert!(ports.iter().all(|p| e.replicas().contains(p)), "after SET role auto: {:?}", e.tally(&ports));
    assert_eq!(served_by(&c, "SELECT inet_server_port(), unlisted()").await, e.primary, "auto again");

    // `standby` is another word for replica; RESET undoes the setting.
    let p = served_by(&c, "/* pgbalancer: standby */ SELECT inet_server_port(), unlisted()").await;
    assert!(e.replicas().contains(&p), "standby hint: {p}");
    column(&c, "SET pgbalancer.role = 'primary'").await.unwrap();
    assert_eq!(served_by(&c, WHERE).await, e.primary);
    column(&c, "RESET pgbalancer.role").await.unwrap_or_else(|e| panic!("RESET: {}", describe(&e)));
    let ports = ports_of(&c, WHERE, 4).await;
    assert!(ports.iter().all(|p| e.replicas().contains(p)), "after RESET: {:?}", e.tally(&ports));

    // Session state that pins a client to its server keeps it on the
    // primary: SET ROLE.
    let pinned = proxy.connect(&e.db).await;
    column(&pinned, "SET ROLE app").await.unwrap();
    let ports = ports_of(&pinned, WHERE, 4).await;
    assert_eq!(ports, vec![e.primary; 4], "a pinned client reads on the primary");
}

/// `pool_mode: session`: the whole session on one node — the primary, or
/// a replica when the client asks at connect time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pool_mode_runs_each_session_on_one_node() {
    let _g = NODES.read().await;
    let e = env("rw_session_pool", "").await;
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.pool_mode = pgbalancer_config::PoolMode::Session;
        })
        .await;
    let plain = proxy.connect(&e.db).await;
    let ports = ports_of(&plain, WHERE, 4).await;
    assert_eq!(ports, vec![e.primary; 4], "session mode without a hint: the primary");
    assert_eq!(served_by(&plain, "INSERT INTO t VALUES (1) RETURNING inet_server_port()").await, e.primary);

    let mut seen = Vec::new();
    for _ in 0..4 {
        let info = format!("{} options='-c pgbalancer.role=replica'", proxy.conninfo(&e.db));
        let (client, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await.expect("connect with options");
        tokio::spawn(conn);
        let ports = ports_of(&client, WHERE, 4).await;
        assert!(e.replicas().contains(&ports[0]), "asked for a replica at connect: {:?}", e.tally(&ports));
        assert!(ports.iter().all(|p| *p == ports[0]), "one node per session: {ports:?}");
        seen.push(ports[0]);
    }
    assert!(seen.contains(&e.r1) && seen.contains(&e.r2), "replica sessions spread: {:?}", e.tally(&seen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_load_balance_mode_keeps_a_client_on_one_replica() {
    let _g = NODES.read().await;
    let e = env("rw_sticky", "").await;
    let proxy = e.proxy(|cfg| cfg.load_balance_mode = LoadBalanceMode::Session).await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let mut firsts = Vec::new();
    for i in 0..12 {
        let c = proxy.connect(&e.db).await;
        let mut ports = ports_of(&c, WHERE, 5).await;
        assert_eq!(
            served_by(&c, &format!("INSERT INTO t VALUES ({i}) RETURNING inet_server_port()")).await,
            e.primary,
            "writes still go to the primary"
        );
        ports.extend(ports_of(&c, WHERE, 5).await);
        assert!(e.replicas().contains(&ports[0]), "{ports:?}");
        assert!(ports.iter().all(|p| *p == ports[0]), "client {i} moved between replicas: {:?}", e.tally(&ports));
        firsts.push(ports[0]);
    }
    // weighted_random chose per session: 12 sessions on one replica would
    // be a 1 in 2048 chance.
    assert!(firsts.contains(&e.r1) && firsts.contains(&e.r2), "sessions: {:?}", e.tally(&firsts));
}

// ---------------------------------------------------------------------------
// 5. Read your writes
// ---------------------------------------------------------------------------

/// Resumes replay when dropped (also when the test fails), and waits
/// until the replica caught up, for the tests after this one.
struct Paused {
    c: Arc<Cluster>,
    replica: usize,
}

impl Paused {
    async fn new(c: &Arc<Cluster>, replica: usize) -> Paused {
        blocking(c, move |c| c.replicas[replica].pause_replay().expect("pause replay")).await;
        Paused { c: c.clone(), replica }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let r = &self.c.replicas[self.replica];
        let _ = r.resume_replay();
        let _ = self.c.wait_caught_up(r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_lsn() {
    let _g = NODES.write().await;
    let e = env("rw_ryw_lsn", "").await;
    let check = "SELECT inet_server_port(), count(*) FROM t WHERE a = ";
    let paused = Paused::new(&e.c, 0).await;

    // Control: without read_your_writes, a client's read after its write
    // may land on paused replica1, which does not have the row.
    let proxy = e.proxy(round_robin).await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let c = proxy.connect(&e.db).await;
    column(&c, "INSERT INTO t VALUES (1)").await.unwrap();
    let mut stale = 0;
    for _ in 0..4 {
        let r = row(&c, &format!("{check}1")).await.unwrap();
        if r[0] == e.r1.to_string() && r[1] == "0" {
            stale += 1;
        }
    }
    assert!(stale > 0, "replica1 is paused: some read should have missed the row (the test proves nothing)");
    drop(c);
    drop(proxy);

    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.read_your_writes = ReadYourWrites::Lsn;
        })
        .await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let writer = proxy.connect(&e.db).await;
    let reader = proxy.connect(&e.db).await;
    let mut writer_ports = Vec::new();
    for k in 10..15 {
        column(&writer, &format!("INSERT INTO t VALUES ({k})")).await.unwrap();
        for _ in 0..4 {
            let r = row(&writer, &format!("{check}{k}")).await.unwrap();
            assert_eq!(r[1], "1", "the writer's read of row {k} ran on port {} and missed it", r[0]);
            let p: u16 = r[0].parse().unwrap();
            assert_ne!(p, e.r1, "the writer read from paused replica1");
            writer_ports.push(p);
        }
    }
    // The same after a write in an explicit transaction, and with the
    // extended protocol.
    for k in 20..23 {
        txn(&writer, &["BEGIN", &format!("INSERT INTO t VALUES ({k}) RETURNING inet_server_port()"), "COMMIT"]).await;
        let r = row(&writer, &format!("{check}{k}")).await.unwrap();
        assert_eq!(r[1], "1", "after BEGIN/INSERT/COMMIT, the read of row {k} ran on port {} and missed it", r[0]);
    }
    let insert = writer.prepare("INSERT INTO t VALUES ($1)").await.unwrap();
    let select = writer.prepare("SELECT inet_server_port(), count(*) FROM t WHERE a = $1").await.unwrap();
    for k in 30..33i32 {
        writer.execute(&insert, &[&k]).await.unwrap();
        let r = writer.query_one(&select, &[&k]).await.unwrap();
        let (port, n): (i32, i64) = (r.get(0), r.get(1));
        assert_eq!(n, 1, "extended protocol: the read of row {k} ran on port {port} and missed it");
    }
    // Another client, without writes, is still served by replica1.
    let reader_ports = ports_of(&reader, &format!("{check}10"), 10).await;
    assert!(
        reader_ports.contains(&e.r1),
        "a client without writes should still read from replica1: {:?}",
        e.tally(&reader_ports)
    );
    eprintln!("read_your_writes lsn: writer reads {:?}", e.tally(&writer_ports));
    drop(paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_primary_for_the_window() {
    let _g = NODES.read().await;
    let e = env("rw_ryw_primary", "").await;
    const WINDOW: Duration = Duration::from_secs(1);
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.read_your_writes = ReadYourWrites::Primary;
            cfg.read_your_writes_window = WINDOW;
        })
        .await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let writer = proxy.connect(&e.db).await;
    let reader = proxy.connect(&e.db).await;

    // Before any write, the writer reads from replicas too.
    let p = ports_of(&writer, WHERE, 4).await;
    assert!(p.iter().all(|x| e.replicas().contains(x)), "{p:?}");

    let before_write = Instant::now();
    column(&writer, "INSERT INTO t VALUES (1)").await.unwrap();
    let start = Instant::now();
    let mut log = Vec::new();
    loop {
        let p = served_by(&writer, WHERE).await;
        let done = before_write.elapsed();
        log.push((done, p));
        if e.replicas().contains(&p) {
            // A replica only once the window after the commit is over.
            assert!(done >= WINDOW, "writer read from a replica {done:?} after its write: {log:?}");
            break;
        }
        assert_eq!(p, e.primary);
        assert!(start.elapsed() < WINDOW + STATE_DEADLINE, "writer never left the primary: {log:?}");
        // Meanwhile a client without writes reads from replicas.
        let q = served_by(&reader, WHERE).await;
        assert!(e.replicas().contains(&q), "the other client read from {q}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let within: Vec<_> = log.iter().filter(|(t, _)| *t < WINDOW).collect();
    assert!(within.len() >= 3, "too few reads inside the window to show anything: {log:?}");
}

// ---------------------------------------------------------------------------
// 6. pgbench through the router
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_spreads_and_tpcb_writes() {
    let _g = NODES.read().await;
    let e = env("rw_pgbench", "").await;
    // Tables made directly on the primary, not through the router.
    let init = pgbench(&e.c, e.primary, &e.db, &["-i", "-s", "1", "-q"]).await;
    assert!(init.status.success(), "pgbench -i: {}", text(&init).1);
    blocking(&e.c, |c| c.wait_replicas_caught_up().unwrap()).await;

    let proxy = e.proxy(|_| {}).await;
    warm_up(&proxy, &e.db, &e.replicas()).await;
    let select = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    for mode in ["simple", "extended"] {
        let before = calls_by_node(&e.c, &e.db, select).await;
        let run =
            pgbench(&e.c, proxy.port(), &e.db, &["-S", "-n", "-c", "4", "-j", "2", "-t", "200", "-M", mode]).await;
        let (out, err) = text(&run);
        assert!(run.status.success(), "pgbench -S -M {mode}: {err}\n{out}");
        assert_eq!(pgbench_failed(&out), Some(0), "{out}");
        assert_eq!(pgbench_processed(&out), Some(800), "{out}");
        let after = calls_by_node(&e.c, &e.db, select).await;
        let delta = |n: &str| after[n] - before[n];
        assert_eq!(delta("primary"), 0, "primary_reads off: {before:?} → {after:?}");
        assert_eq!(delta("replica1") + delta("replica2"), 800, "{before:?} → {after:?}");
        for r in ["replica1", "replica2"] {
            // weighted_random 1:1 over 800: 400 ± 14 (sd).
            assert!(delta(r) >= 300, "-M {mode}: {r} ran {} of 800: {before:?} → {after:?}", delta(r));
        }
    }

    // TPC-B: every transaction writes; 0 failures, all on the primary.
    let run = pgbench(&e.c, proxy.port(), &e.db, &["-c", "4", "-j", "2", "-t", "100"]).await;
    let (out, err) = text(&run);
    assert!(run.status.success(), "pgbench TPC-B: {err}\n{out}");
    assert_eq!(pgbench_failed(&out), Some(0), "{out}");
    assert_eq!(pgbench_processed(&out), Some(400), "{out}");
    assert!(!err.contains("read-only transaction") && !err.contains("25006"), "{err}");
    // pgbench truncated the history first (through the router, on the primary).
    assert_eq!(direct_one(&e.c.primary, &e.db, "SELECT count(*) FROM pgbench_history").await, "400");
    let updates = calls_by_node(&e.c, &e.db, "UPDATE pgbench_accounts%").await;
    assert_eq!(updates["primary"], 400, "{updates:?}");
}

// ---------------------------------------------------------------------------
// 7. Regressions found in review
// ---------------------------------------------------------------------------

/// Reads that pin the client to its server (a role set with `set_config`,
/// session characteristics, protocol statements without name mapping) run
/// on the primary: a pinned client stays where it is, and its later writes
/// must not land on a replica (SQLSTATE 25006).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_pin_the_client_run_on_the_primary() {
    let _g = NODES.read().await;
    let e = env("rw_pins", "").await;
    let proxy = e.proxy(round_robin).await;
    let c = proxy.connect(&e.db).await;
    assert_eq!(served_by(&c, "SELECT inet_server_port(), set_config('role', current_user, false)").await, e.primary);
    assert_eq!(served_by(&c, "INSERT INTO t VALUES (1) RETURNING inet_server_port()").await, e.primary);

    let c = proxy.connect(&e.db).await;
    c.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").await.unwrap();
    c.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE").await.unwrap();
    assert_eq!(served_by(&c, "INSERT INTO t VALUES (2) RETURNING inet_server_port()").await, e.primary);

    // Without name mapping, a named statement pins: prepared on the primary.
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.max_prepared_statements = 0;
        })
        .await;
    let c = proxy.connect(&e.db).await;
    let read = c.prepare("SELECT inet_server_port()").await.unwrap();
    let port: i32 = c.query_one(&read, &[]).await.unwrap().get(0);
    assert_eq!(port as u16, e.primary);
    assert_eq!(served_by(&c, "INSERT INTO t VALUES (3) RETURNING inet_server_port()").await, e.primary);
}

/// A read runs on a replica; meanwhile the client pipelines an unfinished
/// extended batch (no Sync yet) and then a write that finishes it. The
/// unfinished batch must not follow the read to the replica (the replica
/// would wait for a Sync that the held write carries: a hang), and the
/// write must run on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_batch_after_a_read_neither_hangs_nor_reaches_a_replica() {
    use common::raw::{self, Next};
    let _g = NODES.read().await;
    let e = env("rw_hold", "").await;
    let proxy = e
        .proxy(|cfg| {
            round_robin(cfg);
            cfg.auth_type = pgbalancer_config::AuthType::Trust;
        })
        .await;
    let mut c = raw::login(proxy.addr, &e.db, None).await;
    let mut bytes = raw::query("SELECT pg_sleep(0.3), inet_server_port()");
    bytes.extend(raw::parse("", "SET application_name = 'held'"));
    bytes.extend(raw::bind_execute(""));
    bytes.extend(raw::parse("", "INSERT INTO t VALUES (7) RETURNING inet_server_port()"));
    bytes.extend(raw::bind_execute(""));
    bytes.extend(raw::sync());
    c.send(&bytes).await;
    let first = common::within(Duration::from_secs(10), "the read's answer", c.until_ready()).await;
    assert_eq!(raw::first_error(&first), None, "{first:?}");
    let second = common::within(Duration::from_secs(10), "the pipelined write's answer", c.until_ready()).await;
    assert_eq!(raw::first_error(&second), None, "{second:?}");
    let ports: Vec<String> = second
        .iter()
        .filter_map(|m| match m {
            Next::Message(b'D', body) => Some(String::from_utf8_lossy(&body[6..]).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(ports, vec![e.primary.to_string()], "the write ran on the primary");
}
