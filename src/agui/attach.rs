//! Which AG-UI streams follow each turn on this node, so a run whose client went away is
//! stopped only if nobody reconnected to it meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::DETACH_GRACE;
use crate::runtime::Runtime;

/// The AG-UI streams attached to each turn on this node, so a run whose client went
/// away is stopped only if nobody reconnected to it meanwhile.
#[derive(Default)]
pub struct Attached {
    turns: Mutex<HashMap<String, usize>>,
}

impl Attached {
    pub(super) fn attach(
        self: &Arc<Self>,
        runtime: &Runtime,
        user: &str,
        turn: &str,
    ) -> Attachment {
        *self
            .turns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(turn.to_owned())
            .or_default() += 1;
        Attachment {
            runs: self.clone(),
            runtime: runtime.clone(),
            user: user.to_owned(),
            turn: turn.to_owned(),
            ended: false,
        }
    }

    /// Detaches one stream of `turn`; returns whether none is left.
    fn detach(&self, turn: &str) -> bool {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        let Some(count) = turns.get_mut(turn) else {
            return true;
        };
        *count -= 1;
        if *count == 0 {
            turns.remove(turn);
            return true;
        }
        false
    }

    fn attached(&self, turn: &str) -> bool {
        self.turns.lock().unwrap_or_else(|e| e.into_inner()).contains_key(turn)
    }
}

/// One stream's hold on its turn: dropped before the run ended (the client went away),
/// it stops the turn after [`DETACH_GRACE`] unless another stream attached.
pub(super) struct Attachment {
    runs: Arc<Attached>,
    runtime: Runtime,
    user: String,
    turn: String,
    ended: bool,
}

impl Attachment {
    /// The run ended (done, failed, cancelled, or interrupted for an approval).
    pub(super) fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let last = self.runs.detach(&self.turn);
        if self.ended || !last {
            return;
        }
        let (runs, runtime) = (self.runs.clone(), self.runtime.clone());
        let (user, turn) = (self.user.clone(), self.turn.clone());
        tokio::spawn(async move {
            tokio::time::sleep(DETACH_GRACE).await;
            if !runs.attached(&turn) && runtime.cancel_turn(&user, &turn).await {
                tracing::info!(turn_id = %turn, "the AG-UI client went away: its run is stopped");
            }
        });
    }
}
