//! Acting on sessions and turns that run (here or, in a cluster, on another node): Stop
//! (`cancel`, `abort`, kill), deleting, approval decisions, outside notifications, and the
//! lists of running turns and pending approvals.

use super::approvals::{ApprovalInfo, Decision};
use super::event::EventKind;
use super::{Runtime, RuntimeError, TurnInfo, remote, valid_session_id};
use crate::store::StoreError;

impl Runtime {
    /// Cancels the turn running in the user's session, on whichever node runs it; returns
    /// its id.
    pub async fn abort_session(
        &self,
        user: &str,
        id: &str,
    ) -> Result<Option<String>, RuntimeError> {
        let here = self.abort_here(user, id).await?;
        if here.is_some() || !self.inner.bus.clustered() {
            return Ok(here);
        }
        self.abort_elsewhere(user, id).await
    }

    /// Cancels the turn running in the user's session here.
    pub(super) async fn abort_here(
        &self,
        user: &str,
        id: &str,
    ) -> Result<Option<String>, RuntimeError> {
        let session = self.loaded(user, id).await?;
        Ok(session.and_then(|s| s.running()).map(|running| {
            running.cancel.cancel();
            running.turn_id
        }))
    }

    /// Cancels one of the user's turns, running or queued, on whichever node runs it.
    /// Returns whether it was found.
    pub async fn cancel_turn(&self, user: &str, turn_id: &str) -> bool {
        self.cancel_here(user, turn_id).await
            || (self.inner.bus.clustered() && self.cancel_elsewhere(user, turn_id).await)
    }

    /// Cancels one of the user's turns running or queued here.
    pub(super) async fn cancel_here(&self, user: &str, turn_id: &str) -> bool {
        let sessions: Vec<_> = self.user_sessions(user).await;
        for session in sessions {
            let queue = session.queue();
            if let Some(running) = queue.running.as_ref().filter(|r| r.turn_id == turn_id) {
                running.cancel.cancel();
                return true;
            }
            if let Some(pending) = queue.pending.iter().find(|p| p.turn_id == turn_id) {
                pending.cancel.cancel();
                return true;
            }
        }
        false
    }

    /// The user's running turns (every user's with `None`), on every node of a cluster.
    pub async fn running_turns(&self, user: Option<&str>) -> Result<Vec<TurnInfo>, RuntimeError> {
        // In a cluster the store knows every node's turns; this node's memory only its own.
        if self.inner.bus.clustered() {
            let turns = self.inner.store.running_turns(user, crate::clock::now_ms()).await?;
            return Ok(turns
                .into_iter()
                .map(|turn| TurnInfo {
                    turn_id: turn.turn_id,
                    user: turn.user,
                    session_id: turn.session_id,
                    node_id: turn.node.unwrap_or_default(),
                    started_at: turn.started_at,
                    queued: turn.queued as usize,
                })
                .collect());
        }
        let sessions: Vec<_> = {
            let sessions = self.inner.sessions.lock().await;
            let whose =
                |s: &&std::sync::Arc<super::LiveSession>| user.is_none_or(|user| s.user == user);
            sessions.values().filter(whose).cloned().collect()
        };
        Ok(sessions
            .into_iter()
            .filter_map(|session| {
                let queue = session.queue();
                queue.running.as_ref().map(|running| TurnInfo {
                    turn_id: running.turn_id.clone(),
                    user: session.user.clone(),
                    session_id: session.id.clone(),
                    node_id: self.inner.node_id.to_string(),
                    started_at: running.started_at,
                    queued: queue.pending.len(),
                })
            })
            .collect())
    }

    /// Turns running now, over all users.
    pub async fn active_turns(&self) -> usize {
        let sessions = self.inner.sessions.lock().await;
        sessions.values().filter(|s| s.running().is_some()).count()
    }

    /// Turns running on this node, and turns waiting behind them.
    pub async fn turn_counts(&self) -> (usize, usize) {
        let sessions = self.inner.sessions.lock().await;
        sessions.values().fold((0, 0), |(running, queued), session| {
            (running + usize::from(session.running().is_some()), queued + session.queued())
        })
    }

    /// Stops the session's turns and deletes it with everything in it. Its watchers get
    /// `session_deleted` and are detached; its memory goes with the last of them. In a
    /// cluster, the node running the session does it (this one if none does).
    pub async fn delete_session(&self, user: &str, id: &str) -> Result<(), RuntimeError> {
        if !valid_session_id(id) {
            return Err(RuntimeError::InvalidSessionId);
        }
        if self.inner.bus.clustered() {
            return match self.route(user, Some(id), false).await? {
                remote::Route::Here(_) => self.delete_here(user, id).await,
                remote::Route::There { node, .. } => self.delete_there(&node, user, id).await,
            };
        }
        self.delete_here(user, id).await
    }

    /// Deletes the session here.
    pub(super) async fn delete_here(&self, user: &str, id: &str) -> Result<(), RuntimeError> {
        // The map stays locked until the row is gone, so nobody loads it again meanwhile.
        let mut sessions = self.inner.sessions.lock().await;
        let key = (user.to_owned(), id.to_owned());
        let loaded = sessions.get(&key).cloned();
        // An admission in flight finishes first, so its turn is cancelled with the others;
        // the ones after it see the mark and refuse.
        let admissions = match &loaded {
            Some(session) => Some(session.admission.lock().await),
            None => None,
        };
        // The row goes first: if that fails, the session stays as it was, watchers and all.
        let deleted = self.inner.store.delete_session(user, id).await;
        let mut stopped = None;
        if deleted.is_ok() {
            sessions.remove(&key);
            if let Some(session) = &loaded {
                let mut queue = session.queue();
                // Whoever still holds it (a submission in flight) must load the session anew.
                queue.evicted = true;
                queue.running.iter().for_each(|r| r.cancel.cancel());
                queue.pending.iter().for_each(|p| p.cancel.cancel());
                stopped = queue.running.as_ref().map(|r| r.turn_id.clone());
            }
        }
        drop(admissions);
        drop(sessions);
        deleted.map_err(|err| match err {
            StoreError::NotFound => RuntimeError::NotFound,
            other => other.into(),
        })?;
        if let Some(turn_id) = stopped {
            // The turn's own end finds its rows gone and records nothing: the feed is told
            // here that it ended (a turn started on the feed always finishes on it).
            let finished = EventKind::TurnFinished { status: "cancelled".into() };
            self.inner.feed_append(user, id, Some(&turn_id), finished);
        }
        self.inner.deleted(user, id, loaded.as_deref());
        Ok(())
    }

    /// Decides one of the user's pending approvals, on whichever node it waits.
    pub async fn decide(
        &self,
        user: &str,
        request_id: &str,
        decision: Decision,
    ) -> Result<(), RuntimeError> {
        match self.inner.approvals.decide(user, request_id, decision) {
            Ok(()) => Ok(()),
            Err(_) if self.inner.bus.clustered() => {
                self.decide_elsewhere(user, request_id, decision).await
            }
            Err(_) => Err(RuntimeError::ApprovalNotFound),
        }
    }

    /// The user's pending approvals (on every node, in a cluster).
    pub async fn approvals(&self, user: &str) -> Vec<ApprovalInfo> {
        if self.inner.bus.clustered() {
            return self.shared_approvals(user).await;
        }
        self.inner.approvals.list(user, None)
    }

    /// Pushes an outside status event into the session's live view (never to the model);
    /// returns its `seq`. In a cluster, the node running the session numbers it.
    pub async fn notify(
        &self,
        user: &str,
        id: &str,
        event: serde_json::Value,
    ) -> Result<u64, RuntimeError> {
        if !valid_session_id(id) {
            return Err(RuntimeError::InvalidSessionId);
        }
        if self.inner.bus.clustered() {
            return match self.route(user, Some(id), false).await? {
                remote::Route::Here(_) => self.notify_here(user, id, event).await,
                remote::Route::There { node, .. } => {
                    self.notify_there(&node, user, id, event).await
                }
            };
        }
        self.notify_here(user, id, event).await
    }

    /// Numbers and publishes an outside event in a session this node runs.
    pub(super) async fn notify_here(
        &self,
        user: &str,
        id: &str,
        event: serde_json::Value,
    ) -> Result<u64, RuntimeError> {
        let (session, _) = self.open_session(user, Some(id), None, false).await?;
        Ok(session.emit(None, EventKind::AgentEvent { event }).seq)
    }
}
