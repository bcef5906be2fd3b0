//! The OpenAI-compatible APIs: `/v1/chat/completions`, `/v1/models` and `/v1/responses`.
//! Each is an adapter over the runtime like every other protocol: a request submits a turn
//! and watches its session's events, mapped to OpenAI's objects and stream events. Errors
//! on `/v1` answer in OpenAI's shape, so SDKs raise their usual exceptions.

mod chat;
pub(crate) mod input;
mod response_events;
mod responses;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json as JsonResponse;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::http::extract::Path;
use crate::http::{ApiError, AppState, ErrorInfo};
use crate::runtime::{Runtime, valid_session_id};

/// The `/v1` routes in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        models,
        model,
        chat::completions,
        responses::create,
        responses::retrieve,
        responses::cancel
    ),
    components(schemas(OpenAiErrorBody, OpenAiError))
)]
pub(crate) struct OpenAiApi;

/// An error on `/v1`, in OpenAI's shape.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct OpenAiErrorBody {
    error: OpenAiError,
}

/// OpenAI's error object.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct OpenAiError {
    message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found_error`, ...
    r#type: String,
    code: Option<String>,
    param: Option<String>,
}

/// The `/v1` routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/responses", post(responses::create))
        .route("/v1/responses/{id}", get(responses::retrieve))
        .route("/v1/responses/{id}/cancel", post(responses::cancel))
}

/// Rewrites error responses under `/v1` into OpenAI's shape, `{"error": {"message",
/// "type", "code", "param"}}`, keeping the status (422 becomes 400, as OpenAI answers a
/// malformed request) and headers such as `Retry-After`.
pub(crate) async fn error_shape(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let v1 = path == "/v1" || path.starts_with("/v1/");
    let response = next.run(request).await;
    if !v1 {
        return response;
    }
    let Some(info) = response.extensions().get::<ErrorInfo>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    if parts.status == StatusCode::UNPROCESSABLE_ENTITY {
        parts.status = StatusCode::BAD_REQUEST;
    }
    let body = error_body(parts.status, &info);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut response = Response::from_parts(parts, Body::from(body.to_string()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// OpenAI's error object for a status and what Parley said.
fn error_body(status: StatusCode, info: &ErrorInfo) -> Value {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    };
    let mut error = Map::new();
    error.insert("message".into(), json!(info.message));
    error.insert("type".into(), json!(kind));
    error.insert("code".into(), json!(info.code));
    error.insert("param".into(), json!(info.param));
    if let Some(id) = crate::request_id::current() {
        error.insert("request_id".into(), json!(&*id));
    }
    json!({ "error": error })
}

/// An error event inside a stream that already answered 200, in OpenAI's shape.
fn stream_error(code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": "server_error", "code": code, "param": null}})
}

/// The model a request names, as the turn will run on it. One that is not configured is
/// not found, as OpenAI answers it (SDKs raise `NotFoundError`).
fn model_name(runtime: &Runtime, requested: Option<&str>) -> Result<String, ApiError> {
    let resolved = runtime.models().resolve(requested).map_err(|_| ApiError::NotFound("model"))?;
    Ok(resolved.to_owned())
}

/// Seconds since the epoch, as OpenAI's `created` fields count.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `GET /v1/models`: every configured model, the default first.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, description = "Every configured model, the default first: `{object: list, data: [{id, object: model, created, owned_by}]}`", body = Value)))]
async fn models(State(state): State<AppState>, _caller: Caller) -> JsonResponse<Value> {
    let data: Vec<Value> =
        state.runtime.models().routes().iter().map(|route| model_object(&route.id)).collect();
    JsonResponse(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}`.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "openai", params(("id" = String, Path)), responses((status = 200, body = Value)))]
async fn model(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<JsonResponse<Value>, ApiError> {
    match state.runtime.models().route(&id) {
        Some(route) => Ok(JsonResponse(model_object(&route.id))),
        None => Err(ApiError::NotFound("model")),
    }
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "parley"})
}

/// The Parley session a request names, if any: the `X-Session-Id` header, else
/// `metadata.session_id`, else `user`.
fn named_session(
    headers: &HeaderMap,
    metadata: Option<&Map<String, Value>>,
    user: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let (param, id) = if let Some(value) = headers.get("x-session-id") {
        let id = value.to_str().map_err(|_| bad_session("X-Session-Id"))?;
        ("X-Session-Id", id.to_owned())
    } else if let Some(value) = metadata.and_then(|m| m.get("session_id")) {
        let id = value.as_str().ok_or_else(|| bad_session("metadata.session_id"))?;
        ("metadata.session_id", id.to_owned())
    } else if let Some(user) = user {
        ("user", user.to_owned())
    } else {
        return Ok(None);
    };
    if !valid_session_id(&id) {
        return Err(bad_session(param));
    }
    Ok(Some(id))
}

fn bad_session(param: &str) -> ApiError {
    ApiError::InvalidParam {
        param: param.to_owned(),
        message: format!("{param} must be 1-128 characters of A-Z a-z 0-9 . _ -"),
    }
}

/// Stops a turn nobody can come back for when its request goes away: a stateless request
/// (no session named) whose client disconnects cancels its turn, and one sent with
/// `store: false` deletes the session it ran in once the answer is given (or abandoned).
pub(crate) struct TurnGuard {
    runtime: Runtime,
    user: String,
    turn_id: String,
    session_id: String,
    /// Whether the client's disconnect should cancel the turn.
    cancel: bool,
    /// Whether the session goes when the request ends.
    delete: bool,
    /// Set once the answer was given: only `delete` still applies.
    answered: bool,
}

impl TurnGuard {
    pub(crate) fn new(
        runtime: &Runtime,
        user: &str,
        turn_id: &str,
        session_id: &str,
        stateless: bool,
        keep: bool,
    ) -> Self {
        Self {
            runtime: runtime.clone(),
            user: user.to_owned(),
            turn_id: turn_id.to_owned(),
            session_id: session_id.to_owned(),
            cancel: stateless,
            delete: !keep,
            answered: false,
        }
    }

    /// The answer was given in full: the turn has ended, nothing is left to cancel.
    pub(crate) fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        let (cancel, delete) = (self.cancel && !self.answered, self.delete);
        if !cancel && !delete {
            return;
        }
        let runtime = self.runtime.clone();
        let (user, turn_id, session_id) =
            (self.user.clone(), self.turn_id.clone(), self.session_id.clone());
        tokio::spawn(async move {
            if delete {
                // Deleting stops the session's turns too.
                if let Err(err) = runtime.delete_session(&user, &session_id).await {
                    tracing::warn!(%err, "deleting a store:false session failed");
                }
            } else if cancel && runtime.cancel_turn(&user, &turn_id).await {
                tracing::info!(turn_id, "the client went away: its stateless turn is cancelled");
            }
        });
    }
}

/// A `data:`-only SSE event of a JSON value, as OpenAI streams them.
fn data_event(value: &Value) -> axum::response::sse::Event {
    axum::response::sse::Event::default().data(value.to_string())
}
