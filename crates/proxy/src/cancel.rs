//! Query cancellation. Each client gets a BackendKeyData of pgbalancer's own
//! (random pid and key); a CancelRequest is mapped to the server connection
//! that client holds at that moment, and to nothing otherwise.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use dashmap::DashMap;
use rand::Rng;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::protocol::write;

/// Where a cancel for a client goes right now.
#[derive(Debug, Clone, Copy)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub pid: i32,
    pub key: i32,
}

/// One client's cancel state, shared between its session and the registry.
#[derive(Debug, Default)]
pub struct CancelSlot {
    target: Mutex<Option<CancelTarget>>,
    in_flight: AtomicUsize,
    done: Notify,
}

impl CancelSlot {
    pub fn set(&self, target: CancelTarget) {
        *self.target.lock().unwrap() = Some(target);
    }

    /// Clears the target and waits until cancels already on their way to
    /// the old server are delivered, so that a cancel never reaches a
    /// server after it was handed to another client.
    pub async fn clear(&self) {
        *self.target.lock().unwrap() = None;
        while self.in_flight.load(Ordering::Acquire) > 0 {
            let notified = self.done.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
    }

    /// Clears the target without waiting (the server is being closed).
    pub fn clear_now(&self) {
        *self.target.lock().unwrap() = None;
    }
}

pub struct CancelRegistry {
    map: DashMap<i32, (i32, Arc<CancelSlot>)>,
    timeout: Duration,
}

/// Removes a client's entry when its session ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub pid: i32,
    pub key: i32,
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.map.remove(&self.pid);
    }
}

impl CancelRegistry {
    pub fn new(timeout: Duration) -> Arc<CancelRegistry> {
        Arc::new(CancelRegistry { map: DashMap::new(), timeout })
    }

    /// Gives a new client a fresh random (pid, key) pair.
    pub fn register(self: &Arc<Self>) -> Registration {
        let mut rng = rand::thread_rng();
        let slot = Arc::new(CancelSlot::default());
        loop {
            let pid = rng.gen_range(1..i32::MAX);
            let key: i32 = rng.gen();
            if let dashmap::Entry::Vacant(v) = self.map.entry(pid) {
                v.insert((key, slot.clone()));
                return Registration { registry: self.clone(), pid, key, slot };
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Handles one CancelRequest. Unknown pids and wrong keys cancel
    /// nothing; the requester never gets a reply either way.
    pub async fn cancel(&self, pid: i32, key: i32) -> bool {
        let slot = match self.map.get(&pid) {
            Some(e) if bool::from(e.value().0.to_be_bytes().ct_eq(&key.to_be_bytes())) => e.value().1.clone(),
            _ => return false,
        };
        let target = {
            let t = slot.target.lock().unwrap();
            let Some(target) = *t else { return false };
            slot.in_flight.fetch_add(1, Ordering::AcqRel);
            target
        };
        let sent = tokio::time::timeout(self.timeout, send_cancel(target)).await.is_ok_and(|r| r.is_ok());
        if slot.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            slot.done.notify_waiters();
        }
        sent
    }
}

/// Sends a CancelRequest and waits for the server to close the connection,
/// which it does once the signal is delivered.
async fn send_cancel(t: CancelTarget) -> std::io::Result<()> {
    let mut s = TcpStream::connect(t.addr).await?;
    let mut b = BytesMut::with_capacity(16);
    write::cancel_request(&mut b, t.pid, t.key);
    s.write_all(&b).await?;
    let mut sink = [0u8; 64];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}
