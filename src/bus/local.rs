//! The in-process bus: one broadcast channel per topic, created on first use and dropped
//! when nobody listens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::Bus;
use crate::runtime::Event;

/// [`Bus`] inside one process.
pub struct LocalBus {
    topics: Mutex<HashMap<String, broadcast::Sender<Arc<Event>>>>,
    capacity: usize,
}

impl LocalBus {
    /// A bus whose per-topic buffers hold `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        Self { topics: Mutex::new(HashMap::new()), capacity: capacity.max(16) }
    }
}

impl Bus for LocalBus {
    fn publish(&self, topic: &str, event: Arc<Event>) {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        // A failed send means nobody listens any more: forget the channel.
        if let Some(sender) = topics.get(topic)
            && sender.send(event).is_err()
        {
            topics.remove(topic);
        }
    }

    fn subscribe(&self, topic: &str) -> broadcast::Receiver<Arc<Event>> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    fn describe(&self) -> &'static str {
        "local"
    }
}
