//! Freezing a node: SIGSTOP to its postmaster and every child process (backends, walreceiver,
//! checkpointer, ...), SIGCONT to thaw. A frozen node still accepts TCP connections (the kernel
//! completes the handshake into the listen backlog) but answers nothing: what a hung machine
//! looks like to its clients.
//!
//! Nothing stays stopped: [`crate::Cluster::stop`] (and so its `Drop`) thaws every node before
//! stopping it, [`Node::stop`] thaws first, and the cleanup watchdog thaws before its
//! `pg_ctl stop -m immediate`.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::run;
use crate::{Error, Node, POLL};

/// How long to wait for signalled processes to reach the wanted state.
const SIGNAL_DEADLINE: Duration = Duration::from_secs(10);

/// State letter and parent pid of a process, from `/proc/<pid>/stat` (None if it is gone).
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ..." — comm may hold spaces and parentheses; the state follows the last ')'.
    let rest = text.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Alive = listed in /proc and neither a zombie nor dead.
fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((s, _)) if s != 'Z' && s != 'X' && s != 'x')
}

fn stopped(pid: u32) -> bool {
    matches!(stat(pid), Some(('T', _)))
}

/// Live (non-zombie) children of `parent`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches!(stat(*pid), Some((s, ppid)) if ppid == parent && s != 'Z' && s != 'X' && s != 'x'))
        .collect()
}

/// `kill -s SIG pid...` (the shell's builtin: no dependency on a `kill` binary). Processes that
/// exited meanwhile are not an error.
fn signal(sig: &str, pids: &[u32]) -> Result<(), Error> {
    if pids.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("kill -s {sig} \"$@\" 2>/dev/null; exit 0"), "pgcluster-signal"]);
    cmd.args(pids.iter().map(|p| p.to_string()));
    run(cmd, &format!("kill -s {sig}"))?;
    Ok(())
}

impl Node {
    /// The live postmaster's pid (None when the node is not running).
    fn live_postmaster(&self) -> Option<u32> {
        self.postmaster_pid().filter(|p| alive(*p))
    }

    /// Pids of the postmaster and its live children (empty when the node is not running).
    pub fn process_pids(&self) -> Vec<u32> {
        match self.live_postmaster() {
            Some(pm) => std::iter::once(pm).chain(children(pm)).collect(),
            None => Vec::new(),
        }
    }

    /// SIGSTOP the postmaster, then every child, and wait until all of them are stopped. The
    /// postmaster goes first so it cannot fork a child that would be missed; children are listed
    /// again until none is left running. Connections to the node then hang; see
    /// [`Node::thaw`]. Idempotent.
    pub fn freeze(&self) -> Result<(), Error> {
        let pm = self.live_postmaster().ok_or_else(|| Error::Other(format!("{} is not running", self.name)))?;
        let deadline = Instant::now() + SIGNAL_DEADLINE;
        signal("STOP", &[pm])?;
        loop {
            let mut running: Vec<u32> = children(pm).into_iter().filter(|p| !stopped(*p)).collect();
            if !stopped(pm) && alive(pm) {
                running.push(pm);
            }
            if running.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.thaw();
                return Err(Error::Timeout(format!("{}: processes {running:?} did not stop", self.name)));
            }
            signal("STOP", &running)?;
            std::thread::sleep(POLL / 4);
        }
    }

    /// SIGCONT every child, then the postmaster. Safe on a node that is not frozen or not running.
    pub fn thaw(&self) -> Result<(), Error> {
        let Some(pm) = self.live_postmaster() else { return Ok(()) };
        let deadline = Instant::now() + SIGNAL_DEADLINE;
        loop {
            let mut still: Vec<u32> = children(pm).into_iter().filter(|p| stopped(*p)).collect();
            if stopped(pm) {
                still.push(pm);
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!("{}: processes {still:?} still stopped", self.name)));
            }
            signal("CONT", &still)?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Is the postmaster stopped by a signal (see [`Node::freeze`])?
    pub fn is_frozen(&self) -> bool {
        self.live_postmaster().is_some_and(stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stat_is_parsed() {
        let me = std::process::id();
        let (state, ppid) = stat(me).expect("own stat");
        assert!(state == 'R' || state == 'S', "{state}");
        assert!(ppid > 0);
        assert!(alive(me));
        assert!(!stopped(me));
        assert!(stat(u32::MAX).is_none());
    }
}
