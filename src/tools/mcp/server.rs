//! One configured MCP server: kept running (restarted with backoff when it fails), its
//! tools kept in the registry, and its calls made with a time-out, progress and cancel.
//! A `per_user` server runs one process per user instead, started on first use and
//! stopped when idle.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, ServerResult,
};
use rmcp::service::{Peer, PeerRequestOptions, RoleClient, ServiceError};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connect::{self, Connection, Place, ProgressRoutes, Service};
use super::tool::{self, McpTool};
use crate::config::{McpConfig, McpServerConfig, TOOL_SEPARATOR};
use crate::tools::{Registry, Tool, ToolContext, ToolError};

/// What a server is doing, as `/health/ready` and `parley mcp list` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Running,
    /// Failed or stopped; the next start is scheduled.
    Restarting,
    Stopped,
}

/// The limits a server's connections and calls run under.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    pub call_timeout: Duration,
    pub start_timeout: Duration,
    pub max_backoff: Duration,
    pub idle: Duration,
    pub ping_interval: Duration,
}

impl Limits {
    pub(super) fn new(config: &McpConfig, server: &McpServerConfig) -> Self {
        let secs = |secs: f64, default: u64| {
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(default))
        };
        Self {
            call_timeout: secs(server.call_timeout_secs.unwrap_or(config.call_timeout_secs), 120),
            start_timeout: secs(config.start_timeout_secs, 30).max(Duration::from_millis(100)),
            max_backoff: secs(config.max_restart_backoff_secs, 60).max(Duration::from_secs(1)),
            idle: secs(config.idle_secs, 300).max(Duration::from_secs(1)),
            ping_interval: secs(config.ping_interval_secs, 30).max(Duration::from_secs(1)),
        }
    }
}

/// The status of a server.
#[derive(Debug, Clone)]
pub(super) struct Status {
    pub phase: Phase,
    /// Why it last failed, for operators.
    pub error: Option<String>,
    pub restarts: u32,
    /// Its tools' names as the model sees them.
    pub tools: Vec<String>,
}

/// A live connection: the peer calls go through and the routes their progress comes back
/// through.
#[derive(Clone)]
struct Live {
    peer: Peer<RoleClient>,
    progress: Arc<ProgressRoutes>,
}

impl Live {
    fn of(service: &Service) -> Self {
        Self { peer: service.peer().clone(), progress: service.service().progress.clone() }
    }
}

/// One process of a `per_user` server.
#[derive(Default)]
struct UserSlot {
    /// The running process and the number it was started under.
    live: tokio::sync::Mutex<Option<(Live, u64)>>,
    started: std::sync::atomic::AtomicU64,
    /// Calls in flight and the last use, for the idle stop.
    use_state: Mutex<(usize, Option<Instant>)>,
}

/// A configured server.
pub(crate) struct Server {
    name: String,
    config: McpServerConfig,
    limits: Limits,
    data_dir: PathBuf,
    registry: Arc<Registry>,
    status: Mutex<Status>,
    live: Mutex<Option<Live>>,
    users: Mutex<HashMap<String, Arc<UserSlot>>>,
    /// Woken when a call's transport failed: the server is pinged at once.
    suspect: Notify,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    pub(super) fn new(
        name: &str,
        config: &McpServerConfig,
        limits: Limits,
        data_dir: PathBuf,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            config: config.clone(),
            limits,
            data_dir,
            registry,
            status: Mutex::new(Status {
                phase: Phase::Starting,
                error: None,
                restarts: 0,
                tools: Vec::new(),
            }),
            live: Mutex::new(None),
            users: Mutex::new(HashMap::new()),
            suspect: Notify::new(),
            shutdown,
            tasks,
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn config(&self) -> &McpServerConfig {
        &self.config
    }

    pub(super) fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Processes of a `per_user` server that are running now.
    pub(super) fn user_processes(&self) -> usize {
        let slots: Vec<_> =
            self.users.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        slots.iter().filter(|slot| slot.live.try_lock().map_or(true, |live| live.is_some())).count()
    }

    fn set_status(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Keeps the server running until shutdown: starts it, lists its tools, waits for it to
    /// end, and starts it again after a backoff that doubles up to the configured maximum.
    /// A `per_user` server is started once to learn its tools, then on each user's first use.
    pub(super) async fn supervise(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            match connect::connect(
                &self.name,
                &self.config,
                self.shared_place(),
                self.limits.start_timeout,
            )
            .await
            {
                Ok(connection) => {
                    let ended = self.run(connection).await;
                    if self.shutdown.is_cancelled() {
                        break;
                    }
                    if self.config.per_user && ended.is_ok() {
                        // The tools are known; users' own processes start on first use.
                        self.set_status(|s| s.phase = Phase::Running);
                        return;
                    }
                    let why = ended.err().unwrap_or_else(|| "it stopped".into());
                    tracing::warn!(server = %self.name, "MCP server stopped: {why}");
                    self.set_status(|s| s.error = Some(why));
                }
                Err(why) => {
                    tracing::warn!(server = %self.name, "MCP server did not start: {why}");
                    self.set_status(|s| s.error = Some(why));
                }
            }
            if started.elapsed() > self.limits.max_backoff * 2 {
                backoff = Duration::from_secs(1);
            }
            self.set_status(|s| {
                s.phase = Phase::Restarting;
                s.restarts += 1;
            });
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.shutdown.cancelled() => break,
            }
            backoff = (backoff * 2).min(self.limits.max_backoff);
        }
        self.set_status(|s| s.phase = Phase::Stopped);
    }

    /// Where the shared process runs: the data folder, with no roots (a `per_user` server's
    /// first start, which only lists its tools, declares roots but offers none).
    fn shared_place(&self) -> Place {
        Place {
            cwd: self.config.cwd.clone().unwrap_or_else(|| self.data_dir.clone()),
            roots: self.config.per_user.then(Vec::new),
        }
    }

    /// Serves one connection until it ends: adopts its tools, follows changes to them. For
    /// a `per_user` server, only learns the tools and stops it.
    async fn run(self: &Arc<Self>, connection: Connection) -> Result<(), String> {
        let peer = connection.service.peer().clone();
        let adopted = self.adopt_tools(&peer).await;
        if adopted.is_err() || self.config.per_user {
            connection.end().await;
            return adopted;
        }
        let Connection { service, group } = connection;
        let changed = service.service().tools_changed.clone();
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(Live::of(&service));
        self.set_status(|s| {
            s.phase = Phase::Running;
            s.error = None;
        });
        tracing::info!(server = %self.name, tools = self.status().tools.len(), "MCP server running");
        let stop = service.cancellation_token();
        let waiting = service.waiting();
        tokio::pin!(waiting);
        let mut pings = tokio::time::interval(self.limits.ping_interval);
        pings.tick().await;
        let mut finished = false;
        let ended = loop {
            tokio::select! {
                quit = &mut waiting => {
                    finished = true;
                    break Err(format!("the connection ended ({quit:?})"));
                }
                _ = pings.tick() => {
                    if !answers(&peer).await {
                        break Err("it stopped answering pings".into());
                    }
                }
                () = self.suspect.notified() => {
                    if !answers(&peer).await {
                        break Err("it stopped answering (a call failed, and so did a ping)".into());
                    }
                }
                () = changed.notified() => {
                    if let Err(why) = self.adopt_tools(&peer).await {
                        tracing::warn!(server = %self.name, "listing the changed tools failed: {why}");
                    }
                }
                () = self.shutdown.cancelled() => break Ok(()),
            }
        };
        stop.cancel();
        if !finished {
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut waiting).await;
        }
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(group) = group {
            group.terminate(Duration::from_secs(2)).await;
        }
        ended
    }

    /// Lists the server's tools and puts them in the registry in place of the old ones.
    async fn adopt_tools(self: &Arc<Self>, peer: &Peer<RoleClient>) -> Result<(), String> {
        let listed = tokio::time::timeout(self.limits.start_timeout, peer.list_all_tools())
            .await
            .map_err(|_| format!("no answer to tools/list within {:?}", self.limits.start_timeout))?
            .map_err(|e| format!("tools/list failed: {e}"))?;
        let prefix = format!("{}{TOOL_SEPARATOR}", self.name);
        let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
        for listed in listed {
            let listed = serde_json::to_value(&listed).unwrap_or_default();
            match McpTool::from_listing(&prefix, &listed, self) {
                // Two names that differ only in characters providers refuse would collide.
                Ok(tool) if tools.iter().any(|t| t.name() == tool.name()) => {
                    tracing::warn!(server = %self.name, tool = tool.name(), "skipping a tool whose name is taken");
                }
                Ok(tool) => tools.push(Arc::new(tool)),
                Err(why) => tracing::warn!(server = %self.name, "skipping a tool: {why}"),
            }
        }
        let names = tools.iter().map(|tool| tool.name().to_owned()).collect();
        self.registry.replace_prefixed(&prefix, tools);
        self.set_status(|s| s.tools = names);
        Ok(())
    }

    /// Calls the server's tool `remote` with `args` for `ctx`'s user.
    pub(super) async fn call(
        self: &Arc<Self>,
        ctx: &ToolContext,
        remote: &str,
        args: serde_json::Map<String, Value>,
    ) -> Result<String, ToolError> {
        if self.config.per_user {
            let slot = self.user_slot(&ctx.user);
            let live = self.user_live(&slot, ctx).await?;
            slot.use_state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
            let result = self.call_on(&live, ctx, remote, args).await;
            let mut state = slot.use_state.lock().unwrap_or_else(|e| e.into_inner());
            *state = (state.0 - 1, Some(Instant::now()));
            return result;
        }
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let live = live.ok_or_else(|| self.unavailable())?;
        self.call_on(&live, ctx, remote, args).await
    }

    fn unavailable(&self) -> ToolError {
        let status = self.status();
        let why = status.error.map(|e| format!(": {e}")).unwrap_or_default();
        ToolError::Failed(format!(
            "the MCP server {} is not running ({:?}{why}); it is being restarted, try again later",
            self.name, status.phase
        ))
    }

    async fn call_on(
        &self,
        live: &Live,
        ctx: &ToolContext,
        remote: &str,
        args: serde_json::Map<String, Value>,
    ) -> Result<String, ToolError> {
        let params = CallToolRequestParams::new(remote.to_owned()).with_arguments(args);
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let mut handle = live
            .peer
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await
            .map_err(|_| {
                self.suspect.notify_one();
                self.unavailable()
            })?;
        let _following = live.progress.follow(handle.progress_token.clone(), ctx.progress.clone());
        let timeout = self.limits.call_timeout;
        let answer = tokio::select! {
            answer = &mut handle.rx => answer,
            () = ctx.cancel.cancelled() => {
                // `notifications/cancelled` tells the server to stop; the turn does not wait
                // long for it to be sent.
                let cancel = handle.cancel(Some("cancelled by the user".into()));
                let _ = tokio::time::timeout(Duration::from_secs(1), cancel).await;
                return Err(ToolError::Cancelled);
            }
            () = tokio::time::sleep(timeout) => {
                let cancel = handle.cancel(Some("timed out".into()));
                let _ = tokio::time::timeout(Duration::from_secs(1), cancel).await;
                return Err(ToolError::Timeout(timeout));
            }
        };
        match answer {
            Ok(Ok(ServerResult::CallToolResult(result))) => tool::render(&result),
            Ok(Ok(other)) => {
                // A result with no content may arrive as another result type.
                let value = serde_json::to_value(&other).unwrap_or_default();
                match serde_json::from_value::<CallToolResult>(value) {
                    Ok(result) => tool::render(&result),
                    Err(_) => Err(ToolError::Failed("the MCP server gave no tool result".into())),
                }
            }
            Ok(Err(ServiceError::McpError(error))) => Err(ToolError::Failed(format!(
                "the MCP server refused the call: {}",
                error.message
            ))),
            Ok(Err(_)) | Err(_) => {
                self.suspect.notify_one();
                Err(ToolError::Failed(format!(
                    "the MCP server {} stopped during the call",
                    self.name
                )))
            }
        }
    }

    fn user_slot(&self, user: &str) -> Arc<UserSlot> {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(user.to_owned())
            .or_default()
            .clone()
    }

    /// The user's own process, started if it is not running.
    async fn user_live(
        self: &Arc<Self>,
        slot: &Arc<UserSlot>,
        ctx: &ToolContext,
    ) -> Result<Live, ToolError> {
        let mut live = slot.live.lock().await;
        if let Some((running, _)) = live.as_ref()
            && !running.peer.is_transport_closed()
        {
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
        let connection = connect::connect(
            &self.name,
            &self.config,
            place,
            self.limits.start_timeout,
        )
        .await
        .map_err(|why| {
            tracing::warn!(server = %self.name, "MCP server did not start for a user: {why}");
            ToolError::Failed(format!("the MCP server {} did not start: {why}", self.name))
        })?;
        let running = Live::of(&connection.service);
        let number = slot.started.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        *live = Some((running.clone(), number));
        *slot.use_state.lock().unwrap_or_else(|e| e.into_inner()) = (0, Some(Instant::now()));
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
                    let (busy, last) = *slot.use_state.lock().unwrap_or_else(|e| e.into_inner());
                    if busy == 0 && last.is_some_and(|at| at.elapsed() >= self.limits.idle) {
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

/// Whether the server answers a ping within five seconds (an error answer counts: the
/// newest protocol revision has no ping, but the server is there).
async fn answers(peer: &Peer<RoleClient>) -> bool {
    let ping =
        rmcp::model::PingRequest { method: Default::default(), extensions: Default::default() };
    let sent = peer.send_request(ClientRequest::PingRequest(ping));
    matches!(
        tokio::time::timeout(Duration::from_secs(5), sent).await,
        Ok(Ok(_) | Err(ServiceError::McpError(_)))
    )
}
