//! Tools from Model Context Protocol servers, through the official SDK (`rmcp`). Each server
//! configured under `[mcp.servers.NAME]` (a child process over stdio, or a streamable HTTP
//! endpoint) is started with the gateway, supervised and restarted with backoff; its tools
//! join the [`Registry`](super::Registry) as `NAME__TOOL` under the same approval policy,
//! output cap and cancel as the built-in ones. A server that is down is a tool error for the
//! model and a degraded component in `/health/ready`, never a hung turn.

mod connect;
mod per_user;
mod server;
mod tool;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::McpConfig;
use server::{Limits, Server};

pub use server::Phase;

use super::{Policy, Registry};
use crate::config::Config;

/// Starts every MCP server of `config`, waits until each was tried (at most its start
/// time-out), describes them as `parley mcp list` prints them, and stops them. Also says
/// whether every one of them runs.
pub async fn describe(config: &Config) -> Result<(String, bool), String> {
    let registry = Arc::new(Registry::new(&config.tools, config.workspace_root())?);
    let servers = McpServers::start(&config.mcp, registry.clone(), config.data_dir.clone());
    let wait = Duration::try_from_secs_f64(config.mcp.start_timeout_secs).unwrap_or_default();
    servers.settled(wait.min(Duration::from_secs(3600)) + Duration::from_secs(1)).await;
    let listing = servers.listing(&registry);
    servers.stop(Duration::from_secs(10)).await;
    Ok(listing)
}

/// The configured MCP servers.
pub struct McpServers {
    servers: BTreeMap<String, Arc<Server>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// A server's state, for `/health/ready`, `/api/status` and `parley mcp list`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    /// Its name in the configuration.
    pub name: String,
    /// `stdio` or `http`.
    pub transport: &'static str,
    /// What it is doing.
    pub state: Phase,
    /// Why it last failed (not shown publicly).
    pub error: Option<String>,
    /// Starts after the first.
    pub restarts: u32,
    /// Its tools as the model sees them.
    pub tools: Vec<String>,
    /// One process per user.
    pub per_user: bool,
    /// Processes running for users now (`per_user` servers).
    pub user_processes: usize,
}

impl McpServers {
    /// Starts every configured server in the background; their tools join `registry` as
    /// they come up. `data_dir` is a shared server's working folder; a `per_user` server's
    /// is the user's workspace.
    pub fn start(config: &McpConfig, registry: Arc<Registry>, data_dir: PathBuf) -> Arc<Self> {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let servers = config
            .servers
            .iter()
            .map(|(name, server_config)| {
                let server = Server::new(
                    name,
                    server_config,
                    Limits::new(config, server_config),
                    data_dir.clone(),
                    registry.clone(),
                    shutdown.clone(),
                    tasks.clone(),
                );
                tasks.spawn(server.clone().supervise());
                (name.clone(), server)
            })
            .collect();
        Arc::new(Self { servers, shutdown, tasks })
    }

    /// Each server's state.
    pub fn statuses(&self) -> Vec<ServerStatus> {
        self.servers
            .values()
            .map(|server| {
                let status = server.status();
                ServerStatus {
                    name: server.name.clone(),
                    transport: if server.config.url.is_some() { "http" } else { "stdio" },
                    state: status.phase,
                    error: status.error,
                    restarts: status.restarts,
                    tools: status.tools,
                    per_user: server.config.per_user,
                    user_processes: server.user_processes(),
                }
            })
            .collect()
    }

    /// Waits until every server has been tried once (running, or failed and waiting to be
    /// restarted), at most `timeout`.
    pub async fn settled(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline
            && self.servers.values().any(|server| server.status().phase == Phase::Starting)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Describes the servers of `config` for `parley mcp list`: a line per server (name,
    /// transport, state and why it is not running, number of tools) and per tool (name,
    /// approval policy, first line of its description).
    fn listing(&self, registry: &Registry) -> (String, bool) {
        let specs = registry.specs();
        let mut out = String::new();
        let mut all_running = true;
        for server in self.statuses() {
            let state = serde_json::to_value(server.state).unwrap_or_default();
            let state = state.as_str().unwrap_or("unknown").to_owned();
            let error = server.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
            let count = server.tools.len();
            out.push_str(&format!(
                "{}\t{}\t{state}{error}\t{count} tools\n",
                server.name, server.transport
            ));
            for tool in &server.tools {
                let policy = match registry.policy(tool) {
                    Policy::Auto => "auto",
                    Policy::Ask => "ask",
                    Policy::Deny => "deny",
                };
                let spec = specs.iter().find(|spec| &spec.name == tool);
                let description = spec.map_or("", |spec| spec.description.as_str());
                // Only printable text reaches the terminal (no escape sequences).
                let line: String = description
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect();
                out.push_str(&format!("  {tool}\t{policy}\t{line}\n"));
            }
            all_running &= server.state == Phase::Running;
        }
        (out, all_running)
    }

    /// Stops every server (child processes end) and waits for them, at most `timeout`.
    pub async fn stop(&self, timeout: Duration) {
        // Each server takes up to 5 s to close its connection and 2 s to see its processes go.
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(timeout, self.tasks.wait()).await;
    }
}
