//! A fake OpenAI-compatible provider: an axum server that answers each
//! `POST /v1/chat/completions` with the next scripted reply, streamed chunk by chunk, and
//! records every request body. With no script left it echoes the last user message.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Value, json};

/// One piece of a scripted reply.
#[derive(Debug, Clone)]
pub enum Step {
    /// An SSE `data:` event with this JSON.
    Chunk(Value),
    /// Raw bytes, sent as they are.
    Raw(&'static str),
    /// Bytes made at run time, sent as they are (a stream cut into arbitrary pieces).
    Bytes(Vec<u8>),
    /// A pause.
    Delay(Duration),
    /// A wait until the test opens the gate (`notify_one`; opened early, it does not wait).
    Gate(Arc<tokio::sync::Notify>),
    /// Drop the connection without finishing the stream.
    Cut,
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub enum Script {
    /// An SSE stream of these steps.
    Stream(Vec<Step>),
    /// A plain HTTP response.
    Status { status: u16, retry_after: Option<&'static str>, body: Value },
    /// Wait this long before sending the headers of the next script.
    Slow(Duration, Box<Script>),
}

fn text_chunk(text: &str) -> Step {
    Step::Chunk(
        json!({"model": "fake-model", "choices": [{"index": 0, "delta": {"content": text}}]}),
    )
}

fn finish(reason: &str) -> Vec<Step> {
    vec![
        Step::Chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})),
        Step::Chunk(
            json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}),
        ),
        Step::Raw("data: [DONE]\n\n"),
    ]
}

impl Script {
    /// Streams `parts` as text chunks, then stops.
    pub fn text(parts: &[&str]) -> Self {
        let mut steps: Vec<Step> = parts.iter().map(|p| text_chunk(p)).collect();
        steps.extend(finish("stop"));
        Script::Stream(steps)
    }

    /// Streams `parts` with `pause` before each one.
    pub fn slow_text(parts: &[&str], pause: Duration) -> Self {
        let mut steps = Vec::new();
        for part in parts {
            steps.push(Step::Delay(pause));
            steps.push(text_chunk(part));
        }
        steps.extend(finish("stop"));
        Script::Stream(steps)
    }

    /// Streams `before`, waits for `gate` to open, then streams `after`.
    pub fn gated_text(before: &[&str], gate: Arc<tokio::sync::Notify>, after: &[&str]) -> Self {
        let mut steps: Vec<Step> = before.iter().map(|p| text_chunk(p)).collect();
        steps.push(Step::Gate(gate));
        steps.extend(after.iter().map(|p| text_chunk(p)));
        steps.extend(finish("stop"));
        Script::Stream(steps)
    }

    /// One tool call whose arguments arrive in `pieces` fragments; the id and name only
    /// on the first fragment, and no `index` at all (as some servers send it).
    pub fn tool_call(id: &str, name: &str, arguments: Value, pieces: usize) -> Self {
        let text = arguments.to_string();
        let size = text.len().div_ceil(pieces.max(1));
        let mut steps = vec![text_chunk("Let me check. ")];
        let chars: Vec<char> = text.chars().collect();
        for (i, piece) in chars.chunks(size.max(1)).enumerate() {
            let piece: String = piece.iter().collect();
            let call = if i == 0 {
                json!({"id": id, "type": "function", "function": {"name": name, "arguments": piece}})
            } else {
                json!({"function": {"arguments": piece}})
            };
            steps.push(Step::Chunk(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}),
            ));
        }
        steps.extend(finish("tool_calls"));
        Script::Stream(steps)
    }

    /// A script from JSON, for tests driven from outside Rust (the browser tests):
    /// `{"text": [...], "delay_ms": N}`, `{"tool_call": {"id", "name", "args"}}` or
    /// `{"status": N, "message": "..."}`.
    pub fn from_json(value: &Value) -> Option<Self> {
        if let Some(parts) = value.get("text").and_then(Value::as_array) {
            let parts: Vec<&str> = parts.iter().filter_map(Value::as_str).collect();
            let delay = Duration::from_millis(value["delay_ms"].as_u64().unwrap_or(0));
            return Some(Script::slow_text(&parts, delay));
        }
        if let Some(call) = value.get("tool_call") {
            return Some(Script::tool_call(
                call["id"].as_str()?,
                call["name"].as_str()?,
                call["args"].clone(),
                2,
            ));
        }
        let status = value.get("status")?.as_u64()? as u16;
        Some(Script::status(status, value["message"].as_str().unwrap_or("error")))
    }

    /// A plain error response.
    pub fn status(status: u16, message: &str) -> Self {
        Script::Status { status, retry_after: None, body: json!({"error": {"message": message}}) }
    }
}

#[derive(Default)]
pub(super) struct Shared {
    pub(super) scripts: VecDeque<Script>,
    pub(super) requests: Vec<Value>,
    /// The `x-api-key` and `anthropic-version` headers of each Messages request.
    pub(super) anthropic_headers: Vec<(Option<String>, Option<String>)>,
    /// Pause before each part of the default echo answer.
    echo_pause: Duration,
    /// Streams whose client went away before their end.
    abandoned: usize,
}

/// A running fake provider.
#[derive(Clone)]
pub struct FakeProvider {
    shared: Arc<Mutex<Shared>>,
    pub addr: SocketAddr,
}

impl FakeProvider {
    /// Starts the fake on a free port.
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/v1/messages", post(super::fake_anthropic::messages))
            .route("/control/scripts", post(control))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { shared, addr }
    }

    /// The base URL to configure, including `/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues replies, answered in order.
    pub fn push(&self, scripts: impl IntoIterator<Item = Script>) {
        self.shared.lock().unwrap().scripts.extend(scripts);
    }

    /// Makes the default echo answer stream slowly, in `parts` pieces `pause` apart.
    pub fn slow_echo(&self, pause: Duration) {
        self.shared.lock().unwrap().echo_pause = pause;
    }

    /// How many streamed replies the client dropped before their end (the provider
    /// request was cancelled).
    pub fn abandoned(&self) -> usize {
        self.shared.lock().unwrap().abandoned
    }

    /// The request bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// The `x-api-key` and `anthropic-version` of each Messages request so far.
    pub fn anthropic_headers(&self) -> Vec<(Option<String>, Option<String>)> {
        self.shared.lock().unwrap().anthropic_headers.clone()
    }
}

async fn complete(State(shared): State<Arc<Mutex<Shared>>>, Json(body): Json<Value>) -> Response {
    let (script, pause) = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(body.clone());
        (shared.scripts.pop_front(), shared.echo_pause)
    };
    let script = script.unwrap_or_else(|| {
        let last_user = body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_owned();
        if pause.is_zero() {
            Script::text(&["echo: ", &last_user])
        } else {
            Script::slow_text(&["echo", ": ", "..", ".", " ", &last_user], pause)
        }
    });
    respond(script, shared).await
}

/// Queues scripts given as JSON.
async fn control(
    State(shared): State<Arc<Mutex<Shared>>>,
    Json(body): Json<Vec<Value>>,
) -> StatusCode {
    let scripts: Option<Vec<Script>> = body.iter().map(Script::from_json).collect();
    match scripts {
        Some(scripts) => {
            shared.lock().unwrap().scripts.extend(scripts);
            StatusCode::OK
        }
        None => StatusCode::BAD_REQUEST,
    }
}

/// Counts a stream dropped before its end as abandoned.
struct EndWatch {
    shared: Arc<Mutex<Shared>>,
    ended: bool,
}

impl EndWatch {
    /// The stream ended on the provider's side (finished or cut by the script).
    fn end(&mut self) {
        self.ended = true;
    }
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.lock().unwrap().abandoned += 1;
        }
    }
}

pub(super) async fn respond(script: Script, shared: Arc<Mutex<Shared>>) -> Response {
    match script {
        Script::Slow(pause, next) => {
            tokio::time::sleep(pause).await;
            Box::pin(respond(*next, shared)).await
        }
        Script::Status { status, retry_after, body } => {
            let mut response = (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
            if let Some(after) = retry_after {
                response.headers_mut().insert(header::RETRY_AFTER, after.parse().unwrap());
            }
            response
        }
        Script::Stream(steps) => {
            let watch = EndWatch { shared, ended: false };
            let state = (steps.into_iter(), watch);
            let stream = futures_util::stream::unfold(state, |(mut steps, mut watch)| async move {
                loop {
                    let Some(step) = steps.next() else {
                        watch.end();
                        return None;
                    };
                    match step {
                        Step::Delay(pause) => tokio::time::sleep(pause).await,
                        Step::Gate(gate) => gate.notified().await,
                        Step::Chunk(value) => {
                            let bytes = Bytes::from(format!("data: {value}\n\n"));
                            return Some((Ok(bytes), (steps, watch)));
                        }
                        Step::Raw(text) => {
                            let bytes = Bytes::from_static(text.as_bytes());
                            return Some((Ok(bytes), (steps, watch)));
                        }
                        Step::Bytes(text) => return Some((Ok(Bytes::from(text)), (steps, watch))),
                        Step::Cut => {
                            watch.end();
                            let err = std::io::Error::other("cut");
                            return Some((Err(err), (steps, watch)));
                        }
                    }
                }
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}
