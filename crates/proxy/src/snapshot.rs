//! A point-in-time copy of what the proxy is doing, for the admin API and
//! metrics: plain data, no serde (the admin crate decides the JSON shape).
//!
//! Every number is read without blocking the proxy: the process counters
//! are atomics, and each pool's lock is taken for one `(open, idle)` read.
//! The numbers of different pools are not taken at one instant, so sums may
//! be off by a connection that moved while the snapshot was taken.

use std::sync::atomic::Ordering;

use pgbalancer_config::{BackendRole, PoolMode};

use crate::{Phase, ProxyHandle, Shared};

/// What the proxy is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: Phase,
    pub pool_mode: PoolMode,
    /// `pool_size` of the current config (per pool).
    pub pool_size: usize,
    /// The configured backends, in config order; a pool's `backend` indexes here.
    pub backends: Vec<BackendInfo>,
    /// Every pool, sorted by (database, user, backend).
    pub pools: Vec<PoolSnapshot>,
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    pub host: String,
    pub port: u16,
    pub role: BackendRole,
    pub weight: u32,
}

/// One pool: (database, user, backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub database: String,
    pub user: String,
    /// Index into [`Snapshot::backends`] when the pool was created.
    pub backend: usize,
    pub host: String,
    pub port: u16,
    /// Server connections checked out by clients.
    pub active: usize,
    /// Server connections idle in the pool.
    pub idle: usize,
    /// Places taken by connections being opened (open − idle − active).
    pub connecting: usize,
    /// Clients waiting for a server connection.
    pub waiting: usize,
    /// Server connections opened (attempts), ever.
    pub connects: u64,
    pub connect_failures: u64,
    /// Clients that gave up after `query_wait_timeout`, ever.
    pub wait_timeouts: u64,
}

/// Process-wide numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Clients connected now (any phase, logging in included).
    pub clients: usize,
    /// Transaction-mode clients pinned to their server by session state.
    pub pinned_clients: usize,
    pub clients_total: u64,
    /// Clients refused because `max_client_conn` were connected.
    pub clients_rejected: u64,
    pub login_failures: u64,
    pub transactions: u64,
    /// Sums over the pools.
    pub servers_active: usize,
    pub servers_idle: usize,
    pub servers_connecting: usize,
    pub waiting_clients: usize,
    pub connects: u64,
    pub connect_failures: u64,
    pub wait_timeouts: u64,
}

impl Shared {
    /// Where the proxy is in its life.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Takes a [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        let config = self.config.load();
        let mut pools: Vec<PoolSnapshot> = self
            .pools
            .all()
            .iter()
            .map(|p| {
                let (open, idle) = p.counts();
                let active = p.stats.checked_out.load(Ordering::Relaxed);
                PoolSnapshot {
                    database: p.key.database.clone(),
                    user: p.key.user.clone(),
                    backend: p.key.backend,
                    host: p.host.clone(),
                    port: p.port,
                    active,
                    idle,
                    connecting: open.saturating_sub(idle).saturating_sub(active),
                    waiting: p.stats.waiting.load(Ordering::Relaxed),
                    connects: p.stats.connects.load(Ordering::Relaxed),
                    connect_failures: p.stats.connect_failures.load(Ordering::Relaxed),
                    wait_timeouts: p.stats.wait_timeouts.load(Ordering::Relaxed),
                }
            })
            .collect();
        pools.sort_by(|a, b| (&a.database, &a.user, a.backend).cmp(&(&b.database, &b.user, b.backend)));
        let s = &self.stats;
        let mut totals = Totals {
            clients: s.clients(),
            pinned_clients: s.pinned_clients(),
            clients_total: s.clients_total.load(Ordering::Relaxed),
            clients_rejected: s.clients_rejected.load(Ordering::Relaxed),
            login_failures: s.login_failures.load(Ordering::Relaxed),
            transactions: s.transactions.load(Ordering::Relaxed),
            // Forgotten pools' counts stay in the totals (counters never go down).
            connects: self.pools.retired.connects.load(Ordering::Relaxed),
            connect_failures: self.pools.retired.connect_failures.load(Ordering::Relaxed),
            wait_timeouts: self.pools.retired.wait_timeouts.load(Ordering::Relaxed),
            ..Totals::default()
        };
        for p in &pools {
            totals.servers_active += p.active;
            totals.servers_idle += p.idle;
            totals.servers_connecting += p.connecting;
            totals.waiting_clients += p.waiting;
            totals.connects += p.connects;
            totals.connect_failures += p.connect_failures;
            totals.wait_timeouts += p.wait_timeouts;
        }
        Snapshot {
            phase: self.phase(),
            pool_mode: config.pool_mode,
            pool_size: config.pool_size as usize,
            backends: config
                .backends
                .iter()
                .map(|b| BackendInfo { host: b.host.clone(), port: b.port, role: b.role, weight: b.weight })
                .collect(),
            pools,
            totals,
        }
    }
}

impl ProxyHandle {
    /// Takes a [`Snapshot`] of this proxy.
    pub fn snapshot(&self) -> Snapshot {
        self.shared().snapshot()
    }
}
