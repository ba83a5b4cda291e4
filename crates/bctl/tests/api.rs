//! bctl against the real daemon: the `pgbalancer` binary (built by
//! `cargo test --workspace`) with its admin API enabled, in front of a real
//! PostgreSQL from `pgcluster`. Waits are bounded polls; the daemon is
//! killed by a Drop guard.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);
const SECRET: &str = "bctl-api-test-secret-0123456789abcdef-0123";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn pgbalancer_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_bctl")).with_file_name("pgbalancer");
    assert!(
        p.exists(),
        "{} does not exist: build the workspace first (`cargo build --workspace`; `cargo test --workspace` builds it too)",
        p.display()
    );
    p
}

struct Daemon {
    child: Child,
    api: u16,
    config: PathBuf,
    log: PathBuf,
    status: Option<ExitStatus>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// A daemon in front of the shared cluster's primary.
    fn start() -> Daemon {
        let backend = pgcluster::shared().primary.port;
        Daemon::start_with(&format!("  - host: 127.0.0.1\n    port: {backend}\n    role: primary\n"), "")
    }

    /// A daemon with these `backends:` entries (YAML) and `extra` top-level keys.
    fn start_with(backends: &str, extra: &str) -> Daemon {
        let bin = pgbalancer_bin();
        let dir = tempfile::tempdir().unwrap();
        let (port, api) = (free_port(), free_port());
        let secret = dir.path().join("jwt.secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let config = dir.path().join("pgbalancer.yml");
        std::fs::write(
            &config,
            format!(
                "listen_addresses: '127.0.0.1'\nport: {port}\npool_mode: session\nauth_type: trust\n\
                 server_user: postgres\n\
                 backends:\n{backends}\
                 {extra}\n\
                 workers: 1\nshutdown_timeout: 5s\n\
                 rest_api:\n  enabled: true\n  port: {api}\n  bind_address: 127.0.0.1\n  \
                 jwt_secret_file: {}\n  jwt_audience: pgbalancer\n  jwt_issuer: tests\n  jwt_max_ttl: 10m\n",
                secret.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("pgbalancer.log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start pgbalancer");
        let mut d = Daemon { child, api, config, log, status: None, _dir: dir };
        let start = Instant::now();
        loop {
            if let Some(st) = d.exited() {
                panic!("pgbalancer exited during startup ({st}); log:\n{}", d.log());
            }
            if d.bctl(&["health"]).status.success() {
                return d;
            }
            assert!(start.elapsed() < DEADLINE, "admin API not healthy; log:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// bctl with `--config FILE` and `args`.
    fn bctl(&self, args: &[&str]) -> Output {
        bctl().arg("--config").arg(&self.config).args(args).output().unwrap()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                return st;
            }
            assert!(start.elapsed() < DEADLINE, "pgbalancer still running; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn bctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bctl"));
    c.env_remove("BCTL_TOKEN");
    c
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "bctl failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Exit 1 and one line on stderr, which is returned.
fn fails(o: &Output) -> String {
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(o.status.code(), Some(1), "stdout: {} stderr: {err}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn bctl_drives_the_daemon() {
    let mut d = Daemon::start();
    let api = d.api.to_string();

    // status --json: the API's JSON as is.
    let status: Value = serde_json::from_str(&ok(&d.bctl(&["status", "--json"]))).expect("status --json is JSON");
    assert_eq!(status["pool_mode"], "session", "{status}");
    assert_eq!(status["clients"], 0, "{status}");
    assert_eq!(status["phase"], "running", "{status}");
    assert_eq!(status["nodes_total"], 1, "{status}");

    // Tables.
    let text = ok(&d.bctl(&["status"]));
    assert!(text.contains("pool_mode:") && text.contains("session"), "{text}");
    let text = ok(&d.bctl(&["pools"]));
    assert!(text.contains("DATABASE") && text.contains("ACTIVE") && text.contains("IDLE"), "{text}");
    assert!(text.contains("BACKEND") && text.contains("primary"), "{text}");
    let text = ok(&d.bctl(&["stats"]));
    assert!(text.contains("transactions:"), "{text}");
    let stats: Value = serde_json::from_str(&ok(&d.bctl(&["stats", "--json"]))).unwrap();
    assert!(stats["reloads"].is_u64(), "{stats}");

    // health, no token needed.
    let text = ok(&bctl().args(["--port", &api, "health"]).output().unwrap());
    assert_eq!(text.trim(), "ok");

    // A read token from `bctl token`: status yes, reload 403.
    let read = ok(&d.bctl(&["token", "--role", "read"])).trim().to_string();
    let out = bctl().args(["--port", &api, "--token", &read, "status", "--json"]).output().unwrap();
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["clients"], 0);
    let err = fails(&bctl().args(["--port", &api, "--token", &read, "reload"]).output().unwrap());
    assert!(err.contains("(403)"), "{err}");
    // ... also through BCTL_TOKEN and --token-file.
    let out = bctl().env("BCTL_TOKEN", &read).args(["--port", &api, "status"]).output().unwrap();
    ok(&out);
    let token_file = d._dir.path().join("token");
    std::fs::write(&token_file, format!("{read}\n")).unwrap();
    let err =
        fails(&bctl().args(["--port", &api, "--token-file", token_file.to_str().unwrap(), "stop"]).output().unwrap());
    assert!(err.contains("(403)"), "{err}");

    // A bad token: 401; no token: 401 with a hint.
    let err = fails(&bctl().args(["--port", &api, "--token", "not.a.jwt", "status"]).output().unwrap());
    assert!(err.starts_with("bctl: the admin API refused the token (401): "), "{err}");
    let err = fails(&bctl().args(["--port", &api, "pools"]).output().unwrap());
    assert!(err.contains("(401)") && err.contains("--token"), "{err}");

    // An admin token works for reload; so does the token bctl makes itself.
    let admin = ok(&d.bctl(&["token", "--role", "admin", "--ttl", "2m"])).trim().to_string();
    let text = ok(&bctl().args(["--port", &api, "--token", &admin, "reload"]).output().unwrap());
    assert_eq!(text.trim(), "reloaded");
    let v: Value = serde_json::from_str(&ok(&d.bctl(&["reload", "--json"]))).unwrap();
    assert_eq!(v["status"], "reloaded");
    let stats: Value = serde_json::from_str(&ok(&d.bctl(&["stats", "--json"]))).unwrap();
    assert_eq!(stats["reloads"], 2, "{stats}");

    // A reload of an invalid file: 400 with the problem, exit 1.
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, good.replace("pool_mode: session", "pool_mode: sometimes")).unwrap();
    let err = fails(&bctl().args(["--port", &api, "--token", &admin, "reload"]).output().unwrap());
    assert!(err.contains("400") && err.contains("pool_mode"), "{err}");
    std::fs::write(&d.config, good).unwrap();

    // Nobody listening.
    let closed = free_port().to_string();
    let err = fails(&bctl().args(["--port", &closed, "--token", &admin, "status"]).output().unwrap());
    assert!(err.contains(&format!("cannot reach the admin API at 127.0.0.1:{closed}: ")), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");

    // pause / resume: nobody holds a server, so the pause is complete at once.
    let text = ok(&d.bctl(&["pause", "--wait", "5"]));
    assert_eq!(text.trim(), "paused");
    let status: Value = serde_json::from_str(&ok(&d.bctl(&["status", "--json"]))).unwrap();
    assert_eq!(status["paused"], true, "{status}");
    let err = fails(&bctl().args(["--port", &api, "--token", &read, "resume"]).output().unwrap());
    assert!(err.contains("(403)"), "{err}");
    assert_eq!(ok(&d.bctl(&["resume"])).trim(), "resumed");
    assert_eq!(ok(&d.bctl(&["resume"])).trim(), "not paused");
    let v: Value = serde_json::from_str(&ok(&d.bctl(&["pause", "--json"]))).unwrap();
    assert_eq!(v["status"], "paused");
    let v: Value = serde_json::from_str(&ok(&d.bctl(&["resume", "--json"]))).unwrap();
    assert_eq!(v["status"], "resumed");
    let out = d.bctl(&["pause", "--wait", "301"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("301"));

    // stop: the daemon exits 0.
    let text = ok(&d.bctl(&["stop"]));
    assert_eq!(text.trim(), "stopping");
    let st = d.wait_exit();
    assert!(st.success(), "pgbalancer exited with {st}; log:\n{}", d.log());
}

/// `bctl nodes` against a primary and a replica (both `role: auto`): the
/// table and `--json` after the first health check, one node, attach and
/// detach, promote of a replica refused (409), unknown ids (404), a read
/// token refused (403), and the warning when the write target is detached.
#[test]
fn bctl_nodes() {
    let c = pgcluster::shared();
    let (pport, rport) = (c.primary.port, c.replicas[0].port);
    let backends: String =
        [pport, rport].iter().map(|p| format!("  - host: 127.0.0.1\n    port: {p}\n    role: auto\n")).collect();
    let d = Daemon::start_with(&backends, "health_check_period: 200ms");
    let api = d.api.to_string();

    // --json: the API's JSON, polled until both roles are observed.
    let start = Instant::now();
    let v = loop {
        let v: Value = serde_json::from_str(&ok(&d.bctl(&["nodes", "--json"]))).expect("nodes --json is JSON");
        if v["nodes"][0]["observed_role"] == "primary" && v["nodes"][1]["observed_role"] == "replica" {
            break v;
        }
        assert!(start.elapsed() < DEADLINE, "roles not observed: {v}\nlog:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(v["write_target"], 0, "{v}");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 2, "{v}");

    // The table: one row per node.
    let text = ok(&d.bctl(&["nodes"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "writes: node 0  health checks: on", "{text}");
    let header: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&header[..7], ["ID", "ADDRESS", "ROLE", "CONFIGURED", "STATE", "WEIGHT", "TAKES"], "{text}");
    let row = |i: usize| -> Vec<String> { lines[3 + i].split_whitespace().map(String::from).collect() };
    assert_eq!(
        row(0)[..7],
        ["0", &format!("127.0.0.1:{pport}"), "primary", "auto", "up", "1", "writes+reads"].map(String::from),
        "{text}"
    );
    assert_eq!(
        row(1)[..7],
        ["1", &format!("127.0.0.1:{rport}"), "replica", "auto", "up", "1", "reads"].map(String::from),
        "{text}"
    );

    // One node.
    let n: Value = serde_json::from_str(&ok(&d.bctl(&["nodes", "1", "--json"]))).unwrap();
    assert_eq!((n["id"].as_u64(), n["observed_role"].as_str()), (Some(1), Some("replica")), "{n}");
    let text = ok(&d.bctl(&["nodes", "1"]));
    assert!(text.lines().any(|l| l.starts_with("observed_role:") && l.ends_with(" replica")), "{text}");
    let err = fails(&d.bctl(&["nodes", "5"]));
    assert!(err.contains("404") && err.contains("no node 5: node ids are 0 to 1"), "{err}");

    // detach / attach.
    let text = ok(&d.bctl(&["nodes", "detach", "1"]));
    assert!(text.contains("node 1") && text.contains("detached"), "{text}");
    let n: Value = serde_json::from_str(&ok(&d.bctl(&["nodes", "1", "--json"]))).unwrap();
    assert_eq!((n["detached"].as_bool(), n["state"].as_str()), (Some(true), Some("detached")), "{n}");
    let v: Value = serde_json::from_str(&ok(&d.bctl(&["nodes", "attach", "1", "--json"]))).unwrap();
    assert_eq!((v["status"].as_str(), v["node"]["detached"].as_bool()), (Some("attached"), Some(false)), "{v}");

    // Promote of a replica: 409 (no allow_pg_promote), exit 1, one line.
    let err = fails(&d.bctl(&["nodes", "promote", "1"]));
    assert!(err.contains("409") && err.contains("allow_pg_promote"), "{err}");

    // A read token may list but not steer.
    let read = ok(&d.bctl(&["token", "--role", "read"])).trim().to_string();
    ok(&bctl().args(["--port", &api, "--token", &read, "nodes"]).output().unwrap());
    let err = fails(&bctl().args(["--port", &api, "--token", &read, "nodes", "detach", "1"]).output().unwrap());
    assert!(err.contains("(403)"), "{err}");

    // Detaching the write target: done, with a warning on stderr.
    let out = d.bctl(&["nodes", "detach", "0"]);
    let text = ok(&out);
    assert!(text.contains("node 0") && text.contains("detached"), "{text}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("bctl: warning: ") && err.contains("writes now wait for a primary"), "{err}");
    let v: Value = serde_json::from_str(&ok(&d.bctl(&["nodes", "--json"]))).unwrap();
    assert_eq!((v["writes"].as_str(), v["write_target"].is_null()), (Some("no_primary"), true), "{v}");
    let text = ok(&d.bctl(&["nodes", "attach", "0"]));
    assert!(text.contains("attached"), "{text}");
    let v: Value = serde_json::from_str(&ok(&d.bctl(&["nodes", "--json"]))).unwrap();
    assert_eq!(v["write_target"], 0, "{v}");
}

/// `bctl pause` while a session-mode client holds its server: exit 2 with
/// how many still hold one; once the client leaves, `pause` is complete
/// (exit 0); `resume` lifts it.
#[test]
fn bctl_pause_waits_for_servers() {
    let d = Daemon::start();
    let port = {
        let yaml = std::fs::read_to_string(&d.config).unwrap();
        yaml.lines().find_map(|l| l.strip_prefix("port: ")).unwrap().trim().to_string()
    };
    // psql holds a session (and so, in session mode, a server) until its
    // standard input closes.
    let mut psql = Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", "postgres"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    let start = Instant::now();
    loop {
        let s: Value = serde_json::from_str(&ok(&d.bctl(&["status", "--json"]))).unwrap();
        if s["servers"]["active"] == 1 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "psql's session has no server: {s}\nlog:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = d.bctl(&["pause", "--wait", "0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("pausing: 1 client(s) still hold a server"), "{text}");
    let v: Value =
        serde_json::from_str(&String::from_utf8(d.bctl(&["pause", "--wait", "0", "--json"]).stdout).unwrap()).unwrap();
    assert_eq!((v["status"].as_str(), v["active"].as_u64()), (Some("pausing"), Some(1)), "{v}");

    drop(psql.stdin.take());
    assert!(psql.wait().unwrap().success());
    assert_eq!(ok(&d.bctl(&["pause", "--wait", "20"])).trim(), "paused");
    assert_eq!(ok(&d.bctl(&["resume"])).trim(), "resumed");
}
