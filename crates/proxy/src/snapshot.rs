//! A point-in-time copy of what the proxy is doing, for the admin API and
//! metrics: plain data, no serde (the admin crate decides the JSON shape).
//!
//! Every number is read without blocking the proxy: the process counters
//! are atomics, and each pool's lock is taken for one `(open, idle)` read.
//! The numbers of different pools are not taken at one instant, so sums may
//! be off by a connection that moved while the snapshot was taken.
//! Nodes are read the same way: each field is one atomic load, and the
//! route table (who takes writes and reads) is one consistent copy.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pgbalancer_config::{BackendRole, PoolMode};

use crate::topology::{Ban, Health, Primary, Role, Topology};
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
    /// The nodes (backends as the router sees them), by id.
    pub nodes: Vec<NodeSnapshot>,
    pub routing: RoutingSnapshot,
}

/// Where writes go, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingSnapshot {
    /// The write target of the route table.
    pub primary: Primary,
    /// The node the operator made the write target (`promote`), if any.
    pub forced_primary: Option<usize>,
    /// Whether health checks run (more than one node and a period > 0).
    pub health_checks: bool,
}

/// One node: its configuration, what the health checks saw, and what was
/// routed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSnapshot {
    /// Position in the config's backend list.
    pub id: usize,
    pub host: String,
    pub port: u16,
    pub configured_role: BackendRole,
    /// What `pg_is_in_recovery()` said at the last check; with checks off,
    /// the configured role.
    pub observed_role: Role,
    /// The role routing uses: observed, or configured until a check tells.
    pub role: Role,
    pub health: Health,
    /// Taken out of service by the operator.
    pub detached: bool,
    pub weight: u32,
    /// Writes go here now (route table).
    pub write_target: bool,
    /// Among the route table's readers now.
    pub takes_reads: bool,
    /// WAL bytes behind the primary at the last check (replicas).
    pub lag_bytes: u64,
    /// Replay delay at the last check (replicas).
    pub lag: Duration,
    /// Why the node takes no reads although up (lag), if it is banned.
    pub ban: Ban,
    /// Moving average of the response time of work routed here.
    pub ewma_latency: Option<Duration>,
    /// Transactions routed here and not finished.
    pub outstanding: u32,
    /// Transactions routed here as reads, ever.
    pub reads: u64,
    /// Transactions routed here because they needed the primary, ever.
    pub writes: u64,
    /// Times banned for lag.
    pub bans: u64,
    /// Times it went down.
    pub downs: u64,
    pub checks: u64,
    pub check_failures: u64,
    /// Why the last health check failed (cleared by a passing one).
    pub last_error: Option<String>,
}

impl NodeSnapshot {
    /// Takes no new work: detached or down.
    pub fn usable(&self) -> bool {
        !self.detached && self.health != Health::Down
    }
}

/// Every node of `topology`, by id, against one route table.
pub fn nodes_snapshot(topology: &Topology) -> (Vec<NodeSnapshot>, RoutingSnapshot) {
    let table = topology.table();
    let nodes = topology
        .nodes()
        .iter()
        .map(|n| NodeSnapshot {
            id: n.id,
            host: n.host.clone(),
            port: n.port,
            configured_role: n.configured_role(),
            observed_role: n.observed_role(),
            role: n.role(),
            health: n.health(),
            detached: n.detached(),
            weight: n.weight(),
            write_target: table.primary == Primary::Node(n.id),
            takes_reads: table.readers.iter().any(|&(id, _)| id == n.id),
            lag_bytes: n.lag_bytes.load(Ordering::Relaxed),
            lag: Duration::from_micros(n.lag_us.load(Ordering::Relaxed)),
            ban: n.ban(),
            ewma_latency: n.ewma(),
            outstanding: n.outstanding(),
            reads: n.stats.reads.load(Ordering::Relaxed),
            writes: n.stats.writes.load(Ordering::Relaxed),
            bans: n.stats.bans.load(Ordering::Relaxed),
            downs: n.stats.downs.load(Ordering::Relaxed),
            checks: n.stats.checks.load(Ordering::Relaxed),
            check_failures: n.stats.check_failures.load(Ordering::Relaxed),
            last_error: n.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
        .collect();
    let routing = RoutingSnapshot {
        primary: table.primary,
        forced_primary: topology.forced_primary(),
        health_checks: topology.checked(),
    };
    (nodes, routing)
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
    /// Connections that have not finished logging in, now.
    pub unauthenticated: usize,
    /// Connections refused at `max_unauthenticated_clients`, ever.
    pub unauthenticated_rejected: u64,
    /// Logins refused because their source failed too often, ever.
    pub auth_throttled: u64,
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
            unauthenticated: s.unauthenticated(),
            unauthenticated_rejected: s.unauthenticated_rejected.load(Ordering::Relaxed),
            auth_throttled: s.auth_throttled.load(Ordering::Relaxed),
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
        let (nodes, routing) = nodes_snapshot(&self.topology);
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
            nodes,
            routing,
        }
    }
}

impl ProxyHandle {
    /// Takes a [`Snapshot`] of this proxy.
    pub fn snapshot(&self) -> Snapshot {
        self.shared().snapshot()
    }
}

/// One connected client (`SHOW CLIENTS`, `GET /api/v1/clients`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSnapshot {
    pub id: u64,
    pub addr: std::net::SocketAddr,
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub connected_at: std::time::SystemTime,
    pub state: crate::clients::ClientState,
    /// The server it holds: node id and backend pid.
    pub server: Option<(usize, i32)>,
    pub transactions: u64,
}

/// Every logged-in client, by id.
pub fn clients_snapshot(shared: &Shared) -> Vec<ClientSnapshot> {
    shared
        .clients
        .list()
        .iter()
        .map(|c| ClientSnapshot {
            id: c.id,
            addr: c.addr,
            user: c.user.clone(),
            database: c.database.clone(),
            application_name: c.application_name.clone(),
            connected_at: c.connected_at,
            state: c.state(),
            server: c.server(),
            transactions: c.transactions.load(Ordering::Relaxed),
        })
        .collect()
}

/// One server connection (`SHOW SERVERS`, `GET /api/v1/servers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSnapshot {
    pub node: usize,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    /// Backend process id.
    pub pid: i32,
    /// Held by this client (`active`), or idle in its pool.
    pub client: Option<u64>,
    /// Idle connections: how long since last used.
    pub idle_for: Option<Duration>,
    /// Idle connections: how long since opened.
    pub age: Option<Duration>,
}

/// Idle connections from every pool, and the ones clients hold.
pub fn servers_snapshot(shared: &Shared) -> Vec<ServerSnapshot> {
    let now = std::time::Instant::now();
    let mut out = Vec::new();
    for pool in shared.pools.all() {
        for (pid, created, used) in pool.idle_servers() {
            out.push(ServerSnapshot {
                node: pool.key.backend,
                host: pool.host.clone(),
                port: pool.port,
                database: pool.key.database.clone(),
                user: pool.key.user.clone(),
                pid,
                client: None,
                idle_for: Some(now.saturating_duration_since(used)),
                age: Some(now.saturating_duration_since(created)),
            });
        }
    }
    let nodes = shared.topology.nodes();
    for c in shared.clients.list() {
        if let (Some((node, pid)), Some(n)) = (c.server(), c.server().and_then(|(node, _)| nodes.get(node))) {
            out.push(ServerSnapshot {
                node,
                host: n.host.clone(),
                port: n.port,
                database: c.database.clone(),
                user: c.user.clone(),
                pid,
                client: Some(c.id),
                idle_for: None,
                age: None,
            });
        }
    }
    out.sort_by(|a, b| (a.node, &a.database, &a.user, a.pid).cmp(&(b.node, &b.database, &b.user, b.pid)));
    out
}

/// A time as UTC calendar fields: (year, month, day, hour, minute, second);
/// `None` before the epoch.
pub fn utc_fields(t: std::time::SystemTime) -> Option<(i64, i64, i64, u64, u64, u64)> {
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some((year, month, day, rem / 3600, rem % 3600 / 60, rem % 60))
}
