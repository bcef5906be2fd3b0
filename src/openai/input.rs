//! What an OpenAI request says to the model: its messages (Chat Completions) or input items
//! (Responses), split into the new user message (the turn) and what comes before it (the
//! context of a stateless request). Only text is taken; anything else is refused by name.

use serde::Deserialize;
use serde_json::Value;

use crate::conversation::{ChatMessage, Role, ToolCall};
use crate::http::ApiError;

/// A message of a Chat Completions request (also of an AG-UI run, which names its fields
/// in camelCase).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct InputMessage {
    pub(crate) role: String,
    #[serde(default)]
    content: Value,
    #[serde(default, alias = "toolCalls")]
    tool_calls: Vec<InputToolCall>,
    #[serde(default, alias = "toolCallId")]
    tool_call_id: Option<String>,
}

impl InputMessage {
    /// The message for the model, said by `role`; `param` names it in refusals.
    pub(crate) fn to_chat(&self, role: Role, param: &str) -> Result<ChatMessage, ApiError> {
        let content = text_of(&self.content, &format!("{param}.content"))?;
        let tool_calls = self
            .tool_calls
            .iter()
            .map(|call| ToolCall {
                id: call.id.clone(),
                name: call.function.name.clone(),
                arguments: call.function.arguments.clone(),
            })
            .collect();
        if role == Role::Tool && self.tool_call_id.is_none() {
            return Err(invalid(format!("{param}.tool_call_id"), "a tool message needs its id"));
        }
        let tool_call_id = self.tool_call_id.clone();
        Ok(ChatMessage::with_calls(role, content, tool_calls, tool_call_id))
    }
}

/// A tool call of an earlier assistant message.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct InputToolCall {
    id: String,
    function: InputFunction,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct InputFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

/// A request's conversation: the messages before the new one, and the new one's text.
pub(super) struct Conversation {
    pub context: Vec<ChatMessage>,
    pub content: String,
}

fn invalid(param: String, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam { param, message: message.into() }
}

/// The text of a message's `content`: a string, or parts of which only text is accepted.
fn text_of(content: &Value, param: &str) -> Result<String, ApiError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
                match (kind, part.get("text").and_then(Value::as_str)) {
                    ("text" | "input_text" | "output_text", Some(part)) => text.push_str(part),
                    _ => {
                        return Err(invalid(
                            format!("{param}[{i}]"),
                            format!("content parts of type `{kind}` are not supported; send text"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(param.to_owned(), "content must be a string or an array of parts")),
    }
}

/// A role name as the model knows it (`developer` is a system message).
fn role(name: &str, param: String) -> Result<Role, ApiError> {
    match name {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        "tool" => Ok(Role::Tool),
        other => Err(invalid(param, format!("unknown role `{other}`"))),
    }
}

/// Splits Chat Completions messages into context and the trailing user message.
pub(super) fn from_messages(messages: &[InputMessage]) -> Result<Conversation, ApiError> {
    let mut context = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = role(&message.role, format!("{param}.role"))?;
        context.push(message.to_chat(role, &param)?);
    }
    last_user(context, "messages")
}

/// Splits Responses `input` (a string, or message items) into context and the trailing
/// user message.
pub(super) fn from_input(input: &Value) -> Result<Conversation, ApiError> {
    let items = match input {
        Value::String(text) => {
            return Ok(Conversation { context: Vec::new(), content: text.clone() });
        }
        Value::Array(items) => items,
        _ => return Err(invalid("input".into(), "input must be a string or an array of items")),
    };
    let mut context = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
        if kind != "message" {
            return Err(invalid(
                format!("{param}.type"),
                format!(
                    "input items of type `{kind}` are not supported: Parley runs its tools itself"
                ),
            ));
        }
        let name = item.get("role").and_then(Value::as_str).unwrap_or_default();
        let role = match role(name, format!("{param}.role"))? {
            Role::Tool => return Err(invalid(format!("{param}.role"), "unknown role `tool`")),
            role => role,
        };
        let content = text_of(item.get("content").unwrap_or(&Value::Null), &param)?;
        context.push(ChatMessage::text(role, content));
    }
    last_user(context, "input")
}

/// Takes the last message off as the turn's; it must be the user's, with text.
fn last_user(mut context: Vec<ChatMessage>, param: &str) -> Result<Conversation, ApiError> {
    match context.pop() {
        Some(last) if last.role == Role::User => {
            Ok(Conversation { context, content: last.content })
        }
        Some(_) => Err(invalid(
            param.to_owned(),
            "the last message must be the user's: Parley answers a user message",
        )),
        None => Err(invalid(param.to_owned(), "at least one message is needed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(value: Value) -> Vec<InputMessage> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_trailing_user_message_is_the_turn_and_the_rest_its_context() {
        let conversation = from_messages(&messages(serde_json::json!([
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is "}, {"type": "text", "text": "2+2"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "and 3+3?"},
        ])))
        .unwrap();
        assert_eq!(conversation.content, "and 3+3?");
        let roles: Vec<Role> = conversation.context.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::Tool, Role::Assistant]);
        assert_eq!(conversation.context[1].content, "what is 2+2");
        assert_eq!(conversation.context[2].tool_calls[0].name, "calc");
        assert_eq!(conversation.context[3].tool_call_id.as_deref(), Some("c1"));
    }

    #[test]
    fn refusals_name_the_field_at_fault() {
        let param = |value: Value| match from_messages(&messages(value)) {
            Err(ApiError::InvalidParam { param, .. }) => param,
            other => panic!("expected a refusal, got {:?}", other.map(|c| c.content)),
        };
        assert_eq!(param(serde_json::json!([])), "messages");
        assert_eq!(param(serde_json::json!([{"role": "assistant", "content": "hi"}])), "messages");
        assert_eq!(
            param(serde_json::json!([{"role": "robot", "content": "hi"}])),
            "messages[0].role"
        );
        let image = serde_json::json!([{"role": "user", "content": [
            {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}]}]);
        assert_eq!(param(image), "messages[0].content[1]");
        let items =
            from_input(&serde_json::json!([{"type": "function_call_output", "output": "x"}]));
        assert!(
            matches!(items, Err(ApiError::InvalidParam { param, .. }) if param == "input[0].type")
        );
    }
}
