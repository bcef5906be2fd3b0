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

/// Readiness: the store answers and the bus delivers. A missing provider is reported but
/// does not make the node unready: it still serves history and sessions.
pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let health = Health::check(&state).await;
    let mut body = json!({
        "status": if health.ready() { "ready" } else { "unavailable" },
        "node_id": &*state.node_id,
        "components": health.components(&state),
    });
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
pub(super) async fn status(State(state): State<AppState>, _caller: Caller) -> Json<Value> {
    let health = Health::check(&state).await;
    let active_turns = state.runtime.active_turns().await;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": &*state.node_id,
        "uptime_secs": state.started.elapsed().as_secs(),
        "components": health.components(&state),
        "provider": &*state.provider,
        "active_turns": active_turns,
        "loaded_sessions": state.runtime.loaded_sessions().await,
        "connections": state.connections.count(),
        // One node until the cluster runs on a shared bus; each lists what it runs.
        "nodes": [{"id": &*state.node_id, "alive": true, "active_turns": active_turns}],
    }))
}

/// Whether the parts a node needs answer.
struct Health {
    store: bool,
    bus: bool,
}

impl Health {
    async fn check(state: &AppState) -> Self {
        Self { store: state.runtime.store_ready().await, bus: state.runtime.bus().healthy() }
    }

    fn ready(&self) -> bool {
        self.store && self.bus
    }

    fn components(&self, state: &AppState) -> Value {
        let up = |ok: bool| if ok { "ok" } else { "unavailable" };
        json!({
            "store": up(self.store),
            "bus": {"kind": state.runtime.bus().describe(), "status": up(self.bus)},
            "provider": if state.provider_configured { "configured" } else { "not_configured" },
        })
    }
}
