//! A child's process group, so stopping a tool's process also stops everything it started
//! (`sh -c` pipelines, `npx` launching the real server).

use std::time::Duration;

/// Kills the process group when dropped (a group that is already gone is no error).
pub(crate) struct ProcessGroup {
    id: i32,
    /// Seen gone: its id may be reused, so it is not signalled again.
    gone: bool,
}

impl ProcessGroup {
    /// The group led by the child `pid` (spawned with `process_group(0)`).
    pub(crate) fn of(pid: u32) -> Option<Self> {
        let id = i32::try_from(pid).ok().filter(|pid| *pid > 0)?;
        Some(Self { id, gone: false })
    }

    /// Asks the group to stop (`SIGTERM`), waits up to `grace` for it to go, then kills it.
    pub(crate) async fn terminate(mut self, grace: Duration) {
        if !signal(self.id, libc::SIGTERM) {
            self.gone = true;
            return;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if !signal(self.id, 0) {
                self.gone = true;
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.gone {
            signal(self.id, libc::SIGKILL);
        }
    }
}

/// Sends `sig` to the group; whether a process of it was there to receive it.
fn signal(group: i32, sig: i32) -> bool {
    // SAFETY: killpg only sends a signal; a group that is gone yields ESRCH.
    unsafe { libc::killpg(group, sig) == 0 }
}
