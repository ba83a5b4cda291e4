//! Throwaway local PostgreSQL 15 clusters: one primary plus N streaming replicas.
//!
//! Used by the daemon's `--demo` mode and by the end-to-end test suite.
//!
//! * Every node listens on `127.0.0.1` on a free port; unix sockets live in the cluster's temp dir.
//! * When the process runs as root, every PostgreSQL server binary runs as the `postgres` system
//!   user (`runuser -u postgres -- ...`) and the temp dir is owned by `postgres`.
//! * Cleanup: a watchdog child (`sh`) reads its stdin until EOF. The write end of that pipe lives
//!   inside the [`Cluster`]; when the process exits for any reason (even SIGKILL) the pipe closes
//!   and the watchdog stops every node with `pg_ctl stop -m immediate` and removes the temp dir.
//!   [`Cluster::stop`] and `Drop` do the same eagerly (with a fast shutdown first).
//!
//! ```no_run
//! let cluster = pgcluster::shared();
//! cluster.create_role("app", "secret").unwrap();
//! cluster.create_database("appdb", "app").unwrap();
//! let out = cluster.psql(&cluster.primary, "appdb", "SELECT 1").unwrap();
//! assert_eq!(out, "1");
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Default location of the PostgreSQL 15 binaries (Debian layout).
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Environment variable overriding [`ClusterOptions::bin_dir`]'s default.
pub const BIN_DIR_ENV: &str = "PGBALANCER_PG_BIN";
/// The superuser every cluster is initialised with.
pub const SUPERUSER: &str = "postgres";
/// Loopback address every node listens on.
pub const HOST: &str = "127.0.0.1";

/// How long to wait for replicas to stream / catch up.
const WAIT_DEADLINE: Duration = Duration::from_secs(30);
/// Poll interval for the waits above.
const POLL: Duration = Duration::from_millis(20);
/// `pg_ctl -t` seconds for start/stop/promote.
const PG_CTL_TIMEOUT: &str = "60";

/// Environment variables that could redirect our client/server binaries elsewhere.
const PG_ENV_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGDATA",
    "PGTARGETSESSIONATTRS",
    "PGAPPNAME",
    "PGCLIENTENCODING",
    "PGTZ",
];

/// Errors from starting or driving a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem or process-spawn operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL binary (or helper) exited unsuccessfully.
    #[error("{command} failed ({status}): {stderr}")]
    Command { command: String, status: String, stderr: String },
    /// A wait did not finish before its deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Anything else (missing binaries, missing `postgres` user, bad names, ...).
    #[error("{0}")]
    Other(String),
}

impl Error {
    fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}

/// How to build a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of streaming replicas (default 1).
    pub replicas: usize,
    /// Extra `postgresql.conf` lines, appended after ours (later lines win).
    pub extra_conf: Vec<String>,
    /// Directory holding `initdb`, `pg_ctl`, `postgres`, `psql`, ... Default:
    /// `$PGBALANCER_PG_BIN` or `/usr/lib/postgresql/15/bin`.
    pub bin_dir: PathBuf,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        let bin_dir = std::env::var_os(BIN_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR));
        ClusterOptions { replicas: 1, extra_conf: Vec::new(), bin_dir }
    }
}

/// Shared, immutable facts about how to run PostgreSQL binaries for one cluster.
#[derive(Debug)]
struct Ctx {
    bin_dir: PathBuf,
    /// `Some(runuser)` when we are root and must run server binaries as `postgres`.
    runuser: Option<PathBuf>,
    /// The cluster's temp dir (also the unix socket directory and cwd for commands).
    dir: PathBuf,
}

impl Ctx {
    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A command running PostgreSQL binary `name`, as `postgres` when we are root.
    fn server_cmd(&self, name: &str) -> Command {
        let mut cmd = match &self.runuser {
            Some(runuser) => {
                let mut c = Command::new(runuser);
                c.args(["-u", SUPERUSER, "--"]).arg(self.bin(name));
                c
            }
            None => Command::new(self.bin(name)),
        };
        self.prepare(&mut cmd);
        cmd
    }

    /// A client command (psql, pgbench, ...) run as the current user.
    fn client_cmd(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin(name));
        self.prepare(&mut cmd);
        cmd
    }

    fn prepare(&self, cmd: &mut Command) {
        for v in PG_ENV_VARS {
            cmd.env_remove(v);
        }
        cmd.env("PGCONNECT_TIMEOUT", "10");
        // The `postgres` user may not be able to enter our cwd (e.g. /root).
        cmd.current_dir(&self.dir);
        cmd.stdin(Stdio::null());
    }
}

/// One PostgreSQL server (primary or replica).
#[derive(Debug, Clone)]
pub struct Node {
    /// `primary`, `replica1`, `replica2`, ... (also its `cluster_name` and, for replicas, its
    /// `application_name` in `pg_stat_replication` and its replication slot name).
    pub name: String,
    /// Always `127.0.0.1`.
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    log_file: PathBuf,
    ctx: Arc<Ctx>,
}

impl Node {
    fn new(ctx: &Arc<Ctx>, name: &str, port: u16) -> Node {
        Node {
            name: name.to_string(),
            host: HOST.to_string(),
            port,
            data_dir: ctx.dir.join(name),
            log_file: ctx.dir.join(format!("{name}.log")),
            ctx: ctx.clone(),
        }
    }

    /// The server log (`pg_ctl -l`); lives in the cluster temp dir beside the data dir.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Last `lines` lines of the server log (empty if unreadable).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log_file).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = self.ctx.server_cmd("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir);
        cmd
    }

    /// Is a postmaster running for this data dir (`pg_ctl status`)?
    pub fn is_running(&self) -> bool {
        if !self.data_dir.join("postmaster.pid").exists() {
            return false;
        }
        let mut cmd = self.pg_ctl();
        cmd.arg("status");
        matches!(cmd.output(), Ok(o) if o.status.success())
    }

    /// Start the server and wait until it accepts connections. No-op if already running.
    pub fn start(&self) -> Result<(), Error> {
        if self.is_running() {
            return Ok(());
        }
        let mut cmd = self.pg_ctl();
        cmd.args(["start", "-w", "-t", PG_CTL_TIMEOUT, "-l"]).arg(&self.log_file);
        run(cmd, &format!("pg_ctl start ({})", self.name)).map_err(|e| self.with_log(e))?;
        Ok(())
    }

    /// Stop the server (`-m fast`, falling back to `-m immediate`). No-op if not running.
    pub fn stop(&self) -> Result<(), Error> {
        if !self.data_dir.join("postmaster.pid").exists() {
            return Ok(());
        }
        let mut cmd = self.pg_ctl();
        cmd.args(["stop", "-m", "fast", "-w", "-t", "30"]);
        let fast = run(cmd, &format!("pg_ctl stop -m fast ({})", self.name));
        if fast.is_ok() || !self.is_running() {
            return Ok(());
        }
        let mut cmd = self.pg_ctl();
        cmd.args(["stop", "-m", "immediate", "-w", "-t", "30"]);
        run(cmd, &format!("pg_ctl stop -m immediate ({})", self.name))?;
        Ok(())
    }

    /// Restart the server (`pg_ctl restart -m fast`); starts it if it was stopped.
    pub fn restart(&self) -> Result<(), Error> {
        let mut cmd = self.pg_ctl();
        cmd.args(["restart", "-m", "fast", "-w", "-t", PG_CTL_TIMEOUT, "-l"]).arg(&self.log_file);
        run(cmd, &format!("pg_ctl restart ({})", self.name)).map_err(|e| self.with_log(e))?;
        Ok(())
    }

    /// Promote a replica to primary (`pg_ctl promote -w`).
    pub fn promote(&self) -> Result<(), Error> {
        let mut cmd = self.pg_ctl();
        cmd.args(["promote", "-w", "-t", PG_CTL_TIMEOUT]);
        run(cmd, &format!("pg_ctl promote ({})", self.name)).map_err(|e| self.with_log(e))?;
        Ok(())
    }

    /// PID of the postmaster: first line of `data_dir/postmaster.pid` (None if absent).
    /// Does not check that the process is still alive.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// `host=127.0.0.1 port=N user=U dbname=D`
    pub fn conninfo(&self, user: &str, db: &str) -> String {
        format!("host={} port={} user={} dbname={}", self.host, self.port, user, db)
    }

    /// Run SQL as the superuser over TCP; see [`Cluster::psql`].
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, Error> {
        let mut cmd = self.ctx.client_cmd("psql");
        cmd.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db, "-c", sql]);
        let out = run(cmd, &format!("psql on {} (db {db})", self.name))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn with_log(&self, e: Error) -> Error {
        match e {
            Error::Command { command, status, stderr } => Error::Command {
                command,
                status,
                stderr: format!("{stderr}\n--- last lines of {} ---\n{}", self.log_file.display(), self.log_tail(30)),
            },
            other => other,
        }
    }

    fn log_says_bind_failed(&self) -> bool {
        let tail = self.log_tail(30);
        tail.contains("could not bind") || tail.contains("could not create any TCP/IP sockets")
    }
}

/// The watchdog child process and the write end of its stdin.
#[derive(Debug)]
struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

const WATCHDOG_SCRIPT: &str = r#"
trap '' INT HUP TERM QUIT PIPE
cat >/dev/null 2>&1
pgctl() {
  if [ -n "$PGCLUSTER_RUNUSER" ]; then
    "$PGCLUSTER_RUNUSER" -u postgres -- "$PGCLUSTER_PGCTL" "$@"
  else
    "$PGCLUSTER_PGCTL" "$@"
  fi
}
for d in "$@"; do
  if [ -f "$d/postmaster.pid" ]; then
    pid=$(head -n 1 "$d/postmaster.pid" 2>/dev/null)
    pgctl stop -D "$d" -m immediate -w -t 15 >/dev/null 2>&1 || {
      [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    }
  fi
done
rm -rf "$PGCLUSTER_DIR"
"#;

impl Watchdog {
    fn spawn(ctx: &Ctx, data_dirs: &[PathBuf]) -> Result<Watchdog, Error> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("pgcluster-watchdog")
            .args(data_dirs)
            .env("PGCLUSTER_DIR", &ctx.dir)
            .env("PGCLUSTER_PGCTL", ctx.bin("pg_ctl"))
            .env("PGCLUSTER_RUNUSER", ctx.runuser.as_deref().unwrap_or(Path::new("")))
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a terminal's Ctrl-C must not kill the watchdog before it cleans up.
            .process_group(0);
        for v in PG_ENV_VARS {
            cmd.env_remove(v);
        }
        let mut child = cmd.spawn().map_err(|e| Error::io("spawning the cleanup watchdog (sh)", e))?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    /// Close the pipe and wait for the watchdog to finish cleaning up.
    fn finish(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A running primary plus streaming replicas in a temp dir.
#[derive(Debug)]
pub struct Cluster {
    pub primary: Node,
    pub replicas: Vec<Node>,
    ctx: Arc<Ctx>,
    /// Serialises role/database administration from this process.
    admin_lock: Mutex<()>,
    watchdog: Option<Watchdog>,
    tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    /// initdb a primary, start it, create `opts.replicas` replicas with
    /// `pg_basebackup -R -X stream -c fast` (each with its own physical replication slot),
    /// start them and wait until every replica is streaming.
    pub fn start(opts: ClusterOptions) -> Result<Cluster, Error> {
        for bin in ["initdb", "pg_ctl", "postgres", "pg_basebackup", "psql"] {
            let p = opts.bin_dir.join(bin);
            if !p.is_file() {
                return Err(Error::Other(format!(
                    "PostgreSQL binary {} not found (install postgresql-15, or set {BIN_DIR_ENV})",
                    p.display()
                )));
            }
        }
        let root = effective_uid()? == 0;
        let (runuser, owner) = if root { (Some(find_runuser()), Some(postgres_ids()?)) } else { (None, None) };

        // As root use /tmp: $TMPDIR may not be reachable by `postgres`.
        let base = if root { PathBuf::from("/tmp") } else { std::env::temp_dir() };
        let tmp = tempfile::Builder::new()
            .prefix("pgcluster-")
            .tempdir_in(&base)
            .map_err(|e| Error::io(format!("creating temp dir in {}", base.display()), e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(tmp.path(), Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("chown {} to postgres", tmp.path().display()), e))?;
        }
        let ctx = Arc::new(Ctx { bin_dir: opts.bin_dir.clone(), runuser, dir: tmp.path().to_path_buf() });

        let primary = Node::new(&ctx, "primary", free_port()?);
        let replica_names: Vec<String> = (1..=opts.replicas).map(|i| format!("replica{i}")).collect();
        let mut dirs = vec![primary.data_dir.clone()];
        dirs.extend(replica_names.iter().map(|n| ctx.dir.join(n)));
        let watchdog = Watchdog::spawn(&ctx, &dirs)?;

        // From here on, dropping `cluster` (e.g. on an early error return) cleans up.
        let mut cluster = Cluster {
            primary,
            replicas: Vec::new(),
            ctx: ctx.clone(),
            admin_lock: Mutex::new(()),
            watchdog: Some(watchdog),
            tmp: Some(tmp),
        };

        // Primary.
        let mut cmd = ctx.server_cmd("initdb");
        cmd.arg("-D").arg(&cluster.primary.data_dir).args([
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ]);
        run(cmd, "initdb")?;
        append_file(&cluster.primary.data_dir.join("postgresql.conf"), &base_conf(&ctx.dir, &opts.extra_conf))?;
        write_file(&cluster.primary.data_dir.join("pg_hba.conf"), HBA_CONF)?;
        start_new_node(&mut cluster.primary)?;
        cluster.psql(&cluster.primary, "postgres", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;

        // Replicas.
        for name in &replica_names {
            let mut node = Node::new(&ctx, name, free_port()?);
            let mut cmd = ctx.server_cmd("pg_basebackup");
            cmd.arg("-D")
                .arg(&node.data_dir)
                .args(["-h", HOST, "-p"])
                .arg(cluster.primary.port.to_string())
                .args(["-U", SUPERUSER, "-R", "-X", "stream", "-c", "fast", "-N", "-C", "-S"])
                .arg(name);
            run(cmd, &format!("pg_basebackup ({name})"))?;
            cluster.replicas.push(node.clone());
            start_new_node(&mut node)?;
            // The port may have changed on a bind retry.
            *cluster.replicas.last_mut().expect("just pushed") = node;
        }
        for node in &cluster.replicas {
            cluster.wait_streaming(node)?;
        }
        Ok(cluster)
    }

    /// Run `sql` with psql as the superuser over TCP against `node`
    /// (`-X -q -At -v ON_ERROR_STOP=1 -c sql`). Returns trimmed stdout; the error carries stderr.
    pub fn psql(&self, node: &Node, db: &str, sql: &str) -> Result<String, Error> {
        node.psql(db, sql)
    }

    /// The superuser: `postgres`.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// Path of a PostgreSQL binary (`psql`, `pgbench`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.ctx.bin(name)
    }

    /// The cluster's temp dir (data dirs, logs, unix sockets).
    pub fn dir(&self) -> &Path {
        &self.ctx.dir
    }

    /// Unix socket directory of every node (same as [`Cluster::dir`]).
    pub fn socket_dir(&self) -> &Path {
        &self.ctx.dir
    }

    /// Primary first, then replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }

    /// `CREATE ROLE name LOGIN PASSWORD 'password'` (SCRAM) on the primary; if the role exists,
    /// `ALTER ROLE` sets LOGIN and the password instead. Safe to call concurrently.
    pub fn create_role(&self, name: &str, password: &str) -> Result<(), Error> {
        let _g = self.admin_lock.lock().unwrap_or_else(|e| e.into_inner());
        let tag = "$pgcluster_role$";
        if name.contains(tag) || password.contains(tag) {
            return Err(Error::Other(format!("role name/password must not contain {tag}")));
        }
        let n = quote_literal(name);
        let p = quote_literal(password);
        let sql = format!(
            "SET password_encryption = 'scram-sha-256';\n\
             SELECT pg_advisory_xact_lock(7071234501);\n\
             DO {tag}BEGIN\n\
               IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {n}) THEN\n\
                 EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', {n}, {p});\n\
               ELSE\n\
                 EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', {n}, {p});\n\
               END IF;\n\
             END{tag};"
        );
        self.psql(&self.primary, "postgres", &sql)?;
        Ok(())
    }

    /// `CREATE DATABASE name OWNER owner` on the primary; if it exists, `ALTER DATABASE ... OWNER TO`.
    pub fn create_database(&self, name: &str, owner: &str) -> Result<(), Error> {
        let _g = self.admin_lock.lock().unwrap_or_else(|e| e.into_inner());
        let exists_sql = format!("SELECT count(*) FROM pg_database WHERE datname = {}", quote_literal(name));
        let alter = format!("ALTER DATABASE {} OWNER TO {}", quote_ident(name), quote_ident(owner));
        if self.psql(&self.primary, "postgres", &exists_sql)? != "0" {
            self.psql(&self.primary, "postgres", &alter)?;
            return Ok(());
        }
        let create = format!("CREATE DATABASE {} OWNER {}", quote_ident(name), quote_ident(owner));
        match self.psql(&self.primary, "postgres", &create) {
            Ok(_) => Ok(()),
            // Created concurrently by another process.
            Err(Error::Command { ref stderr, .. }) if stderr.contains("already exists") => {
                self.psql(&self.primary, "postgres", &alter)?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Wait (up to 30 s) until every running, still-in-recovery replica has replayed the
    /// primary's `pg_current_wal_insert_lsn()` as of this call (the insert position, not
    /// the write position: with `synchronous_commit=off` a commit record can still sit in WAL
    /// buffers, before the write position). Stopped replicas and promoted ones are
    /// skipped.
    pub fn wait_replicas_caught_up(&self) -> Result<(), Error> {
        let lsn = self.psql(&self.primary, "postgres", "SELECT pg_current_wal_insert_lsn()")?;
        let deadline = Instant::now() + WAIT_DEADLINE;
        let sql = format!("SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn, false)");
        for node in &self.replicas {
            if !node.data_dir.join("postmaster.pid").exists() {
                continue;
            }
            loop {
                let last = match node.psql("postgres", &sql) {
                    Ok(out) if out == "f|t" || out == "f|f" => break, // promoted
                    Ok(out) if out == "t|t" => break,
                    Ok(out) => out,
                    Err(e) => e.to_string(),
                };
                if Instant::now() >= deadline {
                    return Err(Error::Timeout(format!(
                        "{} did not replay primary LSN {lsn} within {WAIT_DEADLINE:?} (last: {last})",
                        node.name
                    )));
                }
                std::thread::sleep(POLL);
            }
        }
        Ok(())
    }

    /// Wait until `replica` shows up as streaming in the primary's `pg_stat_replication`.
    fn wait_streaming(&self, replica: &Node) -> Result<(), Error> {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = {} AND state = 'streaming'",
            quote_literal(&replica.name)
        );
        let deadline = Instant::now() + WAIT_DEADLINE;
        loop {
            let last = match self.psql(&self.primary, "postgres", &sql) {
                Ok(out) if out != "0" => return Ok(()),
                Ok(out) => out,
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "{} not streaming after {WAIT_DEADLINE:?} (last: {last})\n--- {} log ---\n{}",
                    replica.name,
                    replica.name,
                    replica.log_tail(30)
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stop every node (fast, then immediate) and remove the temp dir. Idempotent; also run by
    /// `Drop`.
    pub fn stop(&mut self) {
        std::thread::scope(|s| {
            for node in self.nodes() {
                s.spawn(move || {
                    let _ = node.stop();
                });
            }
        });
        if let Some(mut w) = self.watchdog.take() {
            w.finish();
        }
        if let Some(tmp) = self.tmp.take() {
            let _ = tmp.close();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The process-wide cluster (default options), started on first use. Its `Drop` never runs; the
/// watchdog tears it down when the process exits.
///
/// # Panics
/// With the startup error if the cluster cannot start (every later call panics the same way).
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match SHARED.get_or_init(|| Cluster::start(ClusterOptions::default()).map_err(|e| e.to_string())) {
        Ok(c) => c,
        Err(e) => panic!("pgcluster: could not start the shared PostgreSQL cluster: {e}"),
    }
}

const HBA_CONF: &str = "\
# written by pgcluster
local all all trust
host replication all 127.0.0.1/32 trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
";

fn base_conf(dir: &Path, extra: &[String]) -> String {
    let mut s = format!(
        "\n# --- pgcluster ---\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{}'\n\
         cluster_name = 'primary'\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         max_replication_slots = 10\n\
         hot_standby = on\n\
         hot_standby_feedback = on\n\
         max_connections = 300\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         shared_buffers = 64MB\n\
         password_encryption = 'scram-sha-256'\n\
         log_min_messages = warning\n\
         logging_collector = off\n\
         shared_preload_libraries = 'pg_stat_statements'\n",
        dir.display().to_string().replace('\'', "''")
    );
    for line in extra {
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// Write the node's port (and name) into postgresql.conf and start it, retrying with a new port
/// if the one we picked was taken in the meantime.
fn start_new_node(node: &mut Node) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        append_file(
            &node.data_dir.join("postgresql.conf"),
            &format!("port = {}\ncluster_name = {}\n", node.port, quote_literal(&node.name)),
        )?;
        match node.start() {
            Ok(()) => return Ok(()),
            Err(_) if attempt < 4 && node.log_says_bind_failed() && !node.is_running() => {
                node.port = free_port()?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Run a command to completion; non-zero exit becomes [`Error::Command`].
fn run(mut cmd: Command, what: &str) -> Result<Output, Error> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::io(format!("running {what} ({:?})", cmd.get_program()), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(Error::Command { command: what.to_string(), status: out.status.to_string(), stderr })
    }
}

fn append_file(path: &Path, text: &str) -> Result<(), Error> {
    let mut f =
        OpenOptions::new().append(true).open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    f.write_all(text.as_bytes()).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Overwrite an existing file in place (keeps its owner and mode).
fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    f.write_all(text.as_bytes()).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind((HOST, 0)).map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
    let port = l.local_addr().map_err(|e| Error::io("reading local address", e))?.port();
    Ok(port)
}

/// Effective uid from /proc/self/status (falls back to `id -u`).
fn effective_uid() -> Result<u32, Error> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            // Uid: real effective saved fs
            if let Some(euid) = line.split_whitespace().nth(2).and_then(|s| s.parse().ok()) {
                return Ok(euid);
            }
        }
    }
    let mut cmd = Command::new("id");
    cmd.arg("-u");
    let out = run(cmd, "id -u")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| Error::Other("cannot determine effective uid".into()))
}

/// uid and gid of the `postgres` system user.
fn postgres_ids() -> Result<(u32, u32), Error> {
    let id = |flag: &str| -> Result<u32, Error> {
        let mut cmd = Command::new("id");
        cmd.args([flag, SUPERUSER]);
        let out = run(cmd, &format!("id {flag} postgres")).map_err(|e| {
            Error::Other(format!(
                "running as root, PostgreSQL must run as the `postgres` system user, which is missing ({e})"
            ))
        })?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| Error::Other(format!("unexpected output of id {flag} postgres")))
    };
    Ok((id("-u")?, id("-g")?))
}

fn find_runuser() -> PathBuf {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser", "/bin/runuser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("runuser"))
}

/// SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn euid_readable() {
        effective_uid().unwrap();
    }

    #[test]
    fn default_options() {
        let o = ClusterOptions::default();
        assert_eq!(o.replicas, 1);
        assert!(o.extra_conf.is_empty());
    }

    #[test]
    fn conf_has_extra_lines_last() {
        let c = base_conf(Path::new("/tmp/x"), &["work_mem = '8MB'".into()]);
        assert!(c.contains("unix_socket_directories = '/tmp/x'"));
        assert!(c.trim_end().ends_with("work_mem = '8MB'"));
    }
}
