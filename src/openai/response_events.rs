//! The Responses API's view of a turn: the `response` object built from the stored turn,
//! and the stream events its live events map to. A response is a turn; its conversation
//! is the turn's session. Each event's `sequence_number` is `seq × 16 + k` (the Parley
//! event it comes from, and its place among the events that one makes), so resuming after
//! a sequence number is resuming the session's log after a `seq`.

use serde_json::{Value, json};

use crate::conversation::Role;
use crate::runtime::{ApprovalInfo, EventKind, TurnItem, TurnView};
use crate::store::TurnStatus;

/// Stream events one Parley event may become, at most.
pub(super) const PER_EVENT: u64 = 16;

/// The response id of a turn.
pub(super) fn response_id(turn_id: &str) -> String {
    format!("resp_{turn_id}")
}

/// The turn id of a response id (`None` if it is not one of Parley's).
pub(super) fn turn_id(response_id: &str) -> Option<&str> {
    response_id.strip_prefix("resp_").filter(|id| !id.is_empty())
}

/// The Responses status of a turn's.
fn status(status: TurnStatus) -> &'static str {
    match status {
        TurnStatus::Queued => "queued",
        TurnStatus::Running => "in_progress",
        TurnStatus::Done => "completed",
        TurnStatus::Error => "failed",
        TurnStatus::Cancelled | TurnStatus::Interrupted => "cancelled",
    }
}

/// What the request asked for, echoed in the object.
#[derive(Debug, Clone, Default)]
pub(super) struct Echo {
    pub model: String,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub background: bool,
    pub store: bool,
    pub metadata: Value,
}

/// The `response` object of a stored turn, with the approvals it waits for (`pending`).
pub(super) fn response_object(view: &TurnView, echo: &Echo, pending: &[ApprovalInfo]) -> Value {
    let record = &view.record;
    let mut output = Vec::new();
    for message in view.messages.iter().filter(|m| m.role == Role::Assistant) {
        if !message.content.is_empty() {
            output.push(message_item(&format!("msg_{}", message.seq), &message.content, true));
        }
        for call in &message.tool_calls {
            let done = view.tool_calls.iter().find(|c| c.id == call.id);
            let (output_text, is_error) =
                done.map_or((None, false), |c| (c.output.clone(), c.is_error));
            output.push(mcp_item(&call.id, &call.name, &call.arguments, output_text, is_error));
        }
    }
    output.extend(pending.iter().map(|a| approval_item(&a.request_id, &a.tool, &a.args)));
    let error = (record.status == TurnStatus::Error).then(|| {
        json!({
            "code": "server_error",
            "message": record.error_message.clone().unwrap_or_default(),
        })
    });
    let model = record.model.clone().unwrap_or_else(|| echo.model.clone());
    let mut object = base_object(&record.id, record.created_at / 1000, status(record.status), echo);
    object["model"] = json!(model);
    object["output"] = Value::Array(output);
    object["error"] = error.unwrap_or(Value::Null);
    object["usage"] = json!({
        "input_tokens": record.usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": record.usage.cached_tokens},
        "output_tokens": record.usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": record.usage.total_tokens,
    });
    if let Some(cost) = record.usage.cost {
        object["usage"]["cost"] = json!(cost);
    }
    object["parley"] = json!({
        "session_id": record.session_id,
        "turn_id": record.id,
        "status": record.status.as_str(),
        "code": record.error_code,
    });
    if matches!(record.status, TurnStatus::Cancelled | TurnStatus::Interrupted) {
        object["incomplete_details"] = json!({"reason": "cancelled"});
    }
    object
}

/// The fields every response object has, before its output is known.
pub(super) fn base_object(turn_id: &str, created_at: i64, status: &str, echo: &Echo) -> Value {
    json!({
        "id": response_id(turn_id),
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": echo.background,
        "error": null,
        "incomplete_details": null,
        "instructions": echo.instructions,
        "max_output_tokens": null,
        "metadata": echo.metadata,
        "model": echo.model,
        "output": [],
        "parallel_tool_calls": false,
        "previous_response_id": echo.previous_response_id,
        "store": echo.store,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": null,
    })
}

fn message_item(id: &str, text: &str, done: bool) -> Value {
    let content = if done {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    } else {
        json!([])
    };
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "status": if done { "completed" } else { "in_progress" },
        "content": content,
    })
}

/// A tool the agent ran, as the item type for tools a server runs itself (`mcp_call`).
fn mcp_item(
    call_id: &str,
    name: &str,
    arguments: &str,
    output: Option<String>,
    is_error: bool,
) -> Value {
    let finished = output.is_some();
    let (output, error) = if is_error { (None, output) } else { (output, None) };
    json!({
        "id": format!("mcp_{call_id}"),
        "type": "mcp_call",
        "server_label": "parley",
        "name": name,
        "arguments": arguments,
        "output": output,
        "error": error,
        "status": match (finished, is_error) {
            (false, _) => "in_progress",
            (true, false) => "completed",
            (true, true) => "failed",
        },
    })
}

/// A tool call waiting for the user's decision.
fn approval_item(request_id: &str, tool: &str, args: &Value) -> Value {
    json!({
        "id": format!("mcpr_{request_id}"),
        "type": "mcp_approval_request",
        "server_label": "parley",
        "name": tool,
        "arguments": args.to_string(),
    })
}

/// A message item being streamed.
struct OpenMessage {
    id: String,
    index: u64,
    text: String,
}

/// Maps one turn's events to Responses stream events.
pub(super) struct ResponseEvents {
    /// The seq of the step being streamed (its `model` status event): its message's id.
    step_seq: u64,
    next_index: u64,
    message: Option<OpenMessage>,
    /// Tool calls started and not finished: call id → (output index, name, arguments).
    calls: Vec<(String, u64, String, String)>,
}

/// One mapped event: its sequence number and body (with `type`).
pub(super) type Mapped = (u64, Value);

impl ResponseEvents {
    pub(super) fn new() -> Self {
        Self { step_seq: 0, next_index: 0, message: None, calls: Vec::new() }
    }

    /// The events a response starts with, numbered after the turn's user message.
    pub(super) fn start(&self, user_seq: u64, created: Value) -> Vec<Mapped> {
        let base = user_seq * PER_EVENT;
        let mut in_progress = created.clone();
        in_progress["status"] = json!("in_progress");
        vec![
            (base, json!({"type": "response.created", "response": created})),
            (base + 1, json!({"type": "response.in_progress", "response": in_progress})),
        ]
    }

    /// Closes the message being streamed, if any.
    fn close_message(&mut self, out: &mut Vec<Value>) {
        let Some(message) = self.message.take() else {
            return;
        };
        let (id, index, text) = (message.id, message.index, message.text);
        let part = json!({"type": "output_text", "text": text, "annotations": []});
        out.push(json!({
            "type": "response.output_text.done", "item_id": id, "output_index": index,
            "content_index": 0, "text": text, "logprobs": [],
        }));
        out.push(json!({
            "type": "response.content_part.done", "item_id": id, "output_index": index,
            "content_index": 0, "part": part,
        }));
        out.push(json!({
            "type": "response.output_item.done", "output_index": index,
            "item": message_item(&id, &text, true),
        }));
    }

    /// The events one turn event becomes, without their numbers, and whether it ends the
    /// response (the caller then adds the final object's event).
    pub(super) fn map(&mut self, item: &TurnItem) -> (Vec<Value>, Option<Ending>) {
        let mut out = Vec::new();
        let TurnItem::Event(event) = item else {
            return (out, None);
        };
        let ending = match &event.kind {
            EventKind::OperatorStatus { phase, .. } if phase == "model" => {
                self.step_seq = event.seq;
                None
            }
            EventKind::Chunk { content } => {
                if self.message.is_none() {
                    let id = format!("msg_{}", self.step_seq);
                    let index = self.next_index;
                    self.next_index += 1;
                    out.push(json!({
                        "type": "response.output_item.added", "output_index": index,
                        "item": message_item(&id, "", false),
                    }));
                    out.push(json!({
                        "type": "response.content_part.added", "item_id": id,
                        "output_index": index, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []},
                    }));
                    self.message = Some(OpenMessage { id, index, text: String::new() });
                }
                if let Some(message) = &mut self.message {
                    message.text.push_str(content);
                    out.push(json!({
                        "type": "response.output_text.delta", "item_id": message.id,
                        "output_index": message.index, "content_index": 0, "delta": content,
                        "logprobs": [],
                    }));
                }
                None
            }
            EventKind::ChunkReset => {
                self.close_message(&mut out);
                None
            }
            EventKind::ToolCall { id, name, args } => {
                self.close_message(&mut out);
                let index = self.next_index;
                self.next_index += 1;
                let arguments = match args {
                    Value::String(raw) => raw.clone(),
                    other => other.to_string(),
                };
                let item_id = format!("mcp_{id}");
                out.push(json!({
                    "type": "response.output_item.added", "output_index": index,
                    "item": mcp_item(id, name, &arguments, None, false),
                }));
                out.push(json!({
                    "type": "response.mcp_call_arguments.done", "item_id": item_id,
                    "output_index": index, "arguments": arguments,
                }));
                out.push(json!({
                    "type": "response.mcp_call.in_progress", "item_id": item_id,
                    "output_index": index,
                }));
                self.calls.push((id.clone(), index, name.clone(), arguments));
                None
            }
            EventKind::ToolResult { id, output, is_error, .. } => {
                if let Some(pos) = self.calls.iter().position(|c| &c.0 == id) {
                    let (id, index, name, arguments) = self.calls.remove(pos);
                    let item_id = format!("mcp_{id}");
                    let kind = if *is_error {
                        "response.mcp_call.failed"
                    } else {
                        "response.mcp_call.completed"
                    };
                    out.push(json!({"type": kind, "item_id": item_id, "output_index": index}));
                    out.push(json!({
                        "type": "response.output_item.done", "output_index": index,
                        "item": mcp_item(&id, &name, &arguments, Some(output.clone()), *is_error),
                    }));
                }
                None
            }
            EventKind::ApprovalRequest { request_id, tool, args, .. } => {
                let index = self.next_index;
                self.next_index += 1;
                let item = approval_item(request_id, tool, args);
                out.push(json!({
                    "type": "response.output_item.added", "output_index": index, "item": item,
                }));
                out.push(json!({
                    "type": "response.output_item.done", "output_index": index, "item": item,
                }));
                None
            }
            EventKind::Done { .. } => {
                self.close_message(&mut out);
                Some(Ending::Completed)
            }
            EventKind::Cancelled { .. } => {
                self.close_message(&mut out);
                Some(Ending::Cancelled)
            }
            EventKind::Error { .. } => {
                self.close_message(&mut out);
                Some(Ending::Failed)
            }
            EventKind::SessionDeleted => Some(Ending::Deleted),
            _ => None,
        };
        (out, ending)
    }
}

/// How a streamed response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    Completed,
    Cancelled,
    Failed,
    /// The conversation was deleted while the response streamed.
    Deleted,
}

impl Ending {
    /// The type of the last event, carrying the final object.
    pub(super) fn event_type(self) -> &'static str {
        match self {
            Ending::Completed => "response.completed",
            Ending::Cancelled => "response.incomplete",
            Ending::Failed => "response.failed",
            Ending::Deleted => "error",
        }
    }
}
