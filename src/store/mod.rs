//! Durable storage: the [`Store`] trait, its records, and the constructor that picks a
//! backend from the URL scheme: `sqlite://` (one node, the default) or `postgres://` /
//! `postgresql://` (nodes sharing one database). The backends mirror each other file for
//! file in `sqlite/` and `postgres/`, behind one contract test (`tests/it/store_contract`).
//!
//! Everything is append-only per message: appending costs the same at message 10 000 as at
//! message 1, and reading a session never touches another session's rows.

pub mod copy;
mod postgres;
mod records;
mod sqlite;
mod usage;

use std::path::Path;
use std::sync::Arc;

use crate::conversation::{ToolCall, Usage};
use async_trait::async_trait;

pub use postgres::PostgresStore;
pub use records::{
    AnswerWrite, AuditEntry, Fence, Lease, LedgerEntry, Message, MessageStatus, NewMessage, Orphan,
    PairingGrant, PartialText, QueuedTurn, RunningTurn, SearchHit, Session, TokenRecord,
    ToolCallRecord, TurnEnd, TurnRecord, TurnStatus,
};
use records::{attach_siblings, search_prefix, search_words};
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

    /// The user's turns running now (every user's with `None`), over every session and
    /// node whose lease is live at `now` (a dead node's turns wait for their adoption),
    /// oldest first.
    async fn running_turns(
        &self,
        user: Option<&str>,
        now: i64,
    ) -> Result<Vec<RunningTurn>, StoreError>;

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

    /// Every message of the session, of every branch, in conversation order (turn by turn,
    /// each turn's user message naming the turn it follows).
    async fn all_messages(&self, session: i64) -> Result<Vec<Message>, StoreError>;

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
