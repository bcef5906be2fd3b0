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
use super::{TurnGuard, input, model_name, named_session};
use crate::auth::Caller;
use crate::conversation::{ChatMessage, Role};
use crate::http::extract::{Json, Path, Query};
use crate::http::{ApiError, AppState, ConnectionCount};
use crate::runtime::{
    ApprovalInfo, Decision, EventKind, NewTurn, Runtime, RuntimeError, Target, TurnItem, TurnView,
    TurnWatch,
};

/// The request body (fields Parley does not use — `temperature`, `tools`, ... — are
/// accepted and ignored).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
    /// One of `/v1/models` (none: the default).
    #[serde(default)]
    model: Option<String>,
}

/// How a response is read back.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RetrieveQuery {
    #[serde(default)]
    stream: bool,
    starting_after: Option<u64>,
}

fn invalid(param: &str, message: &str) -> ApiError {
    ApiError::InvalidParam { param: param.into(), message: message.into() }
}

#[utoipa::path(post, path = "/v1/responses", tag = "openai", request_body = CreateRequest, params(("X-Session-Id" = Option<String>, Header, description = "Run in this Parley session")), responses((status = 200, description = "A response object, or with `stream` its events as SSE", content((Value = "application/json"), (String = "text/event-stream")))))]
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
    let user = &caller.user;
    let echo = Echo {
        model: model_name(runtime, request.model.as_deref())?,
        instructions: request.instructions.clone(),
        previous_response_id: request.previous_response_id.clone(),
        background: request.background,
        store,
        metadata: request.metadata.clone().map_or(json!({}), Value::Object),
    };
    let responses = Responses { runtime: runtime.clone(), user: user.clone(), echo };
    // A stream counts among the caller's connections: refused before anything happens.
    let connection =
        if request.stream { Some(state.connections.open(user, "openai").await?) } else { None };
    if let Some(answers) = approval_answers(runtime, user, &request.input).await? {
        // Answering approvals continues the response that asked for them.
        let (turn, seq) =
            answers.last().map(|(info, _)| (info.turn_id.clone(), info.seq)).unwrap_or_default();
        for (info, decision) in answers {
            runtime.decide(user, &info.request_id, decision).await?;
        }
        let view = runtime.turn(user, &turn).await?;
        let Some(connection) = connection else {
            return Ok(JsonResponse(responses.object(&view).await).into_response());
        };
        let after = seq * PER_EVENT + PER_EVENT - 1;
        let (session, user_seq) = (&view.record.session_id, view.record.user_seq.max(0) as u64);
        let events = runtime.watch_turn(user, session, &turn, user_seq).await?;
        let stream = responses.stream(events, connection, Vec::new(), Some(after), None);
        return Ok(crate::sse::live(&state, &caller, stream));
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
            let view = runtime.turn(user, turn).await.map_err(|err| match err {
                RuntimeError::NotFound => ApiError::NotFound("previous response"),
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
    // `store: false` forgets a conversation this request started, never an earlier one.
    let keep = store || !matches!(target, Target::New);
    let request_id = crate::request_id::current();
    let turn = NewTurn {
        content: &conversation.content,
        page: None,
        wait: false,
        request_id: request_id.as_ref(),
        context: &context,
        model: Some(&responses.echo.model),
        parent: None,
    };
    let submission = runtime.submit(user, target, turn).await?;
    let (turn, session) = (submission.turn_id.clone(), submission.session.id.clone());
    // A response the client waits for stops when it goes away, as OpenAI's does; one in
    // the background runs on.
    let mut guard = TurnGuard::new(runtime, user, &turn, &session, !request.background, keep);
    let mut events = runtime.watch_turn(user, &session, &turn, submission.user_seq).await?;
    if let Some(connection) = connection {
        let now = crate::clock::now_ms() / 1000;
        let created = base_object(&turn, now, "queued", &responses.echo);
        let start = ResponseEvents::new().start(submission.user_seq, created);
        let stream = responses.stream(events, connection, start, None, Some(guard));
        return Ok(crate::sse::live(&state, &caller, stream));
    }
    if request.background {
        guard.answered();
        let view = runtime.turn(user, &turn).await?;
        return Ok(JsonResponse(responses.object(&view).await).into_response());
    }
    // Waiting: until the turn ends, or asks for an approval the client must answer.
    while let Some(item) = events.next().await {
        let TurnItem::Event(event) = item else { continue };
        match &event.kind {
            EventKind::ApprovalRequest { .. } => break,
            EventKind::Error { message, code } => {
                guard.answered();
                let (error, message) = (*code, message.clone());
                return Err(ApiError::Turn { error, message, turn_id: turn, session_id: session });
            }
            _ => {}
        }
    }
    guard.answered();
    let view = runtime.turn(user, &turn).await?;
    Ok(JsonResponse(responses.object(&view).await).into_response())
}

/// The approvals a request's `mcp_approval_response` items answer, with their decisions,
/// or `None` if the input holds no such items. Every item is checked before any is
/// decided; a mix with other items is refused.
async fn approval_answers(
    runtime: &Runtime,
    user: &str,
    input: &Value,
) -> Result<Option<Vec<(ApprovalInfo, Decision)>>, ApiError> {
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
    let mut answered = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}].approval_request_id");
        let id = item.get("approval_request_id").and_then(Value::as_str).unwrap_or_default();
        let request_id = id.strip_prefix("mcpr_").unwrap_or(id);
        let approve = item.get("approve").and_then(Value::as_bool).unwrap_or(false);
        let info =
            pending.iter().find(|a| a.request_id == request_id).cloned().ok_or_else(|| {
                ApiError::InvalidParam { param, message: "no such pending approval".into() }
            })?;
        answered.push((info, if approve { Decision::Approve } else { Decision::Deny }));
    }
    Ok(Some(answered))
}

#[utoipa::path(get, path = "/v1/responses/{id}", tag = "openai", params(("id" = String, Path), RetrieveQuery), responses((status = 200, description = "The response, or with `stream=true` its events after `starting_after`", content((Value = "application/json"), (String = "text/event-stream")))))]
pub(super) async fn retrieve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<RetrieveQuery>,
) -> Result<Response, ApiError> {
    let (responses, view) = Responses::find(&state, &caller, &id).await?;
    let (runtime, user, turn) = (&state.runtime, &caller.user, view.record.id.as_str());
    if !query.stream {
        return Ok(JsonResponse(responses.object(&view).await).into_response());
    }
    let connection = state.connections.open(user, "openai").await?;
    let user_seq = view.record.user_seq.max(0) as u64;
    let events = runtime.watch_turn(user, &view.record.session_id, turn, user_seq).await?;
    let created = base_object(turn, view.record.created_at / 1000, "queued", &responses.echo);
    let start = ResponseEvents::new().start(user_seq, created);
    let stream = responses.stream(events, connection, start, query.starting_after, None);
    Ok(crate::sse::live(&state, &caller, stream))
}

#[utoipa::path(post, path = "/v1/responses/{id}/cancel", tag = "openai", params(("id" = String, Path)), responses((status = 200, body = Value)))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<JsonResponse<Value>, ApiError> {
    let (responses, view) = Responses::find(&state, &caller, &id).await?;
    let (runtime, user, turn) = (&state.runtime, &caller.user, view.record.id.as_str());
    if view.record.status.finished() {
        return Ok(JsonResponse(responses.object(&view).await));
    }
    // Watch first, so the turn's end is seen however soon it comes.
    let (session, user_seq) = (&view.record.session_id, view.record.user_seq.max(0) as u64);
    let mut events = runtime.watch_turn(user, session, turn, user_seq).await?;
    if runtime.cancel_turn(user, turn).await {
        // The turn stops within a second; the answer says how far it got meanwhile.
        let ended = async { while events.next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(5), ended).await;
    }
    let view = runtime.turn(user, turn).await?;
    Ok(JsonResponse(responses.object(&view).await))
}

/// Streams responses of one user.
struct Responses {
    runtime: Runtime,
    user: String,
    echo: Echo,
}

impl Responses {
    /// The caller's response `id`, as stored, to read or act on.
    async fn find(
        state: &AppState,
        caller: &Caller,
        id: &str,
    ) -> Result<(Self, TurnView), ApiError> {
        let turn = turn_id(id).ok_or(ApiError::NotFound("response"))?;
        let runtime = &state.runtime;
        let view = runtime.turn(&caller.user, turn).await?;
        let model = view.record.model.clone();
        let model = model.unwrap_or_else(|| runtime.models().default_id().to_owned());
        let echo = Echo { model, store: true, ..Echo::default() };
        Ok((Self { runtime: runtime.clone(), user: caller.user.clone(), echo }, view))
    }

    /// A stored turn's `response` object, with the approvals it waits for.
    async fn object(&self, view: &TurnView) -> Value {
        let pending: Vec<ApprovalInfo> = if view.record.status.finished() {
            Vec::new()
        } else {
            let mut all = self.runtime.approvals(&self.user).await;
            all.retain(|a| a.turn_id == view.record.id);
            all
        };
        response_object(view, &self.echo, &pending)
    }

    /// The SSE events of a turn's response: `start` first, then its mapped events, those
    /// numbered at most `after` skipped. The guard (if any) lives as long as the stream.
    fn stream(
        self,
        events: TurnWatch,
        connection: ConnectionCount,
        start: Vec<Mapped>,
        after: Option<u64>,
        guard: Option<TurnGuard>,
    ) -> impl futures_util::Stream<Item = axum::response::sse::Event> + Send + 'static {
        let keep = move |(number, _): &Mapped| after.is_none_or(|after| *number > after);
        let start: Vec<_> = start.into_iter().filter(keep).map(sse_event).collect();
        let state = (self, events, ResponseEvents::new(), guard, connection, false);
        let rest = stream::unfold(
            state,
            move |(responses, mut events, mut mapper, mut guard, connection, done)| async move {
                if done {
                    return None;
                }
                let Some(item) = events.next().await else {
                    if let Some(guard) = &mut guard {
                        guard.answered();
                    }
                    return None;
                };
                let (mapped, ended) = match &item {
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
                            let turn = event.turn_id.as_deref().unwrap_or_default();
                            numbered.push((number, responses.last(turn, ending).await));
                        }
                        (numbered, ending.is_some())
                    }
                    TurnItem::Resync { .. } => (Vec::new(), false),
                    TurnItem::Lost => {
                        let message = "the session's events can no longer be followed; \
                                       the response goes on: retrieve it later";
                        let error =
                            json!({"type": "error", "code": "STREAM_LOST", "message": message});
                        (vec![(u64::MAX, error)], true)
                    }
                };
                if ended && let Some(guard) = &mut guard {
                    guard.answered();
                }
                let sse: Vec<_> = mapped.into_iter().filter(keep).map(sse_event).collect();
                let next = (responses, events, mapper, guard, connection, ended);
                Some((stream::iter(sse), next))
            },
        );
        stream::iter(start).chain(rest.flatten())
    }

    /// The event that ends a response: its final object as stored.
    async fn last(&self, turn: &str, ending: Ending) -> Value {
        if ending == Ending::Deleted {
            let message = "the conversation was deleted";
            return json!({"type": "error", "code": "NOT_FOUND", "message": message});
        }
        match self.runtime.turn(&self.user, turn).await {
            Ok(view) => json!({"type": ending.event_type(), "response": self.object(&view).await}),
            Err(err) => {
                tracing::warn!(%err, "reading a finished response failed");
                let message = "the response could not be read";
                json!({"type": "error", "code": "INTERNAL_ERROR", "message": message})
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
