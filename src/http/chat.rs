//! `POST /api/chat` (Oxios shape): submit a message and wait for the answer. The turn
//! belongs to the runtime: if the client goes away, it still finishes and is stored.

use axum::Json as JsonResponse;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::Json;
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::runtime::{NewTurn, Submission, Target, TurnOutcome};
use crate::store::TurnStatus;

/// The request body; `message` is accepted as an alias of `content`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct ChatRequest {
    #[serde(default, alias = "message")]
    content: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    /// The model to answer with (default: the configured default).
    #[serde(default)]
    model: Option<String>,
}

#[utoipa::path(post, path = "/api/chat", tag = "chat", request_body = ChatRequest, responses((status = 200, body = super::openapi::ChatAnswer)))]
pub(super) async fn chat(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<ChatRequest>,
) -> Result<JsonResponse<Value>, ApiError> {
    let content = request.content.unwrap_or_default();
    let target = request.session_id.as_deref().map_or(Target::New, Target::Id);
    let request_id = crate::request_id::current();
    let turn = NewTurn {
        content: &content,
        page: None,
        wait: true,
        request_id: request_id.as_ref(),
        context: &[],
        model: request.model.as_deref(),
        parent: None,
    };
    let submission = state.runtime.submit(&caller.user, target, turn).await?;
    let outcome = finished(submission).await?;
    if let Some((error, message)) = outcome.error {
        return Err(ApiError::Turn {
            error,
            message,
            turn_id: outcome.turn_id,
            session_id: outcome.session_id,
        });
    }
    Ok(JsonResponse(json!({
        "id": outcome.turn_id,
        "echo": content,
        "reply": outcome.reply,
        "session_id": outcome.session_id,
        "project_id": request.project_id,
        "turn_id": outcome.turn_id,
        "status": outcome.status,
        "cancelled": matches!(outcome.status, TurnStatus::Cancelled | TurnStatus::Interrupted),
        "duration_ms": outcome.duration_ms,
        "tool_calls": outcome.tool_calls,
        "usage": outcome.usage,
        "model": outcome.model,
    })))
}

/// Issues a one-time ticket for `/api/chat/stream`, `/ws/chat` or SSE (`?ticket=`).
#[utoipa::path(post, path = "/api/chat/ticket", tag = "chat", responses((status = 200, body = super::openapi::Ticket)))]
pub(super) async fn ticket(State(state): State<AppState>, caller: Caller) -> JsonResponse<Value> {
    let ticket = state.auth.tickets.issue(&caller).await;
    JsonResponse(json!({"ticket": ticket, "expires_in": crate::auth::TICKET_TTL.as_secs()}))
}

/// Waits for the outcome of a turn submitted with `wait: true`.
pub(crate) async fn finished(submission: Submission) -> Result<TurnOutcome, ApiError> {
    submission
        .outcome
        .ok_or_else(|| ApiError::Internal("no outcome channel".into()))?
        .await
        .map_err(|_| ApiError::Internal("the turn ended without an outcome".into()))
}
