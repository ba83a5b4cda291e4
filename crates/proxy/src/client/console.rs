//! The SQL admin console: a client that logs in to the virtual database
//! `pgbalancer` as one of `admin_users` (or `stats_users`, read-only) talks
//! to pgbalancer itself, PgBouncer-style: `SHOW POOLS;`, `SHOW CLIENTS;`,
//! `SHOW SERVERS;`, `SHOW NODES;` (pgpool's `SHOW pool_nodes;` too),
//! `SHOW STATS;`, `SHOW CONFIG;`, `SHOW VERSION;`, `SHOW HELP;`, and, for
//! admins, `RELOAD;`, `PAUSE;`, `RESUME;`, `SHUTDOWN;`. Simple protocol
//! only; every value is text.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use pgbalancer_config::Config;
use tokio::sync::oneshot;

use super::conn::ClientConn;
use super::params::ClientParams;
use crate::control::{Command, Paused};
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::write::{self, Severity};
use crate::protocol::{fe, read, sqlstate, TxStatus};
use crate::snapshot::{clients_snapshot, nodes_snapshot, servers_snapshot};
use crate::{Phase, Shared};

/// The database name that reaches the console, not PostgreSQL.
pub const DATABASE: &str = "pgbalancer";

/// Largest message the console reads.
const MAX_MESSAGE: usize = 64 * 1024;

/// How long `PAUSE` waits for clients to give their servers back.
const PAUSE_WAIT: Duration = Duration::from_secs(300);

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `admin_users`: everything.
    Admin,
    /// `stats_users`: `SHOW` only.
    Stats,
}

/// The console access of `user`, if any.
pub fn access(config: &Config, user: &str) -> Option<Access> {
    if config.admin_users.iter().any(|u| u == user) {
        Some(Access::Admin)
    } else if config.stats_users.iter().any(|u| u == user) {
        Some(Access::Stats)
    } else {
        None
    }
}

/// The parameters a console client is told at login.
pub fn greet(buf: &mut BytesMut, params: &ClientParams) {
    let version = format!("15.0 (pgbalancer {})", env!("CARGO_PKG_VERSION"));
    for (k, v) in [
        ("server_version", version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
        ("application_name", params.get("application_name").unwrap_or("")),
    ] {
        write::parameter_status(buf, k, v);
    }
}

/// Serves a logged-in console client until it leaves.
pub async fn run(mut conn: ClientConn, shared: Arc<Shared>, user: String, access: Access) {
    let mut phase = shared.phase.clone();
    let mut out = BytesMut::new();
    // An extended-protocol message came: answer its Sync with an error.
    let mut refused_extended = false;
    loop {
        let h = match frame::peek_frontend(&conn.read_buf, MAX_MESSAGE) {
            Ok(Some(h)) if conn.read_buf.len() >= h.total_len => h,
            Ok(partial) => {
                let want = partial.map_or(HEADER_LEN, |h| h.total_len - conn.read_buf.len());
                tokio::select! {
                    r = conn.fill(want) => if r.is_err() { return },
                    _ = async { phase.wait_for(|p| *p != Phase::Running).await.is_ok() } => {
                        conn.fatal(sqlstate::ADMIN_SHUTDOWN, "terminating connection: pgbalancer is shutting down").await;
                        return;
                    }
                }
                continue;
            }
            Err(e) => {
                conn.fatal(sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await;
                return;
            }
        };
        let msg = conn.read_buf.split_to(h.total_len);
        let body = &msg[HEADER_LEN..];
        match h.tag {
            fe::QUERY => {
                let text = read::query_text(body).unwrap_or("");
                // Bounded and escaped: a console user cannot flood or forge log lines.
                let shown: String = text.chars().take(200).collect();
                tracing::info!(%user, command = ?shown, "admin console");
                run_query(&shared, access, text, &mut out).await;
                write::ready_for_query(&mut out, TxStatus::Idle);
            }
            fe::TERMINATE => return,
            fe::SYNC => {
                if std::mem::take(&mut refused_extended) {
                    error(
                        &mut out,
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "the admin console supports the simple query protocol only",
                    );
                }
                write::ready_for_query(&mut out, TxStatus::Idle);
            }
            fe::PARSE | fe::BIND | fe::DESCRIBE | fe::EXECUTE | fe::CLOSE | fe::FLUSH => refused_extended = true,
            other => {
                let msg = format!("unexpected message type {:?} on the admin console", other as char);
                conn.fatal(sqlstate::PROTOCOL_VIOLATION, &msg).await;
                return;
            }
        }
        if !out.is_empty() {
            if conn.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

fn error(out: &mut BytesMut, code: &str, message: &str) {
    write::error_response(out, Severity::Error, code, message);
}

fn notice(out: &mut BytesMut, message: &str) {
    write::error_response(out, Severity::Notice, "00000", message);
}

/// Runs each `;`-separated command; the first error ends the query.
async fn run_query(shared: &Arc<Shared>, access: Access, text: &str, out: &mut BytesMut) {
    let mut any = false;
    for stmt in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        any = true;
        let words: Vec<String> = stmt.split_ascii_whitespace().map(str::to_ascii_lowercase).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let ok = match words.as_slice() {
            ["show", what] => show(shared, what, out),
            [cmd] if matches!(*cmd, "reload" | "pause" | "resume" | "shutdown") => {
                if access != Access::Admin {
                    error(out, "42501", &format!("{} needs an admin user (admin_users)", cmd.to_uppercase()));
                    false
                } else {
                    control(shared, cmd, out).await
                }
            }
            _ => {
                error(out, "42601", &format!("unknown admin console command \"{stmt}\"; try SHOW HELP"));
                false
            }
        };
        if !ok {
            return;
        }
    }
    if !any {
        write::empty(out, crate::protocol::be::EMPTY_QUERY_RESPONSE);
    }
}

/// A result set of text columns.
fn table(out: &mut BytesMut, columns: &[&str], rows: &[Vec<String>]) {
    write::row_description(out, columns);
    for row in rows {
        write::data_row(out, row.iter().map(|v| Some(v.as_str())));
    }
    write::command_complete(out, &format!("SHOW {}", rows.len()));
}

const HELP: [(&str, &str); 13] = [
    ("SHOW POOLS", "server connections per database, user and node"),
    ("SHOW CLIENTS", "connected clients"),
    ("SHOW SERVERS", "server connections, idle and in use"),
    ("SHOW NODES", "backends: role, health, lag, reads and writes routed (also SHOW POOL_NODES)"),
    ("SHOW STATS", "process totals"),
    ("SHOW CONFIG", "the configuration in force, secrets hidden"),
    ("SHOW VERSION", "pgbalancer's version"),
    ("SHOW HELP", "this list"),
    ("RELOAD", "re-read the configuration file (admin)"),
    ("PAUSE", "new transactions wait; returns once no client holds a server (admin)"),
    ("RESUME", "end a PAUSE (admin)"),
    ("SHUTDOWN", "graceful shutdown of pgbalancer (admin)"),
    ("", "statements end with ';'; several per query run in order"),
];

fn show(shared: &Shared, what: &str, out: &mut BytesMut) -> bool {
    let yes = |b: bool| if b { "t" } else { "f" }.to_owned();
    match what {
        "help" => {
            let rows: Vec<Vec<String>> =
                HELP.iter().filter(|(c, _)| !c.is_empty()).map(|(c, d)| vec![c.to_string(), d.to_string()]).collect();
            table(out, &["command", "description"], &rows);
        }
        "version" => table(out, &["version"], &[vec![format!("pgbalancer {}", env!("CARGO_PKG_VERSION"))]]),
        "pools" => {
            let s = shared.snapshot();
            let mode = s.pool_mode.to_string();
            let rows: Vec<Vec<String>> = s
                .pools
                .iter()
                .map(|p| {
                    vec![
                        p.database.clone(),
                        p.user.clone(),
                        p.backend.to_string(),
                        p.host.clone(),
                        p.port.to_string(),
                        mode.clone(),
                        p.waiting.to_string(),
                        p.active.to_string(),
                        p.idle.to_string(),
                        p.connecting.to_string(),
                        p.connects.to_string(),
                        p.connect_failures.to_string(),
                        p.wait_timeouts.to_string(),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "database",
                    "user",
                    "node",
                    "host",
                    "port",
                    "pool_mode",
                    "cl_waiting",
                    "sv_active",
                    "sv_idle",
                    "sv_login",
                    "connects",
                    "connect_failures",
                    "wait_timeouts",
                ],
                &rows,
            );
        }
        "clients" => {
            let rows: Vec<Vec<String>> = clients_snapshot(shared)
                .iter()
                .map(|c| {
                    vec![
                        c.id.to_string(),
                        c.user.clone(),
                        c.database.clone(),
                        c.state.as_str().to_owned(),
                        c.addr.ip().to_string(),
                        c.addr.port().to_string(),
                        timestamp(c.connected_at),
                        c.application_name.clone(),
                        c.server.map_or(String::new(), |(n, _)| n.to_string()),
                        c.server.map_or(String::new(), |(_, pid)| pid.to_string()),
                        c.transactions.to_string(),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "id",
                    "user",
                    "database",
                    "state",
                    "addr",
                    "port",
                    "connect_time",
                    "application_name",
                    "node",
                    "server_pid",
                    "transactions",
                ],
                &rows,
            );
        }
        "servers" => {
            let rows: Vec<Vec<String>> = servers_snapshot(shared)
                .iter()
                .map(|s| {
                    vec![
                        s.node.to_string(),
                        s.host.clone(),
                        s.port.to_string(),
                        s.database.clone(),
                        s.user.clone(),
                        if s.client.is_some() { "active" } else { "idle" }.to_owned(),
                        s.pid.to_string(),
                        s.client.map_or(String::new(), |c| c.to_string()),
                        s.idle_for.map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64())),
                        s.age.map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64())),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "node",
                    "host",
                    "port",
                    "database",
                    "user",
                    "state",
                    "pid",
                    "client_id",
                    "idle_seconds",
                    "age_seconds",
                ],
                &rows,
            );
        }
        "nodes" | "pool_nodes" => {
            let (nodes, _) = nodes_snapshot(&shared.topology);
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    let status = if n.detached { "detached" } else { n.health.as_str() };
                    vec![
                        n.id.to_string(),
                        n.host.clone(),
                        n.port.to_string(),
                        status.to_owned(),
                        n.weight.to_string(),
                        n.role.as_str().to_owned(),
                        n.configured_role.to_string(),
                        n.reads.to_string(),
                        n.writes.to_string(),
                        yes(n.takes_reads),
                        yes(n.write_target),
                        n.lag_bytes.to_string(),
                        format!("{:.3}", n.lag.as_secs_f64()),
                        n.ban.as_str().unwrap_or("").to_owned(),
                        n.outstanding.to_string(),
                        n.ewma_latency.map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64() * 1000.0)),
                        n.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "node_id",
                    "hostname",
                    "port",
                    "status",
                    "lb_weight",
                    "role",
                    "configured_role",
                    "select_cnt",
                    "write_cnt",
                    "load_balance_node",
                    "write_target",
                    "replication_delay",
                    "lag_seconds",
                    "ban",
                    "outstanding",
                    "ewma_latency_ms",
                    "last_error",
                ],
                &rows,
            );
        }
        "stats" => {
            let s = shared.snapshot();
            let t = &s.totals;
            let rows: Vec<Vec<String>> = [
                ("clients", t.clients.to_string()),
                ("clients_total", t.clients_total.to_string()),
                ("clients_rejected", t.clients_rejected.to_string()),
                ("login_failures", t.login_failures.to_string()),
                ("pinned_clients", t.pinned_clients.to_string()),
                ("transactions", t.transactions.to_string()),
                ("servers_active", t.servers_active.to_string()),
                ("servers_idle", t.servers_idle.to_string()),
                ("servers_connecting", t.servers_connecting.to_string()),
                ("waiting_clients", t.waiting_clients.to_string()),
                ("connects", t.connects.to_string()),
                ("connect_failures", t.connect_failures.to_string()),
                ("wait_timeouts", t.wait_timeouts.to_string()),
                ("paused", yes(shared.pause.is_paused())),
            ]
            .into_iter()
            .map(|(k, v)| vec![k.to_owned(), v])
            .collect();
            table(out, &["name", "value"], &rows);
        }
        "config" => {
            let rows: Vec<Vec<String>> = shared.config.load().settings().into_iter().map(|(k, v)| vec![k, v]).collect();
            table(out, &["key", "value"], &rows);
        }
        other => {
            error(out, "42601", &format!("unknown SHOW item \"{other}\"; try SHOW HELP"));
            return false;
        }
    }
    true
}

/// RELOAD, PAUSE, RESUME, SHUTDOWN.
async fn control(shared: &Arc<Shared>, cmd: &str, out: &mut BytesMut) -> bool {
    match cmd {
        "reload" | "shutdown" => {
            let Some(tx) = shared.control.get() else {
                error(out, sqlstate::FEATURE_NOT_SUPPORTED, "this pgbalancer takes no RELOAD or SHUTDOWN from here");
                return false;
            };
            if cmd == "shutdown" {
                if tx.send(Command::Stop).await.is_err() {
                    error(out, sqlstate::ADMIN_SHUTDOWN, "pgbalancer is already shutting down");
                    return false;
                }
                write::command_complete(out, "SHUTDOWN");
                return true;
            }
            let (reply, answer) = oneshot::channel();
            if tx.send(Command::Reload(reply)).await.is_err() {
                error(out, sqlstate::ADMIN_SHUTDOWN, "pgbalancer is shutting down");
                return false;
            }
            match answer.await {
                Ok(Ok(())) => {
                    write::command_complete(out, "RELOAD");
                    true
                }
                Ok(Err(e)) => {
                    error(
                        out,
                        sqlstate::INVALID_PARAMETER_VALUE,
                        &format!("reload rejected, old configuration kept: {e}"),
                    );
                    false
                }
                Err(_) => {
                    error(out, sqlstate::ADMIN_SHUTDOWN, "pgbalancer is shutting down");
                    false
                }
            }
        }
        "pause" => {
            if let Paused::StillActive(n) = shared.pause.pause(&shared.pools, PAUSE_WAIT).await {
                notice(out, &format!("paused, but {n} server connections are still in use"));
            }
            write::command_complete(out, "PAUSE");
            true
        }
        "resume" => {
            if !shared.pause.resume() {
                notice(out, "pgbalancer was not paused");
            }
            write::command_complete(out, "RESUME");
            true
        }
        _ => unreachable!("checked by the caller"),
    }
}

/// `2026-11-24 21:16:59 UTC`.
fn timestamp(t: SystemTime) -> String {
    let (y, mo, d, h, mi, sec) = crate::snapshot::utc_fields(t).unwrap_or((1970, 1, 1, 0, 0, 0));
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{sec:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(1_795_555_019)), "2026-11-24 21:16:59 UTC");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn access_lists() {
        let c = Config { admin_users: vec!["ops".into()], stats_users: vec!["mon".into()], ..Config::default() };
        assert_eq!(access(&c, "ops"), Some(Access::Admin));
        assert_eq!(access(&c, "mon"), Some(Access::Stats));
        assert_eq!(access(&c, "app"), None);
    }
}
