//! AG-UI (the Agent-User Interaction protocol) at `POST /api/ag-ui`: a `RunAgentInput` in,
//! the run's events out as SSE. A thread is a Parley session and a run is a turn. A tool
//! call waiting for approval ends the run with an `interrupt` outcome; the next run's
//! `resume` entries answer it and stream the rest of the same turn. Every event has an SSE
//! `id:`; a request with `Last-Event-ID` resumes its run's stream after it (an extension:
//! AG-UI has no resume of its own). A client that goes away stops its run, unless it
//! comes back within a few seconds.

mod attach;
mod events;
mod input;
mod stream;

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

pub use attach::Attached;
use events::{PER_EVENT, Run};
use input::{InputMessage, ResumeEntry, chat_message, decision};

use crate::auth::Caller;
use crate::conversation::Role;
use crate::http::extract::Json;
use crate::http::{ApiError, AppState};
use crate::runtime::{Decision, NewTurn, Runtime, RuntimeError, Target, valid_session_id};

/// `POST /api/ag-ui` in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(run))]
pub(crate) struct AgUiApi;

/// How long a run whose client went away keeps going, waiting for it to reconnect.
const DETACH_GRACE: Duration = Duration::from_secs(3);

/// The request body: AG-UI's `RunAgentInput` (its `tools`, `context` and `state` are
/// accepted and ignored: the agent's own tools run; of `forwardedProps`, `model` picks the
/// model).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunAgentInput {
    thread_id: String,
    run_id: String,
    messages: Vec<InputMessage>,
    #[serde(default)]
    resume: Vec<ResumeEntry>,
    #[serde(default)]
    forwarded_props: Option<serde_json::Value>,
}

fn invalid(param: String, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, message: message.into() }
}

/// `POST /api/ag-ui`.
#[utoipa::path(post, path = "/api/ag-ui", tag = "ag-ui", request_body = RunAgentInput, responses((status = 200, description = "AG-UI events as SSE", content_type = "text/event-stream")))]
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
    let resuming = match headers.get("last-event-id") {
        Some(last) => Some(resume_point(last.to_str().unwrap_or_default())?),
        None => None,
    };
    let answers = match resuming {
        None if !input.resume.is_empty() => Some(interrupt_answers(runtime, user, &input).await?),
        _ => None,
    };
    // Everything is checked: the stream is counted before anything is decided or queued.
    let connection = state.connections.open(user, "ag-ui").await?;
    let (turn, after) = if let Some((turn, after)) = resuming {
        (turn, Some(after))
    } else if let Some((turn, after, answers)) = answers {
        for (request_id, decision) in answers {
            runtime.decide(user, &request_id, decision).await?;
        }
        (turn, Some(after))
    } else {
        (start_turn(runtime, user, &input).await?, None)
    };
    let view = runtime.turn(user, &turn).await?;
    if view.record.session_id != input.thread_id {
        return Err(ApiError::NotFound("run"));
    }
    let user_seq = view.record.user_seq.max(0) as u64;
    let events = runtime.watch_turn(user, &run.thread_id, &turn, user_seq).await?;
    let attached = state.agui_runs.attach(runtime, user, &turn);
    let stream = stream::run_stream(events, run, turn, after, attached, connection);
    Ok(crate::sse::live(&state, &caller, stream))
}

/// The turn and position a `Last-Event-ID` (`<turn_id>:<n>`) names.
fn resume_point(last: &str) -> Result<(String, u64), ApiError> {
    let parsed = last.rsplit_once(':').and_then(|(turn, n)| Some((turn, n.parse().ok()?)));
    match parsed {
        Some((turn, n)) if !turn.is_empty() => Ok((turn.to_owned(), n)),
        _ => Err(invalid("Last-Event-ID".into(), "not an event id of this server")),
    }
}

/// The approvals the `resume` entries answer, checked (each pending, in this thread, with
/// a decision) before any is decided; with their turn and the point after the last one.
async fn interrupt_answers(
    runtime: &Runtime,
    user: &str,
    input: &RunAgentInput,
) -> Result<(String, u64, Vec<(String, Decision)>), ApiError> {
    let pending = runtime.approvals(user).await;
    let mut answers = Vec::with_capacity(input.resume.len());
    let mut last = None;
    for (i, entry) in input.resume.iter().enumerate() {
        let param = format!("resume[{i}].interruptId");
        let info = pending
            .iter()
            .find(|a| a.request_id == entry.interrupt_id && a.session_id == input.thread_id)
            .ok_or_else(|| invalid(param, "no such pending interrupt in this thread"))?;
        let decision = decision(entry).ok_or_else(|| {
            invalid(format!("resume[{i}]"), "status is resolved or cancelled; payload approves")
        })?;
        answers.push((info.request_id.clone(), decision));
        last = Some((info.turn_id.clone(), info.seq));
    }
    let (turn, seq) = last.ok_or_else(|| invalid("resume".into(), "nothing to resume"))?;
    Ok((turn, seq * PER_EVENT + PER_EVENT - 1, answers))
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
        model: input
            .forwarded_props
            .as_ref()
            .and_then(|props| props.get("model"))
            .and_then(serde_json::Value::as_str),
        parent: None,
    };
    let submission = runtime.submit(user, Target::Id(&input.thread_id), turn).await?;
    Ok(submission.turn_id)
}
