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
        Daemon::start_full(backends, extra, "", &[])
    }

    /// [`Daemon::start_with`] plus `rest_extra` (keys under `rest_api:`,
    /// each line indented by two spaces); health is polled with bctl and
    /// `bctl_args` (e.g. `--cacert FILE`).
    fn start_full(backends: &str, extra: &str, rest_extra: &str, bctl_args: &[&str]) -> Daemon {
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
                 jwt_secret_file: {}\n  jwt_audience: pgbalancer\n  jwt_issuer: tests\n  jwt_max_ttl: 10m\n{rest_extra}",
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
            if d.bctl(&[bctl_args, &["health"]].concat()).status.success() {
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

/// The port the daemon's proxy listens on.
fn proxy_port(d: &Daemon) -> String {
    let yaml = std::fs::read_to_string(&d.config).unwrap();
    yaml.lines().find_map(|l| l.strip_prefix("port: ")).unwrap().trim().to_string()
}

/// A database of its own (tests of this binary run at once).
fn fresh_db(prefix: &str) -> String {
    let name = format!("{prefix}_{}", std::process::id());
    pgcluster::shared().create_database(&name, "postgres").expect("create database");
    name
}

/// psql through the daemon to `db` as `postgres`, named `app`: in session
/// mode it holds a server until its standard input closes.
fn hold_session(d: &Daemon, db: &str, app: &str) -> Child {
    Command::new(pgcluster::shared().bin("psql"))
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &proxy_port(d), "-U", "postgres", "-d", db])
        .env("PGAPPNAME", app)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql")
}

/// `bctl clients` / `servers` against a psql session holding a server (the
/// pid checked in pg_stat_activity), as tables and `--json`; `bctl top
/// --once` as a table and as JSON; a live `bctl top` redraws.
#[test]
fn bctl_clients_servers_and_top() {
    let d = Daemon::start();
    let c = pgcluster::shared();
    let db = fresh_db("bctl_clients");
    let mut psql = hold_session(&d, &db, "bctl-watched");
    let start = Instant::now();
    let v = loop {
        let v: Value = serde_json::from_str(&ok(&d.bctl(&["clients", "--json"]))).expect("clients --json is JSON");
        if v["active"] == 1 {
            break v;
        }
        assert!(start.elapsed() < DEADLINE, "psql's session not active: {v}\nlog:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    let real: i64 = c
        .psql(
            &c.primary,
            "postgres",
            &format!("SELECT pid FROM pg_stat_activity WHERE datname = '{db}' AND backend_type = 'client backend'"),
        )
        .unwrap()
        .parse()
        .expect("one backend");
    let client = &v["clients"][0];
    assert_eq!((v["total"].as_u64(), client["application_name"].as_str()), (Some(1), Some("bctl-watched")), "{v}");
    assert_eq!((client["database"].as_str(), client["state"].as_str()), (Some(db.as_str()), Some("active")), "{v}");
    assert_eq!(client["server"]["pid"].as_i64(), Some(real), "{v}");

    let text = ok(&d.bctl(&["clients"]));
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(text.lines().next(), Some("clients: 1 (active 1, idle 0, waiting 0)"), "{text}");
    assert_eq!(lines[2][..6], ["ID", "ADDRESS", "USER", "DATABASE", "APPLICATION", "STATE"], "{text}");
    let row = &lines[3];
    assert_eq!((row[3], row[4], row[5], row[7]), (db.as_str(), "bctl-watched", "active", real.to_string().as_str()));

    let servers: Value = serde_json::from_str(&ok(&d.bctl(&["servers", "--json"]))).unwrap();
    let held: Vec<&Value> = servers["servers"].as_array().unwrap().iter().filter(|s| s["database"] == db).collect();
    assert_eq!(held.len(), 1, "{servers}");
    assert_eq!((held[0]["pid"].as_i64(), held[0]["client"].clone()), (Some(real), client["id"].clone()), "{servers}");
    let text = ok(&d.bctl(&["servers"]));
    assert!(text.starts_with("servers: "), "{text}");
    let row: Vec<&str> =
        text.lines().find(|l| l.contains(&db)).expect("a row for the database").split_whitespace().collect();
    assert_eq!((row[4], row[5]), (real.to_string().as_str(), "active"), "{text}");

    // top --once: one frame, no escape codes; its pools table has the pool.
    let text = ok(&d.bctl(&["top", "--once"]));
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.starts_with(&format!("pgbalancer {}  running  up ", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.lines().any(|l| l.starts_with("clients 1  pinned 0  waiting 0")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ID  ADDRESS")), "{text}");
    let pool: Vec<&str> =
        text.lines().find(|l| l.starts_with(&db)).expect("the pool's row").split_whitespace().collect();
    assert_eq!(pool[..4], [db.as_str(), "postgres", "0", "1"], "{text}");
    let frame: Value = serde_json::from_str(&ok(&d.bctl(&["top", "--once", "--json"]))).expect("top --json is JSON");
    assert_eq!(frame["status"]["clients"], 1, "{frame}");
    for key in ["stats", "nodes", "pools"] {
        assert!(frame[key].is_object(), "{key}: {frame}");
    }
    let out = d.bctl(&["top", "--interval", "0.1"]);
    assert_eq!(out.status.code(), Some(2), "an interval under 0.2 s is refused");

    // Live: frames keep coming (stdout is a pipe: no clearing), until killed.
    let mut live = bctl()
        .arg("--config")
        .arg(&d.config)
        .args(["top", "--interval", "0.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = live.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("pgbalancer ") && tx.send(line).is_err() {
                break;
            }
        }
    });
    for frame in 0..3 {
        rx.recv_timeout(DEADLINE).unwrap_or_else(|_| panic!("frame {frame} of bctl top did not come"));
    }
    live.kill().unwrap();
    live.wait().unwrap();

    drop(psql.stdin.take());
    assert!(psql.wait().unwrap().success());
    let start = Instant::now();
    while serde_json::from_str::<Value>(&ok(&d.bctl(&["clients", "--json"]))).unwrap()["total"] != 0 {
        assert!(start.elapsed() < DEADLINE, "the client is still listed after it left");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A CA and a server certificate for 127.0.0.1 it signed: (CA PEM, chain
/// PEM — the certificate then the CA —, key PEM).
fn https_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_pem.clone(), format!("{}{ca_pem}", cert.pem()), key.serialize_pem())
}

/// The admin API on HTTPS: bctl with --config trusts rest_api.ssl_cert by
/// itself; with --port, --cacert names the CA; without it bctl says the
/// API may be serving HTTPS; a CA that did not sign the certificate fails
/// the handshake with a clear message.
#[test]
fn bctl_over_https() {
    use std::os::unix::fs::PermissionsExt;
    let tls = tempfile::tempdir().unwrap();
    let (ca, chain, key) = https_pki();
    let (ca_file, cert_file, key_file) =
        (tls.path().join("ca.pem"), tls.path().join("admin.crt"), tls.path().join("admin.key"));
    std::fs::write(&ca_file, ca).unwrap();
    std::fs::write(&cert_file, chain).unwrap();
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let backend = pgcluster::shared().primary.port;
    let d = Daemon::start_full(
        &format!("  - host: 127.0.0.1\n    port: {backend}\n    role: primary\n"),
        "",
        &format!("  ssl_cert: {}\n  ssl_key: {}\n", cert_file.display(), key_file.display()),
        &[],
    );
    let api = d.api.to_string();

    // --config: HTTPS, trusting rest_api.ssl_cert (its chain holds the CA).
    let status: Value = serde_json::from_str(&ok(&d.bctl(&["status", "--json"]))).unwrap();
    assert_eq!(status["phase"], "running", "{status}");
    assert_eq!(ok(&d.bctl(&["health"])).trim(), "ok");

    // --port with --cacert and a token.
    let token = ok(&d.bctl(&["token", "--role", "read"])).trim().to_string();
    let ca_arg = ca_file.to_str().unwrap();
    let out = bctl().args(["--port", &api, "--cacert", ca_arg, "--token", &token, "pools", "--json"]).output().unwrap();
    let pools: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert!(pools["pools"].is_array(), "{pools}");

    // Plain HTTP to it: no answer, and a hint.
    let err = fails(&bctl().args(["--port", &api, "--token", &token, "status"]).output().unwrap());
    assert!(err.contains("bad answer from the admin API at http://127.0.0.1:"), "{err}");
    assert!(err.contains("--cacert"), "{err}");

    // A CA that did not sign the certificate.
    let other = tls.path().join("other-ca.pem");
    std::fs::write(&other, https_pki().0).unwrap();
    let err = fails(
        &bctl()
            .args(["--port", &api, "--cacert", other.to_str().unwrap(), "--token", &token, "status"])
            .output()
            .unwrap(),
    );
    assert!(err.contains(&format!("TLS with the admin API at https://127.0.0.1:{api} failed")), "{err}");
    assert!(err.contains("UnknownIssuer") || err.contains("invalid peer certificate"), "{err}");
    // A CA file with no certificate in it.
    let err = fails(&bctl().args(["--port", &api, "--cacert", key_file.to_str().unwrap(), "status"]).output().unwrap());
    assert!(err.contains("cannot use the CA certificate") && err.contains("no usable certificate"), "{err}");
    assert!(!err.contains("PRIVATE"), "{err}");
}
