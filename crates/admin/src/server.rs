//! The HTTP server: routes, the token check, handlers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pgbalancer_config::Config;
use pgbalancer_proxy::clients::ClientState;
use pgbalancer_proxy::control::Paused;
use pgbalancer_proxy::server::{ServerConn, ServerLogin, ServerSecret};
use pgbalancer_proxy::snapshot::{
    clients_snapshot, nodes_snapshot, servers_snapshot, ClientSnapshot, NodeSnapshot, PoolSnapshot, RoutingSnapshot,
    ServerSnapshot, Snapshot,
};
use pgbalancer_proxy::topology::{Ban, Health, Primary, Role as NodeRole};
use pgbalancer_proxy::{Phase, Shared};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::auth::{AuthFailure, FailureLimiter, Role};
use crate::error::AdminError;
use crate::listener::{track_busy, LimitedListener, Peer};
use crate::login::{self, LoginRequest};
use crate::{metrics, AdminState, Command};

/// Failed authentications from one address before it gets 429.
pub const AUTH_FAILURE_LIMIT: u32 = 10;
/// The window those failures are counted in, and how long 429 lasts.
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses the failure limiter remembers at most.
const AUTH_FAILURE_SOURCES: usize = 10_000;
/// How long a health answer is reused (each one opens a TCP connection to
/// every backend).
const HEALTH_CACHE: Duration = Duration::from_secs(1);
/// How long the health check waits for one backend's TCP connect.
const HEALTH_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a REST reload waits for the daemon's answer.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `pg_promote()` waits for the promotion to finish (its
/// `wait_seconds`): under the admin connection's idle timeout, so the
/// answer reaches the caller.
const PG_PROMOTE_WAIT_SECS: u64 = 8;
/// After `pg_promote()`, how long promote waits at most for a health check
/// to see the node out of recovery (routing needs that to send writes there).
const PROMOTE_ROUTE_WAIT: Duration = Duration::from_secs(10);
/// How long `POST /api/v1/control/pause` waits for servers to come back,
/// unless `?wait=` says otherwise; and the most it may say.
pub const PAUSE_WAIT_DEFAULT: Duration = Duration::from_secs(30);
pub const PAUSE_WAIT_MAX: Duration = Duration::from_secs(300);

struct Ctx {
    proxy: Arc<Shared>,
    state: Arc<AdminState>,
    control: mpsc::Sender<Command>,
    limiter: FailureLimiter,
    /// Last health verdict (backends reachable) and when it was taken.
    health: Mutex<Option<(Instant, bool)>>,
    /// A health probe is running: others reuse the last verdict meanwhile
    /// instead of probing the backends too.
    probing: AtomicBool,
    /// Places for login's key derivations.
    login_slots: Arc<Semaphore>,
}

/// The running admin server.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `host:port` (port 0 picks a free one) and serves: HTTPS only
    /// when `state` has a certificate ([`AdminState::load_tls`]).
    pub async fn start(
        host: &str,
        port: u16,
        proxy: Arc<Shared>,
        state: Arc<AdminState>,
        control: mpsc::Sender<Command>,
    ) -> Result<AdminServer, AdminError> {
        let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let listener =
            TcpListener::bind(&addr).await.map_err(|source| AdminError::Bind { addr: addr.clone(), source })?;
        let local = listener.local_addr().map_err(|source| AdminError::Bind { addr, source })?;
        let ctx = Arc::new(Ctx {
            proxy,
            state,
            control,
            limiter: FailureLimiter::new(AUTH_FAILURE_LIMIT, AUTH_FAILURE_WINDOW, AUTH_FAILURE_SOURCES),
            health: Mutex::new(None),
            probing: AtomicBool::new(false),
            login_slots: Arc::new(Semaphore::new(login::MAX_CONCURRENT)),
        });
        let tls = ctx.state.https().then(|| ctx.state.tls_config());
        let app = router(ctx);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut listener = LimitedListener::new(listener);
            if let Some(tls) = tls {
                listener = listener.with_tls(tls);
            }
            let serve = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "admin API server failed");
            }
        });
        Ok(AdminServer { addr: local, stop: Some(stop_tx), task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish (up to 5 s), and
    /// returns.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn router(ctx: Arc<Ctx>) -> Router {
    let guarded = Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/pools", get(pools))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/clients", get(clients))
        .route("/api/v1/servers", get(servers))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{id}", get(node))
        .route("/api/v1/nodes/{id}/attach", post(attach))
        .route("/api/v1/nodes/{id}/detach", post(detach))
        .route("/api/v1/nodes/{id}/promote", post(promote))
        .route("/api/v1/control/reload", post(reload))
        .route("/api/v1/control/pause", post(pause))
        .route("/api/v1/control/resume", post(resume))
        .route("/api/v1/control/stop", post(stop))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_token));
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/auth/login", post(login))
        .route("/metrics", get(metrics_text))
        .merge(guarded)
        .fallback(|| async { AdminError::NotFound })
        .method_not_allowed_fallback(|| async { AdminError::MethodNotAllowed })
        .layer(middleware::from_fn(track_busy))
        .with_state(ctx)
}

fn rate_limited(wait: Duration) -> AdminError {
    let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    AdminError::RateLimited { retry_after_secs }
}

/// The bearer-token check in front of every guarded route: 429 for a
/// source over its failure budget, 401 for a missing or bad token, 403 for
/// a role that does not allow the method (GET: `read` or `admin`; anything
/// else: `admin`).
async fn require_token(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    let peer = peer.addr;
    let auth = ctx.state.auth();
    if !auth.enabled() {
        return next.run(req).await;
    }
    let ip = peer.ip();
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let verdict = match (values.next(), values.next()) {
        (_, Some(_)) => Err(AuthFailure::Invalid("more than one Authorization header".into())),
        (v, None) => auth.check(v.map(|v| v.as_bytes())),
    };
    drop(auth);
    let need = if matches!(*req.method(), Method::GET | Method::HEAD) { Role::Read } else { Role::Admin };
    match verdict {
        Ok(role) if role >= need => next.run(req).await,
        Ok(_) => AdminError::Forbidden(format!(
            "role 'read' may only read; {} {} needs role 'admin'",
            req.method(),
            req.uri().path()
        ))
        .into_response(),
        Err(AuthFailure::NoRole) => AdminError::Forbidden(AuthFailure::NoRole.to_string()).into_response(),
        Err(AuthFailure::Invalid(why)) => {
            // Only failures are limited: a valid token is served even from a
            // source over its budget, so nobody sharing an address (every
            // local user on loopback) can lock the operator out.
            if let Some(wait) = ctx.limiter.blocked(ip, Instant::now()) {
                return rate_limited(wait).into_response();
            }
            ctx.limiter.record_failure(ip, Instant::now());
            ctx.state.auth_failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %ip, reason = %why, path = req.uri().path(), "admin API: authentication failed");
            AdminError::Unauthorized(why).into_response()
        }
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Running => "running",
        Phase::Draining => "draining",
        Phase::Stopping => "stopping",
    }
}

/// 200 while the proxy runs and at least one configured backend accepts a
/// TCP connection; 503 otherwise. Unauthenticated: it says nothing else.
async fn health(State(ctx): State<Arc<Ctx>>) -> Response {
    let unavailable =
        |reason: &str| (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "reason": reason})));
    if ctx.proxy.phase() != Phase::Running {
        return unavailable("shutting down").into_response();
    }
    if backends_reachable(&ctx).await {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        unavailable("no backend accepts connections").into_response()
    }
}

async fn backends_reachable(ctx: &Ctx) -> bool {
    let last = *ctx.health.lock().unwrap();
    if let Some((at, up)) = last {
        if at.elapsed() < HEALTH_CACHE {
            return up;
        }
    }
    // One probe at a time (once there is a verdict to fall back on).
    if ctx.probing.swap(true, Ordering::AcqRel) {
        if let Some((_, up)) = last {
            return up;
        }
    }
    struct Probing<'a>(&'a AtomicBool);
    impl Drop for Probing<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _probing = Probing(&ctx.probing);
    let backends: Vec<(String, u16)> =
        ctx.proxy.config.load().backends.iter().map(|b| (b.host.clone(), b.port)).collect();
    let mut probes = JoinSet::new();
    for (host, port) in backends {
        probes.spawn(async move {
            matches!(
                tokio::time::timeout(HEALTH_CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port))).await,
                Ok(Ok(_))
            )
        });
    }
    let mut up = false;
    while let Some(r) = probes.join_next().await {
        if r.unwrap_or(false) {
            up = true;
            probes.abort_all();
            break;
        }
    }
    *ctx.health.lock().unwrap() = Some((Instant::now(), up));
    up
}

fn servers_json(s: &Snapshot) -> Value {
    let t = &s.totals;
    json!({
        "active": t.servers_active,
        "idle": t.servers_idle,
        "connecting": t.servers_connecting,
        "total": t.servers_active + t.servers_idle + t.servers_connecting,
    })
}

async fn status(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let s = ctx.proxy.snapshot();
    let a = ctx.state.counters();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": a.uptime_seconds,
        "phase": phase_name(s.phase),
        "paused": ctx.proxy.pause.is_paused(),
        "pool_mode": s.pool_mode.to_string(),
        "clients": s.totals.clients,
        "pinned_clients": s.totals.pinned_clients,
        "waiting_clients": s.totals.waiting_clients,
        "servers": servers_json(&s),
        "pools": s.pools.len(),
        "nodes_total": s.nodes.len(),
        "nodes_up": s.nodes.iter().filter(|n| n.health == Health::Up && !n.detached).count(),
        "nodes_detached": s.nodes.iter().filter(|n| n.detached).count(),
        "write_target": write_target(&s.routing),
    }))
}

fn pool_json(p: &PoolSnapshot) -> Value {
    json!({
        "database": p.database,
        "user": p.user,
        "backend": p.backend,
        "host": p.host,
        "port": p.port,
        "active": p.active,
        "idle": p.idle,
        "connecting": p.connecting,
        "waiting": p.waiting,
        "connects": p.connects,
        "connect_failures": p.connect_failures,
        "wait_timeouts": p.wait_timeouts,
    })
}

async fn pools(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let s = ctx.proxy.snapshot();
    let backends: Vec<Value> = s
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"index": i, "host": b.host, "port": b.port, "role": b.role.to_string(), "weight": b.weight}))
        .collect();
    Json(json!({
        "pool_mode": s.pool_mode.to_string(),
        "pool_size": s.pool_size,
        "backends": backends,
        "pools": s.pools.iter().map(pool_json).collect::<Vec<_>>(),
    }))
}

async fn stats(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let s = ctx.proxy.snapshot();
    let a = ctx.state.counters();
    let t = &s.totals;
    Json(json!({
        "uptime_seconds": a.uptime_seconds,
        "clients": t.clients,
        "pinned_clients": t.pinned_clients,
        "waiting_clients": t.waiting_clients,
        "servers": servers_json(&s),
        "clients_total": t.clients_total,
        "clients_rejected": t.clients_rejected,
        "login_failures": t.login_failures,
        "unauthenticated": t.unauthenticated,
        "unauthenticated_rejected": t.unauthenticated_rejected,
        "auth_throttled": t.auth_throttled,
        "transactions": t.transactions,
        "server_connects": t.connects,
        "server_connect_failures": t.connect_failures,
        "wait_timeouts": t.wait_timeouts,
        "client_bytes": ctx.proxy.traffic.client_bytes.load(Ordering::Relaxed),
        "server_bytes": ctx.proxy.traffic.server_bytes.load(Ordering::Relaxed),
        "reloads": a.reloads,
        "reload_failures": a.reload_failures,
        "api_auth_failures": a.api_auth_failures,
    }))
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-01-05T09:30:00Z`), or
/// `null` for a time before the epoch.
fn rfc3339(t: SystemTime) -> Value {
    match pgbalancer_proxy::snapshot::utc_fields(t) {
        Some((y, mo, d, h, mi, s)) => json!(format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")),
        None => Value::Null,
    }
}

fn client_json(c: &ClientSnapshot, now: SystemTime) -> Value {
    json!({
        "id": c.id,
        "address": c.addr.to_string(),
        "user": c.user,
        "database": c.database,
        "application_name": c.application_name,
        "connected_at": rfc3339(c.connected_at),
        "connected_seconds": now.duration_since(c.connected_at).unwrap_or_default().as_secs(),
        "state": c.state.as_str(),
        "server": c.server.map(|(node, pid)| json!({"node": node, "pid": pid})),
        "transactions": c.transactions,
    })
}

/// `GET /api/v1/clients`: every logged-in client, by id.
async fn clients(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let list = clients_snapshot(&ctx.proxy);
    let now = SystemTime::now();
    let count = |st: ClientState| list.iter().filter(|c| c.state == st).count();
    Json(json!({
        "total": list.len(),
        "active": count(ClientState::Active),
        "idle": count(ClientState::Idle),
        "waiting": count(ClientState::Waiting),
        "clients": list.iter().map(|c| client_json(c, now)).collect::<Vec<_>>(),
    }))
}

fn server_json(s: &ServerSnapshot) -> Value {
    json!({
        "node": s.node,
        "host": s.host,
        "port": s.port,
        "database": s.database,
        "user": s.user,
        "pid": s.pid,
        "state": if s.client.is_some() { "active" } else { "idle" },
        "client": s.client,
        "idle_seconds": s.idle_for.map(|d| d.as_secs_f64()),
        "age_seconds": s.age.map(|d| d.as_secs_f64()),
    })
}

/// `GET /api/v1/servers`: every open server connection, idle ones in the
/// pools and the ones clients hold, sorted by node, database, user, pid.
async fn servers(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let list = servers_snapshot(&ctx.proxy);
    let active = list.iter().filter(|s| s.client.is_some()).count();
    Json(json!({
        "total": list.len(),
        "active": active,
        "idle": list.len() - active,
        "servers": list.iter().map(server_json).collect::<Vec<_>>(),
    }))
}

fn write_target(r: &RoutingSnapshot) -> Option<usize> {
    match r.primary {
        Primary::Node(i) => Some(i),
        Primary::None | Primary::Conflict => None,
    }
}

/// One word for a node: `detached`, `down`, `banned` (up, but lagging too
/// far to take reads), `up`, or `unknown` (not checked yet).
fn node_state(n: &NodeSnapshot) -> &'static str {
    match (n.detached, n.health, n.ban) {
        (true, _, _) => "detached",
        (false, Health::Down, _) => "down",
        (false, _, b) if b != Ban::None => "banned",
        (false, h, _) => h.as_str(),
    }
}

fn node_json(n: &NodeSnapshot) -> Value {
    json!({
        "id": n.id,
        "host": n.host,
        "port": n.port,
        "role": n.role.as_str(),
        "observed_role": n.observed_role.as_str(),
        "configured_role": n.configured_role.to_string(),
        "health": n.health.as_str(),
        "detached": n.detached,
        "state": node_state(n),
        "weight": n.weight,
        "write_target": n.write_target,
        "takes_reads": n.takes_reads,
        "lag_bytes": n.lag_bytes,
        "lag_seconds": n.lag.as_secs_f64(),
        "banned": n.ban != Ban::None,
        "ban_reason": n.ban.as_str(),
        "ewma_latency_seconds": n.ewma_latency.map(|d| d.as_secs_f64()),
        "outstanding": n.outstanding,
        "reads_routed": n.reads,
        "writes_routed": n.writes,
        "bans": n.bans,
        "downs": n.downs,
        "checks": n.checks,
        "check_failures": n.check_failures,
        "last_error": n.last_error,
    })
}

/// Where writes go: `ok` (to `write_target`), `no_primary` (they wait for
/// one, up to `failover_wait_timeout`) or `conflict` (refused: more than
/// one primary with `follow_primary: strict`).
fn routing_json(r: &RoutingSnapshot) -> Value {
    let writes = match r.primary {
        Primary::Node(_) => "ok",
        Primary::None => "no_primary",
        Primary::Conflict => "conflict",
    };
    json!({
        "write_target": write_target(r),
        "writes": writes,
        "forced_primary": r.forced_primary,
        "health_checks": r.health_checks,
    })
}

async fn nodes(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let (nodes, routing) = nodes_snapshot(&ctx.proxy.topology);
    let mut v = routing_json(&routing);
    v["nodes"] = nodes.iter().map(node_json).collect();
    Json(v)
}

/// The node id of a path, or 404.
fn node_id(ctx: &Ctx, raw: &str) -> Result<usize, AdminError> {
    let count = ctx.proxy.topology.nodes().len();
    match raw.parse::<usize>() {
        Ok(id) if id < count && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(AdminError::NoSuchNode { id: raw.chars().take(40).collect(), count }),
    }
}

async fn node(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Result<Json<Value>, AdminError> {
    let id = node_id(&ctx, &id)?;
    let (nodes, _) = nodes_snapshot(&ctx.proxy.topology);
    Ok(Json(node_json(&nodes[id])))
}

/// The answer of attach/detach/promote: what happened, the node and where
/// writes go now.
fn control_answer(ctx: &Ctx, id: usize, status: &str, message: String, extra: Value) -> Json<Value> {
    let (nodes, routing) = nodes_snapshot(&ctx.proxy.topology);
    let mut v = routing_json(&routing);
    v["status"] = json!(status);
    v["message"] = json!(message);
    v["node"] = node_json(&nodes[id]);
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.iter().map(|(k, x)| (k.clone(), x.clone())));
    }
    Json(v)
}

fn addr(n: &NodeSnapshot) -> String {
    host_port(&n.host, n.port)
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn attach(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Result<Json<Value>, AdminError> {
    let id = node_id(&ctx, &id)?;
    let topology = &ctx.proxy.topology;
    let was_detached = topology.node(id).is_some_and(|n| n.detached());
    topology.attach(id);
    let (nodes, _) = nodes_snapshot(topology);
    let n = &nodes[id];
    let message = match (was_detached, n.health) {
        (false, _) => format!("node {id} ({}) was already attached", addr(n)),
        (true, Health::Down) => {
            format!("node {id} ({}) attached; it is down, and takes work once a health check passes", addr(n))
        }
        (true, _) => format!("node {id} ({}) attached: it takes new work again", addr(n)),
    };
    if was_detached {
        tracing::info!(node = id, host = %n.host, port = n.port, "node attached through the admin API");
    }
    Ok(control_answer(&ctx, id, "attached", message, json!({})))
}

async fn detach(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Result<Json<Value>, AdminError> {
    let id = node_id(&ctx, &id)?;
    let topology = &ctx.proxy.topology;
    let was_target = topology.table().primary == Primary::Node(id);
    let was_detached = topology.node(id).is_some_and(|n| n.detached());
    topology.detach(id);
    let (nodes, routing) = nodes_snapshot(topology);
    let n = &nodes[id];
    let mut extra = json!({});
    let message = if was_detached {
        format!("node {id} ({}) was already detached", addr(n))
    } else {
        format!("node {id} ({}) detached: it takes no new work; work already on it finishes there", addr(n))
    };
    if was_target {
        let warning = match routing.primary {
            Primary::None => format!(
                "node {id} was the write target: writes now wait for a primary (up to failover_wait_timeout) \
                 until one is attached or promoted"
            ),
            Primary::Node(j) => format!("node {id} was the write target: writes now go to node {j}"),
            Primary::Conflict => format!(
                "node {id} was the write target: more than one remaining node claims to be primary, \
                 so writes are refused (follow_primary: strict)"
            ),
        };
        tracing::warn!(node = id, host = %n.host, port = n.port, "{warning}");
        extra["warning"] = json!(warning);
    }
    if !was_detached {
        tracing::info!(node = id, host = %n.host, port = n.port, "node detached through the admin API");
    }
    Ok(control_answer(&ctx, id, "detached", message, extra))
}

/// Makes the node the write target. A node observed (or configured) as a
/// replica is in recovery and would refuse every write: 409, unless
/// `allow_pg_promote: true`, when it is promoted with `pg_promote()`
/// first.
///
/// The work runs in a task of its own: if the caller goes away meanwhile,
/// a promotion that PostgreSQL finished still makes the node the write
/// target.
async fn promote(State(ctx): State<Arc<Ctx>>, Path(id): Path<String>) -> Result<Json<Value>, AdminError> {
    let id = node_id(&ctx, &id)?;
    let proxy = ctx.proxy.clone();
    let (previous, ran_pg_promote) = tokio::spawn(async move { promote_node(&proxy, id).await })
        .await
        .map_err(|e| AdminError::Backend(format!("promote of node {id} failed: {e}")))??;
    let node = ctx.proxy.topology.node(id).expect("id checked");
    let shown = host_port(&node.host, node.port);
    let routed = ctx.proxy.topology.table().primary == Primary::Node(id);
    let message = match (previous, ran_pg_promote, routed) {
        (Some(p), _, _) if p == id => format!("node {id} ({shown}) is the write target (it already was)"),
        (_, true, true) => format!("node {id} ({shown}) promoted with pg_promote(); writes go to it now"),
        (_, true, false) => format!(
            "node {id} ({shown}) promoted with pg_promote(); writes go to it once a health check sees it out of recovery"
        ),
        (_, false, _) => format!("node {id} ({shown}) is the write target now"),
    };
    Ok(control_answer(
        &ctx,
        id,
        "promoted",
        message,
        json!({"pg_promote": ran_pg_promote, "previous_write_target": previous}),
    ))
}

/// [`promote`]'s work: checks, `pg_promote()` when needed and allowed,
/// then `force_primary`. Returns the write target before, and whether
/// `pg_promote()` ran.
async fn promote_node(proxy: &Shared, id: usize) -> Result<(Option<usize>, bool), AdminError> {
    let topology = &proxy.topology;
    let node = topology.node(id).expect("id checked").clone();
    let shown = host_port(&node.host, node.port);
    if node.detached() {
        return Err(AdminError::Conflict(format!(
            "node {id} ({shown}) is detached: attach it before making it the write target"
        )));
    }
    if node.health() == Health::Down {
        let why = node.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        return Err(AdminError::Conflict(format!(
            "node {id} ({shown}) is down ({}): it cannot take writes",
            why.as_deref().unwrap_or("its health checks fail")
        )));
    }
    let previous = topology.primary().ok();
    let config = proxy.config.load_full();
    let in_recovery = match node.role() {
        NodeRole::Replica => true,
        NodeRole::Primary => false,
        // Not checked yet (or the checker is refused): ask the node.
        NodeRole::Unknown => {
            let mut conn = own_connection(
                &config,
                &proxy.tls.backend(),
                id,
                &node.host,
                node.port,
                "ask whether it is in recovery",
            )
            .await?;
            let answer =
                tokio::time::timeout(config.health_check_timeout, conn.query_row("SELECT pg_is_in_recovery()")).await;
            conn.close().await;
            match answer {
                Ok(Ok(Ok(row))) if row.first().and_then(|c| c.as_deref()) == Some("f") => false,
                Ok(Ok(Ok(row))) if row.first().and_then(|c| c.as_deref()) == Some("t") => true,
                other => {
                    let why = match other {
                        Err(_) => "no answer within health_check_timeout".to_string(),
                        Ok(Err(e)) => e.to_string(),
                        Ok(Ok(Err(f))) => f.message.unwrap_or_else(|| "query failed".into()),
                        Ok(Ok(Ok(row))) => format!("unexpected answer {row:?}"),
                    };
                    return Err(AdminError::Backend(format!(
                        "node {id} ({shown}): its role is not known yet and pg_is_in_recovery() failed: {why}"
                    )));
                }
            }
        }
    };
    let mut ran_pg_promote = false;
    if in_recovery && previous != Some(id) {
        if !config.allow_pg_promote {
            return Err(AdminError::Conflict(format!(
                "node {id} ({shown}) is a replica (in recovery) and would refuse every write; \
                 promote it in PostgreSQL first (pg_promote() or pg_ctl promote), or set allow_pg_promote: true \
                 to let this endpoint run pg_promote() on it"
            )));
        }
        tracing::warn!(node = id, host = %node.host, port = node.port, "running pg_promote() through the admin API");
        pg_promote(&config, &proxy.tls.backend(), id, &node.host, node.port).await?;
        ran_pg_promote = true;
    }
    topology.force_primary(Some(id));
    tracing::warn!(node = id, host = %node.host, port = node.port, previous = ?previous,
        "node made the write target through the admin API");
    if ran_pg_promote && topology.checked() {
        // Routing takes a forced primary only once a health check has seen
        // it out of recovery: wait for that check (bounded), so the answer
        // tells where writes go.
        let limit = config.health_check_period + config.health_check_timeout + Duration::from_secs(1);
        wait_write_target(topology, id, limit.min(PROMOTE_ROUTE_WAIT)).await;
    }
    Ok((previous, ran_pg_promote))
}

/// Waits until node `id` is the route table's write target, or `limit`
/// passes; returns whether it is.
async fn wait_write_target(topology: &pgbalancer_proxy::topology::Topology, id: usize, limit: Duration) -> bool {
    let mut changes = topology.subscribe();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if topology.table().primary == Primary::Node(id) {
            return true;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => return topology.table().primary == Primary::Node(id),
        }
    }
}

/// A connection of the admin API's own to a node, logged in as the health
/// checker (`health_check_user`, `health_check_database`) within
/// `health_check_timeout`; 502 when that fails.
async fn own_connection(
    config: &Config,
    tls: &pgbalancer_proxy::tls::BackendTls,
    id: usize,
    host: &str,
    port: u16,
    purpose: &str,
) -> Result<Box<ServerConn>, AdminError> {
    let fail =
        |what: String| AdminError::Backend(format!("node {id} ({}): cannot {purpose}: {what}", host_port(host, port)));
    let (user, password) = config.health_check_login().map_err(|e| fail(format!("no health check login: {e}")))?;
    let login = ServerLogin {
        user,
        database: config.health_check_database.clone(),
        secret: password.map_or(ServerSecret::None, ServerSecret::Password),
    };
    // As the health checker connects: backend_sslmode applies.
    ServerConn::connect_tls(host, port, tls, &login, config.health_check_timeout)
        .await
        .map_err(|e| fail(format!("connecting as the health check user: {e}")))
}

/// Runs `pg_promote()` on a node over a connection of its own, logged in
/// as the health checker. A node that is not in recovery (already
/// promoted) counts as done.
async fn pg_promote(
    config: &Config,
    tls: &pgbalancer_proxy::tls::BackendTls,
    id: usize,
    host: &str,
    port: u16,
) -> Result<(), AdminError> {
    let shown = host_port(host, port);
    let fail = |what: String| AdminError::Backend(format!("pg_promote() on node {id} ({shown}): {what}"));
    let mut conn = own_connection(config, tls, id, host, port, "run pg_promote()").await?;
    let sql = format!("SELECT pg_promote(true, {PG_PROMOTE_WAIT_SECS})");
    let answer = tokio::time::timeout(Duration::from_secs(PG_PROMOTE_WAIT_SECS + 1), conn.query_row(&sql)).await;
    let result = match answer {
        Err(_) => Err(fail("no answer in time; check the node before promoting it again".into())),
        Ok(Err(e)) => Err(fail(e.to_string())),
        // SQLSTATE 55000: "recovery is not in progress": promoted already.
        Ok(Ok(Err(f))) if f.code.as_deref() == Some("55000") => Ok(()),
        Ok(Ok(Err(f))) => Err(fail(f.message.unwrap_or_else(|| "failed".into()))),
        Ok(Ok(Ok(row))) if row.first().and_then(|c| c.as_deref()) == Some("t") => Ok(()),
        Ok(Ok(Ok(_))) => Err(fail(format!(
            "the promotion did not finish within {PG_PROMOTE_WAIT_SECS} s; writes still go where they went: \
             promote again once the node is out of recovery"
        ))),
    };
    conn.close().await;
    result
}

async fn reload(State(ctx): State<Arc<Ctx>>) -> Result<Json<Value>, AdminError> {
    let shutting_down = || AdminError::Unavailable("the daemon is shutting down".into());
    let (tx, rx) = oneshot::channel();
    ctx.control.send(Command::Reload(tx)).await.map_err(|_| shutting_down())?;
    match tokio::time::timeout(RELOAD_TIMEOUT, rx).await {
        Ok(Ok(Ok(()))) => Ok(Json(json!({"status": "reloaded"}))),
        Ok(Ok(Err(e))) => Err(AdminError::Reload(e)),
        Ok(Err(_)) => Err(shutting_down()),
        Err(_) => Err(AdminError::Unavailable("the reload did not finish in time".into())),
    }
}

/// `?wait=SECONDS` of a pause: a whole number from 0 to 300. Nothing of
/// the query is echoed (a token put there by mistake stays out of answers).
fn pause_wait(query: Option<&str>) -> Result<Duration, AdminError> {
    let max = PAUSE_WAIT_MAX.as_secs();
    let mut wait = PAUSE_WAIT_DEFAULT;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("wait", v)) => {
                let secs = v.parse::<u64>().ok().filter(|s| *s <= max && v.bytes().all(|b| b.is_ascii_digit()));
                let secs = secs.ok_or_else(|| {
                    AdminError::BadRequest(format!("wait must be a whole number of seconds from 0 to {max}"))
                })?;
                wait = Duration::from_secs(secs);
            }
            _ => {
                return Err(AdminError::BadRequest(format!(
                    "unknown query parameter: only wait=SECONDS (0 to {max}) is accepted"
                )))
            }
        }
    }
    Ok(wait)
}

/// PgBouncer's PAUSE: from now on no client gets a server for a new
/// transaction until resume; then waits (up to `?wait=`, default 30 s)
/// until no client holds a server. 200 `paused` when none does, 202
/// `pausing` with the number still held when the wait ends (the pause
/// stays in force either way, also if the caller goes away).
async fn pause(State(ctx): State<Arc<Ctx>>, uri: Uri) -> Result<(StatusCode, Json<Value>), AdminError> {
    let wait = pause_wait(uri.query())?;
    if ctx.proxy.phase() != Phase::Running {
        return Err(AdminError::Unavailable("the daemon is shutting down".into()));
    }
    tracing::info!(wait_seconds = wait.as_secs(), "PAUSE through the admin API");
    match ctx.proxy.pause.pause(&ctx.proxy.pools, wait).await {
        Paused::Done => Ok((StatusCode::OK, Json(json!({"status": "paused"})))),
        Paused::StillActive(active) => Ok((StatusCode::ACCEPTED, Json(json!({"status": "pausing", "active": active})))),
    }
}

/// RESUME: clients waiting for a server get one again.
async fn resume(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let was = ctx.proxy.pause.resume();
    if was {
        tracing::info!("RESUME through the admin API");
    }
    Json(json!({"status": if was { "resumed" } else { "not paused" }}))
}

/// Reads a request body of at most `max` bytes (413 beyond).
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, AdminError> {
    use http_body_util::BodyExt;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(AdminError::TooLarge(max));
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(AdminError::TooLarge(max)),
        Err(_) => Err(AdminError::BadRequest("the request body could not be read".into())),
    }
}

/// `POST /api/v1/auth/login`: `{"user", "password"}` of a user in
/// `admin_users` or `stats_users` for a token of role `admin` or `read`,
/// valid 15 minutes (or `jwt_max_ttl` if shorter). Every failure is the
/// same 401 and counts in the per-source limiter; a source over its budget
/// gets 429 before its password is even looked at.
async fn login(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AdminError> {
    let ip = peer.addr.ip();
    if let Some(wait) = ctx.limiter.blocked(ip, Instant::now()) {
        return Err(rate_limited(wait));
    }
    let auth = ctx.state.auth_full();
    let signer = auth.signer().map_err(|why| AdminError::Disabled(why.to_string()))?;
    let config = ctx.proxy.config.load_full();
    login::enabled(&config).map_err(AdminError::Disabled)?;
    let body = read_body(&headers, body, login::MAX_BODY).await?;
    let req = LoginRequest::parse(&body).ok_or_else(|| {
        AdminError::BadRequest(r#"the body must be a JSON object {"user": "...", "password": "..."}"#.into())
    })?;
    let user = req.user.clone();
    // The place goes with the derivation: it is held until that ends, even
    // if the caller goes away meanwhile.
    let slot =
        ctx.login_slots.clone().acquire_owned().await.map_err(|_| AdminError::Unavailable("shutting down".into()))?;
    // Failures of requests that queued meanwhile count too: parallel
    // attempts from one source stop at the limit.
    if let Some(wait) = ctx.limiter.blocked(ip, Instant::now()) {
        return Err(rate_limited(wait));
    }
    let role = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        login::authenticate(&config, &req.user, &req.password)
    })
    .await
    .ok()
    .flatten();
    // For the log: a bounded, escaped name (never the password).
    let shown: String = user.chars().take(64).collect();
    let Some(role) = role else {
        ctx.limiter.record_failure(ip, Instant::now());
        ctx.state.auth_failures.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = %ip, user = ?shown, "admin API: login failed");
        return Err(AdminError::Unauthorized(login::FAILED.into()));
    };
    let ttl = login::LOGIN_TTL.min(signer.max_ttl());
    let token = signer.mint(&user, role, ttl).map_err(AdminError::Internal)?;
    tracing::info!(peer = %ip, user = ?shown, role = role.as_str(), "admin API: login");
    let mut resp = Json(json!({
        "token": token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
        "role": role.as_str(),
    }))
    .into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

async fn stop(State(ctx): State<Arc<Ctx>>) -> Result<(StatusCode, Json<Value>), AdminError> {
    ctx.control.send(Command::Stop).await.map_err(|_| AdminError::Unavailable("the daemon is shutting down".into()))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "stopping"}))))
}

async fn metrics_text(State(ctx): State<Arc<Ctx>>) -> Response {
    let measures = metrics::Measures::take(&ctx.proxy);
    let body = metrics::render(&ctx.proxy.snapshot(), &ctx.state.counters(), &measures, ctx.proxy.pause.is_paused());
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::openapi_document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn rfc3339_dates() {
        let at = |secs: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), json!("1970-01-01T00:00:00Z"));
        assert_eq!(at(951_782_400), json!("2000-02-29T00:00:00Z"), "a leap day");
        assert_eq!(at(1_767_225_599), json!("2025-12-31T23:59:59Z"));
        assert_eq!(at(4_107_542_400), json!("2100-03-01T00:00:00Z"), "2100 is not a leap year");
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(1)), Value::Null);
    }

    /// The keys of `v` are exactly the properties of OpenAPI schema `name`,
    /// and every required one is there.
    fn matches_schema(v: &Value, name: &str) {
        let doc = crate::openapi::openapi_document();
        let schema = &doc["components"]["schemas"][name];
        let mut props: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        props.sort();
        keys.sort();
        assert_eq!(keys, props, "{name}");
        for r in schema["required"].as_array().unwrap() {
            assert!(v.get(r.as_str().unwrap()).is_some(), "{name}: no {r}");
        }
    }

    #[test]
    fn clients_and_servers_as_documented() {
        let connected_at = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let c = ClientSnapshot {
            id: 7,
            addr: "[::1]:50000".parse().unwrap(),
            user: "app".into(),
            database: "db".into(),
            application_name: "psql".into(),
            connected_at,
            state: ClientState::Active,
            server: Some((1, 4242)),
            transactions: 3,
        };
        let v = client_json(&c, connected_at + Duration::from_secs(90));
        matches_schema(&v, "Client");
        assert_eq!(
            v,
            json!({"id": 7, "address": "[::1]:50000", "user": "app", "database": "db", "application_name": "psql",
                   "connected_at": "2026-01-01T00:00:00Z", "connected_seconds": 90, "state": "active",
                   "server": {"node": 1, "pid": 4242}, "transactions": 3})
        );
        let idle = client_json(&ClientSnapshot { state: ClientState::Idle, server: None, ..c }, connected_at);
        assert_eq!((idle["state"].as_str(), idle["server"].is_null()), (Some("idle"), true), "{idle}");

        let s = ServerSnapshot {
            node: 0,
            host: "10.0.0.1".into(),
            port: 5432,
            database: "db".into(),
            user: "app".into(),
            pid: 99,
            client: None,
            idle_for: Some(Duration::from_millis(1500)),
            age: Some(Duration::from_secs(60)),
        };
        let v = server_json(&s);
        matches_schema(&v, "Server");
        assert_eq!(
            (v["state"].as_str(), v["client"].is_null(), v["idle_seconds"].as_f64()),
            (Some("idle"), true, Some(1.5))
        );
        let v = server_json(&ServerSnapshot { client: Some(7), idle_for: None, age: None, ..s });
        assert_eq!(
            (v["state"].as_str(), v["client"].as_u64(), v["age_seconds"].is_null()),
            (Some("active"), Some(7), true)
        );
    }
}
