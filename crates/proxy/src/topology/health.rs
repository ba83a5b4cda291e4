//! The health checker: one task that, every `health_check_period`, checks
//! all nodes at once over connections of its own, and updates their
//! health, observed role and replication lag.
//!
//! A node is down after `health_check_max_retries + 1` failed checks in a
//! row (after a failure the next check comes after
//! `health_check_retry_delay`), and up again after one passing check. A
//! server that answers but refuses the checker's login is up (it is
//! alive) with an unknown role, and the failure is logged: a wrong
//! `health_check_user` must not take the whole cluster down.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pgbalancer_config::Config;

use super::{Ban, Health, Node, Role, Topology};
use crate::error::ServerError;
use crate::server::{ServerConn, ServerLogin, ServerSecret};
use crate::Shared;

/// One query tells role, WAL position and replay delay.
/// The third column: seconds since the last replayed transaction, when the
/// replica has received WAL it has not replayed (else 0: an idle primary
/// makes no replay lag).
const CHECK_SQL: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
     CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() \
          ELSE pg_catalog.pg_current_wal_lsn() END, \
     CASE WHEN NOT pg_catalog.pg_is_in_recovery() \
               OR pg_catalog.pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_catalog.pg_last_wal_replay_lsn() \
          THEN 0 ELSE COALESCE(EXTRACT(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp()), 0) END, \
     COALESCE(EXTRACT(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp()), 0)";

/// Shortest time between rounds, whatever the config says.
const MIN_PAUSE: Duration = Duration::from_millis(50);

/// What one passing check read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub in_recovery: bool,
    /// Current WAL position (primary) or replay position (replica).
    pub lsn: u64,
    /// Seconds the replay is behind (0 when caught up with what it received).
    pub replay_delay: f64,
    /// Seconds since the last replayed transaction (replicas), whatever
    /// was received.
    pub since_replay: f64,
}

/// How a check went.
#[derive(Debug)]
enum Outcome {
    Passed(Probe),
    /// The server answered but refused the checker (login or query error):
    /// alive, role unknown.
    Refused(String),
    Failed(String),
}

/// Runs checks until the proxy stops. Does nothing when checks are off.
pub async fn run(shared: Arc<Shared>) {
    let topology = &shared.topology;
    if !topology.checked() {
        return;
    }
    let mut conns: Vec<Option<Box<ServerConn>>> = topology.nodes().iter().map(|_| None).collect();
    loop {
        let config = shared.config.load_full();
        let tls = shared.tls.backend();
        let failed_any = round(topology, &config, &tls, &mut conns).await;
        let pause = if failed_any { config.health_check_retry_delay } else { config.health_check_period };
        // Turning checks off needs a restart; a reload to 0 must not spin.
        let pause = pause.max(MIN_PAUSE);
        drop(config);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = topology.check_now.notified() => {}
        }
    }
}

/// Checks every node concurrently and applies the results. Returns true
/// when a node failed a check and is not down yet (a retry is due).
async fn round(
    topology: &Topology,
    config: &Config,
    tls: &crate::tls::BackendTls,
    conns: &mut [Option<Box<ServerConn>>],
) -> bool {
    let login = match config.health_check_login() {
        Ok((user, password)) => ServerLogin {
            user,
            database: config.health_check_database.clone(),
            secret: password.map_or(ServerSecret::None, ServerSecret::Password),
        },
        Err(e) => {
            tracing::error!(error = %e, "health checks: cannot read the checker's password");
            return false;
        }
    };
    let timeout = config.health_check_timeout;
    let checks =
        topology.nodes().iter().zip(conns.iter_mut()).map(|(node, conn)| check(node, conn, tls, &login, timeout));
    let outcomes = futures_util::future::join_all(checks).await;

    let primary_lsn = outcomes.iter().zip(topology.nodes()).find_map(|(o, n)| match o {
        Outcome::Passed(p) if !p.in_recovery && n.usable() => Some(p.lsn),
        _ => None,
    });
    // The primary did not answer: measure against where it was last seen,
    // so a lagging replica stays banned meanwhile.
    let primary_lsn = match primary_lsn {
        Some(lsn) => {
            topology.primary_lsn.fetch_max(lsn, Ordering::Relaxed);
            Some(lsn)
        }
        None => Some(topology.primary_lsn.load(Ordering::Relaxed)).filter(|&l| l > 0),
    };
    let mut retry = false;
    for (node, outcome) in topology.nodes().iter().zip(outcomes) {
        node.stats.checks.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Passed(p) => {
                node.failures.store(0, Ordering::Relaxed);
                *node.last_error.lock().unwrap() = None;
                set_health(node, Health::Up);
                node.observed.store(if p.in_recovery { 2 } else { 1 }, Ordering::Relaxed);
                node.lsn.store(p.lsn, Ordering::Relaxed);
                if p.in_recovery {
                    let lag = primary_lsn.map_or(0, |at| at.saturating_sub(p.lsn));
                    node.lag_bytes.store(lag, Ordering::Relaxed);
                    // Behind the primary but nothing left to replay: WAL
                    // does not arrive (streaming broken or slow).
                    let delay = if lag > 0 { p.replay_delay.max(p.since_replay) } else { p.replay_delay };
                    node.lag_us.store((delay.max(0.0) * 1e6) as u64, Ordering::Relaxed);
                } else {
                    node.lag_bytes.store(0, Ordering::Relaxed);
                    node.lag_us.store(0, Ordering::Relaxed);
                }
                set_ban(node, ban_for(node, config));
            }
            Outcome::Refused(why) => {
                node.failures.store(0, Ordering::Relaxed);
                let first = node.last_error.lock().unwrap().replace(why.clone()).as_deref() != Some(why.as_str());
                if first {
                    tracing::error!(node = node.id, host = %node.host, port = node.port, error = %why,
                        "health check refused by the server: the node counts as up, its role as configured; \
                         check health_check_user / health_check_password");
                }
                // Alive; the role it last reported stands (a refused
                // check must not turn an old primary, now a standby, back
                // into its configured role).
                set_health(node, Health::Up);
            }
            Outcome::Failed(why) => {
                node.stats.check_failures.fetch_add(1, Ordering::Relaxed);
                let failures = node.failures.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(node = node.id, failures, error = %why, "health check failed");
                *node.last_error.lock().unwrap() = Some(why.clone());
                if failures > config.health_check_max_retries {
                    if node.health() != Health::Down {
                        tracing::warn!(node = node.id, host = %node.host, port = node.port, error = %why,
                            "node is down: no new work goes there until a check passes");
                    }
                    set_health(node, Health::Down);
                } else {
                    retry = true;
                }
            }
        }
    }
    topology.rebuild();
    retry
}

fn set_health(node: &Node, h: Health) {
    let v = match h {
        Health::Unknown => 0,
        Health::Up => 1,
        Health::Down => 2,
    };
    let old = node.health.swap(v, Ordering::Relaxed);
    if old != v && h == Health::Down {
        node.stats.downs.fetch_add(1, Ordering::Relaxed);
    }
    if old == 2 && h == Health::Up {
        tracing::info!(node = node.id, host = %node.host, port = node.port, "node is up again");
    }
}

/// The ban a replica's lag calls for.
fn ban_for(node: &Node, config: &Config) -> Ban {
    if node.observed_role() != Role::Replica {
        return Ban::None;
    }
    let max_bytes = config.max_lag_bytes.bytes();
    if max_bytes > 0 && node.lag_bytes.load(Ordering::Relaxed) > max_bytes {
        return Ban::LagBytes;
    }
    if !config.max_lag.is_zero() && node.lag_us.load(Ordering::Relaxed) > config.max_lag.as_micros() as u64 {
        return Ban::LagTime;
    }
    Ban::None
}

fn set_ban(node: &Node, ban: Ban) {
    let v = match ban {
        Ban::None => 0,
        Ban::LagBytes => 1,
        Ban::LagTime => 2,
    };
    let old = node.ban.swap(v, Ordering::Relaxed);
    if old == v {
        return;
    }
    match ban.as_str() {
        Some(why) => {
            node.stats.bans.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = node.id, host = %node.host, port = node.port,
                lag_bytes = node.lag_bytes.load(Ordering::Relaxed),
                lag_ms = node.lag_us.load(Ordering::Relaxed) / 1000, "replica banned from reads: {why}");
        }
        None => tracing::info!(node = node.id, host = %node.host, port = node.port, "replica caught up: reads again"),
    }
}

/// Runs one check on `node`, over its kept connection (opened anew when
/// missing or broken), within `timeout`.
async fn check(
    node: &Node,
    conn: &mut Option<Box<ServerConn>>,
    tls: &crate::tls::BackendTls,
    login: &ServerLogin,
    timeout: Duration,
) -> Outcome {
    let run = async {
        if conn.is_none() {
            *conn = Some(ServerConn::connect_tls(&node.host, node.port, tls, login, timeout).await?);
        }
        let c = conn.as_mut().expect("connected above");
        c.query_row(CHECK_SQL).await
    };
    let outcome = match tokio::time::timeout(timeout, run).await {
        Err(_) => Outcome::Failed(format!("no answer within health_check_timeout ({timeout:?})")),
        // Refused by authentication or a missing database: the server is
        // alive. Starting up, shutting down, too many connections: it
        // takes no work.
        Ok(Err(ServerError::Rejected(f)))
            if f.code.as_deref().is_some_and(|c| c.starts_with("28") || c.starts_with("3D")) =>
        {
            Outcome::Refused(f.message.unwrap_or_else(|| "login rejected".to_owned()))
        }
        Ok(Err(e @ (ServerError::NoPassword(_) | ServerError::Auth(_)))) => Outcome::Refused(e.to_string()),
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Ok(Ok(Err(f))) => Outcome::Refused(f.message.unwrap_or_else(|| "check query failed".to_owned())),
        Ok(Ok(Ok(row))) => match parse_probe(&row) {
            Some(p) => Outcome::Passed(p),
            None => Outcome::Failed(format!("unexpected check result {row:?}")),
        },
    };
    if !matches!(outcome, Outcome::Passed(_)) {
        // A connection that failed or timed out mid-query is not reused.
        if let Some(c) = conn.take() {
            tokio::spawn(c.close());
        }
    }
    outcome
}

fn parse_probe(row: &[Option<String>]) -> Option<Probe> {
    let in_recovery = match row.first()?.as_deref()? {
        "t" => true,
        "f" => false,
        _ => return None,
    };
    // A replica that has replayed nothing yet reports NULL.
    let lsn = row.get(1)?.as_deref().map_or(Some(0), parse_lsn)?;
    let replay_delay = row.get(2)?.as_deref().unwrap_or("0").parse().ok()?;
    let since_replay = row.get(3)?.as_deref().unwrap_or("0").parse().ok()?;
    Some(Probe { in_recovery, lsn, replay_delay, since_replay })
}

/// `pg_lsn` text (`16/B374D848`) as a number.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some(hi << 32 | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        for bad in ["", "1", "1/", "/1", "x/1", "100000000/0", "1/2/3"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }

    #[test]
    fn probe_rows() {
        let row = |a: &str, b: Option<&str>, c: &str| {
            vec![Some(a.to_owned()), b.map(str::to_owned), Some(c.to_owned()), Some("2.5".to_owned())]
        };
        assert_eq!(
            parse_probe(&row("t", Some("0/3000060"), "1.5")),
            Some(Probe { in_recovery: true, lsn: 0x300_0060, replay_delay: 1.5, since_replay: 2.5 })
        );
        assert_eq!(
            parse_probe(&row("f", Some("1/0"), "0")).map(|p| (p.in_recovery, p.lsn, p.replay_delay)),
            Some((false, 1 << 32, 0.0))
        );
        assert_eq!(parse_probe(&row("t", None, "0")).map(|p| p.lsn), Some(0));
        assert_eq!(parse_probe(&row("maybe", Some("0/1"), "0")), None);
        assert_eq!(parse_probe(&[]), None);
    }
}
