//! A loaded session: its event log (sequence numbers and the bounded in-memory ring that
//! resuming watchers replay from) and its turn queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::TurnOutcome;
use super::event::{Event, EventKind};
use crate::bus::Bus;
use crate::store::Store;

/// How many sequence numbers are reserved in the store at a time; the reservation is
/// renewed when half of it is used, so a crash never lets a `seq` be handed out twice.
const SEQ_BLOCK: u64 = 1024;

/// A turn waiting for its session's worker.
pub(crate) struct PendingTurn {
    pub turn_id: String,
    /// The seq of the turn's stored user message.
    pub user_seq: u64,
    pub cancel: CancellationToken,
    pub reply: Option<oneshot::Sender<TurnOutcome>>,
}

/// The turn a session's worker is running.
#[derive(Clone)]
pub struct RunningTurn {
    pub turn_id: String,
    pub cancel: CancellationToken,
    pub started_at: i64,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub pending: VecDeque<PendingTurn>,
    pub running: Option<RunningTurn>,
    /// Whether a worker task is draining the queue.
    pub worker: bool,
    /// Submissions past the depth check still being stored.
    pub admitting: usize,
}

struct Log {
    last_seq: u64,
    reserved: u64,
    ring: VecDeque<Arc<Event>>,
}

/// What a watcher resuming after some `seq` gets from the log.
pub enum Replay {
    /// The events after the requested `seq`, oldest first.
    Events(Vec<Arc<Event>>),
    /// The log no longer holds the events right after that `seq`: reload the history.
    Resync { oldest: u64 },
}

/// A session in memory.
pub struct LiveSession {
    pub user: String,
    pub id: String,
    pub pk: i64,
    pub(crate) topic: String,
    log: Mutex<Log>,
    capacity: usize,
    queue: Mutex<Queue>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
}

impl LiveSession {
    pub(crate) fn new(
        user: &str,
        id: &str,
        pk: i64,
        reserved_seq: i64,
        capacity: usize,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
    ) -> Self {
        let reserved = reserved_seq.max(0) as u64;
        Self {
            user: user.to_owned(),
            id: id.to_owned(),
            pk,
            topic: format!("session:{pk}"),
            // Numbers up to the stored reservation may have been used before a crash.
            log: Mutex::new(Log {
                last_seq: reserved,
                reserved,
                ring: VecDeque::new(),
            }),
            capacity: capacity.max(16),
            queue: Mutex::new(Queue::default()),
            store,
            bus,
        }
    }

    /// Gives the event the next `seq`, appends it to the log and publishes it, all under
    /// one lock so every watcher sees one order.
    pub fn emit(&self, turn_id: Option<&str>, kind: EventKind) -> Arc<Event> {
        let mut log = lock(&self.log);
        log.last_seq += 1;
        let seq = log.last_seq;
        if seq + SEQ_BLOCK / 2 > log.reserved {
            log.reserved = seq + SEQ_BLOCK;
            let (store, pk, up_to) = (self.store.clone(), self.pk, log.reserved as i64);
            tokio::spawn(async move {
                if let Err(err) = store.reserve_seq(pk, up_to).await {
                    tracing::error!(%err, "reserving sequence numbers failed");
                }
            });
        }
        let event = Arc::new(Event::new(seq, &self.id, turn_id, kind));
        if log.ring.len() >= self.capacity {
            log.ring.pop_front();
        }
        log.ring.push_back(event.clone());
        self.bus.publish(&self.topic, event.clone());
        event
    }

    /// The last `seq` handed out.
    pub fn last_seq(&self) -> u64 {
        lock(&self.log).last_seq
    }

    /// The events after `after`, or a resync if some of them are gone from the ring.
    pub fn replay(&self, after: u64) -> Replay {
        let log = lock(&self.log);
        if after >= log.last_seq {
            return Replay::Events(Vec::new());
        }
        let oldest = log.ring.front().map_or(log.last_seq + 1, |e| e.seq);
        if after + 1 < oldest {
            return Replay::Resync { oldest };
        }
        Replay::Events(log.ring.iter().filter(|e| e.seq > after).cloned().collect())
    }

    pub(crate) fn queue(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    /// The turn running now, if any.
    pub fn running(&self) -> Option<RunningTurn> {
        self.queue().running.clone()
    }

    /// Turns waiting behind the running one.
    pub fn queued(&self) -> usize {
        self.queue().pending.len()
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here leaves the data
/// consistent even if it panicked midway.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
