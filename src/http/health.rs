//! `GET /health`, `GET /health/ready` and `GET /api/status`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::auth::Caller;

/// Liveness: the process answers.
pub(super) async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// Readiness: the store answers. A missing provider is reported but does not make the
/// server unready: it still serves history and sessions.
pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let store_ok = state.runtime.store_ready().await;
    let mut body = json!({
        "status": if store_ok { "ready" } else { "unavailable" },
        "components": components(&state, store_ok),
    });
    if store_ok {
        return Json(body).into_response();
    }
    body["error"] = json!("the store is not answering");
    body["code"] = json!("NOT_READY");
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// Operational status for an authenticated caller.
pub(super) async fn status(State(state): State<AppState>, _caller: Caller) -> Json<Value> {
    let store_ok = state.runtime.store_ready().await;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "components": components(&state, store_ok),
        "provider": &*state.provider,
        "active_turns": state.runtime.active_turns().await,
        "loaded_sessions": state.runtime.loaded_sessions().await,
        "connections": state.connections.count(),
    }))
}

fn components(state: &AppState, store_ok: bool) -> Value {
    json!({
        "store": if store_ok { "ok" } else { "unavailable" },
        "bus": state.runtime.bus().describe(),
        "provider": if state.provider_configured { "configured" } else { "not_configured" },
    })
}
