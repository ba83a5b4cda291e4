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
}
