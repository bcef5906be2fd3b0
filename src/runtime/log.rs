//! An event log: sequence numbers, the bounded in-memory ring resuming watchers replay
//! from, and [`Watch`], which joins the replay to the live feed with no gap and no
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
    /// The last `seq` handed out: published, held, or reserved for a slot.
    taken: u64,
    /// Every `seq` up to this one has been published.
    published: u64,
    /// Highest `seq` the store holds a durable reservation for: nothing past it is
    /// published, so no `seq` a client saw can be handed out again after a crash.
    durable: u64,
    /// Target of the last reservation asked for (sessions only).
    reserved: u64,
    /// Published events, the newest `capacity` of them.
    events: VecDeque<Arc<Event>>,
    /// `published + 1 ..= taken` in order: an event waiting for the ones before it (or
    /// for its reservation), or `None` for a slot whose event is not made yet.
    held: VecDeque<Option<Arc<Event>>>,
    /// The `session_deleted` event, once published: the log's last. Nothing after it is
    /// published, and a watcher that resyncs past it is still given it.
    terminal: Option<Arc<Event>>,
    /// Live delivery to this node's watchers; made by the first one, dropped when the
    /// last is gone (a log nobody watches keeps no buffered events).
    live: Option<broadcast::Sender<Arc<Event>>>,
    /// Closed for good ([`EventLog::close`]): nothing more is published or delivered.
    closed: bool,
    /// Raised when a follower's numbering starts anew ([`EventLog::rebase`]): what a
    /// watcher saw before says nothing about what comes next.
    epoch: u64,
}

/// Events a watcher may fall behind the live feed before it catches up from the ring.
const LIVE_CAPACITY: usize = 256;

/// What a watcher resuming after some `seq` gets from the log.
pub enum Replay {
    /// The events after the requested `seq`, oldest first.
    Events(Vec<Arc<Event>>),
    /// The ring no longer holds the events right after that `seq`.
    Resync,
}

/// A numbered, bounded, published log of events. Events are published strictly in `seq`
/// order: a number can be taken before its event exists ([`EventLog::reserve_slot`]),
/// and later events wait for it.
pub struct EventLog {
    ring: Mutex<Ring>,
    /// When the last event was appended (epoch ms), for evicting idle sessions.
    last_active: AtomicI64,
    capacity: usize,
    topic: String,
    bus: Arc<dyn Bus>,
    /// The publisher's claim on the topic (its lease's fence): the bus drops this log's
    /// frames once a later holder claimed it.
    epoch: u64,
    /// Whether a `session_deleted` event ends the log: a session's does; a user's
    /// lifecycle feed, which tells of every session's deletion, goes on.
    ends_on_delete: bool,
}

impl EventLog {
    /// A log whose next event gets `last_seq + 1`, publishing on `topic`, with no
    /// durability bound (the lifecycle feeds).
    pub fn new(topic: String, last_seq: u64, capacity: usize, bus: Arc<dyn Bus>) -> Self {
        Self::bounded(topic, last_seq, u64::MAX, capacity, bus)
    }

    /// A log whose next event gets `last_seq + 1` and which publishes nothing past
    /// `durable` until [`EventLog::set_durable`] raises it.
    pub fn bounded(
        topic: String,
        last_seq: u64,
        durable: u64,
        capacity: usize,
        bus: Arc<dyn Bus>,
    ) -> Self {
        let ring = Ring {
            taken: last_seq,
            published: last_seq,
            durable,
            reserved: durable,
            events: VecDeque::new(),
            held: VecDeque::new(),
            terminal: None,
            live: None,
            closed: false,
            epoch: 0,
        };
        Self {
            ring: Mutex::new(ring),
            last_active: AtomicI64::new(crate::clock::now_ms()),
            capacity: capacity.max(16),
            topic,
            bus,
            epoch: 0,
            ends_on_delete: true,
        }
    }

    /// A user's lifecycle feed: like [`EventLog::new`], but a session's deletion is one of
    /// its events, not its end.
    pub fn feed(topic: String, last_seq: u64, capacity: usize, bus: Arc<dyn Bus>) -> Self {
        Self { ends_on_delete: false, ..Self::new(topic, last_seq, capacity, bus) }
    }

    /// The log, publishing under `epoch` (see [`Bus::claim`]).
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // Every critical section leaves the ring consistent, even if it panicked midway.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers the event, appends it and publishes it once every earlier number is
    /// published and its own is durable, under one lock so that every watcher sees one
    /// order. With `reserve`, returns the new bound to make durable when fewer than half
    /// of the reserved numbers are left.
    pub fn append(
        &self,
        session_id: &str,
        turn_id: Option<&str>,
        kind: EventKind,
        reserve: Option<u64>,
    ) -> (Arc<Event>, Option<u64>) {
        self.last_active.store(crate::clock::now_ms(), Ordering::Relaxed);
        let mut ring = self.ring();
        let (seq, extend) = ring.next(reserve);
        let event = Arc::new(Event::new(seq, session_id, turn_id, kind));
        ring.held.push_back(Some(event.clone()));
        self.release(&mut ring);
        (event, extend)
    }

    /// Takes the next number for an event made later with [`EventLog::fill`]; events
    /// appended meanwhile wait for it. Returns the number and, as `append`, a bound to
    /// make durable.
    pub fn reserve_slot(&self, reserve: Option<u64>) -> (u64, Option<u64>) {
        self.last_active.store(crate::clock::now_ms(), Ordering::Relaxed);
        let mut ring = self.ring();
        let (seq, extend) = ring.next(reserve);
        ring.held.push_back(None);
        (seq, extend)
    }

    /// Puts the event of a reserved slot in place and publishes what it held back.
    pub fn fill(
        &self,
        seq: u64,
        session_id: &str,
        turn_id: Option<&str>,
        kind: EventKind,
    ) -> Arc<Event> {
        let event = Arc::new(Event::new(seq, session_id, turn_id, kind));
        let mut ring = self.ring();
        if ring.closed {
            return event;
        }
        let index = seq.checked_sub(ring.published + 1).map(|i| i as usize);
        match index.and_then(|i| ring.held.get_mut(i)) {
            Some(slot @ None) => *slot = Some(event.clone()),
            // Not a pending slot: a bug, but never a reason to publish out of order.
            _ => tracing::error!(seq, "filling a sequence number that was not reserved"),
        }
        self.release(&mut ring);
        event
    }

    /// The bound to reserve now if fewer than half of `block` numbers past the last one
    /// taken are durably reserved (a new session's first, or a renewal that lags), taking
    /// it as asked for; `None` when the reservation is far enough ahead.
    pub fn reservation_due(&self, block: u64) -> Option<u64> {
        let mut ring = self.ring();
        if ring.durable >= ring.taken + block / 2 {
            return None;
        }
        ring.reserved = ring.reserved.max(ring.taken + block);
        Some(ring.reserved)
    }

    /// Forgets a reservation asked for that did not happen (the store failed): the next
    /// event asks again, so nothing waits for a bound that will never come.
    pub fn reservation_failed(&self) {
        let mut ring = self.ring();
        ring.reserved = ring.durable;
    }

    /// Records that the store holds a reservation up to `bound`, and publishes what
    /// waited for it.
    pub fn set_durable(&self, bound: u64) {
        let mut ring = self.ring();
        ring.durable = ring.durable.max(bound);
        self.release(&mut ring);
    }

    /// Publishes held events from the front while they are made and durable.
    fn release(&self, ring: &mut Ring) {
        if ring.closed {
            ring.held.clear();
            return;
        }
        while ring.published < ring.durable && matches!(ring.held.front(), Some(Some(_))) {
            let Some(Some(event)) = ring.held.pop_front() else { break };
            if ring.terminal.is_some() {
                // The log ended (its session was deleted): what a dying turn still says is
                // for nobody.
                continue;
            }
            self.bus.publish(&self.topic, event.seq, self.epoch, &event.json);
            self.deliver(ring, event);
        }
    }

    /// Puts a published event in the ring and hands it to the watchers here.
    fn deliver(&self, ring: &mut Ring, event: Arc<Event>) {
        if self.ends_on_delete && matches!(event.kind, EventKind::SessionDeleted) {
            ring.terminal = Some(event.clone());
        }
        ring.published = event.seq;
        ring.taken = ring.taken.max(event.seq);
        if ring.events.len() >= self.capacity {
            ring.events.pop_front();
        }
        // A failed send means nobody watches any more.
        if ring.live.as_ref().is_some_and(|live| live.send(event.clone()).is_err()) {
            ring.live = None;
        }
        ring.events.push_back(event);
    }

    /// A follower's log: takes an event another node numbered, if it is the next one.
    /// Returns `false` if it comes after a gap (the caller fetches what is missing, or
    /// rebases); an event already held is ignored.
    pub(crate) fn accept(&self, event: Arc<Event>) -> bool {
        self.last_active.store(crate::clock::now_ms(), Ordering::Relaxed);
        let mut ring = self.ring();
        if ring.closed || ring.terminal.is_some() || event.seq <= ring.published {
            return true;
        }
        if event.seq != ring.published + 1 {
            return false;
        }
        self.deliver(&mut ring, event);
        true
    }

    /// A follower's log starts anew after `to`: the events between what it held and what
    /// comes next are lost to it (the bus lost them), so its watchers resync.
    pub(crate) fn rebase(&self, to: u64) {
        let mut ring = self.ring();
        ring.events.clear();
        ring.published = to;
        ring.taken = to;
        ring.epoch += 1;
    }

    /// Lets every watcher of this log go (they get [`WatchItem::Closed`] and reconnect);
    /// the log itself goes on for new ones.
    pub(crate) fn disconnect_watchers(&self) {
        self.ring().live = None;
    }

    fn epoch(&self) -> u64 {
        self.ring().epoch
    }

    /// Stops publishing: events still held are dropped, and the live feed's end reaches
    /// every watcher once it has read what was published.
    pub fn close(&self) {
        let mut ring = self.ring();
        ring.held.clear();
        ring.closed = true;
        ring.live = None;
    }

    /// When the last event was appended (epoch ms).
    pub fn last_active(&self) -> i64 {
        self.last_active.load(Ordering::Relaxed)
    }

    /// The last `seq` published: what a watcher can have seen.
    pub fn last_seq(&self) -> u64 {
        self.ring().published
    }

    /// The log's last event, once its session was deleted.
    fn terminal(&self) -> Option<Arc<Event>> {
        self.ring().terminal.clone()
    }

    /// Whether events wait to be published (for a slot, or for their reservation).
    pub fn holding(&self) -> bool {
        !self.ring().held.is_empty()
    }

    /// The events after `after`, or a resync if some of them left the ring.
    pub fn replay(&self, after: u64) -> Replay {
        let ring = self.ring();
        if after >= ring.published {
            return Replay::Events(Vec::new());
        }
        let oldest = ring.events.front().map_or(ring.published + 1, |e| e.seq);
        if after + 1 < oldest {
            return Replay::Resync;
        }
        Replay::Events(ring.events.iter().filter(|e| e.seq > after).cloned().collect())
    }

    /// Watches the log from after `after` (`None`: from now on).
    pub fn watch(self: &Arc<Self>, after: Option<u64>) -> Watch {
        // Subscribe before reading the ring: an event published in between is in both and
        // is dropped from the live side by its seq.
        let live = {
            let mut ring = self.ring();
            if ring.closed {
                // The sender goes at once: the watcher sees the end after the replay.
                broadcast::channel(1).0.subscribe()
            } else {
                ring.live.get_or_insert_with(|| broadcast::channel(LIVE_CAPACITY).0).subscribe()
            }
        };
        let after = after.unwrap_or_else(|| self.last_seq());
        let epoch = self.epoch();
        let mut watch = Watch {
            log: self.clone(),
            live,
            backlog: VecDeque::new(),
            last: after,
            resync: false,
            epoch,
        };
        watch.refill();
        watch
    }
}

impl Ring {
    /// The next number, and the reservation bound to ask for if one is due.
    fn next(&mut self, reserve: Option<u64>) -> (u64, Option<u64>) {
        self.taken += 1;
        let seq = self.taken;
        let mut extend = None;
        if let Some(block) = reserve
            && seq + block / 2 > self.reserved
        {
            self.reserved = seq + block;
            extend = Some(self.reserved);
        }
        (seq, extend)
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
    /// The log's live feed closed (the log itself is gone); not seen in practice, since
    /// every watcher keeps its log. A deleted session ends with its `session_deleted` event.
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
    /// The log's epoch when this watcher's position was last valid.
    epoch: u64,
}

impl Watch {
    fn refill(&mut self) {
        match self.log.replay(self.last) {
            Replay::Events(events) => self.backlog.extend(events),
            Replay::Resync => {
                self.resync = true;
                self.epoch = self.log.epoch();
                self.last = self.log.last_seq();
                // A watcher that fell behind still learns that the session is gone.
                if let Some(terminal) = self.log.terminal() {
                    self.last = terminal.seq - 1;
                    self.backlog.push_back(terminal);
                }
            }
        }
    }

    /// The `seq` of the last event delivered (or skipped by a resync).
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// The next event. Never blocks the log: a watcher that lags behind the live feed catches up
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
            let epoch = self.log.epoch();
            if epoch == self.epoch {
                return None;
            }
            // The log started anew below this watcher's position: resync from just before
            // this event, which comes next.
            self.epoch = epoch;
            self.last = event.seq - 1;
            self.backlog.clear();
            self.backlog.push_back(event);
            return Some(WatchItem::Resync { last_seq: self.last });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::LocalBus;

    fn chunk(text: &str) -> EventKind {
        EventKind::Chunk { content: text.into() }
    }

    fn log(durable: u64) -> Arc<EventLog> {
        Arc::new(EventLog::bounded("t".into(), 0, durable, 64, Arc::new(LocalBus)))
    }

    fn seqs(watch: &mut Watch) -> Vec<u64> {
        std::iter::from_fn(|| match watch.try_next() {
            Some(WatchItem::Event(event)) => Some(event.seq),
            _ => None,
        })
        .collect()
    }

    #[test]
    fn nothing_past_the_durable_reservation_is_published() {
        let log = log(0);
        let mut watch = log.watch(None);
        let (_, reserve) = log.append("s", None, chunk("a"), Some(8));
        assert_eq!(reserve, Some(9), "a reservation is asked for");
        assert_eq!(log.last_seq(), 0);
        assert!(seqs(&mut watch).is_empty() && log.holding());
        log.set_durable(9);
        assert_eq!(seqs(&mut watch), vec![1]);
        assert!(!log.holding());
    }

    #[test]
    fn events_wait_for_an_earlier_slot_and_follow_it_in_order() {
        let log = log(100);
        let mut watch = log.watch(None);
        let (slot, _) = log.reserve_slot(None);
        log.append("s", None, chunk("b"), None);
        log.append("s", None, chunk("c"), None);
        assert!(seqs(&mut watch).is_empty(), "nothing overtakes the slot");
        assert!(matches!(log.replay(0), Replay::Events(events) if events.is_empty()));
        log.fill(slot, "s", None, chunk("a"));
        assert_eq!(seqs(&mut watch), vec![1, 2, 3]);
        let late = log.watch(Some(0));
        let mut late = late;
        assert_eq!(seqs(&mut late), vec![1, 2, 3]);
    }

    #[test]
    fn a_feed_goes_on_past_a_sessions_deletion() {
        let feed = Arc::new(EventLog::feed("feed:u".into(), 0, 16, Arc::new(LocalBus)));
        let mut watch = feed.watch(None);
        feed.append("s1", None, EventKind::SessionDeleted, None);
        feed.append("s2", None, chunk("still told"), None);
        assert_eq!(seqs(&mut watch), vec![1, 2]);
        // A session's own log ends there.
        let log = log(100);
        let mut watch = log.watch(None);
        log.append("s", None, EventKind::SessionDeleted, None);
        log.append("s", None, chunk("for nobody"), None);
        assert_eq!(seqs(&mut watch), vec![1]);
    }

    #[test]
    fn a_watcher_that_fell_behind_is_still_told_the_session_was_deleted() {
        let log = Arc::new(EventLog::new("t".into(), 0, 16, Arc::new(LocalBus)));
        let mut watch = log.watch(Some(0));
        // More than the live feed buffers and the ring keeps: the watcher must resync.
        for n in 0..(LIVE_CAPACITY + 40) {
            log.append("s", None, chunk(&n.to_string()), None);
        }
        log.append("s", None, EventKind::SessionDeleted, None);
        log.append("s", None, chunk("after the end"), None);
        let mut items = Vec::new();
        while let Some(item) = watch.try_next() {
            items.push(item);
        }
        assert!(matches!(items.first(), Some(WatchItem::Resync { .. })));
        let last = items.last().unwrap();
        assert!(
            matches!(last, WatchItem::Event(event) if matches!(event.kind, EventKind::SessionDeleted)),
            "the deletion is the last thing the watcher gets"
        );
        let deleted = LIVE_CAPACITY as u64 + 41;
        assert_eq!(log.last_seq(), deleted, "nothing is published after the deletion");
    }
}
