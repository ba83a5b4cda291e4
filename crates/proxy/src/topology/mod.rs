//! The backends as nodes: configured and observed role, health, lag, and
//! the route table every session reads to pick a node.
//!
//! Nodes are fixed at start-up (their order is their id; a changed backend
//! list needs a restart). Their state is atomics written by the health
//! checker ([`health`]) and by runtime control (attach, detach, promote);
//! after any change the checker or the control call rebuilds the
//! [`RouteTable`] and swaps it in whole, so a session reads one consistent
//! table with one atomic load and no lock.

pub mod health;
mod pick;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use pgbalancer_config::{BackendRole, Config, FollowPrimary};
use tokio::sync::{watch, Notify};

pub use pick::Picker;

/// What the health checks say about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet: taken as up, in its configured role.
    Unknown,
    Up,
    Down,
}

/// The role a node reports (`pg_is_in_recovery()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Unknown,
    Primary,
    Replica,
}

/// Why a node takes no reads although it is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ban {
    None,
    /// More than `max_lag_bytes` behind the primary.
    LagBytes,
    /// Replay more than `max_lag` behind.
    LagTime,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

impl Role {
    fn from_u8(v: u8) -> Role {
        match v {
            1 => Role::Primary,
            2 => Role::Replica,
            _ => Role::Unknown,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

impl Ban {
    fn from_u8(v: u8) -> Ban {
        match v {
            1 => Ban::LagBytes,
            2 => Ban::LagTime,
            _ => Ban::None,
        }
    }
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Ban::None => None,
            Ban::LagBytes => Some("lag above max_lag_bytes"),
            Ban::LagTime => Some("lag above max_lag"),
        }
    }
}

fn role_u8(r: BackendRole) -> u8 {
    match r {
        BackendRole::Primary => 1,
        BackendRole::Replica => 2,
        BackendRole::Auto => 0,
    }
}

/// Counters of one node; they only grow.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Transactions (or statements outside one) sent here as reads.
    pub reads: AtomicU64,
    /// Transactions sent here because they need the primary.
    pub writes: AtomicU64,
    /// Times the node was banned for lag.
    pub bans: AtomicU64,
    /// Times the node went down.
    pub downs: AtomicU64,
    pub checks: AtomicU64,
    pub check_failures: AtomicU64,
}

/// One backend.
#[derive(Debug)]
pub struct Node {
    pub id: usize,
    pub host: String,
    pub port: u16,
    configured: AtomicU8,
    weight: AtomicU32,
    health: AtomicU8,
    detached: AtomicBool,
    observed: AtomicU8,
    ban: AtomicU8,
    /// The primary's current WAL position, or a replica's replay position,
    /// at the last check (0 = unknown).
    pub lsn: AtomicU64,
    /// Bytes of WAL a replica is behind the primary (last check).
    pub lag_bytes: AtomicU64,
    /// How far a replica's replay is behind, in microseconds (last check).
    pub lag_us: AtomicU64,
    /// Moving average of response time (ns) of work routed here; 0 = none yet.
    ewma_ns: AtomicU64,
    /// Transactions routed here and not finished.
    outstanding: AtomicU32,
    /// Consecutive failed checks.
    failures: AtomicU32,
    /// Why the last check failed.
    pub last_error: Mutex<Option<String>>,
    pub stats: NodeStats,
    /// Time clients held a server of this node per transaction (from
    /// taking it to giving it back).
    pub transactions: crate::measure::Histogram,
}

impl Node {
    fn new(id: usize, b: &pgbalancer_config::BackendConfig, checked: bool) -> Node {
        Node {
            id,
            host: b.host.clone(),
            port: b.port,
            configured: AtomicU8::new(role_u8(b.role)),
            weight: AtomicU32::new(b.weight),
            health: AtomicU8::new(if checked { 0 } else { 1 }),
            detached: AtomicBool::new(false),
            observed: AtomicU8::new(if checked { 0 } else { role_u8(b.role) }),
            ban: AtomicU8::new(0),
            lsn: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            lag_us: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(0),
            outstanding: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            last_error: Mutex::new(None),
            stats: NodeStats::default(),
            transactions: crate::measure::Histogram::default(),
        }
    }

    pub fn configured_role(&self) -> BackendRole {
        match self.configured.load(Ordering::Relaxed) {
            1 => BackendRole::Primary,
            2 => BackendRole::Replica,
            _ => BackendRole::Auto,
        }
    }
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }
    pub fn observed_role(&self) -> Role {
        Role::from_u8(self.observed.load(Ordering::Relaxed))
    }
    /// The observed role, or the configured one until a check tells.
    pub fn role(&self) -> Role {
        match self.observed_role() {
            Role::Unknown => Role::from_u8(self.configured.load(Ordering::Relaxed)),
            r => r,
        }
    }
    pub fn detached(&self) -> bool {
        self.detached.load(Ordering::Relaxed)
    }
    pub fn ban(&self) -> Ban {
        Ban::from_u8(self.ban.load(Ordering::Relaxed))
    }
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }
    /// Moving average of response time; `None` before the first sample.
    pub fn ewma(&self) -> Option<Duration> {
        match self.ewma_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Takes no new work: down or detached.
    pub fn usable(&self) -> bool {
        !self.detached() && self.health() != Health::Down
    }

    /// Adds a response time to the moving average (weight 1/8). Racing
    /// updates may lose a sample; an average does not mind.
    pub fn observe_latency(&self, took: Duration) {
        let sample = (took.as_nanos() as u64).max(1);
        let old = self.ewma_ns.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { old - old / 8 + sample / 8 };
        self.ewma_ns.store(new.max(1), Ordering::Relaxed);
    }

    /// Counts a transaction routed here until the returned guard drops.
    pub fn begin(self: &Arc<Self>, read: bool) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        let counter = if read { &self.stats.reads } else { &self.stats.writes };
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight { node: self.clone() }
    }
}

/// A transaction in flight on a node (for `least_outstanding` and
/// `latency`); ends on drop.
#[derive(Debug)]
pub struct InFlight {
    node: Arc<Node>,
}

impl InFlight {
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.node.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where writes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    Node(usize),
    /// No usable node is primary (a failover is in progress, or the
    /// primary is down or detached).
    None,
    /// More than one node claims to be primary (`follow_primary: strict`).
    Conflict,
}

/// Which nodes take what; rebuilt whole after every change.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub primary: Primary,
    /// Nodes that take reads, with their weights (all > 0).
    pub readers: Vec<(usize, u32)>,
    /// Bumped on every rebuild that changed something.
    pub version: u64,
}

/// Why a session found no node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoNode {
    NoPrimary,
    Conflict,
}

/// Routing settings the table depends on (from the config).
#[derive(Debug, Clone, Copy)]
struct Policy {
    primary_reads: bool,
    follow_primary: FollowPrimary,
}

/// All nodes and the current route table.
pub struct Topology {
    nodes: Box<[Arc<Node>]>,
    route: ArcSwap<RouteTable>,
    policy: Mutex<Policy>,
    /// Operator override (`promote`): this node takes the writes.
    forced_primary: AtomicUsize,
    /// Sends the table version; sessions waiting for a primary watch it.
    changed: watch::Sender<u64>,
    /// Asks the checker for a round now (a session saw a node fail).
    pub(crate) check_now: Notify,
    /// Whether health checks run.
    checked: bool,
    pub(crate) picker: Picker,
    /// Rebuilds run one at a time, so none is lost to a race.
    rebuilding: Mutex<()>,
    /// The primary's WAL position at the last check that reached it: lag
    /// is measured against it while the primary does not answer.
    pub(crate) primary_lsn: AtomicU64,
}

const NO_NODE: usize = usize::MAX;

impl Topology {
    pub fn new(config: &Config) -> Topology {
        // One backend gets everything, as with PgBouncer: nothing to choose,
        // so nothing to check.
        let checked = !config.health_check_period.is_zero() && config.backends.len() > 1;
        let nodes: Box<[Arc<Node>]> =
            config.backends.iter().enumerate().map(|(i, b)| Arc::new(Node::new(i, b, checked))).collect();
        let (changed, _) = watch::channel(0);
        let t = Topology {
            nodes,
            route: ArcSwap::from_pointee(RouteTable { primary: Primary::None, readers: Vec::new(), version: 0 }),
            policy: Mutex::new(Policy { primary_reads: config.primary_reads, follow_primary: config.follow_primary }),
            forced_primary: AtomicUsize::new(NO_NODE),
            changed,
            check_now: Notify::new(),
            checked,
            picker: Picker::default(),
            rebuilding: Mutex::new(()),
            primary_lsn: AtomicU64::new(0),
        };
        t.rebuild();
        t
    }

    pub fn nodes(&self) -> &[Arc<Node>] {
        &self.nodes
    }

    pub fn node(&self, id: usize) -> Option<&Arc<Node>> {
        self.nodes.get(id)
    }

    /// More than one node: statements are classified and routed. With one
    /// node everything goes there and routing costs nothing.
    pub fn routed(&self) -> bool {
        self.nodes.len() > 1
    }

    pub fn checked(&self) -> bool {
        self.checked
    }

    pub fn table(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.route.load()
    }

    /// A receiver of table versions, to wait for a change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The node the operator made the write target, if any.
    pub fn forced_primary(&self) -> Option<usize> {
        match self.forced_primary.load(Ordering::Relaxed) {
            NO_NODE => None,
            id => Some(id),
        }
    }

    /// Reload: weights, configured roles and routing settings. The node
    /// list itself (host, port, order) changes only with a restart.
    pub fn reconfigure(&self, config: &Config) {
        for (node, b) in self.nodes.iter().zip(&config.backends) {
            if node.host == b.host && node.port == b.port {
                node.weight.store(b.weight, Ordering::Relaxed);
                node.configured.store(role_u8(b.role), Ordering::Relaxed);
                if !self.checked {
                    node.observed.store(role_u8(b.role), Ordering::Relaxed);
                }
            }
        }
        *self.policy.lock().unwrap() =
            Policy { primary_reads: config.primary_reads, follow_primary: config.follow_primary };
        self.rebuild();
    }

    /// Runtime control: the node takes no new work until attached.
    pub fn detach(&self, id: usize) -> bool {
        self.set_detached(id, true)
    }

    pub fn attach(&self, id: usize) -> bool {
        self.set_detached(id, false)
    }

    fn set_detached(&self, id: usize, v: bool) -> bool {
        let Some(n) = self.nodes.get(id) else { return false };
        n.detached.store(v, Ordering::Relaxed);
        self.rebuild();
        true
    }

    /// Runtime control: writes go to this node from now on, whatever the
    /// others claim (the operator's word beats `follow_primary`). `None`
    /// hands the choice back to the observed roles.
    pub fn force_primary(&self, id: Option<usize>) -> bool {
        if id.is_some_and(|i| i >= self.nodes.len()) {
            return false;
        }
        self.forced_primary.store(id.unwrap_or(NO_NODE), Ordering::Relaxed);
        self.rebuild();
        true
    }

    /// Recomputes the route table from the nodes' state; wakes waiters if
    /// it changed.
    pub fn rebuild(&self) {
        let policy = *self.policy.lock().unwrap();
        let usable = |n: &&Arc<Node>| n.usable();
        let _one_at_a_time = self.rebuilding.lock().unwrap();
        // The operator's choice, unless that node is down, detached, or
        // observed in recovery (writes would fail there).
        let forced =
            self.forced_primary().filter(|&i| self.nodes[i].usable() && self.nodes[i].observed_role() != Role::Replica);
        let primary = match forced {
            Some(i) => Primary::Node(i),
            None => {
                let mut claims = self.nodes.iter().filter(usable).filter(|n| n.role() == Role::Primary);
                match (claims.next(), claims.next()) {
                    (None, _) => Primary::None,
                    (Some(n), None) => Primary::Node(n.id),
                    (Some(n), Some(_)) => match policy.follow_primary {
                        FollowPrimary::First => Primary::Node(n.id),
                        FollowPrimary::Strict => Primary::Conflict,
                    },
                }
            }
        };
        let readers: Vec<(usize, u32)> = self
            .nodes
            .iter()
            .filter(usable)
            .filter(|n| n.weight() > 0 && n.ban() == Ban::None)
            .filter(|n| match primary {
                Primary::Node(p) if p == n.id => policy.primary_reads,
                _ => n.role() == Role::Replica,
            })
            .map(|n| (n.id, n.weight()))
            .collect();
        let old = self.route.load();
        if old.primary == primary && old.readers == readers {
            return;
        }
        let version = old.version + 1;
        if old.primary != primary {
            match primary {
                Primary::Node(i) => {
                    tracing::info!(node = i, host = %self.nodes[i].host, port = self.nodes[i].port, "writes go to this node")
                }
                Primary::None => tracing::warn!("no primary is up: writes wait for one (failover_wait_timeout)"),
                Primary::Conflict => {
                    tracing::error!(
                        "more than one node claims to be primary: writes are refused (follow_primary: strict)"
                    )
                }
            }
        }
        self.route.store(Arc::new(RouteTable { primary, readers, version }));
        self.changed.send_replace(version);
    }

    /// The write target now.
    pub fn primary(&self) -> Result<usize, NoNode> {
        match self.route.load().primary {
            Primary::Node(i) => Ok(i),
            Primary::None => Err(NoNode::NoPrimary),
            Primary::Conflict => Err(NoNode::Conflict),
        }
    }

    /// Waits up to `wait` for a write target (none while a failover is
    /// in progress).
    pub async fn wait_primary(&self, wait: Duration) -> Result<usize, NoNode> {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.primary() {
                Ok(i) => return Ok(i),
                Err(NoNode::Conflict) => return Err(NoNode::Conflict),
                Err(NoNode::NoPrimary) => {}
            }
            self.check_now.notify_one();
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return self.primary();
            }
        }
    }

    /// A session could not reach this node: check it now rather than at
    /// the next period.
    pub fn suspect(&self, id: usize) {
        tracing::debug!(node = id, "node suspected down; checking now");
        self.check_now.notify_one();
    }
}
