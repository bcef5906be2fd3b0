//! One configured MCP server: kept running (restarted with backoff when it fails, pinged
//! while it runs), its tools kept in the registry, and its calls made with a time-out,
//! progress and cancel. A `per_user` server's processes are in `per_user`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, PaginatedRequestParams,
    ServerResult,
};
use rmcp::service::{Peer, PeerRequestOptions, RoleClient, ServiceError};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connect::{self, Connection, Place, ProgressRoutes, Service};
use super::per_user::UserSlot;
use super::tool::{self, McpTool};
use crate::config::{McpConfig, McpServerConfig, TOOL_SEPARATOR};
use crate::tools::{Registry, Tool, ToolContext, ToolError};

/// What a server is doing, as `/health/ready` and `parley mcp list` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Being started for the first time.
    Starting,
    /// Its tools are in the registry and answer (a `per_user` server: its tools are known,
    /// users' processes start on demand).
    Running,
    /// Failed or stopped; the next start is scheduled.
    Restarting,
    /// Stopped with the gateway.
    Stopped,
}

/// Most pages of `tools/list` read, and most tools taken, from one server: a server
/// listing thousands would crowd every turn's context out.
const MAX_PAGES: usize = 16;
const MAX_TOOLS: usize = 128;

/// The limits a server's connections and calls run under.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    /// Longest a tool call may take.
    pub call_timeout: Duration,
    /// Longest a start (spawn, handshake, tool list) may take.
    pub start_timeout: Duration,
    /// Longest wait between restarts.
    pub max_backoff: Duration,
    /// How long a `per_user` process may sit unused.
    pub idle: Duration,
    /// Time between pings of a running server.
    pub ping_interval: Duration,
}

impl Limits {
    /// The configured limits, kept within sane bounds (a day at most) so that no
    /// arithmetic on them can overflow.
    pub(super) fn new(config: &McpConfig, server: &McpServerConfig) -> Self {
        let secs = |secs: f64, min: f64, max: f64| {
            let secs = if secs.is_finite() { secs.clamp(min, max) } else { max };
            Duration::from_secs_f64(secs)
        };
        let call = server.call_timeout_secs.unwrap_or(config.call_timeout_secs);
        Self {
            call_timeout: secs(call, 0.1, 86_400.0),
            start_timeout: secs(config.start_timeout_secs, 0.1, 3_600.0),
            max_backoff: secs(config.max_restart_backoff_secs, 1.0, 86_400.0),
            idle: secs(config.idle_secs, 1.0, 86_400.0),
            ping_interval: secs(config.ping_interval_secs, 1.0, 86_400.0),
        }
    }
}

/// The status of a server.
#[derive(Debug, Clone)]
pub(super) struct Status {
    /// What it is doing.
    pub phase: Phase,
    /// Why it last failed, for operators (secrets of its configuration scrubbed).
    pub error: Option<String>,
    /// Starts after the first.
    pub restarts: u32,
    /// Its tools' names as the model sees them.
    pub tools: Vec<String>,
}

/// A live connection: the peer calls go through and the routes their progress comes back
/// through.
#[derive(Clone)]
pub(super) struct Live {
    pub peer: Peer<RoleClient>,
    pub progress: Arc<ProgressRoutes>,
}

impl Live {
    pub(super) fn of(service: &Service) -> Self {
        Self { peer: service.peer().clone(), progress: service.service().progress.clone() }
    }
}

/// A configured server.
pub(crate) struct Server {
    pub(super) name: String,
    pub(super) config: McpServerConfig,
    pub(super) limits: Limits,
    data_dir: PathBuf,
    registry: Arc<Registry>,
    status: Mutex<Status>,
    /// The shared process's connection while it runs.
    live: Mutex<Option<Live>>,
    /// A `per_user` server's processes, by user.
    pub(super) users: Mutex<HashMap<String, Arc<UserSlot>>>,
    /// Woken when a call's transport failed: the server is pinged at once.
    suspect: Notify,
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
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

    pub(super) fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Processes of a `per_user` server that are running now.
    pub(super) fn user_processes(&self) -> usize {
        let slots: Vec<_> =
            self.users.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        slots.iter().filter(|slot| slot.running()).count()
    }

    fn set_status(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Logs and records that the server `what` (`stopped`, `did not start`) and why, with
    /// its configuration's secrets scrubbed.
    pub(super) fn failed(&self, what: &str, why: String) {
        let why = connect::scrub(why, &self.config);
        tracing::warn!(server = %self.name, "MCP server {what}: {why}");
        self.set_status(|s| s.error = Some(why));
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
                    self.failed("stopped", ended.err().unwrap_or_else(|| "it stopped".into()));
                }
                Err(why) => self.failed("did not start", why),
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

    /// Where the shared process runs: `cwd`, else a folder of its own under
    /// `<data>/mcp/` (not the data folder, which holds the database and every workspace),
    /// with no roots (a `per_user` server's first start, which only lists its tools,
    /// declares roots but offers none).
    fn shared_place(&self) -> Place {
        let cwd = self.config.cwd.clone().unwrap_or_else(|| {
            let own = self.data_dir.join("mcp").join(&self.name);
            if let Err(err) = std::fs::create_dir_all(&own) {
                tracing::warn!(server = %self.name, "creating {}: {err}", own.display());
            }
            own
        });
        Place { cwd, roots: self.config.per_user.then(Vec::new) }
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
                    // A burst of notifications is read once.
                    let listed = async {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        self.adopt_tools(&peer).await
                    };
                    tokio::select! {
                        listed = listed => if let Err(why) = listed {
                            let why = connect::scrub(why, &self.config);
                            tracing::warn!(server = %self.name, "listing the changed tools failed: {why}");
                        },
                        () = self.shutdown.cancelled() => break Ok(()),
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

    /// Lists the server's tools (at most [`MAX_PAGES`] pages and [`MAX_TOOLS`] tools)
    /// and puts them in the registry in place of the old ones.
    async fn adopt_tools(self: &Arc<Self>, peer: &Peer<RoleClient>) -> Result<(), String> {
        let timeout = self.limits.start_timeout;
        let listed = tokio::time::timeout(timeout, list_tools(peer))
            .await
            .map_err(|_| format!("no answer to tools/list within {timeout:?}"))??;
        if listed.len() > MAX_TOOLS {
            tracing::warn!(server = %self.name, listed = listed.len(), "taking only the first {MAX_TOOLS} tools");
        }
        let prefix = format!("{}{TOOL_SEPARATOR}", self.name);
        let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
        for listed in listed.into_iter().take(MAX_TOOLS) {
            let listed = serde_json::to_value(&listed).unwrap_or_default();
            match McpTool::from_listing(&prefix, &listed, Arc::downgrade(self)) {
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
            let (live, _in_use) = self.user_process(ctx).await?;
            return self.call_on(&live, ctx, remote, args).await;
        }
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let live = live.ok_or_else(|| self.unavailable())?;
        self.call_on(&live, ctx, remote, args).await
    }

    /// The model's error for a call to a server that is down; why it is down is for the
    /// operator (log, admin status), not for the conversation.
    pub(super) fn unavailable(&self) -> ToolError {
        ToolError::Failed(format!(
            "the MCP server {} is not running; it is being restarted, try again later",
            self.name
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
}

/// Every tool of the server's list, page by page up to [`MAX_PAGES`] pages.
async fn list_tools(peer: &Peer<RoleClient>) -> Result<Vec<rmcp::model::Tool>, String> {
    let mut tools = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_PAGES {
        let params = cursor.take().map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
        let page = peer.list_tools(params).await.map_err(|e| format!("tools/list failed: {e}"))?;
        tools.extend(page.tools);
        match page.next_cursor {
            Some(next) if tools.len() <= MAX_TOOLS => cursor = Some(next),
            _ => break,
        }
    }
    Ok(tools)
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
