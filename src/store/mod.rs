//! Durable storage: the [`Store`] trait, its records, and the constructor that picks a
//! backend from the URL scheme: `sqlite://` (one node, the default) or `postgres://` /
//! `postgresql://` (nodes sharing one database). The backends mirror each other file for
//! file in `sqlite/` and `postgres/`, behind one contract test (`tests/it/store_contract`).
//!
//! Everything is append-only per message: appending costs the same at message 10 000 as at
//! message 1, and reading a session never touches another session's rows.

pub mod copy;
mod postgres;
mod sqlite;
mod usage;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::conversation::{Role, ToolCall, Usage};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub(crate) use usage::{Sums, from_nanos, nanos, stored_count};
pub use usage::{UsageGroup, UsageLine, UsageQuery};

/// Errors of the storage layer. Driver errors stay inside it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
    /// The database cannot be reached now (down, unreachable, no connection in time).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The write needs the session's lease and this node no longer holds it (another node
    /// took it over, or the session is gone).
    #[error("this node no longer holds the session's lease")]
    Fenced,
    #[error("storage failure: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            // PostgreSQL going away or refusing connections: connection exceptions (class
            // 08), shutdowns and start-ups (57P01-57P03), too many connections (53300).
            sqlx::Error::Database(db)
                if db.code().is_some_and(|code| {
                    code.starts_with("08")
                        || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
                }) =>
            {
                StoreError::Unavailable(db.message().to_owned())
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
            other => StoreError::Other(other.to_string()),
        }
    }
}

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
    pub session_id: String,
    pub session_name: Option<String>,
    pub seq: i64,
    pub role: Role,
    /// The words around the match.
    pub snippet: String,
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
    fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Complete => "complete",
            MessageStatus::Streaming => "streaming",
            MessageStatus::Interrupted => "interrupted",
        }
    }

    fn parse(text: &str) -> Self {
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

/// Durable storage of users, sessions, messages, turns and tool calls.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates the user if missing.
    async fn ensure_user(&self, user: &str) -> Result<(), StoreError>;

    /// Loads the user's session `id`, creating it (named `name`) if missing; the flag says
    /// whether it was created.
    async fn open_session(
        &self,
        user: &str,
        id: &str,
        name: Option<&str>,
    ) -> Result<(Session, bool), StoreError>;

    /// The user's session `id`.
    async fn session(&self, user: &str, id: &str) -> Result<Option<Session>, StoreError>;

    /// Every user's sessions, newest activity first, and their total count (admins).
    async fn list_all_sessions(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Session>, u64), StoreError>;

    /// The user's sessions, archived ones or the others, pinned ones first, then newest
    /// activity first, and their total count.
    async fn list_sessions(
        &self,
        user: &str,
        archived: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Session>, u64), StoreError>;

    /// Pins or unpins, archives or brings back the user's session (`None` leaves it).
    async fn set_session_flags(
        &self,
        user: &str,
        id: &str,
        pinned: Option<bool>,
        archived: Option<bool>,
    ) -> Result<Session, StoreError>;

    /// The user's messages (their own and the agent's answers, not tool output) matching
    /// every word of `query`, newest first, `limit` from `offset`, with how many match.
    async fn search_messages(
        &self,
        user: &str,
        query: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<SearchHit>, u64), StoreError>;

    /// Renames a session.
    async fn rename_session(&self, user: &str, id: &str, name: &str)
    -> Result<Session, StoreError>;

    /// Deletes a session and everything in it.
    async fn delete_session(&self, user: &str, id: &str) -> Result<(), StoreError>;

    /// Takes the session's lease for `node` until `until` (epoch ms) if nobody else holds a
    /// live one (or, with `steal`, whoever holds it: a node that runs alone), raising its
    /// fence. In the same transaction, whatever the previous holder left unfinished is
    /// cleaned up: running turns, streaming messages and tool calls are marked interrupted.
    /// `None` when another node holds a live lease.
    async fn acquire_lease(
        &self,
        session: i64,
        node: &str,
        until: i64,
        steal: bool,
    ) -> Result<Option<Lease>, StoreError>;

    /// Extends every lease `node` holds to `until`; returns the fences it still holds.
    async fn renew_leases(&self, node: &str, until: i64) -> Result<Vec<Fence>, StoreError>;

    /// Gives the lease up (if it is still this fence's), so another node may take it at
    /// once.
    async fn release_lease(&self, fence: Fence) -> Result<(), StoreError>;

    /// Sessions with queued or running turns whose lease is free or expired at `now`.
    async fn orphans(&self, now: i64) -> Result<Vec<Orphan>, StoreError>;

    /// The node holding a live lease (at `now`) on session `session`, if any.
    async fn lease_holder(&self, session: i64, now: i64) -> Result<Option<String>, StoreError>;

    /// How many of the user's turns are queued or running, over every session and node.
    async fn unfinished_turns(&self, user: &str) -> Result<u64, StoreError>;

    /// Adds a finished model call (step `step` of `turn_id`, on `model`) to `user`'s usage
    /// ledger; once per step. Not fenced: the call was made, whatever becomes of the turn.
    async fn record_usage(
        &self,
        user: &str,
        turn_id: &str,
        step: i64,
        model: &str,
        usage: &Usage,
    ) -> Result<(), StoreError>;

    /// Usage summed by user, model or day, from the ledger (which outlives sessions).
    async fn usage_report(&self, query: &UsageQuery) -> Result<Vec<UsageLine>, StoreError>;

    /// What `user` has spent since `since` (epoch milliseconds).
    async fn spent_since(&self, user: &str, since: i64) -> Result<f64, StoreError>;

    /// The id and key of the user's session that turn `turn_id` belongs to.
    async fn turn_session(
        &self,
        user: &str,
        turn_id: &str,
    ) -> Result<Option<(String, i64)>, StoreError>;

    /// The user's turn `turn_id`, if it exists.
    async fn turn(&self, user: &str, turn_id: &str) -> Result<Option<TurnRecord>, StoreError>;

    /// The messages of the turn whose user message has `turn_seq`, in order.
    async fn turn_messages(&self, session: i64, turn_seq: i64) -> Result<Vec<Message>, StoreError>;

    /// Records whether a turn is running in the session (`idle` / `running`).
    async fn set_session_state(&self, fence: Fence, state: &str) -> Result<(), StoreError>;

    /// Raises the session's reserved sequence bound.
    async fn reserve_seq(&self, fence: Fence, up_to: i64) -> Result<(), StoreError>;

    /// Appends a message to the fenced session and returns its id.
    async fn append_message(&self, fence: Fence, message: &NewMessage) -> Result<i64, StoreError>;

    /// Rewrites the one message still being produced (partial flush or completion).
    async fn update_message(
        &self,
        fence: Fence,
        id: i64,
        content: &str,
        reasoning: Option<&str>,
        tool_calls: &[ToolCall],
        status: MessageStatus,
    ) -> Result<(), StoreError>;

    /// Writes the partial text of messages still being produced, in one transaction;
    /// a message no longer `streaming`, or whose session's fence moved on, keeps what it
    /// has.
    async fn update_partials(&self, partials: &[PartialText]) -> Result<(), StoreError>;

    /// Up to `limit` messages of a branch in conversation order before the message
    /// numbered `before_seq` (all of them if `None`), oldest first, with each user
    /// message's siblings. The branch is the one through the message numbered `branch`,
    /// down to its newest turn; `None` is the current one, ending at the session's newest
    /// turn.
    async fn messages(
        &self,
        session: i64,
        branch: Option<i64>,
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError>;

    /// The `turn_seq` of the message numbered `seq`, if the session has it.
    async fn turn_of(&self, session: i64, seq: i64) -> Result<Option<i64>, StoreError>;

    /// The conversation up to and including the turn whose user message is `up_to_turn`,
    /// along that turn's branch, in conversation order, for the provider.
    async fn history(&self, session: i64, up_to_turn: i64) -> Result<Vec<Message>, StoreError>;

    /// Records a turn for `model` with the user message that asked for it, in one
    /// transaction: queued, or with `starts`, already running (nothing is ahead of it, so
    /// it starts as it is admitted) with its session marked running.
    async fn create_turn(
        &self,
        fence: Fence,
        turn_id: &str,
        model: &str,
        message: &NewMessage,
        starts: bool,
    ) -> Result<(), StoreError>;

    /// Marks a turn, and its session, running.
    async fn start_turn(&self, fence: Fence, turn_id: &str) -> Result<(), StoreError>;

    /// Records how a turn ended, with its usage and what [`TurnEnd`] carries, in one
    /// transaction. Fenced: the ledger entry is still recorded.
    async fn finish_turn(
        &self,
        fence: Fence,
        turn_id: &str,
        end: &TurnEnd,
    ) -> Result<(), StoreError>;

    /// Records a tool call as running.
    async fn start_tool_call(
        &self,
        fence: Fence,
        turn_id: &str,
        call: &ToolCall,
    ) -> Result<i64, StoreError>;

    /// Records a tool call's result.
    async fn finish_tool_call(
        &self,
        fence: Fence,
        pk: i64,
        output: &str,
        is_error: bool,
        status: &str,
        duration_ms: i64,
    ) -> Result<(), StoreError>;

    /// The session's tool-call timeline, oldest first.
    async fn tool_calls(&self, session: i64) -> Result<Vec<ToolCallRecord>, StoreError>;

    /// Turn `turn_id`'s tool calls in the session, in the order they started.
    async fn turn_tool_calls(
        &self,
        session: i64,
        turn_id: &str,
    ) -> Result<Vec<ToolCallRecord>, StoreError>;

    /// Stores a new token (creating its user); `hash` is the hex SHA-256 of the secret.
    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError>;

    /// The token whose secret hashes to `hash`, revoked or not.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Every token, newest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Revokes a token; `NotFound` if there is no such active token.
    async fn revoke_token(&self, id: &str) -> Result<TokenRecord, StoreError>;

    /// Ids of tokens revoked at or after `since` (epoch ms).
    async fn revoked_since(&self, since: i64) -> Result<Vec<String>, StoreError>;

    /// How many tokens are active.
    async fn active_tokens(&self) -> Result<u64, StoreError>;

    /// Stores a pairing code's hash, valid until `expires_at`, granting `grant`.
    async fn create_pairing_code(
        &self,
        hash: &str,
        expires_at: i64,
        grant: &PairingGrant,
    ) -> Result<(), StoreError>;

    /// What an unused, unexpired pairing code grants; `None` for any other code.
    async fn pairing_code(&self, hash: &str) -> Result<Option<PairingGrant>, StoreError>;

    /// Spends the pairing code and stores `token` in one transaction. With `new_user`, the
    /// token's user is created and must not exist yet (`Conflict` otherwise, and the code
    /// stays unspent); `NotFound` if the code is no longer valid.
    async fn pair(&self, hash: &str, token: &TokenRecord, new_user: bool)
    -> Result<(), StoreError>;

    /// Appends to the audit log.
    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The newest audit entries.
    async fn audit_log(&self, limit: u64) -> Result<Vec<AuditEntry>, StoreError>;

    /// Deletes sessions past the per-user count or idle longer than `ttl_ms` (0 = no
    /// limit); `user` limits it to one user. Running sessions are kept. Returns the
    /// `(user, id)` of each deleted session.
    async fn prune(
        &self,
        user: Option<&str>,
        max_sessions: u64,
        ttl_ms: i64,
    ) -> Result<Vec<(String, String)>, StoreError>;
}

/// The words of a search, lowercased: runs of letters and digits (anything else, quotes
/// and operators included, only separates them), at most 16.
fn search_words(query: &str) -> Vec<String> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .take(16)
        .map(str::to_lowercase)
        .collect()
}

/// Gives each user message in `messages` its siblings from `rows` of `(parent_turn, seq)`
/// in `seq` order, where it has any (one row is the message itself).
fn attach_siblings(messages: &mut [Message], rows: &[(i64, i64)]) {
    for message in messages.iter_mut() {
        let Some(parent) = message.parent else { continue };
        let siblings: Vec<i64> =
            rows.iter().filter(|(p, _)| *p == parent).map(|(_, seq)| *seq).collect();
        if siblings.len() > 1 {
            message.siblings = siblings;
        }
    }
}

/// Opens the store named by `url`, creating and migrating it as needed.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match Backend::of(url)? {
        Backend::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path).await?)),
        Backend::Postgres => Ok(Arc::new(PostgresStore::open(url).await?)),
    }
}

/// The backend a store URL names.
enum Backend<'a> {
    Sqlite(&'a Path),
    Postgres,
}

impl<'a> Backend<'a> {
    /// `sqlite://PATH`, `postgres://…` or `postgresql://…`; anything else is refused.
    fn of(url: &'a str) -> Result<Self, StoreError> {
        match url.split_once("://") {
            Some(("sqlite", path)) => Ok(Backend::Sqlite(Path::new(path))),
            Some(("postgres" | "postgresql", _)) => Ok(Backend::Postgres),
            Some((scheme, _)) => Err(StoreError::UnsupportedUrl(scheme.to_owned())),
            None => Err(StoreError::UnsupportedUrl(url.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_refuses_an_unknown_scheme() {
        for url in ["mysql://localhost/parley", "parley.db"] {
            assert!(matches!(open(url).await, Err(StoreError::UnsupportedUrl(_))), "{url}");
        }
    }
}
