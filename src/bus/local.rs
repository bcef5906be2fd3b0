//! The in-process bus: one broadcast channel per topic, created on first use and dropped
//! when nobody listens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::Bus;
use crate::runtime::Event;

/// [`Bus`] inside one process.
pub struct LocalBus {
    topics: Mutex<Topics>,
    capacity: usize,
}

struct Topics {
    senders: HashMap<String, broadcast::Sender<Arc<Event>>>,
    /// How many topics trigger the next sweep of the ones nobody listens to.
    sweep_at: usize,
}

/// Topics below this count are never swept.
const MIN_SWEEP: usize = 64;

impl LocalBus {
    /// A bus whose per-topic buffers hold `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        let topics = Topics { senders: HashMap::new(), sweep_at: MIN_SWEEP };
        Self { topics: Mutex::new(topics), capacity: capacity.max(16) }
    }

    /// Topics with a channel now.
    pub fn topics(&self) -> usize {
        self.topics.lock().unwrap_or_else(|e| e.into_inner()).senders.len()
    }
}

impl Bus for LocalBus {
    fn publish(&self, topic: &str, event: Arc<Event>) {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        // A failed send means nobody listens any more: forget the channel.
        if let Some(sender) = topics.senders.get(topic)
            && sender.send(event).is_err()
        {
            topics.senders.remove(topic);
        }
    }

    fn subscribe(&self, topic: &str) -> broadcast::Receiver<Arc<Event>> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        // A topic whose last watcher left and which saw no event since (its session went
        // quiet) would keep its channel and buffered events forever: sweep those whenever
        // the map has doubled, which costs O(1) per subscription on average.
        if topics.senders.len() >= topics.sweep_at {
            topics.senders.retain(|_, sender| sender.receiver_count() > 0);
            topics.sweep_at = (topics.senders.len() * 2).max(MIN_SWEEP);
        }
        topics
            .senders
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    fn describe(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_nobody_listens_to_are_swept() {
        let bus = LocalBus::new(16);
        let kept = bus.subscribe("kept");
        for i in 0..1000 {
            drop(bus.subscribe(&format!("gone{i}")));
        }
        assert!(bus.topics() <= 2 * MIN_SWEEP, "{} topics", bus.topics());
        assert_eq!(kept.len(), 0);
        assert!(bus.topics.lock().unwrap().senders.contains_key("kept"));
    }
}
