//! pgbalancer's wire-protocol proxy: clients connect here as if to
//! PostgreSQL; their work runs on pooled server connections.
//!
//! Code map: [`protocol`] (framing and messages, no I/O), [`auth`] (SCRAM and
//! md5 primitives), [`server`] (one server connection), [`pool`] (pools and
//! checkout guards), [`client`] (startup, login and the session loop),
//! [`cancel`] (cancel key mapping), [`proxy`] (listeners, reload, shutdown).

pub mod auth;
pub mod cancel;
pub mod client;
pub mod clients;
pub mod control;
pub mod error;
pub mod hba;
pub mod measure;
pub mod pool;
pub mod prepared;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod snapshot;
pub mod sql;
pub mod stats;
pub mod tls;
pub mod topology;
mod users;

pub use error::Error;
pub use proxy::{ProxyHandle, StartError};

use std::sync::Arc;

use arc_swap::ArcSwap;
use pgbalancer_config::Config;
use tokio::sync::watch;

/// Where the process is in its life; sessions watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// Stop accepting; sessions end once their transaction is over.
    Draining,
    /// Close everything now.
    Stopping,
}

/// State shared by every task of one proxy. Passed around in an `Arc`;
/// there are no globals.
pub struct Shared {
    pub config: ArcSwap<Config>,
    /// Bumped after every store into `config`, so sessions can keep their
    /// own `Arc` of it and check one counter instead of loading it per use.
    pub(crate) config_generation: std::sync::atomic::AtomicU64,
    pub(crate) users: ArcSwap<users::UserDb>,
    pub pools: pool::Pools,
    /// The backends: roles, health, lag and the route table.
    pub topology: topology::Topology,
    /// Read/write classification with the configured function lists.
    pub classifier: ArcSwap<sql::classify::Classifier>,
    pub cancels: Arc<cancel::CancelRegistry>,
    /// Protocol-level prepared statements of transaction-mode clients.
    pub statements: prepared::Registry,
    pub stats: stats::Stats,
    /// Failed logins per client address (`auth_failure_limit`); kept
    /// across reloads.
    pub auth_failures: auth::limit::FailureLimiter,
    /// PgBouncer's PAUSE/RESUME.
    pub pause: control::Pause,
    /// Every logged-in client.
    pub clients: Arc<clients::Clients>,
    /// Bytes through the proxy.
    pub traffic: measure::Traffic,
    /// Where the admin API and the SQL console send reload/stop requests;
    /// set by the daemon (unset: those requests are refused).
    pub control: std::sync::OnceLock<tokio::sync::mpsc::Sender<control::Command>>,
    /// The client acceptor and backend TLS settings, swapped on reload.
    pub tls: tls::TlsState,
    pub(crate) phase: watch::Receiver<Phase>,
}
