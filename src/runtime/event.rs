//! Runtime events: what happens in a session, each with its per-session `seq`, serialized
//! once into the JSON frame every watcher is sent.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::agent::AgentError;
use crate::conversation::Usage;
use crate::providers::ProviderError;

/// A tool call as reported at the end of a turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolCallSummary {
    pub id: String,
    pub name: String,
    pub args: serde_json::Value,
    pub output: String,
    pub is_error: bool,
    pub duration_ms: u64,
}

/// Why a turn failed, as its stable wire code (`PROVIDER_ERROR`, ...); each protocol
/// adapter maps it to its own status or shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TurnError {
    /// No provider URL is configured.
    ProviderNotConfigured,
    /// The model call failed after retries.
    ProviderError,
    /// The iteration limit, or storage, failed the turn.
    AgentError,
    /// The user's monthly budget was spent before the turn began.
    BudgetExceeded,
}

impl TurnError {
    /// The error a stored wire code names (an unknown one reads as `AgentError`).
    pub fn from_code(code: &str) -> Self {
        match code {
            "PROVIDER_NOT_CONFIGURED" => TurnError::ProviderNotConfigured,
            "PROVIDER_ERROR" => TurnError::ProviderError,
            "BUDGET_EXCEEDED" => TurnError::BudgetExceeded,
            _ => TurnError::AgentError,
        }
    }

    /// The wire code.
    pub fn code(self) -> &'static str {
        match self {
            TurnError::ProviderNotConfigured => "PROVIDER_NOT_CONFIGURED",
            TurnError::ProviderError => "PROVIDER_ERROR",
            TurnError::AgentError => "AGENT_ERROR",
            TurnError::BudgetExceeded => "BUDGET_EXCEEDED",
        }
    }

    /// The stable wire code and a client-safe message of a failed turn.
    pub(super) fn of(err: &AgentError) -> (TurnError, String) {
        match err {
            AgentError::Provider(ProviderError::NotConfigured) => {
                (TurnError::ProviderNotConfigured, err.to_string())
            }
            AgentError::Provider(provider) => {
                tracing::warn!(error = %provider, kind = provider.kind(), "the model call failed");
                (TurnError::ProviderError, provider.public_message())
            }
            AgentError::IterationLimit(_) => (TurnError::AgentError, err.to_string()),
            AgentError::BudgetExceeded { .. } => (TurnError::BudgetExceeded, err.to_string()),
            AgentError::Store(store) => {
                tracing::error!(%store, "storage failed during a turn");
                (TurnError::AgentError, "the turn failed because storage failed".into())
            }
            AgentError::Cancelled => (TurnError::AgentError, "cancelled".into()),
        }
    }
}

/// What happened. The serde names are the `/ws/chat` frame types of DESIGN.md. Nodes of a
/// cluster read each other's frames back into it (fixed words are `Cow`s, borrowed when
/// made here, owned when read).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A user message was accepted (so every watcher sees it, not only the sender).
    UserMessage {
        content: String,
        /// The turn it follows, by that turn's user message's seq, when the client chose
        /// it (an edit or a regenerated answer: a new branch); otherwise it follows the
        /// session's newest turn.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<u64>,
    },
    /// What the turn is doing now: `queued`, `model`, `tool`, `approval`.
    OperatorStatus {
        phase: Cow<'static, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Chunk {
        content: String,
    },
    Thinking {
        content: String,
    },
    ToolCall {
        id: String,
        name: String,
        args: serde_json::Value,
    },
    ToolResult {
        id: String,
        name: String,
        output: String,
        is_error: bool,
        duration_ms: u64,
        /// `TOOL_ERROR` when the tool failed (its output says why; the turn goes on).
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<Cow<'static, str>>,
    },
    /// The streamed draft so far belonged to a finished step; the next chunks start anew.
    ChunkReset,
    Done {
        full_response: String,
        usage: Usage,
        model: Option<String>,
        duration_ms: u64,
        tool_calls: Vec<ToolCallSummary>,
    },
    Cancelled {
        partial: String,
    },
    Error {
        message: String,
        code: TurnError,
    },
    /// A status pushed in from outside (`POST /api/sessions/{id}/notify`).
    AgentEvent {
        event: serde_json::Value,
    },
    /// A tool call waits for the user's decision.
    ApprovalRequest {
        request_id: String,
        tool: String,
        args: serde_json::Value,
        timeout_secs: f64,
    },
    /// A pending approval was decided (`approve`, `deny`, `always` or `cancelled`).
    ApprovalResolved {
        request_id: String,
        decision: Cow<'static, str>,
    },
    /// Nobody answered an approval in time: the tool call was denied.
    ApprovalExpired {
        request_id: String,
    },
    /// The session was deleted; watchers should stop.
    SessionDeleted,

    // Lifecycle events of the global feed (`GET /api/events`): no content, ever.
    SessionCreated,
    TurnStarted,
    TurnFinished {
        status: Cow<'static, str>,
    },
    ToolCalled {
        name: String,
    },
    ApprovalRequested {
        request_id: String,
        tool: String,
    },
}

/// One event of a session.
#[derive(Debug)]
pub struct Event {
    pub seq: u64,
    pub session_id: String,
    pub turn_id: Option<String>,
    pub kind: EventKind,
    /// The JSON frame: the kind's fields plus `seq`, `session_id` and `turn_id`.
    pub json: Bytes,
}

/// A frame read back (from another node).
#[derive(Deserialize)]
struct ReadFrame {
    #[serde(flatten)]
    kind: EventKind,
    seq: u64,
    session_id: String,
    #[serde(default)]
    turn_id: Option<String>,
}

impl Event {
    /// The event a frame carries, keeping the frame's bytes as they are: read once per
    /// node, never serialized again.
    pub fn from_frame(json: Bytes) -> Result<Self, serde_json::Error> {
        let frame: ReadFrame = serde_json::from_slice(&json)?;
        Ok(Self {
            seq: frame.seq,
            session_id: frame.session_id,
            turn_id: frame.turn_id,
            kind: frame.kind,
            json,
        })
    }

    /// Builds the event and its JSON frame: the kind's fields, then `seq`, `session_id` and
    /// `turn_id`.
    pub fn new(seq: u64, session_id: &str, turn_id: Option<&str>, kind: EventKind) -> Self {
        // This runs once per streamed chunk, so the frame is written straight to bytes: the
        // kind's object (serializing these plain types cannot fail), then the fields of
        // where it belongs in place of its closing brace (serde's `flatten` would go
        // through a map of buffered values instead).
        let mut json = Vec::with_capacity(96 + session_id.len());
        let _ = serde_json::to_writer(&mut json, &kind);
        let object = json.last() == Some(&b'}');
        debug_assert!(object, "an event kind is written as a JSON object");
        if object {
            json.pop();
            json.extend_from_slice(if json.len() > 1 { b",\"seq\":" } else { b"\"seq\":" });
            let _ = serde_json::to_writer(&mut json, &seq);
            json.extend_from_slice(b",\"session_id\":");
            let _ = serde_json::to_writer(&mut json, session_id);
            if let Some(turn_id) = turn_id {
                json.extend_from_slice(b",\"turn_id\":");
                let _ = serde_json::to_writer(&mut json, turn_id);
            }
            json.push(b'}');
        }
        let json = Bytes::from(json);
        Self {
            seq,
            session_id: session_id.to_owned(),
            turn_id: turn_id.map(str::to_owned),
            kind,
            json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_frame() {
        let kinds = [
            EventKind::UserMessage { content: "hi \u{0} there".into(), parent: None },
            EventKind::OperatorStatus { phase: "queued".into(), detail: Some("1 ahead".into()) },
            EventKind::Chunk { content: "a".into() },
            EventKind::ToolResult {
                id: "c1".into(),
                name: "shell".into(),
                output: "out".into(),
                is_error: true,
                duration_ms: 3,
                code: Some("TOOL_ERROR".into()),
            },
            EventKind::ChunkReset,
            EventKind::Done {
                full_response: "done".into(),
                usage: Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                    total_tokens: 3,
                    ..Usage::default()
                },
                model: Some("m".into()),
                duration_ms: 9,
                tool_calls: Vec::new(),
            },
            EventKind::Error { message: "boom".into(), code: TurnError::ProviderError },
            EventKind::ApprovalResolved { request_id: "r".into(), decision: "always".into() },
            EventKind::SessionDeleted,
            EventKind::TurnFinished { status: "done".into() },
        ];
        for kind in kinds {
            let event = Event::new(7, "s1", Some("t1"), kind);
            let read = Event::from_frame(event.json.clone()).unwrap();
            assert_eq!((read.seq, read.session_id.as_str()), (7, "s1"));
            assert_eq!(read.turn_id.as_deref(), Some("t1"));
            let again = Event::new(7, "s1", Some("t1"), read.kind);
            assert_eq!(again.json, event.json, "the same frame");
        }
        assert!(Event::from_frame(Bytes::from_static(b"{\"type\":\"nonsense\"}")).is_err());
    }

    #[test]
    fn frames_carry_the_kind_and_where_it_belongs() {
        let event = Event::new(7, "s1", Some("t1"), EventKind::Chunk { content: "hi".into() });
        let value: serde_json::Value = serde_json::from_slice(&event.json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": "chunk", "content": "hi", "seq": 7, "session_id": "s1", "turn_id": "t1"})
        );
        let reset = Event::new(8, "s1", None, EventKind::ChunkReset);
        let value: serde_json::Value = serde_json::from_slice(&reset.json).unwrap();
        assert_eq!(value, serde_json::json!({"type": "chunk_reset", "seq": 8, "session_id": "s1"}));
    }
}
