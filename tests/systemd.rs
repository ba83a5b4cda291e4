//! The systemd unit (`config/pgbalancer.service`) and the daemon's sd_notify
//! messages (issue 6, item 7).
//!
//! - `systemd-analyze verify` accepts the unit, run on a copy whose ExecStart
//!   points at the binary under test (verify insists that it exists). The tool
//!   comes with Debian's `systemd` package, which `scripts/setup` installs; a
//!   missing tool fails the test rather than skipping it. Verify exits 0 even
//!   for unknown keys and unparsable values (it only warns), so any line it
//!   prints about the unit fails the test too.
//! - The real binary, started with `NOTIFY_SOCKET` pointing at a datagram
//!   socket this test bound (only the child's environment is set), sends
//!   READY=1 once it accepts connections, RELOADING=1 + MONOTONIC_USEC then
//!   READY=1 around each SIGHUP (also when the new file is rejected), and
//!   STOPPING=1 on SIGTERM.
//!
//! No sleeps: reads have deadlines, the daemon is killed by a Drop guard.

mod common;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pgbalancer.service");
const DEADLINE: Duration = Duration::from_secs(20);

fn unit_text() -> String {
    std::fs::read_to_string(UNIT).unwrap_or_else(|e| panic!("{UNIT}: {e}"))
}

/// The value of `key=` in the unit (the last one, as systemd reads single-valued keys).
fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines().rev().find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
}

/// Writes `unit` as `pgbalancer.service` in a new temp dir with ExecStart's
/// program replaced by the binary under test (arguments kept).
fn unit_copy(unit: &str) -> (tempfile::TempDir, PathBuf) {
    let exec = setting(unit, "ExecStart").expect("ExecStart= in the unit");
    let args = exec.strip_prefix("/usr/local/bin/pgbalancer").expect("ExecStart=/usr/local/bin/pgbalancer ...");
    let bin = env!("CARGO_BIN_EXE_pgbalancer");
    let text = unit.replace(&format!("ExecStart={exec}"), &format!("ExecStart=\"{bin}\"{args}"));
    assert_ne!(text, unit, "ExecStart not rewritten");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pgbalancer.service");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Runs `systemd-analyze verify` on `unit`; returns what it printed about the
/// unit (exit status included when non-zero). Empty = clean.
fn verify(unit: &Path) -> Vec<String> {
    let out = match Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(unit).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze not found: install Debian's `systemd` package (scripts/setup does; \
             CI runs it from .ci/run) to check config/pgbalancer.service"
        ),
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems: Vec<String> =
        stdout.lines().chain(stderr.lines()).filter(|l| l.contains("pgbalancer")).map(str::to_string).collect();
    if !out.status.success() {
        problems.push(format!("systemd-analyze verify: {} (stdout: {stdout:?}, stderr: {stderr:?})", out.status));
    }
    problems
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let (_dir, unit) = unit_copy(&unit_text());
    let problems = verify(&unit);
    assert!(problems.is_empty(), "config/pgbalancer.service:\n{}", problems.join("\n"));
}

#[test]
fn verify_check_catches_a_broken_unit() {
    // The check above is only as good as verify() noticing problems.
    let broken = unit_text().replace("ProtectSystem=strict", "ProtectSystem=strictest\nNoSuchKey=1");
    let (_dir, unit) = unit_copy(&broken);
    let problems = verify(&unit);
    assert!(problems.iter().any(|p| p.contains("protect system")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("NoSuchKey")), "{problems:?}");
}

#[test]
fn unit_has_the_promised_settings() {
    let unit = unit_text();
    for (key, want) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", "/usr/local/bin/pgbalancer --config /etc/pgbalancer/pgbalancer.yml"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
        ("User", "pgbalancer"),
        ("Group", "pgbalancer"),
        ("Environment", "NO_COLOR=1"),
        ("Restart", "on-failure"),
        ("ConfigurationDirectory", "pgbalancer"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(setting(&unit, key), Some(want), "{key}= in {UNIT}");
    }
    // Above the default shutdown_timeout (30s), so draining ends before SIGKILL.
    let stop = setting(&unit, "TimeoutStopSec").expect("TimeoutStopSec=");
    let secs: u64 = stop.strip_suffix('s').unwrap_or(stop).parse().expect("TimeoutStopSec in seconds");
    assert!(secs > 30, "TimeoutStopSec={stop}");
    let nofile: u64 = setting(&unit, "LimitNOFILE").expect("LimitNOFILE=").parse().unwrap();
    assert!(nofile >= 16384, "LimitNOFILE={nofile}");
}

// ---------------------------------------------------------------------------
// sd_notify from the real daemon
// ---------------------------------------------------------------------------

/// Kills the daemon if the test ends early.
struct Daemon(Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("run kill");
    assert!(st.success(), "kill -{sig} {pid}: {st}");
}

/// The next datagram that is not STATUS= (the daemon may send those any time).
fn next_state(sock: &UnixDatagram, log: &Path) -> String {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no sd_notify message within {DEADLINE:?} ({e}); log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        let msg = String::from_utf8(buf[..n].to_vec()).expect("utf-8 datagram");
        if !msg.starts_with("STATUS=") {
            return msg;
        }
    }
}

fn assert_reloading(msg: &str) {
    let usec =
        msg.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").unwrap_or_else(|| panic!("want RELOADING=1, got {msg:?}"));
    assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "MONOTONIC_USEC in {msg:?}");
}

#[test]
fn daemon_notifies_ready_reloading_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&notify_path).expect("bind fake NOTIFY_SOCKET");
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("pgbalancer.yml");
    let yaml = format!(
        "listen_addresses: '127.0.0.1'\nport: {port}\nauth_type: trust\nshutdown_timeout: 5s\n\
         backends:\n  - host: 127.0.0.1\n    port: 1\n    role: primary\n"
    );
    std::fs::write(&config, &yaml).unwrap();
    let log = dir.path().join("pgbalancer.log");
    let child = common::spawn_daemon(&config, &log, &[("NOTIFY_SOCKET", notify_path.as_os_str())]);
    let pid = child.id();
    let mut daemon = Daemon(Some(child));

    // READY=1 only once clients can connect.
    assert_eq!(next_state(&sock, &log), "READY=1");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("READY=1 sent before the listener accepts");

    // A good reload.
    kill(pid, "HUP");
    assert_reloading(&next_state(&sock, &log));
    assert_eq!(next_state(&sock, &log), "READY=1");

    // A rejected reload still ends in READY=1 (the old config stays).
    std::fs::OpenOptions::new().append(true).open(&config).unwrap().write_all(b"no_such_key: 1\n").unwrap();
    kill(pid, "HUP");
    assert_reloading(&next_state(&sock, &log));
    assert_eq!(next_state(&sock, &log), "READY=1");

    kill(pid, "TERM");
    assert_eq!(next_state(&sock, &log), "STOPPING=1");

    // And it exits cleanly (waited for on a thread, with a deadline).
    let mut child = daemon.0.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(DEADLINE) {
        Ok(st) => st.expect("wait for pgbalancer"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!(
                "pgbalancer did not exit after SIGTERM; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    };
    waiter.join().unwrap();
    assert!(status.success(), "exit {status}; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    while let Ok(n) = sock.recv(&mut buf) {
        let msg = String::from_utf8_lossy(&buf[..n]);
        assert!(msg.starts_with("STATUS="), "unexpected message after STOPPING=1: {msg:?}");
    }
}
