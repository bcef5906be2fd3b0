//! One turn's events, read from a watch of its session: the OpenAI adapters stream a turn,
//! not a session, so other turns' events are skipped and the stream ends with the turn.

use std::sync::Arc;

use crate::http::ConnectionCount;
use crate::runtime::{Event, EventKind, Watch, WatchItem};

/// What a turn's watcher reads next.
pub(super) enum TurnItem {
    Event(Arc<Event>),
    /// Events were lost (the session's log no longer holds them); the turn goes on.
    Resync {
        last_seq: u64,
    },
}

/// The events of one turn.
pub(super) struct TurnEvents {
    watch: Watch,
    turn_id: String,
    ended: bool,
    /// Counted among the caller's open connections while it streams.
    _connection: Option<ConnectionCount>,
}

impl TurnEvents {
    pub(super) fn new(watch: Watch, turn_id: &str, connection: Option<ConnectionCount>) -> Self {
        Self { watch, turn_id: turn_id.to_owned(), ended: false, _connection: connection }
    }

    /// The turn's next event; `None` after its last one (done, cancelled, failed, or its
    /// session deleted) or when the session's log closed.
    pub(super) async fn next(&mut self) -> Option<TurnItem> {
        if self.ended {
            return None;
        }
        loop {
            match self.watch.next().await {
                WatchItem::Event(event) => {
                    if matches!(event.kind, EventKind::SessionDeleted) {
                        self.ended = true;
                        return Some(TurnItem::Event(event));
                    }
                    if event.turn_id.as_deref() != Some(self.turn_id.as_str()) {
                        continue;
                    }
                    self.ended = ends_turn(&event.kind);
                    return Some(TurnItem::Event(event));
                }
                WatchItem::Resync { last_seq } => return Some(TurnItem::Resync { last_seq }),
                WatchItem::Closed => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }
}

/// Whether an event is a turn's last.
pub(super) fn ends_turn(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Done { .. }
            | EventKind::Cancelled { .. }
            | EventKind::Error { .. }
            | EventKind::SessionDeleted
    )
}
