//! `POST /v1/responses`, `GET /v1/responses/{id}` (with `?stream=true&starting_after=N`
//! to resume a response's events) and `POST /v1/responses/{id}/cancel`. A response is a
//! turn; `previous_response_id` continues its session; `background: true` leaves the turn
//! running without the request; a tool call waiting for approval shows as an
//! `mcp_approval_request` item, answered by an `mcp_approval_response` input item.

use std::time::Duration;

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::response_events::{
    Echo, Ending, Mapped, PER_EVENT, ResponseEvents, base_object, response_object, turn_id,
};
use super::stream::{TurnEvents, TurnItem, ends_turn};
use super::{TurnGuard, input, model_name, named_session};
use crate::auth::Caller;
use crate::conversation::{ChatMessage, Role};
use crate::http::extract::{Json, Path, Query};
use crate::http::{ApiError, AppState};
use crate::runtime::{Decision, NewTurn, Runtime, Target, WatchItem};

/// The request body (fields Parley does not use — `temperature`, `tools`, ... — are
/// accepted and ignored).
#[derive(Debug, Deserialize)]
pub(super) struct CreateRequest {
    #[serde(default)]
    input: Value,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    background: bool,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    conversation: Option<Value>,
}

/// How a response is read back.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RetrieveQuery {
    #[serde(default)]
    stream: bool,
    starting_after: Option<u64>,
}

fn invalid(param: &str, message: &str) -> ApiError {
    ApiError::InvalidParam { param: param.into(), message: message.into() }
}

pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(request): Json<CreateRequest>,
) -> Result<Response, ApiError> {
    if request.conversation.is_some() {
        return Err(invalid(
            "conversation",
            "conversations are Parley sessions: name one with X-Session-Id or metadata.session_id",
        ));
    }
    let store = request.store.unwrap_or(true);
    if request.background && !store {
        return Err(invalid("background", "a background response must be stored (store: true)"));
    }
    let runtime = &state.runtime;
    let echo = Echo {
        model: model_name(runtime),
        instructions: request.instructions.clone(),
        previous_response_id: request.previous_response_id.clone(),
        background: request.background,
        store,
        metadata: request.metadata.clone().map_or(json!({}), Value::Object),
    };
    if let Some(answered) = approval_responses(runtime, &caller.user, &request.input).await? {
        // Answering approvals continues the response that asked for them.
        let view = runtime.turn(&caller.user, &answered.turn_id).await?;
        if request.stream {
            let after = answered.seq * PER_EVENT + PER_EVENT - 1;
            let (user_seq, session) = (view.record.user_seq as u64, view.record.session_id);
            let events =
                turn_events(&state, &caller, &session, &answered.turn_id, user_seq, true).await?;
            let responses = Responses { runtime: runtime.clone(), user: caller.user.clone(), echo };
            let stream = responses.stream(events, &answered.turn_id, Vec::new(), Some(after), None);
            return Ok(super::sse(&state, &caller, stream));
        }
        return Ok(JsonResponse(response_object(&view, &echo)).into_response());
    }
    let conversation = input::from_input(&request.input)?;
    let mut context = Vec::with_capacity(conversation.context.len() + 1);
    if let Some(instructions) = request.instructions.as_deref().filter(|i| !i.is_empty()) {
        context.push(ChatMessage::text(Role::System, instructions));
    }
    context.extend(conversation.context);
    let previous = match request.previous_response_id.as_deref() {
        Some(id) => {
            let turn = turn_id(id).ok_or(ApiError::NotFound("previous response"))?;
            let view = runtime.turn(&caller.user, turn).await.map_err(|err| match err {
                crate::runtime::RuntimeError::NotFound => ApiError::NotFound("previous response"),
                other => other.into(),
            })?;
            Some(view.record.session_id)
        }
        None => None,
    };
    let named = named_session(&headers, request.metadata.as_ref(), None)?;
    let target = match (&previous, &named) {
        (Some(session), _) => Target::Existing(session),
        (None, Some(session)) => Target::Id(session),
        (None, None) => Target::New,
    };
    let request_id = crate::request_id::current();
    let wait = !request.stream && !request.background;
    let turn = NewTurn {
        content: &conversation.content,
        page: None,
        wait,
        request_id: request_id.as_ref(),
        context: &context,
    };
    let submission = runtime.submit(&caller.user, target, turn).await?;
    let (turn, session) = (submission.turn_id.clone(), submission.session.id.clone());
    // A response the client waits for stops when it goes away, as OpenAI's does; one in
    // the background runs on.
    let mut guard =
        TurnGuard::new(runtime, &caller.user, &turn, &session, !request.background, store);
    let responses = Responses { runtime: runtime.clone(), user: caller.user.clone(), echo };
    if request.stream {
        let events =
            turn_events(&state, &caller, &session, &turn, submission.user_seq, true).await?;
        let created = base_object(&turn, crate::clock::now_ms() / 1000, "queued", &responses.echo);
        let start = ResponseEvents::new().start(submission.user_seq, created);
        let stream = responses.stream(events, &turn, start, None, Some(guard));
        return Ok(super::sse(&state, &caller, stream));
    }
    if request.background {
        guard.answered();
        let view = runtime.turn(&caller.user, &turn).await?;
        return Ok(JsonResponse(response_object(&view, &responses.echo)).into_response());
    }
    let outcome = submission
        .outcome
        .ok_or_else(|| ApiError::Internal("no outcome channel".into()))?
        .await
        .map_err(|_| ApiError::Internal("the turn ended without an outcome".into()))?;
    guard.answered();
    if let Some((error, message)) = outcome.error {
        return Err(ApiError::Turn { error, message, turn_id: turn, session_id: session });
    }
    let view = runtime.turn(&caller.user, &turn).await?;
    Ok(JsonResponse(response_object(&view, &responses.echo)).into_response())
}

/// The approval a request's `mcp_approval_response` items answered (the last of them), or
/// `None` if the input holds no such items. A mix with other items is refused.
async fn approval_responses(
    runtime: &Runtime,
    user: &str,
    input: &Value,
) -> Result<Option<crate::runtime::ApprovalInfo>, ApiError> {
    let Value::Array(items) = input else {
        return Ok(None);
    };
    let is_answer =
        |item: &Value| item.get("type").and_then(Value::as_str) == Some("mcp_approval_response");
    let answers = items.iter().filter(|item| is_answer(item)).count();
    if answers == 0 {
        return Ok(None);
    }
    if answers != items.len() {
        return Err(invalid("input", "send approval responses without other input items"));
    }
    let pending = runtime.approvals(user).await;
    let mut answered = None;
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}].approval_request_id");
        let id = item.get("approval_request_id").and_then(Value::as_str).unwrap_or_default();
        let request_id = id.strip_prefix("mcpr_").unwrap_or(id);
        let approve = item.get("approve").and_then(Value::as_bool).unwrap_or(false);
        let info =
            pending.iter().find(|a| a.request_id == request_id).cloned().ok_or_else(|| {
                ApiError::InvalidParam {
                    param: param.clone(),
                    message: "no such pending approval".into(),
                }
            })?;
        let decision = if approve { Decision::Approve } else { Decision::Deny };
        runtime.decide(user, request_id, decision).await?;
        answered = Some(info);
    }
    Ok(answered)
}

/// A watch of the turn's events from its start, counted as one of the caller's
/// connections if `count`.
async fn turn_events(
    state: &AppState,
    caller: &Caller,
    session: &str,
    turn: &str,
    user_seq: u64,
    count: bool,
) -> Result<TurnEvents, ApiError> {
    let connection = if count { Some(state.connections.open(&caller.user).await?) } else { None };
    let runtime = &state.runtime;
    let watching = runtime.watch(&caller.user, Some(session), None, Some(user_seq), false).await?;
    Ok(TurnEvents::new(watching.watch, turn, connection))
}

pub(super) async fn retrieve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<RetrieveQuery>,
) -> Result<Response, ApiError> {
    let turn = turn_id(&id).ok_or(ApiError::NotFound("response"))?;
    let runtime = &state.runtime;
    let view = runtime.turn(&caller.user, turn).await?;
    let echo = Echo { model: model_name(runtime), store: true, ..Echo::default() };
    if !query.stream {
        return Ok(JsonResponse(response_object(&view, &echo)).into_response());
    }
    let user_seq = view.record.user_seq as u64;
    let events =
        turn_events(&state, &caller, &view.record.session_id, turn, user_seq, true).await?;
    let created = base_object(turn, view.record.created_at / 1000, "queued", &echo);
    let start = ResponseEvents::new().start(user_seq, created);
    let responses = Responses { runtime: runtime.clone(), user: caller.user.clone(), echo };
    let stream = responses.stream(events, turn, start, query.starting_after, None);
    Ok(super::sse(&state, &caller, stream))
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<JsonResponse<Value>, ApiError> {
    let turn = turn_id(&id).ok_or(ApiError::NotFound("response"))?;
    let runtime = &state.runtime;
    let view = runtime.turn(&caller.user, turn).await?;
    let echo = Echo { model: model_name(runtime), store: true, ..Echo::default() };
    if view.record.status.finished() {
        return Ok(JsonResponse(response_object(&view, &echo)));
    }
    // Watch first, so the turn's end is seen however soon it comes.
    let watching =
        runtime.watch(&caller.user, Some(&view.record.session_id), None, None, false).await?;
    let mut watch = watching.watch;
    if runtime.cancel_turn(&caller.user, turn).await {
        let ended = async {
            loop {
                match watch.next().await {
                    WatchItem::Event(e)
                        if e.turn_id.as_deref() == Some(turn) && ends_turn(&e.kind) =>
                    {
                        break;
                    }
                    WatchItem::Closed => break,
                    _ => {}
                }
            }
        };
        // The turn stops within a second; the answer says how far it got meanwhile.
        let _ = tokio::time::timeout(Duration::from_secs(5), ended).await;
    }
    let view = runtime.turn(&caller.user, turn).await?;
    Ok(JsonResponse(response_object(&view, &echo)))
}

/// Streams responses of one user.
struct Responses {
    runtime: Runtime,
    user: String,
    echo: Echo,
}

impl Responses {
    /// The SSE events of a turn's response: `start` first, then its mapped events, those
    /// numbered at most `after` skipped. The guard (if any) lives as long as the stream.
    fn stream(
        self,
        events: TurnEvents,
        turn: &str,
        start: Vec<Mapped>,
        after: Option<u64>,
        guard: Option<TurnGuard>,
    ) -> impl futures_util::Stream<Item = axum::response::sse::Event> + Send + 'static {
        let keep = move |(number, _): &Mapped| after.is_none_or(|after| *number > after);
        let start: Vec<_> = start.into_iter().filter(keep).map(sse_event).collect();
        let state = (self, events, ResponseEvents::new(), guard, turn.to_owned(), false);
        let rest = stream::unfold(
            state,
            move |(responses, mut events, mut mapper, mut guard, turn, done)| async move {
                if done {
                    return None;
                }
                let Some(item) = events.next().await else {
                    if let Some(guard) = &mut guard {
                        guard.answered();
                    }
                    return None;
                };
                let (mapped, ending) = match &item {
                    TurnItem::Resync { last_seq } => {
                        // The log no longer holds the turn's events: what is stored tells
                        // how it ended, if it did.
                        match responses.runtime.turn(&responses.user, &turn).await {
                            Ok(view) if view.record.status.finished() => {
                                let object = response_object(&view, &responses.echo);
                                let ending = match object["status"].as_str() {
                                    Some("completed") => Ending::Completed,
                                    Some("failed") => Ending::Failed,
                                    _ => Ending::Cancelled,
                                };
                                let last = json!({"type": ending.event_type(), "response": object});
                                (vec![(last_seq * PER_EVENT + PER_EVENT - 1, last)], Some(ending))
                            }
                            _ => (Vec::new(), None),
                        }
                    }
                    TurnItem::Event(event) => {
                        let (values, ending) = mapper.map(&item);
                        let base = event.seq * PER_EVENT;
                        let mut numbered: Vec<Mapped> = values
                            .into_iter()
                            .enumerate()
                            .map(|(k, v)| (base + k as u64, v))
                            .collect();
                        if let Some(ending) = ending {
                            let number = base + numbered.len() as u64;
                            numbered.push((number, responses.last(&turn, ending).await));
                        }
                        (numbered, ending)
                    }
                };
                if ending.is_some()
                    && let Some(guard) = &mut guard
                {
                    guard.answered();
                }
                let sse: Vec<_> = mapped.into_iter().filter(keep).map(sse_event).collect();
                let next = (responses, events, mapper, guard, turn, ending.is_some());
                Some((stream::iter(sse), next))
            },
        );
        stream::iter(start).chain(rest.flatten())
    }

    /// The event that ends a response: its final object as stored.
    async fn last(&self, turn: &str, ending: Ending) -> Value {
        if ending == Ending::Deleted {
            return json!({"type": "error", "code": "not_found", "message": "the conversation was deleted"});
        }
        match self.runtime.turn(&self.user, turn).await {
            Ok(view) => {
                json!({"type": ending.event_type(), "response": response_object(&view, &self.echo)})
            }
            Err(err) => {
                tracing::warn!(%err, "reading a finished response failed");
                json!({"type": "error", "code": "server_error", "message": "the response could not be read"})
            }
        }
    }
}

/// One numbered event as SSE: `event:` its type, `data:` the body with its number.
fn sse_event((number, mut body): Mapped) -> axum::response::sse::Event {
    body["sequence_number"] = json!(number);
    let kind = body["type"].as_str().unwrap_or("message").to_owned();
    axum::response::sse::Event::default().event(kind).data(body.to_string())
}
