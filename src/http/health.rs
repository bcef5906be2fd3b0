//! `GET /health`, `GET /health/ready`, `GET /api/status` and `GET /api/config`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::Query;
use crate::auth::Caller;
use crate::tools::mcp::Phase;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "health", security(()), responses((status = 200, body = super::openapi::Liveness)))]
pub(super) async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// Readiness: the store answers and the bus delivers. A missing provider is reported but
/// does not make the node unready: it still serves history and sessions.
#[utoipa::path(get, path = "/health/ready", tag = "health", security(()), responses((status = 200, body = super::openapi::Readiness), (status = 503, body = super::openapi::Readiness)))]
pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let health = Health::check(&state).await;
    let mut body = json!({
        "status": if health.ready() { "ready" } else { "unavailable" },
        "node_id": &*state.node_id,
        "components": health.components(&state, false),
    });
    if health.degraded && health.ready() {
        body["status"] = json!("degraded");
    }
    if health.ready() {
        return Json(body).into_response();
    }
    body["error"] = json!(match (health.store, health.bus) {
        (false, false) => "the store and the bus are not answering",
        (false, true) => "the store is not answering",
        _ => "the bus is not answering",
    });
    body["code"] = json!("NOT_READY");
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// Operational status for an authenticated caller.
#[utoipa::path(get, path = "/api/status", tag = "health", responses((status = 200, description = "Uptime, components, turns, connections, and who asks (`user`, `admin`)", body = Value)))]
pub(super) async fn status(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let health = Health::check(&state).await;
    let active_turns = state.runtime.active_turns().await;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        // Who is asking: the web chat shows the operator's view to admins only.
        "user": caller.user,
        "admin": caller.admin,
        "node_id": &*state.node_id,
        "uptime_secs": state.started.elapsed().as_secs(),
        "status": if !health.ready() { "unavailable" } else if health.degraded { "degraded" } else { "ok" },
        "components": health.components(&state, caller.admin),
        "provider": &*state.provider,
        "active_turns": active_turns,
        "loaded_sessions": state.runtime.loaded_sessions().await,
        "connections": state.connections.count(),
        // One node until the cluster runs on a shared bus; each lists what it runs.
        "nodes": [{"id": &*state.node_id, "alive": true, "active_turns": active_turns}],
    }))
}

/// `?format=` of `GET /api/config`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ConfigQuery {
    /// `json` (the default) or `toml`.
    #[serde(default)]
    format: Option<String>,
}

/// The effective configuration with secrets redacted, for admins: JSON, or with
/// `?format=toml` the text `parley config` prints.
#[utoipa::path(get, path = "/api/config", tag = "health", params(ConfigQuery), responses((status = 200, description = "The effective configuration, secrets redacted (admins)", content((Value = "application/json"), (String = "text/plain")))))]
pub(super) async fn config(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ConfigQuery>,
) -> Result<Response, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden("the configuration is shown to admin tokens only"));
    }
    match query.format.as_deref() {
        None | Some("json") => Ok(Json(state.config.redacted()).into_response()),
        Some("toml") => {
            let text = state.config.redacted_toml();
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
        }
        Some(other) => Err(ApiError::BadRequest {
            code: "INVALID_QUERY",
            message: format!("format must be json or toml, not {other:?}"),
        }),
    }
}

/// Whether the parts a node needs answer.
struct Health {
    store: bool,
    bus: bool,
    /// An MCP server is not running: its tools fail, the rest works.
    degraded: bool,
}

impl Health {
    async fn check(state: &AppState) -> Self {
        let degraded = state.mcp.statuses().iter().any(|server| server.state != Phase::Running);
        Self {
            store: state.runtime.store_ready().await,
            bus: state.runtime.bus().healthy(),
            degraded,
        }
    }

    fn ready(&self) -> bool {
        self.store && self.bus
    }

    /// The components; `detailed` (admins) adds each MCP server's tools and last error.
    fn components(&self, state: &AppState, detailed: bool) -> Value {
        let up = |ok: bool| if ok { "ok" } else { "unavailable" };
        let mcp: serde_json::Map<String, Value> = state
            .mcp
            .statuses()
            .into_iter()
            .map(|server| {
                let status = if server.state == Phase::Running { "ok" } else { "degraded" };
                let mut entry = json!({"status": status, "state": server.state});
                if detailed {
                    entry["transport"] = json!(server.transport);
                    entry["tools"] = json!(server.tools);
                    entry["restarts"] = json!(server.restarts);
                    entry["error"] = json!(server.error);
                    if server.per_user {
                        entry["user_processes"] = json!(server.user_processes);
                    }
                }
                (server.name, entry)
            })
            .collect();
        json!({
            "store": up(self.store),
            "bus": {"kind": state.runtime.bus().describe(), "status": up(self.bus)},
            "provider": if state.provider_configured { "configured" } else { "not_configured" },
            "mcp": mcp,
        })
    }
}
