//! Accepting a user message: every check first (so a refusal leaves nothing behind), then
//! the admission proper — number the message, store it, queue its turn, and only then echo
//! it — one message per session at a time, in a task no caller can cancel midway.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::event::EventKind;
use super::remote::Route;
use super::session::{LiveSession, PendingTurn};
use super::{Inner, Runtime, RuntimeError, Submission, TurnError, TurnOutcome, valid_session_id};
use crate::conversation::{ChatMessage, Role};
use crate::store::{NewMessage, StoreError};

/// Which session a message goes to.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A new session with a generated id.
    New,
    /// The session with this id, created if missing.
    Id(&'a str),
    /// The session with this id, which must exist (`NotFound` otherwise: it may have just
    /// been deleted, and a message must not bring it back).
    Existing(&'a str),
}

/// A message to start a turn with.
#[derive(Debug, Clone, Copy)]
pub struct NewTurn<'a> {
    pub content: &'a str,
    /// The client's page (`page_context`), for a configured hint to the model.
    pub page: Option<&'a str>,
    /// Whether the caller waits for the turn's outcome.
    pub wait: bool,
    /// The request that sent it, for the turn's log lines.
    pub request_id: Option<&'a Arc<str>>,
    /// Messages the client sends before this one, given to the model ahead of the
    /// session's history and never stored (a stateless OpenAI request's conversation, a
    /// request's instructions). Lost if the turn waits in the store across a restart.
    pub context: &'a [ChatMessage],
    /// The model asked for (none: the default); a name no provider serves is refused.
    pub model: Option<&'a str>,
    /// The message whose turn this one follows, by its seq (0: the start of the
    /// conversation): an edit of a later message or a regenerated answer, starting a
    /// branch beside the old one. `None` follows the session's newest turn.
    pub parent: Option<i64>,
}

impl Runtime {
    /// Accepts a user message: checks it, stores it, queues its turn and returns at once.
    /// The turn runs in the runtime whatever happens to the caller.
    pub async fn submit(
        &self,
        user: &str,
        target: Target<'_>,
        turn: NewTurn<'_>,
    ) -> Result<Submission, RuntimeError> {
        let inner = &self.inner;
        if inner.stopping.is_cancelled() {
            return Err(RuntimeError::ShuttingDown);
        }
        let content = turn.content;
        if content.len() > inner.max_content_bytes {
            let limit = inner.max_content_bytes;
            return Err(RuntimeError::ContentTooLarge { size: content.len(), limit });
        }
        if content.trim().is_empty() {
            return Err(RuntimeError::EmptyContent);
        }
        let (id, create) = match target {
            Target::New => (None, true),
            Target::Id(id) => (Some(id), true),
            Target::Existing(id) => (Some(id), false),
        };
        // Validation before limits: a malformed request does not use up the caller's turns.
        if id.is_some_and(|id| !valid_session_id(id)) {
            return Err(RuntimeError::InvalidSessionId);
        }
        // A parent names a message of the session: checked before anything is counted or
        // created (a session that does not exist yet has none).
        if let Some(seq) = turn.parent.filter(|seq| *seq != 0) {
            let stored = match id {
                Some(id) => inner.store.session(user, id).await?,
                None => None,
            };
            let known = match stored {
                Some(session) => inner.store.turn_of(session.pk, seq).await?.is_some(),
                None => false,
            };
            if !known {
                return Err(RuntimeError::UnknownMessage { seq });
            }
        }
        let model = inner.agent.models.resolve(turn.model)?;
        let turn = NewTurn { model: Some(model), ..turn };
        if let Target::Existing(id) = target {
            self.loaded(user, id).await?;
        }
        if inner.max_concurrent_turns > 0 {
            // In a cluster, the user's turns on every node (stored ones; those being admitted
            // this very moment are not counted yet).
            let busy = if inner.bus.clustered() {
                inner.store.unfinished_turns(user).await? as usize
            } else {
                self.user_sessions(user).await.iter().map(|s| s.turns()).sum()
            };
            if busy >= inner.max_concurrent_turns {
                return Err(RuntimeError::RateLimited {
                    message: "too many of your turns are running or waiting",
                    retry_after: Duration::from_secs(1),
                });
            }
        }
        self.check_budget(user).await?;
        if let Err(retry_after) = inner.turn_limiter.check(user).await {
            let message = "too many turns started this minute";
            return Err(RuntimeError::RateLimited { message, retry_after });
        }
        if inner.bus.clustered() {
            // The node holding the session's lease admits it; this one, if nobody does.
            return match self.route(user, id, create).await? {
                Route::Here(id) => self.admit_here(user, &id, false, turn).await,
                Route::There { node, stored } => self.forward_submit(&node, &stored, turn).await,
            };
        }
        self.admit_here(user, id.unwrap_or_default(), create && id.is_some(), turn).await
    }

    /// Admits a message checked already into a session this node runs (creating it first
    /// if `create`; an empty `id` makes a new one).
    pub(super) async fn admit_here(
        &self,
        user: &str,
        id: &str,
        create: bool,
        turn: NewTurn<'_>,
    ) -> Result<Submission, RuntimeError> {
        let inner = &self.inner;
        let content = turn.content;
        let (id, create) = if id.is_empty() { (None, true) } else { (Some(id), create) };
        let session = loop {
            let (session, _) = self.open_session(user, id, None, create).await?;
            let mut queue = session.queue();
            if queue.evicted {
                // Evicted (or deleted) between the lookup and now: load it again.
                continue;
            }
            if queue.pending.len() + queue.admitting >= inner.queue_depth {
                return Err(RuntimeError::QueueFull { limit: inner.queue_depth });
            }
            queue.admitting += 1;
            drop(queue);
            break session;
        };
        let admission = Admission {
            content: content.to_owned(),
            hint: turn.page.and_then(|page| inner.page_hints.get(page)).cloned(),
            request_id: turn.request_id.cloned(),
            wait: turn.wait,
            context: turn.context.to_vec(),
            model: turn
                .model
                .map_or_else(|| inner.agent.models.default_id().to_owned(), str::to_owned),
            parent: turn.parent,
        };
        // In a task of its own: a caller that goes away midway (an HTTP client hanging up)
        // must not leave a stored message without its turn.
        let admitted = inner.tracker.spawn(admit(inner.clone(), session.clone(), admission));
        let (turn_id, user_seq, outcome) = admitted.await.map_err(|err| {
            RuntimeError::Store(StoreError::Other(format!("admitting a message failed: {err}")))
        })??;
        Ok(Submission { session: session.reference(), turn_id, user_seq, outcome })
    }
}

/// A message past the checks, to be numbered, stored and queued.
struct Admission {
    content: String,
    hint: Option<String>,
    request_id: Option<Arc<str>>,
    wait: bool,
    context: Vec<ChatMessage>,
    model: String,
    parent: Option<i64>,
}

/// Numbers the message, makes it durable, queues its turn, and only then echoes it to the
/// watchers. One admission per session at a time, so turns queue (and run) in `seq` order.
/// Storing the message raises the session's durable `seq` bound to its number, so the
/// events that waited behind it can be published.
async fn admit(
    inner: Arc<Inner>,
    session: Arc<LiveSession>,
    admission: Admission,
) -> Result<(String, u64, Option<oneshot::Receiver<TurnOutcome>>), RuntimeError> {
    let _one_at_a_time = session.admission.lock().await;
    if session.evicted() {
        // Deleted while this message waited for its turn to be admitted.
        session.queue().admitting -= 1;
        return Err(RuntimeError::NotFound);
    }
    if let Err(err) = session.ensure_reserved().await {
        session.queue().admitting -= 1;
        return Err(err.into());
    }
    // A chosen parent names a message: the turn follows that message's turn.
    let parent = match admission.parent {
        None | Some(0) => admission.parent,
        Some(seq) => match inner.store.turn_of(session.pk, seq).await {
            Ok(Some(turn)) => Some(turn),
            Ok(None) => {
                session.queue().admitting -= 1;
                return Err(RuntimeError::UnknownMessage { seq });
            }
            Err(err) => {
                session.queue().admitting -= 1;
                return Err(err.into());
            }
        },
    };
    let turn_id = uuid::Uuid::new_v4().to_string();
    let slot = session.reserve_slot();
    let seq = slot.seq;
    let message = NewMessage {
        parent,
        ..NewMessage::text(seq as i64, seq as i64, &turn_id, Role::User, &admission.content)
    };
    // Nothing ahead of it (admissions take turns, so nothing can get ahead meanwhile): the
    // turn starts as it is queued, and is stored as running straight away. Not while
    // shutting down, when what is queued is left for later.
    let starts = {
        let queue = session.queue();
        queue.pending.is_empty() && queue.running.is_none() && !inner.stopping.is_cancelled()
    };
    let started = std::time::Instant::now();
    let stored =
        inner.store.create_turn(session.fence, &turn_id, &admission.model, &message, starts).await;
    inner.agent.metrics.store_writes.observe(started.elapsed().as_secs_f64());
    let mut queue = session.queue();
    queue.admitting -= 1;
    if let Err(err) = stored {
        drop(queue);
        let message = "the message could not be stored".into();
        slot.fill(Some(&turn_id), EventKind::Error { message, code: TurnError::AgentError });
        if matches!(err, StoreError::Fenced) {
            // Another node holds the session now: the client tries again and reaches it.
            let (inner, session) = (inner.clone(), session.clone());
            tokio::spawn(async move { inner.lose(&session).await });
            return Err(RuntimeError::SessionBusy);
        }
        return Err(err.into());
    }
    let (reply, outcome) = if admission.wait {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let waiting = queue.pending.len() + usize::from(queue.running.is_some());
    queue.pending.push_back(PendingTurn {
        turn_id: turn_id.clone(),
        user_seq: seq,
        cancel: inner.hard_stop.child_token(),
        reply,
        hint: admission.hint,
        request_id: admission.request_id,
        context: admission.context,
        model: admission.model,
        started: starts,
    });
    if !queue.worker {
        queue.worker = true;
        inner.tracker.spawn(super::worker::drain(inner.clone(), session.clone()));
    }
    drop(queue);
    session.stored_up_to(seq);
    let parent = parent.map(|turn| turn as u64);
    slot.fill(Some(&turn_id), EventKind::UserMessage { content: admission.content, parent });
    if waiting > 0 {
        let detail = Some(format!("{waiting} ahead"));
        session.emit(Some(&turn_id), EventKind::OperatorStatus { phase: "queued".into(), detail });
    }
    Ok((turn_id, seq, outcome))
}
