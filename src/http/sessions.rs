//! The session endpoints of DESIGN.md "Sessions (REST)": list, detail with paginated
//! messages, rename, delete, queue a message, abort, tool-call timeline, notify, prune.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Json, Path, Query};
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::runtime::{LiveState, MessagePage, NewTurn, SessionChange, Target};
use crate::store::{Message, Session, ToolCallRecord};

/// Largest page of sessions or messages.
const MAX_LIMIT: u64 = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    #[serde(default = "first_page")]
    page: u64,
    #[serde(default = "default_limit")]
    limit: u64,
    /// Admins only: every user's sessions.
    #[serde(default)]
    all: bool,
    /// The archived sessions instead of the others.
    #[serde(default)]
    archived: bool,
}

fn first_page() -> u64 {
    1
}

fn default_limit() -> u64 {
    50
}

fn check_limit(limit: u64) -> Result<u64, ApiError> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest {
            code: "INVALID_QUERY",
            message: format!("limit must be between 1 and {MAX_LIMIT}"),
        })
    }
}

/// A session as shown to clients.
fn session_json(session: &Session, live: Option<&LiveState>) -> Value {
    let running = live.and_then(|live| live.running.as_ref());
    json!({
        "id": session.id,
        "name": session.name,
        "state": if running.is_some() { "running" } else { session.state.as_str() },
        "message_count": session.message_count,
        "created_at": rfc3339(session.created_at),
        "updated_at": rfc3339(session.updated_at),
        "pinned": session.pinned,
        "archived": session.archived,
        "last_seq": live.map_or(session.reserved_seq as u64, |live| live.last_seq),
        "running_turn": running.map(|r| json!({"turn_id": r.turn_id, "started_at": rfc3339(r.started_at)})),
        "queued": live.map_or(0, |live| live.queued),
        "queued_turns": live.map_or(Some(Vec::new()), |live| live.queued_turns.clone()),
    })
}

/// A message as the API shows it (its time in RFC 3339).
pub(super) fn message_json(message: &Message) -> Value {
    let mut value = serde_json::to_value(message).unwrap_or_default();
    value["created_at"] = json!(rfc3339(message.created_at));
    value
}

#[utoipa::path(get, path = "/api/sessions", tag = "sessions", params(ListQuery), responses((status = 200, body = super::openapi::SessionPage)))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<JsonResponse<Value>, ApiError> {
    let limit = check_limit(query.limit)?;
    let page = query.page.max(1);
    let offset = (page - 1).saturating_mul(limit);
    if query.all && !caller.admin {
        return Err(ApiError::Forbidden("listing every user's sessions needs an admin token"));
    }
    let listed =
        state.runtime.list_sessions(&caller.user, query.all, query.archived, offset, limit).await?;
    let (sessions, total) = (listed.sessions, listed.total);
    let items: Vec<Value> = sessions
        .iter()
        .map(|s| {
            let mut item = session_json(s, None);
            if query.all {
                item["user"] = json!(s.user_id);
            }
            item
        })
        .collect();
    Ok(JsonResponse(json!({"items": items, "total": total, "page": page, "limit": limit})))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DetailQuery {
    /// The `seq` of a message on the branch to read, which goes on to its newest turn
    /// (absent: the current branch, ending at the newest turn).
    branch: Option<i64>,
    before_seq: Option<i64>,
    #[serde(default = "default_message_limit")]
    limit: u64,
}

fn default_message_limit() -> u64 {
    100
}

#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "The session id", pattern = "^[A-Za-z0-9._-]{1,128}$"), DetailQuery), responses((status = 200, body = super::openapi::SessionDetail)))]
pub(super) async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Result<JsonResponse<Value>, ApiError> {
    let limit = check_limit(query.limit)?;
    let page_of =
        MessagePage { branch: query.branch, before_seq: query.before_seq, limit: limit + 1 };
    let (session, live, messages) =
        state.runtime.session_messages(&caller.user, &id, page_of).await?;
    let has_more = messages.len() as u64 > limit;
    let page = &messages[messages.len().saturating_sub(limit as usize)..];
    let mut body = session_json(&session, live.as_ref());
    body["messages"] = page.iter().map(message_json).collect();
    body["has_more"] = json!(has_more);
    body["next_before_seq"] = json!(if has_more { page.first().map(|m| m.seq) } else { None });
    Ok(JsonResponse(body))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct SessionChangeRequest {
    /// A new name.
    #[serde(default)]
    name: Option<String>,
    /// Pinned sessions are listed first and never pruned.
    #[serde(default)]
    pinned: Option<bool>,
    /// Archived sessions are listed apart (`GET /api/sessions?archived=true`).
    #[serde(default)]
    archived: Option<bool>,
}

/// Renames, pins or archives a session; what the request leaves out stays.
#[utoipa::path(patch, path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "The session id", pattern = "^[A-Za-z0-9._-]{1,128}$")), request_body = SessionChangeRequest, responses((status = 200, body = super::openapi::SessionView)))]
pub(super) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(request): Json<SessionChangeRequest>,
) -> Result<JsonResponse<Value>, ApiError> {
    let name = request.name.as_deref().map(str::trim);
    if name.is_some_and(|name| name.is_empty() || name.len() > 200) {
        return Err(ApiError::Unprocessable {
            code: "INVALID_NAME",
            message: "name must be 1-200 bytes".into(),
        });
    }
    if name.is_none() && request.pinned.is_none() && request.archived.is_none() {
        return Err(ApiError::Unprocessable {
            code: "INVALID_REQUEST",
            message: "nothing to change: send name, pinned or archived".into(),
        });
    }
    let change = SessionChange { name, pinned: request.pinned, archived: request.archived };
    let (session, live) = state.runtime.update_session(&caller.user, &id, change).await?;
    let live = live.map(|live| live.state());
    Ok(JsonResponse(session_json(&session, live.as_ref())))
}

#[utoipa::path(delete, path = "/api/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "The session id", pattern = "^[A-Za-z0-9._-]{1,128}$")), responses((status = 204, description = "Deleted")))]
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.runtime.delete_session(&caller.user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct MessageRequest {
    #[serde(default, alias = "message")]
    content: Option<String>,
    /// The model to answer with (default: the configured default).
    #[serde(default)]
    model: Option<String>,
    /// The `seq` of a message whose turn this one follows: editing a later message or
    /// regenerating an answer starts a branch beside the old one, which is kept
    /// (0: the start of the conversation). Absent: the session's newest turn.
    #[serde(default)]
    parent: Option<i64>,
}

/// Queues a turn without waiting: 202 with its id once the user message is stored.
#[utoipa::path(post, path = "/api/sessions/{id}/messages", tag = "sessions", params(("id" = String, Path, description = "The session id", pattern = "^[A-Za-z0-9._-]{1,128}$")), request_body = MessageRequest, responses((status = 202, body = super::openapi::TurnAccepted)))]
pub(super) async fn post_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(request): Json<MessageRequest>,
) -> Result<Response, ApiError> {
    let content = request.content.unwrap_or_default();
    let request_id = crate::request_id::current();
    let turn = NewTurn {
        content: &content,
        page: None,
        wait: false,
        request_id: request_id.as_ref(),
        context: &[],
        model: request.model.as_deref(),
        parent: request.parent,
    };
    let submission = state.runtime.submit(&caller.user, Target::Id(&id), turn).await?;
    let body = json!({"turn_id": submission.turn_id, "session_id": submission.session.id});
    Ok((StatusCode::ACCEPTED, JsonResponse(body)).into_response())
}

#[utoipa::path(post, path = "/api/sessions/{id}/abort", tag = "sessions", params(("id" = String, Path, description = "The session id", pattern = "^[A-Za-z0-9._-]{1,128}$")), responses((status = 200, description = "`{aborted, turn_id}`", body = Value)))]
pub(super) async fn abort(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<JsonResponse<Value>, ApiError> {
    let turn_id = state.runtime.abort_session(&caller.user, &id).await?;
    Ok(JsonResponse(json!({"aborted": turn_id.is_some(), "turn_id": turn_id})))
}

#[utoipa::path(get, path = "/api/sessions/{id}/tool-calls", tag = "sessions", params(("id" = String, Path, description = "The session id", pattern = "^[A-Za-z0-9._-]{1,128}$")), responses((status = 200, body = super::openapi::Items)))]
pub(super) async fn tool_calls(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<JsonResponse<Value>, ApiError> {
    let calls = state.runtime.tool_calls(&caller.user, &id).await?;
    let items: Vec<Value> = calls.iter().map(tool_call_json).collect();
    Ok(JsonResponse(json!({"items": items})))
}

/// A tool call of the timeline as the API shows it (its start in RFC 3339).
pub(super) fn tool_call_json(call: &ToolCallRecord) -> Value {
    let mut value = serde_json::to_value(call).unwrap_or_default();
    value["started_at"] = json!(rfc3339(call.started_at));
    value
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct NotifyRequest {
    event: Value,
}

/// Pushes an outside status event into the session's live view (never to the model).
#[utoipa::path(post, path = "/api/sessions/{id}/notify", tag = "sessions", params(("id" = String, Path, description = "The session id", pattern = "^[A-Za-z0-9._-]{1,128}$")), request_body = NotifyRequest, responses((status = 202, description = "`{seq}`", body = Value)))]
pub(super) async fn notify(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(request): Json<NotifyRequest>,
) -> Result<Response, ApiError> {
    let seq = state.runtime.notify(&caller.user, &id, request.event).await?;
    Ok((StatusCode::ACCEPTED, JsonResponse(json!({"seq": seq}))).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(super) struct PruneRequest {
    max_sessions: Option<u64>,
    ttl_hours: Option<u64>,
}

/// Prunes with the given limits, or the configured ones. Admins prune everyone's sessions.
#[utoipa::path(post, path = "/api/sessions/prune", tag = "sessions", request_body(content = Option<PruneRequest>, description = "Limits; none: the configured ones"), responses((status = 200, description = "`{pruned}`", body = Value)))]
pub(super) async fn prune(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<JsonResponse<Value>, ApiError> {
    // The body is optional: none means "use the configured limits".
    let request: PruneRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PruneRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
            code: "INVALID_JSON",
            message: format!("invalid prune request: {e}"),
        })?
    };
    let config = &state.config.sessions;
    let user = (!caller.admin).then_some(caller.user.as_str());
    let pruned = state
        .runtime
        .prune(
            user,
            request.max_sessions.unwrap_or(config.max_sessions),
            request.ttl_hours.unwrap_or(config.ttl_hours),
        )
        .await?;
    Ok(JsonResponse(json!({"pruned": pruned})))
}
