//! What the store reads and writes: sessions, messages, turns, tool calls, leases and
//! identities as the rest of Parley sees them, and what the backends share in reading them
//! (the siblings of a branch's user messages, the words of a search).

use serde::Serialize;

use crate::conversation::{Role, ToolCall, Usage};

/// A session as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// Internal key; never shown to clients.
    #[serde(skip)]
    pub pk: i64,
    #[serde(skip)]
    pub user_id: String,
    pub id: String,
    pub name: Option<String>,
    pub state: String,
    pub message_count: i64,
    /// Upper bound of the sequence numbers handed out for this session.
    #[serde(skip)]
    pub reserved_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Listed first, and never pruned.
    pub pinned: bool,
    /// Listed apart (`?archived=true`), not with the rest.
    pub archived: bool,
}

/// A message that matched a search, with its session.
#[derive(Debug, Clone)]
pub struct SearchHit {
    /// The session's id, as its user knows it.
    pub session_id: String,
    pub session_name: Option<String>,
    /// The message's seq: open the session at it with `?branch=`.
    pub seq: i64,
    /// `user` or `assistant`.
    pub role: Role,
    /// The words around the match.
    pub snippet: String,
    /// When the message was stored (epoch ms).
    pub created_at: i64,
}

/// Whether a message is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Written once and final.
    Complete,
    /// The text of a step still streaming, flushed on a timer.
    Streaming,
    /// Partial text of a step stopped by cancel, error or crash.
    Interrupted,
}

impl MessageStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Complete => "complete",
            MessageStatus::Streaming => "streaming",
            MessageStatus::Interrupted => "interrupted",
        }
    }

    pub(super) fn parse(text: &str) -> Self {
        match text {
            "streaming" => MessageStatus::Streaming,
            "interrupted" => MessageStatus::Interrupted,
            _ => MessageStatus::Complete,
        }
    }
}

/// The text so far of a message being streamed.
#[derive(Debug, Clone)]
pub struct PartialText {
    /// The lease the turn writing it runs under.
    pub fence: Fence,
    pub message_id: i64,
    pub content: String,
    pub reasoning: Option<String>,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub seq: i64,
    /// The seq of the turn's user message; conversation order is `(turn_seq, seq)`.
    pub turn_seq: i64,
    pub turn_id: Option<String>,
    pub role: Role,
    pub content: String,
    pub reasoning: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
    pub tool_name: Option<String>,
    pub status: MessageStatus,
    /// A turn's first message (its user message): the turn it follows, by that turn's
    /// `turn_seq` (0: none, it starts the conversation). `None` follows the session's
    /// newest turn. Ignored on a turn's other messages.
    pub parent: Option<i64>,
}

impl NewMessage {
    /// A complete message with text only.
    pub fn text(
        seq: i64,
        turn_seq: i64,
        turn_id: &str,
        role: Role,
        content: impl Into<String>,
    ) -> Self {
        Self {
            seq,
            turn_seq,
            turn_id: Some(turn_id.to_owned()),
            role,
            content: content.into(),
            reasoning: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            tool_name: None,
            status: MessageStatus::Complete,
            parent: None,
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub id: i64,
    pub seq: i64,
    #[serde(skip)]
    pub turn_seq: i64,
    pub turn_id: Option<String>,
    pub role: Role,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    pub status: MessageStatus,
    pub created_at: i64,
    /// On a turn's user message: the turn it follows, by that turn's user message's `seq`
    /// (0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<i64>,
    /// On a turn's user message that has others beside it (an edit, a regenerated
    /// answer): the `seq` of every user message following the same turn, this one's
    /// included, oldest first (read with pages of messages only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub siblings: Vec<i64>,
    /// A tool's answer that is its call's failure (read with the provider's history only).
    #[serde(skip)]
    pub tool_error: bool,
}

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnStatus {
    Queued,
    Running,
    Done,
    Error,
    Cancelled,
    Interrupted,
}

impl TurnStatus {
    /// Reads a stored status name (an unknown one reads as `error`).
    pub fn parse(text: &str) -> Self {
        match text {
            "queued" => TurnStatus::Queued,
            "running" => TurnStatus::Running,
            "done" => TurnStatus::Done,
            "cancelled" => TurnStatus::Cancelled,
            "interrupted" => TurnStatus::Interrupted,
            _ => TurnStatus::Error,
        }
    }

    /// Whether the turn has ended.
    pub fn finished(self) -> bool {
        !matches!(self, TurnStatus::Queued | TurnStatus::Running)
    }

    /// The storage and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnStatus::Queued => "queued",
            TurnStatus::Running => "running",
            TurnStatus::Done => "done",
            TurnStatus::Error => "error",
            TurnStatus::Cancelled => "cancelled",
            TurnStatus::Interrupted => "interrupted",
        }
    }
}

/// A turn as stored, for clients that look one up by its id.
#[derive(Debug, Clone)]
pub struct TurnRecord {
    pub id: String,
    pub session_id: String,
    pub session_pk: i64,
    /// The seq of its user message, which is its messages' `turn_seq`.
    pub user_seq: i64,
    pub status: TurnStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub model: Option<String>,
    pub usage: Usage,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// The end of a turn, with what is written in the same transaction: the answer's last
/// write, the last model call's ledger entry, and the session's return to idle.
#[derive(Debug, Clone)]
pub struct TurnEnd {
    pub status: TurnStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub model: Option<String>,
    pub usage: Usage,
    pub duration_ms: i64,
    /// The answer, complete: its row, or the completion of the row a partial flush made.
    pub answer: Option<AnswerWrite>,
    /// The last model call, for the usage ledger. Recorded even when the end is refused
    /// (fenced): the call was made, whoever holds the session now.
    pub ledger: Option<LedgerEntry>,
    /// Nothing else is queued: the session goes back to idle.
    pub idle: bool,
}

/// The last write of a turn's answer, made with the turn's end.
#[derive(Debug, Clone)]
pub enum AnswerWrite {
    /// Its first and only write.
    Insert(NewMessage),
    /// The row a partial flush made, now complete.
    Update { id: i64, content: String, reasoning: Option<String> },
}

/// One model call of a turn, for the usage ledger.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub user: String,
    pub turn_id: String,
    /// The seq of the call's step: with the turn, what makes a call counted once.
    pub step: i64,
    pub model: String,
    pub usage: Usage,
}

/// A tool call of the persisted timeline.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCallRecord {
    pub id: String,
    pub turn_id: String,
    pub name: String,
    /// Raw JSON arguments as the model wrote them.
    pub args: String,
    pub output: Option<String>,
    pub is_error: bool,
    /// `running`, `done` or `interrupted`.
    pub status: String,
    pub started_at: i64,
    pub duration_ms: Option<i64>,
}

/// The right to write a session's turns: the session and the fencing token of the lease
/// this node took on it. Every write of a turn carries it and fails with
/// [`StoreError::Fenced`] once another node has taken the lease since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The session's key.
    pub session: i64,
    /// Raised on every acquisition of the session's lease, never reused.
    pub token: i64,
}

/// A session's lease, just taken, and what its previous holder left behind (a crashed or
/// partitioned node's turns), already cleaned up in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub fence: Fence,
    /// The session's reserved `seq` bound when the lease was taken: numbers up to it may
    /// have been handed out.
    pub reserved_seq: i64,
    /// The highest `seq` of a stored message: a new holder that knows which numbers were
    /// published (a cluster's stream) numbers after both.
    pub stored_seq: i64,
    /// Turns that were running under the previous holder, now marked interrupted, with the
    /// partial answer each had stored.
    pub interrupted: Vec<(String, String)>,
    /// Turns accepted but not started, oldest first: the new holder runs them.
    pub queued: Vec<QueuedTurn>,
}

/// A stored turn that waits to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTurn {
    pub turn_id: String,
    /// The `seq` of its user message.
    pub user_seq: i64,
    /// The model it asked for.
    pub model: Option<String>,
}

/// A session with unfinished turns and no live lease: its node stopped (or lost the
/// database) while it ran them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub user: String,
    pub id: String,
}

/// A turn running now, on whichever node holds its session's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningTurn {
    pub turn_id: String,
    pub user: String,
    pub session_id: String,
    /// The node holding the session's lease (the one running the turn).
    pub node: Option<String>,
    pub started_at: i64,
    /// Turns of the same session waiting behind it.
    pub queued: u64,
}

/// An API token as stored (its secret is never stored, only its SHA-256).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub user: String,
    pub label: Option<String>,
    pub admin: bool,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// Hex SHA-256 of the secret.
    #[serde(skip)]
    pub hash: String,
}

/// What a pairing code grants: a new device of `user` (minted by an admin or the
/// operator), or, without one, a new user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairingGrant {
    pub user: Option<String>,
    /// Whether the paired token is an admin token (only for codes minted for a user).
    pub admin: bool,
}

/// One security event of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: i64,
    pub kind: String,
    pub user: Option<String>,
    pub ip: Option<String>,
    pub detail: Option<String>,
}

/// The words of a search, lowercased: runs of letters and digits (anything else, quotes
/// and operators included, only separates them), at most 16.
pub(super) fn search_words(query: &str) -> Vec<String> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .take(16)
        .map(str::to_lowercase)
        .collect()
}

/// Whether a search word matches as the start of words. A single letter is matched whole:
/// as a prefix it would expand to a good part of every user's vocabulary before the
/// search keeps the caller's own messages.
pub(super) fn search_prefix(word: &str) -> bool {
    word.chars().nth(1).is_some()
}

/// Gives each user message in `messages` its siblings from `rows` of `(parent_turn, seq)`
/// in `seq` order, where it has any (one row is the message itself).
pub(super) fn attach_siblings(messages: &mut [Message], rows: &[(i64, i64)]) {
    for message in messages.iter_mut() {
        let Some(parent) = message.parent else { continue };
        let siblings: Vec<i64> =
            rows.iter().filter(|(p, _)| *p == parent).map(|(_, seq)| *seq).collect();
        if siblings.len() > 1 {
            message.siblings = siblings;
        }
    }
}
