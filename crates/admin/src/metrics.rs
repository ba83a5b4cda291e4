//! `/metrics`: the OpenMetrics text format (which Prometheus scrapes), made
//! with `prometheus-client` from a fresh snapshot on every scrape.
//!
//! Names follow Prometheus conventions: a `pgbalancer_` prefix, base units,
//! `_total` for counters. Family names must be unique in OpenMetrics, so the
//! counter of clients ever accepted is `pgbalancer_client_connections_total`
//! (a `pgbalancer_clients_total` counter would belong to a family named
//! `pgbalancer_clients`, the gauge of clients connected now).
//!
//! Per-node series carry `node` (the id, the backend's position in the
//! config) and `address` (`host:port`).
//!
//! Histograms (pool waits, transaction time per node) are counted by the
//! proxy with fixed buckets ([`pgbalancer_proxy::measure`]); a scrape
//! copies them as they are ([`Measures`]), so nothing is observed here.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use pgbalancer_proxy::clients::ClientState;
use pgbalancer_proxy::measure::HistogramSnapshot;
use pgbalancer_proxy::snapshot::{NodeSnapshot, Snapshot};
use pgbalancer_proxy::topology::{Ban, Health, Role};
use pgbalancer_proxy::Shared;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// Content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Numbers the admin side keeps itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdminCounters {
    pub uptime_seconds: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    pub api_auth_failures: u64,
}

/// What the proxy measured beyond the [`Snapshot`]: client states,
/// histograms and bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Measures {
    /// Logged-in clients by state.
    pub clients_active: usize,
    pub clients_idle: usize,
    pub clients_waiting: usize,
    /// How long clients waited for a server when their pool had none free.
    pub pool_wait: HistogramSnapshot,
    /// Time from taking a server to giving it back, per node (by id).
    pub node_transactions: Vec<HistogramSnapshot>,
    /// Bytes from clients (to servers) and from servers (to clients).
    pub client_bytes: u64,
    pub server_bytes: u64,
}

fn empty_histogram() -> HistogramSnapshot {
    HistogramSnapshot { buckets: Vec::new(), count: 0, sum_seconds: 0.0 }
}

impl Default for Measures {
    fn default() -> Measures {
        Measures {
            clients_active: 0,
            clients_idle: 0,
            clients_waiting: 0,
            pool_wait: empty_histogram(),
            node_transactions: Vec::new(),
            client_bytes: 0,
            server_bytes: 0,
        }
    }
}

impl Measures {
    /// Reads them from the proxy: one relaxed load per number, no lock
    /// the proxy waits on.
    pub fn take(shared: &Shared) -> Measures {
        let mut m = Measures::default();
        for c in shared.clients.list() {
            match c.state() {
                ClientState::Active => m.clients_active += 1,
                ClientState::Idle => m.clients_idle += 1,
                ClientState::Waiting => m.clients_waiting += 1,
            }
        }
        m.pool_wait = shared.pools.waits.snapshot();
        m.node_transactions = shared.topology.nodes().iter().map(|n| n.transactions.snapshot()).collect();
        m.client_bytes = shared.traffic.client_bytes.load(Ordering::Relaxed);
        m.server_bytes = shared.traffic.server_bytes.load(Ordering::Relaxed);
        m
    }
}

type Labels = Vec<(String, String)>;

/// Histograms with fixed values, one per label set (none: a single
/// histogram), encoded as prometheus-client encodes its own.
#[derive(Debug)]
struct Histograms(Vec<(Labels, HistogramSnapshot)>);

impl Histograms {
    /// prometheus-client wants per-bucket (not cumulative) counts, +Inf
    /// last as `f64::MAX`.
    fn buckets(h: &HistogramSnapshot) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(h.buckets.len() + 1);
        let mut below = 0;
        for &(bound, cumulative) in &h.buckets {
            out.push((bound, cumulative.saturating_sub(below)));
            below = below.max(cumulative);
        }
        out.push((f64::MAX, h.count.saturating_sub(below)));
        out
    }
}

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            let buckets = Histograms::buckets(h);
            if labels.is_empty() {
                encoder.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)?;
            } else {
                encoder.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                    h.sum_seconds,
                    h.count,
                    &buckets,
                    None,
                )?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: usize) {
    let g: Gauge<i64, AtomicI64> = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    r.register(name, help, g);
}

/// `name` without `_total`: prometheus-client appends it to counters.
fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter<u64, AtomicU64> = Counter::default();
    c.inc_by(v);
    r.register(name, help, c);
}

fn node_labels(n: &NodeSnapshot) -> Labels {
    let address =
        if n.host.contains(':') { format!("[{}]:{}", n.host, n.port) } else { format!("{}:{}", n.host, n.port) };
    vec![("node".to_string(), n.id.to_string()), ("address".to_string(), address)]
}

type IntGauges = Family<Labels, Gauge<i64, AtomicI64>>;
type FloatGauges = Family<Labels, Gauge<f64, AtomicU64>>;
type Counters = Family<Labels, Counter<u64, AtomicU64>>;

/// A gauge family with one series per node.
fn node_gauge(
    r: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    nodes: &[NodeSnapshot],
    v: impl Fn(&NodeSnapshot) -> i64,
) {
    let f = IntGauges::default();
    for n in nodes {
        f.get_or_create(&node_labels(n)).set(v(n));
    }
    match unit {
        Some(u) => r.register_with_unit(name, help, u, f),
        None => r.register(name, help, f),
    }
}

/// A counter family (`name` without `_total`) with one series per node.
fn node_counter(r: &mut Registry, name: &str, help: &str, nodes: &[NodeSnapshot], v: impl Fn(&NodeSnapshot) -> u64) {
    let f = Counters::default();
    for n in nodes {
        f.get_or_create(&node_labels(n)).inc_by(v(n));
    }
    r.register(name, help, f);
}

fn nodes(r: &mut Registry, nodes: &[NodeSnapshot]) {
    let flag = |b: bool| i64::from(b);
    node_gauge(r, "node_up", "Whether the node's last health check passed (or checks are off)", None, nodes, |n| {
        flag(n.health == Health::Up)
    });
    node_gauge(r, "node_detached", "Whether the node was detached by the operator", None, nodes, |n| flag(n.detached));
    let roles = IntGauges::default();
    for n in nodes {
        for role in [Role::Primary, Role::Replica, Role::Unknown] {
            let mut labels = node_labels(n);
            labels.push(("role".to_string(), role.as_str().to_string()));
            roles.get_or_create(&labels).set(flag(n.role == role));
        }
    }
    r.register(
        "node_role",
        "The node's role (observed, or configured until checked): 1 for the series of its role",
        roles,
    );
    node_gauge(r, "node_write_target", "Whether writes go to this node now", None, nodes, |n| flag(n.write_target));
    node_gauge(r, "node_takes_reads", "Whether this node is among the read targets now", None, nodes, |n| {
        flag(n.takes_reads)
    });
    node_gauge(r, "node_banned", "Whether the node is banned from reads for replication lag", None, nodes, |n| {
        flag(n.ban != Ban::None)
    });
    node_gauge(r, "node_lag", "WAL the replica is behind the primary (last check)", Some(Unit::Bytes), nodes, |n| {
        i64::try_from(n.lag_bytes).unwrap_or(i64::MAX)
    });
    node_gauge(r, "node_outstanding", "Transactions routed to the node and not finished", None, nodes, |n| {
        i64::from(n.outstanding)
    });
    let lag = FloatGauges::default();
    let latency = FloatGauges::default();
    for n in nodes {
        lag.get_or_create(&node_labels(n)).set(n.lag.as_secs_f64());
        latency.get_or_create(&node_labels(n)).set(n.ewma_latency.map_or(0.0, |d| d.as_secs_f64()));
    }
    r.register_with_unit("node_lag", "How far the replica's replay is behind (last check)", Unit::Seconds, lag);
    r.register_with_unit(
        "node_ewma_latency",
        "Moving average of the response time of work routed to the node (0 before the first)",
        Unit::Seconds,
        latency,
    );
    let routed = Counters::default();
    for n in nodes {
        for (class, v) in [("read", n.reads), ("write", n.writes)] {
            let mut labels = node_labels(n);
            labels.push(("class".to_string(), class.to_string()));
            routed.get_or_create(&labels).inc_by(v);
        }
    }
    r.register(
        "node_routed_transactions",
        "Transactions (or statements outside one) routed to the node, by class: read (provably read-only) \
         or write (needed the primary)",
        routed,
    );
    node_counter(r, "node_bans", "Times the node was banned from reads for lag", nodes, |n| n.bans);
    node_counter(r, "node_downs", "Times the node went down", nodes, |n| n.downs);
    node_counter(r, "node_checks", "Health checks of the node", nodes, |n| n.checks);
    node_counter(r, "node_check_failures", "Health checks of the node that failed", nodes, |n| n.check_failures);
}

/// Renders every metric; `paused`: whether the proxy is PAUSEd.
pub fn render(s: &Snapshot, a: &AdminCounters, m: &Measures, paused: bool) -> String {
    let t = &s.totals;
    let mut r = Registry::with_prefix("pgbalancer");
    gauge(&mut r, "paused", "1 while PAUSEd: new transactions wait for RESUME", usize::from(paused));
    // The states of logged-in clients; `other`: connected, but logging in
    // or on the SQL admin console. The series sum to the clients connected.
    let in_session = m.clients_active + m.clients_idle + m.clients_waiting;
    let clients: Family<Labels, Gauge<i64, AtomicI64>> = Family::default();
    for (state, n) in [
        ("active", m.clients_active),
        ("idle", m.clients_idle),
        ("waiting", m.clients_waiting),
        ("other", t.clients.saturating_sub(in_session)),
    ] {
        clients.get_or_create(&vec![("state".to_string(), state.to_string())]).set(n as i64);
    }
    r.register(
        "clients",
        "Clients connected now, by state: active (holds a server), idle, waiting (for a server), \
         other (logging in, or on the SQL admin console)",
        clients,
    );
    gauge(
        &mut r,
        "pinned_clients",
        "Transaction-mode clients pinned to their server by session state",
        t.pinned_clients,
    );
    gauge(&mut r, "waiting_clients", "Clients waiting for a server connection", t.waiting_clients);
    let servers: Family<Labels, Gauge<i64, AtomicI64>> = Family::default();
    for (state, n) in [("active", t.servers_active), ("idle", t.servers_idle), ("connecting", t.servers_connecting)] {
        servers.get_or_create(&vec![("state".to_string(), state.to_string())]).set(n as i64);
    }
    r.register("servers", "Server connections by state", servers);
    gauge(&mut r, "backends", "Configured backends (nodes)", s.backends.len());
    gauge(&mut r, "pools", "Pools (database, user, backend)", s.pools.len());
    counter(&mut r, "client_connections", "Clients accepted", t.clients_total);
    counter(&mut r, "clients_rejected", "Clients refused because max_client_conn were connected", t.clients_rejected);
    counter(&mut r, "login_failures", "Client logins that failed", t.login_failures);
    gauge(&mut r, "unauthenticated_clients", "Connections still logging in", t.unauthenticated);
    counter(
        &mut r,
        "unauthenticated_rejected",
        "Connections refused at max_unauthenticated_clients",
        t.unauthenticated_rejected,
    );
    counter(&mut r, "auth_throttled", "Logins refused because their source failed too often", t.auth_throttled);
    counter(&mut r, "transactions", "Transactions (and statements outside one) finished", t.transactions);
    counter(&mut r, "server_connects", "Server connections opened (attempts)", t.connects);
    counter(&mut r, "server_connect_failures", "Server connections that failed to open", t.connect_failures);
    counter(&mut r, "wait_timeouts", "Clients that gave up waiting after query_wait_timeout", t.wait_timeouts);
    counter(&mut r, "reloads", "Configuration reloads applied", a.reloads);
    counter(&mut r, "reload_failures", "Configuration reloads rejected", a.reload_failures);
    counter(
        &mut r,
        "api_auth_failures",
        "REST API requests refused for a missing or invalid token",
        a.api_auth_failures,
    );
    let up: Gauge<i64, AtomicI64> = Gauge::default();
    up.set(i64::try_from(a.uptime_seconds).unwrap_or(i64::MAX));
    r.register_with_unit("uptime", "Time since the daemon started", Unit::Seconds, up);
    for (name, help, v) in [
        (
            "client",
            "Bytes received from clients and forwarded to servers (counted when a transaction ends)",
            m.client_bytes,
        ),
        (
            "server",
            "Bytes received from servers and forwarded to clients (counted when a transaction ends)",
            m.server_bytes,
        ),
    ] {
        let c: Counter<u64, AtomicU64> = Counter::default();
        c.inc_by(v);
        r.register_with_unit(name, help, Unit::Bytes, c);
    }
    r.register_with_unit(
        "pool_wait",
        "How long clients waited for a server connection when their pool had none free (waits that timed out included)",
        Unit::Seconds,
        Histograms(vec![(Vec::new(), m.pool_wait.clone())]),
    );
    nodes(&mut r, &s.nodes);
    let per_node = s
        .nodes
        .iter()
        .map(|n| (node_labels(n), m.node_transactions.get(n.id).cloned().unwrap_or_else(empty_histogram)))
        .collect();
    r.register_with_unit(
        "node_transaction",
        "Time a client held a server of the node: from taking it to giving it back (a transaction, or a statement outside one)",
        Unit::Seconds,
        Histograms(per_node),
    );
    let mut out = String::new();
    encode(&mut out, &r).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use pgbalancer_config::{BackendRole, PoolMode};
    use pgbalancer_proxy::snapshot::{RoutingSnapshot, Totals};
    use pgbalancer_proxy::topology::Primary;
    use pgbalancer_proxy::Phase;

    fn node(id: usize, role: Role) -> NodeSnapshot {
        NodeSnapshot {
            id,
            host: "10.0.0.1".into(),
            port: 5432 + id as u16,
            configured_role: BackendRole::Auto,
            observed_role: role,
            role,
            health: Health::Up,
            detached: false,
            weight: 1,
            write_target: role == Role::Primary,
            takes_reads: role == Role::Replica,
            lag_bytes: 0,
            lag: Duration::ZERO,
            ban: Ban::None,
            ewma_latency: None,
            outstanding: 0,
            reads: 0,
            writes: 0,
            bans: 0,
            downs: 0,
            checks: 0,
            check_failures: 0,
            last_error: None,
        }
    }

    #[test]
    fn names_types_and_values() {
        let s = Snapshot {
            phase: Phase::Running,
            pool_mode: PoolMode::Transaction,
            pool_size: 10,
            backends: Vec::new(),
            pools: Vec::new(),
            nodes: vec![
                NodeSnapshot { writes: 11, outstanding: 2, checks: 5, ..node(0, Role::Primary) },
                NodeSnapshot {
                    reads: 30,
                    lag_bytes: 4096,
                    lag: Duration::from_millis(1500),
                    ban: Ban::LagBytes,
                    bans: 1,
                    downs: 2,
                    check_failures: 3,
                    ewma_latency: Some(Duration::from_micros(2500)),
                    takes_reads: false,
                    ..node(1, Role::Replica)
                },
                NodeSnapshot { health: Health::Down, detached: true, takes_reads: false, ..node(2, Role::Unknown) },
            ],
            routing: RoutingSnapshot { primary: Primary::Node(0), forced_primary: None, health_checks: true },
            totals: Totals {
                clients: 3,
                pinned_clients: 1,
                clients_total: 7,
                transactions: 42,
                servers_active: 2,
                servers_idle: 5,
                ..Totals::default()
            },
        };
        let a = AdminCounters { uptime_seconds: 9, reloads: 2, reload_failures: 1, api_auth_failures: 4 };
        // Waits of 0.3 ms, 2 ms and 20 s (beyond every bound).
        let waits = pgbalancer_proxy::measure::Histogram::default();
        for d in [Duration::from_micros(300), Duration::from_millis(2), Duration::from_secs(20)] {
            waits.observe(d);
        }
        let node1 = pgbalancer_proxy::measure::Histogram::default();
        node1.observe(Duration::from_millis(7));
        let m = Measures {
            clients_active: 1,
            clients_idle: 1,
            clients_waiting: 0,
            pool_wait: waits.snapshot(),
            node_transactions: vec![empty_histogram(), node1.snapshot()],
            client_bytes: 1234,
            server_bytes: 56789,
        };
        let text = render(&s, &a, &m, true);
        assert!(render(&s, &a, &m, false).lines().any(|l| l == "pgbalancer_paused 0"));
        // Node 2 has no histogram of its own (none was passed): all zeros.
        for line in [
            "# TYPE pgbalancer_paused gauge",
            "pgbalancer_paused 1",
            "# TYPE pgbalancer_clients gauge",
            "pgbalancer_clients{state=\"active\"} 1",
            "pgbalancer_clients{state=\"idle\"} 1",
            "pgbalancer_clients{state=\"waiting\"} 0",
            "pgbalancer_clients{state=\"other\"} 1",
            "# TYPE pgbalancer_client_bytes counter",
            "# UNIT pgbalancer_client_bytes bytes",
            "pgbalancer_client_bytes_total 1234",
            "pgbalancer_server_bytes_total 56789",
            "# TYPE pgbalancer_pool_wait_seconds histogram",
            "# UNIT pgbalancer_pool_wait_seconds seconds",
            "pgbalancer_pool_wait_seconds_count 3",
            "pgbalancer_pool_wait_seconds_bucket{le=\"0.0005\"} 1",
            "pgbalancer_pool_wait_seconds_bucket{le=\"0.001\"} 1",
            "pgbalancer_pool_wait_seconds_bucket{le=\"0.0025\"} 2",
            "pgbalancer_pool_wait_seconds_bucket{le=\"10.0\"} 2",
            "pgbalancer_pool_wait_seconds_bucket{le=\"+Inf\"} 3",
            "# TYPE pgbalancer_node_transaction_seconds histogram",
            "pgbalancer_node_transaction_seconds_count{node=\"1\",address=\"10.0.0.1:5433\"} 1",
            "pgbalancer_node_transaction_seconds_sum{node=\"1\",address=\"10.0.0.1:5433\"} 0.007",
            "pgbalancer_node_transaction_seconds_bucket{le=\"0.005\",node=\"1\",address=\"10.0.0.1:5433\"} 0",
            "pgbalancer_node_transaction_seconds_bucket{le=\"0.01\",node=\"1\",address=\"10.0.0.1:5433\"} 1",
            "pgbalancer_node_transaction_seconds_bucket{le=\"+Inf\",node=\"1\",address=\"10.0.0.1:5433\"} 1",
            "pgbalancer_node_transaction_seconds_count{node=\"0\",address=\"10.0.0.1:5432\"} 0",
            "pgbalancer_node_transaction_seconds_count{node=\"2\",address=\"10.0.0.1:5434\"} 0",
            "pgbalancer_node_transaction_seconds_bucket{le=\"+Inf\",node=\"2\",address=\"10.0.0.1:5434\"} 0",
            "pgbalancer_pinned_clients 1",
            "# TYPE pgbalancer_client_connections counter",
            "pgbalancer_client_connections_total 7",
            "pgbalancer_transactions_total 42",
            "pgbalancer_servers{state=\"active\"} 2",
            "pgbalancer_servers{state=\"idle\"} 5",
            "pgbalancer_servers{state=\"connecting\"} 0",
            "pgbalancer_reloads_total 2",
            "pgbalancer_reload_failures_total 1",
            "pgbalancer_api_auth_failures_total 4",
            "# UNIT pgbalancer_uptime_seconds seconds",
            "pgbalancer_uptime_seconds 9",
            "# TYPE pgbalancer_node_up gauge",
            "pgbalancer_node_up{node=\"0\",address=\"10.0.0.1:5432\"} 1",
            "pgbalancer_node_up{node=\"2\",address=\"10.0.0.1:5434\"} 0",
            "pgbalancer_node_detached{node=\"2\",address=\"10.0.0.1:5434\"} 1",
            "pgbalancer_node_role{node=\"0\",address=\"10.0.0.1:5432\",role=\"primary\"} 1",
            "pgbalancer_node_role{node=\"0\",address=\"10.0.0.1:5432\",role=\"replica\"} 0",
            "pgbalancer_node_role{node=\"1\",address=\"10.0.0.1:5433\",role=\"replica\"} 1",
            "pgbalancer_node_role{node=\"2\",address=\"10.0.0.1:5434\",role=\"unknown\"} 1",
            "pgbalancer_node_write_target{node=\"0\",address=\"10.0.0.1:5432\"} 1",
            "pgbalancer_node_write_target{node=\"1\",address=\"10.0.0.1:5433\"} 0",
            "pgbalancer_node_banned{node=\"1\",address=\"10.0.0.1:5433\"} 1",
            "# UNIT pgbalancer_node_lag_bytes bytes",
            "pgbalancer_node_lag_bytes{node=\"1\",address=\"10.0.0.1:5433\"} 4096",
            "# UNIT pgbalancer_node_lag_seconds seconds",
            "pgbalancer_node_lag_seconds{node=\"1\",address=\"10.0.0.1:5433\"} 1.5",
            "pgbalancer_node_ewma_latency_seconds{node=\"1\",address=\"10.0.0.1:5433\"} 0.0025",
            "pgbalancer_node_outstanding{node=\"0\",address=\"10.0.0.1:5432\"} 2",
            "# TYPE pgbalancer_node_routed_transactions counter",
            "pgbalancer_node_routed_transactions_total{node=\"1\",address=\"10.0.0.1:5433\",class=\"read\"} 30",
            "pgbalancer_node_routed_transactions_total{node=\"1\",address=\"10.0.0.1:5433\",class=\"write\"} 0",
            "pgbalancer_node_routed_transactions_total{node=\"0\",address=\"10.0.0.1:5432\",class=\"write\"} 11",
            "pgbalancer_node_bans_total{node=\"1\",address=\"10.0.0.1:5433\"} 1",
            "pgbalancer_node_downs_total{node=\"1\",address=\"10.0.0.1:5433\"} 2",
            "pgbalancer_node_checks_total{node=\"0\",address=\"10.0.0.1:5432\"} 5",
            "pgbalancer_node_check_failures_total{node=\"1\",address=\"10.0.0.1:5433\"} 3",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // The old unlabelled gauge and the two per-class counters are gone
        // (one name per quantity).
        for gone in ["pgbalancer_clients ", "pgbalancer_node_reads", "pgbalancer_node_writes"] {
            assert!(!text.lines().any(|l| l.starts_with(gone)), "{gone:?} still in\n{text}");
        }
        let sum = text.lines().find_map(|l| l.strip_prefix("pgbalancer_pool_wait_seconds_sum ")).unwrap();
        assert!((sum.parse::<f64>().unwrap() - 20.0023).abs() < 1e-9, "{sum}");
        // Every bucket of a histogram is there, in order, and never decreases.
        let node1: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("pgbalancer_node_transaction_seconds_bucket{") && l.contains("node=\"1\""))
            .collect();
        assert_eq!(node1.len(), pgbalancer_proxy::measure::BUCKETS.len() + 1, "{node1:?}");
        let counts: Vec<u64> = node1.iter().map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    }
}
