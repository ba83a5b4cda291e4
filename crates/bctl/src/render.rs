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
