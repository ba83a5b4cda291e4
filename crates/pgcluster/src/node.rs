//! One PostgreSQL server: start, stop, promote, psql.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::ctx::Ctx;
use crate::util::run;
use crate::{Error, HOST, PG_CTL_TIMEOUT, SUPERUSER};

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
    pub(crate) ctx: Arc<Ctx>,
}

impl Node {
    pub(crate) fn new(ctx: &Arc<Ctx>, name: &str, port: u16) -> Node {
        Node {
            name: name.to_string(),
            host: HOST.to_string(),
            port,
            data_dir: ctx.dir.join(name),
            log_file: ctx.dir.join(format!("{name}.log")),
            ctx: ctx.clone(),
        }
    }

    /// The TCP port the node listens on (on [`HOST`]).
    pub fn port(&self) -> u16 {
        self.port
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

    /// Is a postmaster running for this data dir (`pg_ctl status`)? A frozen node counts as
    /// running.
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

    /// Stop the server (`-m fast`, falling back to `-m immediate`). No-op if not running. A
    /// frozen node is thawed first.
    pub fn stop(&self) -> Result<(), Error> {
        self.stop_mode("fast")
    }

    /// Stop the server with `pg_ctl stop -m immediate` (a crash, as far as the server's clients
    /// can tell). No-op if not running. A frozen node is thawed first.
    pub fn stop_immediate(&self) -> Result<(), Error> {
        self.stop_mode("immediate")
    }

    fn stop_mode(&self, mode: &str) -> Result<(), Error> {
        if !self.data_dir.join("postmaster.pid").exists() {
            return Ok(());
        }
        // A stopped process would not act on the shutdown signal until pg_ctl gave up.
        self.thaw()?;
        let mut cmd = self.pg_ctl();
        cmd.args(["stop", "-m", mode, "-w", "-t", "30"]);
        let first = run(cmd, &format!("pg_ctl stop -m {mode} ({})", self.name));
        if first.is_ok() || !self.is_running() {
            return Ok(());
        }
        let mut cmd = self.pg_ctl();
        cmd.args(["stop", "-m", "immediate", "-w", "-t", "30"]);
        run(cmd, &format!("pg_ctl stop -m immediate ({})", self.name))?;
        Ok(())
    }

    /// Restart the server (`pg_ctl restart -m fast`); starts it if it was stopped.
    pub fn restart(&self) -> Result<(), Error> {
        self.thaw()?;
        let mut cmd = self.pg_ctl();
        cmd.args(["restart", "-m", "fast", "-w", "-t", PG_CTL_TIMEOUT, "-l"]).arg(&self.log_file);
        run(cmd, &format!("pg_ctl restart ({})", self.name)).map_err(|e| self.with_log(e))?;
        Ok(())
    }

    /// Promote a replica to primary (`pg_ctl promote -w`): returns once it accepts writes.
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

    /// Run SQL as the superuser over TCP; see [`crate::Cluster::psql`].
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

    pub(crate) fn with_log(&self, e: Error) -> Error {
        match e {
            Error::Command { command, status, stderr } => Error::Command {
                command,
                status,
                stderr: format!("{stderr}\n--- last lines of {} ---\n{}", self.log_file.display(), self.log_tail(30)),
            },
            other => other,
        }
    }

    pub(crate) fn log_says_bind_failed(&self) -> bool {
        let tail = self.log_tail(30);
        tail.contains("could not bind") || tail.contains("could not create any TCP/IP sockets")
    }
}
