//! What an AG-UI run sends: the thread's messages as the client holds them (only text is
//! read; reasoning and activity messages are display state) and answers to interrupts.

use serde::Deserialize;
use serde_json::Value;

use crate::conversation::{ChatMessage, Role};
use crate::http::ApiError;
pub(crate) use crate::openai::input::InputMessage;
use crate::runtime::Decision;

/// An answer to an interrupt.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
    message.to_chat(role, &format!("messages[{i}]")).map(Some)
}
