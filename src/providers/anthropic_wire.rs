//! The Anthropic Messages wire format: request bodies built from Parley's stored history
//! (system text at the top, tool calls as `tool_use` blocks, their results as
//! `tool_result` blocks in the next user message), and the assembly of the streamed events
//! (content blocks split anywhere, `tool_use` input in JSON fragments, thinking, pings,
//! errors) into a [`Completion`].

use serde_json::{Value, json};

use super::{ChatRequest, Completion, Delta, ProviderError};
use crate::conversation::{ChatMessage, Role, ToolCall, Usage};

/// The JSON body of a streaming Messages request.
pub(super) fn request_body(
    request: &ChatRequest,
    model: &str,
    max_tokens: u32,
    thinking_budget: u32,
) -> Value {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System && !m.content.is_empty())
        .map(|m| m.content.as_str())
        .collect();
    let mut messages: Vec<Value> = Vec::new();
    for message in request.messages.iter().filter(|m| m.role != Role::System) {
        let (role, blocks) = blocks_of(message);
        if blocks.is_empty() {
            continue;
        }
        // Consecutive messages of one role become one: the results of one step's tool
        // calls go back together, in the user message right after the calls.
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(content) = last["content"].as_array_mut() {
                    content.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    // The API takes a conversation that starts with the user (a stateless client's own
    // history may open with the assistant).
    if messages.first().is_none_or(|first| first["role"] != "user") {
        let opening = json!({"type": "text", "text": "(the conversation so far)"});
        messages.insert(0, json!({"role": "user", "content": [opening]}));
    }
    let mut body = json!({
        "model": model,
        "max_tokens": max_tokens,
        "messages": messages,
        "stream": true,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if thinking_budget > 0 {
        body["thinking"] = json!({"type": "enabled", "budget_tokens": thinking_budget});
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({"name": tool.name, "description": tool.description,
                       "input_schema": tool.parameters})
            })
            .collect();
        body["tools"] = json!(tools);
    }
    body
}

/// A message's role on the wire and its content blocks. What the API refuses is left out
/// or filled in: text that is only whitespace is dropped, an empty tool result says so.
fn blocks_of(message: &ChatMessage) -> (&'static str, Vec<Value>) {
    let text = |text: &str| json!({"type": "text", "text": text});
    let blank = message.content.trim().is_empty();
    match message.role {
        Role::Tool => {
            let id = tool_use_id(message.tool_call_id.as_deref().unwrap_or_default());
            let content = if blank { "(no output)" } else { message.content.as_str() };
            let mut block = json!({"type": "tool_result", "tool_use_id": id, "content": content});
            if message.tool_error {
                block["is_error"] = json!(true);
            }
            ("user", vec![block])
        }
        Role::Assistant => {
            let mut blocks = Vec::new();
            // Signed thinking goes first, as the API gave it (within the turn only).
            if let Some(thinking) = &message.thinking {
                blocks.push(json!({"type": "thinking", "thinking": thinking.text,
                                   "signature": thinking.signature}));
            }
            if !blank {
                blocks.push(text(&message.content));
            }
            for call in &message.tool_calls {
                // The input is an object; arguments that were not one (a model's bad JSON)
                // go back as they were, under a key, so the history stays valid.
                let input = match serde_json::from_str::<Value>(&call.arguments) {
                    Ok(input @ Value::Object(_)) => input,
                    _ if call.arguments.trim().is_empty() => json!({}),
                    _ => json!({"arguments": call.arguments}),
                };
                blocks.push(json!({"type": "tool_use", "id": tool_use_id(&call.id),
                                   "name": call.name, "input": input}));
            }
            ("assistant", blocks)
        }
        Role::User | Role::System => {
            let blocks = if blank { vec![] } else { vec![text(&message.content)] };
            ("user", blocks)
        }
    }
}

/// A tool call's id as the API takes it (`^[a-zA-Z0-9_-]+$`): ids other providers made
/// (`functions.get:0`) are rewritten the same way in the call and in its result, with a
/// hash of the original so two cannot collide.
fn tool_use_id(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    if !safe.is_empty() && safe == id {
        return safe;
    }
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(id.as_bytes())[..4]);
    format!("{safe}_{hash}")
}

/// A content block being received.
#[derive(Debug)]
enum Block {
    Text,
    Thinking,
    ToolUse { id: String, name: String, input: String, given: Option<Value> },
    Other,
}

/// Builds a [`Completion`] from streamed events.
#[derive(Debug, Default)]
pub(super) struct Assembler {
    completion: Completion,
    blocks: Vec<(u64, Block)>,
    calls: Vec<ToolCall>,
    input_tokens: u64,
    output_tokens: u64,
    /// Input tokens read from the prompt cache (counted in `input_tokens` too).
    cached_tokens: u64,
    stopped: bool,
}

impl Assembler {
    /// Applies one event's JSON, passing text and thinking to `on_delta`. Returns whether
    /// the message is complete (`message_stop`).
    pub(super) fn apply(
        &mut self,
        data: &str,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<bool, ProviderError> {
        let event: Value = serde_json::from_str(data)
            .map_err(|e| ProviderError::BadResponse(format!("malformed stream event: {e}")))?;
        match event["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let message = &event["message"];
                if let Some(model) = message["model"].as_str().filter(|m| !m.is_empty()) {
                    self.completion.model = Some(model.to_owned());
                }
                self.usage(&message["usage"]);
            }
            "content_block_start" => {
                let index = event["index"].as_u64().unwrap_or(self.blocks.len() as u64);
                let block = &event["content_block"];
                let started = match block["type"].as_str() {
                    Some("text") => {
                        self.text(block["text"].as_str().unwrap_or_default(), on_delta);
                        Block::Text
                    }
                    Some("thinking") => {
                        self.thinking(block["thinking"].as_str().unwrap_or_default(), on_delta);
                        Block::Thinking
                    }
                    Some("tool_use") => Block::ToolUse {
                        id: block["id"].as_str().unwrap_or_default().to_owned(),
                        name: block["name"].as_str().unwrap_or_default().to_owned(),
                        input: String::new(),
                        given: block
                            .get("input")
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                            .cloned(),
                    },
                    _ => Block::Other,
                };
                self.blocks.push((index, started));
            }
            "content_block_delta" => {
                let index = event["index"].as_u64();
                let delta = &event["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        self.text(delta["text"].as_str().unwrap_or_default(), on_delta)
                    }
                    Some("thinking_delta") => {
                        self.thinking(delta["thinking"].as_str().unwrap_or_default(), on_delta);
                    }
                    Some("input_json_delta") => {
                        let fragment = delta["partial_json"].as_str().unwrap_or_default();
                        let block = self
                            .blocks
                            .iter_mut()
                            .rev()
                            .find(|(i, _)| index.is_none_or(|x| x == *i));
                        match block {
                            Some((_, Block::ToolUse { input, .. })) => input.push_str(fragment),
                            _ => {
                                return Err(ProviderError::BadResponse(
                                    "tool input for a block that is not a tool call".into(),
                                ));
                            }
                        }
                    }
                    Some("signature_delta") => {
                        let part = delta["signature"].as_str().unwrap_or_default();
                        self.completion.thinking_signature.get_or_insert_default().push_str(part);
                    }
                    // Citations and what comes later: nothing Parley keeps.
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = event["index"].as_u64();
                let at = self.blocks.iter().rposition(|(i, _)| index.is_none_or(|x| x == *i));
                if let Some(at) = at
                    && let (_, Block::ToolUse { id, name, input, given }) = self.blocks.remove(at)
                {
                    self.finish_call(id, name, input, given)?;
                }
            }
            "message_delta" => {
                if let Some(reason) = event["delta"]["stop_reason"].as_str() {
                    self.completion.finish_reason = Some(finish_reason(reason).to_owned());
                }
                self.usage(&event["usage"]);
            }
            "message_stop" => {
                self.stopped = true;
                return Ok(true);
            }
            "error" => return Err(stream_error(&event["error"])),
            // `ping` and event types added later.
            _ => {}
        }
        Ok(false)
    }

    fn text(&mut self, text: &str, on_delta: &mut (dyn FnMut(Delta) + Send)) {
        if !text.is_empty() {
            self.completion.text.push_str(text);
            on_delta(Delta::Text(text.to_owned()));
        }
    }

    fn thinking(&mut self, text: &str, on_delta: &mut (dyn FnMut(Delta) + Send)) {
        if !text.is_empty() {
            self.completion.thinking.push_str(text);
            on_delta(Delta::Thinking(text.to_owned()));
        }
    }

    /// Counts usage: every input token (cache writes and reads too) is a prompt token.
    fn usage(&mut self, usage: &Value) {
        let count = |key: &str| usage[key].as_u64();
        let input = ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]
            .iter()
            .filter_map(|key| count(key))
            .reduce(|a, b| a + b);
        if let Some(input) = input {
            self.input_tokens = input;
        }
        if let Some(cached) = count("cache_read_input_tokens") {
            self.cached_tokens = cached;
        }
        if let Some(output) = count("output_tokens") {
            // Cumulative in `message_delta`.
            self.output_tokens = output;
        }
    }

    fn finish_call(
        &mut self,
        id: String,
        name: String,
        input: String,
        given: Option<Value>,
    ) -> Result<(), ProviderError> {
        if name.is_empty() {
            return Err(ProviderError::BadResponse("a tool call arrived without a name".into()));
        }
        let arguments = match (input.trim(), given) {
            ("", Some(given)) => given.to_string(),
            ("", None) => "{}".to_owned(),
            (input, _) => input.to_owned(),
        };
        let id =
            if id.is_empty() { format!("toolu_{}", uuid::Uuid::new_v4().simple()) } else { id };
        self.calls.push(ToolCall { id, name, arguments });
        Ok(())
    }

    /// Whether the stream said the message was complete.
    pub(super) fn finished(&self) -> bool {
        self.stopped
    }

    /// The assembled completion (a tool call whose block never closed still counts).
    pub(super) fn finish(mut self) -> Result<Completion, ProviderError> {
        for (_, block) in std::mem::take(&mut self.blocks) {
            if let Block::ToolUse { id, name, input, given } = block {
                self.finish_call(id, name, input, given)?;
            }
        }
        self.completion.tool_calls = self.calls;
        self.completion.usage = Usage {
            prompt_tokens: self.input_tokens,
            completion_tokens: self.output_tokens,
            total_tokens: self.input_tokens + self.output_tokens,
            cached_tokens: self.cached_tokens,
            cost: None,
        };
        Ok(self.completion)
    }
}

/// Anthropic's stop reasons in the OpenAI words the rest of Parley uses.
fn finish_reason(reason: &str) -> &str {
    match reason {
        "end_turn" | "stop_sequence" => "stop",
        "tool_use" => "tool_calls",
        "max_tokens" => "length",
        other => other,
    }
}

/// An `error` event in the stream, typed by its `type`.
fn stream_error(error: &Value) -> ProviderError {
    let message: String =
        error["message"].as_str().unwrap_or("no message").chars().take(300).collect();
    match error["type"].as_str() {
        Some("rate_limit_error") => ProviderError::RateLimited { retry_after: None },
        Some("authentication_error") => ProviderError::Auth { status: 401 },
        Some("permission_error") => ProviderError::Auth { status: 403 },
        Some("invalid_request_error") => ProviderError::Rejected { status: 400, message },
        Some("not_found_error") => ProviderError::Rejected { status: 404, message },
        Some("request_too_large") => ProviderError::Rejected { status: 413, message },
        Some(kind) => ProviderError::Unavailable(format!("{kind} in stream: {message}")),
        None => ProviderError::Unavailable(format!("error in stream: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ToolSpec;

    #[test]
    fn history_becomes_blocks_with_results_after_their_calls() {
        let call = |id: &str, args: &str| ToolCall {
            id: id.into(),
            name: "shell".into(),
            arguments: args.into(),
        };
        let request = ChatRequest {
            messages: vec![
                ChatMessage::text(Role::System, "be brief"),
                ChatMessage::text(Role::User, "list"),
                ChatMessage::with_calls(
                    Role::Assistant,
                    "Looking.",
                    vec![call("a", r#"{"command":"ls"}"#), call("b", "not json")],
                    None,
                ),
                ChatMessage::with_calls(Role::Tool, "x.txt", vec![], Some("a".into())),
                ChatMessage::tool_result("error: bad", "b".into(), true),
                ChatMessage::text(Role::System, "Page context: home"),
                ChatMessage::text(Role::User, "thanks"),
                ChatMessage::text(Role::Assistant, "  \n"),
            ],
            tools: vec![ToolSpec {
                name: "shell".into(),
                description: "run".into(),
                parameters: json!({"type": "object"}),
            }],
        };
        let body = request_body(&request, "claude-x", 1000, 0);
        assert_eq!(body["system"], "be brief\n\nPage context: home");
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
        let messages = body["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["user", "assistant", "user"], "{body}");
        assert_eq!(
            messages[1]["content"][1],
            json!({"type": "tool_use", "id": "a", "name": "shell", "input": {"command": "ls"}})
        );
        assert_eq!(messages[1]["content"][2]["input"], json!({"arguments": "not json"}));
        let results = messages[2]["content"].as_array().unwrap();
        assert_eq!(
            results[0],
            json!({"type": "tool_result", "tool_use_id": "a", "content": "x.txt"})
        );
        assert_eq!(results[1]["is_error"], true);
        assert_eq!(results[2], json!({"type": "text", "text": "thanks"}));
    }

    #[test]
    fn what_the_api_refuses_is_mended() {
        let request = ChatRequest {
            messages: vec![
                ChatMessage::text(Role::Assistant, "Hi! How can I help?"),
                ChatMessage::text(Role::User, "make a folder"),
                ChatMessage::with_calls(
                    Role::Assistant,
                    "\n\n",
                    vec![ToolCall {
                        id: "functions.shell:0".into(),
                        name: "shell".into(),
                        arguments: "".into(),
                    }],
                    None,
                ),
                ChatMessage::with_calls(Role::Tool, "", vec![], Some("functions.shell:0".into())),
            ],
            tools: vec![],
        };
        let body = request_body(&request, "claude-x", 100, 0);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages[0]["role"], "user", "{body}");
        assert_eq!(messages[1]["role"], "assistant");
        let call = &messages[3]["content"][0];
        assert_eq!(call["type"], "tool_use", "whitespace text left out: {body}");
        assert_eq!(call["input"], json!({}));
        let id = call["id"].as_str().unwrap();
        assert!(
            id.starts_with("functions_shell_0_")
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
        assert_eq!(messages[4]["content"][0]["tool_use_id"], id);
        assert_eq!(messages[4]["content"][0]["content"], "(no output)");
        assert_eq!(tool_use_id("toolu_01A-b"), "toolu_01A-b", "valid ids stay");
        assert_ne!(tool_use_id("a.b"), tool_use_id("a:b"));
    }

    fn assemble(events: &[Value]) -> Result<(Completion, Vec<Delta>), ProviderError> {
        let mut assembler = Assembler::default();
        let mut deltas = Vec::new();
        for event in events {
            assembler.apply(&event.to_string(), &mut |d| deltas.push(d))?;
        }
        Ok((assembler.finish()?, deltas))
    }

    #[test]
    fn events_assemble_into_text_thinking_tool_calls_and_usage() {
        let (completion, deltas) = assemble(&[
            json!({"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "ping"}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Let me "}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "look."}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"comm"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "and\": \"ls\"}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "list_dir", "input": {}}}),
            json!({"type": "content_block_stop", "index": 3}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
            json!({"type": "message_stop"}),
        ])
        .unwrap();
        assert_eq!(completion.text, "Let me look.");
        assert_eq!(completion.thinking, "hmm");
        assert_eq!(deltas[0], Delta::Thinking("hmm".into()));
        assert_eq!(completion.model.as_deref(), Some("claude-x"));
        assert_eq!(completion.finish_reason.as_deref(), Some("tool_calls"));
        let calls: Vec<_> = completion
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [("toolu_1", "shell", r#"{"command": "ls"}"#), ("toolu_2", "list_dir", "{}")]
        );
        assert_eq!(
            (
                completion.usage.prompt_tokens,
                completion.usage.completion_tokens,
                completion.usage.total_tokens
            ),
            (15, 7, 22)
        );
    }

    #[test]
    fn error_events_are_typed() {
        let overloaded = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        assert_eq!(assemble(&[overloaded]).unwrap_err().kind(), "unavailable");
        let limited =
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}});
        assert_eq!(assemble(&[limited]).unwrap_err().kind(), "rate_limited");
        let stray = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{"}});
        assert_eq!(assemble(&[stray]).unwrap_err().kind(), "bad_response");
        let mut assembler = Assembler::default();
        assert_eq!(assembler.apply("{not json", &mut |_| {}).unwrap_err().kind(), "bad_response");
    }
}
