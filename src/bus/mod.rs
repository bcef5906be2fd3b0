//! The bus: hands session events to the *other* nodes of a cluster. Watchers on the node
//! where an event happens get it from its session's log directly; what crosses the bus is
//! the event's frame, serialized once, with its `seq` — nothing in here knows runtime types.
//! One node alone has nobody to hand events to ([`LocalBus`]); [`RedisBus`] joins nodes:
//! each topic is a bounded, expiring Redis stream (for catching up) plus a channel (for
//! live delivery), over a fixed pair of connections per node.

mod local;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

pub use self::redis::{RedisBus, RedisBusConfig};
pub use local::LocalBus;

/// Why the bus could not do something.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Redis cannot be reached now.
    #[error("the bus is unavailable: {0}")]
    Unavailable(String),
    /// Nobody listens for that node's requests (it stopped, or never was).
    #[error("node {0} is not reachable")]
    NoSuchNode(String),
    /// The node did not answer in time.
    #[error("node {0} did not answer in time")]
    Timeout(String),
    #[error("bus failure: {0}")]
    Other(String),
}

/// What a follower of a topic receives.
#[derive(Debug, Clone)]
pub enum Followed {
    /// The frame of event `seq`, as its owner published it.
    Frame { seq: u64, frame: Bytes },
    /// The bus was cut off and is back: frames may have been missed since the last one
    /// received, so the follower catches up with [`Bus::replay`].
    Resumed,
}

/// The frames a topic's stream still holds after some `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Frames after the asked-for `seq`, oldest first, with the seq of the newest frame the
    /// stream holds (0 if it holds none); the first frame may come later than the one right
    /// after `seq` if the stream was trimmed.
    Frames { frames: Vec<(u64, Bytes)>, newest: u64 },
    /// The stream holds nothing: it expired (its topic was quiet), or Redis lost it.
    Missing,
}

/// A subscription to one topic; dropping it ends it.
pub struct Following {
    pub(crate) frames: mpsc::Receiver<Followed>,
    /// Removes the subscription when dropped.
    pub(crate) _guard: Option<Box<dyn Send + Sync>>,
}

impl Following {
    /// A subscription that never delivers anything (a bus with no other nodes).
    pub fn none() -> Self {
        let (_, frames) = mpsc::channel(1);
        Self { frames, _guard: None }
    }

    /// The next delivery; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Followed> {
        self.frames.recv().await
    }
}

/// A request another node sent this one; answer it with [`Request::reply`] (or drop it: the
/// sender then times out).
pub struct Request {
    pub body: Bytes,
    replier: Box<dyn FnOnce(Bytes) + Send>,
}

impl Request {
    /// A request whose answer goes to `replier`.
    pub fn new(body: Bytes, replier: impl FnOnce(Bytes) + Send + 'static) -> Self {
        Self { body, replier: Box::new(replier) }
    }

    /// Sends the answer back to the node that asked.
    pub fn reply(self, body: Bytes) {
        (self.replier)(body);
    }
}

/// Carries serialized session events across nodes.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Hands the frame of event `seq` on `topic` to the other nodes (and this node's
    /// followers of the topic); never blocks the caller. The bus drops it if the topic was
    /// claimed for a later `epoch` meanwhile ([`Bus::claim`]).
    fn publish(&self, topic: &str, seq: u64, epoch: u64, frame: &Bytes);

    /// Claims `topic` for `epoch`: from now on, frames published for an earlier epoch (by
    /// a node that lost the topic and has not noticed yet) are dropped.
    async fn claim(&self, topic: &str, epoch: u64) -> Result<(), BusError>;

    /// Follows `topic`: the frames published on it from now on, on this node or another,
    /// once the node is subscribed to it ([`Bus::subscribe`], or a [`Bus::replay`], which
    /// subscribes first). One subscription per topic per node is enough: callers share it.
    fn follow(&self, topic: &str) -> Following;

    /// Subscribes this node to `topic`'s live frames (if it is not already).
    async fn subscribe(&self, topic: &str) -> Result<(), BusError>;

    /// Hands `frame` to the other nodes' followers of `topic`, live only: no stream keeps
    /// it, and it carries no `seq` of its own (0). Never blocks the caller.
    fn broadcast(&self, topic: &str, frame: &Bytes);

    /// The frames `topic`'s stream still holds after `after`.
    async fn replay(&self, topic: &str, after: u64) -> Result<Replayed, BusError>;

    /// The seq of the newest frame `topic`'s stream holds; `None` if it holds none.
    async fn newest(&self, topic: &str) -> Result<Option<u64>, BusError>;

    /// Sends `body` to node `node` and waits up to `timeout` for its answer. Fails at once
    /// if nobody listens for that node.
    async fn request(&self, node: &str, body: Bytes, timeout: Duration) -> Result<Bytes, BusError>;

    /// The requests other nodes send this one; `None` after the first call (one reader).
    fn requests(&self) -> Option<mpsc::Receiver<Request>>;

    /// Puts `value` under `field` of the shared map `key`, which lasts at least `ttl` after
    /// its last change (readers drop what is stale by its content).
    async fn put(
        &self,
        key: &str,
        field: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), BusError>;

    /// Removes `field` from the shared map `key`.
    async fn remove(&self, key: &str, field: &str) -> Result<(), BusError>;

    /// The shared map `key`.
    async fn entries(&self, key: &str) -> Result<Vec<(String, Bytes)>, BusError>;

    /// Counts one more event under `key` in its current window (which starts with its first
    /// event and lasts `window`); returns the count so far and the time left in the window.
    async fn count(&self, key: &str, window: Duration) -> Result<(u64, Duration), BusError>;

    /// Sets the shared value `key` for `ttl`.
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), BusError>;

    /// Reads the shared value `key` and deletes it: only one caller gets it.
    async fn take(&self, key: &str) -> Result<Option<Bytes>, BusError>;

    /// How long the shared value `key` has left; `None` if there is none.
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, BusError>;

    /// Deletes the shared value `key`.
    async fn delete(&self, key: &str) -> Result<(), BusError>;

    /// Whether other nodes exist to hand events to (whether sessions are watched through
    /// followers rather than through their owner's log).
    fn clustered(&self) -> bool {
        false
    }

    /// A short description for logs and status.
    fn describe(&self) -> &'static str;

    /// Whether the bus delivers across nodes right now (the in-process bus always does).
    fn healthy(&self) -> bool {
        true
    }
}

/// Opens the bus: Redis at `url`, or the in-process bus if `None`.
pub async fn open(url: Option<&str>, config: RedisBusConfig) -> Result<Arc<dyn Bus>, BusError> {
    match url {
        None => Ok(Arc::new(LocalBus)),
        Some(url) => Ok(Arc::new(RedisBus::open(url, config).await?)),
    }
}
