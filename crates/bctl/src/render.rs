//! Human-readable output of the admin API's JSON.

use serde_json::Value;

/// A scalar as text: strings without quotes, missing as `-`.
fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `key: value` lines, keys padded, nested objects flattened as `key.sub`.
fn pairs(v: &Value) -> String {
    let mut rows = Vec::new();
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            match val.as_object() {
                Some(inner) => {
                    for (k2, v2) in inner {
                        rows.push((format!("{k}.{k2}"), s(v2)));
                    }
                }
                None => rows.push((k.clone(), s(val))),
            }
        }
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{:width$}  {v}\n", format!("{k}:"), width = width + 1)).collect()
}

/// Columns aligned to their widest cell; numbers right-aligned.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if c.parse::<f64>().is_ok() {
                out.push_str(&format!("{c:>w$}", w = widths[i]));
            } else {
                out.push_str(&format!("{c:<w$}", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

pub fn status(v: &Value) -> String {
    pairs(v)
}

pub fn stats(v: &Value) -> String {
    pairs(v)
}

/// The answer of `pause`: `paused`, or how many clients still hold a server.
pub fn pause(v: &Value, wait: u64) -> String {
    match v.get("status").and_then(Value::as_str) {
        Some("pausing") => format!(
            "pausing: {} client(s) still hold a server after {wait} s; new transactions wait for `bctl resume` \
             (run `bctl pause` again to wait longer)",
            s(&v["active"])
        ),
        Some(st) => st.to_string(),
        None => v.to_string(),
    }
}

pub fn health(v: &Value) -> String {
    match (v.get("status").and_then(Value::as_str), v.get("reason").and_then(Value::as_str)) {
        (Some(st), Some(reason)) => format!("{st}: {reason}"),
        (Some(st), None) => st.to_string(),
        _ => v.to_string(),
    }
}

pub fn pools(v: &Value) -> String {
    let mut out = format!("pool_mode: {}  pool_size: {}\n\n", s(&v["pool_mode"]), s(&v["pool_size"]));
    let empty = Vec::new();
    let backends: Vec<Vec<String>> = v["backends"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|b| vec![s(&b["index"]), s(&b["host"]), s(&b["port"]), s(&b["role"]), s(&b["weight"])])
        .collect();
    out.push_str(&table(&["BACKEND", "HOST", "PORT", "ROLE", "WEIGHT"], &backends));
    out.push('\n');
    let pools: Vec<Vec<String>> = v["pools"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|p| {
            [
                "database",
                "user",
                "backend",
                "active",
                "idle",
                "connecting",
                "waiting",
                "connects",
                "connect_failures",
                "wait_timeouts",
            ]
            .iter()
            .map(|k| s(&p[*k]))
            .collect()
        })
        .collect();
    out.push_str(&table(
        &["DATABASE", "USER", "BACKEND", "ACTIVE", "IDLE", "CONNECTING", "WAITING", "CONNECTS", "FAILURES", "TIMEOUTS"],
        &pools,
    ));
    if pools.is_empty() {
        out.push_str("(no pools yet)\n");
    }
    out
}

/// `host:port`, bracketing an IPv6 address.
fn address(v: &Value) -> String {
    let host = s(&v["host"]);
    if host.contains(':') {
        format!("[{host}]:{}", s(&v["port"]))
    } else {
        format!("{host}:{}", s(&v["port"]))
    }
}

/// What a node takes now: `writes`, `reads`, both, or `-`.
fn takes(n: &Value) -> String {
    match (n["write_target"].as_bool() == Some(true), n["takes_reads"].as_bool() == Some(true)) {
        (true, true) => "writes+reads".into(),
        (true, false) => "writes".into(),
        (false, true) => "reads".into(),
        (false, false) => "-".into(),
    }
}

/// Where writes go, in words.
fn writes(v: &Value) -> String {
    match (v["writes"].as_str(), v["write_target"].as_u64()) {
        (Some("ok"), Some(id)) if v["forced_primary"].as_u64() == Some(id) => format!("node {id} (promoted)"),
        (Some("ok"), Some(id)) => format!("node {id}"),
        (Some("no_primary"), _) => "waiting for a primary".into(),
        (Some("conflict"), _) => "refused: more than one primary (follow_primary: strict)".into(),
        _ => "-".into(),
    }
}

fn seconds(v: &Value, scale: f64, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{:.digits$}", x * scale),
        None => "-".into(),
    }
}

pub fn nodes(v: &Value) -> String {
    let checks = if v["health_checks"].as_bool() == Some(true) { "on" } else { "off" };
    let mut out = format!("writes: {}  health checks: {checks}\n\n", writes(v));
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = v["nodes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|n| {
            vec![
                s(&n["id"]),
                address(n),
                s(&n["role"]),
                s(&n["configured_role"]),
                s(&n["state"]),
                s(&n["weight"]),
                takes(n),
                s(&n["lag_bytes"]),
                seconds(&n["lag_seconds"], 1.0, 3),
                seconds(&n["ewma_latency_seconds"], 1000.0, 2),
                s(&n["outstanding"]),
                s(&n["reads_routed"]),
                s(&n["writes_routed"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ID",
            "ADDRESS",
            "ROLE",
            "CONFIGURED",
            "STATE",
            "WEIGHT",
            "TAKES",
            "LAG_BYTES",
            "LAG_S",
            "LATENCY_MS",
            "OUTSTANDING",
            "READS",
            "WRITES",
        ],
        &rows,
    ));
    let problems: Vec<String> = v["nodes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|n| {
            let why = n["ban_reason"].as_str().or(n["last_error"].as_str())?;
            Some(format!("node {}: {why}\n", s(&n["id"])))
        })
        .collect();
    if !problems.is_empty() {
        out.push('\n');
        out.extend(problems);
    }
    out
}

pub fn node(v: &Value) -> String {
    pairs(v)
}

/// `s`, or `-` when empty (so every table cell is one word).
fn word(v: &Value) -> String {
    match s(v) {
        t if t.is_empty() => "-".into(),
        t => t,
    }
}

/// Whole seconds as `45s`, `12m05s`, `3h02m`, `2d04h`.
fn age(v: &Value) -> String {
    let Some(secs) = v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)) else {
        return "-".into();
    };
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs / 3600 % 24),
    }
}

pub fn clients(v: &Value) -> String {
    let mut out = format!(
        "clients: {} (active {}, idle {}, waiting {})\n\n",
        s(&v["total"]),
        s(&v["active"]),
        s(&v["idle"]),
        s(&v["waiting"])
    );
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = v["clients"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|c| {
            vec![
                s(&c["id"]),
                word(&c["address"]),
                word(&c["user"]),
                word(&c["database"]),
                word(&c["application_name"]),
                s(&c["state"]),
                s(&c["server"]["node"]),
                s(&c["server"]["pid"]),
                s(&c["transactions"]),
                age(&c["connected_seconds"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ID", "ADDRESS", "USER", "DATABASE", "APPLICATION", "STATE", "NODE", "PID", "XACTS", "CONNECTED"],
        &rows,
    ));
    if rows.is_empty() {
        out.push_str("(no clients)\n");
    }
    out
}

pub fn servers(v: &Value) -> String {
    let mut out = format!("servers: {} (active {}, idle {})\n\n", s(&v["total"]), s(&v["active"]), s(&v["idle"]));
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = v["servers"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|c| {
            vec![
                s(&c["node"]),
                address(c),
                word(&c["database"]),
                word(&c["user"]),
                s(&c["pid"]),
                s(&c["state"]),
                s(&c["client"]),
                seconds(&c["idle_seconds"], 1.0, 1),
                seconds(&c["age_seconds"], 1.0, 1),
            ]
        })
        .collect();
    out.push_str(&table(&["NODE", "ADDRESS", "DATABASE", "USER", "PID", "STATE", "CLIENT", "IDLE_S", "AGE_S"], &rows));
    if rows.is_empty() {
        out.push_str("(no server connections)\n");
    }
    out
}

/// The answers one frame of `bctl top` is drawn from.
pub struct Frame {
    pub status: Value,
    pub stats: Value,
    pub nodes: Value,
    pub pools: Value,
}

/// One frame of `bctl top`: a summary, the nodes, the pools.
/// `rate`: transactions per second since the last frame.
pub fn top(f: &Frame, rate: Option<f64>) -> String {
    let st = &f.status;
    let mut out = format!(
        "pgbalancer {}  {}{}  up {}  pool_mode {}\n",
        s(&st["version"]),
        s(&st["phase"]),
        if st["paused"].as_bool() == Some(true) { " (PAUSED)" } else { "" },
        age(&st["uptime_seconds"]),
        s(&st["pool_mode"]),
    );
    out.push_str(&format!(
        "clients {}  pinned {}  waiting {}   servers {}: active {}, idle {}, connecting {}   xact/s {}\n",
        s(&st["clients"]),
        s(&st["pinned_clients"]),
        s(&st["waiting_clients"]),
        s(&st["servers"]["total"]),
        s(&st["servers"]["active"]),
        s(&st["servers"]["idle"]),
        s(&st["servers"]["connecting"]),
        rate.map_or("-".into(), |r| format!("{r:.1}")),
    ));
    out.push_str(&format!(
        "nodes up {}/{}  detached {}   transactions {}  wait timeouts {}  login failures {}\n\n",
        s(&st["nodes_up"]),
        s(&st["nodes_total"]),
        s(&st["nodes_detached"]),
        s(&f.stats["transactions"]),
        s(&f.stats["wait_timeouts"]),
        s(&f.stats["login_failures"]),
    ));
    out.push_str(&nodes(&f.nodes));
    out.push('\n');
    let empty = Vec::new();
    let pools: Vec<Vec<String>> = f.pools["pools"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|p| {
            ["database", "user", "backend", "active", "idle", "connecting", "waiting", "wait_timeouts"]
                .iter()
                .map(|k| word(&p[*k]))
                .collect()
        })
        .collect();
    out.push_str(&table(&["DATABASE", "USER", "NODE", "ACTIVE", "IDLE", "CONNECTING", "WAITING", "TIMEOUTS"], &pools));
    if pools.is_empty() {
        out.push_str("(no pools yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_table() {
        let v = json!({
            "write_target": 0, "writes": "ok", "forced_primary": null, "health_checks": true,
            "nodes": [
                {"id": 0, "host": "127.0.0.1", "port": 5432, "role": "primary", "configured_role": "auto", "state": "up",
                 "weight": 1, "write_target": true, "takes_reads": false, "lag_bytes": 0, "lag_seconds": 0.0,
                 "ewma_latency_seconds": null, "outstanding": 0, "reads_routed": 0, "writes_routed": 7,
                 "ban_reason": null, "last_error": null},
                {"id": 1, "host": "::1", "port": 5433, "role": "replica", "configured_role": "auto", "state": "banned",
                 "weight": 2, "write_target": false, "takes_reads": false, "lag_bytes": 4096, "lag_seconds": 1.5,
                 "ewma_latency_seconds": 0.0025, "outstanding": 1, "reads_routed": 30, "writes_routed": 0,
                 "ban_reason": "lag above max_lag_bytes", "last_error": null},
            ]
        });
        let text = nodes(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "writes: node 0  health checks: on");
        assert!(lines[2].starts_with("ID  ADDRESS"), "{text}");
        let row0: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            row0,
            ["0", "127.0.0.1:5432", "primary", "auto", "up", "1", "writes", "0", "0.000", "-", "0", "0", "7"]
        );
        let row1: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(
            row1,
            ["1", "[::1]:5433", "replica", "auto", "banned", "2", "-", "4096", "1.500", "2.50", "1", "30", "0"]
        );
        assert!(text.contains("node 1: lag above max_lag_bytes"), "{text}");
        let v = json!({"write_target": null, "writes": "no_primary", "forced_primary": null, "health_checks": false, "nodes": []});
        assert!(nodes(&v).starts_with("writes: waiting for a primary  health checks: off"));
    }

    #[test]
    fn top_frame() {
        let f = Frame {
            status: json!({"version": "0.1.0", "phase": "running", "paused": true, "uptime_seconds": 3725,
                "pool_mode": "transaction", "clients": 42, "pinned_clients": 1, "waiting_clients": 2,
                "servers": {"active": 3, "idle": 7, "connecting": 0, "total": 10},
                "nodes_up": 1, "nodes_total": 1, "nodes_detached": 0}),
            stats: json!({"transactions": 1234, "wait_timeouts": 0, "login_failures": 5}),
            nodes: json!({"write_target": 0, "writes": "ok", "forced_primary": null, "health_checks": false, "nodes": [
                {"id": 0, "host": "10.0.0.1", "port": 5432, "role": "primary", "configured_role": "primary",
                 "state": "up", "weight": 1, "write_target": true, "takes_reads": true, "lag_bytes": 0,
                 "lag_seconds": 0.0, "ewma_latency_seconds": 0.0004, "outstanding": 3, "reads_routed": 900,
                 "writes_routed": 334, "ban_reason": null, "last_error": null}]}),
            pools: json!({"pools": [{"database": "app", "user": "app", "backend": 0, "active": 3, "idle": 7,
                "connecting": 0, "waiting": 2, "wait_timeouts": 0}]}),
        };
        let text = top(&f, Some(12.34));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "pgbalancer 0.1.0  running (PAUSED)  up 1h02m  pool_mode transaction");
        assert_eq!(
            lines[1],
            "clients 42  pinned 1  waiting 2   servers 10: active 3, idle 7, connecting 0   xact/s 12.3"
        );
        assert_eq!(lines[2], "nodes up 1/1  detached 0   transactions 1234  wait timeouts 0  login failures 5");
        assert_eq!(lines[4], "writes: node 0  health checks: off");
        assert!(lines[6].starts_with("ID  ADDRESS"), "{text}");
        let pool: Vec<&str> = lines.iter().find(|l| l.starts_with("app")).unwrap().split_whitespace().collect();
        assert_eq!(pool, ["app", "app", "0", "3", "7", "0", "2", "0"]);
        assert!(top(&f, None).lines().nth(1).unwrap().ends_with("xact/s -"));
    }

    #[test]
    fn ages() {
        for (secs, text) in [(0, "0s"), (59, "59s"), (725, "12m05s"), (10_920, "3h02m"), (187_200, "2d04h")] {
            assert_eq!(age(&json!(secs)), text);
        }
        assert_eq!(age(&Value::Null), "-");
    }

    #[test]
    fn clients_and_servers_tables() {
        let v = json!({"total": 2, "active": 1, "idle": 1, "waiting": 0, "clients": [
            {"id": 1, "address": "127.0.0.1:5000", "user": "app", "database": "db", "application_name": "",
             "connected_at": "2026-01-01T00:00:00Z", "connected_seconds": 61, "state": "idle", "server": null, "transactions": 4},
            {"id": 2, "address": "[::1]:5001", "user": "app", "database": "db", "application_name": "psql",
             "connected_at": "2026-01-01T00:00:00Z", "connected_seconds": 5, "state": "active",
             "server": {"node": 0, "pid": 4242}, "transactions": 0},
        ]});
        let text = clients(&v);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(text.lines().next(), Some("clients: 2 (active 1, idle 1, waiting 0)"));
        assert_eq!(lines[2][0], "ID");
        assert_eq!(lines[3], ["1", "127.0.0.1:5000", "app", "db", "-", "idle", "-", "-", "4", "1m01s"]);
        assert_eq!(lines[4], ["2", "[::1]:5001", "app", "db", "psql", "active", "0", "4242", "0", "5s"]);

        let v = json!({"total": 1, "active": 0, "idle": 1, "servers": [
            {"node": 0, "host": "127.0.0.1", "port": 5432, "database": "db", "user": "app", "pid": 77,
             "state": "idle", "client": null, "idle_seconds": 1.25, "age_seconds": 30.0}]});
        let text = servers(&v);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[3], ["0", "127.0.0.1:5432", "db", "app", "77", "idle", "-", "1.2", "30.0"]);
        assert!(clients(&json!({"total": 0, "clients": []})).contains("(no clients)"));
    }
}
