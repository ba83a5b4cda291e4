//! Faults end to end (scenarios 28, 29, 31, 32, 33, 42, 43 of
//! test-scenarios.md): clients that vanish, cancels, servers terminated
//! under the proxy, pool exhaustion and idle-in-transaction timeouts, with
//! real PostgreSQL behind a pgbalancer started per test.
//!
//! Every wait for state is a poll with a deadline (pg_stat_activity through
//! a direct superuser connection, the proxy's pool counters, a connection
//! task ending); nothing sleeps for a fixed time to let state settle.
//!
//! Queries through the proxy use the simple protocol (`simple_query`,
//! `batch_execute`): tokio-postgres prepares named statements in one round
//! trip and executes them in another, which transaction pooling may put on
//! different server connections.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::raw::{self, bind_execute, flush, parse, query, Next};
use common::*;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// How long any awaited state change may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One `app` backend on the test database, as pg_stat_activity shows it.
#[derive(Debug, Clone)]
struct Backend {
    pid: i32,
    state: String,
    query: String,
    in_xact: bool,
}

async fn backends(su: &Client, db: &str) -> Vec<Backend> {
    su.query(
        "SELECT pid, coalesce(state, ''), coalesce(query, ''), xact_start IS NOT NULL
           FROM pg_stat_activity
          WHERE datname = $1 AND usename = 'app' AND backend_type = 'client backend'
          ORDER BY pid",
        &[&db],
    )
    .await
    .expect("pg_stat_activity")
    .iter()
    .map(|r| Backend { pid: r.get(0), state: r.get(1), query: r.get(2), in_xact: r.get(3) })
    .collect()
}

/// Polls `check` every 20 ms until it returns Ok; panics after `DEADLINE`
/// with the last Err (a description of the state seen).
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(state) if start.elapsed() > DEADLINE => {
                panic!("timed out after {DEADLINE:?} waiting for {what}; last state: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_owned())
}

/// A client through pgbalancer whose connection task the test keeps, so it
/// can see the connection end (and why).
async fn connect_watched(proxy: &TestProxy, db: &str) -> (Client, JoinHandle<Result<(), tokio_postgres::Error>>) {
    let (client, conn) = tokio_postgres::connect(&proxy.conninfo(db), NoTls).await.expect("connect through pgbalancer");
    (client, tokio::spawn(conn))
}

/// Waits until every pool of the proxy has nobody waiting and nothing
/// checked out, and at most `max_open` connections; returns (open, idle)
/// of each pool.
async fn wait_pools_settled(proxy: &TestProxy, max_open: usize) -> Vec<(usize, usize)> {
    wait_for("pool counters back to baseline", || async {
        let pools = proxy.handle.shared().pools.all();
        let seen: Vec<String> = pools
            .iter()
            .map(|p| {
                let (open, idle) = p.counts();
                format!(
                    "{}: waiting={} checked_out={} open={open} idle={idle}",
                    p.key.database,
                    p.stats.waiting.load(std::sync::atomic::Ordering::Relaxed),
                    p.stats.checked_out.load(std::sync::atomic::Ordering::Relaxed)
                )
            })
            .collect();
        let settled = pools.iter().all(|p| {
            p.stats.waiting.load(std::sync::atomic::Ordering::Relaxed) == 0
                && p.stats.checked_out.load(std::sync::atomic::Ordering::Relaxed) == 0
                && p.counts().0 <= max_open
        });
        if settled {
            Ok(pools.iter().map(|p| p.counts()).collect())
        } else {
            Err(seen.join("; "))
        }
    })
    .await
}

/// Waits until PostgreSQL no longer lists backend `pid`.
async fn wait_backend_gone(su: &Client, db: &str, pid: i32) {
    wait_for(&format!("backend {pid} to exit"), || async {
        let b = backends(su, db).await;
        if b.iter().any(|b| b.pid == pid) {
            Err(format!("{b:?}"))
        } else {
            Ok(())
        }
    })
    .await
}

/// Waits until no `app` backend on `db` is inside a transaction or running
/// something, and there are at most `max` of them.
async fn wait_no_busy_backend(su: &Client, db: &str, max: usize) {
    wait_for("no app backend left in a transaction or active", || async {
        let b = backends(su, db).await;
        if b.len() <= max && b.iter().all(|b| !b.in_xact && b.state == "idle") {
            Ok(())
        } else {
            Err(format!("{b:?}"))
        }
    })
    .await
}

/// The transaction status byte of the ReadyForQuery ending `msgs`.
fn rfq_status(msgs: &[Next]) -> u8 {
    match msgs.last() {
        Some(Next::Message(b'Z', body)) => body[0],
        other => panic!("expected ReadyForQuery, got {other:?} (all: {msgs:?})"),
    }
}

// ---------------------------------------------------------------------------
// 28. Client disconnects mid-transaction with a pool of 1.
// ---------------------------------------------------------------------------

/// The next client must see no open transaction and no uncommitted row.
async fn assert_clean_after_vanished_client(proxy: &TestProxy, su: &Client, db: &str, old_pid: i32) {
    let b = within(DEADLINE, "next client's connect (pool of 1)", proxy.connect(db)).await;
    let in_tx =
        within(DEADLINE, "next client's first query", one(&b, "SELECT txid_current_if_assigned() IS NULL")).await;
    assert_eq!(in_tx.unwrap(), "t", "the next client inherited a transaction with an assigned xid");
    assert_eq!(one(&b, "SELECT count(*) FROM t").await.unwrap(), "0", "an uncommitted row became visible");
    // The pool of 1 is usable: the next client works, in a fresh transaction.
    b.batch_execute("BEGIN; INSERT INTO t VALUES (42); COMMIT").await.expect("next client can work");
    assert_eq!(one(&b, "SELECT count(*) FROM t").await.unwrap(), "1");
    // PostgreSQL agrees: the vanished client's backend holds no transaction.
    wait_for("the old backend to be gone or idle outside a transaction", || async {
        let all = backends(su, db).await;
        match all.iter().find(|x| x.pid == old_pid) {
            Some(x) if x.in_xact || x.state != "idle" => Err(format!("{all:?}")),
            _ => Ok(()),
        }
    })
    .await;
    assert_eq!(row_count(db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_transaction_rolls_back() {
    let db = fresh_db("f28");
    create_table(&db).await;
    let su = superuser("postgres").await;
    let mut cfg = base_config();
    cfg.pool_size = 1;
    let proxy = TestProxy::start(cfg).await;

    let (a, a_conn) = connect_watched(&proxy, &db).await;
    a.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();
    let pid: i32 = one(&a, "SELECT pg_backend_pid()").await.unwrap().parse().unwrap();
    assert_eq!(one(&a, "SELECT count(*) FROM t").await.unwrap(), "1");
    // Drop the client: tokio-postgres sends Terminate and closes.
    drop(a);
    let _ = within(DEADLINE, "client A's connection to close", a_conn).await;

    assert_clean_after_vanished_client(&proxy, &su, &db, pid).await;
    proxy.assert_alive(&db).await;
}

/// Same, but the client's socket just goes away (no Terminate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_socket_closed_mid_transaction_rolls_back() {
    let db = fresh_db("f28raw");
    create_table(&db).await;
    let su = superuser("postgres").await;
    let mut cfg = trust_config();
    cfg.pool_size = 1;
    let proxy = TestProxy::start(cfg).await;

    let mut a = app_login(&proxy, &db).await;
    a.send(&query("BEGIN; INSERT INTO t VALUES (1)")).await;
    let msgs = a.until_ready().await;
    assert_eq!(rfq_status(&msgs), b'T', "{msgs:?}");
    let busy = backends(&su, &db).await;
    let pid = busy.iter().find(|b| b.in_xact).unwrap_or_else(|| panic!("no backend in a transaction: {busy:?}")).pid;
    drop(a);

    assert_clean_after_vanished_client(&proxy, &su, &db, pid).await;
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 29. Parse without Sync, then disconnect.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_without_sync_then_disconnect() {
    let db = fresh_db("f29");
    create_table(&db).await;
    let su = superuser("postgres").await;
    let mut cfg = trust_config();
    cfg.pool_size = 1;
    let proxy = TestProxy::start(cfg).await;

    // (a) Parse/Bind/Execute of an INSERT and a Flush, no Sync: the server
    // ran the INSERT in the implicit transaction and waits for the rest of
    // the batch.
    let mut a = app_login(&proxy, &db).await;
    let batch = [parse("", "INSERT INTO t VALUES (1)"), bind_execute(""), flush()].concat();
    a.send(&batch).await;
    for want in [b'1', b'2', b'C'] {
        match a.next().await {
            Next::Message(t, body) => {
                assert_eq!(t, want, "unexpected message {:?}: {:?}", t as char, raw::field(&body, b'M'))
            }
            Next::Closed => panic!("proxy closed the batch"),
        }
    }
    let waiting = wait_for("the server to sit in the client's open batch", || async {
        let b = backends(&su, &db).await;
        // "active" until a ReadyForQuery: PostgreSQL reports idle only at Sync.
        match b.iter().find(|b| b.in_xact && b.query.starts_with("INSERT")) {
            Some(x) => Ok(x.clone()),
            None => Err(format!("{b:?}")),
        }
    })
    .await;
    drop(a);

    // No server stays waiting on the vanished client, the pool of 1 serves
    // the next client, and the half-done batch was not committed.
    wait_no_busy_backend(&su, &db, 1).await;
    let b = within(DEADLINE, "next raw client's login (pool of 1)", app_login(&proxy, &db)).await;
    let mut b = b;
    b.send(&query("SELECT count(*) FROM t")).await;
    let msgs = b.until_ready().await;
    assert!(raw::first_error(&msgs).is_none(), "{msgs:?}");
    let count = msgs.iter().find_map(|m| match m {
        Next::Message(b'D', body) => Some(String::from_utf8_lossy(&body[6..]).into_owned()),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some("0"), "the INSERT of a batch without Sync was committed: {msgs:?}");
    assert_eq!(rfq_status(&msgs), b'I');
    drop(b);
    if let Some(x) = backends(&su, &db).await.iter().find(|x| x.pid == waiting.pid) {
        assert!(!x.in_xact && x.state == "idle", "old backend still busy: {x:?}");
    }

    // (b) A lone Parse, then the socket closes.
    let mut c = app_login(&proxy, &db).await;
    c.send(&parse("", "SELECT pg_sleep(0)")).await;
    drop(c);
    wait_no_busy_backend(&su, &db, 1).await;
    let d = within(DEADLINE, "client after a lone Parse", proxy.connect(&db)).await;
    assert_eq!(one(&d, "SELECT txid_current_if_assigned() IS NULL").await.unwrap(), "t");
    assert_eq!(one(&d, "SELECT count(*) FROM t").await.unwrap(), "0");
    assert!(server_conns(&su, &db).await <= 1);
    wait_pools_settled(&proxy, 1).await;
}

async fn server_conns(su: &Client, db: &str) -> usize {
    backends(su, db).await.len()
}

// ---------------------------------------------------------------------------
// 31. Cancel.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_only_its_own_query() {
    let db = fresh_db("f31");
    let su = superuser("postgres").await;
    let proxy = TestProxy::start(base_config()).await;
    let c1 = proxy.connect(&db).await;
    let c2 = proxy.connect(&db).await;
    let token = c1.cancel_token();

    let long = tokio::spawn(async move {
        let r = c1.simple_query("SELECT pg_sleep(30)").await.map(|_| ());
        (c1, r, Instant::now())
    });
    let short = tokio::spawn(async move {
        let started = Instant::now();
        let r = c2.simple_query("SELECT pg_sleep(4)").await.map(|_| ());
        (c2, r, started.elapsed())
    });
    wait_for("both pg_sleep queries to run", || async {
        let b = backends(&su, &db).await;
        let n = b.iter().filter(|b| b.state == "active" && b.query.starts_with("SELECT pg_sleep(")).count();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{b:?}"))
        }
    })
    .await;

    let sent = Instant::now();
    token.cancel_query(NoTls).await.expect("send CancelRequest");
    let (c1, r1, ended) = within(Duration::from_secs(5), "the cancelled query", long).await.unwrap();
    let e = r1.expect_err("pg_sleep(30) was not cancelled");
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    assert!(ended.duration_since(sent) < Duration::from_secs(3), "cancel took {:?}", ended.duration_since(sent));

    let (c2, r2, took) = within(Duration::from_secs(15), "the other query", short).await.unwrap();
    r2.expect("the query that was not cancelled failed");
    assert!(took >= Duration::from_millis(3900), "pg_sleep(4) ended early: {took:?}");

    // Both clients keep working.
    assert_eq!(one(&c1, "SELECT 1").await.unwrap(), "1");
    assert_eq!(one(&c2, "SELECT 2").await.unwrap(), "2");
}

/// 10 clients on a pool of 2 each run 10 short queries while 100 cancels
/// race with their queries and with the re-pooling of server connections:
/// each time any query completes (its server going back to the pool and on
/// to the next waiter), one cancel goes to one of clients 0..5, picked at
/// random (in turn would fall into step with the FIFO convoy of the pool
/// and never hit a running query).
/// Only those clients are ever cancelled: they may see 57014 and nothing
/// else; clients 5..10 must see no error at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_with_repooling_stay_precise() {
    const CLIENTS: usize = 10;
    const TARGETED: usize = 5;
    const ITERATIONS: usize = 10; // 10 clients * 10 queries = 100 completions = 100 cancels
    let db = fresh_db("f31race");
    let mut cfg = base_config();
    cfg.pool_size = 2;
    let proxy = TestProxy::start(cfg).await;

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(proxy.connect(&db).await);
    }
    let tokens: Vec<_> = clients.iter().map(|c| c.cancel_token()).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("cancel race: seed {seed}");
    let canceller = tokio::spawn(async move {
        let mut sent = [0usize; CLIENTS];
        let mut set = tokio::task::JoinSet::new();
        let mut rng = seed;
        while rx.recv().await.is_some() {
            // xorshift64
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng % TARGETED as u64) as usize;
            let t = tokens[i].clone();
            set.spawn(async move { t.cancel_query(NoTls).await });
            sent[i] += 1;
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().expect("CancelRequest sent");
        }
        sent
    });

    let mut workers = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let tx = tx.clone();
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for n in 0..ITERATIONS {
                let want = format!("{i}-{n}");
                match c.simple_query(&format!("SELECT pg_sleep(0.02), '{want}'")).await {
                    Ok(msgs) => {
                        let got = msgs.iter().find_map(|m| match m {
                            SimpleQueryMessage::Row(r) => r.get(1).map(str::to_owned),
                            _ => None,
                        });
                        assert_eq!(got.as_deref(), Some(want.as_str()), "client {i} got another answer");
                    }
                    Err(e) => errors.push((sqlstate(&e), e.to_string())),
                }
                tx.send(()).unwrap();
            }
            // The client survives its cancels.
            assert_eq!(one(&c, "SELECT 1").await.expect("client usable after cancels"), "1");
            errors
        }));
    }
    drop(tx);

    let mut hits = 0;
    let mut all_errors = Vec::new();
    for (i, w) in workers.into_iter().enumerate() {
        let errors = within(Duration::from_secs(60), "a worker", w).await.unwrap();
        if i < TARGETED {
            hits += errors.len();
        }
        all_errors.push(errors);
    }
    let sent = within(DEADLINE, "the canceller", canceller).await.unwrap();
    assert_eq!(sent.iter().sum::<usize>(), 100);

    for (i, errors) in all_errors.iter().enumerate() {
        if i < TARGETED {
            for (code, text) in errors {
                assert_eq!(
                    code.as_deref(),
                    Some("57014"),
                    "client {i} failed with something other than a cancel: {text}"
                );
            }
            assert!(errors.len() <= sent[i], "client {i}: {} cancelled queries for {} cancels", errors.len(), sent[i]);
        } else {
            assert!(errors.is_empty(), "client {i} was never cancelled but got {errors:?}");
        }
    }
    // The race is real: some cancels did land on running queries.
    assert!(hits > 0, "none of the 100 cancels reached a running query");
    eprintln!("cancel race: {hits} of 100 cancels interrupted a query");
    proxy.assert_alive(&db).await;
    wait_pools_settled(&proxy, 2).await;
}

// ---------------------------------------------------------------------------
// 32. Server connections terminated by PostgreSQL.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_terminated_next_query_succeeds() {
    let db = fresh_db("f32idle");
    let su = superuser("postgres").await;
    let mut cfg = base_config();
    cfg.pool_size = 1;
    let proxy = TestProxy::start(cfg).await;
    let c = proxy.connect(&db).await;
    let old: i32 = one(&c, "SELECT pg_backend_pid()").await.unwrap().parse().unwrap();
    // The server is back in the pool, idle.
    wait_pools_settled(&proxy, 1).await;

    let killed: bool = su
        .query_one(
            "SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND usename = 'app'",
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    wait_backend_gone(&su, &db, old).await;

    let new: i32 = within(DEADLINE, "query after the idle server died", one(&c, "SELECT pg_backend_pid()"))
        .await
        .expect("the next query fails after its idle server was terminated")
        .parse()
        .unwrap();
    assert_ne!(new, old);
    assert_eq!(one(&c, "SELECT 1").await.unwrap(), "1");
    assert!(server_conns(&su, &db).await <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_terminated_mid_query_fails_that_client_only() {
    let db = fresh_db("f32busy");
    let su = superuser("postgres").await;
    let mut cfg = base_config();
    cfg.pool_size = 1;
    let proxy = TestProxy::start(cfg).await;
    // Log in a bystander first (a login may need a server; the pool has one).
    let bystander = proxy.connect(&db).await;
    let (victim, victim_conn) = connect_watched(&proxy, &db).await;

    let running = tokio::spawn(async move {
        let r = victim.simple_query("SELECT pg_sleep(10)").await.map(|_| ());
        (victim, r)
    });
    let pid = wait_for("pg_sleep to run", || async {
        let b = backends(&su, &db).await;
        match b.iter().find(|b| b.state == "active" && b.query.starts_with("SELECT pg_sleep(10)")) {
            Some(x) => Ok(x.pid),
            None => Err(format!("{b:?}")),
        }
    })
    .await;
    let killed_at = Instant::now();
    su.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    let (victim, r) = within(Duration::from_secs(5), "the query on the terminated server", running).await.unwrap();
    let e = r.expect_err("query on a terminated server succeeded");
    assert!(killed_at.elapsed() < Duration::from_secs(5));
    eprintln!("mid-query termination: client got {e} (sqlstate {:?})", sqlstate(&e));
    // pgbalancer closes that client, as PostgreSQL would.
    let _ = within(DEADLINE, "the victim's connection to close", victim_conn).await;
    assert!(victim.is_closed());

    // Counts return to baseline; the pool of 1 serves the others.
    wait_backend_gone(&su, &db, pid).await;
    wait_pools_settled(&proxy, 1).await;
    assert_eq!(within(DEADLINE, "bystander query", one(&bystander, "SELECT 1")).await.unwrap(), "1");
    proxy.assert_alive(&db).await;
    assert!(server_conns(&su, &db).await <= 1);
    wait_pools_settled(&proxy, 1).await;
}

// ---------------------------------------------------------------------------
// 33. Server terminated inside a client's transaction.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_terminated_in_transaction_no_silent_retry() {
    let db = fresh_db("f33");
    create_table(&db).await;
    let su = superuser("postgres").await;
    let mut cfg = base_config();
    cfg.pool_size = 2;
    let proxy = TestProxy::start(cfg).await;
    let (c, c_conn) = connect_watched(&proxy, &db).await;
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();
    let pid: i32 = one(&c, "SELECT pg_backend_pid()").await.unwrap().parse().unwrap();

    su.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    wait_backend_gone(&su, &db, pid).await;

    let r = within(DEADLINE, "the statement after the server died", c.batch_execute("INSERT INTO t VALUES (2)")).await;
    assert!(r.is_err(), "a statement in a transaction whose server died succeeded (silently retried elsewhere)");
    let r = within(DEADLINE, "COMMIT after the server died", c.batch_execute("COMMIT")).await;
    assert!(r.is_err(), "COMMIT of a transaction whose server died succeeded");
    let _ = within(DEADLINE, "the client's connection to close", c_conn).await;

    assert_eq!(row_count(&db).await, 0, "rows of the lost transaction exist");
    proxy.assert_alive(&db).await;
    wait_pools_settled(&proxy, 2).await;
}

// ---------------------------------------------------------------------------
// 42. Pool exhaustion and query_wait_timeout; a storm; counters back to 0.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhausted_query_wait_timeout_then_storm() {
    let db = fresh_db("f42");
    let mut cfg = base_config();
    cfg.pool_size = 1;
    cfg.query_wait_timeout = Duration::from_secs(1);
    let proxy = TestProxy::start(cfg.clone()).await;

    // Both log in before A takes the only server (a login may need one).
    let a = proxy.connect(&db).await;
    let (b, b_conn) = connect_watched(&proxy, &db).await;
    a.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&a, "SELECT 1").await.unwrap(), "1");

    let started = Instant::now();
    let e = within(Duration::from_secs(10), "the waiting client", b.simple_query("SELECT 1"))
        .await
        .expect_err("a query got a server from an exhausted pool of 1");
    let waited = started.elapsed();
    let text = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string());
    assert!(text.contains("query_wait_timeout"), "error does not mention query_wait_timeout: {e}");
    assert!(waited >= Duration::from_millis(900), "gave up after {waited:?}, before query_wait_timeout");
    assert!(waited < Duration::from_secs(5), "query_wait_timeout of 1s took {waited:?}");
    let _ = within(DEADLINE, "the timed-out client's connection to end", b_conn).await;
    let pools = proxy.handle.shared().pools.all();
    assert_eq!(pools.len(), 1);
    assert!(pools[0].stats.wait_timeouts.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(pools[0].stats.waiting.load(std::sync::atomic::Ordering::Relaxed), 0);

    // A keeps its transaction and finishes it.
    assert_eq!(one(&a, "SELECT 2").await.unwrap(), "2");
    a.batch_execute("COMMIT").await.unwrap();

    // 40 clients, each 5 short queries, through the pool of 1 with a longer wait.
    cfg.query_wait_timeout = Duration::from_secs(30);
    proxy.handle.reload(cfg).expect("reload");
    let mut storm = Vec::new();
    for i in 0..40 {
        let conninfo = proxy.conninfo(&db);
        storm.push(tokio::spawn(async move {
            let (c, conn) =
                tokio_postgres::connect(&conninfo, NoTls).await.map_err(|e| format!("client {i} connect: {e}"))?;
            tokio::spawn(conn);
            for n in 0..5 {
                let got = one(&c, &format!("SELECT {i} * 100 + {n}"))
                    .await
                    .map_err(|e| format!("client {i} query {n}: {e}"))?;
                if got != (i * 100 + n).to_string() {
                    return Err(format!("client {i} query {n}: wrong answer {got}"));
                }
            }
            Ok::<(), String>(())
        }));
    }
    let mut failures = Vec::new();
    for s in storm {
        if let Err(e) = within(Duration::from_secs(60), "a storm client", s).await.unwrap() {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} of 40 storm clients failed: {failures:?}", failures.len());
    drop(a);
    let counts = wait_pools_settled(&proxy, 1).await;
    assert_eq!(counts.len(), 1);
    proxy.assert_alive(&db).await;
}

// ---------------------------------------------------------------------------
// 43. idle_transaction_timeout.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_timeout_disconnects_and_cleans() {
    let db = fresh_db("f43");
    create_table(&db).await;
    let su = superuser("postgres").await;
    let mut cfg = base_config();
    cfg.pool_size = 1;
    cfg.idle_transaction_timeout = Duration::from_secs(1);
    let proxy = TestProxy::start(cfg).await;

    // A long query inside a transaction does not trip the timeout, nor does
    // a quick succession of statements.
    let (c, c_conn) = connect_watched(&proxy, &db).await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SELECT pg_sleep(2)").await.expect("a 2 s query in a transaction tripped a 1 s idle timeout");
    c.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(row_count(&db).await, 1);

    // Idle inside a transaction: disconnected after about a second.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (2)").await.unwrap();
    let pid: i32 = one(&c, "SELECT pg_backend_pid()").await.unwrap().parse().unwrap();
    let idle_since = Instant::now();
    let ended =
        within(Duration::from_secs(10), "the idle-in-transaction client to be disconnected", c_conn).await.unwrap();
    let idle_for = idle_since.elapsed();
    assert!(idle_for >= Duration::from_millis(900), "disconnected after {idle_for:?}, before the 1 s timeout");
    let e = ended.expect_err("connection ended without an error");
    assert_eq!(sqlstate(&e).as_deref(), Some("25P03"), "{e}");
    assert!(c.is_closed());
    assert!(c.batch_execute("SELECT 1").await.is_err(), "a disconnected client could still query");

    // The server was cleaned: its transaction is gone, the row never committed.
    wait_for("the timed-out transaction's backend to be gone or idle", || async {
        let b = backends(&su, &db).await;
        match b.iter().find(|b| b.pid == pid) {
            Some(x) if x.in_xact || x.state != "idle" => Err(format!("{b:?}")),
            _ => Ok(()),
        }
    })
    .await;
    let next = within(DEADLINE, "next client (pool of 1)", proxy.connect(&db)).await;
    assert_eq!(one(&next, "SELECT txid_current_if_assigned() IS NULL").await.unwrap(), "t");
    assert_eq!(one(&next, "SELECT count(*) FROM t").await.unwrap(), "1");
    assert_eq!(row_count(&db).await, 1);
    assert!(server_conns(&su, &db).await <= 1);
    wait_pools_settled(&proxy, 1).await;
}

/// Terminate while the server waits for the client (discarding until Sync
/// after a failed Parse, or in COPY IN): PostgreSQL ends the session at
/// once, and so must pgbalancer — the server goes, the pool of 1 is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_while_server_waits_for_client_frees_the_server() {
    let db = fresh_db("termwait");
    create_table(&db).await;
    let mut cfg = trust_config();
    cfg.pool_size = 1;
    cfg.query_wait_timeout = Duration::from_secs(10);
    let proxy = TestProxy::start(cfg).await;

    // Failed Parse, no Sync, then Terminate.
    let mut a = app_login(&proxy, &db).await;
    let mut batch = parse("", "SELEC broken");
    batch.extend(common::raw::msg(b'X', b""));
    a.send(&batch).await;
    within(DEADLINE, "session ends", a.until_closed()).await;
    proxy.assert_alive(&db).await;

    // COPY IN started, then Terminate.
    let mut b = app_login(&proxy, &db).await;
    b.send(&query("COPY t FROM STDIN")).await;
    assert!(matches!(b.next().await, Next::Message(b'G', _)));
    b.send(&common::raw::msg(b'X', b"")).await;
    within(DEADLINE, "session ends", b.until_closed()).await;
    proxy.assert_alive(&db).await;
    assert_eq!(row_count(&db).await, 0);
}

/// Two first logins for the same new database at the same moment get the
/// same pool (a race once closed one of them under a client), and pools
/// for databases nobody uses are forgotten — their counters are not: the
/// process-wide totals never go down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_logins_share_a_pool_and_unused_pools_go() {
    let proxy = TestProxy::start(base_config()).await;
    for round in 0..30 {
        let db = format!("nx_{}_{round}", std::process::id());
        let attempts = futures_util::future::join_all((0..4).map(|_| proxy.try_connect(&db))).await;
        for r in attempts {
            let e = r.expect_err("the database does not exist");
            assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME), "{e}");
        }
    }
    let pools = &proxy.handle.shared().pools;
    let before = proxy.handle.snapshot().totals;
    assert!(before.connects >= 30 && before.connect_failures >= 30, "{before:?}");
    wait_for("unused pools forgotten", || async {
        if pools.is_empty() {
            Ok(())
        } else {
            Err(format!("{} pools", pools.len()))
        }
    })
    .await;
    let after = proxy.handle.snapshot().totals;
    assert!(
        after.connects >= before.connects && after.connect_failures >= before.connect_failures,
        "totals went down when pools were forgotten: {before:?} -> {after:?}"
    );
}

/// Raising pool_size by reload lets waiting clients in at once, first come
/// first served, without waiting for a connection to be returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_raising_pool_size_serves_waiters() {
    let db = fresh_db("grow");
    let mut cfg = base_config();
    cfg.pool_size = 1;
    cfg.query_wait_timeout = Duration::from_secs(60);
    let proxy = TestProxy::start(cfg.clone()).await;
    let holder = proxy.connect(&db).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let waiter = proxy.connect(&db).await;
    let waiting = tokio::spawn(async move { one(&waiter, "SELECT 42").await.unwrap() });
    let pools = proxy.handle.shared().pools.all();
    wait_for("a client waiting", || async {
        let waiting: usize = pools.iter().map(|p| p.stats.waiting.load(std::sync::atomic::Ordering::Relaxed)).sum();
        if waiting == 1 {
            Ok(())
        } else {
            Err(format!("{waiting} waiting"))
        }
    })
    .await;
    cfg.pool_size = 2;
    proxy.handle.reload(cfg).unwrap();
    let got = within(Duration::from_secs(5), "waiter served after reload", waiting).await.unwrap();
    assert_eq!(got, "42");
    holder.batch_execute("COMMIT").await.unwrap();
}
