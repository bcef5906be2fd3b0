//! Effective configuration: `parley.toml` < `PARLEY_*` environment < command-line flags.
//!
//! The flat variable names of DESIGN.md "Configuration" (`PARLEY_LISTEN`,
//! `PARLEY_PROVIDER_URL`, ...) are a contract; every other setting can be reached from the
//! environment with `__` as the section separator (`PARLEY_AGENT__MAX_ITERATIONS=5`).
//! A name that is not a setting stops start-up when it is in the file and is warned about
//! when it is a `PARLEY_*` variable, so a typo cannot quietly leave a limit at its default.
//! This file holds the settings; `load` reads them, `keys` knows their names and `env`
//! turns `PARLEY_*` variables into them.

mod env;
mod keys;
mod load;
mod mcp;
mod models;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::ConfigError;
pub use mcp::{McpConfig, McpServerConfig, TOOL_SEPARATOR};
pub use models::{BudgetConfig, ModelConfig};

/// Everything `parley serve` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Data folder: SQLite file, workspaces.
    pub data_dir: PathBuf,
    /// `sqlite://PATH`; unset means `sqlite://<data_dir>/parley.db`.
    pub database_url: Option<String>,
    /// Redis URL for the multi-node bus; unset means the in-process bus.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel Parley uses, so several clusters can share
    /// one Redis.
    pub redis_prefix: String,
    /// This node's name in logs, status and (multi-node) leases: 1-64 of
    /// `A-Z a-z 0-9 . _ -`; unset, one is made up at each start (`node-<random>`).
    pub node_id: Option<String>,
    /// The provider of `PARLEY_PROVIDER_URL`; with a URL it is the provider named `default`.
    pub provider: ProviderConfig,
    /// More providers by name, each serving the models it lists.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Per-model settings (fallback chain, prices), by the model's name.
    pub models: BTreeMap<String, ModelConfig>,
    /// The model of a turn that names none; unset: `provider.model`, else the first model
    /// listed.
    pub default_model: Option<String>,
    pub budget: BudgetConfig,
    pub agent: AgentConfig,
    pub tools: ToolsConfig,
    pub sessions: SessionsConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub stream: StreamConfig,
    pub mcp: McpConfig,
    pub metrics: MetricsConfig,
    /// Seconds running turns get to finish on shutdown before they are cancelled.
    pub shutdown_grace_secs: u64,
    /// Seconds a session's lease lasts unless its node renews it (every third of it): how
    /// long, multi-node, a session whose node died waits before another node takes it over.
    pub lease_secs: f64,
    /// Reverse proxies (addresses or CIDR networks) whose `Forwarded` / `X-Forwarded-For`
    /// headers name the client; empty: those headers are ignored. From the environment, a
    /// comma-separated list (`PARLEY_TRUSTED_PROXIES=10.0.0.0/8,127.0.0.1`).
    #[serde(deserialize_with = "list_or_string")]
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies write the client's address to: `x-forwarded-for`
    /// or `forwarded` (RFC 7239). Only that one is read.
    pub forwarded_header: String,
}

/// A list given as a TOML array or as one comma-separated string (from the environment).
fn list_or_string<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(de)? {
        ListOrString::List(list) => list,
        ListOrString::String(text) => {
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
    })
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            redis_url: None,
            redis_prefix: "parley:".into(),
            node_id: None,
            provider: ProviderConfig::default(),
            providers: BTreeMap::new(),
            models: BTreeMap::new(),
            default_model: None,
            budget: BudgetConfig::default(),
            agent: AgentConfig::default(),
            tools: ToolsConfig::default(),
            sessions: SessionsConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            stream: StreamConfig::default(),
            mcp: McpConfig::default(),
            metrics: MetricsConfig::default(),
            shutdown_grace_secs: 10,
            lease_secs: 15.0,
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".into(),
        }
    }
}

/// An upstream LLM provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// `openai` (any OpenAI-compatible server) or `anthropic` (the Messages API).
    pub kind: String,
    /// Base URL including `/v1`; unset makes turns fail with `PROVIDER_NOT_CONFIGURED`.
    pub url: Option<String>,
    pub api_key: Option<String>,
    /// The model asked for (with `models`, the first of those it serves).
    pub model: Option<String>,
    /// More models it serves, by the names sent upstream. From the environment, a
    /// comma-separated list.
    #[serde(deserialize_with = "list_or_string")]
    pub models: Vec<String>,
    pub connect_timeout_secs: f64,
    /// Time allowed from sending the request to the first streamed byte.
    pub first_byte_timeout_secs: f64,
    /// Longest silence allowed between two chunks of a stream.
    pub idle_timeout_secs: f64,
    /// Longest a single completion may take.
    pub total_timeout_secs: f64,
    /// Retries on 429/5xx/connect errors before the first byte.
    pub max_retries: u32,
    /// First backoff delay; doubles on each retry.
    pub retry_base_ms: u64,
    /// Most tokens an answer may have (Anthropic requires it; OpenAI-compatible servers are
    /// not sent it).
    pub max_tokens: u32,
    /// Tokens of extended thinking Anthropic models are asked for (0: none; at least 1024,
    /// below `max_tokens`).
    pub thinking_budget_tokens: u32,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: "openai".into(),
            url: None,
            api_key: None,
            model: None,
            models: Vec::new(),
            connect_timeout_secs: 10.0,
            first_byte_timeout_secs: 120.0,
            idle_timeout_secs: 60.0,
            total_timeout_secs: 600.0,
            max_retries: 2,
            retry_base_ms: 500,
            max_tokens: 8192,
            thinking_budget_tokens: 0,
        }
    }
}

/// The agent loop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentConfig {
    /// Model calls allowed in one turn before it ends with `AGENT_ERROR`.
    pub max_iterations: u32,
    /// System prompt sent first on every turn.
    pub system_prompt: String,
    /// Hints given to the model with a message sent from a page (`page_context`), by page.
    pub page_hints: BTreeMap<String, String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_iterations: 20,
            system_prompt: "You are Parley's assistant. You can run shell commands and read, \
                            write and list files in your workspace with the tools you are given."
                .into(),
            page_hints: BTreeMap::new(),
        }
    }
}

/// Tool limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolsConfig {
    /// Seconds a `shell` command may run.
    pub shell_timeout_secs: u64,
    /// Bytes of tool output kept and sent to the model.
    pub max_output_bytes: usize,
    /// Tools turned off entirely.
    pub disabled: Vec<String>,
    /// Approval policy per tool: `auto`, `ask` or `deny`.
    pub approval: BTreeMap<String, String>,
    /// Policy of tools not named in `approval`.
    pub default_policy: String,
    /// Seconds an `ask` tool call waits for a decision before it is denied.
    pub approval_timeout_secs: f64,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            shell_timeout_secs: 60,
            max_output_bytes: 64 * 1024,
            disabled: Vec::new(),
            approval: [("shell", "ask"), ("write_file", "ask")]
                .into_iter()
                .map(|(tool, policy)| (tool.to_owned(), policy.to_owned()))
                .collect(),
            default_policy: "auto".into(),
            approval_timeout_secs: 120.0,
        }
    }
}

/// WebSocket and SSE connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamConfig {
    /// Seconds between server WebSocket pings; a peer silent for two intervals is dropped.
    pub ping_interval_secs: f64,
    /// Seconds between SSE keep-alive comments.
    pub sse_keepalive_secs: f64,
    /// Largest WebSocket message accepted; larger ones close the socket with 1009.
    pub max_frame_bytes: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self { ping_interval_secs: 30.0, sse_keepalive_secs: 15.0, max_frame_bytes: 128 * 1024 }
    }
}

/// Session queueing and retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionsConfig {
    /// Turns that may wait behind the running one; past it, `SESSION_QUEUE_FULL`.
    pub queue_depth: usize,
    /// Events kept in memory per session for resuming watchers.
    pub event_log_capacity: usize,
    /// Milliseconds between flushes of a streaming step's partial text to the store.
    pub partial_flush_ms: u64,
    /// Auto-prune keeps at most this many sessions per user (0 = unlimited).
    pub max_sessions: u64,
    /// Auto-prune drops sessions idle for longer (0 = never).
    pub ttl_hours: u64,
    /// Seconds a session with no turn and no watcher stays in memory after its last event.
    pub idle_evict_secs: f64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            queue_depth: 128,
            event_log_capacity: 4096,
            partial_flush_ms: 1000,
            max_sessions: 0,
            ttl_hours: 0,
            idle_evict_secs: 600.0,
        }
    }
}

/// Request limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest file uploaded into a workspace (`PUT /api/workspace/file/...`), in bytes.
    pub max_upload_bytes: usize,
    /// Largest chat message content, in bytes.
    pub max_content_bytes: usize,
    /// Requests per minute per token (0 = unlimited).
    pub requests_per_minute_per_token: u32,
    /// Requests per minute per client IP, authenticated or not (0 = unlimited).
    pub requests_per_minute_per_ip: u32,
    /// Turns a user may start per minute (0 = unlimited).
    pub turns_per_minute: u32,
    /// Turns of one user running or waiting at once (0 = unlimited).
    pub max_concurrent_turns: usize,
    /// WebSocket and SSE connections per node.
    pub max_connections: usize,
    /// WebSocket and SSE connections per user.
    pub max_connections_per_user: usize,
    /// Failed authentications per IP per minute before it is locked out.
    pub auth_failures_per_minute: u32,
    /// Wrong pairing codes per client before it is locked out.
    pub pairing_attempts: u32,
    /// Seconds a lockout lasts.
    pub lockout_secs: u64,
    /// Seconds a client gets to send a request's headers.
    pub header_read_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_upload_bytes: 10 * 1024 * 1024,
            max_content_bytes: 64 * 1024,
            requests_per_minute_per_token: 600,
            requests_per_minute_per_ip: 1200,
            turns_per_minute: 60,
            max_concurrent_turns: 256,
            max_connections: 10_000,
            max_connections_per_user: 100,
            auth_failures_per_minute: 10,
            pairing_attempts: 5,
            lockout_secs: 300,
            header_read_timeout_secs: 10,
        }
    }
}

/// `GET /metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// Addresses or CIDR networks (of the client, as `trusted_proxies` establish it) that
    /// may scrape without a token; anyone else needs an admin token. From the environment,
    /// a comma-separated list.
    #[serde(deserialize_with = "list_or_string")]
    pub allow: Vec<String>,
}

impl MetricsConfig {
    /// The networks of `allow`.
    pub fn networks(&self) -> Result<Vec<crate::auth::Network>, String> {
        self.allow
            .iter()
            .map(|entry| {
                let network = crate::auth::Network::parse(entry).map_err(|_| {
                    format!("metrics.allow: {entry:?} is not an address or a network")
                })?;
                if network.is_everything() {
                    return Err(format!(
                        "metrics.allow: {entry:?} would let anyone scrape; name the scrapers"
                    ));
                }
                Ok(network)
            })
            .collect()
    }
}

/// Authentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// `token` or `none` (`none` only on a loopback address).
    pub mode: String,
    /// Origins allowed to open WebSockets besides the server's own (`*` allows any).
    pub allowed_origins: Vec<String>,
    /// Set when a proxy in front terminates TLS; silences the plain-HTTP warning.
    pub tls_terminated: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { mode: "token".into(), allowed_origins: Vec::new(), tls_terminated: false }
    }
}

/// The map fields: they take keys of the user's choosing, so any name below them is
/// accepted (a test in `keys` fails when a map field is missing here).
const FREE_FORM_MAPS: &[&str] =
    &["agent.page_hints", "tools.approval", "mcp.servers", "providers", "models", "budget.users"];

impl Config {
    /// Refuses settings that would be unsafe or cannot work.
    pub fn validate(&self) -> Result<(), String> {
        match self.auth.mode.as_str() {
            "token" => {}
            "none" if self.listen.ip().is_loopback() => {}
            "none" => {
                return Err(format!(
                    "auth.mode = \"none\" is only allowed on a loopback address, not {}",
                    self.listen
                ));
            }
            other => return Err(format!("auth.mode must be \"token\" or \"none\", not {other:?}")),
        }
        self.trusted_proxies()?;
        self.mcp.validate()?;
        self.metrics.networks()?;
        self.budget.validate()?;
        for (name, model) in &self.models {
            model.validate(name)?;
        }
        let bad = |id: &String| id.len() > 64 || !crate::runtime::valid_session_id(id);
        if self.node_id.as_ref().is_some_and(bad) {
            return Err(format!(
                "node_id must be 1-64 of A-Z a-z 0-9 . _ -, not {:?}",
                self.node_id
            ));
        }
        Ok(())
    }

    /// The configured node id, or a new random one (`node-` and 6 hex digits; not the host
    /// name, which `/health/ready` would show to anyone).
    pub fn node_id(&self) -> String {
        match &self.node_id {
            Some(id) => id.clone(),
            None => format!("node-{}", crate::auth::tokens::random_hex(3)),
        }
    }

    /// The trusted proxies and the header they write.
    pub fn trusted_proxies(&self) -> Result<crate::auth::TrustedProxies, String> {
        let header = crate::auth::ForwardedHeader::parse(&self.forwarded_header)?;
        crate::auth::TrustedProxies::parse(&self.trusted_proxies, header)
    }

    /// Whether requests are authenticated.
    pub fn auth_enabled(&self) -> bool {
        self.auth.mode != "none"
    }
}

impl Config {
    /// The store URL, derived from the data folder when not set.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("parley.db").display()))
    }

    /// Where a user's tools read and write.
    pub fn workspace_root(&self) -> PathBuf {
        self.data_dir.join("workspace")
    }

    /// The store URL with its password replaced by `***`, for messages and logs.
    pub fn redacted_database_url(&self) -> String {
        redact_url(&self.database_url())
    }

    /// The Redis URL (if any) with its password replaced by `***`.
    pub fn redacted_redis_url(&self) -> String {
        self.redis_url.as_deref().map(redact_url).unwrap_or_else(|| "(in-process)".into())
    }

    /// The configuration with secrets replaced by `***` (the provider key, URL passwords,
    /// MCP servers' `env` and `headers`).
    pub fn redacted(&self) -> Config {
        let mut copy = self.clone();
        copy.database_url = Some(self.redacted_database_url());
        copy.redis_url = copy.redis_url.as_deref().map(redact_url);
        copy.mcp = self.mcp.redacted();
        for provider in std::iter::once(&mut copy.provider).chain(copy.providers.values_mut()) {
            if provider.api_key.is_some() {
                provider.api_key = Some("***".into());
            }
            provider.url = provider.url.as_deref().map(redact_url_and_query);
        }
        copy
    }

    /// The configuration as TOML with secrets replaced by `***`, as `parley config` prints it.
    pub fn redacted_toml(&self) -> String {
        toml_string(&self.redacted())
    }
}

fn toml_string(config: &Config) -> String {
    // Serializing plain structs of strings and numbers to TOML cannot fail.
    let value = serde_json::to_value(config).unwrap_or_default();
    let mut out = String::new();
    render_toml(&mut out, "", &value);
    out
}

/// A minimal TOML writer for our config shape (tables of scalars and arrays), so the
/// `toml` serializer does not have to be a direct dependency.
fn render_toml(out: &mut String, prefix: &str, value: &serde_json::Value) {
    let Some(map) = value.as_object() else { return };
    for (key, value) in map {
        match value {
            serde_json::Value::Object(_) | serde_json::Value::Null => {}
            other => out.push_str(&format!("{key} = {other}\n")),
        }
    }
    for (key, value) in map {
        if value.is_object() {
            let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            out.push_str(&format!("\n[{name}]\n"));
            render_toml(out, &name, value);
        }
    }
}

/// A URL with its password and its whole query (which often carries a key) as `***`.
pub fn redact_url_and_query(url: &str) -> String {
    match url.split_once('?') {
        Some((before, _)) => format!("{}?***", redact_url(before)),
        None => redact_url(url),
    }
}

/// Hides the password of a URL like `postgres://user:secret@host/db`, or one given as its
/// `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    // The last `@` ends the credentials: a password may hold one unencoded.
    let mut redacted = match authority_and_path.rsplit_once('@') {
        Some((creds, host)) => match creds.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{authority_and_path}"),
        },
        None => format!("{scheme}://{authority_and_path}"),
    };
    if let Some(query) = query {
        let params: Vec<&str> = query
            .split('&')
            .map(|param| if param.starts_with("password=") { "password=***" } else { param })
            .collect();
        redacted.push('?');
        redacted.push_str(&params.join("&"));
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("sqlite://./data/parley.db"), "sqlite://./data/parley.db");
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db?sslmode=require"),
            "postgres://u:***@h/db?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?password=pw&options=-c%20search_path%3Dx"),
            "postgres://u@h/db?password=***&options=-c%20search_path%3Dx"
        );
    }

    #[test]
    fn redacted_toml_hides_the_key() {
        let mut config = Config::default();
        config.provider.api_key = Some("sk-secret".into());
        let text = config.redacted_toml();
        assert!(!text.contains("sk-secret"), "{text}");
        assert!(text.contains("api_key = \"***\""), "{text}");
        assert!(text.contains("[provider]"), "{text}");
    }

    #[test]
    fn redacted_toml_hides_every_providers_secrets() {
        let mut config = Config::default();
        let other = ProviderConfig {
            url: Some("https://u:pw-secret@llm.example/v1?key=q-secret".into()),
            api_key: Some("sk-other-secret".into()),
            models: vec!["m".into()],
            ..ProviderConfig::default()
        };
        config.providers.insert("other".into(), other);
        let text = config.redacted_toml();
        for secret in ["pw-secret", "q-secret", "sk-other-secret"] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
        assert!(text.contains("[providers.other]"), "{text}");
        assert!(text.contains("llm.example"), "{text}");
    }

    #[test]
    fn redacted_toml_hides_mcp_secrets() {
        let mut config = Config::default();
        let server = McpServerConfig {
            url: Some("https://u:pw@mcp.example/mcp?api_key=k1".into()),
            headers: [("Authorization".to_owned(), "Bearer hdr-secret".to_owned())].into(),
            ..McpServerConfig::default()
        };
        config.mcp.servers.insert("remote".into(), server);
        let local = McpServerConfig {
            command: Some("node".into()),
            env: [("API_TOKEN".to_owned(), "env-secret".to_owned())].into(),
            ..McpServerConfig::default()
        };
        config.mcp.servers.insert("local".into(), local);
        config.validate().unwrap();
        let text = config.redacted_toml();
        for secret in ["pw", "k1", "hdr-secret", "env-secret"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("[mcp.servers.local.env]"), "{text}");
        assert!(text.contains("API_TOKEN = \"***\""), "{text}");
        assert!(text.contains("url = \"https://u:***@mcp.example/mcp?***\""), "{text}");
    }

    #[test]
    fn refuses_mcp_servers_that_cannot_work() {
        let check = |server: McpServerConfig, name: &str| {
            let mut config = Config::default();
            config.mcp.servers.insert(name.into(), server);
            config.validate()
        };
        let stdio = McpServerConfig { command: Some("node".into()), ..Default::default() };
        assert!(check(stdio.clone(), "ok-name_1").is_ok());
        assert!(check(stdio.clone(), "a__b").unwrap_err().contains("mcp.servers.a__b"));
        assert!(check(stdio.clone(), "a.b").is_err());
        assert!(check(McpServerConfig::default(), "none").unwrap_err().contains("`command`"));
        let both = McpServerConfig { url: Some("http://x".into()), ..stdio.clone() };
        assert!(check(both, "both").unwrap_err().contains("not both"));
        let ftp = McpServerConfig { url: Some("ftp://x".into()), ..Default::default() };
        assert!(check(ftp, "ftp").is_err());
        let remote_per_user =
            McpServerConfig { url: Some("http://x".into()), per_user: true, ..Default::default() };
        assert!(check(remote_per_user, "r").unwrap_err().contains("per_user"));
    }
}
