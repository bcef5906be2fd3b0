//! The event bus: fan-out of session events to every watcher. The [`Bus`] trait and the
//! in-process implementation; a Redis one joins it for multi-node.

mod local;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::runtime::Event;

pub use local::LocalBus;

/// Publishes session events and hands out subscriptions.
pub trait Bus: Send + Sync + 'static {
    /// Publishes an event on `topic`; never blocks, drops nothing for subscribers that keep
    /// up, and tells lagging ones they lagged.
    fn publish(&self, topic: &str, event: Arc<Event>);

    /// Receives every event published on `topic` from now on.
    fn subscribe(&self, topic: &str) -> broadcast::Receiver<Arc<Event>>;

    /// A short description for logs and status.
    fn describe(&self) -> &'static str;

    /// Whether the bus delivers across nodes right now (the in-process bus always does).
    fn healthy(&self) -> bool {
        true
    }
}
