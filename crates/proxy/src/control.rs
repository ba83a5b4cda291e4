//! Steering the daemon from inside: what the admin API and the SQL admin
//! console ask of it ([`Command`], handled by the daemon's main loop, which
//! owns the config file and the one reload function), and PgBouncer's
//! `PAUSE`/`RESUME` ([`Pause`]), which the proxy does itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgbalancer_config::{ConfigError, Problem};
use tokio::sync::{oneshot, watch};

use crate::pool::Pools;

/// A request to the daemon.
#[derive(Debug)]
pub enum Command {
    /// Re-read the config file (as SIGHUP does) and answer with the outcome.
    Reload(oneshot::Sender<Result<(), ReloadError>>),
    /// Graceful shutdown of the whole daemon (as the first SIGTERM does).
    Stop,
}

/// Why a reload was rejected (the old configuration stays).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct ReloadError {
    /// One line per problem, `FILE: key: message`, or the I/O error.
    pub error: String,
    /// Each problem with its key (empty when the file could not be read).
    pub problems: Vec<Problem>,
}

impl ReloadError {
    /// A reload error that is not about a key of the file.
    pub fn other(msg: impl Into<String>) -> ReloadError {
        ReloadError { error: msg.into(), problems: Vec::new() }
    }
}

impl From<&ConfigError> for ReloadError {
    fn from(e: &ConfigError) -> ReloadError {
        ReloadError { error: e.to_string(), problems: e.problems().to_vec() }
    }
}

/// PgBouncer's `PAUSE`: no client gets a server for a new transaction
/// until `RESUME`; transactions under way finish. Clients that hold a
/// server for their session (session mode, pinned clients) keep it.
#[derive(Debug)]
pub struct Pause {
    /// Read on every transaction: a plain atomic, no lock.
    flag: AtomicBool,
    /// Wakes the clients waiting for RESUME.
    paused: watch::Sender<bool>,
}

impl Default for Pause {
    fn default() -> Pause {
        Pause { flag: AtomicBool::new(false), paused: watch::channel(false).0 }
    }
}

/// How a `PAUSE` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paused {
    /// No client holds a server any more.
    Done,
    /// Paused, but clients still held servers when the wait ended.
    StillActive(usize),
}

impl Pause {
    pub fn is_paused(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Pauses, then waits up to `wait` until no server is checked out.
    pub async fn pause(&self, pools: &Pools, wait: Duration) -> Paused {
        self.flag.store(true, Ordering::Relaxed);
        if !self.paused.send_replace(true) {
            tracing::info!("paused: new transactions wait for RESUME");
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let active = checked_out(pools);
            if active == 0 {
                return Paused::Done;
            }
            if tokio::time::Instant::now() >= deadline {
                return Paused::StillActive(active);
            }
            // Servers come back at the end of transactions; look again soon.
            tokio::time::sleep(Duration::from_millis(20).min(deadline - tokio::time::Instant::now())).await;
        }
    }

    /// Resumes; returns whether it was paused.
    pub fn resume(&self) -> bool {
        self.flag.store(false, Ordering::Relaxed);
        let was = self.paused.send_replace(false);
        if was {
            tracing::info!("resumed");
        }
        was
    }

    /// Waits while paused (a client about to take a server).
    pub async fn wait_resumed(&self) {
        let mut rx = self.paused.subscribe();
        // Only errors when the sender is gone, which outlives every session.
        let _ = rx.wait_for(|p| !*p).await;
    }
}

/// Server connections checked out by clients, over all pools.
pub fn checked_out(pools: &Pools) -> usize {
    pools.all().iter().map(|p| p.stats.checked_out.load(Ordering::Relaxed)).sum()
}
