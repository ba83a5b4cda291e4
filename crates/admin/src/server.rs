//! The HTTP server: routes, the token check, handlers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};

use crate::listener::{LimitedListener, Peer};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pgbalancer_proxy::snapshot::{PoolSnapshot, Snapshot};
use pgbalancer_proxy::{Phase, Shared};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::auth::{AuthFailure, FailureLimiter, Role};
use crate::error::AdminError;
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
}

/// The running admin server.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `host:port` (port 0 picks a free one) and serves.
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
        });
        let app = router(ctx);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let listener = LimitedListener::new(listener);
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
        .route("/api/v1/control/reload", post(reload))
        .route("/api/v1/control/stop", post(stop))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_token));
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics_text))
        .merge(guarded)
        .fallback(|| async { AdminError::NotFound })
        .method_not_allowed_fallback(|| async { AdminError::MethodNotAllowed })
        .with_state(ctx)
}

/// The bearer-token check in front of every guarded route: 429 for a
/// source over its failure budget, 401 for a missing or bad token, 403 for
/// a role that does not allow the method (GET: `read` or `admin`; anything
/// else: `admin`).
async fn require_token(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
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
                let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return AdminError::RateLimited { retry_after_secs }.into_response();
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
        "pool_mode": s.pool_mode.to_string(),
        "clients": s.totals.clients,
        "pinned_clients": s.totals.pinned_clients,
        "waiting_clients": s.totals.waiting_clients,
        "servers": servers_json(&s),
        "pools": s.pools.len(),
        "nodes_total": s.backends.len(),
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
        "transactions": t.transactions,
        "server_connects": t.connects,
        "server_connect_failures": t.connect_failures,
        "wait_timeouts": t.wait_timeouts,
        "reloads": a.reloads,
        "reload_failures": a.reload_failures,
        "api_auth_failures": a.api_auth_failures,
    }))
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

async fn stop(State(ctx): State<Arc<Ctx>>) -> Result<(StatusCode, Json<Value>), AdminError> {
    ctx.control.send(Command::Stop).await.map_err(|_| AdminError::Unavailable("the daemon is shutting down".into()))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "stopping"}))))
}

async fn metrics_text(State(ctx): State<Arc<Ctx>>) -> Response {
    let body = metrics::render(&ctx.proxy.snapshot(), &ctx.state.counters());
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::openapi_document())
}
