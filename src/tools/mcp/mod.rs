//! Tools from Model Context Protocol servers, through the official SDK (`rmcp`). Each server
//! configured under `[mcp.servers.NAME]` (a child process over stdio, or a streamable HTTP
//! endpoint) is started with the gateway, supervised and restarted with backoff; its tools
//! join the [`Registry`](super::Registry) as `NAME__TOOL` under the same approval policy,
//! output cap and cancel as the built-in ones. A server that is down is a tool error for the
//! model and a degraded component in `/health/ready`, never a hung turn.

mod connect;
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

use super::Registry;

/// The configured MCP servers.
pub struct McpServers {
    servers: BTreeMap<String, Arc<Server>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// A server's state, for `/health/ready`, `/api/status` and `parley mcp list`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub name: String,
    /// `stdio` or `http`.
    pub transport: &'static str,
    pub state: Phase,
    /// Why it last failed (not shown publicly).
    pub error: Option<String>,
    pub restarts: u32,
    /// Its tools as the model sees them.
    pub tools: Vec<String>,
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
                    name: server.name().to_owned(),
                    transport: if server.config().url.is_some() { "http" } else { "stdio" },
                    state: status.phase,
                    error: status.error,
                    restarts: status.restarts,
                    tools: status.tools,
                    per_user: server.config().per_user,
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

    /// Stops every server (child processes end) and waits for them, at most `timeout`.
    pub async fn stop(&self, timeout: Duration) {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(timeout, self.tasks.wait()).await;
    }
}
