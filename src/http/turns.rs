//! `GET /api/agents` (the caller's running turns) and `POST /api/agents/{turn_id}/kill`.

use axum::Json as JsonResponse;
use axum::extract::State;
use serde_json::{Value, json};

use super::extract::Path;
use super::{ApiError, AppState};
use crate::auth::Caller;

#[utoipa::path(get, path = "/api/agents", tag = "turns", responses((status = 200, body = super::openapi::Items)))]
pub(super) async fn list(State(state): State<AppState>, caller: Caller) -> JsonResponse<Value> {
    let turns = state.runtime.running_turns(&caller.user).await;
    JsonResponse(json!({"items": turns}))
}

#[utoipa::path(post, path = "/api/agents/{turn_id}/kill", tag = "turns", params(("turn_id" = String, Path)), responses((status = 200, description = "`{cancelled, turn_id}`", body = Value)))]
pub(super) async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Path(turn_id): Path<String>,
) -> Result<JsonResponse<Value>, ApiError> {
    if state.runtime.cancel_turn(&caller.user, &turn_id).await {
        Ok(JsonResponse(json!({"cancelled": true, "turn_id": turn_id})))
    } else {
        Err(ApiError::NotFound("running turn"))
    }
}
