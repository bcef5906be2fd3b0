//! What an AG-UI run sends: the thread's messages as the client holds them (only text is
//! read; reasoning and activity messages are display state) and answers to interrupts.

use serde::Deserialize;
use serde_json::Value;

use super::invalid;
use crate::conversation::{ChatMessage, Role, ToolCall};
use crate::http::ApiError;
use crate::runtime::Decision;

/// A message of the thread as the client holds it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InputMessage {
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
pub(super) struct ResumeEntry {
    pub(super) interrupt_id: String,
    status: String,
    #[serde(default)]
    payload: Value,
}

/// The decision a resume entry carries: `cancelled` denies; `resolved` approves unless its
/// payload says otherwise (`false`, `{"approved": false}` or `{"decision": "deny"}`;
/// `{"decision": "always"}` approves the tool for the rest of the thread).
pub(super) fn decision(entry: &ResumeEntry) -> Option<Decision> {
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

/// One AG-UI message for the model (`None` for the client's display-only reasoning and
/// activity messages); only text content is taken.
pub(super) fn chat_message(
    i: usize,
    message: &InputMessage,
) -> Result<Option<ChatMessage>, ApiError> {
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
    if role == Role::Tool && tool_call_id.is_none() {
        return Err(invalid(format!("messages[{i}].toolCallId"), "a tool message needs its id"));
    }
    Ok(Some(ChatMessage { role, content, tool_calls, tool_call_id }))
}
