//! `POST /v1/chat/completions`: a turn answered as a `chat.completion`, or streamed as
//! `chat.completion.chunk`s ending in `[DONE]`. The content is what the model said to the
//! user; tool activity travels in the `parley` extension field, which SDKs ignore.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::input::{self, InputMessage};
use super::{TurnGuard, data_event, model_name, named_session, stream_error, unix_now};
use crate::auth::Caller;
use crate::http::ConnectionCount;
use crate::http::extract::Json;
use crate::http::{ApiError, AppState};
use crate::runtime::{EventKind, NewTurn, Target, TurnItem, TurnView, TurnWatch, ends_turn};
use crate::store::{TurnRecord, TurnStatus};

/// The request body (fields Parley does not use are accepted and ignored: `temperature`,
/// `tools` — the agent's own tools run — and the like).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct ChatCompletionRequest {
    messages: Vec<InputMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// `false`: a stateless request's session is deleted once answered.
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    n: Option<u32>,
    /// One of `/v1/models` (none: the default).
    #[serde(default)]
    model: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = ChatCompletionRequest, params(("X-Session-Id" = Option<String>, Header, description = "Run in this Parley session")), responses((status = 200, description = "A chat.completion, or with `stream` its chunks as SSE ending in [DONE]", content((Value = "application/json"), (String = "text/event-stream")))))]
pub(super) async fn completions(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(request): Json<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::InvalidParam {
            param: "n".into(),
            message: "only one choice (n = 1) is supported".into(),
        });
    }
    let session = named_session(&headers, request.metadata.as_ref(), request.user.as_deref())?;
    let conversation = input::from_messages(&request.messages)?;
    // With a session, Parley keeps the history: the request's earlier messages are what
    // the client remembers of it, not news for the model.
    let stateless = session.is_none();
    let context = if stateless { conversation.context } else { Vec::new() };
    let target = session.as_deref().map_or(Target::New, Target::Id);
    let request_id = crate::request_id::current();
    let runtime = &state.runtime;
    let model = model_name(runtime, request.model.as_deref())?;
    let turn = NewTurn {
        content: &conversation.content,
        page: None,
        wait: !request.stream,
        request_id: request_id.as_ref(),
        context: &context,
        model: Some(&model),
        parent: None,
    };
    // A stream counts among the caller's connections: refused before anything is queued.
    let connection = if request.stream {
        Some(state.connections.open(&caller.user, "openai").await?)
    } else {
        None
    };
    let submission = runtime.submit(&caller.user, target, turn).await?;
    let keep = !stateless || request.store != Some(false);
    let session_id = submission.session.id.clone();
    let mut guard =
        TurnGuard::new(runtime, &caller.user, &submission.turn_id, &session_id, stateless, keep);
    let id = format!("chatcmpl-{}", submission.turn_id);
    if let Some(connection) = connection {
        let (user, turn) = (&caller.user, &submission.turn_id);
        let events = runtime.watch_turn(user, &session_id, turn, submission.user_seq).await?;
        let chunks = Chunks {
            id,
            created: unix_now(),
            model: model.clone(),
            session_id,
            turn_id: submission.turn_id,
            include_usage: request.stream_options.unwrap_or_default().include_usage,
            sent_text: false,
            new_step: false,
        };
        let stream = stream_chunks(events, chunks, guard, connection);
        return Ok(crate::sse::live(&state, &caller, stream));
    }
    let outcome = crate::http::chat::finished(submission).await?;
    if let Some((error, message)) = outcome.error {
        guard.answered();
        return Err(ApiError::Turn { error, message, turn_id: outcome.turn_id, session_id });
    }
    let view = runtime.turn(&caller.user, &outcome.turn_id).await?;
    guard.answered();
    let model = outcome.model.unwrap_or(model);
    Ok(JsonResponse(completion(&id, &model, &view)).into_response())
}

/// The whole answer of a finished turn.
fn completion(id: &str, model: &str, view: &TurnView) -> Value {
    let content = answer_text(view);
    let record = &view.record;
    json!({
        "id": id,
        "object": "chat.completion",
        "created": record.created_at / 1000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "finish_reason": "stop",
            "logprobs": null,
        }],
        "usage": usage(record),
        "parley": summary(view),
    })
}

/// What the model said to the user in a turn: each step's text, a blank line between.
fn answer_text(view: &TurnView) -> String {
    let texts = view
        .messages
        .iter()
        .filter(|m| m.role == crate::conversation::Role::Assistant && !m.content.is_empty());
    texts.map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n\n")
}

fn usage(record: &TurnRecord) -> Value {
    chat_usage(&record.usage)
}

/// Usage in Chat Completions' shape, with `cost` when the model has prices.
fn chat_usage(usage: &crate::conversation::Usage) -> Value {
    let mut value = json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    });
    if let Some(cost) = usage.cost {
        value["cost"] = json!(cost);
    }
    value
}

/// The `parley` extension of a completion: where the turn lives and what its tools did.
fn summary(view: &TurnView) -> Value {
    let tool_calls: Vec<Value> = view
        .tool_calls
        .iter()
        .map(|call| {
            json!({
                "id": call.id,
                "name": call.name,
                "args": serde_json::from_str::<Value>(&call.args)
                    .unwrap_or_else(|_| Value::String(call.args.clone())),
                "output": call.output,
                "is_error": call.is_error,
                "duration_ms": call.duration_ms,
            })
        })
        .collect();
    let record = &view.record;
    json!({
        "session_id": record.session_id,
        "turn_id": record.id,
        "status": record.status.as_str(),
        "tool_calls": tool_calls,
    })
}

/// Maps a turn's events to chunks.
struct Chunks {
    id: String,
    created: u64,
    model: String,
    session_id: String,
    turn_id: String,
    include_usage: bool,
    /// Whether any text went out yet.
    sent_text: bool,
    /// Whether a step with tool calls ended since the last text: the next text is a new
    /// paragraph.
    new_step: bool,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Map<String, Value> {
        let mut chunk = Map::new();
        chunk.insert("id".into(), json!(self.id));
        chunk.insert("object".into(), json!("chat.completion.chunk"));
        chunk.insert("created".into(), json!(self.created));
        chunk.insert("model".into(), json!(self.model));
        chunk.insert(
            "choices".into(),
            json!([{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": null}]),
        );
        chunk
    }

    /// A chunk with no content carrying one event of tool activity.
    fn activity(&self, event: &[u8]) -> Value {
        let mut chunk = self.chunk(json!({}), None);
        let event: Value = serde_json::from_slice(event).unwrap_or(Value::Null);
        chunk.insert("parley".into(), event);
        Value::Object(chunk)
    }

    fn first(&self) -> Value {
        Value::Object(self.chunk(json!({"role": "assistant", "content": ""}), None))
    }

    /// The chunks (JSON values; `None` stands for `[DONE]`) one event becomes.
    fn map(&mut self, item: &TurnItem) -> Vec<Option<Value>> {
        let event = match item {
            TurnItem::Event(event) => event,
            TurnItem::Resync { .. } => {
                let resync = json!({"type": "resync", "session_id": self.session_id});
                return vec![Some(self.activity(resync.to_string().as_bytes()))];
            }
            TurnItem::Lost => return vec![Some(lost(&self.session_id))],
        };
        match &event.kind {
            EventKind::Chunk { content } => {
                let mut text = String::with_capacity(content.len() + 2);
                if self.new_step && self.sent_text {
                    text.push_str("\n\n");
                }
                self.new_step = false;
                self.sent_text = true;
                text.push_str(content);
                vec![Some(Value::Object(self.chunk(json!({"content": text}), None)))]
            }
            EventKind::Thinking { content } => {
                let delta = json!({"reasoning_content": content});
                vec![Some(Value::Object(self.chunk(delta, None)))]
            }
            EventKind::ChunkReset => {
                self.new_step = true;
                Vec::new()
            }
            EventKind::ToolCall { .. }
            | EventKind::ToolResult { .. }
            | EventKind::ApprovalRequest { .. }
            | EventKind::ApprovalResolved { .. }
            | EventKind::ApprovalExpired { .. } => vec![Some(self.activity(&event.json))],
            EventKind::Done { usage, model, tool_calls, .. } => {
                if let Some(model) = model {
                    self.model.clone_from(model);
                }
                let mut last = self.chunk(json!({}), Some("stop"));
                let summary = json!({
                    "session_id": self.session_id,
                    "turn_id": self.turn_id,
                    "status": TurnStatus::Done.as_str(),
                    "tool_calls": tool_calls,
                });
                last.insert("parley".into(), summary);
                let mut out = vec![Some(Value::Object(last))];
                if self.include_usage {
                    let mut chunk = self.chunk(json!({}), None);
                    chunk.insert("choices".into(), json!([]));
                    chunk.insert("usage".into(), chat_usage(usage));
                    out.push(Some(Value::Object(chunk)));
                }
                out.push(None);
                out
            }
            EventKind::Cancelled { .. } => {
                let mut last = self.chunk(json!({}), Some("stop"));
                let summary = json!({
                    "session_id": self.session_id,
                    "turn_id": self.turn_id,
                    "status": TurnStatus::Cancelled.as_str(),
                });
                last.insert("parley".into(), summary);
                vec![Some(Value::Object(last)), None]
            }
            EventKind::Error { message, code } => {
                vec![Some(stream_error(code.code(), message))]
            }
            EventKind::SessionDeleted => {
                vec![Some(stream_error("NOT_FOUND", "the session was deleted"))]
            }
            _ => Vec::new(),
        }
    }
}

/// The error that ends a stream whose session's events can no longer be followed.
pub(super) fn lost(session_id: &str) -> Value {
    let message = format!(
        "the session's events can no longer be followed; the turn goes on: read it with \
         GET /api/sessions/{session_id}"
    );
    stream_error("STREAM_LOST", &message)
}

/// The SSE events of a streamed completion. The guard lives as long as the stream: a
/// client that goes away mid-answer drops it.
fn stream_chunks(
    events: TurnWatch,
    chunks: Chunks,
    guard: TurnGuard,
    connection: ConnectionCount,
) -> impl futures_util::Stream<Item = axum::response::sse::Event> + Send + 'static {
    let first = chunks.first();
    let rest = stream::unfold(
        (events, chunks, guard, false, connection),
        |(mut events, mut chunks, mut guard, done, connection)| async move {
            if done {
                return None;
            }
            let Some(item) = events.next().await else {
                guard.answered();
                return None;
            };
            let mapped = chunks.map(&item);
            let last = match &item {
                TurnItem::Event(event) => ends_turn(&event.kind),
                TurnItem::Lost => true,
                TurnItem::Resync { .. } => false,
            };
            if last {
                guard.answered();
            }
            let sse: Vec<_> = mapped
                .into_iter()
                .map(|chunk| match chunk {
                    Some(value) => data_event(&value),
                    None => axum::response::sse::Event::default().data("[DONE]"),
                })
                .collect();
            Some((stream::iter(sse), (events, chunks, guard, last, connection)))
        },
    );
    stream::once(async move { data_event(&first) }).chain(rest.flatten())
}
