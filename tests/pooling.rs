//! Pooling end to end: real clients (psql, pgbench, tokio-postgres) through
//! pgbalancer against real PostgreSQL, in transaction and session mode.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_scram_select() {
    let db = fresh_db("psql");
    let proxy = TestProxy::start(base_config()).await;
    let out = psql(&proxy, &db, &["-c", "SELECT current_user || '@' || current_database()"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("app@{db}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_both_ways() {
    let db = fresh_db("copy");
    let proxy = TestProxy::start(base_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let output = dir.path().join("out.csv");
    let rows: String = (1..=5000).map(|i| format!("{i},row {i}\n")).collect();
    std::fs::write(&input, &rows).unwrap();
    let copy_in = format!("\\copy t FROM '{}' WITH (FORMAT csv)", input.display());
    let copy_out = format!("\\copy (SELECT * FROM t ORDER BY a) TO '{}' WITH (FORMAT csv)", output.display());
    let out = psql(
        &proxy,
        &db,
        &[
            "-c",
            "CREATE TABLE t (a int PRIMARY KEY, b text)",
            "-c",
            &copy_in,
            "-c",
            &copy_out,
            "-c",
            "SELECT count(*), sum(a) FROM t",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "5000|12502500");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), rows);
    // A COPY that fails half way (duplicate key) leaves the client usable.
    let out = psql(&proxy, &db, &["-c", &copy_in]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("duplicate key"), "{}", stderr(&out));
    let out = psql(&proxy, &db, &["-c", "SELECT count(*) FROM t"]).await;
    assert_eq!(stdout(&out), "5000");
}

/// Polls PostgreSQL's count of `app` connections to `db` until told to
/// stop; returns the highest count seen.
fn watch_server_connections(db: String) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<i64>) {
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::task::spawn_blocking(move || {
        let mut max = 0;
        loop {
            max = max.max(server_connections(&db));
            if stop_rx.try_recv().is_ok() {
                return max;
            }
        }
    });
    (stop_tx, handle)
}

async fn pgbench(proxy: &TestProxy, db: &str, args: &[&str]) -> std::process::Output {
    let mut a: Vec<String> =
        vec!["-h".into(), "127.0.0.1".into(), "-p".into(), proxy.port().to_string(), "-U".into(), APP_USER.into()];
    a.extend(args.iter().map(|s| s.to_string()));
    a.push(db.into());
    run_client("pgbench", &a).await
}

/// Runs pgbench `args` through a proxy with a pool of 10 while watching
/// PostgreSQL's own count of server connections; asserts zero failed
/// transactions and never more than 10 server connections.
async fn pgbench_run(mode: pgbalancer_config::PoolMode, args: &[&str]) {
    pgbench_pool(mode, 10, &[args]).await;
}

/// Runs the pgbench invocations `runs` at once through one proxy with a
/// pool of `pool` (after `pgbench -i`), watching PostgreSQL's own count of
/// server connections: every run has zero failed transactions and the
/// pool is never exceeded.
async fn pgbench_pool(mode: pgbalancer_config::PoolMode, pool: u32, runs: &[&[&str]]) {
    let db = fresh_db("bench");
    let mut cfg = base_config();
    cfg.pool_mode = mode;
    cfg.pool_size = pool;
    let proxy = TestProxy::start(cfg).await;
    let init = pgbench(&proxy, &db, &["-i", "-s", "1", "-q"]).await;
    assert!(init.status.success(), "pgbench -i: {}", stderr(&init));
    let (stop, watcher) = watch_server_connections(db.clone());
    let outputs = futures_util::future::join_all(runs.iter().map(|args| pgbench(&proxy, &db, args))).await;
    let _ = stop.send(());
    let max = watcher.await.unwrap();
    for (args, run) in runs.iter().zip(&outputs) {
        let out = stdout(run);
        assert!(run.status.success(), "pgbench {args:?} ({mode:?}): {}\n{out}", stderr(run));
        assert!(out.contains("number of failed transactions: 0 (0.000%)"), "{out}");
        let expected: usize =
            args.windows(2).filter(|w| w[0] == "-c" || w[0] == "-t").map(|w| w[1].parse::<usize>().unwrap()).product();
        assert!(out.contains(&format!("number of transactions actually processed: {expected}/{expected}")), "{out}");
    }
    assert!(max <= pool as i64, "{max} server connections for a pool of {pool} ({mode:?} {runs:?})");
    assert!(max >= 1, "the watcher saw no server connection at all");
}

use pgbalancer_config::PoolMode::{Session, Transaction};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_transaction_mode_simple() {
    pgbench_run(Transaction, &["-c", "50", "-j", "2", "-t", "20", "-M", "simple"]).await;
    pgbench_run(Transaction, &["-S", "-c", "50", "-j", "2", "-t", "40", "-M", "simple"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_transaction_mode_extended() {
    pgbench_run(Transaction, &["-c", "50", "-j", "2", "-t", "20", "-M", "extended"]).await;
    pgbench_run(Transaction, &["-S", "-c", "50", "-j", "2", "-t", "40", "-M", "extended"]).await;
}

/// `-M prepared` in transaction mode: 50 clients share 5 server
/// connections, so nearly every transaction lands on a server where the
/// client never prepared its statements (pgbench names them P_0, P_1 …
/// in every client). TPC-B runs one client per thread: pgbench 15
/// prepares with a blocking `PQprepare`, so a client waiting for a server
/// would stall its thread's other clients, which hold the servers inside
/// their transactions (true of any transaction pooler).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_transaction_mode_prepared() {
    pgbench_pool(Transaction, 5, &[&["-S", "-c", "50", "-j", "2", "-t", "40", "-M", "prepared"]]).await;
    pgbench_pool(Transaction, 5, &[&["-c", "50", "-j", "50", "-t", "10", "-M", "prepared"]]).await;
}

/// Two pgbench processes with different scripts at once, both `-M
/// prepared`: their statement P_0 is a different query in each, on the
/// same 5 server connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_two_scripts_prepared_share_a_pool() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.sql");
    let b = dir.path().join("b.sql");
    std::fs::write(&a, "\\set aid random(1, 100000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n")
        .unwrap();
    std::fs::write(
        &b,
        "\\set tid random(1, 10)\nSELECT tbalance, bid FROM pgbench_tellers WHERE tid = :tid;\n\
         SELECT count(*) FROM pgbench_accounts WHERE bid = 1 AND aid < :tid;\n",
    )
    .unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    pgbench_pool(
        Transaction,
        5,
        &[
            &["-f", a, "-c", "25", "-j", "1", "-t", "40", "-M", "prepared"],
            &["-f", b, "-c", "25", "-j", "1", "-t", "40", "-M", "prepared"],
        ],
    )
    .await;
}

/// Session mode: each client holds a server for its whole session, so 50
/// clients on a pool of 10 take turns. pgbench connects and (with
/// `-M prepared`) prepares with blocking libpq calls, so a client waiting
/// for a server would stall every other client of its thread — with any
/// pooler. One thread per client (`-j 50`) keeps the test about pgbalancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_session_mode_all_protocols() {
    for m in ["simple", "extended", "prepared"] {
        pgbench_run(Session, &["-c", "50", "-j", "50", "-t", "10", "-M", m]).await;
        pgbench_run(Session, &["-S", "-C", "-c", "50", "-j", "50", "-t", "10", "-M", m]).await;
    }
}

/// Scenario 48: -S with 100 clients on a pool of 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_100_clients_pool_10() {
    pgbench_run(Transaction, &["-S", "-c", "100", "-j", "2", "-t", "20", "-M", "extended"]).await;
}

/// A client pipelining many queries with large answers (reading while it
/// writes, as libpq's pipeline mode does) gets every answer: ~14 MB of
/// queries and ~12 MB of rows cross pgbalancer in both directions at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_pipeline_with_large_answers_does_not_deadlock() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = fresh_db("pipeline");
    let mut cfg = base_config();
    cfg.auth_type = pgbalancer_config::AuthType::Trust;
    let proxy = TestProxy::start(cfg).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    const QUERIES: usize = 4000;
    let writer = tokio::spawn(async move {
        wr.write_all(&common::raw::startup(&[("user", "postgres"), ("database", &db)])).await.unwrap();
        let padding = "-".repeat(2000);
        let mut batch = Vec::new();
        for i in 0..QUERIES {
            batch.extend(common::raw::query(&format!("SELECT {i}, repeat('x', 3000) /* {padding} */")));
        }
        wr.write_all(&batch).await.unwrap();
        wr
    });
    let reader = async {
        let mut ready = 0;
        let mut buf = bytes::BytesMut::new();
        while ready < QUERIES + 1 {
            if rd.read_buf(&mut buf).await.unwrap() == 0 {
                panic!("closed after {ready} ReadyForQuery");
            }
            while buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() < len + 1 {
                    break;
                }
                let msg = buf.split_to(len + 1);
                assert_ne!(msg[0], b'E', "error: {:?}", String::from_utf8_lossy(&msg));
                if msg[0] == b'Z' {
                    ready += 1;
                }
            }
        }
        ready
    };
    let ready = tokio::time::timeout(std::time::Duration::from_secs(60), reader).await.expect("pipeline deadlocked");
    assert_eq!(ready, QUERIES + 1);
    writer.await.unwrap();
}

/// One write holding a query with a ~40 MB answer and then an ~8 MB query:
/// while pgbalancer writes the second, the server is busy sending the
/// first answer. Buffered output is forwarded as it comes, so neither side
/// waits on the other (a fixed buffer cap once deadlocked here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answer_while_large_query_is_written() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = fresh_db("bigpipe");
    let proxy = TestProxy::start(common::trust_config()).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(&common::raw::startup(&[("user", "postgres"), ("database", &db)])).await.unwrap();
        let mut batch = common::raw::query("SELECT repeat('x', 1000000) FROM generate_series(1, 40)");
        batch.extend(common::raw::query(&format!("SELECT length('{}')", "y".repeat(8 << 20))));
        wr.write_all(&batch).await.unwrap();
        wr
    });
    let reader = async {
        let (mut ready, mut rows, mut total) = (0, 0, 0usize);
        let mut buf = bytes::BytesMut::new();
        while ready < 3 {
            let n = rd.read_buf(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {ready} ReadyForQuery");
            total += n;
            while buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() < len + 1 {
                    buf.reserve(len + 1 - buf.len());
                    break;
                }
                let msg = buf.split_to(len + 1);
                assert_ne!(msg[0], b'E', "error: {:?}", String::from_utf8_lossy(&msg));
                match msg[0] {
                    b'Z' => ready += 1,
                    b'D' => rows += 1,
                    _ => {}
                }
            }
        }
        (rows, total)
    };
    let (rows, total) = tokio::time::timeout(std::time::Duration::from_secs(90), reader).await.expect("deadlocked");
    assert_eq!(rows, 41);
    assert!(total > 40_000_000);
    writer.await.unwrap();
}
