//! The runtime owns turns. Connections submit messages, watch sessions and cancel turns;
//! each session runs its turns one at a time, in submission order, in a task of its own
//! that no connection owns. Every event gets its `seq`, goes to the session's log and then
//! to its watchers (and, multi-node, to the bus).

mod admission;
mod approvals;
mod control;
mod event;
mod follow;
mod history;
mod lease;
mod log;
mod partials;
mod remote;
mod replay;
mod session;
mod turn;
mod turn_watch;
mod usage;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::Agent;
use crate::bus::Bus;
use crate::conversation::Usage;
use crate::limits::RateLimiter;
use crate::store::{Session, Store, StoreError, TurnStatus};

pub use admission::{NewTurn, Target};
use approvals::Approvals;
pub use approvals::{ApprovalInfo, Decision};
pub use event::{Event, EventKind, ToolCallSummary, TurnError};
pub use history::{MessagePage, SessionChange, SessionPage, TurnView};
pub use log::{EventLog, Replay, Watch, WatchItem, resync_frame};
pub use session::{LiveSession, LiveState};
pub use turn_watch::{TurnItem, TurnWatch, ends_turn};
pub use usage::Budget;

/// Why the runtime refused something.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("session ids are 1-128 characters of A-Z a-z 0-9 . _ -")]
    InvalidSessionId,
    #[error("session not found")]
    NotFound,
    /// A message named as a parent or a branch that the session does not have.
    #[error("the session has no message numbered {seq}")]
    UnknownMessage { seq: i64 },
    #[error("the message is empty")]
    EmptyContent,
    #[error("the message is {size} bytes; the limit is {limit}")]
    ContentTooLarge { size: usize, limit: usize },
    #[error("the session already has {limit} turns waiting")]
    QueueFull { limit: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("no pending approval with that id")]
    ApprovalNotFound,
    /// Another node holds the session's lease (runs its turns) and this one cannot reach
    /// it; the client should try again shortly.
    #[error("the session is busy on another node; try again shortly")]
    SessionBusy,
    #[error("{message}")]
    RateLimited { message: &'static str, retry_after: Duration },
    #[error(transparent)]
    UnknownModel(#[from] crate::providers::UnknownModel),
    /// The user has spent their monthly budget.
    #[error("you have spent your monthly budget ({spent:.2} of {budget:.2}); it renews on the 1st")]
    BudgetExceeded { spent: f64, budget: f64, retry_after: Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a turn ended, for a caller that waits for it.
#[derive(Debug, Clone, Serialize)]
pub struct TurnOutcome {
    pub turn_id: String,
    pub session_id: String,
    pub status: TurnStatus,
    /// The final answer, or the partial one of a stopped turn.
    pub reply: String,
    pub tool_calls: Vec<ToolCallSummary>,
    pub usage: Usage,
    pub model: Option<String>,
    pub duration_ms: u64,
    /// Why the turn failed, and a client-safe message.
    #[serde(skip)]
    pub error: Option<(TurnError, String)>,
}

/// A session as the protocol adapters know it: whose it is, its id and its key.
#[derive(Debug, Clone)]
pub struct SessionRef {
    pub user: String,
    pub id: String,
    pub pk: i64,
}

/// A watcher's start on a session.
pub struct Watching {
    pub session: SessionRef,
    /// The session as stored when the watch began (its name, its message count).
    pub stored: Session,
    /// Whether the session was created for this watch.
    pub created: bool,
    pub watch: Watch,
    /// Pending approvals the watcher would otherwise miss.
    pub missed: Vec<ApprovalInfo>,
}

/// An accepted message.
pub struct Submission {
    pub session: SessionRef,
    pub turn_id: String,
    /// The `seq` of the stored user message: every event of the turn comes after it.
    pub user_seq: u64,
    /// Resolves when the turn ends (if asked for); dropping it does not cancel the turn.
    pub outcome: Option<oneshot::Receiver<TurnOutcome>>,
}

/// A turn running now, as listed by the API.
#[derive(Debug, Clone, Serialize)]
pub struct TurnInfo {
    pub turn_id: String,
    /// Whose turn it is.
    pub user: String,
    pub session_id: String,
    /// The node running it.
    pub node_id: String,
    pub started_at: i64,
    pub queued: usize,
}

/// Settings the runtime needs.
pub struct RuntimeConfig {
    /// This node's name, in the log lines of its turns and in status.
    pub node_id: Arc<str>,
    pub queue_depth: usize,
    pub event_log_capacity: usize,
    pub max_content_bytes: usize,
    /// Turns a user may start per minute (0 = unlimited).
    pub turns_per_minute: u32,
    /// Turns of one user running or waiting at once (0 = unlimited).
    pub max_concurrent_turns: usize,
    pub system_prompt: String,
    /// Monthly budgets by user.
    pub budget: crate::config::BudgetConfig,
    /// Hints for the model by the client's page (`page_context`).
    pub page_hints: BTreeMap<String, String>,
    /// How long an `ask` tool call waits for a decision.
    pub approval_timeout: Duration,
    /// How long a session's lease lasts unless renewed: the most a session whose node died
    /// waits before another node takes it over.
    pub lease: Duration,
    /// Whether this node runs alone (no cluster bus): it then takes any session's lease,
    /// since a holder other than itself can only be its own earlier, killed life.
    pub exclusive: bool,
}

/// Lifecycle events each user's global feed keeps for resuming clients.
const FEED_CAPACITY: usize = 1024;

pub(crate) struct Inner {
    node_id: Arc<str>,
    store: Arc<dyn Store>,
    partials: partials::Partials,
    bus: Arc<dyn Bus>,
    agent: Agent,
    system_prompt: String,
    budget: crate::config::BudgetConfig,
    page_hints: BTreeMap<String, String>,
    approval_timeout: Duration,
    queue_depth: usize,
    event_log_capacity: usize,
    max_content_bytes: usize,
    turn_limiter: RateLimiter,
    max_concurrent_turns: usize,
    lease: Duration,
    exclusive: bool,
    /// When this node's leases were last renewed (epoch ms).
    renewed_at: std::sync::atomic::AtomicI64,
    /// Stops the lease renewal, once the last turn has ended at shutdown.
    leases_done: CancellationToken,
    sessions: tokio::sync::Mutex<HashMap<(String, String), Arc<LiveSession>>>,
    approvals: Approvals,
    /// This node's follower logs of sessions watched here (in a cluster).
    followers: follow::Followers,
    /// Each user's lifecycle feed, created on first use.
    feeds: std::sync::Mutex<HashMap<String, Arc<EventLog>>>,
    tracker: TaskTracker,
    /// Set when shutdown begins: no new turns are accepted or started.
    stopping: CancellationToken,
    /// Parent of every turn's token: cancelled when the grace period runs out.
    hard_stop: CancellationToken,
}

/// The turn engine; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// The client's session id, checked, or a new UUID when there is none.
fn session_id(id: Option<&str>) -> Result<std::borrow::Cow<'_, str>, RuntimeError> {
    match id {
        Some(id) if valid_session_id(id) => Ok(id.into()),
        Some(_) => Err(RuntimeError::InvalidSessionId),
        None => Ok(uuid::Uuid::new_v4().to_string().into()),
    }
}

/// Whether `id` is a valid client-chosen session id.
pub fn valid_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id != "."
        && id != ".."
}

impl Runtime {
    /// A runtime over the given store, bus and agent. Starts its store writer, so it is
    /// made inside a Tokio runtime.
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        agent: Agent,
        config: RuntimeConfig,
    ) -> Self {
        let leases_done = CancellationToken::new();
        let bus_for_limits = bus.clone();
        let inner = Arc::new(Inner {
            node_id: config.node_id,
            partials: partials::Partials::start(store.clone()),
            store,
            bus,
            agent,
            system_prompt: config.system_prompt,
            budget: config.budget,
            page_hints: config.page_hints,
            approval_timeout: config.approval_timeout,
            approvals: Approvals::default(),
            followers: follow::Followers::default(),
            feeds: std::sync::Mutex::new(HashMap::new()),
            queue_depth: config.queue_depth,
            event_log_capacity: config.event_log_capacity,
            max_content_bytes: config.max_content_bytes,
            turn_limiter: RateLimiter::shared_per_minute(
                "turns",
                config.turns_per_minute,
                crate::limits::shared(&bus_for_limits),
            ),
            max_concurrent_turns: config.max_concurrent_turns,
            lease: config.lease,
            exclusive: config.exclusive,
            renewed_at: std::sync::atomic::AtomicI64::new(crate::clock::now_ms()),
            leases_done: leases_done.clone(),
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
        });
        if let Some(requests) = inner.bus.requests() {
            tokio::spawn(remote::serve(Arc::downgrade(&inner), requests));
        }
        let every = (config.lease / 3).max(Duration::from_millis(100));
        if inner.bus.clustered() {
            // At least every 5 s, whatever the lease time: a lease released by a node that
            // stopped gracefully is free at once, and its queued turns should not wait.
            let sweep_every = every.min(Duration::from_secs(5));
            tokio::spawn(lease::sweep(Arc::downgrade(&inner), sweep_every, leases_done.clone()));
        }
        tokio::spawn(lease::keep(Arc::downgrade(&inner), every, leases_done));
        Self { inner }
    }

    /// The store the runtime writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The models turns may ask for.
    pub fn models(&self) -> &crate::providers::Models {
        &self.inner.agent.models
    }

    /// The bus the runtime publishes on.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    /// Loads the user's session `id`, creating it if `create` (a new UUID when `id` is
    /// `None`). Returns whether it was created.
    pub async fn open_session(
        &self,
        user: &str,
        id: Option<&str>,
        name: Option<&str>,
        create: bool,
    ) -> Result<(Arc<LiveSession>, bool), RuntimeError> {
        let id = session_id(id)?;
        let id = id.as_ref();
        let key = (user.to_owned(), id.to_owned());
        let mut sessions = self.inner.sessions.lock().await;
        if let Some(session) = sessions.get(&key) {
            return Ok((session.clone(), false));
        }
        let (stored, created) = if create {
            self.inner.store.open_session(user, id, name).await?
        } else {
            let stored = self.inner.store.session(user, id).await?.ok_or(RuntimeError::NotFound)?;
            (stored, false)
        };
        let lease = self.inner.take_lease(stored.pk).await?;
        let start = self.inner.numbering_start(&lease).await;
        let session = Arc::new(LiveSession::new(
            user,
            id,
            lease.fence,
            (start, lease.reserved_seq.max(0) as u64),
            self.inner.event_log_capacity,
            self.inner.store.clone(),
            self.inner.bus.clone(),
        ));
        if created {
            self.inner.lifecycle(&session, None, EventKind::SessionCreated);
        }
        // What the last holder left queued is queued before anyone can reach the session:
        // a message admitted meanwhile would otherwise start (stored as running) ahead of it.
        self.inner.adopt(&session, lease);
        sessions.insert(key, session.clone());
        drop(sessions);
        Ok((session, created))
    }

    /// The stored session and, if it is loaded, its live state.
    pub async fn find_session(
        &self,
        user: &str,
        id: &str,
    ) -> Result<(Session, Option<Arc<LiveSession>>), RuntimeError> {
        let live = self.loaded(user, id).await?;
        let stored = self.inner.store.session(user, id).await?.ok_or(RuntimeError::NotFound)?;
        Ok((stored, live))
    }

    /// Deletes idle sessions past the limits (0 = none) and forgets them in memory.
    pub async fn prune(
        &self,
        user: Option<&str>,
        max_sessions: u64,
        ttl_hours: u64,
    ) -> Result<usize, RuntimeError> {
        let ttl_ms = (ttl_hours as i64).saturating_mul(3_600_000);
        let pruned = self.inner.store.prune(user, max_sessions, ttl_ms).await?;
        let mut sessions = self.inner.sessions.lock().await;
        for (user, id) in &pruned {
            let removed = sessions.remove(&(user.clone(), id.clone()));
            if let Some(session) = &removed {
                session.queue().evicted = true;
            }
            self.inner.deleted(user, id, removed.as_deref());
        }
        Ok(pruned.len())
    }

    /// The loaded session, or `None` if it exists only in the store; `NotFound` if neither.
    async fn loaded(&self, user: &str, id: &str) -> Result<Option<Arc<LiveSession>>, RuntimeError> {
        if !valid_session_id(id) {
            return Err(RuntimeError::InvalidSessionId);
        }
        let key = (user.to_owned(), id.to_owned());
        if let Some(session) = self.inner.sessions.lock().await.get(&key) {
            return Ok(Some(session.clone()));
        }
        match self.inner.store.session(user, id).await? {
            Some(_) => Ok(None),
            None => Err(RuntimeError::NotFound),
        }
    }

    async fn user_sessions(&self, user: &str) -> Vec<Arc<LiveSession>> {
        let sessions = self.inner.sessions.lock().await;
        sessions.values().filter(|s| s.user == user).cloned().collect()
    }

    /// Watches the user's session after `after` (`None`: from now on), creating it (named
    /// `name`) if `create`. Alone, the watcher follows the session's own log; in a cluster,
    /// this node's follower log of it, whichever node runs its turns.
    pub async fn watch(
        &self,
        user: &str,
        id: Option<&str>,
        name: Option<&str>,
        after: Option<u64>,
        create: bool,
    ) -> Result<Watching, RuntimeError> {
        let (stored, created, watch) = if self.inner.bus.clustered() {
            let (stored, created) = self.stored(user, id, name, create).await?;
            let log = self.inner.follow(&stored).await;
            (stored, created, log.watch(after))
        } else {
            let (session, created, watch) = loop {
                let (session, created) = self.open_session(user, id, name, create).await?;
                let watch = session.watch(after);
                // A watcher made while the session was being evicted would watch a dead log.
                if !session.evicted() {
                    break (session, created, watch);
                }
            };
            let stored =
                self.inner.store.session(user, &session.id).await?.ok_or(RuntimeError::NotFound)?;
            (stored, created, watch)
        };
        let start = watch.last_seq();
        let pending = if self.inner.bus.clustered() {
            self.shared_approvals(user).await
        } else {
            self.inner.approvals.list(user, Some(&stored.id))
        };
        let missed =
            pending.into_iter().filter(|a| a.session_id == stored.id && a.seq <= start).collect();
        let session = SessionRef { user: user.to_owned(), id: stored.id.clone(), pk: stored.pk };
        Ok(Watching { session, stored, created, watch, missed })
    }

    /// The user's stored session `id`, created (a new UUID when `None`) if `create`, without
    /// loading it; and whether it was created.
    async fn stored(
        &self,
        user: &str,
        id: Option<&str>,
        name: Option<&str>,
        create: bool,
    ) -> Result<(Session, bool), RuntimeError> {
        let id = session_id(id)?;
        let id = id.as_ref();
        if create {
            let (stored, created) = self.inner.store.open_session(user, id, name).await?;
            if created {
                self.inner.feed_append(user, id, None, EventKind::SessionCreated);
            }
            Ok((stored, created))
        } else {
            let stored = self.inner.store.session(user, id).await?.ok_or(RuntimeError::NotFound)?;
            Ok((stored, false))
        }
    }

    /// Watches the user's lifecycle feed after `after` (`None`: from now on).
    pub async fn watch_feed(&self, user: &str, after: Option<u64>) -> Watch {
        if self.inner.bus.clustered() {
            follow::feed(&self.inner, user).await;
        }
        self.inner.feed(user).watch(after)
    }

    /// Sessions held in memory now.
    pub async fn loaded_sessions(&self) -> usize {
        self.inner.sessions.lock().await.len()
    }

    /// Drops from memory the sessions nothing needs (no turn, no watcher, idle for
    /// `idle`); they reload from the store on next use, their `seq` still going up.
    pub async fn evict_idle(&self, idle: Duration) -> usize {
        let now = crate::clock::now_ms();
        let idle_ms = idle.as_millis() as i64;
        let mut sessions = self.inner.sessions.lock().await;
        let before = sessions.len();
        sessions.retain(|_, session| {
            let evict = session.try_evict(now, idle_ms);
            if evict {
                self.inner.release(session);
            }
            !evict
        });
        before - sessions.len()
    }

    /// Stops accepting turns, lets running ones finish for `grace`, then cancels the rest
    /// (stored as interrupted) and waits for every turn task to end.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_err() {
            tracing::warn!("turns still running after the grace period; interrupting them");
            self.inner.hard_stop.cancel();
            self.inner.tracker.wait().await;
        }
        // Every turn has ended: the leases go, so another node can take the sessions at
        // once instead of waiting for them to expire.
        self.inner.leases_done.cancel();
        let loaded: Vec<_> = self.inner.sessions.lock().await.drain().map(|(_, s)| s).collect();
        for session in loaded {
            if let Err(err) = self.inner.store.release_lease(session.fence).await {
                tracing::warn!(%err, "releasing a session lease at shutdown failed");
            }
        }
    }
}

impl Inner {
    /// The user's lifecycle feed.
    fn feed(&self, user: &str) -> Arc<EventLog> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        feeds
            .entry(user.to_owned())
            .or_insert_with(|| {
                // Start from the clock so ids keep growing across restarts. Each node numbers
                // its own copy of a user's feed (other nodes' events arrive by broadcast), so
                // nothing of it goes on the bus from here.
                let start = crate::clock::now_ms().max(0) as u64;
                let quiet: Arc<dyn Bus> = Arc::new(crate::bus::LocalBus);
                Arc::new(EventLog::feed(format!("feed:{user}"), start, FEED_CAPACITY, quiet))
            })
            .clone()
    }

    /// Tells the watchers of a deleted session (if it was loaded) and its owner's feed.
    fn deleted(&self, user: &str, id: &str, loaded: Option<&LiveSession>) {
        if let Some(session) = loaded {
            session.emit(None, EventKind::SessionDeleted);
        }
        self.feed_append(user, id, None, EventKind::SessionDeleted);
    }

    /// Records a lifecycle event (no content) on the session owner's feed.
    fn lifecycle(&self, session: &LiveSession, turn_id: Option<&str>, kind: EventKind) {
        self.feed_append(&session.user, &session.id, turn_id, kind);
    }

    /// Appends to the user's feed here and, in a cluster, hands the event to the other
    /// nodes' copies of it.
    fn feed_append(&self, user: &str, session_id: &str, turn_id: Option<&str>, kind: EventKind) {
        let (event, _) = self.feed(user).append(session_id, turn_id, kind, None);
        if self.bus.clustered() {
            self.bus.broadcast(&follow::feed_topic(user), &event.json);
        }
    }
}
