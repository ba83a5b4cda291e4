//! The admin API and metrics end to end: the real `pgbalancer` binary with a
//! YAML file (`rest_api.enabled`), real PostgreSQL, real clients, and HTTP
//! over hyper. Tokens are made with jsonwebtoken here.
//!
//! Checks the data against reality (pool counts against pg_stat_activity,
//! client counts against the clients this test holds, /metrics against
//! /status), every way a token can fail (scenarios 51, 53, 55, 56, 58),
//! roles (57), the per-source limiter (60), refusal of a short secret (59),
//! reload with a changed pool size, an invalid file and a rotated secret
//! (62), and stop. The node endpoints run against the shared cluster's
//! primary and replica (roles observed, detach/attach checked against each
//! node's own pg_stat_statements, 403/404/409), and pg_promote() against a
//! cluster of the test's own. Each test has its own daemon; within a test, requests
//! that must fail come from their own loopback address (127.0.0.x), so they
//! do not trip the per-source limiter for the checks after them.
//!
//! Waits are bounded polls, never fixed sleeps. Every daemon is killed by a
//! Drop guard.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_postgres::{Client, NoTls};

const DEADLINE: Duration = Duration::from_secs(20);
const SECRET: &str = "admin-test-secret-0123456789abcdef-0123";
const ROTATED: &str = "admin-test-rotated-secret-0123456789abcdef";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An HS256 token with `claims`, signed with `secret`.
fn token_with(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// A valid token for `role`: 5 minutes, with the aud/iss of [`daemon_yaml`].
fn token(role: &str) -> String {
    token_with(SECRET, json!({"exp": now() + 300, "iat": now(), "aud": "pgbalancer", "iss": "tests", "role": role}))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn b64url(v: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in v.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// `127.0.0.<n>`: a source address of its own for requests that must fail.
fn source(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

/// The default source address for requests that should succeed.
fn home() -> IpAddr {
    source(1)
}

struct Resp {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/1.1 request from `from` to the admin API on `port`.
async fn http(port: u16, from: IpAddr, method: &str, path: &str, auth: Option<&str>) -> Resp {
    http_body(port, from, method, path, auth, Vec::new()).await
}

/// [`http`] with a request body (sent as JSON when not empty).
async fn http_body(port: u16, from: IpAddr, method: &str, path: &str, auth: Option<&str>, body: Vec<u8>) -> Resp {
    let mut conn = HttpConnector::new();
    conn.set_local_address(Some(from));
    let client: HttpClient<_, Full<Bytes>> = HttpClient::builder(TokioExecutor::new()).build(conn);
    let mut req = hyper::Request::builder().method(method).uri(format!("http://127.0.0.1:{port}{path}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let resp = within(DEADLINE, "HTTP request", client.request(req.body(Full::new(Bytes::from(body))).unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("response body").to_bytes();
    Resp { status, headers, body: String::from_utf8(body.to_vec()).expect("UTF-8 body") }
}

/// A pgbalancer.yml with the admin API on `api_port`, JWT secret in
/// `secret_file`, aud/iss required, plus `extra` (top-level keys) and
/// `rest_extra` (keys under rest_api, indented by two spaces).
fn daemon_yaml(
    port: u16,
    api_port: u16,
    backend: u16,
    secret_file: &std::path::Path,
    extra: &str,
    rest_extra: &str,
) -> String {
    let backends = format!("  - host: 127.0.0.1\n    port: {backend}\n    role: primary\n");
    daemon_yaml_with(port, api_port, &backends, &app_verifier(), secret_file, extra, rest_extra)
}

/// [`daemon_yaml`] with the `backends:` entries given as YAML and `app`'s
/// verifier from the cluster the backends belong to.
fn daemon_yaml_with(
    port: u16,
    api_port: u16,
    backends: &str,
    verifier: &str,
    secret_file: &std::path::Path,
    extra: &str,
    rest_extra: &str,
) -> String {
    format!(
        "listen_addresses: '127.0.0.1'\n\
         port: {port}\n\
         pool_mode: transaction\n\
         auth_type: scram-sha-256\n\
         users:\n  - name: app\n    password: '{verifier}'\n\
         backends:\n{backends}\
         workers: 2\n\
         shutdown_timeout: 10s\n\
         {extra}\n\
         rest_api:\n  enabled: true\n  port: {api_port}\n  bind_address: 127.0.0.1\n  \
         jwt_secret_file: {secret}\n  jwt_audience: pgbalancer\n  jwt_issuer: tests\n  jwt_max_ttl: 10m\n\
         {rest_extra}\n",
        secret = secret_file.display(),
    )
}

/// One daemon process; killed and reaped on drop if still running.
struct Daemon {
    child: Child,
    port: u16,
    api: u16,
    config: PathBuf,
    secret: PathBuf,
    log: PathBuf,
    status: Option<ExitStatus>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts pgbalancer with [`daemon_yaml`] and waits until health says 200.
    async fn start(extra: &str, rest_extra: &str) -> Daemon {
        let mut d = Daemon::spawn(SECRET, cluster().primary.port, extra, rest_extra);
        d.wait_healthy().await;
        d
    }

    /// Starts pgbalancer with [`daemon_yaml`] in front of `backend`, `secret`
    /// in the secret file; does not wait.
    fn spawn(secret: &str, backend: u16, extra: &str, rest_extra: &str) -> Daemon {
        Daemon::spawn_yaml(secret, |port, api, secret_path| {
            daemon_yaml(port, api, backend, secret_path, extra, rest_extra)
        })
    }

    /// Starts pgbalancer in front of `nodes` (ports on 127.0.0.1, `role:
    /// auto`, in this order), `app` logging in with `verifier`, and waits
    /// until health says 200.
    async fn start_nodes(nodes: &[u16], verifier: &str, extra: &str) -> Daemon {
        let backends: String =
            nodes.iter().map(|p| format!("  - host: 127.0.0.1\n    port: {p}\n    role: auto\n")).collect();
        let mut d = Daemon::spawn_yaml(SECRET, |port, api, secret_path| {
            daemon_yaml_with(port, api, &backends, verifier, secret_path, extra, "")
        });
        d.wait_healthy().await;
        d
    }

    /// Starts pgbalancer with the YAML `yaml(port, api_port, secret_file)`
    /// makes, `secret` in the secret file; does not wait.
    fn spawn_yaml(secret: &str, yaml: impl FnOnce(u16, u16, &std::path::Path) -> String) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, api) = (free_port(), free_port());
        let secret_path = dir.path().join("jwt.secret");
        std::fs::write(&secret_path, format!("{secret}\n")).unwrap();
        let config = dir.path().join("pgbalancer.yml");
        std::fs::write(&config, yaml(port, api, &secret_path)).unwrap();
        let log = dir.path().join("pgbalancer.log");
        let child = spawn_daemon(&config, &log, &[]);
        Daemon { child, port, api, config, secret: secret_path, log, status: None, _dir: dir }
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

    async fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                return st;
            }
            assert!(start.elapsed() < DEADLINE, "pgbalancer still running; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_healthy(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                panic!("pgbalancer exited during startup ({st}); log:\n{}", self.log());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.api)).await.is_ok()
                && self.get("/api/v1/health", None).await.status == 200
            {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "admin API not healthy; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        http(self.api, home(), "GET", path, token.map(bearer).as_deref()).await
    }

    async fn post(&self, path: &str, token: Option<&str>) -> Resp {
        http(self.api, home(), "POST", path, token.map(bearer).as_deref()).await
    }

    /// GET with a read token; asserts 200 and returns the JSON.
    async fn read(&self, path: &str) -> Value {
        let r = self.get(path, Some(&token("read"))).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    async fn connect(&self, db: &str) -> Client {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={db} connect_timeout=10",
            self.port
        );
        let (c, conn) = within(DEADLINE, "connect through the daemon", tokio_postgres::connect(&conninfo, NoTls))
            .await
            .unwrap_or_else(|e| panic!("connect through the daemon: {e}\nlog:\n{}", self.log()));
        tokio::spawn(conn);
        c
    }

    /// `GET /api/v1/nodes` (read token), polled until `cond` holds for its
    /// `nodes` array.
    async fn wait_nodes(&self, what: &str, cond: impl Fn(&[Value]) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.read("/api/v1/nodes").await;
            if cond(v["nodes"].as_array().expect("nodes array")) {
                return v;
            }
            assert!(start.elapsed() < DEADLINE, "{what}: nodes are {v}\nlog:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POST with an admin token; asserts 200 and returns the JSON.
    async fn control(&self, path: &str) -> Value {
        let r = self.post(path, Some(&token("admin"))).await;
        assert_eq!(r.status, 200, "POST {path}: {}\nlog:\n{}", r.body, self.log());
        r.json()
    }

    /// The pool of `app` on `db`, polled until `cond` holds for it and for
    /// PostgreSQL's count of `app` connections on `db`.
    async fn wait_pool(&self, db: &str, what: &str, cond: impl Fn(&Value, i64) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let pools = self.read("/api/v1/pools").await;
            let pool = pools["pools"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["database"] == db && p["user"] == APP_USER)
                .cloned()
                .unwrap_or(Value::Null);
            let real = server_connections(db);
            if !pool.is_null() && cond(&pool, real) {
                return pool;
            }
            assert!(start.elapsed() < DEADLINE, "{what}: pool {pool} with {real} server connections in PostgreSQL");
            tokio::time::sleep(Duration::from_millis(20)).await;
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

/// A sample of the text format: name, labels in order, value.
type Samples = HashMap<String, f64>;

/// Parses the Prometheus/OpenMetrics text format strictly enough to catch
/// malformed output: `# HELP/TYPE/UNIT` lines for a family before its
/// samples, one `# EOF` at the end, valid names, quoted label values, float
/// values, counter samples named `<family>_total`, histogram samples named
/// `_bucket` (with `le`, ascending, counts not decreasing, `+Inf` equal to
/// `_count`), `_sum` and `_count`. Keys are
/// `name{label="value",...}` as written.
fn parse_metrics(text: &str) -> Samples {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Samples::new();
    // Per histogram (family and labels without `le`): (bound, count) in order.
    let mut buckets: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    let mut saw_eof = false;
    for line in text.lines() {
        assert!(!saw_eof, "content after # EOF: {line:?}");
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(valid_name(name), "bad family name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(["counter", "gauge", "histogram", "summary", "info", "unknown"].contains(&t), "{line:?}");
                    assert!(types.insert(name.to_string(), t.to_string()).is_none(), "family {name} declared twice");
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment line {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "bad metric name in {line:?}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).expect("braced labels");
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(valid_name(k), "bad label name in {line:?}");
                assert!(v.len() >= 2 && v.starts_with('"') && v.ends_with('"'), "unquoted label value in {line:?}");
            }
        }
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let f = name.strip_suffix(suffix)?;
                let want = if *suffix == "_total" { "counter" } else { "histogram" };
                (types.get(f).map(String::as_str) == Some(want)).then_some(f)
            })
            .unwrap_or(name);
        let t = types.get(family).unwrap_or_else(|| panic!("sample {name} before its # TYPE"));
        if t == "counter" {
            assert!(name.ends_with("_total"), "counter sample {name} without _total");
        }
        if t == "histogram" {
            assert_ne!(name, family, "histogram sample {name} without _bucket, _sum or _count");
        }
        if name.ends_with("_bucket") && t == "histogram" {
            // `le` is a label of buckets only; the rest names the histogram.
            let inner = &series[name.len() + 1..series.len() - 1];
            let (le, rest): (Vec<&str>, Vec<&str>) = inner.split(',').partition(|p| p.starts_with("le="));
            assert_eq!(le.len(), 1, "bucket without one le label: {line:?}");
            let le = le[0].trim_start_matches("le=").trim_matches('"');
            let bound: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("le is a number") };
            let key = format!("{family}{{{}}}", rest.join(","));
            buckets.entry(key).or_default().push((bound, value));
        }
        assert!(samples.insert(series.to_string(), value).is_none(), "duplicate series {series}");
    }
    assert!(saw_eof, "no # EOF");
    // Buckets ascend, their counts never go down, and the last, +Inf, is
    // the count.
    for (key, b) in &buckets {
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{key}: buckets {b:?}");
        let (family, labels) = key.split_once('{').unwrap();
        let count_key = match labels {
            "}" => format!("{family}_count"),
            l => format!("{family}_count{{{l}"),
        };
        let count = samples.get(&count_key).unwrap_or_else(|| panic!("no {count_key}"));
        assert_eq!(b.last(), Some(&(f64::INFINITY, *count)), "{key}: +Inf bucket is not the count");
    }
    samples
}

fn metric(m: &Samples, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| panic!("no metric {series} in {m:?}"))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Health, the OpenAPI document and /metrics need no token; unknown paths
/// are 404 JSON; guarded endpoints without a token are 401 with
/// `WWW-Authenticate: Bearer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_endpoints_and_401_without_token() {
    let d = Daemon::start("", "").await;
    let h = d.get("/api/v1/health", None).await;
    assert_eq!((h.status, h.json()), (200, json!({"status": "ok"})));
    assert!(h.header("content-type").unwrap().starts_with("application/json"));

    let doc = d.get("/api/v1/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/status",
        "/api/v1/pools",
        "/api/v1/stats",
        "/api/v1/nodes",
        "/api/v1/nodes/{id}",
        "/api/v1/nodes/{id}/promote",
        "/api/v1/control/reload",
        "/api/v1/control/stop",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }

    let m = d.get("/metrics", None).await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    parse_metrics(&m.body);

    // Wrong method: 405 JSON (a GET on a POST endpoint still needs a token first).
    let r = d.post("/api/v1/health", None).await;
    assert_eq!((r.status, r.json()), (405, json!({"error": "method not allowed"})));
    assert_eq!(d.get("/api/v1/control/stop", Some(&token("admin"))).await.status, 405);

    let nf = d.get("/api/v1/nope", None).await;
    assert_eq!(nf.status, 404);
    assert_eq!(nf.json()["error"], "not found");

    for (i, (method, path)) in
        [("GET", "/api/v1/status"), ("GET", "/api/v1/pools"), ("POST", "/api/v1/control/stop")].into_iter().enumerate()
    {
        let r = http(d.api, source(10 + i as u8), method, path, None).await;
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"), "{method} {path}");
        assert_eq!(r.json()["error"], "missing bearer token");
    }
}

/// Scenarios 51, 53, 55, 56, 58: every bad token is 401 (never 500), each
/// from its own source address; a good one is 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401() {
    let d = Daemon::start("", "").await;
    let t = now();
    let claims = |extra: Value| {
        let mut c = json!({"exp": t + 300, "iat": t, "aud": "pgbalancer", "iss": "tests", "role": "admin"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let good = token_with(SECRET, claims(json!({})));
    let (head, sig) = good.rsplit_once('.').unwrap();
    let payload = head.split_once('.').unwrap().1;
    let mut flipped = sig.to_string().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{head}.{}", String::from_utf8(flipped).unwrap());
    let unsigned =
        |alg: &str| format!("{}.{payload}.", b64url(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()));
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims(json!({})),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let dup_keys = format!(
        "{}.{}.{sig}",
        b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64url(
            format!(r#"{{"exp":{},"role":"read","role":"admin","aud":"pgbalancer","iss":"tests"}}"#, t + 300)
                .as_bytes()
        )
    );

    let cases: Vec<(&str, String)> = vec![
        ("wrong secret", token_with("some-other-secret-0123456789abcdef0123", claims(json!({})))),
        ("flipped signature bit", flipped),
        ("stripped signature", format!("{head}.")),
        ("no signature part", head.to_string()),
        ("alg none", unsigned("none")),
        ("alg None", unsigned("None")),
        ("alg NONE", unsigned("NONE")),
        ("alg none with the real signature", format!("{}.{sig}", unsigned("none").trim_end_matches('.'))),
        ("HS512 with the right secret", hs512),
        ("expired", token_with(SECRET, claims(json!({"exp": t - 10, "iat": t - 100})))),
        ("no exp", token_with(SECRET, claims(json!({"exp": null})))),
        ("nbf in the future", token_with(SECRET, claims(json!({"nbf": t + 120})))),
        ("lifetime above jwt_max_ttl", token_with(SECRET, claims(json!({"exp": t + 3600})))),
        ("no iat, exp too far", token_with(SECRET, claims(json!({"iat": null, "exp": t + 3600})))),
        ("wrong aud", token_with(SECRET, claims(json!({"aud": "someone-else"})))),
        ("no aud", token_with(SECRET, claims(json!({"aud": null})))),
        ("wrong iss", token_with(SECRET, claims(json!({"iss": "evil"})))),
        ("no iss", token_with(SECRET, claims(json!({"iss": null})))),
        ("duplicate keys", dup_keys),
        ("garbage", "not.a.token".into()),
        ("oversized", "a".repeat(9000)),
    ];
    for (i, (what, tok)) in cases.iter().enumerate() {
        let r = http(d.api, source(20 + i as u8), "GET", "/api/v1/status", Some(&bearer(tok))).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")), "{what}");
        assert!(r.json()["error"].is_string(), "{what}");
        assert!(!r.body.contains(&tok[..tok.len().min(20)]) || tok.len() < 20, "{what}: the token is echoed");
    }
    // A token in the query string is not looked at.
    // Scenario 54: jwk/jku/x5u headers are ignored (a token signed with the
    // attacker's key it names is still refused) and a kid is never used as a
    // path (a kid aimed at a file does not change how the token is checked).
    let attacker = "attacker-secret-0123456789abcdef0123456789";
    let with_header = |secret: &str, extra: Value| {
        let mut h = json!({"alg": "HS256", "typ": "JWT"});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        let signing_input = format!("{}.{payload}", b64url(h.to_string().as_bytes()));
        let mac = {
            use hmac::{Hmac, Mac};
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            m.update(signing_input.as_bytes());
            m.finalize().into_bytes()
        };
        format!("{signing_input}.{}", b64url(&mac))
    };
    let jwk = json!({"kty": "oct", "k": b64url(attacker.as_bytes())});
    for (what, header) in [
        ("jwk", json!({"jwk": jwk})),
        ("jku", json!({"jku": "http://127.0.0.1:1/keys.json"})),
        ("x5u", json!({"x5u": "http://127.0.0.1:1/cert.pem"})),
        ("kid path", json!({"kid": "../../../../dev/null"})),
    ] {
        let r = http(d.api, source(70), "GET", "/api/v1/status", Some(&bearer(&with_header(attacker, header.clone()))))
            .await;
        assert_eq!(r.status, 401, "{what} with the attacker's key: {}", r.body);
        // With the real secret the header changes nothing: accepted.
        let ok = with_header(SECRET, header);
        assert_eq!(d.get("/api/v1/status", Some(&ok)).await.status, 200, "{what} with the real secret");
    }

    let r = http(d.api, source(60), "GET", &format!("/api/v1/status?access_token={good}"), None).await;
    assert_eq!(r.status, 401);
    // Basic auth or a bare token: 401.
    let r = http(d.api, source(61), "GET", "/api/v1/status", Some(&format!("Basic {good}"))).await;
    assert_eq!(r.status, 401);

    assert_eq!(d.get("/api/v1/status", Some(&good)).await.status, 200);
    let stats = d.read("/api/v1/stats").await;
    // The cases, the four attacker-signed headers, the query string, Basic.
    assert_eq!(stats["api_auth_failures"], cases.len() + 4 + 2, "{stats}");
    assert!(!d.log().contains(&good), "a token reached the log");
    assert!(!d.log().contains(SECRET), "the secret reached the log");
}

/// Scenario 57: `read` may GET but not POST; an unknown or missing role is
/// 403 everywhere; `admin` may POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_what_a_token_may_do() {
    let mut d = Daemon::start("", "").await;
    let read = token("read");
    for path in ["/api/v1/status", "/api/v1/pools", "/api/v1/stats"] {
        assert_eq!(d.get(path, Some(&read)).await.status, 200, "{path}");
    }
    for path in ["/api/v1/control/reload", "/api/v1/control/stop"] {
        let r = d.post(path, Some(&read)).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains("needs role 'admin'"), "{}", r.body);
    }
    for role in ["root", "READ", ""] {
        assert_eq!(d.get("/api/v1/status", Some(&token(role))).await.status, 403, "role {role:?}");
    }
    let no_role = token_with(SECRET, json!({"exp": now() + 60, "aud": "pgbalancer", "iss": "tests"}));
    assert_eq!(d.get("/api/v1/status", Some(&no_role)).await.status, 403);
    // 403s are not authentication failures: no 429 after many of them.
    for _ in 0..12 {
        assert_eq!(d.post("/api/v1/control/stop", Some(&read)).await.status, 403);
    }
    let r = d.post("/api/v1/control/reload", Some(&token("admin"))).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "reloaded"})));
    assert!(d.exited().is_none(), "the daemon must still run");
}

/// Scenario 60: after 10 failures within 60 s, that source gets 429 (with
/// Retry-After) even with a good token; other sources are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_get_429_for_that_source_only() {
    let d = Daemon::start("", "").await;
    let attacker = source(100);
    let bad = bearer(&token_with("wrong-secret-0123456789abcdef0123456789", json!({"exp": now() + 60})));
    for i in 0..10 {
        let r = http(d.api, attacker, "GET", "/api/v1/status", Some(&bad)).await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let good = bearer(&token("admin"));
    for auth in [&bad, &bearer("garbage")] {
        let r = http(d.api, attacker, "GET", "/api/v1/status", Some(auth)).await;
        assert_eq!(r.status, 429, "{}", r.body);
        let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        assert!(r.json()["error"].as_str().unwrap().contains("too many failed"));
    }
    // A valid token is served even from that source: whoever shares the
    // address (every local user on loopback) cannot lock the operator out.
    assert_eq!(http(d.api, attacker, "GET", "/api/v1/status", Some(&good)).await.status, 200);
    // Health stays open to everyone; other sources are not limited.
    assert_eq!(http(d.api, attacker, "GET", "/api/v1/health", None).await.status, 200);
    assert_eq!(http(d.api, source(101), "GET", "/api/v1/status", Some(&good)).await.status, 200);
}

/// /pools counts match pg_stat_activity, /status counts the clients this
/// test holds (and the pinned one), /metrics parses and agrees with
/// /status and /stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_status_and_metrics_match_reality() {
    let d = Daemon::start("pool_size: 10", "").await;
    let db = fresh_db("adm_pools");
    let status = d.read("/api/v1/status").await;
    assert_eq!(status["clients"], 0, "{status}");
    assert_eq!(status["pool_mode"], "transaction");
    assert_eq!(status["nodes_total"], 1);
    assert_eq!(status["nodes_up"], 1, "one backend, no checks: up");
    assert_eq!(status["write_target"], 0);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["phase"], "running");

    // Three clients, each inside a transaction: three active servers.
    const N: usize = 3;
    let mut clients = Vec::new();
    for _ in 0..N {
        let c = d.connect(&db).await;
        c.batch_execute("BEGIN; SELECT 1").await.unwrap();
        clients.push(c);
    }
    let pool = d.wait_pool(&db, "three in transactions", |p, real| p["active"] == N && real == N as i64).await;
    assert_eq!(pool["idle"], 0, "{pool}");
    assert_eq!(pool["waiting"], 0, "{pool}");
    assert_eq!(pool["port"], cluster().primary.port, "{pool}");
    let status = d.read("/api/v1/status").await;
    assert_eq!(status["clients"], N, "{status}");
    assert_eq!(status["servers"]["active"], N, "{status}");

    // Commit: the servers go idle and stay open (PostgreSQL still counts them).
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }
    let pool =
        d.wait_pool(&db, "all idle", |p, real| p["active"] == 0 && p["idle"].as_i64() == Some(real) && real > 0).await;
    assert_eq!(pool["connects"].as_u64().unwrap(), server_connections(&db) as u64, "{pool}");

    // One client pinned by a temporary table.
    clients[0].batch_execute("CREATE TEMP TABLE pin_me (a int)").await.unwrap();
    let start = Instant::now();
    let status = loop {
        let s = d.read("/api/v1/status").await;
        if s["pinned_clients"] == 1 {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "pinned client not seen: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["clients"], N);

    // Bytes: a 50 kB statement and a 100 kB row are counted (when the
    // transaction ends, so poll).
    let before = d.read("/api/v1/stats").await;
    let long = "y".repeat(50_000);
    let row = one(&clients[1], &format!("SELECT length('{long}')::text || repeat('x', 100000)")).await.unwrap();
    assert_eq!(row.len(), 5 + 100_000);
    let start = Instant::now();
    let stats = loop {
        let s = d.read("/api/v1/stats").await;
        let grew = |k: &str| s[k].as_u64().unwrap() - before[k].as_u64().unwrap();
        // A transaction is counted last, after its bytes.
        if grew("transactions") >= 1 && grew("client_bytes") >= 50_000 && grew("server_bytes") >= 100_000 {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "bytes not counted: {before} then {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Nothing moves now: /metrics, /status and /stats agree.
    let m = d.get("/metrics", None).await;
    let m = parse_metrics(&m.body);
    let status = d.read("/api/v1/status").await;
    let clients_in = |state: &str| metric(&m, &format!("pgbalancer_clients{{state=\"{state}\"}}"));
    let all: f64 = ["active", "idle", "waiting", "other"].iter().map(|s| clients_in(s)).sum();
    assert_eq!(all, status["clients"].as_f64().unwrap());
    // The pinned client holds its server; the others hold none.
    assert_eq!((clients_in("active"), clients_in("idle")), (1.0, N as f64 - 1.0));
    assert_eq!((clients_in("waiting"), clients_in("other")), (0.0, 0.0));
    assert_eq!(metric(&m, "pgbalancer_client_bytes_total"), stats["client_bytes"].as_f64().unwrap());
    assert_eq!(metric(&m, "pgbalancer_server_bytes_total"), stats["server_bytes"].as_f64().unwrap());
    // Nobody waited for a server (the pool had room).
    assert_eq!(metric(&m, "pgbalancer_pool_wait_seconds_count"), 0.0);
    assert_eq!(metric(&m, "pgbalancer_pinned_clients"), 1.0);
    assert_eq!(metric(&m, "pgbalancer_waiting_clients"), status["waiting_clients"].as_f64().unwrap());
    for state in ["active", "idle", "connecting"] {
        assert_eq!(
            metric(&m, &format!("pgbalancer_servers{{state=\"{state}\"}}")),
            status["servers"][state].as_f64().unwrap(),
            "servers {state}"
        );
    }
    assert_eq!(metric(&m, "pgbalancer_servers{state=\"idle\"}"), server_connections(&db) as f64 - 1.0);
    assert_eq!(metric(&m, "pgbalancer_transactions_total"), stats["transactions"].as_f64().unwrap());
    assert!(stats["transactions"].as_u64().unwrap() >= N as u64, "{stats}");
    assert_eq!(metric(&m, "pgbalancer_client_connections_total"), stats["clients_total"].as_f64().unwrap());
    assert!(stats["clients_total"].as_u64().unwrap() >= N as u64);
    assert_eq!(metric(&m, "pgbalancer_login_failures_total"), stats["login_failures"].as_f64().unwrap());
    assert_eq!(metric(&m, "pgbalancer_reloads_total"), 0.0);
    assert_eq!(metric(&m, "pgbalancer_backends"), 1.0);

    // The clients leave: the count drops to zero.
    drop(clients);
    let start = Instant::now();
    while d.read("/api/v1/status").await["clients"] != 0 {
        assert!(start.elapsed() < DEADLINE, "clients still counted after they left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client of `d` as `app` on `db` with `application_name`.
async fn connect_named(d: &Daemon, db: &str, application: &str) -> Client {
    let conninfo = format!(
        "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={db} \
         application_name={application} connect_timeout=10",
        d.port
    );
    let (c, conn) = within(DEADLINE, "connect through the daemon", tokio_postgres::connect(&conninfo, NoTls))
        .await
        .unwrap_or_else(|e| panic!("connect through the daemon: {e}\nlog:\n{}", d.log()));
    tokio::spawn(conn);
    c
}

/// `pg_backend_pid()` of the server `c` holds now (inside a transaction).
async fn backend_pid(c: &Client) -> i64 {
    one(c, "SELECT pg_backend_pid()").await.unwrap().parse().unwrap()
}

/// The pids of `app`'s connections on `db`, as PostgreSQL lists them.
fn real_pids(db: &str) -> Vec<i64> {
    let out = admin_sql(
        "postgres",
        &format!(
            "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity \
             WHERE datname = '{db}' AND usename = 'app' AND backend_type = 'client backend'"
        ),
    );
    out.split(',').filter(|p| !p.is_empty()).map(|p| p.parse().unwrap()).collect()
}

/// `GET /api/v1/clients` polled until `cond` holds.
async fn wait_clients(d: &Daemon, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let v = d.read("/api/v1/clients").await;
        if cond(&v) {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: clients are {v}\nlog:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The client entry with this application_name.
fn named<'a>(v: &'a Value, application: &str) -> &'a Value {
    v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["application_name"] == application)
        .unwrap_or_else(|| panic!("no client {application} in {v}"))
}

/// /clients and /servers against PostgreSQL's own view: with a pool of two,
/// two clients in transactions hold servers whose pids are their
/// `pg_backend_pid()`, a third waits (state, and the `waiting` series of
/// /metrics); when one commits the waiter gets that server (and the wait
/// is in the pool-wait histogram). The servers listed are exactly the
/// backends pg_stat_activity shows, held by the right client ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_servers_match_reality() {
    let d = Daemon::start("pool_size: 2", "").await;
    let db = fresh_db("adm_clients");
    // All log in first: a login with a setting the pool has not seen yet
    // (a new application_name) takes a server itself.
    let alpha = connect_named(&d, &db, "alpha").await;
    let beta = connect_named(&d, &db, "beta").await;
    let gamma = connect_named(&d, &db, "gamma").await;
    alpha.batch_execute("BEGIN").await.unwrap();
    beta.batch_execute("BEGIN").await.unwrap();
    let (alpha_pid, beta_pid) = (backend_pid(&alpha).await, backend_pid(&beta).await);
    assert_ne!(alpha_pid, beta_pid);

    // The pool is full: gamma's transaction waits for a server.
    let (tx, mut rx) = tokio::sync::oneshot::channel::<i64>();
    let gamma = {
        tokio::spawn(async move {
            gamma.batch_execute("BEGIN").await.unwrap();
            let _ = tx.send(backend_pid(&gamma).await);
            gamma
        })
    };
    let v = wait_clients(&d, "gamma waits", |v| v["waiting"] == 1 && v["active"] == 2).await;
    assert_eq!((v["total"].as_u64(), v["idle"].as_u64()), (Some(3), Some(0)), "{v}");
    for (name, pid) in [("alpha", alpha_pid), ("beta", beta_pid)] {
        let c = named(&v, name);
        assert_eq!((c["state"].as_str(), c["server"]["node"].as_u64()), (Some("active"), Some(0)), "{c}");
        assert_eq!(c["server"]["pid"].as_i64(), Some(pid), "{name}: {c}");
        assert_eq!((c["user"].as_str(), c["database"].as_str()), (Some(APP_USER), Some(db.as_str())), "{c}");
        assert!(c["address"].as_str().unwrap().starts_with("127.0.0.1:"), "{c}");
        let at = c["connected_at"].as_str().unwrap();
        assert!(at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
        assert!(c["connected_seconds"].as_u64().unwrap() < 600, "{c}");
    }
    let g = named(&v, "gamma");
    assert_eq!((g["state"].as_str(), g["server"].is_null()), (Some("waiting"), true), "{g}");
    assert!(rx.try_recv().is_err(), "gamma got a server while the pool was full");

    // /servers: the two held ones, by the right clients; nothing else open.
    let servers = d.read("/api/v1/servers").await;
    assert_eq!((servers["active"].as_u64(), servers["idle"].as_u64()), (Some(2), Some(0)), "{servers}");
    let list = servers["servers"].as_array().unwrap();
    for (name, pid) in [("alpha", alpha_pid), ("beta", beta_pid)] {
        let s = list.iter().find(|s| s["pid"] == pid).unwrap_or_else(|| panic!("no server {pid}: {servers}"));
        assert_eq!(s["client"], named(&v, name)["id"], "{s}");
        assert_eq!((s["state"].as_str(), s["idle_seconds"].is_null()), (Some("active"), true), "{s}");
        assert_eq!(
            (s["database"].as_str(), s["port"].as_u64()),
            (Some(db.as_str()), Some(cluster().primary.port as u64))
        );
    }
    assert_eq!(real_pids(&db), {
        let mut p = vec![alpha_pid, beta_pid];
        p.sort();
        p
    });
    let m = parse_metrics(&d.get("/metrics", None).await.body);
    assert_eq!(metric(&m, "pgbalancer_clients{state=\"waiting\"}"), 1.0);
    assert_eq!(metric(&m, "pgbalancer_clients{state=\"active\"}"), 2.0);
    assert_eq!(metric(&m, "pgbalancer_waiting_clients"), 1.0);

    // alpha commits: gamma gets alpha's server.
    alpha.batch_execute("COMMIT").await.unwrap();
    let gamma_pid = within(DEADLINE, "gamma's transaction", &mut rx).await.unwrap();
    assert_eq!(gamma_pid, alpha_pid, "the freed server went to the waiter");
    let v = wait_clients(&d, "gamma holds alpha's server", |v| v["active"] == 2 && v["idle"] == 1).await;
    let a = named(&v, "alpha");
    assert_eq!((a["state"].as_str(), a["server"].is_null()), (Some("idle"), true), "{a}");
    assert!(a["transactions"].as_u64().unwrap() >= 1, "{a}");
    assert_eq!(named(&v, "gamma")["server"]["pid"].as_i64(), Some(alpha_pid), "{v}");
    let m = parse_metrics(&d.get("/metrics", None).await.body);
    assert!(metric(&m, "pgbalancer_pool_wait_seconds_count") >= 1.0);
    assert!(metric(&m, "pgbalancer_pool_wait_seconds_sum") > 0.0);

    // Everyone commits: both servers idle in the pool, the same two backends.
    let gamma = within(DEADLINE, "gamma's task", gamma).await.unwrap();
    gamma.batch_execute("COMMIT").await.unwrap();
    beta.batch_execute("COMMIT").await.unwrap();
    let start = Instant::now();
    let servers = loop {
        let s = d.read("/api/v1/servers").await;
        if s["idle"] == 2 && s["active"] == 0 {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "servers not idle: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut pids: Vec<i64> =
        servers["servers"].as_array().unwrap().iter().map(|s| s["pid"].as_i64().unwrap()).collect();
    pids.sort();
    assert_eq!(pids, real_pids(&db), "{servers}");
    for s in servers["servers"].as_array().unwrap() {
        assert!(s["client"].is_null() && s["idle_seconds"].as_f64().is_some(), "{s}");
        assert!(s["age_seconds"].as_f64().unwrap() >= s["idle_seconds"].as_f64().unwrap(), "{s}");
    }
    // A read token suffices; no token does not.
    assert_eq!(http(d.api, source(40), "GET", "/api/v1/clients", None).await.status, 401);
    assert_eq!(http(d.api, source(40), "GET", "/api/v1/servers", None).await.status, 401);
}

/// Reload (REST and SIGHUP share it): a larger pool_size applies (a waiting
/// client gets a server), an invalid file is 400 with its problems and the
/// old config stays, and a rotated secret rejects old tokens at once
/// (scenario 62).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_rejects_and_rotates_the_secret() {
    let mut d = Daemon::start("pool_size: 1\nquery_wait_timeout: 30s", "").await;
    let db = fresh_db("adm_reload");
    let admin = token("admin");

    // Pool of one: the second client waits.
    let a = d.connect(&db).await;
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let b = d.connect(&db).await;
    let waiter = tokio::spawn(async move { b.batch_execute("BEGIN; SELECT 1").await.map(|_| b) });
    d.wait_pool(&db, "one active, one waiting", |p, real| p["active"] == 1 && p["waiting"] == 1 && real == 1).await;

    // pool_size 3: the waiter gets a server at once.
    let yaml = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, yaml.replace("pool_size: 1", "pool_size: 3")).unwrap();
    let r = d.post("/api/v1/control/reload", Some(&admin)).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "reloaded"})), "{}", d.log());
    let b = within(DEADLINE, "the waiting client to get a server", waiter).await.unwrap().unwrap();
    d.wait_pool(&db, "two active", |p, real| p["active"] == 2 && p["waiting"] == 0 && real == 2).await;
    assert_eq!(d.read("/api/v1/pools").await["pool_size"], 3);
    a.batch_execute("COMMIT").await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();

    // An invalid file: 400 with every problem; the old config stays.
    let good_yaml = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, good_yaml.replace("pool_size: 3", "pool_size: 0\nmin_pool_size: 5")).unwrap();
    let r = d.post("/api/v1/control/reload", Some(&admin)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let body = r.json();
    let keys: Vec<&str> = body["problems"].as_array().unwrap().iter().map(|p| p["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["pool_size", "min_pool_size"], "{body}");
    assert!(body["error"].as_str().unwrap().contains("pool_size: must be at least 1"), "{body}");
    assert_eq!(d.read("/api/v1/pools").await["pool_size"], 3, "the old config must stay");
    assert_eq!(one(&a, "SELECT 42").await.unwrap(), "42", "clients keep working");
    // A syntax error too.
    std::fs::write(&d.config, "pool_size: [\n").unwrap();
    assert_eq!(d.post("/api/v1/control/reload", Some(&admin)).await.status, 400);
    // Turning authentication off needs a restart: the reload applies, tokens
    // stay required.
    let no_auth = good_yaml.replace("  jwt_max_ttl: 10m\n", "  jwt_max_ttl: 10m\n  jwt_enabled: false\n");
    assert_ne!(no_auth, good_yaml);
    std::fs::write(&d.config, &no_auth).unwrap();
    let r = d.post("/api/v1/control/reload", Some(&admin)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.get("/api/v1/status", None).await.status, 401, "auth turned off by a reload");
    assert!(d.log().contains("jwt_enabled: false needs a restart"), "{}", d.log());

    // SIGHUP takes the same path: counted with the REST reloads.
    std::fs::write(&d.config, good_yaml.replace("pool_size: 3", "pool_size: 4")).unwrap();
    let st = Command::new("kill").arg("-HUP").arg(d.child.id().to_string()).status().unwrap();
    assert!(st.success());
    let start = Instant::now();
    while d.read("/api/v1/pools").await["pool_size"] != 4 {
        assert!(start.elapsed() < DEADLINE, "SIGHUP reload not applied; log:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = d.read("/api/v1/stats").await;
    assert_eq!((stats["reloads"].as_u64(), stats["reload_failures"].as_u64()), (Some(3), Some(2)), "{stats}");
    let m = parse_metrics(&d.get("/metrics", None).await.body);
    assert_eq!(metric(&m, "pgbalancer_reloads_total"), 3.0);
    assert_eq!(metric(&m, "pgbalancer_reload_failures_total"), 2.0);

    // Rotation: a new secret in the file, reload; old tokens fail now.
    std::fs::write(&d.secret, format!("{ROTATED}\n")).unwrap();
    assert_eq!(d.post("/api/v1/control/reload", Some(&admin)).await.status, 200);
    let r = http(d.api, source(150), "GET", "/api/v1/status", Some(&bearer(&token("read")))).await;
    assert_eq!(r.status, 401, "a token signed with the old secret still works");
    let fresh = token_with(ROTATED, json!({"exp": now() + 60, "aud": "pgbalancer", "iss": "tests", "role": "read"}));
    assert_eq!(d.get("/api/v1/status", Some(&fresh)).await.status, 200);

    // A rotated secret that is too short is refused, and the current one stays.
    std::fs::write(&d.secret, "short\n").unwrap();
    let admin2 = token_with(ROTATED, json!({"exp": now() + 60, "aud": "pgbalancer", "iss": "tests", "role": "admin"}));
    let r = d.post("/api/v1/control/reload", Some(&admin2)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["problems"][0]["key"], "rest_api.jwt_secret_file");
    assert_eq!(d.get("/api/v1/status", Some(&fresh)).await.status, 200);
    assert!(!d.log().contains(ROTATED) && !d.log().contains(SECRET), "a secret reached the log");
    assert!(d.exited().is_none());
}

/// POST /control/stop: the same graceful shutdown as SIGTERM, of the whole
/// daemon: health says 503 while an open transaction finishes, reload is
/// refused, then the daemon exits 0 and both ports close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_shuts_the_daemon_down_gracefully() {
    let mut d = Daemon::start("", "").await;
    let db = fresh_db("adm_stop");
    create_table(&db).await;
    let c = d.connect(&db).await;
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();

    let r = d.post("/api/v1/control/stop", Some(&token("admin"))).await;
    assert_eq!((r.status, r.json()), (202, json!({"status": "stopping"})));
    let start = Instant::now();
    let health = loop {
        let h = d.get("/api/v1/health", None).await;
        if h.status == 503 {
            break h;
        }
        assert!(start.elapsed() < DEADLINE, "health still {} after stop", h.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(health.json(), json!({"status": "unavailable", "reason": "shutting down"}));
    assert_eq!(d.read("/api/v1/status").await["phase"], "draining");
    assert_eq!(d.post("/api/v1/control/reload", Some(&token("admin"))).await.status, 503);
    assert!(d.exited().is_none(), "exited with a transaction open; log:\n{}", d.log());

    // The transaction finishes; then the daemon exits cleanly.
    c.batch_execute("COMMIT").await.expect("COMMIT during drain");
    let st = d.wait_exit().await;
    assert!(st.success(), "exit status {st}; log:\n{}", d.log());
    assert_eq!(row_count(&db).await, 1);
    assert!(d.log().contains("stop requested through the admin API"), "{}", d.log());
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", d.port)).await.is_err(), "proxy port still open");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", d.api)).await.is_err(), "admin port still open");
}

/// Scenario 59: a secret (from a file) under 32 bytes refuses to start,
/// without printing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_secret_refuses_to_start() {
    let mut d = Daemon::spawn("only-20-bytes-secret", cluster().primary.port, "", "");
    let st = d.wait_exit().await;
    assert!(!st.success());
    let log = d.log();
    assert!(log.contains("rest_api.jwt_secret_file: too short: at least 32 bytes"), "{log}");
    assert!(!log.contains("only-20-bytes-secret"), "{log}");
}

/// `jwt_enabled: false`: no token needed (with a warning at start); health
/// is 503 when no backend accepts connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_when_disabled_and_503_without_backends() {
    let d = Daemon::start("", "  jwt_enabled: false").await;
    assert_eq!(d.get("/api/v1/status", None).await.status, 200);
    assert_eq!(d.post("/api/v1/control/reload", None).await.status, 200);
    assert!(d.log().contains("without authentication"), "{}", d.log());
    drop(d);

    // A backend nobody listens on.
    let mut d = Daemon::spawn(SECRET, free_port(), "", "");
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", d.api)).await.is_err() {
        assert!(start.elapsed() < DEADLINE && d.exited().is_none(), "admin API did not start; log:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = d.get("/api/v1/health", None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json(), json!({"status": "unavailable", "reason": "no backend accepts connections"}));
    // The rest of the API works without backends.
    assert_eq!(d.read("/api/v1/status").await["nodes_total"], 1);
}

/// Idle admin connections (no token is needed to open one) are closed after
/// the idle timeout, and no more than 64 are served at once, so they cannot
/// use up the daemon's file descriptors: meanwhile the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_admin_connections_are_bounded_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = Daemon::start("", "").await;
    // A request that never finishes its headers.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", d.api)).await.unwrap();
    stalled.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // 200 more connections that say nothing.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", d.api)).await.unwrap());
    }
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.child.id())).unwrap().count();
    assert!(fds < 150, "{fds} descriptors open in the daemon: the admin listener is not bounded");
    // The proxy still serves meanwhile.
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname=postgres", d.port),
        tokio_postgres::NoTls,
    )
    .await
    .expect("proxy login while the admin port is flooded");
    tokio::spawn(conn);
    c.simple_query("SELECT 1").await.unwrap();
    // The stalled request is closed by the server after the idle timeout.
    let mut buf = [0u8; 64];
    let n = within(Duration::from_secs(30), "the server closing an idle admin connection", stalled.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "expected EOF, got {:?}", String::from_utf8_lossy(&buf[..n]));
    drop(idle);
    // Places free again: a normal request is served.
    let h = within(Duration::from_secs(30), "health after the flood", d.get("/api/v1/health", None)).await;
    assert_eq!(h.status, 200);
}

// ---------------------------------------------------------------------------
// Nodes: a primary and a replica
// ---------------------------------------------------------------------------

/// Daemon settings for the node tests: health checks every 200 ms (with a
/// generous timeout, so a busy machine does not mark a node down), and a
/// write with no primary fails at once instead of waiting.
const NODE_EXTRA: &str = "health_check_period: 200ms\nhealth_check_timeout: 10s\nfailover_wait_timeout: 0s";

/// Both nodes checked: up, with the observed roles primary and replica.
fn roles_observed(n: &[Value]) -> bool {
    n.len() == 2
        && n.iter().all(|n| n["health"] == "up")
        && n[0]["observed_role"] == "primary"
        && n[1]["observed_role"] == "replica"
}

/// Waits until `node` of the shared cluster has database `db` (it is
/// created on the primary and streamed).
async fn wait_db_on(node: &pgcluster::Node, db: &str) {
    let c = cluster();
    let start = Instant::now();
    let sql = format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'");
    while c.psql(node, "postgres", &sql).ok().as_deref() != Some("1") {
        assert!(start.elapsed() < DEADLINE, "database {db} did not reach {}", node.name);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls of statements like `pattern` in `db` on `node`, as that node's
/// pg_stat_statements counts them (a statement is counted before its
/// result reaches the client).
fn statement_calls(node: &pgcluster::Node, db: &str, pattern: &str) -> u64 {
    let c = cluster();
    c.psql(
        node,
        "postgres",
        &format!(
            "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = '{db}' AND s.query LIKE '{pattern}'"
        ),
    )
    .unwrap_or_else(|e| panic!("pg_stat_statements on {}: {e}", node.name))
    .parse()
    .expect("a count")
}

/// `SELECT inet_server_port()` `n` times through `c`, each its own
/// transaction: the port of the node that ran each.
async fn read_ports(c: &Client, n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    for _ in 0..n {
        ports.push(one(c, "SELECT inet_server_port()").await.expect("read through pgbalancer").parse().unwrap());
    }
    ports
}

fn counter_of(v: &Value, id: usize, key: &str) -> u64 {
    v["nodes"][id][key].as_u64().unwrap_or_else(|| panic!("nodes[{id}].{key} in {v}"))
}

/// GET /nodes reports both nodes with their observed roles after the first
/// check; detach takes a replica's reads away (PostgreSQL's own counts on
/// each node agree), attach brings them back; /status and /metrics agree
/// with /nodes; detaching the write target says that writes now wait for a
/// primary, and they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_report_roles_and_detach_moves_reads() {
    let c = cluster();
    let (primary, replica) = (&c.primary, &c.replicas[0]);
    let (pport, rport) = (primary.port, replica.port);
    let db = fresh_db("adm_nodes");
    wait_db_on(replica, &db).await;
    let d = Daemon::start_nodes(&[pport, rport], &app_verifier(), &format!("{NODE_EXTRA}\nprimary_reads: false")).await;

    let v = d.wait_nodes("both nodes checked", roles_observed).await;
    assert_eq!((v["write_target"].as_u64(), v["writes"].as_str()), (Some(0), Some("ok")), "{v}");
    assert_eq!(v["health_checks"], true, "{v}");
    assert!(v["forced_primary"].is_null(), "{v}");
    for (i, n) in v["nodes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(n["id"], i, "{n}");
        assert_eq!(n["host"], "127.0.0.1", "{n}");
        assert_eq!(n["port"], [pport, rport][i], "{n}");
        assert_eq!(n["configured_role"], "auto", "{n}");
        assert_eq!(n["role"], n["observed_role"], "{n}");
        assert_eq!(n["state"], "up", "{n}");
        assert_eq!(n["detached"], false, "{n}");
        assert_eq!(n["weight"], 1, "{n}");
        assert_eq!(n["banned"], false, "{n}");
        assert!(n["ban_reason"].is_null() && n["last_error"].is_null(), "{n}");
        assert!(n["checks"].as_u64().unwrap() >= 1, "{n}");
        assert_eq!(n["check_failures"], 0, "{n}");
        assert!(n["lag_bytes"].is_u64() && n["lag_seconds"].is_f64(), "{n}");
    }
    // primary_reads: false: the primary takes the writes, the replica the reads.
    assert_eq!(
        (v["nodes"][0]["write_target"].as_bool(), v["nodes"][0]["takes_reads"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        (v["nodes"][1]["write_target"].as_bool(), v["nodes"][1]["takes_reads"].as_bool()),
        (Some(false), Some(true))
    );
    let one_node = d.read("/api/v1/nodes/1").await;
    for key in
        ["id", "host", "port", "role", "observed_role", "configured_role", "state", "takes_reads", "write_target"]
    {
        assert_eq!(one_node[key], v["nodes"][1][key], "{key}: {one_node}");
    }
    let status = d.read("/api/v1/status").await;
    assert_eq!((status["nodes_total"].as_u64(), status["nodes_up"].as_u64()), (Some(2), Some(2)), "{status}");
    assert_eq!((status["nodes_detached"].as_u64(), status["write_target"].as_u64()), (Some(0), Some(0)), "{status}");

    // Reads go to the replica.
    const N: usize = 10;
    let pattern = "SELECT inet_server_port()%";
    let client = d.connect(&db).await;
    let before = d.read("/api/v1/nodes").await;
    assert!(read_ports(&client, N).await.iter().all(|&p| p == rport), "reads must go to the replica");
    assert_eq!(statement_calls(replica, &db, pattern), N as u64, "the replica's own count");
    assert_eq!(statement_calls(primary, &db, pattern), 0, "the primary's own count");
    let after = d.read("/api/v1/nodes").await;
    assert_eq!(counter_of(&after, 1, "reads_routed") - counter_of(&before, 1, "reads_routed"), N as u64, "{after}");
    assert_eq!(counter_of(&after, 0, "reads_routed"), counter_of(&before, 0, "reads_routed"), "{after}");

    // Detach the replica: it takes no reads; they fall back to the primary.
    let r = d.control("/api/v1/nodes/1/detach").await;
    assert_eq!(r["status"], "detached", "{r}");
    assert_eq!((r["node"]["detached"].as_bool(), r["node"]["takes_reads"].as_bool()), (Some(true), Some(false)), "{r}");
    assert_eq!(r["node"]["state"], "detached", "{r}");
    assert!(r.get("warning").is_none(), "detaching a replica is no warning: {r}");
    assert_eq!(r["write_target"], 0, "{r}");
    let status = d.read("/api/v1/status").await;
    assert_eq!((status["nodes_up"].as_u64(), status["nodes_detached"].as_u64()), (Some(1), Some(1)), "{status}");
    let before = d.read("/api/v1/nodes").await;
    assert!(read_ports(&client, N).await.iter().all(|&p| p == pport), "reads must leave a detached node");
    assert_eq!(statement_calls(replica, &db, pattern), N as u64, "the detached replica ran more reads");
    assert_eq!(statement_calls(primary, &db, pattern), N as u64, "the primary's own count");
    let after = d.read("/api/v1/nodes").await;
    assert_eq!(counter_of(&after, 1, "reads_routed"), counter_of(&before, 1, "reads_routed"), "{after}");
    assert_eq!(after["nodes"][1]["detached"], true, "{after}");
    // Still checked while detached.
    assert_eq!(after["nodes"][1]["health"], "up", "{after}");

    // Attach it: reads come back.
    let r = d.control("/api/v1/nodes/1/attach").await;
    assert_eq!(r["status"], "attached", "{r}");
    assert_eq!((r["node"]["detached"].as_bool(), r["node"]["takes_reads"].as_bool()), (Some(false), Some(true)), "{r}");
    assert!(read_ports(&client, N).await.iter().all(|&p| p == rport), "reads must come back to an attached replica");
    assert_eq!(statement_calls(replica, &db, pattern), 2 * N as u64);
    assert_eq!(statement_calls(primary, &db, pattern), N as u64);

    // /metrics agrees with /nodes (nothing is routed meanwhile).
    let v = d.read("/api/v1/nodes").await;
    let m = parse_metrics(&d.get("/metrics", None).await.body);
    for (i, port) in [(0usize, pport), (1, rport)] {
        let l = format!("node=\"{i}\",address=\"127.0.0.1:{port}\"");
        assert_eq!(metric(&m, &format!("pgbalancer_node_up{{{l}}}")), 1.0);
        assert_eq!(metric(&m, &format!("pgbalancer_node_detached{{{l}}}")), 0.0);
        assert_eq!(metric(&m, &format!("pgbalancer_node_write_target{{{l}}}")), if i == 0 { 1.0 } else { 0.0 });
        let role = ["primary", "replica"][i];
        assert_eq!(metric(&m, &format!("pgbalancer_node_role{{{l},role=\"{role}\"}}")), 1.0);
        assert_eq!(metric(&m, &format!("pgbalancer_node_role{{{l},role=\"unknown\"}}")), 0.0);
        assert_eq!(metric(&m, &format!("pgbalancer_node_banned{{{l}}}")), 0.0);
        assert_eq!(metric(&m, &format!("pgbalancer_node_outstanding{{{l}}}")), 0.0);
        for (series, key) in [
            (format!("pgbalancer_node_routed_transactions_total{{{l},class=\"read\"}}"), "reads_routed"),
            (format!("pgbalancer_node_routed_transactions_total{{{l},class=\"write\"}}"), "writes_routed"),
            (format!("pgbalancer_node_bans_total{{{l}}}"), "bans"),
        ] {
            assert_eq!(metric(&m, &series), counter_of(&v, i, key) as f64, "{series}");
        }
        // Every transaction routed to the node was timed there (outstanding
        // is 0: each one has ended).
        let timed = metric(&m, &format!("pgbalancer_node_transaction_seconds_count{{{l}}}"));
        let routed = counter_of(&v, i, "reads_routed") + counter_of(&v, i, "writes_routed");
        assert!(timed >= routed as f64 && routed > 0, "node {i}: {timed} timed, {routed} routed");
        assert_eq!(metric(&m, &format!("pgbalancer_node_transaction_seconds_bucket{{le=\"+Inf\",{l}}}")), timed);
        assert!(metric(&m, &format!("pgbalancer_node_checks_total{{{l}}}")) >= 1.0);
        assert_eq!(metric(&m, &format!("pgbalancer_node_check_failures_total{{{l}}}")), 0.0);
        assert!(metric(&m, &format!("pgbalancer_node_lag_bytes{{{l}}}")) >= 0.0);
        assert!(metric(&m, &format!("pgbalancer_node_lag_seconds{{{l}}}")) >= 0.0);
        assert!(metric(&m, &format!("pgbalancer_node_ewma_latency_seconds{{{l}}}")) >= 0.0);
    }
    assert!(
        metric(
            &m,
            &format!(
                "pgbalancer_node_routed_transactions_total{{node=\"1\",address=\"127.0.0.1:{rport}\",class=\"read\"}}"
            )
        ) >= 2.0 * N as f64
    );

    // Detach the write target: allowed, and the answer says writes wait.
    let r = d.control("/api/v1/nodes/0/detach").await;
    let warning = r["warning"].as_str().unwrap_or_else(|| panic!("no warning: {r}"));
    assert!(warning.contains("writes now wait for a primary"), "{warning}");
    assert_eq!((r["writes"].as_str(), r["write_target"].is_null()), (Some("no_primary"), true), "{r}");
    assert!(d.read("/api/v1/status").await["write_target"].is_null());
    // They do (failover_wait_timeout: 0s: at once); reads still work.
    let writer = d.connect(&db).await;
    let err = writer.batch_execute("CREATE TABLE t (a int)").await.expect_err("a write with no primary");
    assert!(
        err.to_string().contains("no primary is available") || format!("{err:?}").contains("no primary is available"),
        "{err:?}"
    );
    assert!(read_ports(&client, 3).await.iter().all(|&p| p == rport));
    // Attach it again: it is the write target again.
    let r = d.control("/api/v1/nodes/0/attach").await;
    assert_eq!((r["writes"].as_str(), r["write_target"].as_u64()), (Some("ok"), Some(0)), "{r}");
    let writer = d.connect(&db).await;
    writer.batch_execute("CREATE TABLE t (a int)").await.expect("a write once the primary is attached");
    let port = one(&writer, "INSERT INTO t VALUES (1) RETURNING inet_server_port()").await.unwrap();
    assert_eq!(port, pport.to_string());
}

/// Node control needs an admin token (403 for `read`), unknown ids are
/// 404, promoting a replica without `allow_pg_promote` is 409 and changes
/// nothing, promoting a detached node is 409, promoting the primary pins
/// it as the write target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_control_roles_unknown_ids_and_refused_promote() {
    let c = cluster();
    let (pport, rport) = (c.primary.port, c.replicas[0].port);
    let d = Daemon::start_nodes(&[pport, rport], &app_verifier(), NODE_EXTRA).await;
    d.wait_nodes("both nodes checked", roles_observed).await;

    let read = token("read");
    for verb in ["attach", "detach", "promote"] {
        let r = d.post(&format!("/api/v1/nodes/1/{verb}"), Some(&read)).await;
        assert_eq!(r.status, 403, "{verb}: {}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains("needs role 'admin'"), "{}", r.body);
    }
    assert_eq!(d.get("/api/v1/nodes/1", Some(&read)).await.status, 200);
    let v = d.read("/api/v1/nodes").await;
    assert_eq!(v["nodes"][1]["detached"], false, "a 403 changed something: {v}");

    let admin = token("admin");
    for id in ["2", "99", "abc", "-1", "1x", "18446744073709551616"] {
        let r = d.get(&format!("/api/v1/nodes/{id}"), Some(&read)).await;
        assert_eq!(r.status, 404, "GET node {id}: {}", r.body);
        assert_eq!(r.json()["error"], format!("no node {id}: node ids are 0 to 1"));
        for verb in ["attach", "detach", "promote"] {
            let r = d.post(&format!("/api/v1/nodes/{id}/{verb}"), Some(&admin)).await;
            assert_eq!(r.status, 404, "{verb} node {id}: {}", r.body);
            assert!(r.json()["error"].as_str().unwrap().starts_with("no node "), "{}", r.body);
        }
    }

    // A replica is not made the write target (allow_pg_promote is false).
    let r = d.post("/api/v1/nodes/1/promote", Some(&admin)).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("is a replica") && err.contains("allow_pg_promote: true"), "{err}");
    let v = d.read("/api/v1/nodes").await;
    assert_eq!((v["write_target"].as_u64(), v["forced_primary"].is_null()), (Some(0), true), "{v}");
    // Nor a detached node.
    d.control("/api/v1/nodes/1/detach").await;
    let r = d.post("/api/v1/nodes/1/promote", Some(&admin)).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("is detached"), "{}", r.body);
    // Detaching twice is fine and says so.
    let r = d.control("/api/v1/nodes/1/detach").await;
    assert!(r["message"].as_str().unwrap().contains("already detached"), "{r}");
    d.control("/api/v1/nodes/1/attach").await;

    // The primary can be pinned as the write target (no pg_promote).
    let r = d.control("/api/v1/nodes/0/promote").await;
    assert_eq!(r["status"], "promoted", "{r}");
    assert_eq!((r["pg_promote"].as_bool(), r["forced_primary"].as_u64()), (Some(false), Some(0)), "{r}");
    assert_eq!((r["write_target"].as_u64(), r["previous_write_target"].as_u64()), (Some(0), Some(0)), "{r}");
    assert_eq!(r["node"]["write_target"], true, "{r}");
}

/// `allow_pg_promote: true` on a cluster of its own (the shared one must
/// keep its roles): promote runs pg_promote() on the replica, which leaves
/// recovery, and writes through pgbalancer go to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_runs_pg_promote_when_allowed() {
    let own = tokio::task::spawn_blocking(|| {
        let c = pgcluster::Cluster::start(pgcluster::ClusterOptions { replicas: 1, ..Default::default() })
            .unwrap_or_else(|e| panic!("start a cluster of this test's own: {e}"));
        c.create_role(APP_USER, APP_PASSWORD).expect("create role app");
        c.create_database("promo", APP_USER).expect("create database promo");
        c.psql(&c.primary, "promo", "CREATE TABLE t (a int); ALTER TABLE t OWNER TO app").expect("create t");
        c
    })
    .await
    .unwrap();
    let (primary, replica) = (&own.primary, &own.replicas[0]);
    // The table must be on the replica before it is promoted.
    let start = Instant::now();
    while own.psql(replica, "promo", "SELECT count(*) FROM pg_class WHERE relname = 't'").ok().as_deref() != Some("1") {
        assert!(start.elapsed() < DEADLINE, "table t did not reach the replica");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let verifier = own.psql(primary, "postgres", "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'").unwrap();
    let d =
        Daemon::start_nodes(&[primary.port, replica.port], &verifier, &format!("{NODE_EXTRA}\nallow_pg_promote: true"))
            .await;
    d.wait_nodes("both nodes checked", roles_observed).await;

    let r = d.control("/api/v1/nodes/1/promote").await;
    assert_eq!((r["status"].as_str(), r["pg_promote"].as_bool()), (Some("promoted"), Some(true)), "{r}");
    assert_eq!((r["write_target"].as_u64(), r["forced_primary"].as_u64()), (Some(1), Some(1)), "{r}");
    assert_eq!(r["previous_write_target"], 0, "{r}");
    assert_eq!(
        own.psql(replica, "postgres", "SELECT pg_is_in_recovery()").unwrap(),
        "f",
        "the replica is still in recovery"
    );
    // The checks see it as a primary now; writes go to it (the operator's
    // word beats the old primary's claim).
    d.wait_nodes("node 1 observed as primary", |n| n[1]["observed_role"] == "primary").await;
    let writer = d.connect("promo").await;
    let port =
        one(&writer, "INSERT INTO t VALUES (1) RETURNING inet_server_port()").await.expect("write after promote");
    assert_eq!(port, replica.port.to_string());
    assert_eq!(own.psql(replica, "promo", "SELECT count(*) FROM t").unwrap(), "1");
    assert_eq!(own.psql(primary, "promo", "SELECT count(*) FROM t").unwrap(), "0");
    // Promoting it again: it already is the write target.
    let r = d.control("/api/v1/nodes/1/promote").await;
    assert_eq!(r["pg_promote"], false, "{r}");
    drop(d);
}

/// A checker whose login is refused: the nodes count as up with an unknown
/// role and the refusal as `last_error`; nothing is the write target; a
/// promote asks the node itself, fails the same way, and says so (502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_checker_leaves_roles_unknown_and_promote_says_why() {
    let c = cluster();
    let (pport, rport) = (c.primary.port, c.replicas[0].port);
    let d = Daemon::start_nodes(
        &[pport, rport],
        &app_verifier(),
        &format!("{NODE_EXTRA}\nhealth_check_user: no_such_checker\nhealth_check_password: nope"),
    )
    .await;
    let v = d
        .wait_nodes("both checks refused", |n| {
            n.iter().all(|n| n["health"] == "up" && n["checks"].as_u64() >= Some(1) && n["last_error"].is_string())
        })
        .await;
    for n in v["nodes"].as_array().unwrap() {
        assert_eq!((n["observed_role"].as_str(), n["role"].as_str()), (Some("unknown"), Some("unknown")), "{n}");
        assert!(n["last_error"].as_str().unwrap().contains("no_such_checker"), "{n}");
        assert_eq!(n["check_failures"], 0, "a refused check is not a failed one: {n}");
    }
    assert_eq!((v["writes"].as_str(), v["write_target"].is_null()), (Some("no_primary"), true), "{v}");
    let m = parse_metrics(&d.get("/metrics", None).await.body);
    assert_eq!(
        metric(&m, &format!("pgbalancer_node_role{{node=\"1\",address=\"127.0.0.1:{rport}\",role=\"unknown\"}}")),
        1.0
    );

    let r = d.post("/api/v1/nodes/0/promote", Some(&token("admin"))).await;
    assert_eq!(r.status, 502, "{}", r.body);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("cannot ask whether it is in recovery") && err.contains("no_such_checker"), "{err}");
    assert!(d.read("/api/v1/nodes").await["forced_primary"].is_null());
}

// ---------------------------------------------------------------------------
// PAUSE / RESUME
// ---------------------------------------------------------------------------

/// The values of `t.a` in `db`, read directly on the primary.
async fn rows(db: &str) -> Vec<i32> {
    let c = superuser(db).await;
    c.query("SELECT a FROM t ORDER BY a", &[]).await.expect("read t").iter().map(|r| r.get(0)).collect()
}

/// Whether `msgs` (up to ReadyForQuery) hold a CommandComplete `tag` and no error.
fn completed(msgs: &[raw::Next], tag: &str) -> bool {
    raw::first_error(msgs).is_none()
        && msgs.iter().any(|m| matches!(m, raw::Next::Message(b'C', body) if body.starts_with(tag.as_bytes())))
        && matches!(msgs.last(), Some(raw::Next::Message(b'Z', _)))
}

/// A daemon with `auth_type: trust` (so raw clients can log in as `app`),
/// transaction pooling, and the usual admin API.
fn spawn_trust_daemon(extra: &str) -> Daemon {
    let backend = cluster().primary.port;
    Daemon::spawn_yaml(SECRET, |port, api, secret| {
        format!(
            "listen_addresses: '127.0.0.1'\nport: {port}\npool_mode: transaction\nauth_type: trust\n\
             users:\n  - name: {APP_USER}\n    password: {APP_PASSWORD}\n\
             backends:\n  - host: 127.0.0.1\n    port: {backend}\n    role: primary\n\
             workers: 2\nshutdown_timeout: 10s\n{extra}\n\
             rest_api:\n  enabled: true\n  port: {api}\n  bind_address: 127.0.0.1\n  \
             jwt_secret_file: {}\n  jwt_audience: pgbalancer\n  jwt_issuer: tests\n  jwt_max_ttl: 10m\n",
            secret.display()
        )
    })
}

/// PgBouncer's PAUSE: a transaction open when PAUSE comes goes on and
/// commits; a new transaction of another client waits — its INSERT, sent
/// before, is not on the primary while paused — and runs on RESUME. The
/// pause waits (`?wait=`) for servers to come back: 202 while a client
/// still holds one, 200 once none does. `status.paused` and
/// `pgbalancer_paused` follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_transactions_until_resume() {
    let mut d = spawn_trust_daemon("pool_size: 5");
    d.wait_healthy().await;
    let db = fresh_db("adm_pause");
    create_table(&db).await;
    let admin = token("admin");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", d.port).parse().unwrap();
    let login = |db: String| async move {
        let mut c = raw::Raw::connect(addr).await;
        c.login(&[("user", APP_USER), ("database", &db)]).await;
        c
    };

    // A is inside a transaction; B is connected, between transactions.
    let mut a = login(db.clone()).await;
    a.send(&raw::query("BEGIN; INSERT INTO t VALUES (1)")).await;
    assert!(completed(&a.until_ready().await, "INSERT"));
    let mut b = login(db.clone()).await;
    assert_eq!(d.read("/api/v1/status").await["paused"], false);

    // PAUSE without waiting: A still holds its server.
    let r = d.post("/api/v1/control/pause?wait=0", Some(&admin)).await;
    assert_eq!((r.status, r.json()), (202, json!({"status": "pausing", "active": 1})), "{}", d.log());
    assert_eq!(d.read("/api/v1/status").await["paused"], true);
    let m = parse_metrics(&d.get("/metrics", None).await.body);
    assert_eq!(metric(&m, "pgbalancer_paused"), 1.0);

    // B starts a new transaction: it must wait.
    b.send(&raw::query("INSERT INTO t VALUES (2)")).await;

    // A's transaction goes on and commits while paused.
    a.send(&raw::query("INSERT INTO t VALUES (3)")).await;
    assert!(completed(&a.until_ready().await, "INSERT"), "A's statement inside its transaction while paused");
    a.send(&raw::query("COMMIT")).await;
    assert!(completed(&a.until_ready().await, "COMMIT"), "A's COMMIT while paused");

    // No client holds a server now: the pause is complete.
    let r = d.post("/api/v1/control/pause?wait=10", Some(&admin)).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "paused"})), "{}", d.log());
    // B's INSERT has not run: the primary has A's rows only.
    assert_eq!(rows(&db).await, vec![1, 3]);
    assert_eq!(d.read("/api/v1/pools").await["pools"][0]["active"], 0);
    // A's next transaction waits too.
    a.send(&raw::query("INSERT INTO t VALUES (4)")).await;
    assert_eq!(rows(&db).await, vec![1, 3]);

    // A read token cannot resume; an admin one can.
    let r = http(d.api, source(50), "POST", "/api/v1/control/resume", Some(&bearer(&token("read")))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = d.post("/api/v1/control/resume", Some(&admin)).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "resumed"})));
    assert!(completed(&b.until_ready().await, "INSERT"), "B's INSERT after RESUME");
    assert!(completed(&a.until_ready().await, "INSERT"), "A's INSERT after RESUME");
    assert_eq!(rows(&db).await, vec![1, 2, 3, 4]);

    let r = d.post("/api/v1/control/resume", Some(&admin)).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "not paused"})));
    assert_eq!(d.read("/api/v1/status").await["paused"], false);
    let m = parse_metrics(&d.get("/metrics", None).await.body);
    assert_eq!(metric(&m, "pgbalancer_paused"), 0.0);

    // Nobody in a transaction: PAUSE is complete at once; RESUME undoes it.
    let r = d.post("/api/v1/control/pause", Some(&admin)).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "paused"})));
    assert_eq!(d.post("/api/v1/control/resume", Some(&admin)).await.json()["status"], "resumed");
    b.send(&raw::query("SELECT 1")).await;
    assert!(completed(&b.until_ready().await, "SELECT"));

    // Bad requests: 400, never echoing the query; the role is checked first.
    for (i, q) in ["wait=301", "wait=abc", "wait=-1", "wait=", "wait=1.5", "token=abc", "wait=1&x=2"].iter().enumerate()
    {
        let r = http(d.api, source(60 + i as u8), "POST", &format!("/api/v1/control/pause?{q}"), Some(&bearer(&admin)))
            .await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(!r.body.contains("abc"), "{}", r.body);
    }
    let r = http(d.api, source(70), "POST", "/api/v1/control/pause", Some(&bearer(&token("read")))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(d.read("/api/v1/status").await["paused"], false, "a refused pause must not pause");
}

/// A pause waiting longer than the admin connection's idle timeout (10 s)
/// still gets its answer: the connection is not closed under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pause_is_answered() {
    let mut d = spawn_trust_daemon("");
    d.wait_healthy().await;
    let db = fresh_db("adm_pause_long");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", d.port).parse().unwrap();
    let mut a = raw::Raw::connect(addr).await;
    a.login(&[("user", APP_USER), ("database", &db)]).await;
    a.send(&raw::query("BEGIN")).await;
    assert!(completed(&a.until_ready().await, "BEGIN"));
    let started = Instant::now();
    let r = within(
        Duration::from_secs(30),
        "pause ?wait=12",
        d.post("/api/v1/control/pause?wait=12", Some(&token("admin"))),
    )
    .await;
    assert_eq!((r.status, r.json()), (202, json!({"status": "pausing", "active": 1})));
    assert!(started.elapsed() >= Duration::from_secs(12), "answered after {:?}", started.elapsed());
    a.send(&raw::query("COMMIT")).await;
    assert!(completed(&a.until_ready().await, "COMMIT"));
    assert_eq!(d.post("/api/v1/control/resume", Some(&token("admin"))).await.json()["status"], "resumed");
}

// ---------------------------------------------------------------------------
// POST /api/v1/auth/login
// ---------------------------------------------------------------------------

const OPS_PASSWORD: &str = "ops-login-password-42";
const LURKER_PASSWORD: &str = "lurker-password-7";

/// `users:` with `app` (PostgreSQL's own SCRAM verifier), `ops` (a
/// plaintext password) and `lurker` (a verifier, but in neither list).
fn login_users() -> String {
    format!(
        "users:\n  - name: {APP_USER}\n    password: '{}'\n  - name: ops\n    password: {OPS_PASSWORD}\n  \
         - name: lurker\n    password: '{}'\n",
        app_verifier(),
        postgres_protocol::password::scram_sha_256(LURKER_PASSWORD.as_bytes()),
    )
}

/// A daemon with [`login_users`], `ops` an admin user and `app` a stats
/// user, and `rest` as the rest_api keys after enabled/port/bind_address.
fn spawn_login_daemon(rest: &str) -> Daemon {
    let backend = cluster().primary.port;
    let users = login_users();
    let rest = rest.to_string();
    Daemon::spawn_yaml(SECRET, move |port, api, secret| {
        let rest = rest.replace("SECRET_FILE", &secret.display().to_string());
        format!(
            "listen_addresses: '127.0.0.1'\nport: {port}\npool_mode: transaction\nauth_type: scram-sha-256\n{users}\
             admin_users: [ops]\nstats_users: [{APP_USER}]\n\
             backends:\n  - host: 127.0.0.1\n    port: {backend}\n    role: primary\n\
             workers: 2\nshutdown_timeout: 10s\n\
             rest_api:\n  enabled: true\n  port: {api}\n  bind_address: 127.0.0.1\n{rest}"
        )
    })
}

async fn login(d: &Daemon, from: IpAddr, body: &str) -> Resp {
    http_body(d.api, from, "POST", "/api/v1/auth/login", None, body.as_bytes().to_vec()).await
}

fn credentials(user: &str, password: &str) -> String {
    json!({"user": user, "password": password}).to_string()
}

/// Login end to end: an admin user's token reads and mutates, a stats
/// user's token reads but may not mutate; every failure (wrong password,
/// unknown user, a user in neither list) is the same 401 and counts in the
/// per-source limiter (429 even for the right password then); bad bodies
/// are 400/413; no password or token reaches the log; without admin_users
/// and stats_users login is disabled (403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_exchanges_a_password_for_a_token() {
    let mut d = spawn_login_daemon(
        "  jwt_secret_file: SECRET_FILE\n  jwt_audience: pgbalancer\n  jwt_issuer: tests\n  jwt_max_ttl: 10m\n",
    );
    d.wait_healthy().await;

    // ops (admin_users, plaintext entry): an admin token for 10 minutes
    // (jwt_max_ttl is under 15), no Authorization header needed.
    let before = now();
    let r = login(&d, home(), &credentials("ops", OPS_PASSWORD)).await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, d.log());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(
        (v["role"].as_str(), v["token_type"].as_str(), v["expires_in"].as_u64()),
        (Some("admin"), Some("Bearer"), Some(600))
    );
    let ops_token = v["token"].as_str().unwrap().to_string();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_audience(&["pgbalancer"]);
    validation.set_issuer(&["tests"]);
    let claims = jsonwebtoken::decode::<Value>(
        &ops_token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("the login token verifies with the configured secret")
    .claims;
    assert_eq!((claims["sub"].as_str(), claims["role"].as_str()), (Some("ops"), Some("admin")), "{claims}");
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat >= before && iat <= now(), "{claims}");
    assert_eq!(claims["exp"].as_u64().unwrap() - iat, 600, "{claims}");
    assert_eq!(d.get("/api/v1/status", Some(&ops_token)).await.status, 200);
    let r = d.post("/api/v1/control/reload", Some(&ops_token)).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "reloaded"})));

    // app (stats_users, PostgreSQL's verifier): a read token.
    let r = login(&d, home(), &credentials(APP_USER, APP_PASSWORD)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["role"], "read");
    let app_token = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(d.get("/api/v1/pools", Some(&app_token)).await.status, 200);
    let r = d.post("/api/v1/control/reload", Some(&app_token)).await;
    assert_eq!(r.status, 403, "{}", r.body);

    // Every failure looks the same.
    let failures = [
        credentials("ops", "wrong-password"),
        credentials("ghost", OPS_PASSWORD),
        credentials("lurker", LURKER_PASSWORD),
        credentials(APP_USER, OPS_PASSWORD),
        credentials("ops", ""),
        credentials("", ""),
    ];
    let mut answers = Vec::new();
    for body in &failures {
        let r = login(&d, source(80), body).await;
        answers.push((r.status, r.header("www-authenticate").map(String::from), r.body));
    }
    assert_eq!(answers[0].0, 401, "{answers:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&answers[0].2).unwrap(),
        json!({"error": "invalid user name or password"})
    );
    assert!(answers.iter().all(|a| *a == answers[0]), "failures differ: {answers:?}");

    // Scenario 60 for login: after 10 failures that source gets 429, even
    // with the right password; other sources are not affected.
    for _ in failures.len()..10 {
        assert_eq!(login(&d, source(80), &credentials("ops", "guess")).await.status, 401);
    }
    let r = login(&d, source(80), &credentials("ops", OPS_PASSWORD)).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(login(&d, source(81), &credentials("ops", OPS_PASSWORD)).await.status, 200);
    let stats = d.read("/api/v1/stats").await;
    assert!(stats["api_auth_failures"].as_u64().unwrap() >= 10, "{stats}");

    // Bodies: too large (413), not the expected JSON (400), never 500.
    let big = credentials("ops", &"x".repeat(5000));
    let r = login(&d, source(82), &big).await;
    assert_eq!((r.status, r.json()), (413, json!({"error": "request body too large: at most 4096 bytes"})));
    for (i, body) in [
        "",
        "not json",
        "{\"user\": \"ops\"}",
        "{\"user\": \"ops\", \"password\": \"x\", \"role\": \"admin\"}",
        "{\"user\": 1, \"password\": \"x\"}",
        "[\"ops\", \"x\"]",
        "\u{0}\u{1}",
    ]
    .iter()
    .enumerate()
    {
        let r = login(&d, source(83 + i as u8), body).await;
        assert_eq!(r.status, 400, "{body:?}: {}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains("JSON"), "{}", r.body);
    }
    let r = http_body(d.api, source(95), "POST", "/api/v1/auth/login", None, vec![0xff, 0xfe, b'{']).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(d.get("/api/v1/auth/login", None).await.status, 405);

    // Neither passwords nor tokens reach the log; failures are logged.
    let log = d.log();
    for secret in [OPS_PASSWORD, APP_PASSWORD, LURKER_PASSWORD, ops_token.as_str(), app_token.as_str()] {
        assert!(!log.contains(secret), "log contains a secret: {log}");
    }
    assert!(log.contains("login failed"), "{log}");

    // Without admin_users and stats_users, login is disabled.
    let yaml = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, yaml.replace("admin_users: [ops]\nstats_users: [app]\n", "")).unwrap();
    assert_eq!(d.post("/api/v1/control/reload", Some(&token("admin"))).await.status, 200, "{}", d.log());
    let r = login(&d, home(), &credentials("ops", OPS_PASSWORD)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json(), json!({"error": "login is disabled: no admin_users or stats_users are configured"}));
    assert!(d.exited().is_none());
}

// ---------------------------------------------------------------------------
// RS256 and EdDSA
// ---------------------------------------------------------------------------

/// PEM (private, public) of a fresh 2048-bit RSA key (made off the runtime:
/// it takes seconds in a debug build).
async fn rsa_key() -> (String, String) {
    tokio::task::spawn_blocking(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        (
            key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            key.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        )
    })
    .await
    .unwrap()
}

/// PEM (private, public) of a fresh Ed25519 key.
fn ed25519_key() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    (key.serialize_pem(), key.public_key_pem())
}

/// A token for `role` with the aud/iss of the key daemons, signed with `alg`.
fn signed(alg: Algorithm, key: &EncodingKey, role: &str) -> String {
    let claims = json!({"exp": now() + 300, "iat": now(), "aud": "pgbalancer", "iss": "tests", "role": role});
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn rest_keys(alg: &str, public: &std::path::Path, private: Option<&std::path::Path>) -> String {
    let mut r = format!(
        "  jwt_algorithm: {alg}\n  jwt_public_key_file: {}\n  jwt_audience: pgbalancer\n  jwt_issuer: tests\n  \
         jwt_max_ttl: 10m\n",
        public.display()
    );
    if let Some(p) = private {
        r.push_str(&format!("  jwt_private_key_file: {}\n", p.display()));
    }
    r
}

/// RS256, then EdDSA after a reload: tokens signed with the private key
/// pass; HS256 tokens "signed" with the public key as secret (scenario 52),
/// with the old HS256 secret, or with another algorithm's key are 401;
/// login signs with jwt_private_key_file, and is disabled (403) without it;
/// a private key that is not the public key's other half rejects the
/// reload; a private key given as the public one refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_eddsa_tokens_and_login() {
    let keys = tempfile::tempdir().unwrap();
    let (rsa_private, rsa_public) = rsa_key().await;
    let (ed_private, ed_public) = ed25519_key();
    let (other_ed_private, _) = ed25519_key();
    let file = |name: &str, pem: &str| {
        let p = keys.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let (rsa_priv_path, rsa_pub_path) = (file("rsa.key", &rsa_private), file("rsa.pub", &rsa_public));
    let (ed_priv_path, ed_pub_path) = (file("ed.key", &ed_private), file("ed.pub", &ed_public));
    let other_ed_path = file("other-ed.key", &other_ed_private);
    let rsa_key = EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap();
    let ed_key = EncodingKey::from_ed_pem(ed_private.as_bytes()).unwrap();

    let mut d = spawn_login_daemon(&rest_keys("RS256", &rsa_pub_path, Some(&rsa_priv_path)));
    d.wait_healthy().await;
    let rs_admin = signed(Algorithm::RS256, &rsa_key, "admin");
    assert_eq!(d.get("/api/v1/status", Some(&rs_admin)).await.status, 200, "{}", d.log());
    assert_eq!(d.post("/api/v1/control/resume", Some(&rs_admin)).await.status, 200);
    assert_eq!(d.post("/api/v1/control/resume", Some(&signed(Algorithm::RS256, &rsa_key, "read"))).await.status, 403);

    // Scenario 52 and friends: 401, never 200.
    let claims = json!({"exp": now() + 300, "aud": "pgbalancer", "iss": "tests", "role": "admin"});
    let hs = |secret: &[u8]| {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).unwrap()
    };
    let public_der = jsonwebtoken::DecodingKey::from_rsa_pem(rsa_public.as_bytes()).unwrap().as_bytes().to_vec();
    for (i, (what, t)) in [
        ("HS256 with the RS256 public key (PEM) as secret", hs(rsa_public.as_bytes())),
        ("HS256 with the RS256 public key (PKCS#1 DER) as secret", hs(&public_der)),
        ("HS256 with the old secret", hs(SECRET.as_bytes())),
        ("EdDSA", signed(Algorithm::EdDSA, &ed_key, "admin")),
        ("RS512 with the right key", signed(Algorithm::RS512, &rsa_key, "admin")),
    ]
    .into_iter()
    .enumerate()
    {
        let r = http(d.api, source(120 + i as u8), "GET", "/api/v1/status", Some(&bearer(&t))).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        if what.starts_with("HS256 with the RS256") {
            assert_eq!(r.json()["error"], "token algorithm is not the configured one", "{what}");
        }
    }

    // Login signs RS256 with the private key.
    let r = login(&d, home(), &credentials("ops", OPS_PASSWORD)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(jsonwebtoken::decode_header(&t).unwrap().alg, Algorithm::RS256);
    assert_eq!(d.post("/api/v1/control/resume", Some(&t)).await.status, 200);

    // A private key that does not match: the reload is rejected, nothing changes.
    let yaml = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, yaml.replace(&rsa_priv_path.display().to_string(), &other_ed_path.display().to_string()))
        .unwrap();
    let r = d.post("/api/v1/control/reload", Some(&rs_admin)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["problems"][0]["key"], "rest_api.jwt_private_key_file", "{}", r.body);
    assert_eq!(login(&d, home(), &credentials("ops", OPS_PASSWORD)).await.status, 200, "the old settings stay");

    // No private key: login is disabled, tokens from elsewhere still work.
    std::fs::write(&d.config, yaml.replace(&format!("  jwt_private_key_file: {}\n", rsa_priv_path.display()), ""))
        .unwrap();
    assert_eq!(d.post("/api/v1/control/reload", Some(&rs_admin)).await.status, 200, "{}", d.log());
    let r = login(&d, home(), &credentials("ops", OPS_PASSWORD)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("jwt_private_key_file is not set"), "{}", r.body);
    assert_eq!(d.get("/api/v1/status", Some(&rs_admin)).await.status, 200);

    // Switch to EdDSA by reload: Ed25519 tokens pass, RS256 ones no longer.
    let base = yaml.split("  jwt_algorithm:").next().unwrap().to_string();
    std::fs::write(&d.config, format!("{base}{}", rest_keys("EdDSA", &ed_pub_path, Some(&ed_priv_path)))).unwrap();
    assert_eq!(d.post("/api/v1/control/reload", Some(&rs_admin)).await.status, 200, "{}", d.log());
    let ed_admin = signed(Algorithm::EdDSA, &ed_key, "admin");
    assert_eq!(d.get("/api/v1/status", Some(&ed_admin)).await.status, 200);
    let r = http(d.api, source(130), "GET", "/api/v1/status", Some(&bearer(&rs_admin))).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = http(d.api, source(131), "GET", "/api/v1/status", Some(&bearer(&hs(ed_public.as_bytes())))).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let other = EncodingKey::from_ed_pem(other_ed_private.as_bytes()).unwrap();
    let r =
        http(d.api, source(132), "GET", "/api/v1/status", Some(&bearer(&signed(Algorithm::EdDSA, &other, "admin"))))
            .await;
    assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("invalid signature")));
    let r = login(&d, home(), &credentials(APP_USER, APP_PASSWORD)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(jsonwebtoken::decode_header(&t).unwrap().alg, Algorithm::EdDSA);
    assert_eq!(d.get("/api/v1/pools", Some(&t)).await.status, 200);
    assert!(!d.log().contains(ed_private.lines().nth(1).unwrap()), "private key material in the log");
    drop(d);

    // The private key given as the public one: refuses to start, without
    // printing the key.
    let mut d = spawn_login_daemon(&rest_keys("RS256", &rsa_priv_path, None));
    let st = d.wait_exit().await;
    assert!(!st.success());
    let log = d.log();
    assert!(log.contains("rest_api.jwt_public_key_file") && log.contains("holds a private key"), "{log}");
    assert!(!log.contains(rsa_private.lines().nth(1).unwrap()), "{log}");
}
