//! A turn's events as AG-UI events. Each carries the SSE id `<turn_id>:<n>`, where `n` is
//! its Parley event's `seq × 16 + k`: a client that reconnects with `Last-Event-ID` names
//! the turn and the point to resume after, whichever node it reaches.

use serde_json::{Value, json};

use crate::runtime::{Event, EventKind};

/// AG-UI events one Parley event may become, at most.
pub(super) const PER_EVENT: u64 = 16;

/// The run a stream belongs to.
#[derive(Debug, Clone)]
pub(super) struct Run {
    pub thread_id: String,
    pub run_id: String,
}

/// How a run's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunEnd {
    /// Done, cancelled or failed: the turn is over.
    Finished,
    /// Waiting for an approval: the turn goes on once a later run resumes it.
    Interrupted,
}

/// Maps one turn's events to AG-UI events, keeping what is open (a text or reasoning
/// message) so a stream resumed midway can reopen it first.
#[derive(Default)]
pub(super) struct RunEvents {
    /// The seq of the step being streamed: its messages' ids.
    step_seq: u64,
    text: Option<String>,
    reasoning: Option<String>,
    /// The last tool call started, which an approval request is about.
    last_call: Option<String>,
}

impl RunEvents {
    /// The events that open a run's stream: `RUN_STARTED`, then (for a stream resumed
    /// midway) the messages that were open at that point, started again (AG-UI clients
    /// check that content follows its start within one stream).
    pub(super) fn opening(&self, run: &Run) -> Vec<Value> {
        let mut out = vec![json!({
            "type": "RUN_STARTED", "threadId": run.thread_id, "runId": run.run_id,
        })];
        if let Some(id) = &self.reasoning {
            out.push(json!({"type": "REASONING_START", "messageId": id}));
            out.push(
                json!({"type": "REASONING_MESSAGE_START", "messageId": id, "role": "reasoning"}),
            );
        }
        if let Some(id) = &self.text {
            out.push(json!({"type": "TEXT_MESSAGE_START", "messageId": id, "role": "assistant"}));
        }
        out
    }

    fn close_text(&mut self, out: &mut Vec<Value>) {
        if let Some(id) = self.text.take() {
            out.push(json!({"type": "TEXT_MESSAGE_END", "messageId": id}));
        }
    }

    fn close_reasoning(&mut self, out: &mut Vec<Value>) {
        if let Some(id) = self.reasoning.take() {
            out.push(json!({"type": "REASONING_MESSAGE_END", "messageId": id}));
            out.push(json!({"type": "REASONING_END", "messageId": id}));
        }
    }

    fn close_all(&mut self, out: &mut Vec<Value>) {
        self.close_reasoning(out);
        self.close_text(out);
    }

    /// The AG-UI events one Parley event becomes, and whether it ends the run.
    pub(super) fn map(&mut self, run: &Run, event: &Event) -> (Vec<Value>, Option<RunEnd>) {
        let mut out = Vec::new();
        let end = match &event.kind {
            EventKind::OperatorStatus { phase, .. } if phase == "model" => {
                self.step_seq = event.seq;
                None
            }
            EventKind::Thinking { content } if !content.is_empty() => {
                if self.reasoning.is_none() {
                    let id = format!("reasoning_{}", self.step_seq);
                    out.push(json!({"type": "REASONING_START", "messageId": id}));
                    out.push(json!({
                        "type": "REASONING_MESSAGE_START", "messageId": id, "role": "reasoning",
                    }));
                    self.reasoning = Some(id);
                }
                let id = self.reasoning.as_deref().unwrap_or_default();
                out.push(
                    json!({"type": "REASONING_MESSAGE_CONTENT", "messageId": id, "delta": content}),
                );
                None
            }
            EventKind::Chunk { content } if !content.is_empty() => {
                self.close_reasoning(&mut out);
                if self.text.is_none() {
                    let id = format!("msg_{}", self.step_seq);
                    out.push(
                        json!({"type": "TEXT_MESSAGE_START", "messageId": id, "role": "assistant"}),
                    );
                    self.text = Some(id);
                }
                let id = self.text.as_deref().unwrap_or_default();
                out.push(
                    json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": id, "delta": content}),
                );
                None
            }
            EventKind::ChunkReset => {
                self.close_all(&mut out);
                None
            }
            EventKind::ToolCall { id, name, args } => {
                self.close_all(&mut out);
                let arguments = match args {
                    Value::String(raw) => raw.clone(),
                    other => other.to_string(),
                };
                // The step's message carries the call (AG-UI clients attach it to the
                // assistant message of that id, creating it if the step said nothing).
                let parent = format!("msg_{}", self.step_seq);
                out.push(json!({
                    "type": "TOOL_CALL_START", "toolCallId": id, "toolCallName": name,
                    "parentMessageId": parent,
                }));
                out.push(json!({"type": "TOOL_CALL_ARGS", "toolCallId": id, "delta": arguments}));
                out.push(json!({"type": "TOOL_CALL_END", "toolCallId": id}));
                self.last_call = Some(id.clone());
                None
            }
            EventKind::ToolResult { id, output, .. } => {
                out.push(json!({
                    "type": "TOOL_CALL_RESULT", "messageId": format!("tool_{id}"),
                    "toolCallId": id, "content": output, "role": "tool",
                }));
                None
            }
            EventKind::ApprovalRequest { request_id, tool, args, timeout_secs } => {
                self.close_all(&mut out);
                let expires = crate::clock::now_ms() + (timeout_secs * 1000.0) as i64;
                let mut interrupt = json!({
                    "id": request_id,
                    "reason": "tool_approval",
                    "message": format!("Allow the tool `{tool}` to run?"),
                    "expiresAt": crate::clock::rfc3339(expires),
                    "metadata": {"tool": tool, "args": args},
                });
                if let Some(call) = &self.last_call {
                    interrupt["toolCallId"] = json!(call);
                }
                out.push(json!({
                    "type": "RUN_FINISHED", "threadId": run.thread_id, "runId": run.run_id,
                    "outcome": {"type": "interrupt", "interrupts": [interrupt]},
                }));
                Some(RunEnd::Interrupted)
            }
            EventKind::Done { usage, model, .. } => {
                self.close_all(&mut out);
                out.push(json!({
                    "type": "RUN_FINISHED", "threadId": run.thread_id, "runId": run.run_id,
                    "outcome": {"type": "success"},
                    "result": {"turnId": event.turn_id, "model": model, "usage": usage},
                }));
                Some(RunEnd::Finished)
            }
            EventKind::Cancelled { .. } => {
                self.close_all(&mut out);
                out.push(json!({
                    "type": "RUN_FINISHED", "threadId": run.thread_id, "runId": run.run_id,
                    "outcome": {"type": "cancelled"},
                }));
                Some(RunEnd::Finished)
            }
            EventKind::Error { message, code } => {
                out.push(json!({"type": "RUN_ERROR", "message": message, "code": code.code()}));
                Some(RunEnd::Finished)
            }
            EventKind::SessionDeleted => {
                out.push(json!({
                    "type": "RUN_ERROR", "message": "the thread was deleted", "code": "NOT_FOUND",
                }));
                Some(RunEnd::Finished)
            }
            _ => None,
        };
        (out, end)
    }
}
