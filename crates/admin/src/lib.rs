//! The REST admin API (JWT-guarded) and Prometheus metrics.
//!
//! [`AdminServer`] serves `/api/v1/...` and `/metrics` with axum (on hyper)
//! next to the proxy; it reads the proxy's state through
//! [`pgbalancer_proxy::snapshot`] and asks the daemon to reload or stop by
//! sending a [`Command`] (the proxy's type, shared with the SQL admin
//! console): the daemon owns the proxy, its signal handling and its one
//! reload function. PAUSE/RESUME go to the proxy directly. [`AdminState`] is
//! shared by both: the JWT settings (swapped whole by a reload, so a rotated
//! secret or key applies at once) and the reload counters. There are no
//! globals.
//!
//! See `docs/rest-api.md` for endpoints, schemas and status codes.

pub mod auth;
pub mod error;
mod listener;
pub mod login;
pub mod metrics;
mod openapi;
mod server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

pub use auth::{AuthFailure, AuthSettings, FailureLimiter, Role};
pub use error::{AdminError, ProblemJson};
pub use openapi::openapi_document;
/// What the admin API (and the SQL admin console) ask the daemon to do, and
/// why a reload was rejected: one type, defined by the proxy.
pub use pgbalancer_proxy::control::{Command, ReloadError};
pub use server::{AdminServer, AUTH_FAILURE_LIMIT, AUTH_FAILURE_WINDOW};

/// State the daemon and the admin server share.
pub struct AdminState {
    started: Instant,
    auth: ArcSwap<AuthSettings>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
}

impl AdminState {
    /// `started`: when the daemon started (for uptime).
    pub fn new(auth: AuthSettings, started: Instant) -> Arc<AdminState> {
        Arc::new(AdminState {
            started,
            auth: ArcSwap::from_pointee(auth),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
        })
    }

    /// New JWT settings (a reload); requests after this use them.
    pub fn set_auth(&self, auth: AuthSettings) {
        self.auth.store(Arc::new(auth));
    }

    pub(crate) fn auth(&self) -> arc_swap::Guard<Arc<AuthSettings>> {
        self.auth.load()
    }

    /// The settings in force, to keep across an `.await`.
    pub(crate) fn auth_full(&self) -> Arc<AuthSettings> {
        self.auth.load_full()
    }

    /// Counts one reload, applied (`ok`) or rejected.
    pub fn record_reload(&self, ok: bool) {
        let c = if ok { &self.reloads } else { &self.reload_failures };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counters(&self) -> metrics::AdminCounters {
        metrics::AdminCounters {
            uptime_seconds: self.started.elapsed().as_secs(),
            reloads: self.reloads.load(Ordering::Relaxed),
            reload_failures: self.reload_failures.load(Ordering::Relaxed),
            api_auth_failures: self.auth_failures.load(Ordering::Relaxed),
        }
    }
}
