//! Leases: a node runs a session's turns and numbers its events only while it holds the
//! session's lease (a row in the store with a fencing token every write of a turn checks).
//! Loading a session takes its lease and picks up whatever the previous holder left (its
//! running turn ends as interrupted, its queued turns run here); one task renews every lease
//! this node holds; eviction and shutdown release them; a lease found lost (another node
//! took it) drops the session here without another write.
//!
//! A node that runs alone (no cluster bus) takes any lease it needs: a holder that is not
//! itself can only be its own earlier life, killed before it could release.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::event::EventKind;
use super::session::{LiveSession, PendingTurn};
use super::{Inner, Runtime, RuntimeError};
use crate::store::{Lease, StoreError};

impl Runtime {
    /// Loads every session whose node stopped (or lost the store) with turns unfinished and
    /// no live lease, taking their leases: their interrupted turns are marked and their
    /// queued turns run here. Returns how many sessions were taken over.
    pub async fn adopt_orphans(&self) -> Result<usize, RuntimeError> {
        // Alone, every lease in the store is this node's earlier life's, live or not.
        let now = if self.inner.exclusive { i64::MAX } else { crate::clock::now_ms() };
        let orphans = self.inner.store.orphans(now).await?;
        let mut adopted = 0;
        for orphan in orphans {
            match self.open_session(&orphan.user, Some(&orphan.id), None, false).await {
                Ok(_) => adopted += 1,
                // Deleted meanwhile, or another node was quicker: nothing left to do.
                Err(RuntimeError::NotFound | RuntimeError::SessionBusy) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(adopted)
    }
}

impl Inner {
    /// Takes the lease of session `pk` for this node.
    pub(super) async fn take_lease(&self, pk: i64) -> Result<Lease, RuntimeError> {
        let until = crate::clock::now_ms() + self.lease.as_millis() as i64;
        self.store
            .acquire_lease(pk, &self.node_id, until, self.exclusive)
            .await?
            .ok_or(RuntimeError::SessionBusy)
    }

    /// Where a new holder's numbering of events starts. Alone, after the reservation bound
    /// (numbers up to it may have been seen before a crash; a restart's watchers resync). In
    /// a cluster, right after the last number anyone can have seen: the newest in the
    /// session's stream or the highest stored, so followers go on without a gap; after the
    /// bound only when the stream is gone.
    pub(super) async fn numbering_start(&self, lease: &Lease) -> u64 {
        let reserved = lease.reserved_seq.max(0) as u64;
        if !self.bus.clustered() {
            return reserved;
        }
        let topic = super::follow::topic(lease.fence.session);
        // Claimed first: the previous holder's frames (if it runs on, not knowing yet) are
        // refused from here on, so the newest frame read next is the last it can publish.
        if self.bus.claim(&topic, lease.fence.token.max(0) as u64).await.is_err() {
            return reserved;
        }
        match self.bus.newest(&topic).await {
            Ok(Some(newest)) => newest.max(lease.stored_seq.max(0) as u64).min(reserved),
            Ok(None) | Err(_) => reserved,
        }
    }

    /// Picks up after the lease's previous holder: its interrupted turns end for the
    /// watchers, and its queued turns are queued here, in order.
    pub(super) fn adopt(self: &Arc<Self>, session: &Arc<LiveSession>, lease: Lease) {
        for (turn_id, partial) in lease.interrupted {
            tracing::warn!(turn_id, session = %session.id, "a turn was cut off by its node's end");
            session.emit(Some(&turn_id), EventKind::Cancelled { partial });
            let finished = EventKind::TurnFinished { status: "interrupted".into() };
            self.lifecycle(session, Some(&turn_id), finished);
        }
        if lease.queued.is_empty() {
            return;
        }
        tracing::info!(session = %session.id, turns = lease.queued.len(), "running turns left queued");
        let mut queue = session.queue();
        for turn in lease.queued {
            queue.pending.push_back(PendingTurn {
                turn_id: turn.turn_id,
                user_seq: turn.user_seq.max(0) as u64,
                cancel: self.hard_stop.child_token(),
                reply: None,
                hint: None,
                request_id: None,
                context: Vec::new(),
                model: turn.model.unwrap_or_else(|| self.agent.models.default_id().to_owned()),
                started: false,
            });
        }
        if !queue.worker {
            queue.worker = true;
            self.tracker.spawn(super::worker::drain(self.clone(), session.clone()));
        }
    }

    /// Drops a session whose lease another node took: its turns stop without writing
    /// (their rows are the new holder's to finish or run), and its watchers here are let go.
    pub(super) async fn lose(&self, session: &LiveSession) {
        {
            let mut queue = session.queue();
            if queue.lost {
                return;
            }
            queue.lost = true;
            queue.evicted = true;
            queue.running.iter().for_each(|r| r.cancel.cancel());
            // Waiting callers learn the turn is not theirs to wait for here.
            queue.pending.drain(..).for_each(|turn| turn.hand_over(&session.id));
        }
        tracing::warn!(session = %session.id, "this node no longer holds the session's lease");
        session.close_log();
        let mut sessions = self.sessions.lock().await;
        let key = (session.user.clone(), session.id.clone());
        if sessions.get(&key).is_some_and(|loaded| std::ptr::eq(Arc::as_ptr(loaded), session)) {
            sessions.remove(&key);
        }
    }

    /// Gives up the lease of a session dropped from memory, in the background.
    pub(super) fn release(&self, session: &LiveSession) {
        let (store, fence) = (self.store.clone(), session.fence);
        tokio::spawn(async move {
            if let Err(err) = store.release_lease(fence).await {
                // It expires by itself; only another node's takeover waits for that.
                tracing::warn!(%err, "releasing a session lease failed");
            }
        });
    }
}

/// Renews this node's leases every third of the lease time until the runtime is gone or
/// `stop` fires; drops the sessions whose lease was lost and releases leases held for
/// sessions no longer loaded.
pub(super) async fn keep(
    inner: Weak<Inner>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        renew(&inner).await;
    }
}

async fn renew(inner: &Arc<Inner>) {
    let began = crate::clock::now_ms();
    let until = began + inner.lease.as_millis() as i64;
    // A renewal that hangs (a database cut off without a word) counts as failed.
    let renewal =
        tokio::time::timeout(inner.lease / 3, inner.store.renew_leases(&inner.node_id, until));
    let renewed = match renewal.await {
        Ok(Ok(held)) => Ok(held),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no answer in time".to_owned()),
    };
    let held = match renewed {
        Ok(held) => {
            inner.renewed_at.store(began, Ordering::Relaxed);
            held
        }
        Err(err) => {
            tracing::warn!(%err, "renewing session leases failed");
            // Not lost while the leases run; once they have run out, another node may
            // have taken the sessions (a cluster's), so this one stops acting on them.
            let renewed = inner.renewed_at.load(Ordering::Relaxed);
            let now = crate::clock::now_ms();
            if !inner.exclusive && now > renewed + inner.lease.as_millis() as i64 {
                let loaded: Vec<_> = inner.sessions.lock().await.values().cloned().collect();
                for session in &loaded {
                    inner.lose(session).await;
                }
            }
            return;
        }
    };
    let loaded: Vec<Arc<LiveSession>> = inner.sessions.lock().await.values().cloned().collect();
    for session in &loaded {
        // A lease taken after the renewal began is new, not lost.
        if session.leased_at < began && !held.contains(&session.fence) {
            inner.lose(session).await;
        }
    }
    for fence in held {
        if !loaded.iter().any(|s| s.fence == fence)
            && let Err(err) = inner.store.release_lease(fence).await
        {
            tracing::warn!(%err, "releasing a stale session lease failed");
        }
    }
}

/// Takes over, every `every`, the sessions whose node died with turns unfinished (their
/// lease ran out), so they go on within the lease time even if no client touches them.
pub(super) async fn sweep(
    inner: Weak<Inner>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.stopping.is_cancelled() {
            return;
        }
        match (Runtime { inner }).adopt_orphans().await {
            Ok(0) => {}
            Ok(adopted) => {
                tracing::warn!(sessions = adopted, "took over sessions of a node that stopped")
            }
            Err(err) => tracing::warn!(%err, "looking for sessions to take over failed"),
        }
    }
}

/// Whether a store error means this node lost the session's lease.
pub(super) fn fenced(err: &StoreError) -> bool {
    matches!(err, StoreError::Fenced)
}
