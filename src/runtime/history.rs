//! What clients read about sessions — lists, message pages, the tool-call timeline — and
//! renaming: the store behind the runtime, so protocol adapters never reach it directly.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::session::RunningTurn;
use super::{LiveSession, LiveState, Runtime, RuntimeError};
use crate::store::{Message, SearchHit, Session, StoreError, ToolCallRecord, TurnRecord};

/// A turn as stored, with what it said and did.
pub struct TurnView {
    pub record: TurnRecord,
    /// Its messages in order: the user's, then each step's answer and tool results.
    pub messages: Vec<Message>,
    /// Its tool calls, in the order they started.
    pub tool_calls: Vec<ToolCallRecord>,
}

/// Which messages of a session to read.
#[derive(Debug, Clone, Copy)]
pub struct MessagePage {
    /// A message on the branch: the branch through it, down to its newest turn. `None`:
    /// the current branch, ending at the session's newest turn.
    pub branch: Option<i64>,
    /// Up to `limit` messages before this one in conversation order (the newest if `None`).
    pub before_seq: Option<i64>,
    /// At most this many messages.
    pub limit: u64,
}

/// What to change of a session.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionChange<'a> {
    /// A new name.
    pub name: Option<&'a str>,
    /// Pinned sessions list first and are never pruned.
    pub pinned: Option<bool>,
    /// Archived sessions list apart.
    pub archived: Option<bool>,
}

/// A page of a user's sessions, newest first.
pub struct SessionPage {
    pub sessions: Vec<Session>,
    pub total: u64,
}

impl Runtime {
    /// The user's sessions (every user's with `all`), newest first; the archived ones
    /// with `archived`, the others (pinned ones first) without.
    pub async fn list_sessions(
        &self,
        user: &str,
        all: bool,
        archived: bool,
        offset: u64,
        limit: u64,
    ) -> Result<SessionPage, RuntimeError> {
        let store = &self.inner.store;
        let (sessions, total) = if all {
            store.list_all_sessions(offset, limit).await?
        } else {
            store.list_sessions(user, archived, offset, limit).await?
        };
        Ok(SessionPage { sessions, total })
    }

    /// The user's messages matching every word of `query` (as word prefixes), newest first.
    pub async fn search(
        &self,
        user: &str,
        query: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<SearchHit>, u64), RuntimeError> {
        Ok(self.inner.store.search_messages(user, query, offset, limit).await?)
    }

    /// The session, its live state if loaded (read first: the rest is at least as new),
    /// and a page of one of its branches' messages, oldest first.
    pub async fn session_messages(
        &self,
        user: &str,
        id: &str,
        page: MessagePage,
    ) -> Result<(Session, Option<LiveState>, Vec<Message>), RuntimeError> {
        let mut live = self.loaded(user, id).await?.map(|session| session.state());
        let store = &self.inner.store;
        let session = store.session(user, id).await?.ok_or(RuntimeError::NotFound)?;
        if live.is_none() && self.inner.bus.clustered() {
            live = self.state_elsewhere(user, &session).await?;
        }
        if let Some(seq) = page.branch
            && store.turn_of(session.pk, seq).await?.is_none()
        {
            return Err(RuntimeError::UnknownMessage { seq });
        }
        let messages = store.messages(session.pk, page.branch, page.before_seq, page.limit).await?;
        Ok((session, live, messages))
    }

    /// What a session that another node runs is doing: its running turn, and its newest
    /// `seq` (the stored bound is only a reservation, ahead of it; it stands in only when
    /// neither this node nor the bus knows the session's events, as a follower starting
    /// then would).
    async fn state_elsewhere(
        &self,
        user: &str,
        session: &Session,
    ) -> Result<Option<LiveState>, RuntimeError> {
        let last_seq = match self.inner.newest_elsewhere(session.pk).await {
            Some(newest) => newest,
            None => session.reserved_seq.max(0) as u64,
        };
        let now = crate::clock::now_ms();
        let running = self.inner.store.running_turns(Some(user), now).await?;
        let turn = running.into_iter().find(|turn| turn.session_id == session.id);
        Ok(Some(LiveState {
            queued: turn.as_ref().map_or(0, |turn| turn.queued as usize),
            queued_turns: None,
            running: turn.map(|turn| RunningTurn {
                turn_id: turn.turn_id,
                // The turn runs on another node: this token cancels nothing, it is never used.
                cancel: CancellationToken::new(),
                started_at: turn.started_at,
            }),
            last_seq,
        }))
    }

    /// Renames, pins or archives the user's session (what is `None` stays).
    pub async fn update_session(
        &self,
        user: &str,
        id: &str,
        change: SessionChange<'_>,
    ) -> Result<(Session, Option<Arc<LiveSession>>), RuntimeError> {
        let (mut session, live) = self.find_session(user, id).await?;
        let not_found = |err| match err {
            StoreError::NotFound => RuntimeError::NotFound,
            other => other.into(),
        };
        let store = &self.inner.store;
        if let Some(name) = change.name {
            session = store.rename_session(user, id, name).await.map_err(not_found)?;
        }
        if change.pinned.is_some() || change.archived.is_some() {
            session = store
                .set_session_flags(user, id, change.pinned, change.archived)
                .await
                .map_err(not_found)?;
        }
        Ok((session, live))
    }

    /// The session's persisted tool-call timeline.
    pub async fn tool_calls(
        &self,
        user: &str,
        id: &str,
    ) -> Result<Vec<ToolCallRecord>, RuntimeError> {
        let (session, _) = self.find_session(user, id).await?;
        Ok(self.inner.store.tool_calls(session.pk).await?)
    }

    /// The user's session with every message of every branch, turn by turn.
    pub async fn all_messages(
        &self,
        user: &str,
        id: &str,
    ) -> Result<(Session, Vec<Message>), RuntimeError> {
        let (session, _) = self.find_session(user, id).await?;
        let messages = self.inner.store.all_messages(session.pk).await?;
        Ok((session, messages))
    }

    /// One of the user's turns, looked up by its id, with its messages and tool calls.
    pub async fn turn(&self, user: &str, turn_id: &str) -> Result<TurnView, RuntimeError> {
        let store = &self.inner.store;
        let record = store.turn(user, turn_id).await?.ok_or(RuntimeError::NotFound)?;
        let messages = store.turn_messages(record.session_pk, record.user_seq).await?;
        let tool_calls = store.turn_tool_calls(record.session_pk, &record.id).await?;
        Ok(TurnView { record, messages, tool_calls })
    }

    /// Whether the store answers.
    pub async fn store_ready(&self) -> bool {
        self.inner.store.ping().await.is_ok()
    }
}
