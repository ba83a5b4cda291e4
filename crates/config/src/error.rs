//! Errors and the translation of YAML/serde messages into `FILE: key.path: message`.

use std::fmt;

/// Everything that can go wrong loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file (or, for secrets, an environment variable) could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Parse or validation problems; displayed one line per problem: `FILE: key.path: message`.
    #[error("{}", format_problems(file, problems))]
    Invalid { file: String, problems: Vec<Problem> },
}

impl ConfigError {
    /// The problems of an `Invalid` error (empty for `Io`).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Io { .. } => &[],
        }
    }
}

/// One problem in a configuration: the key path (`backends[0].port`; empty for the
/// whole document) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { key: key.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// One line per problem: `FILE: key.path: message`.
pub(crate) fn format_problems(file: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("{file}: {p}")).collect();
    lines.join("\n")
}

/// Turns a path-tracked YAML error into a [`Problem`].
pub(crate) fn parse_problem(path: &str, inner: serde_yaml::Error) -> Problem {
    let mut key = if path == "." { String::new() } else { path.to_string() };
    let location = inner.location();
    let mut msg = inner.to_string();
    // Syntax errors already say where they are; data errors get "(line L, column C)".
    let mut at = None;
    if let Some(loc) = &location {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(m) = msg.strip_suffix(&suffix) {
            msg = m.to_string();
        }
        if !msg.contains(" at line ") {
            at = Some(format!(" (line {}, column {})", loc.line(), loc.column()));
        }
    }
    // yaml_serde prefixes its own copy of (a prefix of) the path; we print ours.
    if let Some((prefix, rest)) = msg.split_once(": ") {
        if !key.is_empty() && !prefix.contains(' ') && key.starts_with(prefix) {
            msg = rest.to_string();
        }
    }
    let msg = if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, tail) = rest.split_once('`').unwrap_or((rest, ""));
        if !(key == field || key.ends_with(&format!(".{field}"))) {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(field);
        }
        unknown_key_message(field, &backticked(tail))
    } else {
        tidy(&msg)
    };
    let msg = msg + at.as_deref().unwrap_or("");
    Problem { key, message: msg }
}

/// The words between backticks in `s`.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// serde writes "`x`"; we write 'x' for the offending value and plain names for the
/// allowed ones: "unknown variant 'master', expected one of primary, replica, auto".
fn tidy(msg: &str) -> String {
    let msg = msg.replacen("missing field", "missing key", 1).replacen("duplicate field", "duplicate key", 1);
    match msg.split_once("expected") {
        Some((head, tail)) => format!("{}expected{}", head.replace('`', "'"), tail.replace('`', "")),
        None => msg.replace('`', "'"),
    }
}

fn unknown_key_message(field: &str, allowed: &[&str]) -> String {
    if allowed.is_empty() {
        return format!("unknown key '{field}'");
    }
    let best = allowed
        .iter()
        .map(|a| (edit_distance(field, a), *a))
        .min()
        .filter(|(d, a)| *d <= 2.max(a.len() / 4) && *d < a.len());
    match best {
        Some((_, a)) => format!("unknown key '{field}' (did you mean '{a}'?)"),
        None => format!("unknown key '{field}'; allowed keys: {}", allowed.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_messages() {
        assert_eq!(
            tidy("unknown variant `master`, expected one of `primary`, `replica`, `auto`"),
            "unknown variant 'master', expected one of primary, replica, auto"
        );
        assert_eq!(tidy("missing field `name`"), "missing key 'name'");
        assert_eq!(
            tidy("invalid value: integer `70000`, expected u16"),
            "invalid value: integer '70000', expected u16"
        );
    }

    #[test]
    fn unknown_key_suggestions() {
        let allowed = ["pool_size", "pool_mode", "port"];
        assert_eq!(unknown_key_message("pool_sise", &allowed), "unknown key 'pool_sise' (did you mean 'pool_size'?)");
        assert_eq!(
            unknown_key_message("zzzzzzzz", &allowed),
            "unknown key 'zzzzzzzz'; allowed keys: pool_size, pool_mode, port"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn problems_format_one_per_line() {
        let e = ConfigError::Invalid {
            file: "f.yml".into(),
            problems: vec![Problem::new("a.b", "bad"), Problem::new("", "worse")],
        };
        assert_eq!(e.to_string(), "f.yml: a.b: bad\nf.yml: worse");
    }
}
