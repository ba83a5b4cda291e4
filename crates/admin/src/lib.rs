//! The REST admin API (JWT-guarded) and Prometheus metrics.
//!
//! [`AdminServer`] serves `/api/v1/...` and `/metrics` with axum (on hyper)
//! next to the proxy; it reads the proxy's state through
//! [`pgbalancer_proxy::snapshot`] and asks the daemon to reload or stop by
//! sending a [`Command`] (the proxy's type, shared with the SQL admin
//! console): the daemon owns the proxy, its signal handling and its one
//! reload function. PAUSE/RESUME go to the proxy directly. [`AdminState`] is
//! shared by both: the JWT settings (swapped whole by a reload, so a rotated
//! secret or key applies at once), the HTTPS certificate and key when
//! `rest_api.ssl_cert`/`ssl_key` are set ([`tls`], swapped the same way),
//! and the reload counters. There are no globals.
//!
//! See `docs/rest-api.md` for endpoints, schemas and status codes.

pub mod auth;
pub mod error;
mod listener;
pub mod login;
pub mod metrics;
mod openapi;
mod server;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use pgbalancer_config::{ConfigError, RestApiConfig};

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
    /// HTTPS: the certificate and key in force (`None`: plain HTTP).
    tls: Arc<ArcSwapOption<rustls::ServerConfig>>,
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
            tls: Arc::new(ArcSwapOption::empty()),
        })
    }

    /// Reads `rest_api.ssl_cert` / `ssl_key` before the API starts: with
    /// both set it will serve HTTPS only. Errors name the key.
    pub fn load_tls(&self, r: &RestApiConfig, origin: &str) -> Result<(), ConfigError> {
        self.tls.store(tls::load(r, origin)?);
        Ok(())
    }

    /// A reload's certificate and key (from [`tls::load`]): new connections
    /// get them. HTTPS cannot be turned on or off without a restart: such a
    /// change is logged and ignored.
    pub fn set_tls(&self, new: Option<Arc<rustls::ServerConfig>>) {
        match (self.tls.load().is_some(), new) {
            (true, Some(c)) => {
                self.tls.store(Some(c));
                tracing::info!("admin API: certificate and key re-read (rest_api.ssl_cert, rest_api.ssl_key)");
            }
            (true, None) => tracing::warn!(
                "rest_api.ssl_cert/ssl_key removed: turning HTTPS off needs a restart; the admin API keeps serving HTTPS"
            ),
            (false, Some(_)) => tracing::warn!(
                "rest_api.ssl_cert/ssl_key set: turning HTTPS on needs a restart; the admin API keeps serving plain HTTP"
            ),
            (false, None) => {}
        }
    }

    /// Whether the API serves HTTPS.
    pub fn https(&self) -> bool {
        self.tls.load().is_some()
    }

    pub(crate) fn tls_config(&self) -> Arc<ArcSwapOption<rustls::ServerConfig>> {
        self.tls.clone()
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
