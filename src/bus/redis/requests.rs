//! Requests between nodes over Redis channels: each node listens on `<prefix>node:<id>`
//! for requests and on `<prefix>reply:<id>` for the answers to its own. A request names
//! its sender, so the answer finds its way back; one nobody listens for fails at once
//! (`PUBLISH` reaches no subscriber), which is how a dead node is told from a slow one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::bus::Request;

/// Requests from other nodes waiting for this node's runtime to read them.
const INCOMING: usize = 1024;

/// This node's requests waiting for answers, and the requests it received.
pub(super) struct Requests {
    pending: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    next_id: AtomicU64,
    incoming_tx: mpsc::Sender<Request>,
    incoming: Mutex<Option<mpsc::Receiver<Request>>>,
}

impl Default for Requests {
    fn default() -> Self {
        let (incoming_tx, incoming) = mpsc::channel(INCOMING);
        Self {
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            incoming_tx,
            incoming: Mutex::new(Some(incoming)),
        }
    }
}

impl Requests {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Bytes>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a request about to be sent: its id and where its answer will arrive.
    pub(super) fn start(&self) -> (u64, oneshot::Receiver<Bytes>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending().insert(id, tx);
        (id, rx)
    }

    /// Forgets a request that failed or timed out.
    pub(super) fn forget(&self, id: u64) {
        self.pending().remove(&id);
    }

    /// Hands an answer to the request waiting for it (if it still waits).
    pub(super) fn answered(&self, id: u64, body: Bytes) {
        if let Some(waiting) = self.pending().remove(&id) {
            let _ = waiting.send(body);
        }
    }

    /// Queues a request from another node for the runtime; dropped if the runtime is that
    /// far behind (the sender times out).
    pub(super) fn received(&self, request: Request) {
        let _ = self.incoming_tx.try_send(request);
    }

    /// The requests this node receives, once.
    pub(super) fn take_incoming(&self) -> Option<mpsc::Receiver<Request>> {
        self.incoming.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A request or answer on the wire: its id, the sending node, the body.
pub(super) fn envelope(id: u64, from: &str, body: &[u8]) -> Vec<u8> {
    let from = from.as_bytes();
    let mut bytes = Vec::with_capacity(10 + from.len() + body.len());
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&(from.len() as u16).to_be_bytes());
    bytes.extend_from_slice(from);
    bytes.extend_from_slice(body);
    bytes
}

/// Splits an envelope; `None` if it is not one.
pub(super) fn open(bytes: &[u8]) -> Option<(u64, String, Bytes)> {
    let id = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let len = u16::from_be_bytes(bytes.get(8..10)?.try_into().ok()?) as usize;
    let from = std::str::from_utf8(bytes.get(10..10 + len)?).ok()?.to_owned();
    Some((id, from, Bytes::copy_from_slice(&bytes[10 + len..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_junk_is_refused() {
        let bytes = envelope(9, "node-a", b"{}");
        assert_eq!(open(&bytes), Some((9, "node-a".to_owned(), Bytes::from_static(b"{}"))));
        assert_eq!(open(b"tiny"), None);
        assert_eq!(open(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 9, b'a']), None, "a name cut short");
    }

    #[tokio::test]
    async fn answers_reach_the_request_that_waits_for_them() {
        let requests = Requests::default();
        let (id, answer) = requests.start();
        requests.answered(id + 1, Bytes::from_static(b"not yours"));
        requests.answered(id, Bytes::from_static(b"yours"));
        assert_eq!(answer.await.unwrap(), Bytes::from_static(b"yours"));
        assert!(requests.take_incoming().is_some());
        assert!(requests.take_incoming().is_none(), "one reader");
    }
}
