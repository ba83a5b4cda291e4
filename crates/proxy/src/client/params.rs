//! The run-time parameters a client set at startup (and later changed, as
//! seen in ParameterStatus), kept true on whichever server it is given.

use crate::protocol::startup::StartupMessage;
use crate::server::ServerConn;

/// Startup keys that are not run-time parameters.
const NOT_PARAMS: [&str; 4] = ["user", "database", "replication", "options"];

/// Parameters the server reports and a client may change with `SET`; a
/// change seen in a ParameterStatus while the client holds a server becomes
/// part of what the client wants everywhere.
const REPORTED_SETTABLE: [&str; 6] =
    ["application_name", "client_encoding", "datestyle", "intervalstyle", "timezone", "standard_conforming_strings"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientParams {
    /// (lower-case name, value) in the client's order.
    wanted: Vec<(String, String)>,
    /// `wanted` as the startup packet left it: what `DISCARD ALL` (RESET
    /// ALL) returns to.
    startup: Vec<(String, String)>,
}

impl ClientParams {
    /// Collects the startup parameters and the `-c name=value` /
    /// `--name=value` settings inside `options`.
    pub fn from_startup(msg: &StartupMessage) -> ClientParams {
        let mut p = ClientParams::default();
        for (k, v) in &msg.params {
            if k.starts_with("_pq_.") || NOT_PARAMS.iter().any(|n| k.eq_ignore_ascii_case(n)) {
                continue;
            }
            p.set(k, v);
        }
        if let Some(options) = msg.get("options") {
            for (k, v) in parse_options(options) {
                p.set(&k, &v);
            }
        }
        p.startup = p.wanted.clone();
        p
    }

    /// The value the client's session now has for `name`, read back from
    /// the server after the client changed it (`SET`, `RESET`,
    /// `set_config`); None when the setting does not exist there.
    pub fn capture(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => self.set(name, v),
            None => self.wanted.retain(|(k, _)| !k.eq_ignore_ascii_case(name)),
        }
    }

    /// `DISCARD ALL`: back to the startup parameters.
    pub fn restore_startup(&mut self) {
        self.wanted.clone_from(&self.startup);
    }

    fn set(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        match self.wanted.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value.to_owned(),
            None => self.wanted.push((name, value.to_owned())),
        }
    }

    /// (lower-case name, value) pairs in the client's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.wanted.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value this client asked for, by case-insensitive name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.wanted.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A ParameterStatus arrived while this client held the server.
    pub fn observe(&mut self, name: &str, value: &str) {
        let lower = name.to_ascii_lowercase();
        if REPORTED_SETTABLE.contains(&lower.as_str()) || self.wanted.iter().any(|(k, _)| *k == lower) {
            self.set(&lower, value);
        }
    }

    /// The SQL that makes `server` hold exactly this client's parameters,
    /// or None when it already does.
    pub fn sync_sql(&self, server: &ServerConn) -> Option<String> {
        let mut sql = String::new();
        for (k, v) in &self.wanted {
            let current =
                server.applied.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str()).or_else(|| server.param(k));
            if current != Some(v.as_str()) {
                sql.push_str("SELECT pg_catalog.set_config(");
                push_literal(&mut sql, k);
                sql.push(',');
                push_literal(&mut sql, v);
                sql.push_str(",false);");
            }
        }
        for (k, _) in &server.applied {
            if !self.wanted.iter().any(|(w, _)| w == k) {
                sql.push_str("RESET ");
                push_ident(&mut sql, k);
                sql.push(';');
            }
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// After a successful sync: take the server's spelling of reported
    /// values (so `ISO` becomes `ISO, MDY` and is not set again) and record
    /// what the server now holds.
    pub fn synced(&mut self, server: &mut ServerConn) {
        for (k, v) in self.wanted.iter_mut() {
            if let Some(reported) = server.param(k) {
                if reported != v {
                    *v = reported.to_owned();
                }
            }
        }
        self.record_on(server);
    }

    /// Records on the server what it now holds for this client.
    /// Runs at every checkout: when the server already holds this list (the
    /// steady state) nothing is copied; otherwise the strings it has are
    /// overwritten in place (a tuple's `clone_from` would allocate anew).
    pub fn record_on(&self, server: &mut ServerConn) {
        if server.applied == self.wanted {
            return;
        }
        server.applied.truncate(self.wanted.len());
        let kept = server.applied.len();
        for ((k, v), (wk, wv)) in server.applied.iter_mut().zip(&self.wanted) {
            k.clone_from(wk);
            v.clone_from(wv);
        }
        server.applied.extend(self.wanted[kept..].iter().cloned());
    }
}

pub(crate) fn push_literal(sql: &mut String, s: &str) {
    sql.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => sql.push_str("''"),
            '\\' => sql.push_str("\\\\"),
            _ => sql.push(c),
        }
    }
    sql.push('\'');
}

fn push_ident(sql: &mut String, s: &str) {
    sql.push('"');
    sql.push_str(&s.replace('"', "\"\""));
    sql.push('"');
}

/// Splits libpq's `options` into settings: words separated by spaces
/// (backslash escapes the next character), `-c name=value`, `-cname=value`
/// or `--name=value`. Other switches are ignored.
pub fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
        } else if let Some(rest) = w.strip_prefix("--") {
            Some(rest.to_owned())
        } else {
            w.strip_prefix("-c").map(str::to_owned)
        };
        if let Some((k, v)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_forms() {
        assert_eq!(
            parse_options("-c search_path=a\\ b --work-mem=4MB -cstatement_timeout=5s -x"),
            vec![
                ("search_path".into(), "a b".into()),
                ("work_mem".into(), "4MB".into()),
                ("statement_timeout".into(), "5s".into())
            ]
        );
    }

    #[test]
    fn startup_params_skip_identity() {
        let msg = StartupMessage {
            major: 3,
            minor: 0,
            params: vec![
                ("user".into(), "u".into()),
                ("database".into(), "d".into()),
                ("application_name".into(), "x".into()),
                ("DateStyle".into(), "ISO".into()),
                ("options".into(), "-c search_path=s".into()),
            ],
        };
        let p = ClientParams::from_startup(&msg);
        assert_eq!(
            p.wanted,
            vec![
                ("application_name".into(), "x".into()),
                ("datestyle".into(), "ISO".into()),
                ("search_path".into(), "s".into())
            ]
        );
    }

    #[test]
    fn literals_are_escaped() {
        let mut s = String::new();
        push_literal(&mut s, "a'b\\c");
        assert_eq!(s, "E'a''b\\\\c'");
    }
}
