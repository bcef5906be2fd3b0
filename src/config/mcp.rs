//! `[mcp]`: the Model Context Protocol servers whose tools the agent may use.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The MCP servers and the limits their calls run under.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct McpConfig {
    /// The servers by name; their tools are offered to the model as `NAME__TOOL`.
    pub servers: BTreeMap<String, McpServerConfig>,
    /// Seconds a tool call may take unless its server says otherwise.
    pub call_timeout_secs: f64,
    /// Seconds a server gets to start and answer `initialize` and `tools/list`.
    pub start_timeout_secs: f64,
    /// Longest wait between restarts of a server that keeps failing (the wait doubles from
    /// one second up to this).
    pub max_restart_backoff_secs: f64,
    /// Seconds a `per_user` server's process may sit unused before it is stopped.
    pub idle_secs: f64,
    /// Seconds between pings of a running server; one that does not answer (or fails a
    /// call's transport) is restarted.
    pub ping_interval_secs: f64,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            servers: BTreeMap::new(),
            call_timeout_secs: 120.0,
            start_timeout_secs: 30.0,
            max_restart_backoff_secs: 60.0,
            idle_secs: 300.0,
            ping_interval_secs: 30.0,
        }
    }
}

/// One MCP server: a child process speaking stdio (`command`) or a streamable HTTP
/// endpoint (`url`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpServerConfig {
    /// The program to run (stdio transport).
    pub command: Option<String>,
    /// Its arguments (a URL among them is shown with its password as `***`).
    pub args: Vec<String>,
    /// Variables added to the child's environment (secrets welcome: never printed or logged).
    pub env: BTreeMap<String, String>,
    /// The child's working folder; unset: the data folder, or for a `per_user` server the
    /// user's workspace.
    pub cwd: Option<PathBuf>,
    /// The endpoint of a streamable HTTP server.
    pub url: Option<String>,
    /// Headers sent with every HTTP request, such as an `Authorization` (never printed or
    /// logged).
    pub headers: BTreeMap<String, String>,
    /// One process per user, started on first use and stopped when idle, with the user's
    /// workspace as its root (stdio only).
    pub per_user: bool,
    /// Overrides `mcp.call_timeout_secs` for this server.
    pub call_timeout_secs: Option<f64>,
}

/// The separator between a server's name and its tool's name.
pub const TOOL_SEPARATOR: &str = "__";

impl McpConfig {
    /// Refuses servers that cannot work, naming the server.
    pub fn validate(&self) -> Result<(), String> {
        let times = [
            ("call_timeout_secs", self.call_timeout_secs),
            ("start_timeout_secs", self.start_timeout_secs),
            ("max_restart_backoff_secs", self.max_restart_backoff_secs),
            ("idle_secs", self.idle_secs),
            ("ping_interval_secs", self.ping_interval_secs),
        ];
        for (key, secs) in times {
            if !(secs.is_finite() && secs > 0.0) {
                return Err(format!("mcp.{key} must be a positive number of seconds, not {secs}"));
            }
        }
        for (name, server) in &self.servers {
            let fail = |why: &str| Err(format!("mcp.servers.{name}: {why}"));
            // A name ending in `_` would make another server's prefix a part of its own.
            let valid_name = !name.is_empty()
                && name.len() <= 32
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !name.contains(TOOL_SEPARATOR)
                && !name.ends_with('_');
            if !valid_name {
                return fail(
                    "a server name is 1-32 of A-Z a-z 0-9 - _, without `__` or a final `_`",
                );
            }
            match (&server.command, &server.url) {
                (Some(_), Some(_)) => return fail("set `command` or `url`, not both"),
                (None, None) => return fail("set `command` (stdio) or `url` (streamable HTTP)"),
                (Some(command), None) if command.trim().is_empty() => {
                    return fail("`command` is empty");
                }
                (None, Some(url)) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return fail("`url` must start with http:// or https://");
                    }
                    if server.per_user {
                        return fail("`per_user` needs a `command` (one process per user)");
                    }
                    if !server.env.is_empty() || !server.args.is_empty() || server.cwd.is_some() {
                        return fail("`args`, `env` and `cwd` belong to a `command`");
                    }
                }
                (Some(_), None) if !server.headers.is_empty() => {
                    return fail("`headers` belong to a `url`");
                }
                _ => {}
            }
            for (header, value) in &server.headers {
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(value).is_err()
                {
                    return fail(&format!("header {header:?} is not a valid HTTP header"));
                }
                // The transport sets these itself.
                let reserved = ["accept", "mcp-session-id", "last-event-id", "content-type"];
                if reserved.iter().any(|name| header.eq_ignore_ascii_case(name)) {
                    return fail(&format!("header {header:?} is set by the MCP transport"));
                }
            }
            if server.call_timeout_secs.is_some_and(|secs| secs.is_nan() || secs <= 0.0) {
                return fail("`call_timeout_secs` must be positive");
            }
        }
        Ok(())
    }

    /// A copy with every `env` and `headers` value and every URL password replaced by `***`.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for server in copy.servers.values_mut() {
            server.env.values_mut().for_each(|value| *value = "***".into());
            redact_args(&mut server.args);
            server.headers.values_mut().for_each(|value| *value = "***".into());
            server.url = server.url.as_deref().map(super::redact_url_and_query);
        }
        copy
    }
}

/// Hides what looks like a secret among a command's arguments: a URL's password and query,
/// the value after a flag such as `--api-key` or `--header`, the value of `--token=...`,
/// and anything that reads as a bearer token or an `Authorization` header.
fn redact_args(args: &mut [String]) {
    let secretive = |text: &str| {
        let text = text.to_ascii_lowercase();
        ["key", "token", "secret", "password", "auth", "header", "credential"]
            .iter()
            .any(|word| text.contains(word))
    };
    let mut hide_next = false;
    for arg in args.iter_mut() {
        let lower = arg.to_ascii_lowercase();
        if hide_next {
            *arg = "***".into();
            hide_next = false;
        } else if lower.contains("bearer ") || lower.starts_with("authorization") {
            *arg = "***".into();
        } else if arg.starts_with('-') {
            match arg.split_once('=') {
                Some((flag, _)) if secretive(flag) => *arg = format!("{flag}=***"),
                Some(_) => {}
                None => hide_next = secretive(arg),
            }
        } else if arg.contains("://") {
            *arg = super::redact_url_and_query(arg);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn arguments_that_look_secret_are_hidden() {
        let mut args: Vec<String> = [
            "-y",
            "mcp-remote",
            "https://u:pw@host/mcp?key=k1",
            "--header",
            "Authorization: Bearer t1",
            "--api-key",
            "k2",
            "--token=t3",
            "--port",
            "8080",
            "postgres://me:pw2@db/x",
        ]
        .map(String::from)
        .to_vec();
        super::redact_args(&mut args);
        let text = args.join(" ");
        for secret in ["pw", "k1", "t1", "k2", "t3", "pw2"] {
            assert!(!text.split(|c: char| !c.is_alphanumeric()).any(|w| w == secret), "{text}");
        }
        assert!(text.contains("--port 8080") && text.contains("mcp-remote"), "{text}");
    }
}
