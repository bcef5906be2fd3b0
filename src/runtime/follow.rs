//! Following sessions across nodes. In a cluster, watchers never attach to a session's
//! owner log (the owner can change under them); each node keeps one *follower log* per
//! watched session, shared by all its watchers there and fed from the bus: frames
//! published on this node arrive straight away, frames from other nodes over Redis. A
//! follower reads each frame once, fills gaps from the topic's stream, and when the bus
//! lost what it missed starts anew (its watchers resync). It ends once nobody watches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::Inner;
use super::event::Event;
use super::log::EventLog;
use crate::bus::{Bus, Followed, Following, LocalBus, Replayed};
use crate::store::Session;

/// How often a follower checks whether anybody still watches.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// This node's follower logs, by session key, and the users whose feed it follows.
#[derive(Default)]
pub(super) struct Followers {
    logs: Mutex<HashMap<i64, Weak<EventLog>>>,
    feeds: Mutex<std::collections::HashSet<String>>,
}

impl Followers {
    fn get(&self, pk: i64) -> Option<Arc<EventLog>> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.get(&pk).and_then(Weak::upgrade)
    }

    /// Keeps `log` unless another was made meanwhile, which is returned instead.
    fn insert(&self, pk: i64, log: Arc<EventLog>) -> (Arc<EventLog>, bool) {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.retain(|_, log| log.strong_count() > 0);
        if let Some(existing) = logs.get(&pk).and_then(Weak::upgrade) {
            return (existing, false);
        }
        logs.insert(pk, Arc::downgrade(&log));
        (log, true)
    }
}

/// The topic a session's events cross nodes on.
pub(super) fn topic(pk: i64) -> String {
    format!("session:{pk}")
}

/// The topic a user's lifecycle events are broadcast on.
pub(super) fn feed_topic(user: &str) -> String {
    format!("feed:{user}")
}

/// Makes this node's copy of the user's lifecycle feed take in the events other nodes
/// broadcast (once per user: from the first watcher here on, for the node's life). The
/// copy numbers them itself, so a feed resumes exactly on the node that numbered it.
pub(super) async fn feed(inner: &Arc<Inner>, user: &str) {
    {
        let mut feeds = inner.followers.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if !feeds.insert(user.to_owned()) {
            return;
        }
    }
    let topic = feed_topic(user);
    let mut following = inner.bus.follow(&topic);
    // Subscribed before the first watcher starts: it misses nothing another node does.
    if let Err(err) = inner.bus.subscribe(&topic).await {
        // The next watcher tries again.
        tracing::warn!(%err, "following a lifecycle feed failed");
        inner.followers.feeds.lock().unwrap_or_else(|e| e.into_inner()).remove(user);
        return;
    }
    let (inner, user) = (Arc::downgrade(inner), user.to_owned());
    tokio::spawn(async move {
        while let Some(next) = following.next().await {
            let Some(inner) = inner.upgrade() else { return };
            match next {
                Followed::Frame { frame, .. } => match Event::from_frame(frame) {
                    Ok(event) => {
                        let session = event.session_id.clone();
                        let turn = event.turn_id.clone();
                        inner.feed(&user).append(&session, turn.as_deref(), event.kind, None);
                    }
                    Err(err) => {
                        tracing::warn!(%err, "a lifecycle event from another node could not be read")
                    }
                },
                Followed::Resumed => {
                    let _ = inner.bus.subscribe(&topic).await;
                }
            }
        }
    });
}

impl Inner {
    /// The newest `seq` of a session whose turns run on another node, as this node's
    /// follower log or the bus knows it (`None` when neither does).
    pub(super) async fn newest_elsewhere(&self, pk: i64) -> Option<u64> {
        if let Some(log) = self.followers.get(pk) {
            return Some(log.last_seq());
        }
        self.bus.newest(&topic(pk)).await.ok().flatten()
    }

    /// This node's follower log of `session`, made (and fed, until nobody watches) on first
    /// use.
    pub(super) async fn follow(&self, session: &Session) -> Arc<EventLog> {
        if let Some(log) = self.followers.get(session.pk) {
            return log;
        }
        let topic = topic(session.pk);
        // Subscribed first (the replay makes sure of it): nothing falls in between.
        let following = self.bus.follow(&topic);
        let (start, frames, floating) = match self.bus.replay(&topic, 0).await {
            Ok(Replayed::Frames { frames, newest }) => {
                let start = frames.first().map_or(newest, |(seq, _)| seq - 1);
                (start, frames, false)
            }
            // Nothing to start from: the stored bound, until the first frame says where
            // the owner's numbering really is.
            Ok(Replayed::Missing) | Err(_) => {
                (session.reserved_seq.max(0) as u64, Vec::new(), true)
            }
        };
        let quiet: Arc<dyn Bus> = Arc::new(LocalBus);
        let log = Arc::new(EventLog::new(topic.clone(), start, self.event_log_capacity, quiet));
        for (seq, frame) in frames {
            accept(&log, seq, frame);
        }
        let (log, made) = self.followers.insert(session.pk, log);
        if made {
            let feeder = Feeder {
                log: Arc::downgrade(&log),
                bus: self.bus.clone(),
                topic,
                floating,
                started: !floating,
            };
            tokio::spawn(feeder.run(following));
        }
        log
    }
}

/// Feeds one follower log from the bus.
struct Feeder {
    log: Weak<EventLog>,
    bus: Arc<dyn Bus>,
    topic: String,
    /// The log's start is a guess (the stream held nothing): the first frame decides.
    floating: bool,
    /// Whether the log holds a position worth keeping (a frame, or a stream to start from).
    started: bool,
}

impl Feeder {
    async fn run(mut self, mut following: Following) {
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                next = following.next() => next,
                _ = check.tick() => {
                    if self.log.strong_count() == 0 {
                        return;
                    }
                    continue;
                }
            };
            let Some(log) = self.log.upgrade() else { return };
            match next {
                None => return,
                Some(Followed::Frame { seq, frame }) => self.frame(&log, seq, frame).await,
                Some(Followed::Resumed) => self.resumed(&log).await,
            }
        }
    }

    async fn frame(&mut self, log: &EventLog, seq: u64, frame: Bytes) {
        if std::mem::take(&mut self.floating) && seq <= log.last_seq() {
            // The owner numbers below the stored bound the log guessed: start from here.
            log.rebase(seq - 1);
        }
        self.started = true;
        if seq <= log.last_seq() {
            return;
        }
        if seq > log.last_seq() + 1 {
            self.catch_up(log).await;
        }
        if seq > log.last_seq() + 1 {
            // What came in between is gone from the stream too.
            log.rebase(seq - 1);
        }
        accept(log, seq, frame);
    }

    /// The bus is back after an outage: fetch what was missed, or start anew if the stream
    /// lost it (Redis restarted).
    async fn resumed(&mut self, log: &EventLog) {
        if !self.catch_up(log).await && self.started {
            log.rebase(log.last_seq());
            log.disconnect_watchers();
        }
    }

    /// Fills the log from the stream; `false` if the stream holds nothing.
    async fn catch_up(&self, log: &EventLog) -> bool {
        match self.bus.replay(&self.topic, log.last_seq()).await {
            Ok(Replayed::Frames { frames, .. }) => {
                for (seq, frame) in frames {
                    if seq > log.last_seq() + 1 {
                        log.rebase(seq - 1);
                    }
                    accept(log, seq, frame);
                }
                true
            }
            Ok(Replayed::Missing) => false,
            // Still down: the next `Resumed` brings it.
            Err(_) => true,
        }
    }
}

/// Reads a frame and appends it to the follower log.
fn accept(log: &EventLog, seq: u64, frame: Bytes) {
    match Event::from_frame(frame) {
        Ok(event) if event.seq == seq => {
            log.accept(Arc::new(event));
        }
        Ok(_) => tracing::warn!(seq, "a frame's seq does not match its stream entry"),
        Err(err) => tracing::warn!(%err, seq, "a frame from another node could not be read"),
    }
}
