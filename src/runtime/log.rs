//! An event log: sequence numbers, the bounded in-memory ring resuming watchers replay
//! from, and [`Watch`], which joins the replay to the live bus with no gap and no
//! duplicate. Sessions and the per-user lifecycle feeds each have one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};

use super::event::{Event, EventKind};
use crate::bus::Bus;

struct Ring {
    last_seq: u64,
    /// Upper bound of the numbers reserved in the store (sessions only).
    reserved: u64,
    events: VecDeque<Arc<Event>>,
}

/// What a watcher resuming after some `seq` gets from the log.
pub enum Replay {
    /// The events after the requested `seq`, oldest first.
    Events(Vec<Arc<Event>>),
    /// The ring no longer holds the events right after that `seq`.
    Resync,
}

/// A numbered, bounded, published log of events.
pub struct EventLog {
    ring: Mutex<Ring>,
    /// When the last event was appended (epoch ms), for evicting idle sessions.
    last_active: AtomicI64,
    capacity: usize,
    topic: String,
    bus: Arc<dyn Bus>,
}

impl EventLog {
    /// A log whose next event gets `last_seq + 1`, publishing on `topic`.
    pub fn new(topic: String, last_seq: u64, capacity: usize, bus: Arc<dyn Bus>) -> Self {
        Self {
            ring: Mutex::new(Ring { last_seq, reserved: last_seq, events: VecDeque::new() }),
            last_active: AtomicI64::new(crate::clock::now_ms()),
            capacity: capacity.max(16),
            topic,
            bus,
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // Every critical section leaves the ring consistent, even if it panicked midway.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers the event, appends it to the ring and publishes it, under one lock so that
    /// every watcher sees one order. With `reserve`, returns the new bound to persist when
    /// fewer than half of the reserved numbers are left.
    pub fn append(
        &self,
        session_id: &str,
        turn_id: Option<&str>,
        kind: EventKind,
        reserve: Option<u64>,
    ) -> (Arc<Event>, Option<u64>) {
        self.last_active.store(crate::clock::now_ms(), Ordering::Relaxed);
        let mut ring = self.ring();
        ring.last_seq += 1;
        let seq = ring.last_seq;
        let mut extend = None;
        if let Some(block) = reserve
            && seq + block / 2 > ring.reserved
        {
            ring.reserved = seq + block;
            extend = Some(ring.reserved);
        }
        let event = Arc::new(Event::new(seq, session_id, turn_id, kind));
        if ring.events.len() >= self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        self.bus.publish(&self.topic, event.clone());
        (event, extend)
    }

    /// When the last event was appended (epoch ms).
    pub fn last_active(&self) -> i64 {
        self.last_active.load(Ordering::Relaxed)
    }

    /// The last `seq` handed out.
    pub fn last_seq(&self) -> u64 {
        self.ring().last_seq
    }

    /// The events after `after`, or a resync if some of them left the ring.
    pub fn replay(&self, after: u64) -> Replay {
        let ring = self.ring();
        if after >= ring.last_seq {
            return Replay::Events(Vec::new());
        }
        let oldest = ring.events.front().map_or(ring.last_seq + 1, |e| e.seq);
        if after + 1 < oldest {
            return Replay::Resync;
        }
        Replay::Events(ring.events.iter().filter(|e| e.seq > after).cloned().collect())
    }

    /// Watches the log from after `after` (`None`: from now on).
    pub fn watch(self: &Arc<Self>, after: Option<u64>) -> Watch {
        // Subscribe before reading the ring: an event published in between is in both and
        // is dropped from the live side by its seq.
        let live = self.bus.subscribe(&self.topic);
        let after = after.unwrap_or_else(|| self.last_seq());
        let mut watch =
            Watch { log: self.clone(), live, backlog: VecDeque::new(), last: after, resync: false };
        watch.refill();
        watch
    }
}

/// What a watcher receives next.
pub enum WatchItem {
    Event(Arc<Event>),
    /// Events were lost to this watcher (it fell too far behind, or asked for events the
    /// ring no longer holds): reload the history; live events continue after `last_seq`.
    Resync {
        last_seq: u64,
    },
    /// The log is gone (its session was deleted).
    Closed,
}

/// The `resync` frame every protocol sends for [`WatchItem::Resync`].
pub fn resync_frame(session_id: &str, last_seq: u64) -> serde_json::Value {
    serde_json::json!({
        "type": "resync",
        "session_id": session_id,
        "last_seq": last_seq,
        "message": "some events are no longer available; reload the session history",
    })
}

/// A watcher's view of a log: the replay, then live events, in `seq` order, each once.
pub struct Watch {
    log: Arc<EventLog>,
    live: broadcast::Receiver<Arc<Event>>,
    backlog: VecDeque<Arc<Event>>,
    last: u64,
    resync: bool,
}

impl Watch {
    fn refill(&mut self) {
        match self.log.replay(self.last) {
            Replay::Events(events) => self.backlog.extend(events),
            Replay::Resync => {
                self.resync = true;
                self.last = self.log.last_seq();
            }
        }
    }

    /// The `seq` of the last event delivered (or skipped by a resync).
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// The next event. Never blocks the log: a watcher that lags behind the bus catches up
    /// from the ring, and is told to resync only if the ring has moved past it.
    pub async fn next(&mut self) -> WatchItem {
        loop {
            if let Some(item) = self.try_next() {
                return item;
            }
            match self.live.recv().await {
                Ok(event) => {
                    if let Some(item) = self.take(event) {
                        return item;
                    }
                }
                Err(RecvError::Lagged(_)) => self.refill(),
                Err(RecvError::Closed) => return WatchItem::Closed,
            }
        }
    }

    /// The next event if one is ready now, without waiting: lets a watcher send what has
    /// piled up in one write.
    pub fn try_next(&mut self) -> Option<WatchItem> {
        loop {
            if std::mem::take(&mut self.resync) {
                return Some(WatchItem::Resync { last_seq: self.last });
            }
            if let Some(event) = self.backlog.pop_front() {
                if event.seq > self.last {
                    self.last = event.seq;
                    return Some(WatchItem::Event(event));
                }
                continue;
            }
            match self.live.try_recv() {
                Ok(event) => {
                    if let Some(item) = self.take(event) {
                        return Some(item);
                    }
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(_)) => self.refill(),
                Err(TryRecvError::Closed) => return Some(WatchItem::Closed),
            }
        }
    }

    /// A live event: delivered if it is the next one, dropped if already delivered, and
    /// after a gap queued behind the missing events fetched from the ring.
    fn take(&mut self, event: Arc<Event>) -> Option<WatchItem> {
        if event.seq <= self.last {
            return None;
        }
        if event.seq > self.last + 1 {
            self.refill();
            self.backlog.retain(|e| e.seq < event.seq);
            self.backlog.push_back(event);
            return None;
        }
        self.last = event.seq;
        Some(WatchItem::Event(event))
    }
}
