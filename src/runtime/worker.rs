//! A session's worker: the task that runs the session's queued turns one at a time, in
//! submission order, and exits when the queue is empty (or, at shutdown, leaves what is
//! still queued to the store).

use std::sync::Arc;

use tracing::Instrument;

use super::session::{LiveSession, RunningTurn};
use super::{Inner, turn};

/// A session's worker: runs its queued turns one at a time until the queue is empty.
pub(super) async fn drain(inner: Arc<Inner>, session: Arc<LiveSession>) {
    // Each turn's start marks the session running; the end of the queue, idle (with the
    // last turn's end, when nothing was queued behind it).
    let mut handed_over = false;
    let mut idle = false;
    loop {
        let next = {
            let mut queue = session.queue();
            // A turn stored as running as it was admitted runs even now: it is no longer
            // queued in the store.
            let started = queue.pending.front().is_some_and(|turn| turn.started);
            if inner.stopping.is_cancelled() && !queue.pending.is_empty() && !started {
                // Shutting down: the turns still waiting stay queued in the store, where
                // this node's next start (or, in a cluster, another node once the lease is
                // released) finds them and runs them. Waiting callers are told it is queued.
                queue.pending.drain(..).for_each(|turn| turn.hand_over(&session.id));
                queue.running = None;
                queue.worker = false;
                handed_over = true;
                break;
            }
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
        let request = turn.request_id.as_deref().unwrap_or("-");
        let span = tracing::info_span!(
            "turn",
            node = %inner.node_id,
            id = %turn.turn_id,
            request = %request
        );
        let outcome = turn::run(&inner, &session, &turn, &mut idle).instrument(span).await;
        session.queue().running = None;
        if let Some(reply) = turn.reply.take() {
            // The caller may have gone away; the turn's result is stored either way.
            let _ = reply.send(outcome);
        }
    }
    if handed_over || idle {
        return;
    }
    if let Err(err) = inner.store.set_session_state(session.fence, "idle").await {
        tracing::error!(%err, "marking a session idle failed");
    }
}
