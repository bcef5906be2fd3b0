//! Commands across nodes. A session's turns run on the node holding its lease; a node asked
//! to act on a session it does not run (a message, a cancel, an approval decision, a
//! deletion, a notification) sends the command to that node over the bus and relays the
//! answer. Nobody holding the lease, this node takes it and acts itself. A holder that
//! does not answer (it died; its lease runs out within the lease time) makes the command
//! fail with `SESSION_BUSY`, which clients retry.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::approvals::{ApprovalInfo, Decision};
use super::event::EventKind;
use super::log::WatchItem;
use super::{Inner, NewTurn, Runtime, RuntimeError, SessionRef, Submission, TurnOutcome};
use crate::bus::{BusError, Request};
use crate::conversation::{ChatMessage, Usage};
use crate::store::{Session, StoreError, TurnStatus};

/// How long a node waits for another node's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Where a session's turns run.
pub(super) enum Route {
    /// Here (this node holds the lease): the session's id.
    Here(String),
    /// On `node`, which holds the lease.
    There { node: String, stored: Session },
}

/// A command one node sends another.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Command {
    Submit {
        user: String,
        session: String,
        content: String,
        page: Option<String>,
        request_id: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        context: Vec<ChatMessage>,
        /// The model, resolved by the node that took the message.
        #[serde(default)]
        model: Option<String>,
        /// The message the turn follows (an edit, a regeneration).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<i64>,
    },
    Abort {
        user: String,
        session: String,
    },
    Cancel {
        user: String,
        turn_id: String,
    },
    Decide {
        user: String,
        request_id: String,
        decision: String,
    },
    Delete {
        user: String,
        session: String,
    },
    Notify {
        user: String,
        session: String,
        event: serde_json::Value,
    },
}

/// The answer to a [`Command`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum Answer {
    Submitted { turn_id: String, user_seq: u64 },
    Done { found: bool, turn_id: Option<String>, seq: Option<u64> },
    Refused { refusal: Refusal },
}

/// A [`RuntimeError`] as it crosses nodes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
enum Refusal {
    InvalidSessionId,
    NotFound,
    UnknownMessage { seq: i64 },
    EmptyContent,
    ContentTooLarge { size: usize, limit: usize },
    QueueFull { limit: usize },
    ShuttingDown,
    ApprovalNotFound,
    SessionBusy,
    StoreUnavailable { message: String },
    Failed { message: String },
}

impl From<&RuntimeError> for Refusal {
    fn from(err: &RuntimeError) -> Self {
        match err {
            RuntimeError::InvalidSessionId => Refusal::InvalidSessionId,
            RuntimeError::NotFound => Refusal::NotFound,
            RuntimeError::UnknownMessage { seq } => Refusal::UnknownMessage { seq: *seq },
            RuntimeError::EmptyContent => Refusal::EmptyContent,
            RuntimeError::ContentTooLarge { size, limit } => {
                Refusal::ContentTooLarge { size: *size, limit: *limit }
            }
            RuntimeError::QueueFull { limit } => Refusal::QueueFull { limit: *limit },
            RuntimeError::ShuttingDown => Refusal::ShuttingDown,
            RuntimeError::ApprovalNotFound => Refusal::ApprovalNotFound,
            // Limits were checked by the node that took the request; the holder has none
            // of its own to apply, so this is the holder being busy.
            RuntimeError::SessionBusy | RuntimeError::RateLimited { .. } => Refusal::SessionBusy,
            RuntimeError::Store(StoreError::Unavailable(message)) => {
                Refusal::StoreUnavailable { message: message.clone() }
            }
            RuntimeError::Store(other) => Refusal::Failed { message: other.to_string() },
            // Checked by the node that took the message, before it is forwarded.
            RuntimeError::UnknownModel(_) | RuntimeError::BudgetExceeded { .. } => {
                Refusal::Failed { message: err.to_string() }
            }
        }
    }
}

impl From<Refusal> for RuntimeError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::InvalidSessionId => RuntimeError::InvalidSessionId,
            Refusal::NotFound => RuntimeError::NotFound,
            Refusal::UnknownMessage { seq } => RuntimeError::UnknownMessage { seq },
            Refusal::EmptyContent => RuntimeError::EmptyContent,
            Refusal::ContentTooLarge { size, limit } => {
                RuntimeError::ContentTooLarge { size, limit }
            }
            Refusal::QueueFull { limit } => RuntimeError::QueueFull { limit },
            Refusal::ShuttingDown => RuntimeError::ShuttingDown,
            Refusal::ApprovalNotFound => RuntimeError::ApprovalNotFound,
            Refusal::SessionBusy => RuntimeError::SessionBusy,
            Refusal::StoreUnavailable { message } => {
                RuntimeError::Store(StoreError::Unavailable(message))
            }
            Refusal::Failed { message } => RuntimeError::Store(StoreError::Other(message)),
        }
    }
}

/// A pending approval as shared with the other nodes: where it waits, and what it is.
#[derive(Serialize, Deserialize)]
struct SharedApproval {
    node: String,
    info: ApprovalInfo,
}

fn approvals_key(user: &str) -> String {
    format!("approvals:{user}")
}

impl Runtime {
    /// Where the user's session `id` runs; nobody running it, this node takes its lease
    /// (creating the session first if `create`; a new id if `None`).
    pub(super) async fn route(
        &self,
        user: &str,
        id: Option<&str>,
        create: bool,
    ) -> Result<Route, RuntimeError> {
        let (stored, _) = self.stored(user, id, None, create).await?;
        for _ in 0..3 {
            match self.open_session(user, Some(&stored.id), None, false).await {
                Ok((session, _)) if !session.evicted() => return Ok(Route::Here(stored.id)),
                Ok(_) => continue,
                Err(RuntimeError::SessionBusy) => {}
                Err(err) => return Err(err),
            }
            let now = crate::clock::now_ms();
            match self.inner.store.lease_holder(stored.pk, now).await? {
                Some(node) if node != *self.inner.node_id => {
                    return Ok(Route::There { node, stored });
                }
                // Released or expired meanwhile: try again.
                _ => continue,
            }
        }
        Err(RuntimeError::SessionBusy)
    }

    /// The node other than this one that runs the user's session `id` now, if any.
    async fn runner(&self, user: &str, id: &str) -> Result<Option<String>, RuntimeError> {
        let stored = self.inner.store.session(user, id).await?.ok_or(RuntimeError::NotFound)?;
        let holder = self.inner.store.lease_holder(stored.pk, crate::clock::now_ms()).await?;
        Ok(holder.filter(|node| *node != *self.inner.node_id))
    }

    /// Sends `command` to `node` and returns its answer; a node that cannot be reached
    /// makes the session busy (its lease runs out soon, then another node takes it).
    async fn ask(&self, node: &str, command: &Command) -> Result<Answer, RuntimeError> {
        // Serializing these plain types cannot fail.
        let body = Bytes::from(serde_json::to_vec(command).unwrap_or_default());
        let answer = self.inner.bus.request(node, body, ANSWER_WITHIN).await.map_err(|err| {
            tracing::warn!(%err, node, "forwarding a command failed");
            match err {
                BusError::NoSuchNode(_) | BusError::Timeout(_) | BusError::Unavailable(_) => {
                    RuntimeError::SessionBusy
                }
                BusError::Other(message) => RuntimeError::Store(StoreError::Other(message)),
            }
        })?;
        match serde_json::from_slice(&answer) {
            Ok(Answer::Refused { refusal }) => Err(refusal.into()),
            Ok(answer) => Ok(answer),
            Err(err) => Err(RuntimeError::Store(StoreError::Other(format!("bad answer: {err}")))),
        }
    }

    /// Hands a checked message to the node that runs its session.
    pub(super) async fn forward_submit(
        &self,
        node: &str,
        stored: &Session,
        turn: NewTurn<'_>,
    ) -> Result<Submission, RuntimeError> {
        let command = Command::Submit {
            user: stored.user_id.clone(),
            session: stored.id.clone(),
            content: turn.content.to_owned(),
            page: turn.page.map(str::to_owned),
            request_id: turn.request_id.map(|id| id.to_string()),
            context: turn.context.to_vec(),
            model: turn.model.map(str::to_owned),
            parent: turn.parent,
        };
        let Answer::Submitted { turn_id, user_seq } = self.ask(node, &command).await? else {
            return Err(RuntimeError::Store(StoreError::Other("unexpected answer".into())));
        };
        let outcome = turn.wait.then(|| self.await_outcome(stored.clone(), &turn_id, user_seq));
        let session =
            SessionRef { user: stored.user_id.clone(), id: stored.id.clone(), pk: stored.pk };
        Ok(Submission { session, turn_id, user_seq, outcome })
    }

    /// The outcome of a turn another node runs, read from its events here.
    fn await_outcome(
        &self,
        stored: Session,
        turn_id: &str,
        user_seq: u64,
    ) -> oneshot::Receiver<TurnOutcome> {
        let (mut tx, rx) = oneshot::channel();
        let (inner, turn_id) = (self.inner.clone(), turn_id.to_owned());
        tokio::spawn(async move {
            let mut watch = inner.follow(&stored).await.watch(Some(user_seq));
            let started = std::time::Instant::now();
            loop {
                // Until the turn ends, the caller goes away, or this node stops.
                let item = tokio::select! {
                    item = watch.next() => item,
                    () = tx.closed() => return,
                    () = inner.stopping.cancelled() => return,
                };
                let event = match item {
                    WatchItem::Event(event) => event,
                    WatchItem::Resync { .. } => continue,
                    WatchItem::Closed => return,
                };
                if event.turn_id.as_deref() != Some(&turn_id) {
                    continue;
                }
                let mut outcome = TurnOutcome {
                    turn_id: turn_id.clone(),
                    session_id: stored.id.clone(),
                    status: TurnStatus::Done,
                    reply: String::new(),
                    tool_calls: Vec::new(),
                    usage: Usage::default(),
                    model: None,
                    duration_ms: started.elapsed().as_millis() as u64,
                    error: None,
                };
                match &event.kind {
                    EventKind::Done { full_response, usage, model, duration_ms, tool_calls } => {
                        outcome.reply = full_response.clone();
                        outcome.usage = *usage;
                        outcome.model = model.clone();
                        outcome.duration_ms = *duration_ms;
                        outcome.tool_calls = tool_calls.clone();
                    }
                    EventKind::Error { message, code } => {
                        outcome.status = TurnStatus::Error;
                        outcome.error = Some((*code, message.clone()));
                    }
                    EventKind::Cancelled { partial } => {
                        outcome.status = TurnStatus::Cancelled;
                        outcome.reply = partial.clone();
                    }
                    _ => continue,
                }
                let _ = tx.send(outcome);
                return;
            }
        });
        rx
    }

    /// Cancels the turn running in the user's session, wherever it runs; returns its id.
    pub(super) async fn abort_elsewhere(
        &self,
        user: &str,
        id: &str,
    ) -> Result<Option<String>, RuntimeError> {
        let Some(node) = self.runner(user, id).await? else { return Ok(None) };
        let command = Command::Abort { user: user.to_owned(), session: id.to_owned() };
        match self.ask(&node, &command).await? {
            Answer::Done { turn_id, .. } => Ok(turn_id),
            _ => Ok(None),
        }
    }

    /// Cancels one of the user's turns on the node that runs it.
    pub(super) async fn cancel_elsewhere(&self, user: &str, turn_id: &str) -> bool {
        let found = async {
            let Some((id, _)) = self.inner.store.turn_session(user, turn_id).await? else {
                return Ok(false);
            };
            let Some(node) = self.runner(user, &id).await? else { return Ok(false) };
            let command = Command::Cancel { user: user.to_owned(), turn_id: turn_id.to_owned() };
            Ok::<_, RuntimeError>(matches!(
                self.ask(&node, &command).await?,
                Answer::Done { found: true, .. }
            ))
        };
        found.await.unwrap_or(false)
    }

    /// Decides a pending approval that waits on another node.
    pub(super) async fn decide_elsewhere(
        &self,
        user: &str,
        request_id: &str,
        decision: Decision,
    ) -> Result<(), RuntimeError> {
        let entries = self.inner.bus.entries(&approvals_key(user)).await.unwrap_or_default();
        let node = entries.iter().find(|(field, _)| field == request_id).and_then(|(_, value)| {
            serde_json::from_slice::<SharedApproval>(value).ok().map(|shared| shared.node)
        });
        let Some(node) = node.filter(|node| *node != *self.inner.node_id) else {
            return Err(RuntimeError::ApprovalNotFound);
        };
        let command = Command::Decide {
            user: user.to_owned(),
            request_id: request_id.to_owned(),
            decision: decision.as_str().to_owned(),
        };
        match self.ask(&node, &command).await? {
            Answer::Done { found: true, .. } => Ok(()),
            _ => Err(RuntimeError::ApprovalNotFound),
        }
    }

    /// Deletes a session run by another node, there.
    pub(super) async fn delete_there(
        &self,
        node: &str,
        user: &str,
        id: &str,
    ) -> Result<(), RuntimeError> {
        let command = Command::Delete { user: user.to_owned(), session: id.to_owned() };
        self.ask(node, &command).await.map(drop)
    }

    /// Pushes an outside event into a session another node runs; returns its `seq`.
    pub(super) async fn notify_there(
        &self,
        node: &str,
        user: &str,
        id: &str,
        event: serde_json::Value,
    ) -> Result<u64, RuntimeError> {
        let command = Command::Notify { user: user.to_owned(), session: id.to_owned(), event };
        match self.ask(node, &command).await? {
            Answer::Done { seq: Some(seq), .. } => Ok(seq),
            _ => Err(RuntimeError::NotFound),
        }
    }

    /// The user's pending approvals on every node (this node's alone if the bus fails).
    pub(super) async fn shared_approvals(&self, user: &str) -> Vec<ApprovalInfo> {
        let Ok(entries) = self.inner.bus.entries(&approvals_key(user)).await else {
            return self.inner.approvals.list(user, None);
        };
        let now = crate::clock::now_ms();
        let mut items: Vec<ApprovalInfo> = entries
            .iter()
            .filter_map(|(_, value)| serde_json::from_slice::<SharedApproval>(value).ok())
            .map(|shared| ApprovalInfo { user: user.to_owned(), ..shared.info })
            .filter(|info| info.expires_at > now)
            .collect();
        items.sort_by_key(|info| info.seq);
        items
    }

    /// Answers one command from another node.
    async fn answer(&self, command: Command) -> Answer {
        let result = match command {
            Command::Submit {
                user,
                session,
                content,
                page,
                request_id,
                context,
                model,
                parent,
            } => {
                let request_id = request_id.map(Arc::<str>::from);
                let turn = NewTurn {
                    content: &content,
                    page: page.as_deref(),
                    wait: false,
                    request_id: request_id.as_ref(),
                    context: &context,
                    model: model.as_deref(),
                    parent,
                };
                // Only if this node still runs the session (and is not stopping): never
                // forwarded twice.
                if self.inner.stopping.is_cancelled() {
                    return Answer::Refused { refusal: Refusal::SessionBusy };
                }
                match self.route(&user, Some(&session), false).await {
                    Ok(Route::Here(id)) => self
                        .admit_here(&user, &id, false, turn)
                        .await
                        .map(|s| Answer::Submitted { turn_id: s.turn_id, user_seq: s.user_seq }),
                    Ok(Route::There { .. }) => Err(RuntimeError::SessionBusy),
                    Err(err) => Err(err),
                }
            }
            Command::Abort { user, session } => self
                .abort_here(&user, &session)
                .await
                .map(|turn_id| Answer::Done { found: turn_id.is_some(), turn_id, seq: None }),
            Command::Cancel { user, turn_id } => {
                let found = self.cancel_here(&user, &turn_id).await;
                Ok(Answer::Done { found, turn_id: Some(turn_id), seq: None })
            }
            Command::Decide { user, request_id, decision } => {
                let decision = Decision::parse(&decision).unwrap_or(Decision::Deny);
                let found = self.inner.approvals.decide(&user, &request_id, decision).is_ok();
                Ok(Answer::Done { found, turn_id: None, seq: None })
            }
            Command::Delete { user, session } => self
                .delete_here(&user, &session)
                .await
                .map(|()| Answer::Done { found: true, turn_id: None, seq: None }),
            Command::Notify { user, session, event } => self
                .notify_here(&user, &session, event)
                .await
                .map(|seq| Answer::Done { found: true, turn_id: None, seq: Some(seq) }),
        };
        result.unwrap_or_else(|err| Answer::Refused { refusal: Refusal::from(&err) })
    }
}

impl Inner {
    /// Lists a pending approval for the other nodes (a cluster's; nothing alone).
    pub(super) fn share_approval(&self, info: &ApprovalInfo) {
        if !self.bus.clustered() {
            return;
        }
        let shared = SharedApproval { node: self.node_id.to_string(), info: info.clone() };
        let value = Bytes::from(serde_json::to_vec(&shared).unwrap_or_default());
        let (bus, key, field) =
            (self.bus.clone(), approvals_key(&info.user), info.request_id.clone());
        let ttl = Duration::from_secs_f64(info.timeout_secs.max(0.0)) + Duration::from_secs(60);
        tokio::spawn(async move {
            if let Err(err) = bus.put(&key, &field, value, ttl).await {
                tracing::warn!(%err, "sharing a pending approval failed");
            }
        });
    }

    /// Takes a pending approval off the other nodes' lists.
    pub(super) fn unshare_approval(&self, user: &str, request_id: &str) {
        if !self.bus.clustered() {
            return;
        }
        let (bus, key, field) = (self.bus.clone(), approvals_key(user), request_id.to_owned());
        tokio::spawn(async move {
            if let Err(err) = bus.remove(&key, &field).await {
                tracing::warn!(%err, "unlisting a pending approval failed");
            }
        });
    }
}

/// Answers the commands other nodes send this one, each in a task of its own, until the
/// runtime is gone.
pub(super) async fn serve(inner: Weak<Inner>, mut requests: mpsc::Receiver<Request>) {
    while let Some(request) = requests.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let runtime = Runtime { inner };
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<Command>(&request.body) {
                Ok(command) => runtime.answer(command).await,
                Err(err) => {
                    tracing::warn!(%err, "a command from another node could not be read");
                    Answer::Refused { refusal: Refusal::Failed { message: err.to_string() } }
                }
            };
            request.reply(Bytes::from(serde_json::to_vec(&answer).unwrap_or_default()));
        });
    }
}
