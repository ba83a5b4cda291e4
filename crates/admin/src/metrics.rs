//! `/metrics`: the OpenMetrics text format (which Prometheus scrapes), made
//! with `prometheus-client` from a fresh snapshot on every scrape.
//!
//! Names follow Prometheus conventions: a `pgbalancer_` prefix, base units,
//! `_total` for counters. Family names must be unique in OpenMetrics, so the
//! counter of clients ever accepted is `pgbalancer_client_connections_total`
//! (a `pgbalancer_clients_total` counter would belong to a family named
//! `pgbalancer_clients`, the gauge of clients connected now).

use std::sync::atomic::{AtomicI64, AtomicU64};

use pgbalancer_proxy::snapshot::Snapshot;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

type Labels = Vec<(String, String)>;

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

/// Renders every metric.
pub fn render(s: &Snapshot, a: &AdminCounters) -> String {
    let t = &s.totals;
    let mut r = Registry::with_prefix("pgbalancer");
    gauge(&mut r, "clients", "Clients connected now (logging in included)", t.clients);
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
    let mut out = String::new();
    encode(&mut out, &r).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbalancer_config::PoolMode;
    use pgbalancer_proxy::snapshot::Totals;
    use pgbalancer_proxy::Phase;

    #[test]
    fn names_types_and_values() {
        let s = Snapshot {
            phase: Phase::Running,
            pool_mode: PoolMode::Transaction,
            pool_size: 10,
            backends: Vec::new(),
            pools: Vec::new(),
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
        let text = render(&s, &a);
        for line in [
            "# TYPE pgbalancer_clients gauge",
            "pgbalancer_clients 3",
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
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
