//! One turn's events, for adapters that stream a turn rather than a session (the OpenAI
//! APIs, AG-UI): other turns' events are skipped, and the watch ends with the turn. Where
//! the session's log cannot tell the end (its ring moved on, or the session was reloaded
//! after a restart), the stored turn does; a log that closes (the bus reconnected) is
//! watched again from the last event seen.

use std::sync::Arc;
use std::time::Duration;

use super::event::{Event, EventKind, ToolCallSummary, TurnError};
use super::log::{Watch, WatchItem};
use super::{Runtime, RuntimeError};
use crate::conversation::Role;
use crate::store::TurnStatus;

/// What a turn's watcher reads next.
pub enum TurnItem {
    Event(Arc<Event>),
    /// Events were lost to this watcher; the turn goes on.
    Resync {
        last_seq: u64,
    },
    /// The session's events can no longer be followed (the bus is down); the turn may go
    /// on, and a client can resume later.
    Lost,
}

/// The events of one turn.
pub struct TurnWatch {
    runtime: Runtime,
    user: String,
    session_id: String,
    turn_id: String,
    watch: Watch,
    /// The last `seq` seen, where a new watch resumes.
    last_seq: u64,
    ended: bool,
}

/// Whether an event is a turn's last.
pub fn ends_turn(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Done { .. }
            | EventKind::Cancelled { .. }
            | EventKind::Error { .. }
            | EventKind::SessionDeleted
    )
}

impl Runtime {
    /// Watches turn `turn_id` of the user's session `session_id` from after `after`.
    pub async fn watch_turn(
        &self,
        user: &str,
        session_id: &str,
        turn_id: &str,
        after: u64,
    ) -> Result<TurnWatch, RuntimeError> {
        let watching = self.watch(user, Some(session_id), None, Some(after), false).await?;
        Ok(TurnWatch {
            runtime: self.clone(),
            user: user.to_owned(),
            session_id: session_id.to_owned(),
            turn_id: turn_id.to_owned(),
            watch: watching.watch,
            last_seq: after,
            ended: false,
        })
    }
}

impl TurnWatch {
    /// The turn's next event; `None` after its last one (done, cancelled, failed, or its
    /// session deleted) or after [`TurnItem::Lost`].
    pub async fn next(&mut self) -> Option<TurnItem> {
        if self.ended {
            return None;
        }
        loop {
            match self.watch.next().await {
                WatchItem::Event(event) => {
                    self.last_seq = self.last_seq.max(event.seq);
                    let deleted = matches!(event.kind, EventKind::SessionDeleted);
                    if !deleted && event.turn_id.as_deref() != Some(self.turn_id.as_str()) {
                        continue;
                    }
                    self.ended = ends_turn(&event.kind);
                    return Some(TurnItem::Event(event));
                }
                WatchItem::Resync { last_seq } => {
                    self.last_seq = self.last_seq.max(last_seq);
                    if let Some(end) = self.stored_end().await {
                        self.ended = true;
                        return Some(TurnItem::Event(end));
                    }
                    return Some(TurnItem::Resync { last_seq });
                }
                WatchItem::Closed => {
                    if self.rewatch().await {
                        continue;
                    }
                    self.ended = true;
                    return Some(match self.stored_end().await {
                        Some(end) => TurnItem::Event(end),
                        None => TurnItem::Lost,
                    });
                }
            }
        }
    }

    /// Watches the session again after the last event seen; whether that worked.
    async fn rewatch(&mut self) -> bool {
        for attempt in 0..3u32 {
            tokio::time::sleep(Duration::from_millis(100) * attempt).await;
            let (user, id) = (&self.user, Some(self.session_id.as_str()));
            if let Ok(watching) =
                self.runtime.watch(user, id, None, Some(self.last_seq), false).await
            {
                self.watch = watching.watch;
                return true;
            }
        }
        false
    }

    /// The turn's last event as the store tells it, if it has ended.
    async fn stored_end(&self) -> Option<Arc<Event>> {
        let view = self.runtime.turn(&self.user, &self.turn_id).await.ok()?;
        let record = &view.record;
        let last_text = view
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::Assistant)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let kind = match record.status {
            TurnStatus::Queued | TurnStatus::Running => return None,
            TurnStatus::Done => EventKind::Done {
                full_response: last_text,
                usage: record.usage,
                model: record.model.clone(),
                duration_ms: record
                    .finished_at
                    .map_or(0, |f| (f - record.created_at).max(0) as u64),
                tool_calls: view
                    .tool_calls
                    .iter()
                    .map(|call| ToolCallSummary {
                        id: call.id.clone(),
                        name: call.name.clone(),
                        args: serde_json::from_str(&call.args)
                            .unwrap_or_else(|_| serde_json::Value::String(call.args.clone())),
                        output: call.output.clone().unwrap_or_default(),
                        is_error: call.is_error,
                        duration_ms: call.duration_ms.unwrap_or_default().max(0) as u64,
                    })
                    .collect(),
            },
            TurnStatus::Cancelled | TurnStatus::Interrupted => {
                EventKind::Cancelled { partial: last_text }
            }
            TurnStatus::Error => EventKind::Error {
                message: record.error_message.clone().unwrap_or_default(),
                code: TurnError::from_code(record.error_code.as_deref().unwrap_or_default()),
            },
        };
        let event = Event::new(self.last_seq, &self.session_id, Some(&self.turn_id), kind);
        Some(Arc::new(event))
    }
}
