//! The crate's one error type. Request errors become JSON responses
//! `{"error": "..."}` with the matching status code.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pgbalancer_config::ConfigError;
use pgbalancer_proxy::control::ReloadError;
use serde::Serialize;

/// A problem of a rejected reload, as JSON: `{"key": "pool_size", "message": "must be at least 1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProblemJson {
    /// The key path (`backends[0].port`); empty for the whole file.
    pub key: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The listening socket could not be bound (start-up).
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// The JWT settings could not be built (secret missing, unreadable or short).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// 401: no token, or a token that failed verification.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token whose role does not allow the request.
    #[error("{0}")]
    Forbidden(String),
    /// 429: too many failed authentications from this source address.
    #[error("too many failed authentication attempts; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// 400: the new configuration was rejected.
    #[error(transparent)]
    Reload(ReloadError),
    /// 400: a malformed request (query parameter, body).
    #[error("{0}")]
    BadRequest(String),
    /// 413: a request body over the endpoint's limit.
    #[error("request body too large: at most {0} bytes")]
    TooLarge(usize),
    /// 403 without `WWW-Authenticate`: the endpoint is turned off by the
    /// configuration (login without admin_users/stats_users).
    #[error("{0}")]
    Disabled(String),
    /// 503: the daemon cannot do it now (shutting down).
    #[error("{0}")]
    Unavailable(String),
    #[error("not found")]
    NotFound,
    /// 404: a node id that is not configured.
    #[error("no node {id}: {}", node_range(*.count))]
    NoSuchNode { id: String, count: usize },
    /// 409: the request contradicts the state of the cluster (promoting a
    /// replica without `allow_pg_promote`, a detached or down node).
    #[error("{0}")]
    Conflict(String),
    /// 502: a backend did not do what was asked (`pg_promote()` failed).
    #[error("{0}")]
    Backend(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 500: something that should not fail did (signing a token).
    #[error("{0}")]
    Internal(String),
}

fn node_range(count: usize) -> String {
    match count {
        0 => "no nodes are configured".to_string(),
        1 => "the only node is 0".to_string(),
        n => format!("node ids are 0 to {}", n - 1),
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    problems: Option<Vec<ProblemJson>>,
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Bind { .. } | AdminError::Config(_) | AdminError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            AdminError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AdminError::Reload(_) | AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Disabled(_) => StatusCode::FORBIDDEN,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::NotFound | AdminError::NoSuchNode { .. } => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Backend(_) => StatusCode::BAD_GATEWAY,
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let problems = match &self {
            AdminError::Reload(r) => Some(
                r.problems.iter().map(|p| ProblemJson { key: p.key.clone(), message: p.message.clone() }).collect(),
            ),
            _ => None,
        };
        let mut resp = (status, Json(ErrorBody { error: self.to_string(), problems })).into_response();
        let h = resp.headers_mut();
        match &self {
            AdminError::Unauthorized(_) => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"pgbalancer\""));
            }
            AdminError::Forbidden(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"pgbalancer\", error=\"insufficient_scope\""),
                );
            }
            AdminError::RateLimited { retry_after_secs } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbalancer_config::Problem;
    use serde_json::{json, Value};

    async fn body(e: AdminError) -> (StatusCode, Value) {
        let resp = e.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_rejected_reload_lists_each_problem_with_its_key() {
        let e = ReloadError {
            error: "f.yml: pool_size: must be at least 1\nf.yml: must be a mapping".into(),
            problems: vec![Problem::new("pool_size", "must be at least 1"), Problem::new("", "must be a mapping")],
        };
        let (status, v) = body(AdminError::Reload(e)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            v,
            json!({
                "error": "f.yml: pool_size: must be at least 1\nf.yml: must be a mapping",
                "problems": [
                    {"key": "pool_size", "message": "must be at least 1"},
                    {"key": "", "message": "must be a mapping"},
                ]
            })
        );
        let (_, v) = body(AdminError::Reload(ReloadError::other("no config file"))).await;
        assert_eq!(v, json!({"error": "no config file", "problems": []}));
        // Other errors have no `problems`.
        let (status, v) = body(AdminError::TooLarge(4096)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(v, json!({"error": "request body too large: at most 4096 bytes"}));
    }
}
