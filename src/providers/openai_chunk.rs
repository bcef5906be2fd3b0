//! The OpenAI chat-completions wire format: request bodies, and the assembly of streamed
//! chunks into a [`Completion`]. Tolerant of what real servers send: tool-call fragments
//! without `index`, ids only on the first fragment, `reasoning_content` or `reasoning`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ChatRequest, Completion, Delta, ProviderError};
use crate::conversation::{ChatMessage, Role, ToolCall, Usage};

/// The JSON body of a streaming chat-completions request.
pub(super) fn request_body(request: &ChatRequest, model: Option<&str>) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(message_json).collect();
    let mut body = json!({
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({"type": "function", "function": {
                    "name": tool.name, "description": tool.description, "parameters": tool.parameters,
                }})
            })
            .collect();
        body["tools"] = json!(tools);
    }
    body
}

fn message_json(message: &ChatMessage) -> Value {
    let mut value = json!({"role": message.role.as_str(), "content": message.content});
    if message.role == Role::Assistant && !message.tool_calls.is_empty() {
        if message.content.is_empty() {
            value["content"] = Value::Null;
        }
        let calls: Vec<Value> = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({"id": call.id, "type": "function",
                       "function": {"name": call.name, "arguments": call.arguments}})
            })
            .collect();
        value["tool_calls"] = json!(calls);
    }
    if let Some(id) = &message.tool_call_id {
        value["tool_call_id"] = json!(id);
    }
    value
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<WireDelta>,
    /// Servers that ignore `stream: true` answer with a whole `message`.
    #[serde(default)]
    message: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WireTokenDetails>,
}

#[derive(Deserialize)]
struct WireTokenDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Debug, Default)]
struct PartialCall {
    index: Option<u64>,
    id: String,
    name: String,
    arguments: String,
}

/// Builds a [`Completion`] from streamed chunks.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    completion: Completion,
    calls: Vec<PartialCall>,
}

impl Assembler {
    /// Applies one chunk's JSON, passing text and thinking to `on_delta`.
    pub(crate) fn apply(
        &mut self,
        data: &str,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<(), ProviderError> {
        let chunk: Chunk = serde_json::from_str(data)
            .map_err(|e| ProviderError::BadResponse(format!("malformed stream chunk: {e}")))?;
        if let Some(error) = chunk.error {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            return Err(ProviderError::Unavailable(format!("error in stream: {message}")));
        }
        if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
            self.completion.model = Some(model);
        }
        if let Some(usage) = chunk.usage {
            self.completion.usage = Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.total_tokens.max(usage.prompt_tokens + usage.completion_tokens),
                cached_tokens: usage
                    .prompt_tokens_details
                    .and_then(|d| d.cached_tokens)
                    .unwrap_or(0),
                cost: None,
            };
        }
        for choice in chunk.choices {
            if let Some(reason) = choice.finish_reason {
                self.completion.finish_reason = Some(reason);
            }
            let Some(delta) = choice.delta.or(choice.message) else {
                continue;
            };
            if let Some(thinking) = delta.reasoning_content.or(delta.reasoning)
                && !thinking.is_empty()
            {
                self.completion.thinking.push_str(&thinking);
                on_delta(Delta::Thinking(thinking));
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                self.completion.text.push_str(&text);
                on_delta(Delta::Text(text));
            }
            for fragment in delta.tool_calls {
                self.merge_call(fragment);
            }
        }
        Ok(())
    }

    fn merge_call(&mut self, fragment: WireToolCall) {
        let id = fragment.id.filter(|id| !id.is_empty());
        let slot = match (fragment.index, &id) {
            (Some(index), id) => self.calls.iter().rposition(|call| {
                call.index == Some(index)
                    && id.as_ref().is_none_or(|id| call.id.is_empty() || call.id == *id)
            }),
            (None, Some(id)) => self.calls.iter().position(|call| call.id == *id),
            // A fragment with neither continues the call in progress.
            (None, None) => self.calls.len().checked_sub(1),
        };
        let call = match slot {
            Some(slot) => &mut self.calls[slot],
            None => {
                self.calls.push(PartialCall { index: fragment.index, ..PartialCall::default() });
                let last = self.calls.len() - 1;
                &mut self.calls[last]
            }
        };
        if let Some(id) = id {
            call.id = id;
        }
        if let Some(function) = fragment.function {
            if let Some(name) = function.name {
                call.name.push_str(&name);
            }
            if let Some(arguments) = function.arguments {
                call.arguments.push_str(&arguments);
            }
        }
    }

    /// Whether the stream said it was finished.
    pub(super) fn finished(&self) -> bool {
        self.completion.finish_reason.is_some()
    }

    /// The assembled completion.
    pub(crate) fn finish(mut self) -> Result<Completion, ProviderError> {
        for call in self.calls {
            if call.name.is_empty() {
                return Err(ProviderError::BadResponse(
                    "a tool call arrived without a name".into(),
                ));
            }
            self.completion.tool_calls.push(ToolCall {
                id: if call.id.is_empty() {
                    format!("call_{}", uuid::Uuid::new_v4().simple())
                } else {
                    call.id
                },
                name: call.name,
                arguments: if call.arguments.trim().is_empty() {
                    "{}".into()
                } else {
                    call.arguments
                },
            });
        }
        Ok(self.completion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(chunks: &[&str]) -> (Completion, Vec<Delta>) {
        let mut assembler = Assembler::default();
        let mut deltas = Vec::new();
        for chunk in chunks {
            assembler.apply(chunk, &mut |d| deltas.push(d)).unwrap();
        }
        (assembler.finish().unwrap(), deltas)
    }

    #[test]
    fn assembles_text_thinking_and_usage() {
        let (completion, deltas) = assemble(&[
            r#"{"model":"m1","choices":[{"delta":{"reasoning_content":"hmm"}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        ]);
        assert_eq!(completion.text, "Hello");
        assert_eq!(completion.thinking, "hmm");
        assert_eq!(completion.model.as_deref(), Some("m1"));
        assert_eq!(completion.usage.total_tokens, 5);
        assert_eq!(deltas[0], Delta::Thinking("hmm".into()));
    }

    #[test]
    fn assembles_tool_calls_by_index_and_without_index() {
        let (completion, _) = assemble(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"shell","arguments":"{\"comm"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"b","function":{"name":"read_file","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"and\":\"ls\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"c","function":{"name":"list_dir","arguments":"{\"pa"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"th\":\".\"}"}}]}}]}"#,
        ]);
        let calls: Vec<_> = completion
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            vec![
                ("a", "shell", r#"{"command":"ls"}"#),
                ("b", "read_file", "{}"),
                ("c", "list_dir", r#"{"path":"."}"#),
            ]
        );
    }

    #[test]
    fn same_index_with_a_new_id_is_a_new_call() {
        let (completion, _) = assemble(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"x","function":{"name":"shell","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"y","function":{"name":"list_dir","arguments":"{}"}}]}}]}"#,
        ]);
        assert_eq!(completion.tool_calls.len(), 2);
    }

    #[test]
    fn malformed_chunk_is_a_bad_response() {
        let mut assembler = Assembler::default();
        let err = assembler.apply("{not json", &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), "bad_response");
    }
}
