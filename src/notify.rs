//! sd_notify(3) without libsystemd: tells systemd (a `Type=notify` unit, see
//! `config/pgbalancer.service`) when pgbalancer is ready, reloading or stopping.
//!
//! systemd passes the address of its notification socket in `$NOTIFY_SOCKET`:
//! a filesystem path (`/run/systemd/notify`) or, starting with `@`, a Linux
//! abstract socket name. Each notification is one datagram of `KEY=VALUE`
//! lines sent there. When the variable is unset (not started by systemd, or
//! `--demo`), every call is a no-op. Send errors are logged with
//! `tracing::warn!` and otherwise ignored: a notification never stops the
//! daemon and nothing here panics. The variable is read, never unset (no
//! `std::env::remove_var`), so children inherit it; systemd ignores their
//! messages (`NotifyAccess=main`).
//!
//! # How `src/main.rs` calls it
//!
//! `mod notify;` beside `mod demo;`, then in `serve()`:
//!
//! ```ignore
//! // after the `if let Some(d) = demo { ... }` banner block:
//! let notifier = notify::Notifier::from_env();
//! // after the signal handlers are installed (the `let (Ok(mut term), ...) = ... else { ... };`),
//! // so that a SIGHUP sent as soon as systemd sees READY=1 cannot kill the process:
//! notifier.ready();
//! notifier.status(&format!("serving on {:?}", proxy.local_addrs()));
//!
//! // in the signal loop; READY=1 follows a rejected reload too:
//! _ = hup.recv() => {
//!     notifier.reloading();
//!     reload(&proxy, config_path.as_deref());
//!     notifier.ready();
//! }
//!
//! // right after the loop, before the "shutting down" log line:
//! notifier.stopping();
//! notifier.status("draining: waiting for transactions to finish");
//! ```
//!
//! The daemon test `daemon_notifies_ready_reloading_stopping` in
//! `tests/systemd.rs` checks exactly this sequence against the real binary.
//!
//! `Notifier` is `Clone + Send + Sync`: hand a clone to whatever else reloads
//! (REST `POST /api/v1/control/reload`, SQL `RELOAD`) so it sends
//! `reloading()`/`ready()` around its reload too.
//!
//! `reloading()` reads CLOCK_MONOTONIC with `libc::clock_gettime` (std's
//! `Instant` cannot be read out), so the root `Cargo.toml` needs
//! `libc = "0.2"` under `[dependencies]`; libc is already in `Cargo.lock`
//! (tokio, mio and others depend on it), so nothing new is downloaded.
//!
//! Tests use [`Notifier::new`] with the path of a socket they bound, so no
//! test touches the process environment.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// How long one send may block when systemd's socket queue is full.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Where notifications go; `None` = nowhere (every call is a no-op).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// A socket file, e.g. `/run/systemd/notify`.
    Path(PathBuf),
    /// A Linux abstract socket name (the `@` of `$NOTIFY_SOCKET` stripped).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; disabled when it is unset or empty.
    pub fn from_env() -> Notifier {
        match std::env::var_os(NOTIFY_SOCKET) {
            Some(v) if !v.is_empty() => Notifier::new(v),
            _ => Notifier::default(),
        }
    }

    /// To `socket`, written as in `$NOTIFY_SOCKET`: an absolute path, or `@name`
    /// for an abstract socket. Anything else (empty, a relative path, systemd's
    /// `vsock:` addresses) is logged and gives a disabled notifier.
    pub fn new(socket: impl Into<OsString>) -> Notifier {
        let socket = socket.into();
        let bytes = socket.as_bytes();
        let target = match bytes.first() {
            Some(b'/') => Some(Target::Path(PathBuf::from(socket))),
            Some(b'@') if bytes.len() > 1 => Some(Target::Abstract(bytes[1..].to_vec())),
            _ => {
                tracing::warn!(
                    "{NOTIFY_SOCKET}={:?}: unsupported address (want an absolute path or @name); not notifying systemd",
                    socket
                );
                None
            }
        };
        Notifier { target }
    }

    /// `READY=1`: startup finished (listeners bound, config loaded), or a reload
    /// announced with [`Notifier::reloading`] is over, whether it applied or not.
    pub fn ready(&self) {
        self.notify("READY=1");
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC now, in µs, which
    /// systemd ≥ 253 uses to match the reload to its request). Follow it with
    /// [`Notifier::ready`] when the reload is done.
    pub fn reloading(&self) {
        if self.target.is_some() {
            self.notify(&reloading_message(monotonic_usec()));
        }
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// `STATUS=text`, the one-line status `systemctl status` shows. Line breaks
    /// become spaces, so the text cannot add other assignments.
    pub fn status(&self, text: &str) {
        if self.target.is_some() {
            self.notify(&status_message(text));
        }
    }

    /// Sends `message`, logging a failure.
    fn notify(&self, message: &str) {
        if let Err(e) = self.send(message) {
            let first = message.lines().next().unwrap_or_default();
            tracing::warn!("cannot notify systemd ({first}) via {NOTIFY_SOCKET}: {e}");
        }
    }

    /// Sends `message` as one datagram; `Ok(false)` when disabled.
    fn send(&self, message: &str) -> io::Result<bool> {
        let Some(target) = &self.target else { return Ok(false) };
        let sock = UnixDatagram::unbound()?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        let sent = match target {
            Target::Path(path) => sock.send_to(message.as_bytes(), path)?,
            Target::Abstract(name) => sock.send_to_addr(message.as_bytes(), &SocketAddr::from_abstract_name(name)?)?,
        };
        if sent != message.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, format!("sent {sent} of {} bytes", message.len())));
        }
        Ok(true)
    }

    /// The socket address as written in `$NOTIFY_SOCKET`, for logs.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn address(&self) -> Option<OsString> {
        self.target.as_ref().map(|t| match t {
            Target::Path(p) => p.clone().into_os_string(),
            Target::Abstract(name) => {
                let mut s = OsString::from("@");
                s.push(OsStr::from_bytes(name));
                s
            }
        })
    }
}

fn reloading_message(monotonic_usec: Option<u64>) -> String {
    match monotonic_usec {
        Some(usec) => format!("RELOADING=1\nMONOTONIC_USEC={usec}"),
        None => "RELOADING=1".to_string(),
    }
}

fn status_message(text: &str) -> String {
    let one_line: String = text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
    format!("STATUS={one_line}")
}

/// CLOCK_MONOTONIC in microseconds (std's `Instant` is opaque, hence libc);
/// `None` if the clock cannot be read (then MONOTONIC_USEC is left out).
fn monotonic_usec() -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let (secs, nanos) = (u64::try_from(ts.tv_sec).ok()?, u64::try_from(ts.tv_nsec).ok()?);
    (rc == 0).then(|| secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake systemd: a datagram socket bound in a temporary directory.
    struct FakeSystemd {
        _dir: tempfile::TempDir,
        path: PathBuf,
        sock: UnixDatagram,
    }

    impl FakeSystemd {
        fn new() -> FakeSystemd {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("notify");
            let sock = UnixDatagram::bind(&path).expect("bind fake NOTIFY_SOCKET");
            // A missing datagram fails the test instead of hanging it.
            sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            FakeSystemd { _dir: dir, path, sock }
        }

        fn notifier(&self) -> Notifier {
            Notifier::new(self.path.clone())
        }

        fn recv(&self) -> String {
            recv_from(&self.sock)
        }

        /// Nothing else was sent.
        fn assert_empty(&self) {
            self.sock.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            let r = self.sock.recv(&mut buf);
            assert_eq!(r.map_err(|e| e.kind()).err(), Some(io::ErrorKind::WouldBlock), "unexpected datagram");
        }
    }

    fn recv_from(sock: &UnixDatagram) -> String {
        let mut buf = vec![0u8; 4096];
        let n = sock.recv(&mut buf).expect("datagram from the notifier");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8 datagram")
    }

    #[test]
    fn ready_stopping_status_are_exact_datagrams() {
        let fake = FakeSystemd::new();
        let n = fake.notifier();
        assert_eq!(n.address(), Some(fake.path.clone().into_os_string()));
        n.ready();
        assert_eq!(fake.recv(), "READY=1");
        n.status("serving on 127.0.0.1:9999");
        assert_eq!(fake.recv(), "STATUS=serving on 127.0.0.1:9999");
        n.stopping();
        assert_eq!(fake.recv(), "STOPPING=1");
        fake.assert_empty();
    }

    #[test]
    fn reloading_carries_monotonic_usec_of_now() {
        let fake = FakeSystemd::new();
        let n = fake.notifier();
        let before = monotonic_usec().expect("CLOCK_MONOTONIC");
        n.reloading();
        let after = monotonic_usec().unwrap();
        let msg = fake.recv();
        let usec = msg.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").unwrap_or_else(|| panic!("got {msg:?}"));
        let usec: u64 = usec.parse().unwrap_or_else(|_| panic!("not a number in {msg:?}"));
        assert!(before > 0 && before <= usec && usec <= after, "{before} <= {usec} <= {after}");
        n.ready();
        assert_eq!(fake.recv(), "READY=1");
        fake.assert_empty();
    }

    #[test]
    fn reload_cycle_in_order() {
        let fake = FakeSystemd::new();
        let n = fake.notifier();
        n.ready();
        n.reloading();
        n.ready();
        n.stopping();
        let got: Vec<String> = (0..4).map(|_| fake.recv()).collect();
        assert_eq!(got[0], "READY=1");
        assert!(got[1].starts_with("RELOADING=1\nMONOTONIC_USEC="), "{:?}", got[1]);
        assert_eq!(got[2..], ["READY=1", "STOPPING=1"]);
        fake.assert_empty();
    }

    #[test]
    fn reloading_without_a_clock_reading_omits_monotonic_usec() {
        assert_eq!(reloading_message(Some(42)), "RELOADING=1\nMONOTONIC_USEC=42");
        assert_eq!(reloading_message(None), "RELOADING=1");
    }

    #[test]
    fn status_cannot_inject_other_assignments() {
        let fake = FakeSystemd::new();
        fake.notifier().status("reload rejected: bad\nREADY=1\r\nSTOPPING=1");
        assert_eq!(fake.recv(), "STATUS=reload rejected: bad READY=1  STOPPING=1");
        fake.assert_empty();
    }

    #[test]
    fn abstract_socket_with_at_sign() {
        let name = format!("pgbalancer-notify-test-{}-{}", std::process::id(), monotonic_usec().unwrap());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract socket");
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = Notifier::new(format!("@{name}"));
        assert_eq!(n.address(), Some(OsString::from(format!("@{name}"))));
        n.ready();
        assert_eq!(recv_from(&sock), "READY=1");
        n.stopping();
        assert_eq!(recv_from(&sock), "STOPPING=1");
    }

    #[test]
    fn unsupported_addresses_disable() {
        for bad in ["", "@", "relative/notify", "vsock:2:1234"] {
            let n = Notifier::new(bad);
            assert_eq!(n, Notifier::default(), "{bad:?}");
            assert!(!n.send("READY=1").unwrap());
        }
    }

    #[test]
    fn disabled_is_a_no_op() {
        let n = Notifier::default();
        assert_eq!(n.address(), None);
        assert!(!n.send("READY=1").unwrap());
        n.ready();
        n.reloading();
        n.status("x");
        n.stopping();
    }

    #[test]
    fn from_env_reads_but_never_changes_the_environment() {
        // Whatever the test runner's environment holds (usually unset), from_env
        // mirrors it, and the variable is still there afterwards.
        let before = std::env::var_os(NOTIFY_SOCKET);
        let n = Notifier::from_env();
        match &before {
            Some(v) if !v.is_empty() => assert_eq!(n, Notifier::new(v.clone())),
            _ => assert_eq!(n, Notifier::default()),
        }
        assert_eq!(std::env::var_os(NOTIFY_SOCKET), before);
    }

    #[test]
    fn send_errors_are_returned_and_logged_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        // No socket bound at this path.
        let n = Notifier::new(dir.path().join("nobody-listens"));
        let err = n.send("READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        n.ready();
        n.reloading();
        n.status("still fine");
        n.stopping();
        // A path that is a regular file, not a socket.
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(Notifier::new(file).send("READY=1").is_err());
    }
}
