//! A primary plus streaming replicas in a temp dir: start, administration, teardown.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::ctx::Ctx;
use crate::util::{
    append_file, effective_uid, find_runuser, free_port, postgres_ids, quote_ident, quote_literal, run, write_file,
};
use crate::watchdog::Watchdog;
use crate::{Error, Node, BIN_DIR_ENV, DEFAULT_BIN_DIR, HOST, POLL, SUPERUSER, WAIT_DEADLINE};

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
    pub fn wait_streaming(&self, replica: &Node) -> Result<(), Error> {
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

    /// Stop every node (thawed first, then fast, then immediate) and remove the temp dir.
    /// Idempotent; also run by `Drop`.
    pub fn stop(&mut self) {
        std::thread::scope(|s| {
            for node in self.nodes() {
                s.spawn(move || {
                    let _ = node.thaw();
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

const HBA_CONF: &str = "\
# written by pgcluster
local all all trust
host replication all 127.0.0.1/32 trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
";

pub(crate) fn base_conf(dir: &Path, extra: &[String]) -> String {
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
         min_wal_size = 32MB\n\
         max_wal_size = 128MB\n\
         max_slot_wal_keep_size = 512MB\n\
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

#[cfg(test)]
mod tests {
    use super::*;

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
