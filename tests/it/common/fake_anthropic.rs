//! The fake provider's Anthropic side: `POST /v1/messages` answers with the next scripted
//! reply (shared with the OpenAI side's queue) streamed as the Messages API streams it,
//! records the body and the `x-api-key` / `anthropic-version` headers, and with no script
//! left echoes the last user text.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::fake_provider::{Script, Shared, Step, respond};

/// Scripts in the Messages API's stream format.
pub struct Anthropic;

impl Anthropic {
    /// Events as an SSE stream, cut into `piece`-byte pieces (anywhere: inside a line, a
    /// JSON value or a character's bytes are kept whole only by chance).
    pub fn stream(events: &[Value], piece: usize) -> Script {
        let mut text = String::new();
        for event in events {
            let kind = event["type"].as_str().unwrap_or("message");
            text.push_str(&format!("event: {kind}\ndata: {event}\n\n"));
        }
        let bytes = text.into_bytes();
        let steps = bytes.chunks(piece.max(1)).map(|chunk| Step::Bytes(chunk.to_vec())).collect();
        Script::Stream(steps)
    }

    fn start() -> Value {
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-fake", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4, "output_tokens": 1}}})
    }

    fn stop(reason: &str) -> [Value; 2] {
        [
            json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ]
    }

    fn text_block(index: u64, parts: &[&str]) -> Vec<Value> {
        let mut events = vec![
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        ];
        for part in parts {
            events.push(json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": part}}));
            events.push(json!({"type": "ping"}));
        }
        events.push(json!({"type": "content_block_stop", "index": index}));
        events
    }

    /// A text answer in `parts`.
    pub fn text(parts: &[&str]) -> Script {
        let mut events = vec![Self::start()];
        events.extend(Self::text_block(0, parts));
        events.extend(Self::stop("end_turn"));
        Self::stream(&events, 7)
    }

    /// Thinking, then a text answer.
    pub fn thinking(thinking: &[&str], text: &str) -> Script {
        let mut events = vec![Self::start()];
        events.push(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}));
        for part in thinking {
            events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": part}}));
        }
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}}));
        events.push(json!({"type": "content_block_stop", "index": 0}));
        events.extend(Self::text_block(1, &[text]));
        events.extend(Self::stop("end_turn"));
        Self::stream(&events, 5)
    }

    /// Some text, then one tool call whose input arrives in `pieces` JSON fragments.
    pub fn tool_use(id: &str, name: &str, input: Value, pieces: usize) -> Script {
        let mut events = vec![Self::start()];
        events.extend(Self::text_block(0, &["Let me check."]));
        events.push(json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}));
        let text = input.to_string();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(text.len().div_ceil(pieces.max(1)).max(1)) {
            let fragment: String = piece.iter().collect();
            events.push(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": fragment}}));
        }
        events.push(json!({"type": "content_block_stop", "index": 1}));
        events.extend(Self::stop("tool_use"));
        Self::stream(&events, 11)
    }

    /// Signed thinking, then one tool call (as a model thinking with tools answers).
    pub fn thinking_tool_use(thinking: &str, id: &str, name: &str, input: Value) -> Script {
        let mut events = vec![Self::start()];
        events.push(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}));
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": thinking}}));
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig-"}}));
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "123"}}));
        events.push(json!({"type": "content_block_stop", "index": 0}));
        events.push(json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": id, "name": name, "input": input}}));
        events.push(json!({"type": "content_block_stop", "index": 1}));
        events.extend(Self::stop("tool_use"));
        Self::stream(&events, 9)
    }

    /// A stream that starts an answer and then reports an error event.
    pub fn error_mid_stream(kind: &str) -> Script {
        let mut events = vec![Self::start()];
        events.push(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Partly "}}));
        events.push(json!({"type": "error", "error": {"type": kind, "message": "Overloaded"}}));
        Self::stream(&events, 64)
    }

    /// A stream whose first event after `message_start` is an error (as when the API is
    /// overloaded).
    pub fn error_at_start(kind: &str) -> Script {
        let events = [
            Self::start(),
            json!({"type": "error", "error": {"type": kind, "message": "Overloaded"}}),
        ];
        Self::stream(&events, 64)
    }

    /// A plain Anthropic error response (`529 overloaded_error`, `429 rate_limit_error`).
    pub fn status(status: u16, kind: &str, retry_after: Option<&'static str>) -> Script {
        let body =
            json!({"type": "error", "error": {"type": kind, "message": format!("{kind} (fake)")}});
        Script::Status { status, retry_after, body }
    }
}

/// `POST /v1/messages`.
pub(super) async fn messages(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Err(problem) = refused(&body) {
        shared.lock().unwrap().requests.push(body.clone());
        let error = json!({"type": "error", "error": {"type": "invalid_request_error", "message": problem}});
        let script = Script::Status { status: 400, retry_after: None, body: error };
        return respond(script, shared).await;
    }
    let script = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(body.clone());
        shared.anthropic_headers.push((header("x-api-key"), header("anthropic-version")));
        shared.scripts.pop_front()
    };
    let script = script.unwrap_or_else(|| {
        let last_user = body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_array())
            .and_then(|blocks| blocks.iter().rev().find_map(|b| b["text"].as_str()))
            .unwrap_or("")
            .to_owned();
        Anthropic::text(&["echo: ", &last_user])
    });
    respond(script, shared).await
}

/// What the real API refuses in a request body (a history Parley built wrongly), so that a
/// test fails on it: a first message not from the user, text that is empty or only
/// whitespace, an empty tool result, an id outside `[A-Za-z0-9_-]`, a `tool_use` whose
/// input is not an object or that the next message does not answer.
fn refused(body: &Value) -> Result<(), String> {
    let messages = body["messages"].as_array().ok_or("messages: required")?;
    if messages.first().is_none_or(|m| m["role"] != "user") {
        return Err("messages: first message must use the \"user\" role".into());
    }
    // With extended thinking, a tool loop in progress (the last message answers tool calls)
    // sends the calls back with the signed thinking that led to them, first.
    let in_loop = messages
        .last()
        .and_then(|m| m["content"].as_array())
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"));
    if body["thinking"]["type"] == "enabled" && in_loop {
        let last = messages.iter().rev().find(|m| m["role"] == "assistant");
        let calls = last
            .and_then(|m| m["content"].as_array())
            .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_use"));
        let first = last.map(|m| &m["content"][0]);
        if calls
            && !first.is_some_and(|b| {
                b["type"] == "thinking" && b["signature"].as_str().is_some_and(|s| !s.is_empty())
            })
        {
            return Err(
                "messages: an assistant message with tool_use must start with its thinking block"
                    .into(),
            );
        }
    }
    let valid_id = |id: &str| {
        !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    for (i, message) in messages.iter().enumerate() {
        let blocks = message["content"].as_array().ok_or("content must be a list of blocks")?;
        if blocks.is_empty() {
            return Err(format!("messages.{i}: content must not be empty"));
        }
        for block in blocks {
            match block["type"].as_str() {
                Some("text") if block["text"].as_str().is_none_or(|t| t.trim().is_empty()) => {
                    return Err(format!(
                        "messages.{i}: text content blocks must contain non-whitespace text"
                    ));
                }
                Some("tool_result") if block["content"].as_str().is_some_and(str::is_empty) => {
                    return Err(format!("messages.{i}: tool_result content must not be empty"));
                }
                Some("tool_result") if !block["tool_use_id"].as_str().is_some_and(valid_id) => {
                    return Err(format!("messages.{i}: tool_use_id does not match the pattern"));
                }
                Some("tool_use") => {
                    let id = block["id"].as_str().unwrap_or_default();
                    if !valid_id(id) || !block["input"].is_object() {
                        return Err(format!("messages.{i}: tool_use id or input is invalid"));
                    }
                    let answered = messages
                        .get(i + 1)
                        .and_then(|next| next["content"].as_array())
                        .is_some_and(|next| {
                            next.iter()
                                .any(|b| b["type"] == "tool_result" && b["tool_use_id"] == id)
                        });
                    if !answered {
                        return Err(format!(
                            "messages.{i}: tool_use {id} has no tool_result right after it"
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}
