//! The conversation vocabulary shared by the store, the agent and the providers: messages
//! as a provider needs them to resume a conversation with tools, tool calls and usage.

use serde::{Deserialize, Serialize};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// Parses a stored role name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// A tool call the model asked for, complete (arguments are the raw JSON text the model
/// produced, kept verbatim so the history sent back is exactly what it said).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// The thinking a model did before a step's tool calls, with the provider's signature of
/// it: Anthropic wants it back, untouched, with the calls it led to while the turn goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedThinking {
    pub text: String,
    pub signature: String,
}

/// One message of a conversation, in the shape a provider takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// An assistant step's signed thinking, within the turn that made it (not stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<SignedThinking>,
    /// A tool's answer that is its failure (the call's record says so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tool_error: bool,
}

impl ChatMessage {
    /// A message with text only.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self::with_calls(role, content, Vec::new(), None)
    }

    /// A message with tool calls (an assistant's) or answering one (a tool's).
    pub fn with_calls(
        role: Role,
        content: impl Into<String>,
        tool_calls: Vec<ToolCall>,
        tool_call_id: Option<String>,
    ) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls,
            tool_call_id,
            thinking: None,
            tool_error: false,
        }
    }

    /// A tool's answer to call `call_id`; `failed` when it is the call's failure.
    pub fn tool_result(content: impl Into<String>, call_id: String, failed: bool) -> Self {
        Self {
            tool_error: failed,
            ..Self::with_calls(Role::Tool, content, Vec::new(), Some(call_id))
        }
    }
}

/// Token counts of one model call or one turn, and what they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Usage {
    /// Every input token, cached ones included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Input tokens read from the provider's prompt cache (part of `prompt_tokens`).
    pub cached_tokens: u64,
    /// The price of the tokens, when the models' prices are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl Usage {
    /// Adds another call's usage to this one (a cost is known once either is).
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.cached_tokens += other.cached_tokens;
        self.cost = match (self.cost, other.cost) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }
}
