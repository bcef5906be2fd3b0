//! `GET /api/approvals` and `POST /api/approvals/{id}/{approve|deny|always}`.

use axum::Json as JsonResponse;
use axum::extract::State;
use serde_json::{Value, json};

use super::extract::Path;
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::runtime::Decision;

#[utoipa::path(get, path = "/api/approvals", tag = "approvals", responses((status = 200, body = super::openapi::Items)))]
pub(super) async fn list(State(state): State<AppState>, caller: Caller) -> JsonResponse<Value> {
    JsonResponse(json!({"items": state.runtime.approvals(&caller.user).await}))
}

#[utoipa::path(post, path = "/api/approvals/{id}/{decision}", tag = "approvals", params(("id" = String, Path, description = "The approval request id"), ("decision" = String, Path, description = "`approve`, `deny` or `always`")), responses((status = 200, description = "`{request_id, decision}`", body = Value)))]
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
