//! `per_user` servers: one process per user, started on the user's first call with the
//! user's workspace as its working folder and only root, stopped when idle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::connect::{self, Connection, Place};
use super::server::{Live, Server};
use crate::tools::{ToolContext, ToolError};

/// A user's process of a `per_user` server.
#[derive(Default)]
pub(super) struct UserSlot {
    /// The running process and the number it was started under. Calls are handed the
    /// process under this lock, and the idle stop is decided under it.
    live: tokio::sync::Mutex<Option<(Live, u64)>>,
    /// How many processes were started for the user.
    started: AtomicU64,
    /// Calls in flight and the end of the last one, for the idle stop.
    use_state: Mutex<(usize, Option<Instant>)>,
}

impl UserSlot {
    /// Whether a process is running for the user now.
    pub(super) fn running(&self) -> bool {
        // A slot being started or stopped counts as running.
        self.live.try_lock().map_or(true, |live| live.is_some())
    }

    /// Whether nothing has been in flight for `idle`.
    fn idle(&self, idle: Duration) -> bool {
        let (busy, last) = *self.use_state.lock().unwrap_or_else(|e| e.into_inner());
        busy == 0 && last.is_some_and(|at| at.elapsed() >= idle)
    }

    fn begin_use(&self) {
        self.use_state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
    }
}

/// A call in flight on a user's process; its end is recorded when dropped, however the
/// call ends (finished, failed, or its turn's task dropped).
pub(super) struct InUse(Arc<UserSlot>);

impl Drop for InUse {
    fn drop(&mut self) {
        let mut state = self.0.use_state.lock().unwrap_or_else(|e| e.into_inner());
        *state = (state.0.saturating_sub(1), Some(Instant::now()));
    }
}

impl Server {
    /// The user's own process (started if it is not running) and the mark that it is in
    /// use. A cancelled turn stops waiting for a process that is starting.
    pub(super) async fn user_process(
        self: &Arc<Self>,
        ctx: &ToolContext,
    ) -> Result<(Live, InUse), ToolError> {
        let slot = self.user_slot(&ctx.user);
        let live = tokio::select! {
            live = self.user_live(&slot, ctx) => live?,
            () = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
        };
        Ok((live, InUse(slot)))
    }

    fn user_slot(&self, user: &str) -> Arc<UserSlot> {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(user.to_owned())
            .or_default()
            .clone()
    }

    /// The running process of `slot`, or a new one; counted in use before it is returned
    /// (the caller's [`InUse`] counts the end).
    async fn user_live(
        self: &Arc<Self>,
        slot: &Arc<UserSlot>,
        ctx: &ToolContext,
    ) -> Result<Live, ToolError> {
        let mut live = slot.live.lock().await;
        if let Some((running, _)) = live.as_ref()
            && !running.peer.is_transport_closed()
        {
            slot.begin_use();
            return Ok(running.clone());
        }
        if self.shutdown.is_cancelled() {
            return Err(self.unavailable());
        }
        let root = ctx.workspace.root().to_path_buf();
        let place = Place {
            cwd: self.config.cwd.clone().unwrap_or_else(|| root.clone()),
            roots: Some(vec![root]),
        };
        let started =
            connect::connect(&self.name, &self.config, place, self.limits.start_timeout).await;
        let connection = started.map_err(|why| {
            self.failed("did not start for a user", why);
            ToolError::Failed(format!(
                "the MCP server {} did not start; try again later",
                self.name
            ))
        })?;
        let running = Live::of(&connection.service);
        let number = slot.started.fetch_add(1, Ordering::Relaxed) + 1;
        *live = Some((running.clone(), number));
        slot.begin_use();
        self.tasks.spawn(self.clone().keep_user(slot.clone(), connection, number));
        Ok(running)
    }

    /// Runs a user's process until it ends, sits idle too long, or the server shuts down.
    async fn keep_user(self: Arc<Self>, slot: Arc<UserSlot>, connection: Connection, number: u64) {
        let Connection { service, group } = connection;
        let cancel = service.cancellation_token();
        let waiting = service.waiting();
        tokio::pin!(waiting);
        let mut tick = tokio::time::interval(self.limits.idle / 4);
        let mut finished = false;
        loop {
            tokio::select! {
                _ = &mut waiting => {
                    finished = true;
                    break;
                }
                () = self.shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if !slot.idle(self.limits.idle) {
                        continue;
                    }
                    // Decided under the lock calls are handed the process under, so none
                    // gets it as it stops.
                    let mut live = slot.live.lock().await;
                    let ours = live.as_ref().is_some_and(|(_, current)| *current == number);
                    if ours && slot.idle(self.limits.idle) {
                        *live = None;
                        tracing::debug!(server = %self.name, "stopping an idle per-user MCP server");
                        break;
                    }
                }
            }
        }
        cancel.cancel();
        if !finished {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut waiting).await;
        }
        if let Some(group) = group {
            group.terminate(Duration::from_secs(2)).await;
        }
        let mut live = slot.live.lock().await;
        if live.as_ref().is_some_and(|(_, current)| *current == number) {
            *live = None;
        }
    }
}
