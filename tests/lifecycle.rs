//! The daemon's life (scenario 45 of test-scenarios.md), end to end: the real
//! `pgbalancer` binary as a subprocess with a YAML file, real clients, and
//! signals sent with kill(1). SIGTERM drains (waits for open transactions,
//! refuses new connections), a second SIGTERM stops at once, SIGHUP reloads
//! and keeps the old config when the new one is bad, shutdown does not hang
//! when backends are down, and `--check-config` reports OK or FILE: key.
//!
//! Waits are polls with deadlines (the process's exit status, a TCP connect,
//! the log file, pg_stat_activity), never fixed sleeps. Every daemon is
//! killed by a Drop guard, so none outlives its test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

const DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A pgbalancer.yml for `app` (SCRAM verifier) in front of `backend_port`,
/// plus `extra` top-level keys (one per line).
fn config_yaml(port: u16, backend_port: u16, extra: &str) -> String {
    format!(
        "listen_addresses: '127.0.0.1'\n\
         port: {port}\n\
         pool_mode: transaction\n\
         auth_type: scram-sha-256\n\
         users:\n  - name: app\n    password: '{verifier}'\n\
         backends:\n  - host: 127.0.0.1\n    port: {backend_port}\n    role: primary\n\
         workers: 2\n\
         {extra}\n",
        verifier = app_verifier(),
    )
}

/// One daemon process; killed (SIGKILL) and reaped on drop if still running.
struct Daemon {
    child: Child,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    status: Option<ExitStatus>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Writes `yaml` to a file and starts `pgbalancer --config FILE`, stderr
    /// (the log) to a file.
    fn spawn(port: u16, yaml: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("pgbalancer.yml");
        std::fs::write(&config, yaml).unwrap();
        let log = dir.path().join("pgbalancer.log");
        let child = spawn_daemon(&config, &log, &[]);
        Daemon { child, port, config, log, status: None, _dir: dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    fn conninfo(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={db} connect_timeout=10",
            self.port
        )
    }

    async fn try_connect(
        &self,
        db: &str,
    ) -> Result<(Client, JoinHandle<Result<(), tokio_postgres::Error>>), tokio_postgres::Error> {
        let (c, conn) = tokio_postgres::connect(&self.conninfo(db), NoTls).await?;
        Ok((c, tokio::spawn(conn)))
    }

    async fn connect(&self, db: &str) -> (Client, JoinHandle<Result<(), tokio_postgres::Error>>) {
        within(DEADLINE, "connect through the daemon", self.try_connect(db))
            .await
            .unwrap_or_else(|e| panic!("connect through the daemon: {e}\nlog:\n{}", self.log()))
    }

    /// Exit status if the process has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Polls until the process exits; panics after `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                return st;
            }
            if start.elapsed() > limit {
                panic!("pgbalancer still running {limit:?} later; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until a client's `SELECT 1` works through the daemon.
    async fn wait_ready(&mut self, db: &str) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                panic!("pgbalancer exited during startup ({st}); log:\n{}", self.log());
            }
            if let Ok(Ok((c, _))) = tokio::time::timeout(Duration::from_secs(5), self.try_connect(db)).await {
                if one(&c, "SELECT 1").await.ok().as_deref() == Some("1") {
                    return;
                }
            }
            if start.elapsed() > DEADLINE {
                panic!("pgbalancer not ready after {DEADLINE:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until the listening port refuses connections.
    async fn wait_refusing(&mut self) {
        let start = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
                return;
            }
            if start.elapsed() > DEADLINE {
                panic!("pgbalancer still accepts connections {DEADLINE:?} after SIGTERM; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the log until `count` lines contain `needle`; returns those lines.
    async fn wait_log(&mut self, needle: &str, count: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let lines: Vec<String> = self.log().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect();
            if lines.len() >= count {
                return lines;
            }
            if let Some(st) = self.exited() {
                panic!("pgbalancer exited ({st}) before logging {needle:?}; log:\n{}", self.log());
            }
            if start.elapsed() > DEADLINE {
                panic!("no {count} log lines with {needle:?} after {DEADLINE:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `app` backends on `db`.
async fn app_backends(su: &Client, db: &str) -> i64 {
    su.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = 'app' AND backend_type = 'client backend'",
        &[&db],
    )
    .await
    .unwrap()
    .get(0)
}

async fn wait_no_backends(su: &Client, db: &str) {
    let start = Instant::now();
    loop {
        let n = app_backends(su, db).await;
        if n == 0 {
            return;
        }
        if start.elapsed() > DEADLINE {
            panic!("{n} app backends on {db} still there {DEADLINE:?} after pgbalancer exited");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn primary_port() -> u16 {
    cluster().primary.port
}

// ---------------------------------------------------------------------------
// SIGTERM
// ---------------------------------------------------------------------------

/// First SIGTERM: no new connections, but a client in a transaction may
/// finish it; then its session ends and the daemon exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_open_transaction() {
    let db = fresh_db("l_term");
    create_table(&db).await;
    let port = free_port();
    let mut d = Daemon::spawn(port, &config_yaml(port, primary_port(), "shutdown_timeout: 20s"));
    d.wait_ready(&db).await;

    let (a, a_conn) = d.connect(&db).await;
    a.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();
    d.signal("TERM");
    let signalled = Instant::now();
    d.wait_refusing().await;
    let e = d.try_connect(&db).await.expect_err("a new client connected during shutdown");
    eprintln!("new client during drain: {e}");
    assert!(d.exited().is_none(), "pgbalancer exited with a transaction still open; log:\n{}", d.log());

    // The transaction goes on and commits.
    assert_eq!(one(&a, "SELECT count(*) FROM t").await.expect("query in the open transaction during drain"), "1");
    assert!(d.exited().is_none());
    a.batch_execute("COMMIT").await.expect("COMMIT during drain");

    // Then the session ends and the daemon exits cleanly, well within shutdown_timeout.
    let _ = within(DEADLINE, "the drained client's connection to end", a_conn).await;
    assert!(a.is_closed());
    let st = d.wait_exit(Duration::from_secs(15)).await;
    assert!(st.success(), "exit status {st}; log:\n{}", d.log());
    assert!(signalled.elapsed() < Duration::from_secs(15));
    assert_eq!(row_count(&db).await, 1, "the transaction committed during drain is missing");
    let su = superuser("postgres").await;
    wait_no_backends(&su, &db).await;
}

/// SIGTERM, then SIGTERM again: the daemon stops now, without waiting for
/// the open transaction (which is rolled back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_exits_fast() {
    let db = fresh_db("l_term2");
    create_table(&db).await;
    let port = free_port();
    let mut d = Daemon::spawn(port, &config_yaml(port, primary_port(), "shutdown_timeout: 60s"));
    d.wait_ready(&db).await;

    let (a, a_conn) = d.connect(&db).await;
    a.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();
    d.signal("TERM");
    // The first signal is being handled (so the second is not merged into it).
    d.wait_refusing().await;
    assert!(d.exited().is_none(), "pgbalancer exited with a transaction still open");
    let second = Instant::now();
    d.signal("TERM");
    let st = d.wait_exit(Duration::from_secs(5)).await;
    let took = second.elapsed();
    assert!(took < Duration::from_secs(5), "second SIGTERM took {took:?}");
    assert!(st.success(), "exit status {st}; log:\n{}", d.log());

    // The client lost its connection; its transaction did not commit.
    let _ = within(DEADLINE, "the client's connection to end", a_conn).await;
    assert!(a.batch_execute("COMMIT").await.is_err());
    let su = superuser("postgres").await;
    wait_no_backends(&su, &db).await;
    assert_eq!(row_count(&db).await, 0);
}

/// SIGINT behaves like SIGTERM: with no client, the daemon exits 0 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_without_clients_exits_promptly() {
    let db = fresh_db("l_int");
    let port = free_port();
    let mut d = Daemon::spawn(port, &config_yaml(port, primary_port(), "shutdown_timeout: 60s"));
    d.wait_ready(&db).await;
    d.signal("INT");
    let st = d.wait_exit(Duration::from_secs(5)).await;
    assert!(st.success(), "exit status {st}; log:\n{}", d.log());
    let su = superuser("postgres").await;
    wait_no_backends(&su, &db).await;
}

// ---------------------------------------------------------------------------
// SIGHUP
// ---------------------------------------------------------------------------

/// A bad file (unknown key; then broken YAML) is rejected with FILE: key in
/// the log and the old config stays in force; a good file is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_bad_config_keeps_old_one() {
    let db = fresh_db("l_hup");
    let port = free_port();
    let old = config_yaml(port, primary_port(), "pool_size: 5\nquery_wait_timeout: 20s");
    let mut d = Daemon::spawn(port, &old);
    d.wait_ready(&db).await;
    let file = d.config.display().to_string();
    let su = superuser("postgres").await;

    // Three clients logged in while the pool has one server connection.
    let (a, _a_conn) = d.connect(&db).await;
    let (b, _b_conn) = d.connect(&db).await;
    let (c, c_conn) = d.connect(&db).await;
    assert_eq!(app_backends(&su, &db).await, 1);

    // 1. Unknown key (next to changes that would be visible if applied).
    std::fs::write(&d.config, config_yaml(port, primary_port(), "pool_size: 1\nquery_wait_timeout: 1s\npool_sise: 1"))
        .unwrap();
    d.signal("HUP");
    let rejected = d.wait_log("reload rejected", 1).await;
    assert!(
        rejected.iter().any(|l| l.contains(&file) && l.contains("pool_sise")),
        "the rejection does not name {file} and the key pool_sise: {rejected:?}"
    );
    // Still pool_size 5: a second server connection is opened for B while A
    // holds the first in a transaction.
    a.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&a, "SELECT 1").await.unwrap(), "1");
    let r = within(Duration::from_secs(10), "B's query under the old pool_size", one(&b, "SELECT 2")).await;
    assert_eq!(r.expect("the rejected config (pool_size 1, query_wait_timeout 1s) took effect"), "2");
    a.batch_execute("COMMIT").await.unwrap();

    // 2. Not YAML at all.
    std::fs::write(&d.config, "pool_size: [1\nport: {{\n").unwrap();
    d.signal("HUP");
    let rejected = d.wait_log("reload rejected", 2).await;
    assert!(rejected[1..].iter().any(|l| l.contains(&file)), "the rejection does not name {file}: {rejected:?}");
    assert!(d.exited().is_none());
    let (n, _n_conn) = d.connect(&db).await;
    assert_eq!(one(&n, "SELECT 3").await.unwrap(), "3");
    assert_eq!(one(&c, "SELECT 4").await.unwrap(), "4");
    drop(n);

    // 3. A valid file: pool_size 2, query_wait_timeout 1s, applied.
    assert!(app_backends(&su, &db).await <= 2, "more server connections than the check below assumes");
    std::fs::write(&d.config, config_yaml(port, primary_port(), "pool_size: 2\nquery_wait_timeout: 1s")).unwrap();
    d.signal("HUP");
    d.wait_log("configuration reloaded", 1).await;
    assert_eq!(d.log().matches("reload rejected").count(), rejected.len(), "the valid file was rejected:\n{}", d.log());
    a.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&a, "SELECT 1").await.unwrap(), "1");
    b.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&b, "SELECT 1").await.unwrap(), "1");
    let started = Instant::now();
    let e = within(Duration::from_secs(10), "C's query on a full pool of 2", c.simple_query("SELECT 5"))
        .await
        .expect_err("C got a third server connection: the new pool_size 2 is not in force");
    let text = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string());
    assert!(text.contains("query_wait_timeout"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "the new query_wait_timeout of 1s is not in force");
    let _ = within(DEADLINE, "C's connection to end", c_conn).await;
    a.batch_execute("COMMIT").await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();
    let (n, _n_conn) = d.connect(&db).await;
    assert_eq!(one(&n, "SELECT 6").await.unwrap(), "6");
}

// ---------------------------------------------------------------------------
// Shutdown with backends down
// ---------------------------------------------------------------------------

/// Nothing listens at the backend's port: logins fail fast, and SIGTERM
/// ends the daemon promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_all_backends_down_does_not_hang() {
    let port = free_port();
    let dead = free_port();
    let mut d = Daemon::spawn(port, &config_yaml(port, dead, "shutdown_timeout: 30s\nserver_connect_timeout: 1s"));
    wait_listening(&mut d).await;

    let tried = Instant::now();
    let e = within(Duration::from_secs(10), "a login with the backend down", d.try_connect("postgres"))
        .await
        .expect_err("a client logged in with no backend");
    assert!(tried.elapsed() < Duration::from_secs(5), "the failed login took {:?}", tried.elapsed());
    eprintln!("login with the backend down: {e}");

    d.signal("TERM");
    let st = d.wait_exit(Duration::from_secs(5)).await;
    assert!(st.success(), "exit status {st}; log:\n{}", d.log());
}

/// Polls until the daemon listens (for configs where no SELECT can work).
async fn wait_listening(d: &mut Daemon) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", d.port)).await.is_err() {
        if let Some(st) = d.exited() {
            panic!("pgbalancer exited during startup ({st}); log:\n{}", d.log());
        }
        assert!(start.elapsed() < DEADLINE, "pgbalancer not listening; log:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The backend accepts TCP but never answers (a hung server): a client has
/// authenticated with pgbalancer and its login waits for a server
/// connection. It is in no transaction, so SIGTERM must not wait for it
/// (nor for server_connect_timeout) before exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_login_stuck_on_hung_backend() {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    let port = free_port();
    let mut d =
        Daemon::spawn(port, &config_yaml(port, hung_port, "shutdown_timeout: 20s\nserver_connect_timeout: 15s"));
    wait_listening(&mut d).await;

    let conninfo = d.conninfo("postgres");
    let client = tokio::spawn(async move { tokio_postgres::connect(&conninfo, NoTls).await.map(|_| ()) });
    // pgbalancer authenticated the client and now tries the backend.
    let (_server_side, _) = within(DEADLINE, "pgbalancer connecting to the backend", hung.accept()).await.unwrap();

    let signalled = Instant::now();
    d.signal("TERM");
    let st = d.wait_exit(Duration::from_secs(5)).await;
    assert!(st.success(), "exit status {st}; log:\n{}", d.log());
    assert!(signalled.elapsed() < Duration::from_secs(5));
    let r = within(DEADLINE, "the waiting client's login", client).await.unwrap();
    assert!(r.is_err(), "a login succeeded against a hung backend");
}

/// A connection that never sends its startup packet (a port probe, a
/// stalled client) is in no transaction: SIGTERM must not wait for it until
/// client_login_timeout or shutdown_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_connection_without_startup() {
    let db = fresh_db("l_stray");
    let port = free_port();
    let mut d =
        Daemon::spawn(port, &config_yaml(port, primary_port(), "shutdown_timeout: 20s\nclient_login_timeout: 60s"));
    d.wait_ready(&db).await;
    let _stray = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // A logged-in idle client, for comparison, is closed at once.
    let (idle, idle_conn) = d.connect(&db).await;
    assert_eq!(one(&idle, "SELECT 1").await.unwrap(), "1");

    let signalled = Instant::now();
    d.signal("TERM");
    let _ = within(Duration::from_secs(5), "the idle client's connection to be closed", idle_conn).await;
    let st = d.wait_exit(Duration::from_secs(5)).await;
    assert!(st.success(), "exit status {st}; log:\n{}", d.log());
    assert!(signalled.elapsed() < Duration::from_secs(5));
}

// ---------------------------------------------------------------------------
// --check-config
// ---------------------------------------------------------------------------

async fn check_config(path: &Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pgbalancer"))
        .arg("--check-config")
        .arg(path)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run pgbalancer --check-config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reports_ok_or_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yml");
    std::fs::write(&good, config_yaml(6432, 5432, "pool_size: 7")).unwrap();
    let out = check_config(&good).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "valid file rejected: {stdout}{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");

    // An unknown key nested in a list item.
    let bad = dir.path().join("bad.yml");
    let yaml = config_yaml(6432, 5432, "").replace("    role: primary\n", "    role: primary\n    prot: 1\n");
    std::fs::write(&bad, yaml).unwrap();
    let out = check_config(&bad).await;
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "invalid file accepted: {all}");
    assert!(!all.contains("OK"), "{all}");
    let file = bad.display().to_string();
    assert!(all.contains(&format!("{file}: backends[0].prot")), "no '{file}: backends[0].prot' in: {all}");

    // A bad value.
    let bad2 = dir.path().join("bad2.yml");
    std::fs::write(&bad2, config_yaml(6432, 5432, "pool_mode: sometimes").replace("pool_mode: transaction\n", ""))
        .unwrap();
    let out = check_config(&bad2).await;
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "invalid file accepted: {all}");
    assert!(all.contains(&format!("{}: pool_mode", bad2.display())), "{all}");

    // Not YAML.
    let bad3 = dir.path().join("bad3.yml");
    std::fs::write(&bad3, "port: [1\n").unwrap();
    let out = check_config(&bad3).await;
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "invalid file accepted: {all}");
    assert!(all.contains(&bad3.display().to_string()), "{all}");

    // A missing file.
    let out = check_config(&dir.path().join("missing.yml")).await;
    assert!(!out.status.success());
}

/// Warnings about the file itself (here: readable by others) name the
/// file once, like every other message: `FILE: message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_warnings_name_the_file_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("open.yml");
    std::fs::write(&f, config_yaml(6432, 5432, "")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check_config(&f).await;
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = f.display().to_string();
    let line =
        stderr.lines().find(|l| l.contains("file mode")).unwrap_or_else(|| panic!("no file-mode warning: {stderr}"));
    assert_eq!(line.matches(&file).count(), 1, "the file is named more than once: {line}");
}

/// The seed's logging keys: `log_connections`, `log_disconnections` and
/// `log_statement` each produce their lines; `log_format: json` makes every
/// line a JSON object; the password never appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_statement_logs_in_json() {
    let db = fresh_db("logs");
    let port = free_port();
    let yaml = config_yaml(
        port,
        primary_port(),
        "log_connections: true\nlog_disconnections: true\nlog_statement: true\nlog_format: json",
    );
    let mut d = Daemon::spawn(port, &yaml);
    d.wait_ready(&db).await;
    let (c, conn) = d.connect(&db).await;
    one(&c, "SELECT 'marker-4711'").await.expect("query");
    drop(c);
    let _ = conn.await;
    d.wait_log("disconnection", 2).await;
    let log = d.log();
    assert!(log.contains("connection received"), "{log}");
    assert!(log.contains("connection authorized"), "{log}");
    assert!(log.contains("marker-4711"), "log_statement line missing: {log}");
    assert!(!log.contains(APP_PASSWORD), "password in the log");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(line.starts_with('{') && line.ends_with('}'), "not a JSON line: {line}");
    }
}

/// The README's first command: `pgbalancer --demo` starts a primary and a
/// replica, serves pgbalancer, prints a psql line that works, and SIGINT
/// (Ctrl-C) stops it and removes the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_serves_and_cleans_up() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("demo.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgbalancer"))
        .args(["--demo", "--demo-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start --demo");
    // A failed assertion must not leave the demo (and its cluster) running.
    struct InterruptOnDrop(u32);
    impl Drop for InterruptOnDrop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-INT", &self.0.to_string()]).status();
        }
    }
    let _stop = InterruptOnDrop(child.id());
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let start = Instant::now();
    while !read_log().contains("is ready") {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("--demo exited ({st}): {}", read_log());
        }
        assert!(start.elapsed() < Duration::from_secs(90), "--demo not ready: {}", read_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let banner = read_log();
    let connect = banner.lines().find(|l| l.contains("connect:")).expect("connect line").to_owned();
    assert!(connect.contains(&format!("-p {port}")), "{connect}");
    let data_dir = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("primary:"))
        .and_then(|l| l.split('(').nth(1))
        .map(|l| PathBuf::from(l.trim_end_matches(')')))
        .expect("primary data dir in banner");
    assert!(data_dir.exists());

    // The printed line, run as printed (PGPASSWORD=... psql ...).
    let cmd = connect.split("connect:").nth(1).unwrap().trim().to_owned();
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        // Reads may go to the demo's replica; the hint sends this one to the primary.
        .arg(format!("{cmd} -X -At -c '/* pgbalancer: primary */ SELECT current_user, pg_is_in_recovery()'"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                cluster().bin("psql").parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app|f");

    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = within(Duration::from_secs(30), "--demo exit after SIGINT", async {
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "{status}");
    assert!(!data_dir.exists(), "cluster directory left behind: {}", data_dir.display());
}
