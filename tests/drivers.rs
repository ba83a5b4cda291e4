//! Protocol-level prepared statements in transaction mode, end to end with
//! real drivers: tokio-postgres here, psycopg 3 and asyncpg (from PyPI) in
//! `tests/drivers/*.py`.
//!
//! Every test runs more clients than the pool has servers (transaction mode,
//! `pool_size = 2`), so clients keep landing on servers other than the one
//! their statements were prepared on, and every answer is computed from the
//! query's parameters, so a statement mixed up with another gives a wrong
//! answer rather than passing unnoticed.
//!
//! `DRIVERS_DIRECT=1 cargo test --test drivers` points every client straight
//! at the cluster's primary instead of pgbalancer. A test that fails that way
//! too is wrong itself; one that fails only through pgbalancer found a bug.
//!
//! tokio-postgres numbers its statements per process (`s0`, `s1`, …), so its
//! clients never send the same name; psycopg numbers them per connection
//! (`_pg3_0` on every one) and asyncpg per process, so the psycopg script
//! and the asyncpg script's several processes make clients use the same
//! names for different queries.
//!
//! The Python drivers live in a venv at `<target dir>/pyenv`, built once (see
//! [`python`]). When PyPI cannot be reached the Python tests say so loudly on
//! stderr and pass; any other problem with the venv fails them.

mod common;

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient, Statement};

/// Server connections per pool: fewer than any test's clients.
const POOL_SIZE: u32 = 2;

fn direct() -> bool {
    std::env::var_os("DRIVERS_DIRECT").is_some_and(|v| v == "1")
}

/// Where the clients of one test connect: a pgbalancer of its own, or the
/// primary itself with `DRIVERS_DIRECT=1`.
struct Endpoint {
    host: String,
    port: u16,
    _proxy: Option<TestProxy>,
}

impl Endpoint {
    async fn start(configure: impl FnOnce(&mut pgbalancer_config::Config)) -> Endpoint {
        if direct() {
            let p = &cluster().primary;
            return Endpoint { host: p.host.clone(), port: p.port, _proxy: None };
        }
        let mut cfg = base_config();
        cfg.pool_size = POOL_SIZE;
        configure(&mut cfg);
        let proxy = TestProxy::start(cfg).await;
        Endpoint { host: "127.0.0.1".into(), port: proxy.port(), _proxy: Some(proxy) }
    }

    async fn connect(&self, db: &str) -> Client {
        let info = format!("host={} port={} user={APP_USER} password={APP_PASSWORD} dbname={db}", self.host, self.port);
        let (client, conn) = tokio_postgres::connect(&info, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

/// `Result` with the error as text that says which step failed.
type Checked<T> = Result<T, String>;

trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Checked<T>;
}

impl<T, E: std::error::Error> Context<T> for Result<T, E> {
    /// The error with its sources ("db error: ERROR: prepared statement …").
    fn ctx(self, what: impl FnOnce() -> String) -> Checked<T> {
        self.map_err(|e| {
            let mut text = format!("{}: {e}", what());
            let mut source = e.source();
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        })
    }
}

fn check<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: impl FnOnce() -> String) -> Checked<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{}: got {got:?}, want {want:?}", what()))
    }
}

/// Waits for every client task and fails with all their errors.
async fn join_clients<T>(tasks: Vec<tokio::task::JoinHandle<Checked<T>>>) -> Vec<T> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (n, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(Ok(v)) => ok.push(v),
            Ok(Err(e)) => errors.push(format!("client {n}: {e}")),
            Err(e) => errors.push(format!("client {n} panicked: {e}")),
        }
    }
    assert!(errors.is_empty(), "{} of the clients failed:\n{}", errors.len(), errors.join("\n"));
    ok
}

// ---------------------------------------------------------------------------
// tokio-postgres
// ---------------------------------------------------------------------------

/// The statements every tokio-postgres client prepares once and then runs
/// many times. `a = client * 1_000_000 + i` in table `t` encodes whose row
/// it is.
const MUL: &str = "SELECT $1::int4 * 1000 + $2::int4, pg_backend_pid()";
const CONCAT: &str = "SELECT $1::text || ':' || $2::int8::text, length($1::text)";
const SERIES: &str = "SELECT g, g * $2::int8 FROM generate_series(1, $1::int4) g";
const INSERT: &str = "INSERT INTO t (a) VALUES ($1)";
const COUNT: &str = "SELECT count(*), coalesce(sum(a % 1000000), 0)::int8 FROM t WHERE a / 1000000 = $1";
const FLOATS: &str = "SELECT $1::float8 / 4, $2::bool IS NOT TRUE";
const DIVIDE: &str = "SELECT 1 / $1::int4";

struct Prepared {
    mul: Statement,
    /// The same text as `mul`, prepared a second time (a second name).
    mul_again: Statement,
    concat: Statement,
    series: Statement,
    insert: Statement,
    count: Statement,
    floats: Statement,
    divide: Statement,
    /// A text only this client prepares.
    own: Statement,
}

impl Prepared {
    async fn new(c: &Client, client: i32) -> Checked<Prepared> {
        let prepare = |sql: String| async move { c.prepare(&sql).await.ctx(|| format!("prepare {sql}")) };
        Ok(Prepared {
            mul: prepare(MUL.into()).await?,
            mul_again: prepare(MUL.into()).await?,
            concat: prepare(CONCAT.into()).await?,
            series: prepare(SERIES.into()).await?,
            insert: prepare(INSERT.into()).await?,
            count: prepare(COUNT.into()).await?,
            floats: prepare(FLOATS.into()).await?,
            divide: prepare(DIVIDE.into()).await?,
            own: prepare(format!("SELECT $1::int8 + {client} /* client {client} */")).await?,
        })
    }
}

/// What one client has committed to `t`, and the servers it ran on.
#[derive(Default)]
struct ClientState {
    rows: i64,
    sum: i64,
    pids: HashSet<i32>,
    queries: usize,
}

/// One round of every prepared statement (plus unnamed and one-off ones),
/// on the client or inside a transaction; inserts one row.
async fn round(c: &impl GenericClient, p: &Prepared, client: i32, i: i32, st: &mut ClientState) -> Checked<()> {
    let at = |what: &str| format!("iteration {i}: {what}");
    for s in [&p.mul, &p.mul_again] {
        let r = c.query_one(s, &[&client, &i]).await.ctx(|| at("mul"))?;
        check(r.get::<_, i32>(0), client * 1000 + i, || at("mul"))?;
        st.pids.insert(r.get(1));
    }
    let r = c.query_one(&p.concat, &[&format!("c{client}"), &i64::from(i)]).await.ctx(|| at("concat"))?;
    check(
        (r.get::<_, String>(0), r.get::<_, i32>(1)),
        (format!("c{client}:{i}"), format!("c{client}").len() as i32),
        || at("concat"),
    )?;
    let n = i % 7 + 1;
    let rows = c.query(&p.series, &[&n, &i64::from(i)]).await.ctx(|| at("series"))?;
    let got: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    check(got, (1..=n).map(|g| (g, i64::from(g) * i64::from(i))).collect(), || at("series"))?;
    let r = c.query_one(&p.floats, &[&f64::from(i), &(i % 2 == 0)]).await.ctx(|| at("floats"))?;
    check((r.get::<_, f64>(0), r.get::<_, bool>(1)), (f64::from(i) / 4.0, i % 2 != 0), || at("floats"))?;
    let r = c.query_one(&p.own, &[&i64::from(i)]).await.ctx(|| at("own statement"))?;
    check(r.get::<_, i64>(0), i64::from(i + client), || at("own statement"))?;
    // Unnamed statement (Parse "" / Bind / Execute in one go).
    let r = c
        .query_typed_one("SELECT $1::int4 - $2::int4", &[(&i, Type::INT4), (&client, Type::INT4)])
        .await
        .ctx(|| at("unnamed"))?;
    check(r.get::<_, i32>(0), i - client, || at("unnamed"))?;
    // A one-off named statement: prepared, run, then closed by tokio-postgres.
    let r = c.query_one("SELECT $1::int4 * 3", &[&i]).await.ctx(|| at("one-off"))?;
    check(r.get::<_, i32>(0), i * 3, || at("one-off"))?;
    let a = client * 1_000_000 + i;
    check(c.execute(&p.insert, &[&a]).await.ctx(|| at("insert"))?, 1, || at("insert"))?;
    st.queries += 10;
    Ok(())
}

/// Checks (count, sum) of the client's rows in `t`.
async fn check_count(c: &impl GenericClient, p: &Prepared, client: i32, want: (i64, i64), what: &str) -> Checked<()> {
    let r = c.query_one(&p.count, &[&client]).await.ctx(|| format!("{what}: count"))?;
    check((r.get::<_, i64>(0), r.get::<_, i64>(1)), want, || format!("{what}: (count, sum) of own rows"))
}

/// One tokio-postgres client: prepares its statements once, then runs them
/// `iterations` times in and out of transactions, with every kind of
/// statement life event along the way.
async fn tokio_postgres_client(ep: Arc<Endpoint>, db: String, client: i32, iterations: i32) -> Checked<ClientState> {
    let mut c = ep.connect(&db).await;
    let mut p = Prepared::new(&c, client).await?;
    let mut st = ClientState::default();
    for i in 0..iterations {
        let at = |what: &str| format!("iteration {i}: {what}");
        if i % 3 == 0 {
            let tx = c.transaction().await.ctx(|| at("BEGIN"))?;
            round(&tx, &p, client, i, &mut st).await?;
            check_count(&tx, &p, client, (st.rows + 1, st.sum + i64::from(i)), &at("in transaction")).await?;
            tx.commit().await.ctx(|| at("COMMIT"))?;
        } else {
            round(&c, &p, client, i, &mut st).await?;
        }
        st.rows += 1;
        st.sum += i64::from(i);
        check_count(&c, &p, client, (st.rows, st.sum), &at("after insert")).await?;

        if i % 20 == 10 {
            // A transaction that inserts, sees its row, and rolls back.
            let tx = c.transaction().await.ctx(|| at("BEGIN"))?;
            let a = client * 1_000_000 + 999_999;
            check(tx.execute(&p.insert, &[&a]).await.ctx(|| at("insert to roll back"))?, 1, || at("insert"))?;
            check_count(&tx, &p, client, (st.rows + 1, st.sum + 999_999), &at("before rollback")).await?;
            tx.rollback().await.ctx(|| at("ROLLBACK"))?;
            check_count(&c, &p, client, (st.rows, st.sum), &at("after rollback")).await?;
        }
        if i % 25 == 24 {
            // Drop (Close) a statement and prepare the same text again.
            drop(std::mem::replace(&mut p.concat, c.prepare(CONCAT).await.ctx(|| at("re-prepare"))?));
            let r = c.query_one(&p.concat, &[&"again", &i64::from(i)]).await.ctx(|| at("re-prepared"))?;
            check(r.get::<_, String>(0), format!("again:{i}"), || at("re-prepared"))?;
            // And a fresh text, then drop it.
            let fresh = c.prepare(&format!("SELECT $1::int4 + {i} /* fresh */")).await.ctx(|| at("fresh"))?;
            let r = c.query_one(&fresh, &[&client]).await.ctx(|| at("fresh"))?;
            check(r.get::<_, i32>(0), client + i, || at("fresh"))?;
        }
        if i % 10 == 4 {
            // Pipelined: eight executions in flight on one connection.
            let args: Vec<i32> = (i..i + 8).collect();
            let (c, p) = (&c, &p);
            let futs = args.iter().map(|x| async move { c.query_one(&p.mul, &[&client, x]).await });
            let rows = futures_util::future::try_join_all(futs).await.ctx(|| at("pipelined"))?;
            for (x, r) in args.iter().zip(&rows) {
                check(r.get::<_, i32>(0), client * 1000 + x, || at("pipelined"))?;
            }
        }
        if i % 40 == 17 {
            // Errors from a prepared statement, in and out of a transaction;
            // the statement stays usable.
            let err = c.query_one(&p.divide, &[&0i32]).await.err();
            check(err.as_ref().and_then(|e| e.code()), Some(&SqlState::DIVISION_BY_ZERO), || at("1/0"))?;
            let tx = c.transaction().await.ctx(|| at("BEGIN"))?;
            let err = tx.query_one(&p.divide, &[&0i32]).await.err();
            check(err.as_ref().and_then(|e| e.code()), Some(&SqlState::DIVISION_BY_ZERO), || at("1/0 in tx"))?;
            tx.rollback().await.ctx(|| at("ROLLBACK"))?;
            let r = c.query_one(&p.divide, &[&1i32]).await.ctx(|| at("1/1 after errors"))?;
            check(r.get::<_, i32>(0), 1, || at("1/1"))?;
        }
        if i % 50 == 30 {
            // Prepared inside a transaction, used after COMMIT; prepared
            // inside one that rolls back (statements are not transactional).
            let tx = c.transaction().await.ctx(|| at("BEGIN"))?;
            let in_tx = tx.prepare("SELECT $1::int4 + 7 /* prepared in tx */").await.ctx(|| at("prepare in tx"))?;
            check(tx.query_one(&in_tx, &[&i]).await.ctx(|| at("in tx"))?.get::<_, i32>(0), i + 7, || at("in tx"))?;
            tx.commit().await.ctx(|| at("COMMIT"))?;
            let tx = c.transaction().await.ctx(|| at("BEGIN"))?;
            let rolled = tx.prepare("SELECT $1::int4 + 8 /* rolled back */").await.ctx(|| at("prepare"))?;
            tx.rollback().await.ctx(|| at("ROLLBACK"))?;
            for _ in 0..3 {
                let r = c.query_one(&in_tx, &[&i]).await.ctx(|| at("after COMMIT"))?;
                check(r.get::<_, i32>(0), i + 7, || at("statement prepared in a committed transaction"))?;
                let r = c.query_one(&rolled, &[&i]).await.ctx(|| at("after ROLLBACK"))?;
                check(r.get::<_, i32>(0), i + 8, || at("statement prepared in a rolled-back transaction"))?;
            }
        }
    }
    Ok(st)
}

async fn run_tokio_postgres_clients(ep: Endpoint, db: &str, clients: i32, iterations: i32) {
    create_table(db).await;
    let ep = Arc::new(ep);
    let started = Instant::now();
    let tasks: Vec<_> =
        (0..clients).map(|n| tokio::spawn(tokio_postgres_client(ep.clone(), db.to_owned(), n, iterations))).collect();
    let states = within(Duration::from_secs(120), "tokio-postgres clients", join_clients(tasks)).await;
    let rows: i64 = states.iter().map(|s| s.rows).sum();
    assert_eq!(row_count(db).await, rows, "rows in t");
    let queries: usize = states.iter().map(|s| s.queries).sum();
    let moved = states.iter().filter(|s| s.pids.len() > 1).count();
    let servers = states.iter().flat_map(|s| s.pids.iter()).collect::<HashSet<_>>().len();
    println!(
        "{clients} clients x {iterations} iterations, {queries} queries in {:?}; {moved} clients ran on more than one \
         server, {servers} servers in all",
        started.elapsed()
    );
}

/// Ten tokio-postgres clients on a pool of two: statements prepared once
/// and run 200 times each, in and out of transactions, pipelined, after
/// errors, re-prepared after Close, prepared inside transactions; unnamed
/// and one-off statements in between. Every answer and row count checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokio_postgres_prepared_statements_across_servers() {
    let db = fresh_db("drv_tpg");
    let ep = Endpoint::start(|_| {}).await;
    run_tokio_postgres_clients(ep, &db, 10, 200).await;
}

/// The same with fewer statements kept per server than each client has
/// (`max_prepared_statements: 3`): servers keep evicting statements that
/// clients still use.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokio_postgres_more_statements_than_servers_keep() {
    let db = fresh_db("drv_tpg_lru");
    let ep = Endpoint::start(|cfg| cfg.max_prepared_statements = 3).await;
    run_tokio_postgres_clients(ep, &db, 8, 60).await;
}

/// Forces, step by step, what the concurrent tests make likely: with a pool
/// of two, statements prepared while one server is held by another client
/// run on the other server, also after a Close and a new Parse; two clients
/// prepare the same text, a third another one, all on the same server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_run_on_a_server_they_were_not_prepared_on() {
    fn must<T>(r: Result<T, tokio_postgres::Error>, what: &str) -> T {
        r.ctx(|| what.to_owned()).unwrap_or_else(|e| panic!("{e}"))
    }
    /// BEGIN, and the pid of the server that gives the client.
    async fn begin(c: &Client) -> i32 {
        must(c.batch_execute("BEGIN").await, "BEGIN");
        must(c.query_one("SELECT pg_backend_pid()", &[]).await, "pid").get(0)
    }
    let db = fresh_db("drv_switch");
    let ep = Endpoint::start(|_| {}).await;
    let (a, b) = (ep.connect(&db).await, ep.connect(&db).await);
    let (c, d, e) = (ep.connect(&db).await, ep.connect(&db).await, ep.connect(&db).await);
    let same = "SELECT $1::int4 * 2 + 1, pg_backend_pid()";
    let other = "SELECT $1::text || '!', pg_backend_pid()";
    // A holds server 1, so C, D and E prepare on server 2.
    let server1 = begin(&a).await;
    let sc = must(c.prepare(same).await, "C prepares");
    let se = must(e.prepare(same).await, "E prepares the same text");
    let sd = must(d.prepare(other).await, "D prepares another text");
    // B takes server 2 and A gives server 1 back: C, D and E get server 1.
    let server2 = begin(&b).await;
    must(a.batch_execute("COMMIT").await, "A commits");
    if !direct() {
        assert_ne!(server1, server2, "a pool of two with both servers held");
    }
    for i in 0..3 {
        let r = must(c.query_one(&sc, &[&i]).await, "C executes on server 1");
        assert_eq!(r.get::<_, i32>(0), i * 2 + 1);
        let on_c: i32 = r.get(1);
        let r = must(e.query_one(&se, &[&(i + 10)]).await, "E executes on server 1");
        assert_eq!(r.get::<_, i32>(0), (i + 10) * 2 + 1);
        let on_e: i32 = r.get(1);
        let r = must(d.query_one(&sd, &[&format!("d{i}")]).await, "D executes on server 1");
        assert_eq!(r.get::<_, String>(0), format!("d{i}!"));
        let on_d: i32 = r.get(1);
        if !direct() {
            assert_eq!((on_c, on_d, on_e), (server1, server1, server1), "only server 1 was free");
        }
    }
    // C closes its statement and prepares the text again, on server 1 (B
    // still holds server 2); then A holds server 1 and B lets go of server
    // 2, so everyone runs on server 2.
    drop(sc);
    let sc = must(c.prepare(same).await, "C prepares again");
    let held = begin(&a).await;
    must(b.batch_execute("COMMIT").await, "B commits");
    if !direct() {
        assert_eq!(held, server1, "server 2 was held by B");
    }
    for i in 0..3 {
        let r = must(c.query_one(&sc, &[&i]).await, "C executes on server 2");
        assert_eq!(r.get::<_, i32>(0), i * 2 + 1);
        if !direct() {
            assert_eq!(r.get::<_, i32>(1), server2, "only server 2 was free");
        }
        let r = must(e.query_one(&se, &[&i]).await, "E executes on server 2");
        assert_eq!(r.get::<_, i32>(0), i * 2 + 1);
        let r = must(d.query_one(&sd, &[&"x"]).await, "D executes on server 2");
        assert_eq!(r.get::<_, String>(0), "x!");
    }
    must(a.batch_execute("COMMIT").await, "A commits");
}

// ---------------------------------------------------------------------------
// Python drivers
// ---------------------------------------------------------------------------

/// What pip installs into the venv; also the venv's completion marker.
const REQUIREMENTS: &[&str] = &["psycopg[binary]>=3.1,<4", "asyncpg>=0.29,<1"];
const MARKER: &str = "pgbalancer-requirements.txt";

enum Venv {
    /// The venv's interpreter.
    Ready(PathBuf),
    /// pip could not reach the package index; the tail of its output.
    PypiUnreachable(String),
}

/// The venv's python, building `<target dir>/pyenv` on first use.
///
/// Built once per process (`OnceLock`) and once per target dir: the venv is
/// made in `pyenv.tmp-<pid>`, the marker file (the requirement list) is
/// written last, and the directory is renamed to `pyenv` in one step. A
/// process that loses the race finds a complete `pyenv` and drops its own;
/// a `pyenv` with another requirement list is moved aside and replaced.
/// Only `bin/python` is used, which works from the renamed directory.
fn python() -> &'static Result<Venv, String> {
    static VENV: OnceLock<Result<Venv, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let started = Instant::now();
        let v = build_venv();
        if let Ok(Venv::Ready(p)) = &v {
            println!("python venv {} ready in {:?}", p.display(), started.elapsed());
        }
        v
    })
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("CARGO_TARGET_TMPDIR has a parent").to_owned()
}

fn venv_complete(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(MARKER)).is_ok_and(|m| m == REQUIREMENTS.join("\n"))
        && dir.join("bin/python").exists()
}

fn run_logged(cmd: &mut Command, what: &str) -> Result<std::process::Output, String> {
    cmd.stdin(std::process::Stdio::null())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .map_err(|e| format!("{what}: could not run {:?}: {e}", cmd.get_program()))
}

fn output_tail(out: &std::process::Output, lines: usize) -> String {
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// pip's words for "could not reach the index" (urllib3 and pip errors).
fn pip_network_error(out: &std::process::Output) -> bool {
    const MARKERS: &[&str] = &[
        "NewConnectionError",
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Name or service not known",
        "No address associated with hostname",
        "Network is unreachable",
        "Connection refused",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "Read timed out",
        "ProxyError",
        "Max retries exceeded",
        "connection broken by",
    ];
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    MARKERS.iter().any(|m| text.contains(m))
}

/// Removes `pyenv.tmp-<pid>`/`pyenv.old-<pid>` left by processes that died.
fn remove_abandoned(target: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(target) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix("pyenv.tmp-").or_else(|| name.strip_prefix("pyenv.old-"));
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn build_venv() -> Result<Venv, String> {
    let target = target_dir();
    let dir = target.join("pyenv");
    if venv_complete(&dir) {
        return Ok(Venv::Ready(dir.join("bin/python")));
    }
    remove_abandoned(&target);
    let tmp = target.join(format!("pyenv.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = run_logged(Command::new("python3").args(["-m", "venv"]).arg(&tmp), "python3 -m venv")?;
    if !out.status.success() {
        return Err(format!(
            "`python3 -m venv {}` failed (on Debian, scripts/setup installs python3-venv):\n{}",
            tmp.display(),
            output_tail(&out, 20)
        ));
    }
    let python = tmp.join("bin/python");
    let out = run_logged(
        Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--timeout", "30"])
            .args(["--retries", "2"])
            .args(REQUIREMENTS),
        "pip install",
    )?;
    if !out.status.success() {
        let tail = output_tail(&out, 8);
        let _ = std::fs::remove_dir_all(&tmp);
        return if pip_network_error(&out) {
            Ok(Venv::PypiUnreachable(tail))
        } else {
            Err(format!("pip install {} failed:\n{tail}", REQUIREMENTS.join(" ")))
        };
    }
    let out = run_logged(Command::new(&python).args(["-c", "import psycopg, asyncpg"]), "import check")?;
    if !out.status.success() {
        return Err(format!("the drivers pip installed do not import:\n{}", output_tail(&out, 20)));
    }
    std::fs::write(tmp.join(MARKER), REQUIREMENTS.join("\n")).map_err(|e| format!("write marker: {e}"))?;
    for _ in 0..2 {
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => return Ok(Venv::Ready(dir.join("bin/python"))),
            Err(_) if venv_complete(&dir) => {
                // Another process finished first; use its venv.
                let _ = std::fs::remove_dir_all(&tmp);
                return Ok(Venv::Ready(dir.join("bin/python")));
            }
            Err(_) if dir.exists() => {
                // An outdated or broken venv: move it aside, then retry.
                let old = target.join(format!("pyenv.old-{}", std::process::id()));
                if std::fs::rename(&dir, &old).is_ok() {
                    let _ = std::fs::remove_dir_all(&old);
                }
            }
            Err(e) => return Err(format!("rename {} to {}: {e}", tmp.display(), dir.display())),
        }
    }
    Err(format!("could not install the venv at {}", dir.display()))
}

/// Runs `tests/drivers/<script>` with the venv's python against a fresh
/// database behind a pool of two; fails with the script's output unless it
/// exits 0. Without PyPI: a loud note on stderr, and a pass.
async fn run_python_driver(script: &str, db_prefix: &str, env: &[(&str, &str)]) {
    let venv = tokio::task::spawn_blocking(python).await.expect("venv builder");
    let python = match venv {
        Ok(Venv::Ready(p)) => p,
        Ok(Venv::PypiUnreachable(tail)) => {
            // Straight to the process's stderr: libtest would hide eprintln!.
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n*** SKIPPED: PyPI unreachable, {script} not run (pip install {} failed): ***\n{tail}\n",
                REQUIREMENTS.join(" ")
            );
            return;
        }
        Err(e) => panic!("python venv for the driver tests: {e}"),
    };
    let db = fresh_db(db_prefix);
    let ep = Endpoint::start(|_| {}).await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers").join(script);
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(&path)
        .args(["--host", &ep.host, "--port", &ep.port.to_string(), "--user", APP_USER, "--password", APP_PASSWORD])
        .args(["--dbname", &db, "--clients", "8", "--iterations", "150"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for var in ["PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGSSLMODE", "PGGSSENCMODE", "PGTARGETSESSIONATTRS"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = within(Duration::from_secs(180), script, cmd.output()).await.expect("run the driver script");
    let (so, se) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} exited with {}\n--- stdout ---\n{so}\n--- stderr ---\n{se}", out.status);
    println!("{script} ({:?}):\n{so}{se}", started.elapsed());
}

/// psycopg 3 (binary wheel, its bundled libpq), every query prepared
/// (`prepare_threshold=0`), eight threads on a pool of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_binary_prepares_every_query() {
    run_python_driver("psycopg_test.py", "drv_psycopg", &[("PSYCOPG_IMPL", "binary")]).await;
}

/// The same with psycopg's pure-Python implementation over the system's
/// libpq (15 on Debian 12), which deallocates evicted statements with SQL
/// `DEALLOCATE name` instead of a protocol Close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_python_impl_system_libpq() {
    run_python_driver("psycopg_test.py", "drv_psycopg_py", &[("PSYCOPG_IMPL", "python")]).await;
}

/// asyncpg with its statement cache on, eight connections on a pool of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_statement_cache() {
    run_python_driver("asyncpg_test.py", "drv_asyncpg", &[]).await;
}
