//! Who is connected: one entry per logged-in client, for `SHOW CLIENTS`,
//! `SHOW SERVERS` and `GET /api/v1/clients|servers`. A session updates its
//! entry with a few relaxed stores when it takes or gives back a server;
//! reading the list never blocks a session.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;

/// What a client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Holds no server (between transactions, in transaction mode).
    Idle,
    /// Waiting for a server (pool full, PAUSE, failover).
    Waiting,
    /// Holds a server.
    Active,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }
}

/// One connected client.
#[derive(Debug)]
pub struct ClientEntry {
    pub id: u64,
    pub addr: SocketAddr,
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub connected_at: SystemTime,
    state: AtomicU8,
    /// The node of the server it holds (`usize::MAX`: none).
    node: AtomicUsize,
    /// The backend pid of the server it holds (0: none).
    server_pid: AtomicI32,
    /// Transactions (or statements outside one) it ran on servers.
    pub transactions: AtomicU64,
    /// Wakes the session when the proxy starts draining or stopping (see
    /// [`Clients::wake_all`]); its own, so a session waiting on it touches
    /// no lock other sessions use.
    pub(crate) stop: tokio::sync::Notify,
}

const NO_NODE: usize = usize::MAX;

impl ClientEntry {
    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Waiting,
            2 => ClientState::Active,
            _ => ClientState::Idle,
        }
    }

    /// The server it holds: (node, backend pid).
    pub fn server(&self) -> Option<(usize, i32)> {
        match (self.node.load(Ordering::Relaxed), self.server_pid.load(Ordering::Relaxed)) {
            (NO_NODE, _) | (_, 0) => None,
            (node, pid) => Some((node, pid)),
        }
    }

    pub fn waiting(&self) {
        self.state.store(1, Ordering::Relaxed);
    }

    pub fn linked(&self, node: usize, pid: i32) {
        self.node.store(node, Ordering::Relaxed);
        self.server_pid.store(pid, Ordering::Relaxed);
        self.state.store(2, Ordering::Relaxed);
    }

    pub fn released(&self) {
        self.state.store(0, Ordering::Relaxed);
        self.server_pid.store(0, Ordering::Relaxed);
        self.node.store(NO_NODE, Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every logged-in client.
#[derive(Debug, Default)]
pub struct Clients {
    map: DashMap<u64, Arc<ClientEntry>>,
    next_id: AtomicU64,
}

impl Clients {
    /// Adds a client; it leaves the list when the returned handle drops.
    pub fn register(
        self: &Arc<Self>,
        addr: SocketAddr,
        user: &str,
        database: &str,
        application_name: &str,
    ) -> ClientHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(ClientEntry {
            id,
            addr,
            user: user.to_owned(),
            database: database.to_owned(),
            application_name: application_name.to_owned(),
            connected_at: SystemTime::now(),
            state: AtomicU8::new(0),
            node: AtomicUsize::new(NO_NODE),
            server_pid: AtomicI32::new(0),
            transactions: AtomicU64::new(0),
            stop: tokio::sync::Notify::new(),
        });
        self.map.insert(id, entry.clone());
        ClientHandle { entry, clients: self.clone() }
    }

    /// The clients now, by id.
    pub fn list(&self) -> Vec<Arc<ClientEntry>> {
        let mut v: Vec<Arc<ClientEntry>> = self.map.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|e| e.id);
        v
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Wakes every session (after the proxy's phase changed). A session
    /// that is not waiting at that moment finds the wake-up stored.
    pub fn wake_all(&self) {
        for e in self.map.iter() {
            e.value().stop.notify_one();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A client's place in [`Clients`]; removes it on drop.
#[derive(Debug)]
pub struct ClientHandle {
    entry: Arc<ClientEntry>,
    clients: Arc<Clients>,
}

impl ClientHandle {
    /// The entry itself, to wait on it while the session is borrowed.
    pub fn entry(&self) -> Arc<ClientEntry> {
        self.entry.clone()
    }
}

impl std::ops::Deref for ClientHandle {
    type Target = ClientEntry;
    fn deref(&self) -> &ClientEntry {
        &self.entry
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.clients.map.remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_their_handles() {
        let clients = Arc::new(Clients::default());
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = clients.register(addr, "u", "d", "app");
        let b = clients.register(addr, "u2", "d", "");
        assert_eq!(clients.list().iter().map(|e| e.id).collect::<Vec<_>>(), vec![a.id, b.id]);
        assert_eq!(a.state(), ClientState::Idle);
        a.waiting();
        assert_eq!(a.state(), ClientState::Waiting);
        a.linked(1, 4242);
        assert_eq!((a.state(), a.server()), (ClientState::Active, Some((1, 4242))));
        a.released();
        assert_eq!((a.state(), a.server()), (ClientState::Idle, None));
        assert_eq!(a.transactions.load(Ordering::Relaxed), 1);
        drop(a);
        assert_eq!(clients.list().len(), 1);
        drop(b);
        assert!(clients.is_empty());
    }
}
