//! `GET /api/approvals` and `POST /api/approvals/{id}/{approve|deny|always}`.

use axum::Json as JsonResponse;
use axum::extract::State;
use serde_json::{Value, json};

use super::extract::Path;
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::runtime::Decision;

pub(super) async fn list(State(state): State<AppState>, caller: Caller) -> JsonResponse<Value> {
    JsonResponse(json!({"items": state.runtime.approvals(&caller.user).await}))
}

pub(super) async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, decision)): Path<(String, String)>,
) -> Result<JsonResponse<Value>, ApiError> {
    let decision = Decision::parse(&decision).ok_or(ApiError::NotFound("route"))?;
    state.runtime.decide(&caller.user, &id, decision).await?;
    let detail = format!("{id} {}", decision.as_str());
    state.auth.audit("approval_decided", Some(&caller.user), None, Some(&detail)).await;
    Ok(JsonResponse(json!({"request_id": id, "decision": decision.as_str()})))
}
