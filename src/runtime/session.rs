//! A loaded session: its event log, its turn queue and its remembered approvals.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::TurnOutcome;
use super::event::{Event, EventKind};
use super::log::{EventLog, Watch};
use crate::bus::Bus;
use crate::store::{Fence, Store, StoreError};

/// How many sequence numbers are reserved in the store at a time; the reservation is
/// renewed when half of it is used. Events past the durable reservation wait for it, so a
/// crash never lets a `seq` that a client saw (or that was stored) be handed out twice.
const SEQ_BLOCK: u64 = 4096;

/// A turn waiting for its session's worker.
pub(crate) struct PendingTurn {
    pub turn_id: String,
    /// The seq of the turn's stored user message.
    pub user_seq: u64,
    pub cancel: CancellationToken,
    pub reply: Option<oneshot::Sender<TurnOutcome>>,
    /// Context for the model about the page the user is on (`page_context`).
    pub hint: Option<String>,
    /// The request that submitted the turn, for its log lines.
    pub request_id: Option<Arc<str>>,
    /// Messages for the model before the session's history (see `NewTurn::context`).
    pub context: Vec<crate::conversation::ChatMessage>,
    /// The configured model it runs on (with that model's fallbacks).
    pub model: String,
    /// Stored as running when it was admitted (nothing was ahead of it): its start writes
    /// nothing.
    pub started: bool,
}

impl PendingTurn {
    /// Tells a caller waiting for this turn that it stays queued in the store, to be run
    /// by this node's next start or by another node: it has no outcome here. A turn stored
    /// as running (see `started`) is not run by anyone else: the next holder of the session
    /// marks it interrupted, and so the caller is told.
    pub fn hand_over(mut self, session_id: &str) {
        if let Some(reply) = self.reply.take() {
            let status = if self.started {
                crate::store::TurnStatus::Interrupted
            } else {
                crate::store::TurnStatus::Queued
            };
            let _ = reply.send(TurnOutcome {
                turn_id: self.turn_id,
                session_id: session_id.to_owned(),
                status,
                reply: String::new(),
                tool_calls: Vec::new(),
                usage: crate::conversation::Usage::default(),
                model: Some(self.model),
                duration_ms: 0,
                error: None,
            });
        }
    }
}

/// The turn a session's worker is running.
#[derive(Clone)]
pub struct RunningTurn {
    pub turn_id: String,
    pub cancel: CancellationToken,
    pub started_at: i64,
}

/// What a loaded session is doing, read at one moment. A reader takes it before reading
/// the store, so what it reads there is at least as new: a turn's end is stored before the
/// session stops running it, so "not running" never comes with a history missing its end.
#[derive(Clone)]
pub struct LiveState {
    /// The turn running now, if any.
    pub running: Option<RunningTurn>,
    /// Turns waiting behind the running one.
    pub queued: usize,
    /// Their ids, in order, when this node holds the queue (not for a session another
    /// node runs).
    pub queued_turns: Option<Vec<String>>,
    /// The newest event's seq.
    pub last_seq: u64,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub pending: VecDeque<PendingTurn>,
    pub running: Option<RunningTurn>,
    /// Whether a worker task is draining the queue.
    pub worker: bool,
    /// Submissions past the depth check still being stored.
    pub admitting: usize,
    /// Dropped from the runtime's map: whoever still holds it must load the session anew.
    pub evicted: bool,
    /// Another node took the session's lease: nothing here may write or publish any more.
    pub lost: bool,
}

/// A session in memory.
pub struct LiveSession {
    pub user: String,
    pub id: String,
    pub pk: i64,
    /// The lease this node holds on the session; every write of its turns carries it.
    pub(crate) fence: Fence,
    /// When the lease was taken (epoch ms): a renewal that began earlier cannot have seen it.
    pub(crate) leased_at: i64,
    log: Arc<EventLog>,
    queue: Mutex<Queue>,
    /// Tools the user approved with "always" in this session.
    always: Mutex<HashSet<String>>,
    store: Arc<dyn Store>,
    /// Held while a user message is numbered, stored and queued: messages of one session
    /// are admitted one at a time, so their turns queue in `seq` order.
    pub(crate) admission: tokio::sync::Mutex<()>,
}

impl LiveSession {
    /// The session as loaded from the store under the lease `fence`, numbering events
    /// after `start` and publishing them up to the stored reservation `reserved` until it is
    /// raised.
    pub(crate) fn new(
        user: &str,
        id: &str,
        fence: Fence,
        (start, reserved): (u64, u64),
        capacity: usize,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
    ) -> Self {
        let pk = fence.session;
        let topic = format!("session:{pk}");
        Self {
            user: user.to_owned(),
            id: id.to_owned(),
            pk,
            fence,
            leased_at: crate::clock::now_ms(),
            log: Arc::new(
                EventLog::bounded(topic, start.min(reserved), reserved, capacity, bus)
                    .with_epoch(fence.token.max(0) as u64),
            ),
            queue: Mutex::new(Queue::default()),
            always: Mutex::new(HashSet::new()),
            store,
            admission: tokio::sync::Mutex::new(()),
        }
    }

    /// How the adapters refer to it.
    pub fn reference(&self) -> super::SessionRef {
        super::SessionRef { user: self.user.clone(), id: self.id.clone(), pk: self.pk }
    }

    /// Gives the event the next `seq`, appends it to the log and publishes it (once its
    /// number is durably reserved and every earlier one is published).
    pub fn emit(&self, turn_id: Option<&str>, kind: EventKind) -> Arc<Event> {
        let (event, reserve) = self.log.append(&self.id, turn_id, kind, Some(SEQ_BLOCK));
        if let Some(up_to) = reserve {
            self.reserve(up_to);
        }
        event
    }

    /// Takes the next `seq` for an event made later: events emitted meanwhile wait for it.
    pub(crate) fn reserve_slot(&self) -> SeqSlot<'_> {
        let (seq, reserve) = self.log.reserve_slot(Some(SEQ_BLOCK));
        if let Some(up_to) = reserve {
            self.reserve(up_to);
        }
        SeqSlot { session: self, seq, filled: false }
    }

    /// Reserves numbers up to `up_to` in the store, in the background, retrying while the
    /// store is down and the session is still in use; the log then publishes what waited.
    fn reserve(&self, up_to: u64) {
        let (store, fence, log) = (self.store.clone(), self.fence, Arc::downgrade(&self.log));
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                match store.reserve_seq(fence, up_to as i64).await {
                    Ok(()) => break,
                    // The lease moved on: these numbers are not this node's to publish.
                    Err(StoreError::Fenced) => return,
                    Err(err) => tracing::error!(%err, "reserving sequence numbers failed"),
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                if log.strong_count() == 0 {
                    return;
                }
            }
            if let Some(log) = log.upgrade() {
                log.set_durable(up_to);
            }
        });
    }

    /// Makes sure numbers are durably reserved well ahead, waiting for the store if not
    /// (a session's first turn after it was loaded): so the turn's events are published as
    /// they happen instead of waiting for a reservation.
    pub(crate) async fn ensure_reserved(&self) -> Result<(), StoreError> {
        if let Some(up_to) = self.log.reservation_due(SEQ_BLOCK) {
            if let Err(err) = self.store.reserve_seq(self.fence, up_to as i64).await {
                self.log.reservation_failed();
                return Err(err);
            }
            self.log.set_durable(up_to);
        }
        Ok(())
    }

    /// Records that a row stored under `seq` raised the session's durable bound to it.
    pub(crate) fn stored_up_to(&self, seq: u64) {
        self.log.set_durable(seq);
    }

    /// The last `seq` published.
    pub fn last_seq(&self) -> u64 {
        self.log.last_seq()
    }

    /// What the session is doing now.
    pub fn state(&self) -> LiveState {
        let (running, queued_turns) = {
            let queue = self.queue();
            let ids = queue.pending.iter().map(|turn| turn.turn_id.clone()).collect::<Vec<_>>();
            (queue.running.clone(), ids)
        };
        let queued = queued_turns.len();
        LiveState { running, queued, queued_turns: Some(queued_turns), last_seq: self.last_seq() }
    }

    /// Marks the session evicted if nothing needs it in memory: no turn, no watcher, and no
    /// event for `idle_ms`. (Its "always" approvals are forgotten with it, the safe
    /// direction.) Checked and marked under the queue lock, so a submission either sees
    /// the mark or keeps the session.
    pub(crate) fn try_evict(&self, now: i64, idle_ms: i64) -> bool {
        let mut queue = self.queue();
        // Every watcher holds a reference to the log.
        let watchers = Arc::strong_count(&self.log) - 1;
        let busy = queue.pending.len() + queue.admitting + usize::from(queue.running.is_some());
        let idle = now - self.log.last_active() >= idle_ms && !self.log.holding();
        if busy == 0 && watchers == 0 && idle {
            queue.evicted = true;
        }
        queue.evicted
    }

    /// Whether the runtime dropped this session from memory.
    pub(crate) fn evicted(&self) -> bool {
        self.queue().evicted
    }

    /// Whether another node took the session's lease from this one.
    pub(crate) fn lost(&self) -> bool {
        self.queue().lost
    }

    /// Ends the log's live feed: its watchers here get [`super::WatchItem::Closed`] once they
    /// have what was published (a lost session publishes nothing more here).
    pub(crate) fn close_log(&self) {
        self.log.close();
    }

    /// Watches the session's events after `after` (`None`: from now on).
    pub fn watch(&self, after: Option<u64>) -> Watch {
        self.log.watch(after)
    }

    /// Whether the user approved `tool` with "always" in this session.
    pub fn always_allowed(&self, tool: &str) -> bool {
        lock(&self.always).contains(tool)
    }

    /// Remembers an "always" approval of `tool`.
    pub fn allow_always(&self, tool: &str) {
        lock(&self.always).insert(tool.to_owned());
    }

    pub(crate) fn queue(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    /// The turn running now, if any.
    pub fn running(&self) -> Option<RunningTurn> {
        self.queue().running.clone()
    }

    /// Turns running, waiting or being admitted.
    pub fn turns(&self) -> usize {
        let queue = self.queue();
        queue.pending.len() + queue.admitting + usize::from(queue.running.is_some())
    }

    /// Turns waiting behind the running one.
    pub fn queued(&self) -> usize {
        self.queue().pending.len()
    }
}

/// A `seq` taken before its event exists (a user message is numbered, then stored, then
/// echoed). Dropped unfilled, it becomes an `error` event, so the log never waits forever.
pub(crate) struct SeqSlot<'a> {
    session: &'a LiveSession,
    pub seq: u64,
    filled: bool,
}

impl SeqSlot<'_> {
    /// Puts the event in place; it is published once every earlier number is.
    pub fn fill(mut self, turn_id: Option<&str>, kind: EventKind) -> Arc<Event> {
        self.filled = true;
        self.session.log.fill(self.seq, &self.session.id, turn_id, kind)
    }
}

impl Drop for SeqSlot<'_> {
    fn drop(&mut self) {
        if !self.filled {
            let kind = EventKind::Error {
                message: "the message could not be accepted".into(),
                code: super::TurnError::AgentError,
            };
            self.session.log.fill(self.seq, &self.session.id, None, kind);
        }
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here leaves the data
/// consistent even if it panicked midway.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
