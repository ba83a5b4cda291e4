//! Server connection pools, one per (database, user, backend).
//!
//! Waiting clients are served in FIFO order. A connection leaves a pool only
//! inside a [`ServerGuard`], which puts it back on drop if the session marked
//! it clean, and closes it otherwise; a right to open a new connection is a
//! [`Slot`], freed on drop. So a client that vanishes at any `.await` never
//! leaks a connection or a slot.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use std::task::{Poll, Waker};

use crate::error::PoolError;
use crate::server::{ServerConn, ServerLogin};

/// Server parameters as (name, value), in the server's spelling.
pub type ParamList = Vec<(String, String)>;

/// Settings every pool reads on each use; swapped whole on reload.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: usize,
    pub min_size: usize,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// How new server connections negotiate TLS.
    pub tls: Arc<crate::tls::BackendTls>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
    pub backend: usize,
}

/// Counters of one pool, readable without its lock.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub waiting: AtomicUsize,
    pub checked_out: AtomicUsize,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub wait_timeouts: AtomicU64,
}

// The connection moves by value; boxing would allocate per hand-over.
#[allow(clippy::large_enum_variant)]
enum Grant {
    Conn(ServerGuard),
    Slot(Slot),
}

struct Inner {
    idle: VecDeque<Box<ServerConn>>,
    /// Connections that exist or are being opened (idle + checked out + connecting).
    open: usize,
    /// Clients waiting, first come first served.
    waiters: VecDeque<Arc<Waiter>>,
    /// Waiters whose wait ended, reused by later waits (a checkout that
    /// queues allocates nothing once the pool has seen as many waiters).
    spare: VecDeque<Arc<Waiter>>,
    closed: bool,
}

/// Most spare waiters a pool keeps.
const MAX_SPARE_WAITERS: usize = 1024;

/// Where a queued checkout receives its connection (or slot). One lock
/// per hand-over and per poll, the waiting task's waker kept in place.
struct Waiter {
    state: Mutex<WaitSlot>,
}

struct WaitSlot {
    state: WaitState,
    waker: Option<Waker>,
}

// The connection moves by value; boxing would allocate per hand-over.
#[allow(clippy::large_enum_variant)]
enum WaitState {
    Waiting,
    Granted(Grant),
    /// The waiting side gave up (timed out or was dropped).
    Gone,
    /// The pool was closed.
    Closed,
}

impl Waiter {
    fn new() -> Arc<Waiter> {
        Arc::new(Waiter { state: Mutex::new(WaitSlot { state: WaitState::Waiting, waker: None }) })
    }

    /// Ends the wait with `to` if the waiter still waits (else gives `to`
    /// back) and wakes the waiting task.
    fn end_wait(&self, to: WaitState) -> Result<(), WaitState> {
        let mut s = self.state.lock().unwrap();
        if !matches!(s.state, WaitState::Waiting) {
            return Err(to);
        }
        s.state = to;
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Hands `grant` over if the waiter still waits; gives it back if not.
    /// Called under the pool's lock: the grant given back must not be
    /// dropped there (its drop takes the lock).
    fn offer(&self, grant: Grant) -> Result<(), Grant> {
        self.end_wait(WaitState::Granted(grant)).map_err(|back| match back {
            WaitState::Granted(g) => g,
            _ => unreachable!("offered a grant"),
        })
    }

    fn is_waiting(&self) -> bool {
        matches!(self.state.lock().unwrap().state, WaitState::Waiting)
    }

    fn close(&self) {
        let _ = self.end_wait(WaitState::Closed);
    }

    /// Waits for the grant; cancel-safe (a grant that arrives after the
    /// future is dropped is collected by [`Waiter::give_up`]).
    async fn granted(&self) -> Result<Grant, PoolError> {
        std::future::poll_fn(|cx| {
            let mut s = self.state.lock().unwrap();
            match std::mem::replace(&mut s.state, WaitState::Gone) {
                WaitState::Granted(g) => {
                    s.waker = None;
                    Poll::Ready(Ok(g))
                }
                WaitState::Closed => {
                    s.waker = None;
                    Poll::Ready(Err(PoolError::Closed))
                }
                other => {
                    s.state = other;
                    match &mut s.waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Ends the wait: a grant that arrived meanwhile is returned (dropping
    /// it gives the connection or slot back), and a close that came first
    /// is reported as such.
    fn give_up(&self) -> Option<Result<Grant, PoolError>> {
        let mut s = self.state.lock().unwrap();
        s.waker = None;
        match std::mem::replace(&mut s.state, WaitState::Gone) {
            WaitState::Granted(g) => Some(Ok(g)),
            WaitState::Closed => Some(Err(PoolError::Closed)),
            WaitState::Waiting | WaitState::Gone => None,
        }
    }
}

/// Takes a waiter for a new wait: a spare one that nobody else holds any
/// more, else a new one.
fn waiter_for(g: &mut Inner) -> Arc<Waiter> {
    if let Some(mut w) = g.spare.pop_front() {
        if let Some(unique) = Arc::get_mut(&mut w) {
            let slot = unique.state.get_mut().unwrap();
            slot.state = WaitState::Waiting;
            slot.waker = None;
            return w;
        }
        // Its last waiting side has not let go yet: try it again later.
        g.spare.push_back(w);
    }
    Waiter::new()
}

/// A waiter whose wait ended goes to the spare list.
fn recycle(g: &mut Inner, w: Arc<Waiter>) {
    if g.spare.len() < MAX_SPARE_WAITERS {
        g.spare.push_back(w);
    }
}

pub struct Pool {
    pub key: PoolKey,
    pub host: String,
    pub port: u16,
    settings: Arc<ArcSwap<PoolSettings>>,
    /// How to log in to the server; refreshed by each client login (the
    /// SCRAM keys of pass-through come from there).
    login: Mutex<ServerLogin>,
    inner: Mutex<Inner>,
    /// ParameterStatus set of the first fresh server connection, before any
    /// client's settings: what later logins report without a server.
    initial_params: Mutex<Option<Arc<ParamList>>>,
    /// (lower-case name, value as a client gave it) → the value as the
    /// server reports it, learned from logins that linked a server. Lets
    /// later logins report the server's spelling without a server.
    spellings: Mutex<HashMap<(String, String), String>>,
    pub stats: PoolStats,
    /// Shared with [`Pools::waits`].
    waits: Arc<crate::measure::Histogram>,
}

/// Most (parameter, value) spellings one pool remembers.
const MAX_SPELLINGS: usize = 1024;

impl Pool {
    pub fn new(
        key: PoolKey,
        host: String,
        port: u16,
        settings: Arc<ArcSwap<PoolSettings>>,
        login: ServerLogin,
        waits: Arc<crate::measure::Histogram>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            key,
            host,
            port,
            settings,
            login: Mutex::new(login),
            inner: Mutex::new(Inner {
                idle: VecDeque::new(),
                open: 0,
                waiters: VecDeque::new(),
                spare: VecDeque::new(),
                closed: false,
            }),
            initial_params: Mutex::new(None),
            spellings: Mutex::new(HashMap::new()),
            stats: PoolStats::default(),
            waits,
        })
    }

    /// How this pool's servers are logged in to.
    pub fn login(&self) -> ServerLogin {
        self.login.lock().unwrap().clone()
    }

    pub fn set_login(&self, login: ServerLogin) {
        *self.login.lock().unwrap() = login;
    }

    /// The parameters a fresh server of this pool reports, once known.
    pub fn initial_params(&self) -> Option<Arc<ParamList>> {
        self.initial_params.lock().unwrap().clone()
    }

    /// How the server spells `value` for parameter `name`, if learned.
    pub fn spelling(&self, name: &str, value: &str) -> Option<String> {
        self.spellings.lock().unwrap().get(&(name.to_owned(), value.to_owned())).cloned()
    }

    /// Records that the server accepted `value` for `name` and reports it
    /// as `reported`.
    pub fn learn_spelling(&self, name: &str, value: &str, reported: &str) {
        let mut m = self.spellings.lock().unwrap();
        if m.len() < MAX_SPELLINGS {
            m.insert((name.to_owned(), value.to_owned()), reported.to_owned());
        }
    }

    /// No connections and nobody waiting.
    pub fn is_empty(&self) -> bool {
        let g = self.inner.lock().unwrap();
        g.open == 0 && g.waiters.is_empty()
    }

    /// (open, idle) connection counts.
    pub fn counts(&self) -> (usize, usize) {
        let g = self.inner.lock().unwrap();
        (g.open, g.idle.len())
    }

    /// (backend pid, opened at, last used) of each idle connection.
    pub fn idle_servers(&self) -> Vec<(i32, Instant, Instant)> {
        let g = self.inner.lock().unwrap();
        g.idle.iter().map(|c| (c.backend_pid, c.created, c.last_used)).collect()
    }

    /// Takes a server connection, waiting up to `wait` (zero = forever) in
    /// FIFO order when the pool is full.
    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<ServerGuard, PoolError> {
        let deadline = (!wait.is_zero()).then(|| tokio::time::Instant::now() + wait);
        let grant = self.take_or_wait(deadline).await?;
        let slot = match grant {
            Grant::Conn(mut guard) => {
                let settings = self.settings.load();
                let conn = guard.conn.as_mut().expect("granted guard holds a connection");
                let now = Instant::now();
                if conn.is_quiet() && !expired(conn, &settings, now) {
                    conn.last_used = now;
                    return Ok(guard);
                }
                // Broken or stale: close it and reuse its place for a new one.
                let conn = guard.conn.take().expect("checked above");
                self.stats.checked_out.fetch_sub(1, Ordering::Relaxed);
                spawn_close(conn);
                Slot { pool: Some(self.clone()) }
            }
            Grant::Slot(slot) => slot,
        };
        let login = self.login.lock().unwrap().clone();
        let settings = self.settings.load_full();
        let timeout = settings.connect_timeout;
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        // Boxed: opening a connection is rare, and inline its future would
        // make every session's future (idle clients included) larger.
        match Box::pin(ServerConn::connect_tls(&self.host, self.port, &settings.tls, &login, timeout)).await {
            Ok(mut conn) => {
                slot.disarm();
                // Checked out now: the login is not part of the client's time.
                conn.last_used = Instant::now();
                let mut initial = self.initial_params.lock().unwrap();
                if initial.is_none() {
                    *initial = Some(Arc::new(conn.params.clone()));
                }
                drop(initial);
                Ok(self.guard(conn))
            }
            Err(e) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                drop(slot);
                Err(PoolError::Server(e))
            }
        }
    }

    async fn take_or_wait(self: &Arc<Self>, deadline: Option<tokio::time::Instant>) -> Result<Grant, PoolError> {
        let size = self.settings.load().size;
        let excess;
        let rx = {
            let mut g = self.inner.lock().unwrap();
            if g.closed {
                return Err(PoolError::Closed);
            }
            // After a reload shrank the pool, idle connections over the
            // new size are closed rather than handed out.
            excess = trim_excess(&mut g, size);
            if let Some(conn) = g.idle.pop_back() {
                drop(g);
                excess.into_iter().for_each(spawn_close);
                return Ok(Grant::Conn(self.guard(conn)));
            }
            if g.open < size {
                g.open += 1;
                drop(g);
                excess.into_iter().for_each(spawn_close);
                return Ok(Grant::Slot(Slot { pool: Some(self.clone()) }));
            }
            if g.waiters.len() >= 64 && g.waiters.len().is_power_of_two() {
                let (live, gone): (VecDeque<_>, VecDeque<_>) = g.waiters.drain(..).partition(|w| w.is_waiting());
                g.waiters = live;
                gone.into_iter().for_each(|w| recycle(&mut g, w));
            }
            let w = waiter_for(&mut g);
            g.waiters.push_back(w.clone());
            w
        };
        excess.into_iter().for_each(spawn_close);
        // Counted while waiting, also when this future is dropped mid-wait.
        let _waiting = Counted::new(&self.stats.waiting);
        // Ends the wait however this future ends (dropped mid-wait too).
        let mut waiting = GiveUp(Some(&rx));
        let queued = Instant::now();
        let r = match deadline {
            Some(d) => tokio::time::timeout_at(d, rx.granted()).await,
            None => Ok(rx.granted().await),
        };
        waiting.0 = None;
        self.waits.observe(queued.elapsed());
        match r {
            Ok(r) => r,
            // A grant (or a close) that came with the deadline still counts.
            Err(_) => rx.give_up().unwrap_or_else(|| {
                self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(PoolError::WaitTimeout)
            }),
        }
    }

    /// Wraps a connection leaving the pool; counted as checked out until
    /// it comes back through [`Pool::check_in`].
    fn guard(self: &Arc<Self>, conn: Box<ServerConn>) -> ServerGuard {
        self.stats.checked_out.fetch_add(1, Ordering::Relaxed);
        ServerGuard { pool: self.clone(), conn: Some(conn), clean: true }
    }

    /// Puts a connection back: to the first live waiter, else to the idle
    /// list. Closes it instead when dirty, noisy, expired or over the size.
    fn check_in(self: &Arc<Self>, mut conn: Box<ServerConn>, clean: bool) {
        self.stats.checked_out.fetch_sub(1, Ordering::Relaxed);
        let settings = self.settings.load();
        let now = Instant::now();
        let keep = clean && conn.is_quiet() && !expired(&conn, &settings, now);
        let mut g = self.inner.lock().unwrap();
        if !keep || g.closed || g.open > settings.size {
            drop(g);
            spawn_close(conn);
            self.free_slot();
            return;
        }
        conn.last_used = now;
        while let Some(w) = g.waiters.pop_front() {
            let offered = w.offer(Grant::Conn(self.guard(conn)));
            recycle(&mut g, w);
            match offered {
                Ok(()) => return,
                Err(Grant::Conn(mut back)) => {
                    self.stats.checked_out.fetch_sub(1, Ordering::Relaxed);
                    conn = back.conn.take().expect("just offered");
                }
                Err(Grant::Slot(_)) => unreachable!("offered a connection"),
            }
        }
        g.idle.push_back(conn);
    }

    /// A connection closed: its place goes to the first live waiter, or the
    /// open count drops.
    fn free_slot(self: &Arc<Self>) {
        let mut g = self.inner.lock().unwrap();
        while !g.closed && g.open <= self.settings.load().size {
            let Some(w) = g.waiters.pop_front() else { break };
            let offered = w.offer(Grant::Slot(Slot { pool: Some(self.clone()) }));
            recycle(&mut g, w);
            match offered {
                Ok(()) => return,
                Err(Grant::Slot(s)) => s.disarm(),
                Err(Grant::Conn(_)) => unreachable!("offered a slot"),
            }
        }
        g.open -= 1;
    }

    /// Waiters first: while the pool is below its size (a reload raised
    /// it), the first waiters get the right to open a connection, ahead of
    /// clients arriving later.
    fn grant_free_slots(self: &Arc<Self>) {
        let size = self.settings.load().size;
        let mut g = self.inner.lock().unwrap();
        while !g.closed && g.open < size {
            let Some(w) = g.waiters.pop_front() else { break };
            g.open += 1;
            let offered = w.offer(Grant::Slot(Slot { pool: Some(self.clone()) }));
            recycle(&mut g, w);
            match offered {
                Ok(()) => {}
                Err(Grant::Slot(s)) => {
                    s.disarm();
                    g.open -= 1;
                }
                Err(Grant::Conn(_)) => unreachable!("offered a slot"),
            }
        }
    }

    /// Closes idle connections past `server_idle_timeout` or
    /// `server_lifetime`; opens connections up to `min_pool_size`.
    pub fn maintain(self: &Arc<Self>) {
        let settings = self.settings.load();
        let now = Instant::now();
        let (stale, trimmed): (Vec<Box<ServerConn>>, Vec<Box<ServerConn>>) = {
            let mut g = self.inner.lock().unwrap();
            let mut keep = VecDeque::with_capacity(g.idle.len());
            let mut stale = Vec::new();
            while let Some(c) = g.idle.pop_front() {
                let idle_too_long = !settings.server_idle_timeout.is_zero()
                    && now.duration_since(c.last_used) >= settings.server_idle_timeout
                    && g.open - stale.len() > settings.min_size;
                if idle_too_long || expired(&c, &settings, now) {
                    stale.push(c);
                } else {
                    keep.push_back(c);
                }
            }
            g.idle = keep;
            let trimmed = trim_excess(&mut g, settings.size);
            (stale, trimmed)
        };
        trimmed.into_iter().for_each(spawn_close);
        self.grant_free_slots();
        for c in stale {
            spawn_close(c);
            self.free_slot();
        }
        let want = {
            let mut g = self.inner.lock().unwrap();
            let want = settings.min_size.min(settings.size).saturating_sub(g.open);
            if g.closed {
                0
            } else {
                g.open += want;
                want
            }
        };
        for _ in 0..want {
            let pool = self.clone();
            tokio::spawn(async move {
                let slot = Slot { pool: Some(pool.clone()) };
                let login = pool.login.lock().unwrap().clone();
                let settings = pool.settings.load_full();
                let timeout = settings.connect_timeout;
                if let Ok(conn) = ServerConn::connect_tls(&pool.host, pool.port, &settings.tls, &login, timeout).await {
                    slot.disarm();
                    drop(pool.guard(conn));
                }
            });
        }
    }

    /// Refuses new checkouts, wakes waiters with an error, closes idle
    /// connections. Checked-out connections close when returned.
    pub fn close(&self) {
        let idle: Vec<Box<ServerConn>> = {
            let mut g = self.inner.lock().unwrap();
            g.closed = true;
            for w in std::mem::take(&mut g.waiters) {
                w.close();
            }
            g.spare.clear();
            let idle: Vec<_> = g.idle.drain(..).collect();
            g.open -= idle.len();
            idle
        };
        for c in idle {
            spawn_close(c);
        }
    }
}

/// Gives up a wait when dropped while still armed; a grant that arrived
/// meanwhile is dropped outside the pool's lock, which returns it.
struct GiveUp<'a>(Option<&'a Waiter>);

impl Drop for GiveUp<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            drop(w.give_up());
        }
    }
}

/// Adds one to a counter for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(c: &'a AtomicUsize) -> Counted<'a> {
        c.fetch_add(1, Ordering::Relaxed);
        Counted(c)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes idle connections out while the pool holds more than `size`;
/// their places are given up (the caller closes them).
// The boxes move out of the idle list as they are (no copy of a connection).
#[allow(clippy::vec_box)]
fn trim_excess(g: &mut Inner, size: usize) -> Vec<Box<ServerConn>> {
    let mut out = Vec::new();
    while g.open > size {
        let Some(c) = g.idle.pop_front() else { break };
        g.open -= 1;
        out.push(c);
    }
    out
}

fn expired(conn: &ServerConn, s: &PoolSettings, now: Instant) -> bool {
    !s.server_lifetime.is_zero() && now.saturating_duration_since(conn.created) >= s.server_lifetime
}

fn spawn_close(conn: Box<ServerConn>) {
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(conn.close());
    }
}

/// The right to open one connection in a pool; freed on drop.
struct Slot {
    pool: Option<Arc<Pool>>,
}

impl Slot {
    /// The slot became a connection (or was given up under the lock).
    fn disarm(mut self) {
        self.pool = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.free_slot();
        }
    }
}

/// A checked-out server connection. On drop it goes back to its pool when
/// marked clean (idle, nothing outstanding) and is closed otherwise.
pub struct ServerGuard {
    pool: Arc<Pool>,
    conn: Option<Box<ServerConn>>,
    clean: bool,
}

impl ServerGuard {
    pub fn conn(&mut self) -> &mut ServerConn {
        self.conn.as_mut().expect("guard holds a connection until dropped")
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Marks whether the connection may be reused as it is.
    pub fn set_clean(&mut self, clean: bool) {
        self.clean = clean;
    }

    pub fn is_clean(&self) -> bool {
        self.clean
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.check_in(conn, self.clean);
        }
    }
}

/// All pools, created on first use.
pub struct Pools {
    map: DashMap<PoolKey, Arc<Pool>>,
    /// How long clients waited in a pool's queue (only those that queued).
    pub waits: Arc<crate::measure::Histogram>,
    settings: Arc<ArcSwap<PoolSettings>>,
    /// Counters of pools that were forgotten or replaced, so process-wide
    /// totals never go down.
    pub retired: PoolStats,
}

impl Pools {
    pub fn new(settings: PoolSettings) -> Pools {
        Pools {
            map: DashMap::new(),
            waits: Arc::default(),
            settings: Arc::new(ArcSwap::from_pointee(settings)),
            retired: PoolStats::default(),
        }
    }

    /// Adds a pool's counters to `retired` as it leaves the map.
    fn retire(&self, pool: &Pool) {
        for (total, count) in [
            (&self.retired.connects, &pool.stats.connects),
            (&self.retired.connect_failures, &pool.stats.connect_failures),
            (&self.retired.wait_timeouts, &pool.stats.wait_timeouts),
        ] {
            total.fetch_add(count.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    pub fn get_or_create(&self, key: PoolKey, host: &str, port: u16, login: ServerLogin) -> Arc<Pool> {
        // One entry lock for the check and the insert: two first logins for
        // the same key must get the same pool.
        match self.map.entry(key) {
            dashmap::Entry::Occupied(mut e) => {
                if e.get().host == host && e.get().port == port {
                    return e.get().clone();
                }
                let pool =
                    Pool::new(e.key().clone(), host.to_owned(), port, self.settings.clone(), login, self.waits.clone());
                let old = e.insert(pool.clone());
                self.retire(&old);
                old.close();
                pool
            }
            dashmap::Entry::Vacant(e) => {
                let pool =
                    Pool::new(e.key().clone(), host.to_owned(), port, self.settings.clone(), login, self.waits.clone());
                e.insert(pool.clone());
                pool
            }
        }
    }

    /// New settings for every pool; waiters get places a larger size made.
    pub fn set_settings(&self, settings: PoolSettings) {
        self.settings.store(Arc::new(settings));
        for p in self.all() {
            p.grant_free_slots();
        }
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map.iter().map(|e| e.value().clone()).collect()
    }

    pub fn maintain(&self) {
        for p in self.all() {
            p.maintain();
        }
        // Forget pools nobody uses and that hold no connection (e.g. made
        // up database names), so the map cannot grow without bound. The
        // entry lock makes this atomic with get_or_create.
        let unused: Vec<PoolKey> = self
            .map
            .iter()
            .filter(|e| Arc::strong_count(e.value()) == 1 && e.value().is_empty())
            .map(|e| e.key().clone())
            .collect();
        for key in unused {
            if let Some((_, p)) = self.map.remove_if(&key, |_, p| Arc::strong_count(p) == 1 && p.is_empty()) {
                self.retire(&p);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn close_all(&self) {
        for p in self.all() {
            p.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(size: usize) -> Arc<Pool> {
        let settings = PoolSettings {
            size,
            min_size: 0,
            server_lifetime: Duration::ZERO,
            server_idle_timeout: Duration::ZERO,
            connect_timeout: Duration::from_secs(1),
            tls: Arc::new(crate::tls::BackendTls::PLAINTEXT),
        };
        Pool::new(
            PoolKey { database: "d".into(), user: "u".into(), backend: 0 },
            "127.0.0.1".into(),
            1,
            Arc::new(ArcSwap::from_pointee(settings)),
            ServerLogin { user: "u".into(), database: "d".into(), secret: crate::server::ServerSecret::None },
            Arc::new(crate::measure::Histogram::default()),
        )
    }

    fn slot(grant: Grant) -> Slot {
        match grant {
            Grant::Slot(s) => s,
            Grant::Conn(_) => panic!("expected a slot"),
        }
    }

    fn open(p: &Pool) -> usize {
        p.inner.lock().unwrap().open
    }

    /// A waiter put in `p`'s queue by hand (no task waits on it).
    fn enqueue(p: &Pool) -> Arc<Waiter> {
        let mut g = p.inner.lock().unwrap();
        let w = waiter_for(&mut g);
        g.waiters.push_back(w.clone());
        w
    }

    /// A checkout that waits in `p`'s queue (returned once it is queued).
    async fn queued_waiter(p: &Arc<Pool>) -> tokio::task::JoinHandle<Result<(), PoolError>> {
        let before = p.stats.waiting.load(Ordering::Relaxed);
        let h = tokio::spawn({
            let p = p.clone();
            async move { p.take_or_wait(None).await.map(|_| ()) }
        });
        while p.stats.waiting.load(Ordering::Relaxed) <= before {
            tokio::task::yield_now().await;
        }
        h
    }

    #[tokio::test]
    async fn waiters_are_served_first_come_first_served() {
        let p = pool(1);
        let first = slot(p.take_or_wait(None).await.unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3 {
            let (q, tx) = (p.clone(), tx.clone());
            tokio::spawn(async move {
                let s = slot(q.take_or_wait(None).await.unwrap());
                tx.send(i).unwrap();
                // Hold it a moment, then pass it on.
                tokio::task::yield_now().await;
                drop(s);
            });
            // Queue them in order.
            while p.stats.waiting.load(Ordering::Relaxed) < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        let got: Vec<usize> = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        assert_eq!(got, vec![0, 1, 2]);
        while p.stats.waiting.load(Ordering::Relaxed) > 0 || open(&p) > 0 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn waiters_that_gave_up_are_passed_over() {
        let p = pool(1);
        let held = slot(p.take_or_wait(None).await.unwrap());
        // One waiter times out, one is dropped mid-wait.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        assert!(matches!(p.take_or_wait(Some(deadline)).await, Err(PoolError::WaitTimeout)));
        assert_eq!(p.stats.wait_timeouts.load(Ordering::Relaxed), 1);
        let dropped = queued_waiter(&p).await;
        dropped.abort();
        assert!(dropped.await.unwrap_err().is_cancelled());
        assert_eq!(p.stats.waiting.load(Ordering::Relaxed), 0);
        // The next waiter gets the slot; the two that left are passed over.
        let next = tokio::spawn({
            let p = p.clone();
            async move { slot(p.take_or_wait(None).await.unwrap()).disarm() }
        });
        while p.stats.waiting.load(Ordering::Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        drop(held);
        next.await.unwrap();
        // Disarmed: the place stays taken, as a connection would hold it.
        assert_eq!(open(&p), 1);
        let g = p.inner.lock().unwrap();
        assert!(g.waiters.is_empty());
        // All three waiters are spares now.
        assert_eq!(g.spare.len(), 3);
    }

    #[tokio::test]
    async fn queued_checkouts_reuse_waiters() {
        let p = pool(1);
        let mut held = slot(p.take_or_wait(None).await.unwrap());
        for _ in 0..20 {
            let next = tokio::spawn({
                let p = p.clone();
                async move { slot(p.take_or_wait(None).await.unwrap()) }
            });
            while p.stats.waiting.load(Ordering::Relaxed) < 1 {
                tokio::task::yield_now().await;
            }
            drop(held);
            held = next.await.unwrap();
        }
        // Twenty waits, and no more waiters made than were ever in use at
        // once (plus one whose last waiting side had not let go yet).
        let spare = p.inner.lock().unwrap().spare.len();
        assert!((1..=2).contains(&spare), "spare waiters: {spare}");
        drop(held);
        assert_eq!(open(&p), 0);
    }

    #[tokio::test]
    async fn a_grant_racing_a_give_up_goes_back_to_the_pool() {
        let p = pool(1);
        let held = slot(p.take_or_wait(None).await.unwrap());
        let w = enqueue(&p);
        // The slot is offered to the waiter, which then gives up without
        // taking it: dropping what it got frees the place.
        drop(held);
        assert_eq!(open(&p), 1);
        let granted = w.give_up().expect("the freed slot was offered");
        assert!(granted.is_ok());
        drop(granted);
        assert_eq!(open(&p), 0);
        // A later offer to it is refused.
        assert!(w.offer(Grant::Slot(Slot { pool: None })).is_err());
    }

    #[tokio::test]
    async fn a_close_racing_a_deadline_is_reported_as_a_close() {
        let p = pool(1);
        let _held = slot(p.take_or_wait(None).await.unwrap());
        let w = enqueue(&p);
        p.close();
        assert!(matches!(w.give_up(), Some(Err(PoolError::Closed))));
    }

    #[tokio::test]
    async fn closing_wakes_waiters_with_an_error() {
        let p = pool(1);
        let _held = slot(p.take_or_wait(None).await.unwrap());
        let waiting = queued_waiter(&p).await;
        p.close();
        assert!(matches!(waiting.await.unwrap(), Err(PoolError::Closed)));
    }
}
