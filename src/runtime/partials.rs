//! Coalesced writes of streaming steps' partial text. A turn hands its newest snapshot to
//! one writer task, which writes whatever has collected in one transaction: under load
//! many sessions' timed flushes share a commit instead of taking one each.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::store::{PartialText, Store};

/// Snapshots waiting for the writer; a turn that gets ahead of the store waits here.
const QUEUE: usize = 1024;

/// The sending side; the writer task ends when it is dropped (with the runtime).
pub(super) struct Partials {
    queue: mpsc::Sender<PartialText>,
}

impl Partials {
    /// Starts the writer task on the current Tokio runtime.
    pub(super) fn start(store: Arc<dyn Store>) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(store, pending));
        Self { queue }
    }

    /// Queues a snapshot. The store keeps it only while the message is still streaming,
    /// so a late snapshot never overwrites the step's final text.
    pub(super) async fn write(&self, partial: PartialText) {
        // The writer only stops after the runtime is gone.
        let _ = self.queue.send(partial).await;
    }
}

async fn write_batches(store: Arc<dyn Store>, mut pending: mpsc::Receiver<PartialText>) {
    let mut received = Vec::new();
    while pending.recv_many(&mut received, QUEUE).await > 0 {
        // The newest snapshot of each message is the one to keep.
        let mut newest: HashMap<i64, PartialText> = HashMap::new();
        for partial in received.drain(..) {
            newest.insert(partial.message_id, partial);
        }
        let batch: Vec<PartialText> = newest.into_values().collect();
        if let Err(err) = store.update_partials(&batch).await {
            tracing::warn!(%err, messages = batch.len(), "could not store partial answers");
        }
    }
}
