//! A session's worker: the task that runs the session's queued turns one at a time, in
//! submission order, and exits when the queue is empty.

use std::sync::Arc;

use tracing::Instrument;

use super::event::EventKind;
use super::session::{LiveSession, PendingTurn, RunningTurn};
use super::{Inner, TurnOutcome, turn};
use crate::conversation::Usage;
use crate::store::{TurnEnd, TurnStatus};

/// A session's worker: runs its queued turns one at a time until the queue is empty.
pub(super) async fn drain(inner: Arc<Inner>, session: Arc<LiveSession>) {
    // Each turn's start marks the session running; the end of the queue, idle.
    loop {
        let next = {
            let mut queue = session.queue();
            match queue.pending.pop_front() {
                Some(turn) => {
                    queue.running = Some(RunningTurn {
                        turn_id: turn.turn_id.clone(),
                        cancel: turn.cancel.clone(),
                        started_at: crate::clock::now_ms(),
                    });
                    Some(turn)
                }
                None => {
                    queue.running = None;
                    queue.worker = false;
                    None
                }
            }
        };
        let Some(mut turn) = next else { break };
        let outcome = if inner.stopping.is_cancelled() {
            never_started(&inner, &session, &turn).await
        } else {
            let request = turn.request_id.as_deref().unwrap_or("-");
            let span = tracing::info_span!(
                "turn",
                node = %inner.node_id,
                id = %turn.turn_id,
                request = %request
            );
            turn::run(&inner, &session, &turn).instrument(span).await
        };
        session.queue().running = None;
        if let Some(reply) = turn.reply.take() {
            // The caller may have gone away; the turn's result is stored either way.
            let _ = reply.send(outcome);
        }
    }
    if let Err(err) = inner.store.set_session_state(session.fence, "idle").await {
        tracing::error!(%err, "marking a session idle failed");
    }
}

/// Ends a queued turn that shutdown kept from starting.
async fn never_started(inner: &Inner, session: &LiveSession, turn: &PendingTurn) -> TurnOutcome {
    let end = TurnEnd {
        status: TurnStatus::Interrupted,
        error_code: None,
        error_message: Some("the server shut down before this turn started".into()),
        model: None,
        usage: Usage::default(),
        duration_ms: 0,
    };
    if let Err(err) = inner.store.finish_turn(session.fence, &turn.turn_id, &end).await {
        tracing::error!(%err, "recording an interrupted turn failed");
    }
    session.emit(Some(&turn.turn_id), EventKind::Cancelled { partial: String::new() });
    TurnOutcome {
        turn_id: turn.turn_id.clone(),
        session_id: session.id.clone(),
        status: TurnStatus::Interrupted,
        reply: String::new(),
        tool_calls: Vec::new(),
        usage: Usage::default(),
        model: None,
        duration_ms: 0,
        error: None,
    }
}
