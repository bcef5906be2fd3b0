//! One connection to an MCP server through `rmcp`: the transport (a child process over
//! stdio, or streamable HTTP), the client side of the protocol (progress, a changed tool
//! list, roots) and the handshake.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    ClientCapabilities, ClientConfig, Implementation, ProgressNotificationParam, ProgressToken,
};
use rmcp::service::{NotificationContext, RequestContext, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ErrorData, ServiceExt};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

use crate::config::McpServerConfig;
use crate::tools::Progress;
use crate::tools::process_group::ProcessGroup;

/// A running connection.
pub(super) type Service = RunningService<RoleClient, Handler>;

/// A connection and, for a child process, its process group (stopped with it).
pub(super) struct Connection {
    pub service: Service,
    pub group: Option<ProcessGroup>,
}

impl Connection {
    /// Stops the connection and whatever processes it started.
    pub(super) async fn end(self) {
        let Connection { mut service, group } = self;
        let _ = service.close_with_timeout(Duration::from_secs(2)).await;
        drop(service);
        if let Some(group) = group {
            group.terminate(Duration::from_secs(2)).await;
        }
    }
}

/// Variables a child keeps from Parley's own environment; everything else (the provider's
/// key, database URLs) stays out, as MCP's reference clients do.
const INHERITED_ENV: &[&str] = &["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG"];

/// The client side of one connection: what the server may ask of us and tell us.
pub(super) struct Handler {
    server: String,
    /// Filesystem roots offered (a `per_user` server's workspace); `None`: the capability
    /// is not declared.
    roots: Option<Vec<PathBuf>>,
    /// Woken when the server says its tool list changed.
    pub(super) tools_changed: Arc<Notify>,
    /// Where progress of each call in flight goes.
    pub(super) progress: Arc<ProgressRoutes>,
}

/// Where the progress of each call in flight goes, by the call's progress token.
#[derive(Default)]
pub(super) struct ProgressRoutes(Mutex<HashMap<ProgressToken, Progress>>);

impl ProgressRoutes {
    /// Sends the progress of the call with `token` to `sink` until the guard is dropped.
    pub(super) fn follow(&self, token: ProgressToken, sink: Progress) -> Following<'_> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(token.clone(), sink);
        Following { routes: self, token }
    }

    fn sink(&self, token: &ProgressToken) -> Option<Progress> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned()
    }
}

impl Handler {
    pub(super) fn new(server: &str, roots: Option<Vec<PathBuf>>) -> Self {
        Self {
            server: server.to_owned(),
            roots,
            tools_changed: Arc::new(Notify::new()),
            progress: Arc::default(),
        }
    }
}

/// Stops passing a call's progress on when dropped.
pub(super) struct Following<'a> {
    routes: &'a ProgressRoutes,
    token: ProgressToken,
}

impl Drop for Following<'_> {
    fn drop(&mut self) {
        self.routes.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.token);
    }
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        // Declared only by `per_user` servers' connections: a shared server must not learn
        // one user's folder.
        let capabilities = match self.roots {
            None => serde_json::json!({}),
            Some(_) => serde_json::json!({"roots": {"listChanged": false}}),
        };
        let capabilities: ClientCapabilities =
            serde_json::from_value(capabilities).unwrap_or_default();
        ClientConfig::new(capabilities, Implementation::new("parley", env!("CARGO_PKG_VERSION")))
    }

    // Roots are deprecated by SEP-2577 in the newest protocol revision, but servers of the
    // earlier ones still ask for them, and they are how a server learns its folder.
    #[allow(deprecated)]
    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ListRootsResult, ErrorData> {
        let roots: Vec<_> = self
            .roots
            .iter()
            .flatten()
            .map(|dir| serde_json::json!({"uri": file_uri(dir), "name": "workspace"}))
            .collect();
        Ok(serde_json::from_value(serde_json::json!({"roots": roots})).unwrap_or_default())
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(sink) = self.progress.sink(&params.progress_token) {
            let mut detail = match params.total {
                Some(total) => format!("{}/{}", params.progress, total),
                None => format!("{}", params.progress),
            };
            if let Some(message) = params.message {
                detail.push(' ');
                detail.push_str(&message.chars().take(200).collect::<String>());
            }
            sink.report(detail);
        }
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::info!(server = %self.server, "MCP server's tool list changed");
        self.tools_changed.notify_one();
    }
}

/// The `file://` URI of `dir`, its bytes percent-encoded where a URI needs it.
fn file_uri(dir: &std::path::Path) -> String {
    let mut uri = String::from("file://");
    for &byte in dir.as_os_str().as_encoded_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                uri.push(char::from(byte));
            }
            other => uri.push_str(&format!("%{other:02X}")),
        }
    }
    uri
}

/// Where a connection runs.
pub(super) struct Place {
    /// The child's working folder.
    pub cwd: PathBuf,
    /// Roots offered to the server; `None`: the roots capability is not declared.
    pub roots: Option<Vec<PathBuf>>,
}

/// Starts the server (or reaches it) and completes the handshake within `timeout`.
pub(super) async fn connect(
    name: &str,
    config: &McpServerConfig,
    place: Place,
    timeout: Duration,
) -> Result<Connection, String> {
    let handler = Handler::new(name, place.roots);
    let mut group = None;
    let started = match (&config.command, &config.url) {
        (Some(command), _) => {
            if !place.cwd.is_dir() {
                return Err(format!("the working folder {} does not exist", place.cwd.display()));
            }
            let mut cmd = tokio::process::Command::new(command);
            // Its own process group: stopping it stops what it started (npx, sh -c).
            cmd.args(&config.args)
                .current_dir(&place.cwd)
                .env_clear()
                .kill_on_drop(true)
                .process_group(0);
            for var in INHERITED_ENV {
                if let Some(value) = std::env::var_os(var) {
                    cmd.env(var, value);
                }
            }
            cmd.envs(&config.env);
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting {command:?}: {e}"))?;
            group = transport.id().and_then(ProcessGroup::of);
            if let Some(stderr) = stderr {
                tokio::spawn(relay_stderr(name.to_owned(), stderr));
            }
            tokio::time::timeout(timeout, handler.serve(transport)).await
        }
        (None, Some(url)) => {
            // reqwest's TLS needs a process-wide crypto provider (as the model client does).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let headers = config
                .headers
                .iter()
                .filter_map(|(name, value)| Some((name.parse().ok()?, value.parse().ok()?)))
                .collect();
            let transport_config =
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(headers);
            let transport = StreamableHttpClientTransport::from_config(transport_config);
            tokio::time::timeout(timeout, handler.serve(transport)).await
        }
        (None, None) => return Err("neither a command nor a url".into()),
    };
    // On failure, `group` is dropped: the child and its own children are killed.
    match started {
        Ok(Ok(service)) => Ok(Connection { service, group }),
        Ok(Err(err)) => Err(format!("the handshake failed: {err}")),
        Err(_) => Err(format!("no answer to the handshake within {timeout:?}")),
    }
}

/// Keeps the server's secrets (a URL's password and query, `headers` and `env` values) out
/// of a message bound for logs and status, wherever and however the URL appears in it.
pub(super) fn scrub(message: String, config: &McpServerConfig) -> String {
    let mut secrets: Vec<&str> =
        config.headers.values().chain(config.env.values()).map(String::as_str).collect();
    if let Some(url) = &config.url {
        if let Some((_, query)) = url.split_once('?') {
            secrets.push(query);
        }
        let authority =
            url.split_once("://").map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
        if let Some((user_info, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = user_info.split_once(':')
        {
            secrets.push(password);
        }
    }
    // Short values (`1`, `on`) would blank out ordinary words.
    secrets.retain(|secret| secret.len() >= 4);
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    secrets.into_iter().fold(message, |message, secret| message.replace(secret, "***"))
}

/// Logs what the child writes to stderr at debug level: it is the server's diagnostics, but
/// may echo arguments, so it stays out of the info log. Reads to the end whatever comes
/// (a child whose stderr is closed dies of it), a line cut at 4 KiB, bytes that are not
/// UTF-8 replaced.
async fn relay_stderr(server: String, mut stderr: tokio::process::ChildStderr) {
    const MAX_LINE: usize = 4096;
    let mut chunk = [0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    let log = |line: &mut Vec<u8>| {
        if !line.is_empty() {
            tracing::debug!(server = %server, "MCP server stderr: {}", String::from_utf8_lossy(line));
            line.clear();
        }
    };
    loop {
        let read = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for &byte in &chunk[..read] {
            if byte == b'\n' {
                log(&mut line);
            } else if line.len() < MAX_LINE {
                line.push(byte);
            }
        }
    }
    log(&mut line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_uris_and_secrets_are_scrubbed() {
        assert_eq!(
            file_uri(std::path::Path::new("/data/my work/ü")),
            "file:///data/my%20work/%C3%BC"
        );
        let config = McpServerConfig {
            url: Some("https://u:hunter22@mcp.example/mcp?key=abcdef".into()),
            headers: [("Authorization".to_owned(), "Bearer tok-123".to_owned())].into(),
            ..McpServerConfig::default()
        };
        let message = "error sending request for url (https://u@mcp.example/mcp?key=abcdef): \
                       hunter22 / Bearer tok-123"
            .to_owned();
        let scrubbed = scrub(message, &config);
        for secret in ["abcdef", "hunter22", "tok-123"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.contains("mcp.example/mcp?***"), "{scrubbed}");
    }
}
