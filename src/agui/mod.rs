//! AG-UI (the Agent-User Interaction protocol) at `POST /api/ag-ui`: a `RunAgentInput` in,
//! the run's events out as SSE. A thread is a Parley session and a run is a turn. A tool
//! call waiting for approval ends the run with an `interrupt` outcome; the next run's
//! `resume` entries answer it and stream the rest of the same turn. Every event has an SSE
//! `id:`; a request with `Last-Event-ID` resumes its run's stream after it (an extension:
//! AG-UI has no resume of its own). A client that goes away stops its run, unless it
//! comes back within a few seconds.

mod events;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, stream};
use serde::Deserialize;
use serde_json::Value;

use events::{PER_EVENT, Run, RunEnd, RunEvents};

use crate::auth::Caller;
use crate::conversation::{ChatMessage, Role, ToolCall};
use crate::http::extract::Json;
use crate::http::{ApiError, AppState, ConnectionCount};
use crate::runtime::{
    Decision, NewTurn, Runtime, RuntimeError, Target, Watch, WatchItem, valid_session_id,
};

/// How long a run whose client went away keeps going, waiting for it to reconnect.
const DETACH_GRACE: Duration = Duration::from_secs(3);

/// The request body: AG-UI's `RunAgentInput` (its `tools`, `context`, `state` and
/// `forwardedProps` are accepted and ignored: the agent's own tools run).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunAgentInput {
    thread_id: String,
    run_id: String,
    #[serde(default)]
    messages: Vec<InputMessage>,
    #[serde(default)]
    resume: Vec<ResumeEntry>,
}

/// A message of the thread as the client holds it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InputMessage {
    role: String,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    tool_calls: Vec<InputToolCall>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InputToolCall {
    id: String,
    function: InputFunction,
}

#[derive(Debug, Deserialize)]
struct InputFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

/// An answer to an interrupt.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResumeEntry {
    interrupt_id: String,
    status: String,
    #[serde(default)]
    payload: Value,
}

fn invalid(param: String, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, message: message.into() }
}

/// `POST /api/ag-ui`.
pub(crate) async fn run(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(input): Json<RunAgentInput>,
) -> Result<Response, ApiError> {
    if !valid_session_id(&input.thread_id) {
        return Err(invalid("threadId".into(), "threadId must be 1-128 of A-Z a-z 0-9 . _ -"));
    }
    let run = Run { thread_id: input.thread_id.clone(), run_id: input.run_id.clone() };
    let runtime = &state.runtime;
    let user = &caller.user;
    let (turn, after) = if let Some(last) = headers.get("last-event-id") {
        resume_point(last.to_str().unwrap_or_default())?
    } else if !input.resume.is_empty() {
        answer_interrupts(runtime, user, &input.resume).await?
    } else {
        let turn = start_turn(runtime, user, &input).await?;
        (turn, None)
    };
    let view = runtime.turn(user, &turn).await?;
    if view.record.session_id != input.thread_id {
        return Err(ApiError::NotFound("run"));
    }
    let connection = state.connections.open(user).await?;
    let user_seq = view.record.user_seq.max(0) as u64;
    let watching = runtime.watch(user, Some(&run.thread_id), None, Some(user_seq), false).await?;
    let attached = state.agui_runs.attach(runtime, user, &turn);
    let stream = run_stream(watching.watch, run, turn, after, attached, connection);
    let end = futures_util::future::select(
        Box::pin(state.shutdown.clone().cancelled_owned()),
        Box::pin(state.auth.revoked(caller.token_id.clone())),
    );
    let stream = stream.map(Ok::<_, std::convert::Infallible>).take_until(end);
    let keep_alive = Duration::try_from_secs_f64(state.config.stream.sse_keepalive_secs)
        .unwrap_or(Duration::from_secs(15));
    let mut response =
        Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    Ok(response)
}

/// The turn and position a `Last-Event-ID` (`<turn_id>:<n>`) names.
fn resume_point(last: &str) -> Result<(String, Option<u64>), ApiError> {
    let parsed = last.rsplit_once(':').and_then(|(turn, n)| Some((turn, n.parse().ok()?)));
    match parsed {
        Some((turn, n)) if !turn.is_empty() => Ok((turn.to_owned(), Some(n))),
        _ => Err(invalid("Last-Event-ID".into(), "not an event id of this server")),
    }
}

/// Decides the approvals the `resume` entries answer; returns their turn and the point
/// after its (last answered) approval request.
async fn answer_interrupts(
    runtime: &Runtime,
    user: &str,
    entries: &[ResumeEntry],
) -> Result<(String, Option<u64>), ApiError> {
    let pending = runtime.approvals(user).await;
    let mut answered = None;
    for (i, entry) in entries.iter().enumerate() {
        let param = format!("resume[{i}].interruptId");
        let info = pending
            .iter()
            .find(|a| a.request_id == entry.interrupt_id)
            .ok_or_else(|| invalid(param, "no such pending interrupt (answered or expired)"))?;
        let decision = decision(entry).ok_or_else(|| {
            invalid(format!("resume[{i}]"), "status is resolved or cancelled; payload approves")
        })?;
        runtime.decide(user, &entry.interrupt_id, decision).await?;
        answered = Some((info.turn_id.clone(), info.seq));
    }
    let (turn, seq) = answered.ok_or_else(|| invalid("resume".into(), "nothing to resume"))?;
    Ok((turn, Some(seq * PER_EVENT + PER_EVENT - 1)))
}

/// The decision a resume entry carries: `cancelled` denies; `resolved` approves unless its
/// payload says otherwise (`false`, `{"approved": false}` or `{"decision": "deny"}`;
/// `{"decision": "always"}` approves the tool for the rest of the thread).
fn decision(entry: &ResumeEntry) -> Option<Decision> {
    match entry.status.as_str() {
        "cancelled" => return Some(Decision::Deny),
        "resolved" => {}
        _ => return None,
    }
    let approve = |yes: bool| if yes { Decision::Approve } else { Decision::Deny };
    match &entry.payload {
        Value::Null => Some(Decision::Approve),
        Value::Bool(yes) => Some(approve(*yes)),
        Value::Object(fields) => match (fields.get("decision"), fields.get("approved")) {
            (Some(Value::String(d)), _) => match d.as_str() {
                "approve" => Some(Decision::Approve),
                "always" => Some(Decision::Always),
                "deny" => Some(Decision::Deny),
                _ => None,
            },
            (_, Some(Value::Bool(yes))) => Some(approve(*yes)),
            _ => Some(Decision::Approve),
        },
        _ => None,
    }
}

/// Starts the turn the run's last message asks for. A thread new to Parley gives the
/// model the client's earlier messages (not stored); a known one has its history.
async fn start_turn(
    runtime: &Runtime,
    user: &str,
    input: &RunAgentInput,
) -> Result<String, ApiError> {
    let mut messages = Vec::with_capacity(input.messages.len());
    for (i, message) in input.messages.iter().enumerate() {
        messages.extend(chat_message(i, message)?);
    }
    let content = match messages.pop() {
        Some(last) if last.role == Role::User => last.content,
        _ => return Err(invalid("messages".into(), "the last message must be the user's")),
    };
    let known = match runtime.find_session(user, &input.thread_id).await {
        Ok(_) => true,
        Err(RuntimeError::NotFound) => false,
        Err(err) => return Err(err.into()),
    };
    let context = if known { Vec::new() } else { messages };
    let request_id = crate::request_id::current();
    let turn = NewTurn {
        content: &content,
        page: None,
        wait: false,
        request_id: request_id.as_ref(),
        context: &context,
    };
    let submission = runtime.submit(user, Target::Id(&input.thread_id), turn).await?;
    Ok(submission.turn_id)
}

/// One AG-UI message for the model (`None` for the client's display-only reasoning and
/// activity messages); only text content is taken.
fn chat_message(i: usize, message: &InputMessage) -> Result<Option<ChatMessage>, ApiError> {
    let role = match message.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => return Ok(None),
    };
    let content = match &message.content {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => return Err(invalid(format!("messages[{i}].content"), "content must be text")),
    };
    let tool_calls = message
        .tool_calls
        .iter()
        .map(|call| ToolCall {
            id: call.id.clone(),
            name: call.function.name.clone(),
            arguments: call.function.arguments.clone(),
        })
        .collect();
    let tool_call_id = message.tool_call_id.clone();
    Ok(Some(ChatMessage { role, content, tool_calls, tool_call_id }))
}

/// What a run's stream carries along.
struct RunState {
    watch: Watch,
    mapper: RunEvents,
    run: Run,
    turn: String,
    /// Events numbered up to this were sent before (a resumed stream).
    after: Option<u64>,
    /// Whether `RUN_STARTED` went out.
    opened: bool,
    ended: bool,
    attached: Attachment,
    _connection: ConnectionCount,
}

/// The SSE events of a run: its turn's events read from the start (so the mapper knows
/// what is open), those numbered after `after` sent, opened by `RUN_STARTED`.
fn run_stream(
    watch: Watch,
    run: Run,
    turn: String,
    after: Option<u64>,
    attached: Attachment,
    connection: ConnectionCount,
) -> impl futures_util::Stream<Item = SseEvent> + Send + 'static {
    let state = RunState {
        watch,
        mapper: RunEvents::default(),
        run,
        turn,
        after,
        opened: false,
        ended: false,
        attached,
        _connection: connection,
    };
    stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        let mut out: Vec<SseEvent> = Vec::new();
        while out.is_empty() && !state.ended {
            let event = match state.watch.next().await {
                WatchItem::Event(event) => event,
                // Lost events cannot be told again in AG-UI: the run goes on from here.
                WatchItem::Resync { .. } => continue,
                WatchItem::Closed => return None,
            };
            let ours = event.turn_id.as_deref() == Some(state.turn.as_str())
                || matches!(event.kind, crate::runtime::EventKind::SessionDeleted);
            if !ours {
                continue;
            }
            let base = event.seq * PER_EVENT;
            let opening = if state.opened { Vec::new() } else { state.mapper.opening(&state.run) };
            let (mapped, end) = state.mapper.map(&state.run, &event);
            let count = mapped.len() as u64;
            let fresh = |n: u64| state.after.is_none_or(|after| n > after);
            match end {
                // An ending this stream sends ends it; one sent before either ended the
                // turn (nothing more comes) or was an interrupt answered since (go on).
                Some(RunEnd::Interrupted) if !fresh(base + count - 1) => {}
                Some(_) => state.ended = true,
                None => {}
            }
            let numbered: Vec<(u64, Value)> = mapped
                .into_iter()
                .enumerate()
                .map(|(k, v)| (base + k as u64, v))
                .filter(|(n, _)| fresh(*n))
                .collect();
            if !state.opened && !numbered.is_empty() {
                // RUN_STARTED (and what was open at that point) just before the first
                // event this stream sends.
                state.opened = true;
                let id = state.after.unwrap_or(base.saturating_sub(1));
                out.extend(opening.into_iter().map(|v| sse(&state.turn, id, &v)));
            }
            out.extend(numbered.iter().map(|(n, v)| sse(&state.turn, *n, v)));
        }
        if state.ended {
            state.attached.ended();
        }
        Some((stream::iter(out), state))
    })
    .flatten()
}

fn sse(turn: &str, number: u64, value: &Value) -> SseEvent {
    SseEvent::default().id(format!("{turn}:{number}")).data(value.to_string())
}

/// The AG-UI streams attached to each turn on this node, so a run whose client went
/// away is stopped only if nobody reconnected to it meanwhile.
#[derive(Default)]
pub struct Attached {
    turns: Mutex<HashMap<String, usize>>,
}

impl Attached {
    fn attach(self: &Arc<Self>, runtime: &Runtime, user: &str, turn: &str) -> Attachment {
        *self
            .turns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(turn.to_owned())
            .or_default() += 1;
        Attachment {
            runs: self.clone(),
            runtime: runtime.clone(),
            user: user.to_owned(),
            turn: turn.to_owned(),
            ended: false,
        }
    }

    /// Detaches one stream of `turn`; returns whether none is left.
    fn detach(&self, turn: &str) -> bool {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        let Some(count) = turns.get_mut(turn) else {
            return true;
        };
        *count -= 1;
        if *count == 0 {
            turns.remove(turn);
            return true;
        }
        false
    }

    fn attached(&self, turn: &str) -> bool {
        self.turns.lock().unwrap_or_else(|e| e.into_inner()).contains_key(turn)
    }
}

/// One stream's hold on its turn: dropped before the run ended (the client went away),
/// it stops the turn after [`DETACH_GRACE`] unless another stream attached.
struct Attachment {
    runs: Arc<Attached>,
    runtime: Runtime,
    user: String,
    turn: String,
    ended: bool,
}

impl Attachment {
    /// The run ended (done, failed, cancelled, or interrupted for an approval).
    fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let last = self.runs.detach(&self.turn);
        if self.ended || !last {
            return;
        }
        let (runs, runtime) = (self.runs.clone(), self.runtime.clone());
        let (user, turn) = (self.user.clone(), self.turn.clone());
        tokio::spawn(async move {
            tokio::time::sleep(DETACH_GRACE).await;
            if !runs.attached(&turn) && runtime.cancel_turn(&user, &turn).await {
                tracing::info!(turn_id = %turn, "the AG-UI client went away: its run is stopped");
            }
        });
    }
}
