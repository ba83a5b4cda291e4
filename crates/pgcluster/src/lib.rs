//! Throwaway local PostgreSQL 15 clusters: one primary plus N streaming replicas.
//!
//! Used by the daemon's `--demo` mode and by the end-to-end test suite.
//!
//! * Every node listens on `127.0.0.1` on a free port; unix sockets live in the cluster's temp dir.
//! * When the process runs as root, every PostgreSQL server binary runs as the `postgres` system
//!   user (`runuser -u postgres -- ...`) and the temp dir is owned by `postgres`.
//! * Cleanup: a watchdog child (`sh`) reads its stdin until EOF. The write end of that pipe lives
//!   inside the [`Cluster`]; when the process exits for any reason (even SIGKILL) the pipe closes
//!   and the watchdog thaws and stops every node with `pg_ctl stop -m immediate` and removes the
//!   temp dir. [`Cluster::stop`] and `Drop` do the same eagerly (with a fast shutdown first).
//! * Faults for failover tests: [`Node::freeze`] / [`Node::thaw`] (SIGSTOP/SIGCONT of the whole
//!   process tree), [`Node::pause_replay`] / [`Node::resume_replay`], [`Node::stop`],
//!   [`Node::promote`]; waits on WAL positions: [`Cluster::wait_caught_up`],
//!   [`Node::wait_replayed`].
//!
//! Modules: `cluster` (start, administration, teardown), `node` (one server: pg_ctl, psql),
//! `replication` (roles, LSNs, replay pause, catch-up waits), `freeze` (process-tree signals),
//! `watchdog` (cleanup when the owner dies), `ctx` (how binaries are run), `util`.
//!
//! ```no_run
//! let cluster = pgcluster::shared();
//! cluster.create_role("app", "secret").unwrap();
//! cluster.create_database("appdb", "app").unwrap();
//! let out = cluster.psql(&cluster.primary, "appdb", "SELECT 1").unwrap();
//! assert_eq!(out, "1");
//! ```

use std::sync::OnceLock;
use std::time::Duration;

mod cluster;
mod ctx;
mod freeze;
mod node;
mod replication;
mod util;
mod watchdog;

pub use cluster::{Cluster, ClusterOptions};
pub use node::Node;
pub use util::{quote_ident, quote_literal};

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
