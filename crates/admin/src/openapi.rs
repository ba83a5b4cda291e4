//! The OpenAPI 3 document served at `/api/v1/openapi.json`. It describes
//! exactly the routes of `server.rs` (a unit test keeps the two in step).

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok_json(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

/// Responses every guarded endpoint may give.
fn guarded(mut responses: serde_json::Map<String, Value>) -> Value {
    responses.insert("401".into(), error_response("Missing or invalid token (with `WWW-Authenticate: Bearer`)"));
    responses.insert("403".into(), error_response("The token's role does not allow this"));
    responses.insert("429".into(), error_response("Too many failed authentications from this address (`Retry-After`)"));
    Value::Object(responses)
}

fn op(summary: &str, responses: Value, secured: bool) -> Value {
    let mut o = json!({"summary": summary, "responses": responses});
    if !secured {
        o["security"] = json!([]);
    }
    o
}

fn map(entries: &[(&str, Value)]) -> serde_json::Map<String, Value> {
    entries.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn int(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "description": description})
}

/// The document.
pub fn openapi_document() -> Value {
    let servers = json!({
        "type": "object",
        "required": ["active", "idle", "connecting", "total"],
        "properties": {
            "active": int("Checked out by clients"),
            "idle": int("Idle in a pool"),
            "connecting": int("Being opened"),
            "total": int("active + idle + connecting"),
        }
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "pgbalancer admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "See docs/rest-api.md. Tokens: HS256 JWTs with `exp` and a `role` claim (`read`: GET; `admin`: everything)."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/health": {"get": op(
                "Liveness for load balancers: 200 while the proxy runs and a backend accepts TCP connections",
                json!({"200": ok_json("Healthy", "Health"), "503": ok_json("Shutting down or no backend reachable", "Health")}),
                false,
            )},
            "/api/v1/status": {"get": op("Version, uptime, pool mode, clients, servers, nodes",
                guarded(map(&[("200", ok_json("Status", "Status"))])), true)},
            "/api/v1/pools": {"get": op("Every pool (database, user, backend) with its connection counts",
                guarded(map(&[("200", ok_json("Pools", "Pools"))])), true)},
            "/api/v1/stats": {"get": op("Process-wide totals and counters",
                guarded(map(&[("200", ok_json("Stats", "Stats"))])), true)},
            "/api/v1/control/reload": {"post": op("Re-read the config file (as SIGHUP); an invalid file is rejected and the old config kept",
                guarded(map(&[
                    ("200", ok_json("Applied", "Outcome")),
                    ("400", error_response("The new config is invalid; `problems` lists each key and message")),
                    ("503", error_response("The daemon is shutting down")),
                ])), true)},
            "/api/v1/control/stop": {"post": op("Graceful shutdown of the whole daemon (as SIGTERM)",
                guarded(map(&[
                    ("202", ok_json("Shutdown started", "Outcome")),
                    ("503", error_response("Already shutting down")),
                ])), true)},
            "/api/v1/openapi.json": {"get": op("This document",
                json!({"200": {"description": "OpenAPI 3 document", "content": {"application/json": {}}}}), false)},
            "/metrics": {"get": op("Prometheus metrics (OpenMetrics text format)",
                json!({"200": {"description": "Metrics", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}), false)},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "problems": {"type": "array", "items": {
                            "type": "object", "required": ["key", "message"],
                            "properties": {"key": {"type": "string"}, "message": {"type": "string"}}
                        }}
                    }
                },
                "Health": {
                    "type": "object", "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["ok", "unavailable"]}, "reason": {"type": "string"}}
                },
                "Outcome": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["reloaded", "stopping"]}}},
                "Servers": servers,
                "Status": {
                    "type": "object",
                    "required": ["version", "uptime_seconds", "phase", "pool_mode", "clients", "pinned_clients", "waiting_clients", "servers", "pools", "nodes_total"],
                    "properties": {
                        "version": {"type": "string"},
                        "uptime_seconds": int("Seconds since the daemon started"),
                        "phase": {"type": "string", "enum": ["running", "draining", "stopping"]},
                        "pool_mode": {"type": "string", "enum": ["session", "transaction", "statement"]},
                        "clients": int("Clients connected now"),
                        "pinned_clients": int("Transaction-mode clients pinned to their server"),
                        "waiting_clients": int("Clients waiting for a server"),
                        "servers": {"$ref": "#/components/schemas/Servers"},
                        "pools": int("Number of pools"),
                        "nodes_total": int("Configured backends"),
                    }
                },
                "Pool": {
                    "type": "object",
                    "required": ["database", "user", "backend", "host", "port", "active", "idle", "connecting", "waiting", "connects", "connect_failures", "wait_timeouts"],
                    "properties": {
                        "database": {"type": "string"},
                        "user": {"type": "string"},
                        "backend": int("Index into `backends`"),
                        "host": {"type": "string"},
                        "port": int("Backend port"),
                        "active": int("Server connections checked out"),
                        "idle": int("Server connections idle"),
                        "connecting": int("Server connections being opened"),
                        "waiting": int("Clients waiting for a server"),
                        "connects": int("Connections opened, ever"),
                        "connect_failures": int("Connections that failed to open, ever"),
                        "wait_timeouts": int("Clients that gave up after query_wait_timeout, ever"),
                    }
                },
                "Pools": {
                    "type": "object", "required": ["pool_mode", "pool_size", "backends", "pools"],
                    "properties": {
                        "pool_mode": {"type": "string"},
                        "pool_size": int("pool_size of the current config"),
                        "backends": {"type": "array", "items": {
                            "type": "object", "required": ["index", "host", "port", "role", "weight"],
                            "properties": {
                                "index": int("Position in the config"), "host": {"type": "string"}, "port": int("Port"),
                                "role": {"type": "string", "enum": ["primary", "replica", "auto"]}, "weight": int("Weight"),
                            }
                        }},
                        "pools": {"type": "array", "items": {"$ref": "#/components/schemas/Pool"}},
                    }
                },
                "Stats": {
                    "type": "object",
                    "required": ["uptime_seconds", "clients", "pinned_clients", "waiting_clients", "servers", "clients_total", "clients_rejected",
                                 "login_failures", "transactions", "server_connects", "server_connect_failures", "wait_timeouts",
                                 "reloads", "reload_failures", "api_auth_failures"],
                    "properties": {
                        "uptime_seconds": int("Seconds since the daemon started"),
                        "clients": int("Clients connected now"),
                        "pinned_clients": int("Pinned clients now"),
                        "waiting_clients": int("Clients waiting now"),
                        "servers": {"$ref": "#/components/schemas/Servers"},
                        "clients_total": int("Clients accepted, ever"),
                        "clients_rejected": int("Clients refused at max_client_conn, ever"),
                        "login_failures": int("Failed client logins, ever"),
                        "transactions": int("Transactions finished, ever"),
                        "server_connects": int("Server connections opened, ever"),
                        "server_connect_failures": int("Server connections that failed to open, ever"),
                        "wait_timeouts": int("Clients that gave up waiting, ever"),
                        "reloads": int("Reloads applied"),
                        "reload_failures": int("Reloads rejected"),
                        "api_auth_failures": int("REST requests refused for a missing or invalid token"),
                    }
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_every_route_and_method() {
        let doc = openapi_document();
        let paths = doc["paths"].as_object().unwrap();
        let mut got: Vec<String> = paths
            .iter()
            .flat_map(|(p, ops)| ops.as_object().unwrap().keys().map(move |m| format!("{m} {p}")))
            .collect();
        got.sort();
        let mut want = vec![
            "get /api/v1/health",
            "get /api/v1/status",
            "get /api/v1/pools",
            "get /api/v1/stats",
            "post /api/v1/control/reload",
            "post /api/v1/control/stop",
            "get /api/v1/openapi.json",
            "get /metrics",
        ];
        want.sort();
        assert_eq!(got, want);
        // Every $ref points at a defined schema.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(doc["components"]["schemas"].get(name).is_some(), "undefined schema {name}");
        }
    }
}
