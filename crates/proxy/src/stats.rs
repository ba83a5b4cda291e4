//! Process-wide counters, read without locks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now (any phase).
    pub clients: AtomicUsize,
    pub clients_total: AtomicU64,
    pub clients_rejected: AtomicU64,
    pub login_failures: AtomicU64,
    /// Connections in startup or authentication now.
    pub unauthenticated: AtomicUsize,
    /// Connections refused at `max_unauthenticated_clients`, ever.
    pub unauthenticated_rejected: AtomicU64,
    /// Logins refused without an exchange because their source failed
    /// `auth_failure_limit` times, ever.
    pub auth_throttled: AtomicU64,
    pub transactions: AtomicU64,
    /// Transaction-mode clients pinned to their server by session state.
    pub pinned_clients: AtomicUsize,
    /// Signalled whenever `clients` drops to zero.
    pub(crate) no_clients: Notify,
}

impl Stats {
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    pub fn pinned_clients(&self) -> usize {
        self.pinned_clients.load(Ordering::Relaxed)
    }

    /// Connections in startup or authentication now.
    pub fn unauthenticated(&self) -> usize {
        self.unauthenticated.load(Ordering::Relaxed)
    }
}

/// Counts one connected client for as long as it lives.
pub(crate) struct ClientSlot<'a> {
    stats: &'a Stats,
}

impl<'a> ClientSlot<'a> {
    /// Takes a place unless `max` clients are already connected.
    pub fn enter(stats: &'a Stats, max: usize) -> Option<ClientSlot<'a>> {
        let mut cur = stats.clients.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                return None;
            }
            match stats.clients.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    stats.clients_total.fetch_add(1, Ordering::Relaxed);
                    return Some(ClientSlot { stats });
                }
                Err(now) => cur = now,
            }
        }
    }
}

/// Counts one connection that has not authenticated yet, for as long as
/// it lives or until dropped at the end of authentication.
pub(crate) struct UnauthSlot<'a> {
    stats: &'a Stats,
}

impl<'a> UnauthSlot<'a> {
    /// Takes a place unless `max` connections are already unauthenticated.
    pub fn enter(stats: &'a Stats, max: usize) -> Option<UnauthSlot<'a>> {
        let mut cur = stats.unauthenticated.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                return None;
            }
            match stats.unauthenticated.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(UnauthSlot { stats }),
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for UnauthSlot<'_> {
    fn drop(&mut self) {
        self.stats.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        if self.stats.clients.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.stats.no_clients.notify_waiters();
        }
    }
}
