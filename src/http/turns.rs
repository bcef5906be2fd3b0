//! `GET /api/agents` (the caller's running turns; an admin's `?all=true`, everyone's on
//! every node of a cluster) and `POST /api/agents/{turn_id}/kill` (an admin may stop anyone's).

use axum::Json as JsonResponse;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Path, Query};
use super::{ApiError, AppState};
use crate::auth::Caller;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AgentsQuery {
    /// Admins only: every user's running turns (on every node of a cluster).
    #[serde(default)]
    all: bool,
}

#[utoipa::path(get, path = "/api/agents", tag = "turns", params(AgentsQuery), responses((status = 200, body = super::openapi::Items)))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<AgentsQuery>,
) -> Result<JsonResponse<Value>, ApiError> {
    if query.all && !caller.admin {
        return Err(ApiError::Forbidden("listing every user's turns needs an admin token"));
    }
    let user = (!query.all).then_some(caller.user.as_str());
    let turns = state.runtime.running_turns(user).await?;
    Ok(JsonResponse(json!({"items": turns})))
}

#[utoipa::path(post, path = "/api/agents/{turn_id}/kill", tag = "turns", params(("turn_id" = String, Path)), responses((status = 200, description = "`{cancelled, turn_id}`", body = Value)))]
pub(super) async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Path(turn_id): Path<String>,
) -> Result<JsonResponse<Value>, ApiError> {
    // An admin stops whoever's turn it is, on whichever node runs it.
    let mut owner = caller.user.clone();
    if caller.admin
        && let Some(turn) =
            state.runtime.running_turns(None).await?.into_iter().find(|t| t.turn_id == turn_id)
    {
        owner = turn.user;
    }
    if state.runtime.cancel_turn(&owner, &turn_id).await {
        Ok(JsonResponse(json!({"cancelled": true, "turn_id": turn_id})))
    } else {
        Err(ApiError::NotFound("running turn"))
    }
}
