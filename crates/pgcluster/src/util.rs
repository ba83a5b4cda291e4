//! Small helpers: running commands, files, ports, users, SQL quoting.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{Error, HOST, SUPERUSER};

/// Run a command to completion; non-zero exit becomes [`Error::Command`].
pub(crate) fn run(mut cmd: Command, what: &str) -> Result<Output, Error> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::io(format!("running {what} ({:?})", cmd.get_program()), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(Error::Command { command: what.to_string(), status: out.status.to_string(), stderr })
    }
}

pub(crate) fn append_file(path: &Path, text: &str) -> Result<(), Error> {
    let mut f =
        OpenOptions::new().append(true).open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    f.write_all(text.as_bytes()).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Overwrite an existing file in place (keeps its owner and mode).
pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    f.write_all(text.as_bytes()).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// A port that was free on 127.0.0.1 a moment ago.
pub(crate) fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind((HOST, 0)).map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
    let port = l.local_addr().map_err(|e| Error::io("reading local address", e))?.port();
    Ok(port)
}

/// Effective uid from /proc/self/status (falls back to `id -u`).
pub(crate) fn effective_uid() -> Result<u32, Error> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            // Uid: real effective saved fs
            if let Some(euid) = line.split_whitespace().nth(2).and_then(|s| s.parse().ok()) {
                return Ok(euid);
            }
        }
    }
    let mut cmd = Command::new("id");
    cmd.arg("-u");
    let out = run(cmd, "id -u")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| Error::Other("cannot determine effective uid".into()))
}

/// uid and gid of the `postgres` system user.
pub(crate) fn postgres_ids() -> Result<(u32, u32), Error> {
    let id = |flag: &str| -> Result<u32, Error> {
        let mut cmd = Command::new("id");
        cmd.args([flag, SUPERUSER]);
        let out = run(cmd, &format!("id {flag} postgres")).map_err(|e| {
            Error::Other(format!(
                "running as root, PostgreSQL must run as the `postgres` system user, which is missing ({e})"
            ))
        })?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| Error::Other(format!("unexpected output of id {flag} postgres")))
    };
    Ok((id("-u")?, id("-g")?))
}

pub(crate) fn find_runuser() -> PathBuf {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser", "/bin/runuser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("runuser"))
}

/// SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn euid_readable() {
        effective_uid().unwrap();
    }
}
