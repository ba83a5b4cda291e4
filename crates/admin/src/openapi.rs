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

fn num(description: &str) -> Value {
    json!({"type": "number", "minimum": 0, "description": description})
}

fn node_id_param() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "description": "Node id: the backend's position in the config (0, 1, ...)",
            "schema": {"type": "integer", "minimum": 0}}])
}

/// A node-control operation (attach, detach, promote).
fn node_op(summary: &str, extra: &[(&str, Value)]) -> Value {
    let mut responses =
        map(&[("200", ok_json("Done", "NodeControl")), ("404", error_response("No node with this id"))]);
    for (k, v) in extra {
        responses.insert(k.to_string(), v.clone());
    }
    let mut o = op(summary, guarded(responses), true);
    o["parameters"] = node_id_param();
    o
}

fn node_schema() -> Value {
    let role = |d: &str| json!({"type": "string", "enum": ["primary", "replica", "unknown"], "description": d});
    json!({
        "type": "object",
        "required": ["id", "host", "port", "role", "observed_role", "configured_role", "health", "detached", "state", "weight",
                     "write_target", "takes_reads", "lag_bytes", "lag_seconds", "banned", "ban_reason", "ewma_latency_seconds",
                     "outstanding", "reads_routed", "writes_routed", "bans", "downs", "checks", "check_failures", "last_error"],
        "properties": {
            "id": int("Position in the config's backends"),
            "host": {"type": "string"},
            "port": int("Port"),
            "role": role("The role routing uses: observed, or configured until a check tells"),
            "observed_role": role("What pg_is_in_recovery() said at the last check (unknown before it; with checks off, the configured role)"),
            "configured_role": {"type": "string", "enum": ["primary", "replica", "auto"]},
            "health": {"type": "string", "enum": ["up", "down", "unknown"], "description": "From the health checks (up when checks are off)"},
            "detached": {"type": "boolean", "description": "Taken out of service by the operator"},
            "state": {"type": "string", "enum": ["up", "down", "unknown", "detached", "banned"],
                      "description": "detached, else down, else banned (up but lagging), else health"},
            "weight": int("Read weight"),
            "write_target": {"type": "boolean", "description": "Writes go here now"},
            "takes_reads": {"type": "boolean", "description": "Among the read targets now"},
            "lag_bytes": int("WAL bytes behind the primary at the last check (0 for the primary)"),
            "lag_seconds": num("Replay delay at the last check (0 for the primary)"),
            "banned": {"type": "boolean", "description": "Banned from reads for lag"},
            "ban_reason": {"type": "string", "nullable": true},
            "ewma_latency_seconds": {"type": "number", "nullable": true, "description": "Moving average of response time; null before the first sample"},
            "outstanding": int("Transactions routed here and not finished"),
            "reads_routed": int("Transactions routed here as reads, ever"),
            "writes_routed": int("Transactions routed here as writes, ever"),
            "bans": int("Times banned for lag"),
            "downs": int("Times it went down"),
            "checks": int("Health checks run"),
            "check_failures": int("Health checks failed"),
            "last_error": {"type": "string", "nullable": true, "description": "Why the last check failed or was refused; null after a passing one"},
        }
    })
}

/// Where writes go (part of the node list and of node-control answers).
fn routing_properties() -> Value {
    json!({
        "write_target": {"type": "integer", "minimum": 0, "nullable": true, "description": "The node writes go to; null when none"},
        "writes": {"type": "string", "enum": ["ok", "no_primary", "conflict"],
                   "description": "no_primary: writes wait for one (failover_wait_timeout); conflict: refused (follow_primary: strict)"},
        "forced_primary": {"type": "integer", "minimum": 0, "nullable": true, "description": "The node made the write target by promote"},
        "health_checks": {"type": "boolean", "description": "Whether health checks run"},
    })
}

/// Schemas of `/api/v1/stats`, `/api/v1/clients` and `/api/v1/servers`
/// (apart from the rest: `json!` nests only so deep).
fn more_schemas() -> Value {
    json!({
        "Stats": {
            "type": "object",
            "required": ["uptime_seconds", "clients", "pinned_clients", "waiting_clients", "servers", "clients_total", "clients_rejected",
                         "login_failures", "transactions", "server_connects", "server_connect_failures", "wait_timeouts",
                         "client_bytes", "server_bytes", "reloads", "reload_failures", "api_auth_failures"],
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
                "client_bytes": int("Bytes from clients forwarded to servers, ever (counted when a transaction ends)"),
                "server_bytes": int("Bytes from servers forwarded to clients, ever (counted when a transaction ends)"),
                "reloads": int("Reloads applied"),
                "reload_failures": int("Reloads rejected"),
                "api_auth_failures": int("REST requests refused for a missing or invalid token"),
            }
        },
        "Client": {
            "type": "object",
            "required": ["id", "address", "user", "database", "application_name", "connected_at", "connected_seconds",
                         "state", "server", "transactions"],
            "properties": {
                "id": int("pgbalancer's number for the client, unique until a restart (`client` of a server)"),
                "address": {"type": "string", "description": "The client's address and port (`127.0.0.1:51234`, `[::1]:51234`)"},
                "user": {"type": "string"},
                "database": {"type": "string"},
                "application_name": {"type": "string", "description": "From the startup packet; empty when none was sent"},
                "connected_at": {"type": "string", "format": "date-time", "nullable": true, "description": "When it connected (RFC 3339, UTC, whole seconds)"},
                "connected_seconds": int("Seconds since it connected"),
                "state": {"type": "string", "enum": ["active", "idle", "waiting"],
                          "description": "active: holds a server; idle: holds none (between transactions); waiting: for a server (pool full, PAUSE, failover)"},
                "server": {"type": "object", "nullable": true, "required": ["node", "pid"],
                           "description": "The server it holds; null when it holds none",
                           "properties": {"node": int("Node id"), "pid": int("The backend's process id (pg_stat_activity.pid)")}},
                "transactions": int("Transactions (or statements outside one) it ran on servers"),
            }
        },
        "Clients": {
            "type": "object", "required": ["total", "active", "idle", "waiting", "clients"],
            "properties": {
                "total": int("Logged-in clients (those still logging in and SQL console sessions are not listed)"),
                "active": int("Clients holding a server"),
                "idle": int("Clients holding none"),
                "waiting": int("Clients waiting for a server"),
                "clients": {"type": "array", "items": {"$ref": "#/components/schemas/Client"}},
            }
        },
        "Server": {
            "type": "object",
            "required": ["node", "host", "port", "database", "user", "pid", "state", "client", "idle_seconds", "age_seconds"],
            "properties": {
                "node": int("Node id (the backend's position in the config)"),
                "host": {"type": "string"},
                "port": int("Port"),
                "database": {"type": "string"},
                "user": {"type": "string"},
                "pid": int("The backend's process id (pg_stat_activity.pid)"),
                "state": {"type": "string", "enum": ["active", "idle"], "description": "active: held by `client`; idle: in its pool"},
                "client": {"type": "integer", "minimum": 0, "nullable": true, "description": "The id of the client holding it (see /api/v1/clients); null when idle"},
                "idle_seconds": {"type": "number", "minimum": 0, "nullable": true, "description": "Idle ones: seconds since last used; null for active ones"},
                "age_seconds": {"type": "number", "minimum": 0, "nullable": true, "description": "Idle ones: seconds since opened; null for active ones"},
            }
        },
        "ServerList": {
            "type": "object", "required": ["total", "active", "idle", "servers"],
            "properties": {
                "total": int("Server connections listed (those being opened are not)"),
                "active": int("Held by clients"),
                "idle": int("Idle in their pools"),
                "servers": {"type": "array", "items": {"$ref": "#/components/schemas/Server"}},
            }
        }
    })
}

/// The document.
pub fn openapi_document() -> Value {
    let mut nodes_props = routing_properties();
    nodes_props["nodes"] = json!({"type": "array", "items": {"$ref": "#/components/schemas/Node"}});
    let mut control_props = routing_properties();
    control_props["status"] = json!({"type": "string", "enum": ["attached", "detached", "promoted"]});
    control_props["message"] = json!({"type": "string", "description": "What happened, in words"});
    control_props["warning"] = json!({"type": "string", "description": "detach of the write target: where writes go now (e.g. they wait for a primary)"});
    control_props["pg_promote"] = json!({"type": "boolean", "description": "promote: whether pg_promote() was run"});
    control_props["previous_write_target"] =
        json!({"type": "integer", "minimum": 0, "nullable": true, "description": "promote: the write target before"});
    control_props["node"] = json!({"$ref": "#/components/schemas/Node"});
    let mut node_get = op(
        "One node",
        guarded(map(&[("200", ok_json("The node", "Node")), ("404", error_response("No node with this id"))])),
        true,
    );
    node_get["parameters"] = node_id_param();
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
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "pgbalancer admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "See docs/rest-api.md. Tokens: JWTs signed with the configured algorithm (HS256, RS256 or EdDSA), with `exp` and a `role` claim (`read`: GET; `admin`: everything); made by any JWT library, `bctl token`, or `POST /api/v1/auth/login`."
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
            "/api/v1/clients": {"get": op("Every logged-in client: address, user, database, application, state and the server it holds",
                guarded(map(&[("200", ok_json("Clients", "Clients"))])), true)},
            "/api/v1/servers": {"get": op("Every open server connection: idle in a pool, or held by a client",
                guarded(map(&[("200", ok_json("Servers", "ServerList"))])), true)},
            "/api/v1/nodes": {"get": op("Every node: roles, health, lag, routing and counters; and where writes go",
                guarded(map(&[("200", ok_json("Nodes", "Nodes"))])), true)},
            "/api/v1/nodes/{id}": {"get": node_get},
            "/api/v1/nodes/{id}/attach": {"post": node_op("Put a detached node back in service", &[])},
            "/api/v1/nodes/{id}/detach": {"post": node_op(
                "Take a node out of service: no new work goes there (allowed for the write target: writes then wait for a primary)", &[])},
            "/api/v1/nodes/{id}/promote": {"post": node_op(
                "Make the node the write target. A replica is refused (409) unless allow_pg_promote: true, which runs pg_promote() on it first",
                &[
                    ("409", error_response("The node is a replica (and allow_pg_promote is false), detached or down")),
                    ("502", error_response("pg_promote() failed or did not finish in time, or the node could not be asked whether it is in recovery")),
                ])},
            "/api/v1/control/reload": {"post": op("Re-read the config file (as SIGHUP); an invalid file is rejected and the old config kept",
                guarded(map(&[
                    ("200", ok_json("Applied", "Outcome")),
                    ("400", error_response("The new config is invalid; `problems` lists each key and message")),
                    ("503", error_response("The daemon is shutting down")),
                ])), true)},
            "/api/v1/control/pause": {"post": {
                "summary": "PAUSE (as PgBouncer): new transactions wait until resume; waits until no client holds a server",
                "parameters": [{"name": "wait", "in": "query", "required": false,
                                "description": "Seconds to wait for clients to give their servers back (default 30)",
                                "schema": {"type": "integer", "minimum": 0, "maximum": 300, "default": 30}}],
                "responses": guarded(map(&[
                    ("200", ok_json("Paused: no client holds a server", "Pause")),
                    ("202", ok_json("Paused, but clients still held servers when the wait ended (`active`)", "Pause")),
                    ("400", error_response("A bad `wait`, or another query parameter")),
                    ("503", error_response("The daemon is shutting down")),
                ])),
            }},
            "/api/v1/control/resume": {"post": op("RESUME: transactions that waited go on",
                guarded(map(&[("200", ok_json("Resumed, or was not paused", "Outcome"))])), true)},
            "/api/v1/auth/login": {"post": {
                "summary": "Exchange the password of a user in admin_users (role admin) or stats_users (role read) for a token valid 15 minutes (or jwt_max_ttl if shorter)",
                "security": [],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LoginRequest"}}}},
                "responses": {
                    "200": ok_json("A token", "Login"),
                    "400": error_response("The body is not {\"user\": ..., \"password\": ...}"),
                    "401": error_response("Unknown user, wrong password, or a user in neither list: always the same answer"),
                    "403": error_response("Login is disabled: no admin_users/stats_users, jwt_enabled false, or RS256/EdDSA without jwt_private_key_file"),
                    "413": error_response("Body over 4096 bytes"),
                    "429": error_response("Too many failed authentications from this address (`Retry-After`)"),
                },
            }},
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
                "Outcome": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["reloaded", "stopping", "resumed", "not paused"]}}},
                "Pause": {
                    "type": "object", "required": ["status"],
                    "properties": {
                        "status": {"type": "string", "enum": ["paused", "pausing"]},
                        "active": int("pausing: clients still holding a server"),
                    }
                },
                "LoginRequest": {
                    "type": "object", "required": ["user", "password"], "additionalProperties": false,
                    "properties": {"user": {"type": "string"}, "password": {"type": "string", "format": "password"}}
                },
                "Login": {
                    "type": "object", "required": ["token", "token_type", "expires_in", "role"],
                    "properties": {
                        "token": {"type": "string", "description": "The JWT, for `Authorization: Bearer`"},
                        "token_type": {"type": "string", "enum": ["Bearer"]},
                        "expires_in": int("Seconds the token is valid"),
                        "role": {"type": "string", "enum": ["admin", "read"]},
                    }
                },
                "Servers": servers,
                "Node": node_schema(),
                "Nodes": {
                    "type": "object", "required": ["write_target", "writes", "forced_primary", "health_checks", "nodes"],
                    "properties": nodes_props,
                },
                "NodeControl": {
                    "type": "object",
                    "required": ["status", "message", "node", "write_target", "writes", "forced_primary", "health_checks"],
                    "properties": control_props,
                },
                "Status": {
                    "type": "object",
                    "required": ["version", "uptime_seconds", "phase", "paused", "pool_mode", "clients", "pinned_clients", "waiting_clients", "servers", "pools",
                                 "nodes_total", "nodes_up", "nodes_detached", "write_target"],
                    "properties": {
                        "version": {"type": "string"},
                        "uptime_seconds": int("Seconds since the daemon started"),
                        "phase": {"type": "string", "enum": ["running", "draining", "stopping"]},
                        "paused": {"type": "boolean", "description": "PAUSEd: new transactions wait for resume"},
                        "pool_mode": {"type": "string", "enum": ["session", "transaction", "statement"]},
                        "clients": int("Clients connected now"),
                        "pinned_clients": int("Transaction-mode clients pinned to their server"),
                        "waiting_clients": int("Clients waiting for a server"),
                        "servers": {"$ref": "#/components/schemas/Servers"},
                        "pools": int("Number of pools"),
                        "nodes_total": int("Configured backends (nodes)"),
                        "nodes_up": int("Nodes whose health checks pass (all, when checks are off) and that are not detached"),
                        "nodes_detached": int("Nodes detached by the operator"),
                        "write_target": {"type": "integer", "minimum": 0, "nullable": true, "description": "The node writes go to; null when none"},
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
            }
        }
    });
    if let (Some(schemas), Value::Object(more)) = (doc["components"]["schemas"].as_object_mut(), more_schemas()) {
        schemas.extend(more);
    }
    doc
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
            "get /api/v1/clients",
            "get /api/v1/servers",
            "get /api/v1/nodes",
            "get /api/v1/nodes/{id}",
            "post /api/v1/nodes/{id}/attach",
            "post /api/v1/nodes/{id}/detach",
            "post /api/v1/nodes/{id}/promote",
            "post /api/v1/control/reload",
            "post /api/v1/control/pause",
            "post /api/v1/control/resume",
            "post /api/v1/control/stop",
            "post /api/v1/auth/login",
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
