//! Health checks, lag bans and failover end to end (scenarios 37-40 of
//! test-scenarios.md, and two nodes both claiming to be primary). Each
//! test breaks its own cluster (freezes, stops, pauses, promotes nodes),
//! so each has one of its own; `SERIAL` runs them one at a time (a 2-core
//! machine; a frozen or stopping node must not slow another test's checks).
//!
//! Where a query ran is read from its result (`inet_server_port()`);
//! whether a node received anything while it was out of routing is read
//! afterwards from its `pg_stat_statements` (each phase queries its own
//! marker table, so the phases count apart). Waits poll with deadlines;
//! the proxy's own view of its nodes is printed when one times out.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::routing::*;
use common::{within, TestProxy};
use pgbalancer_config::{BackendRole, ByteSize, Config, FollowPrimary, LoadBalance};
use pgcluster::Cluster;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// A cluster of its own with a database holding `t (a int)` and one-row
/// marker tables `m1`, `m2`, `m3`, all owned by `app`.
async fn setup(replicas: usize, prefix: &str) -> (Arc<Cluster>, String) {
    let c = own_cluster(replicas).await;
    let db = new_db(&c, prefix).await;
    setup_sql(
        &c,
        &db,
        "CREATE TABLE t (a int); ALTER TABLE t OWNER TO app;
         CREATE TABLE m1 AS SELECT 1 AS x; CREATE TABLE m2 AS SELECT 1 AS x; CREATE TABLE m3 AS SELECT 1 AS x;
         ALTER TABLE m1 OWNER TO app; ALTER TABLE m2 OWNER TO app; ALTER TABLE m3 OWNER TO app;",
    )
    .await;
    (c, db)
}

/// Stops the cluster on a blocking thread (pg_ctl), so the runtime that
/// still runs the proxy is not held up. Also what happens on a panic, via
/// `Drop` (thaw, then stop).
async fn teardown(proxy: TestProxy, c: Arc<Cluster>) {
    drop(proxy);
    blocking_plain_drop(c).await;
}

async fn blocking_plain_drop(c: Arc<Cluster>) {
    tokio::task::spawn_blocking(move || drop(c)).await.expect("cluster teardown");
}

fn round_robin(cfg: &mut Config) {
    cfg.load_balance = LoadBalance::RoundRobin;
}

/// One read on a fresh client, bounded by `limit`: Ok(port), or Err(why).
async fn read_once(proxy: &TestProxy, db: &str, sql: &str, limit: Duration) -> Result<u16, String> {
    let attempt = async {
        let c = proxy.try_connect(db).await.map_err(|e| format!("connect: {}", describe(&e)))?;
        port_of(&c, sql).await.map_err(|e| describe(&e))
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// Reads (fresh client each, `limit` each) until `streak` in a row
/// succeeded and satisfied `ok`; returns the failures seen on the way.
async fn until_streak(
    proxy: &TestProxy,
    db: &str,
    sql: &str,
    limit: Duration,
    streak: usize,
    what: &str,
    ok: impl Fn(u16) -> bool,
) -> Vec<String> {
    let start = Instant::now();
    let mut run = 0;
    let mut failures = Vec::new();
    while run < streak {
        match read_once(proxy, db, sql, limit).await {
            Ok(p) if ok(p) => run += 1,
            Ok(p) => {
                run = 0;
                failures.push(format!("served by {p}"));
            }
            Err(e) => {
                run = 0;
                failures.push(e);
            }
        }
        assert!(
            start.elapsed() < STATE_DEADLINE,
            "timed out waiting for {streak} reads in a row {what}; on the way: {failures:?}; nodes: {}",
            topology(proxy)
        );
    }
    failures
}

// ---------------------------------------------------------------------------
// Scenario 37: a frozen replica
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_replica_is_marked_down_and_comes_back() {
    let _g = SERIAL.lock().await;
    let (c, db) = setup(2, "fo_frozen").await;
    let (r1, r2) = (c.replicas[0].port(), c.replicas[1].port());
    // A check fails after 500 ms; down after 3 failures in a row (the
    // first plus 2 retries, 500 ms apart).
    let proxy = rw_proxy(&c, |cfg| {
        round_robin(cfg);
        cfg.health_check_timeout = Duration::from_millis(500);
        cfg.health_check_max_retries = 2;
        cfg.health_check_retry_delay = Duration::from_millis(500);
    })
    .await;
    warm_up(&proxy, &db, &[r1, r2]).await;

    let freezing = Instant::now();
    blocking(&c, |c| c.replicas[0].freeze().expect("freeze replica1")).await;
    let down_after = {
        let shared = proxy.handle.shared().clone();
        tokio::spawn(async move {
            while shared.topology.node(1).unwrap().health() != pgbalancer_proxy::topology::Health::Down {
                if freezing.elapsed() > STATE_DEADLINE {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Some(freezing.elapsed())
        })
    };
    // Reads sent to replica1 before the checks gave up on it hang (the
    // kernel still accepts connections); once it is down, none goes there.
    let on_the_way = until_streak(
        &proxy,
        &db,
        "SELECT inet_server_port() FROM m1",
        Duration::from_secs(2),
        10,
        "from replica2",
        |p| p == r2,
    )
    .await;
    let took = freezing.elapsed();
    let down_after = down_after.await.unwrap().unwrap_or_else(|| panic!("never down: {}", topology(&proxy)));
    eprintln!("frozen replica1 down after {down_after:?}, avoided after {took:?}; reads on the way: {on_the_way:?}");
    // The first failure comes after the freeze began; two more need at
    // least retry_delay + timeout each.
    assert!(
        down_after >= Duration::from_millis(1950),
        "down after {down_after:?}: health_check_max_retries 2 needs 3 failed checks (>= 2 s)"
    );

    // Down: every read is served, by replica2, promptly.
    let c2 = proxy.connect(&db).await;
    for i in 0..30 {
        let p = within(
            Duration::from_secs(5),
            "a read while replica1 is down",
            port_of(&c2, "SELECT inet_server_port() FROM m2"),
        )
        .await
        .unwrap_or_else(|e| panic!("read {i} while replica1 is down: {}", describe(&e)));
        assert_eq!(p, r2, "read {i} while replica1 is down");
    }
    assert!(c.replicas[0].is_frozen(), "replica1 thawed by itself?");

    // Thawed: back after a passing check.
    blocking(&c, |c| c.replicas[0].thaw().expect("thaw replica1")).await;
    let thawed_at = Instant::now();
    until_streak(&proxy, &db, "SELECT inet_server_port() FROM m3", Duration::from_secs(5), 1, "from replica1", |p| {
        p == r1
    })
    .await;
    eprintln!("replica1 back {:?} after thaw", thawed_at.elapsed());
    assert!(!is_down(&proxy, 1), "{}", topology(&proxy));

    // Replica1 never received a query of the down phase (queued ones would
    // have run after the thaw and been counted).
    let m2_calls = calls(&c.replicas[0], &db, "SELECT inet_server_port() FROM m2").await;
    assert_eq!(m2_calls, 0, "replica1 ran reads routed while it was down");
    assert_eq!(calls(&c.replicas[1], &db, "SELECT inet_server_port() FROM m2").await, 30);
    assert!(calls(&c.replicas[0], &db, "SELECT inet_server_port() FROM m3").await >= 1);
    teardown(proxy, c).await;
}

// ---------------------------------------------------------------------------
// Scenario 38: every replica down
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_replicas_down_reads_go_to_the_primary() {
    let _g = SERIAL.lock().await;
    let (c, db) = setup(2, "fo_noreplica").await;
    let (primary, r1, r2) = (c.primary.port(), c.replicas[0].port(), c.replicas[1].port());
    let proxy = rw_proxy(&c, round_robin).await;
    warm_up(&proxy, &db, &[r1, r2]).await;
    let client = proxy.connect(&db).await;

    blocking(&c, |c| {
        c.replicas[0].stop().expect("stop replica1");
        c.replicas[1].stop().expect("stop replica2");
    })
    .await;
    let stopped_at = Instant::now();
    let on_the_way =
        until_streak(&proxy, &db, WHERE, Duration::from_secs(5), 10, "from the primary", |p| p == primary).await;
    eprintln!(
        "reads on the primary {:?} after both replicas stopped; on the way: {on_the_way:?}",
        stopped_at.elapsed()
    );

    // The client that was connected throughout reads from the primary too,
    // and so do new ones, without errors; writes are unaffected.
    for i in 0..20 {
        let p = port_of(&client, "SELECT inet_server_port() FROM m1")
            .await
            .unwrap_or_else(|e| panic!("read {i} with no replica: {}", describe(&e)));
        assert_eq!(p, primary, "read {i}");
    }
    let p = port_of(&client, "INSERT INTO t VALUES (1) RETURNING inet_server_port()").await.unwrap();
    assert_eq!(p, primary);
    assert_eq!(calls(&c.primary, &db, "SELECT inet_server_port() FROM m1").await, 20);

    // A replica that comes back takes reads again, and the primary stops
    // taking them (primary_reads: false).
    blocking(&c, |c| c.replicas[1].start().expect("start replica2")).await;
    until_streak(&proxy, &db, WHERE, Duration::from_secs(5), 10, "from replica2", |p| p == r2).await;
    teardown(proxy, c).await;
}

// ---------------------------------------------------------------------------
// Scenario 39: replay paused above max_lag_bytes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_is_banned_until_it_catches_up() {
    let _g = SERIAL.lock().await;
    const MAX_LAG: u64 = 1 << 20;
    let (c, db) = setup(2, "fo_lag").await;
    let (r1, r2) = (c.replicas[0].port(), c.replicas[1].port());
    let proxy = rw_proxy(&c, |cfg| {
        round_robin(cfg);
        cfg.max_lag_bytes = ByteSize(MAX_LAG);
    })
    .await;
    warm_up(&proxy, &db, &[r1, r2]).await;
    assert!(!is_banned(&proxy, 1), "{}", topology(&proxy));
    // And a client of a `load_balance_mode: session` proxy that sits on
    // replica1: it keeps its node only while that node takes reads.
    let sessions = rw_proxy(&c, |cfg| {
        cfg.load_balance_mode = pgbalancer_config::LoadBalanceMode::Session;
        cfg.max_lag_bytes = ByteSize(MAX_LAG);
    })
    .await;
    let sticky = poll(&sessions, STATE_DEADLINE, "a session-mode client on replica1", || async {
        let client = sessions.connect(&db).await;
        (port_of(&client, WHERE).await.unwrap() == r1).then_some(client)
    })
    .await;
    assert_eq!(ports_of(&sticky, WHERE, 5).await, vec![r1; 5]);

    // Replay paused on replica1, then ~6 MB of WAL on the primary.
    let db2 = db.clone();
    let (lsn, behind) = blocking(&c, move |c| {
        c.replicas[0].pause_replay().expect("pause");
        c.psql(&c.primary, &db2, "INSERT INTO t SELECT generate_series(1, 100000)").expect("bulk insert");
        let lsn = c.primary_lsn().unwrap();
        c.wait_caught_up(&c.replicas[1]).expect("replica2 keeps up");
        let behind = c.replicas[0].lsn_behind(&lsn).unwrap();
        (lsn, behind)
    })
    .await;
    assert!(behind > MAX_LAG as i64, "replica1 only {behind} bytes behind: the test proves nothing");

    // Banned: reads stop going there (round robin would alternate).
    let on_the_way = until_streak(&proxy, &db, WHERE, Duration::from_secs(5), 6, "from replica2", |p| p == r2).await;
    assert!(is_banned(&proxy, 1), "{}", topology(&proxy));
    eprintln!("replica1 ({behind} bytes behind) banned; reads on the way: {on_the_way:?}");
    let client = proxy.connect(&db).await;
    let ports = ports_of(&client, "SELECT inet_server_port() FROM m1", 20).await;
    assert_eq!(count(&ports, r2), 20, "while replica1 lags: {:?}", tally(&c, &ports));
    assert!(c.replicas[0].replay_pause_state().unwrap() == "paused");
    poll(&sessions, STATE_DEADLINE, "replica1 banned by the session-mode proxy", || async {
        is_banned(&sessions, 1).then_some(())
    })
    .await;
    let ports = ports_of(&sticky, "SELECT inet_server_port() FROM m1", 10).await;
    assert_eq!(ports, vec![r2; 10], "the session-mode client left banned replica1");
    drop(sticky);
    drop(sessions);

    // Resumed: back once under the limit — and no sooner.
    blocking(&c, |c| c.replicas[0].resume_replay().expect("resume")).await;
    let check =
        format!("SELECT inet_server_port(), pg_wal_lsn_diff('{lsn}', pg_last_wal_replay_lsn())::bigint FROM m2");
    let start = Instant::now();
    loop {
        let r = row(&client, &check).await.unwrap_or_else(|e| panic!("{check}: {}", describe(&e)));
        if r[0] == r1.to_string() {
            let lag: i64 = r[1].parse().unwrap();
            assert!(lag <= MAX_LAG as i64, "replica1 took reads {lag} bytes behind");
            break;
        }
        assert!(start.elapsed() < STATE_DEADLINE, "replica1 never came back: {}", topology(&proxy));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!is_banned(&proxy, 1), "{}", topology(&proxy));
    assert_eq!(calls(&c.replicas[0], &db, "SELECT inet_server_port() FROM m1").await, 0, "reads while banned");
    teardown(proxy, c).await;
}

/// `max_lag` (time): replay paused behind one small transaction — far
/// below any byte limit — is banned once the replay delay passes the
/// limit, and back when resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_behind_max_lag_in_time_is_banned() {
    let _g = SERIAL.lock().await;
    let (c, db) = setup(2, "fo_lagtime").await;
    let (r1, r2) = (c.replicas[0].port(), c.replicas[1].port());
    let proxy = rw_proxy(&c, |cfg| {
        round_robin(cfg);
        cfg.max_lag = Duration::from_secs(1);
    })
    .await;
    warm_up(&proxy, &db, &[r1, r2]).await;
    let db2 = db.clone();
    let behind = blocking(&c, move |c| {
        c.replicas[0].pause_replay().expect("pause");
        c.psql(&c.primary, &db2, "INSERT INTO t VALUES (1)").expect("insert");
        let lsn = c.primary_lsn().unwrap();
        c.wait_caught_up(&c.replicas[1]).expect("replica2 keeps up");
        c.replicas[0].lsn_behind(&lsn).unwrap()
    })
    .await;
    assert!(behind > 0 && behind < 64 * 1024, "{behind} bytes behind");
    let paused_at = Instant::now();
    until_streak(&proxy, &db, WHERE, Duration::from_secs(5), 6, "from replica2", |p| p == r2).await;
    eprintln!("replica1 {behind} bytes behind, banned for time lag {:?} after the pause", paused_at.elapsed());
    assert!(is_banned(&proxy, 1), "{}", topology(&proxy));
    let ports = ports_of(&proxy.connect(&db).await, "SELECT inet_server_port() FROM m1", 10).await;
    assert_eq!(count(&ports, r2), 10, "{:?}", tally(&c, &ports));

    blocking(&c, |c| c.replicas[0].resume_replay().expect("resume")).await;
    until_streak(&proxy, &db, "SELECT inet_server_port() FROM m2", Duration::from_secs(5), 1, "from replica1", |p| {
        p == r1
    })
    .await;
    assert_eq!(calls(&c.replicas[0], &db, "SELECT inet_server_port() FROM m1").await, 0, "reads while banned");
    teardown(proxy, c).await;
}

// ---------------------------------------------------------------------------
// Scenario 40: primary stopped, replica promoted, under pgbench
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_pgbench_never_writes_to_a_replica() {
    let _g = SERIAL.lock().await;
    let (c, db) = setup(2, "fo_promote").await;
    let (primary, r1, r2) = (c.primary.port(), c.replicas[0].port(), c.replicas[1].port());
    // Tables made directly on the primary.
    let init = pgbench(&c, primary, &db, &["-i", "-s", "1", "-q"]).await;
    assert!(init.status.success(), "pgbench -i: {}", text(&init).1);
    blocking(&c, |c| c.wait_replicas_caught_up().unwrap()).await;

    let proxy = rw_proxy(&c, |cfg| {
        round_robin(cfg);
        cfg.failover_wait_timeout = Duration::from_secs(30);
    })
    .await;
    warm_up(&proxy, &db, &[r1, r2]).await;

    // TPC-B through pgbalancer while the primary goes away: 4 clients flat
    // out (nearly always inside a transaction, so most lose it when the
    // primary stops), and 4 throttled ones (mostly between transactions:
    // they must wait for the new primary and carry on there).
    let spawn_bench = |args: &'static [&'static str]| {
        let (c, db, port) = (c.clone(), db.clone(), proxy.port());
        tokio::spawn(async move { pgbench(&c, port, &db, args).await })
    };
    let flat_out = spawn_bench(&["-n", "-c", "4", "-j", "2", "-T", "8"]);
    let throttled = spawn_bench(&["-n", "-c", "4", "-j", "2", "-T", "8", "-R", "40"]);
    // An idle client connected before the failover.
    let probe = proxy.connect(&db).await;
    let history = "SELECT count(*) FROM pgbench_history";
    let before = poll(&proxy, STATE_DEADLINE, "pgbench making progress", || async {
        let n: i64 = direct_one(&c.primary, &db, history).await.parse().unwrap();
        (n >= 100).then_some(n)
    })
    .await;
    let promoted_at = blocking(&c, |c| {
        c.primary.stop().expect("stop the primary");
        c.replicas[0].promote().expect("promote replica1");
        Instant::now()
    })
    .await;
    let at_promotion: i64 = direct_one(&c.replicas[0], &db, history).await.parse().unwrap();
    // Writes follow without a reload.
    let p = within(Duration::from_secs(20), "a write after the promotion", async {
        port_of(&probe, "INSERT INTO t VALUES (1) RETURNING inet_server_port()").await
    })
    .await
    .unwrap_or_else(|e| panic!("write after promotion: {}; nodes: {}", describe(&e), topology(&proxy)));
    let follow = promoted_at.elapsed();
    assert_eq!(p, r1, "the write after the promotion ran on {p}");
    assert!(follow < Duration::from_secs(5), "writes followed only after {follow:?}");

    for (name, bench) in [("flat out", flat_out), ("throttled", throttled)] {
        let run = bench.await.unwrap();
        let (out, err) = text(&run);
        let aborted = err.lines().filter(|l| l.contains("aborted in command")).count();
        eprintln!(
            "pgbench {name} across the failover: exit {:?}, processed {:?}, failed {:?}, aborted clients {aborted}/4\n{err}",
            run.status.code(),
            pgbench_processed(&out),
            pgbench_failed(&out),
        );
        for text in [&out, &err] {
            assert!(!text.contains("25006"), "SQLSTATE 25006 seen ({name}):\n{out}\n{err}");
            assert!(
                !text.contains("read-only transaction"),
                "a write reached a node in recovery ({name}):\n{out}\n{err}"
            );
        }
        assert!(pgbench_processed(&out).is_some(), "pgbench {name} printed no summary:\n{out}\n{err}");
    }
    let after_run: i64 = direct_one(&c.replicas[0], &db, history).await.parse().unwrap();
    eprintln!(
        "history: {before} when the primary was stopped, {at_promotion} on replica1 at promotion, {after_run} after \
         the runs; writes followed {follow:?} after promote"
    );
    assert!(after_run > at_promotion, "no pgbench client carried on on the new primary");

    // After the failover pgbench runs clean, writing to the new primary.
    let before: i64 = direct_one(&c.replicas[0], &db, history).await.parse().unwrap();
    let run = pgbench(&c, proxy.port(), &db, &["-n", "-c", "2", "-j", "2", "-t", "50"]).await;
    let (out, err) = text(&run);
    assert!(run.status.success(), "pgbench after the failover: {err}\n{out}");
    assert_eq!(pgbench_failed(&out), Some(0), "{out}");
    assert_eq!(pgbench_processed(&out), Some(100), "{out}");
    let after: i64 = direct_one(&c.replicas[0], &db, history).await.parse().unwrap();
    assert_eq!(after - before, 100, "pgbench_history on the new primary");
    // Replica2 is still in recovery (following the old primary): never a writer.
    assert!(c.replicas[1].is_in_recovery().unwrap());
    assert_eq!(calls(&c.replicas[1], &db, "UPDATE pgbench_accounts%").await, 0);
    teardown(proxy, c).await;
}

// ---------------------------------------------------------------------------
// No primary at all: writes wait for failover_wait_timeout
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_primary_writes_wait_for_one() {
    let _g = SERIAL.lock().await;
    let (c, db) = setup(1, "fo_noprimary").await;
    let r1 = c.replicas[0].port();
    let wait = Duration::from_millis(1500);
    let proxy = rw_proxy(&c, |cfg| {
        round_robin(cfg);
        cfg.failover_wait_timeout = wait;
    })
    .await;
    warm_up(&proxy, &db, &[r1]).await;
    let write = "INSERT INTO t VALUES (1) RETURNING inet_server_port()";
    let reader = proxy.connect(&db).await;

    blocking(&c, |c| c.primary.stop().expect("stop the primary")).await;
    // Once the proxy knows, a write waits failover_wait_timeout, then fails
    // with a clear error (never 25006: the replica is not a candidate).
    let stopped = Instant::now();
    poll(&proxy, STATE_DEADLINE, "the primary marked down", || async { is_down(&proxy, 0).then_some(()) }).await;
    eprintln!("primary down after {:?}", stopped.elapsed());
    for _ in 0..2 {
        let t = Instant::now();
        let e = port_of(&proxy.connect(&db).await, write).await.expect_err("no primary");
        let took = t.elapsed();
        eprintln!("write without a primary: {} after {took:?}", describe(&e));
        assert_ne!(sqlstate(&e).as_deref(), Some("25006"), "{}", describe(&e));
        assert!(e.as_db_error().is_some(), "{e}");
        assert!(took >= wait, "refused after {took:?}, before failover_wait_timeout {wait:?}");
        assert!(took < wait + Duration::from_secs(3), "refused only after {took:?}");
    }
    // Reads go on meanwhile.
    assert_eq!(ports_of(&reader, WHERE, 5).await, vec![r1; 5]);

    drop(reader);
    drop(proxy);

    // A write that is waiting when the replica is promoted goes through,
    // there (a proxy with a longer wait, so the promotion fits in it).
    let proxy = rw_proxy(&c, |cfg| cfg.failover_wait_timeout = Duration::from_secs(20)).await;
    // (Logging in before the checks noticed the primary is gone is
    // `proxy_started_while_the_primary_is_down_serves_reads`.)
    poll(&proxy, STATE_DEADLINE, "the primary marked down", || async { is_down(&proxy, 0).then_some(()) }).await;
    let client = proxy.connect(&db).await;
    let (sending_tx, sending) = tokio::sync::oneshot::channel();
    let waiting = tokio::spawn(async move {
        let t = Instant::now();
        let _ = sending_tx.send(());
        (port_of(&client, write).await, t.elapsed())
    });
    sending.await.unwrap();
    let promote_started = Instant::now();
    blocking(&c, |c| c.replicas[0].promote().expect("promote")).await;
    let promote_took = promote_started.elapsed();
    let (r, took) = waiting.await.unwrap();
    let p = r.unwrap_or_else(|e| panic!("the waiting write failed: {}; {}", describe(&e), topology(&proxy)));
    assert_eq!(p, r1);
    assert!(took >= promote_took, "the write finished ({took:?}) before the promotion did ({promote_took:?})");
    eprintln!("the waiting write went through after {took:?} (promotion took {promote_took:?})");
    teardown(proxy, c).await;
}

/// pgbalancer (re)started while the primary is down: until its checks
/// find that out, the primary is taken as up in its configured role. A
/// client logging in then must still get in (a replica is up) and read,
/// rather than fail because the one node its login tried refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_started_while_the_primary_is_down_serves_reads() {
    let _g = SERIAL.lock().await;
    let (c, db) = setup(1, "fo_startdown").await;
    let r1 = c.replicas[0].port();
    blocking(&c, |c| c.primary.stop().expect("stop the primary")).await;
    let proxy = rw_proxy(&c, |cfg| cfg.failover_wait_timeout = Duration::from_secs(2)).await;
    let client = match proxy.try_connect(&db).await {
        Ok(c) => c,
        Err(e) => {
            panic!("login through a fresh proxy with the primary down: {}; nodes: {}", describe(&e), topology(&proxy))
        }
    };
    assert_eq!(ports_of(&client, WHERE, 5).await, vec![r1; 5]);
    teardown(proxy, c).await;
}

/// A frozen primary: reads go on from the replica; once the primary is
/// down, writes wait `failover_wait_timeout` and are refused (never sent
/// to the replica); thawed, writes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_primary_reads_go_on_writes_wait() {
    let _g = SERIAL.lock().await;
    let (c, db) = setup(1, "fo_frozenprimary").await;
    let (primary, r1) = (c.primary.port(), c.replicas[0].port());
    let wait = Duration::from_secs(2);
    let proxy = rw_proxy(&c, |cfg| {
        cfg.health_check_timeout = Duration::from_millis(500);
        cfg.failover_wait_timeout = wait;
    })
    .await;
    warm_up(&proxy, &db, &[r1]).await;
    let write = "INSERT INTO t VALUES (1) RETURNING inet_server_port()";
    assert_eq!(port_of(&proxy.connect(&db).await, write).await.unwrap(), primary);

    blocking(&c, |c| c.primary.freeze().expect("freeze the primary")).await;
    poll(&proxy, STATE_DEADLINE, "the frozen primary marked down", || async { is_down(&proxy, 0).then_some(()) }).await;
    for _ in 0..5 {
        assert_eq!(
            read_once(&proxy, &db, WHERE, Duration::from_secs(5)).await,
            Ok(r1),
            "reads with the primary frozen"
        );
    }
    let t = Instant::now();
    let e = within(wait + Duration::from_secs(5), "a write with the primary frozen", async {
        port_of(&proxy.connect(&db).await, write).await.expect_err("no primary")
    })
    .await;
    eprintln!("write with the primary frozen: {} after {:?}", describe(&e), t.elapsed());
    assert_ne!(sqlstate(&e).as_deref(), Some("25006"), "{}", describe(&e));
    assert!(t.elapsed() >= wait, "refused after {:?}", t.elapsed());

    blocking(&c, |c| c.primary.thaw().expect("thaw")).await;
    until_streak(&proxy, &db, write, Duration::from_secs(5), 3, "writes on the primary again", |p| p == primary).await;
    teardown(proxy, c).await;
}

// ---------------------------------------------------------------------------
// Two primaries
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_primaries_strict_refuses_writes_first_picks_config_order() {
    let _g = SERIAL.lock().await;
    let (c, db) = setup(2, "fo_split").await;
    let (primary, r1, r2) = (c.primary.port(), c.replicas[0].port(), c.replicas[1].port());
    let write = "INSERT INTO t VALUES (1) RETURNING inet_server_port()";
    let wait = Duration::from_secs(2);
    let proxy = rw_proxy(&c, |cfg| {
        round_robin(cfg);
        cfg.follow_primary = FollowPrimary::Strict;
        cfg.failover_wait_timeout = wait;
    })
    .await;
    warm_up(&proxy, &db, &[r1, r2]).await;
    // A client connected throughout that only reads, and writers on
    // fresh connections (a refusal may close the connection).
    let reader = proxy.connect(&db).await;
    assert_eq!(port_of(&proxy.connect(&db).await, write).await.unwrap(), primary);

    // replica1 promoted while the primary still runs: split brain.
    blocking(&c, |c| c.replicas[0].promote().expect("promote replica1")).await;
    let start = Instant::now();
    let refused = loop {
        match port_of(&proxy.connect(&db).await, write).await {
            Ok(p) => assert_eq!(p, primary, "before the conflict is seen, writes stay on the primary"),
            Err(e) => break e,
        }
        assert!(start.elapsed() < STATE_DEADLINE, "writes never refused: {}", topology(&proxy));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("strict, two primaries: {}", describe(&refused));
    assert_ne!(sqlstate(&refused).as_deref(), Some("25006"), "{}", describe(&refused));
    assert!(refused.as_db_error().is_some(), "not an error from the server side: {refused}");
    let rows = || async {
        let a = direct_one(&c.primary, &db, "SELECT count(*) FROM t").await;
        let b = direct_one(&c.replicas[0], &db, "SELECT count(*) FROM t").await;
        (a, b)
    };
    let rows_before = rows().await;
    for _ in 0..3 {
        let t = Instant::now();
        let e = port_of(&proxy.connect(&db).await, write)
            .await
            .expect_err("writes stay refused while two nodes are primary");
        assert_eq!(sqlstate(&e), sqlstate(&refused), "{}", describe(&e));
        assert!(t.elapsed() < wait + Duration::from_secs(3), "refusal took {:?}", t.elapsed());
    }
    assert_eq!(rows().await, rows_before, "a refused write reached a node");
    // Reads still work, on the old connection and new ones (replica2 is a
    // replica; promoted replica1 is not).
    let mut ports = ports_of(&reader, WHERE, 10).await;
    ports.extend(ports_of(&proxy.connect(&db).await, WHERE, 10).await);
    assert!(ports.iter().all(|p| *p == r2), "reads during the conflict: {:?}", tally(&c, &ports));
    drop(reader);
    drop(proxy);

    // follow_primary: first — the first of them in config order, whatever
    // the configured roles say.
    for order in [[0usize, 1, 2], [1, 0, 2]] {
        let proxy = rw_proxy(&c, |cfg| {
            let nodes: Vec<_> = c.nodes().collect();
            cfg.backends = order.iter().map(|&i| backend(nodes[i], BackendRole::Auto, 1)).collect();
            cfg.follow_primary = FollowPrimary::First;
            cfg.failover_wait_timeout = wait;
        })
        .await;
        let first = c.nodes().nth(order[0]).unwrap().port();
        let client = proxy.connect(&db).await;
        until_streak(&proxy, &db, write, Duration::from_secs(5), 1, "a write", |p| p == first).await;
        for _ in 0..10 {
            assert_eq!(port_of(&client, write).await.unwrap(), first, "follow_primary first, order {order:?}");
        }
        let ports = ports_of(&client, WHERE, 6).await;
        assert!(ports.iter().all(|p| *p == r2), "reads, order {order:?}: {:?}", tally(&c, &ports));
    }
    blocking_plain_drop(c).await;
}
