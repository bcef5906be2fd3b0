//! A run's SSE stream: its turn's events read from the start (so the mapper knows what is
//! open at any point), those after the resume point sent, opened by `RUN_STARTED`.

use axum::response::sse::Event as SseEvent;
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use super::attach::Attachment;
use super::events::{PER_EVENT, Run, RunEnd, RunEvents};
use crate::http::ConnectionCount;
use crate::runtime::{TurnItem, TurnWatch};

/// What a run's stream carries along.
struct RunState {
    events: TurnWatch,
    mapper: RunEvents,
    run: Run,
    turn: String,
    /// Events numbered up to this were sent before (a resumed stream).
    after: Option<u64>,
    /// Whether `RUN_STARTED` went out.
    opened: bool,
    ended: bool,
    attached: Attachment,
    _connection: ConnectionCount,
}

/// The SSE events of `run`, whose turn is `turn`, after `after`.
pub(super) fn run_stream(
    events: TurnWatch,
    run: Run,
    turn: String,
    after: Option<u64>,
    attached: Attachment,
    connection: ConnectionCount,
) -> impl futures_util::Stream<Item = SseEvent> + Send + 'static {
    let state = RunState {
        events,
        mapper: RunEvents::default(),
        run,
        turn,
        after,
        opened: false,
        ended: false,
        attached,
        _connection: connection,
    };
    stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        let out = next_events(&mut state).await;
        if state.ended {
            // Done, failed, cancelled, interrupted, or no longer followable: the client
            // did not go away, so the turn is not stopped for it.
            state.attached.ended();
        }
        Some((stream::iter(out), state))
    })
    .flatten()
}

/// The SSE events the next turn event (or events, if some are skipped) becomes.
async fn next_events(state: &mut RunState) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while out.is_empty() && !state.ended {
        let event = match state.events.next().await {
            Some(TurnItem::Event(event)) => event,
            // Lost events cannot be told again in AG-UI: the run goes on from here.
            Some(TurnItem::Resync { .. }) => continue,
            Some(TurnItem::Lost) => {
                state.ended = true;
                let message = "the thread's events can no longer be followed; the run goes \
                               on: reconnect with Last-Event-ID to resume it";
                let error = json!({"type": "RUN_ERROR", "message": message, "code": "STREAM_LOST"});
                let id = state.after.unwrap_or_default();
                if !state.opened {
                    out.extend(
                        state.mapper.opening(&state.run).iter().map(|v| sse(&state.turn, id, v)),
                    );
                }
                out.push(sse(&state.turn, id, &error));
                return out;
            }
            None => {
                state.ended = true;
                return out;
            }
        };
        let base = event.seq * PER_EVENT;
        let opening = if state.opened { Vec::new() } else { state.mapper.opening(&state.run) };
        let (mapped, end) = state.mapper.map(&state.run, &event);
        let after = state.after;
        let fresh = |n: u64| after.is_none_or(|after| n > after);
        match end {
            // An ending this stream sends ends it; one sent before either ended the turn
            // (nothing more comes) or was an interrupt answered since (go on).
            Some(RunEnd::Interrupted) if !fresh(base + mapped.len() as u64 - 1) => {}
            Some(_) => state.ended = true,
            None => {}
        }
        let numbered: Vec<(u64, Value)> = mapped
            .into_iter()
            .enumerate()
            .map(|(k, v)| (base + k as u64, v))
            .filter(|(n, _)| fresh(*n))
            .collect();
        if !state.opened && !numbered.is_empty() {
            // RUN_STARTED (and what was open at that point) just before the first event
            // this stream sends.
            state.opened = true;
            let id = after.unwrap_or(base.saturating_sub(1));
            out.extend(opening.iter().map(|v| sse(&state.turn, id, v)));
        }
        out.extend(numbered.iter().map(|(n, v)| sse(&state.turn, *n, v)));
    }
    out
}

fn sse(turn: &str, number: u64, value: &Value) -> SseEvent {
    SseEvent::default().id(format!("{turn}:{number}")).data(value.to_string())
}
