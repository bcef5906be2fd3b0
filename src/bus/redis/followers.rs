//! This node's followers of each topic, and the delivery of live frames to them: frames
//! published here go straight to them, frames from other nodes arrive as Redis pushes.
//! A channel is subscribed once per node, whatever the number of its followers, and
//! unsubscribed by a sweep once nobody follows it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bus::Followed;

/// Frames a follower may have waiting before newer ones are dropped for it (it then finds
/// the gap and catches up from the stream).
const BACKLOG: usize = 1024;

/// Each channel's followers: an id (to remove one) and where its frames go.
type Channels = HashMap<String, Vec<(u64, mpsc::Sender<Followed>)>>;

/// The followers of every channel, by channel name.
#[derive(Default)]
pub(super) struct Followers {
    channels: Mutex<Channels>,
    next_id: AtomicU64,
    /// The channels the connection is subscribed to; held across (un)subscribing, so the
    /// two never cross.
    pub(super) subscribed: tokio::sync::Mutex<HashSet<String>>,
}

/// Removes its follower when dropped.
pub(super) struct Guard {
    followers: Weak<Followers>,
    channel: String,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(followers) = self.followers.upgrade() {
            let mut channels = followers.channels();
            if let Some(list) = channels.get_mut(&self.channel) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    channels.remove(&self.channel);
                }
            }
        }
    }
}

impl Followers {
    fn channels(&self) -> MutexGuard<'_, Channels> {
        // Every critical section leaves the map consistent, even if it panicked midway.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a follower of `channel`.
    pub(super) fn add(self: &Arc<Self>, channel: &str) -> (mpsc::Receiver<Followed>, Guard) {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.channels().entry(channel.to_owned()).or_default().push((id, tx));
        let guard = Guard { followers: Arc::downgrade(self), channel: channel.to_owned(), id };
        (rx, guard)
    }

    /// Hands a frame to the followers of `channel`. A follower whose backlog is full misses
    /// it, and catches up from the stream when the next frame shows the gap.
    pub(super) fn deliver(&self, channel: &str, seq: u64, frame: &Bytes) {
        let channels = self.channels();
        for (_, follower) in channels.get(channel).into_iter().flatten() {
            let _ = follower.try_send(Followed::Frame { seq, frame: frame.clone() });
        }
    }

    /// Tells every follower the bus is back after an outage: they may have missed frames.
    pub(super) fn resume_all(&self) {
        for (_, follower) in self.channels().values().flatten() {
            let _ = follower.try_send(Followed::Resumed);
        }
    }

    /// Whether anybody here follows `channel`.
    pub(super) fn followed(&self, channel: &str) -> bool {
        self.channels().contains_key(channel)
    }
}

/// A live frame's payload on a channel: the publishing bus's origin, the seq, the frame.
pub(super) fn payload(origin: u64, seq: u64, frame: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(16 + frame.len());
    payload.extend_from_slice(&origin.to_be_bytes());
    payload.extend_from_slice(&seq.to_be_bytes());
    payload.extend_from_slice(frame);
    payload
}

/// Splits a payload into origin, seq and frame; `None` if it is not one of ours.
pub(super) fn parse(payload: &[u8]) -> Option<(u64, u64, Bytes)> {
    let origin = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((origin, seq, Bytes::copy_from_slice(&payload[16..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_junk_is_refused() {
        let bytes = payload(7, 42, b"{\"type\":\"chunk\"}");
        let (origin, seq, frame) = parse(&bytes).unwrap();
        assert_eq!((origin, seq, &frame[..]), (7, 42, &b"{\"type\":\"chunk\"}"[..]));
        assert!(parse(b"short").is_none());
    }

    #[tokio::test]
    async fn followers_get_frames_until_they_go() {
        let followers = Arc::new(Followers::default());
        let (mut rx, guard) = followers.add("c");
        followers.deliver("c", 1, &Bytes::from_static(b"x"));
        followers.deliver("other", 2, &Bytes::from_static(b"y"));
        assert!(matches!(rx.recv().await, Some(Followed::Frame { seq: 1, .. })));
        assert!(followers.followed("c"));
        drop(guard);
        assert!(!followers.followed("c"));
    }
}
