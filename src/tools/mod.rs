//! Tools the agent can call: the [`Tool`] trait, the registry and the dispatch. One file
//! per tool. A tool's failure is returned to the model as text; it never ends the turn.

mod list_dir;
pub mod mcp;
mod process_group;
mod read_file;
mod shell;
mod workspace;
mod write_file;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::config::ToolsConfig;
use crate::providers::ToolSpec;

pub use workspace::Workspace;

/// Why a tool call failed; the text goes back to the model.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("unknown tool {0:?}")]
    Unknown(String),
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    #[error("access denied: {0}")]
    Denied(String),
    #[error("not run: {0}")]
    Refused(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A file tool was pointed at a folder.
    #[error("{0:?} is a directory")]
    IsADirectory(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

/// Whether a tool call runs on its own, waits for the user, or never runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Auto,
    Ask,
    Deny,
}

impl Policy {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(Policy::Auto),
            "ask" => Some(Policy::Ask),
            "deny" => Some(Policy::Deny),
            _ => None,
        }
    }
}

/// Where a running tool says how far it is; the agent passes it on to the turn's watchers.
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<tokio::sync::mpsc::Sender<String>>);

impl Progress {
    /// A sink and the receiver of what is reported to it.
    pub fn channel() -> (Self, tokio::sync::mpsc::Receiver<String>) {
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        (Self(Some(sender)), receiver)
    }

    /// Reports `detail`; dropped when the reader is behind, since progress is only advice.
    pub fn report(&self, detail: String) {
        if let Some(sender) = &self.0 {
            let _ = sender.try_send(detail);
        }
    }
}

/// What a tool call runs with.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// The user the call runs for.
    pub user: String,
    /// The user's workspace; file tools are confined to it and `shell` runs in it.
    pub workspace: Workspace,
    /// Cancelled when the turn is; long-running tools stop and clean up.
    pub cancel: CancellationToken,
    /// Bytes of output kept.
    pub max_output_bytes: usize,
    /// Time allowed to a `shell` command.
    pub shell_timeout: Duration,
    /// Where the tool reports progress.
    pub progress: Progress,
}

/// A capability offered to the model.
#[async_trait]
pub trait Tool: Send + Sync + 'static {
    /// The name the model calls it by.
    fn name(&self) -> &str;
    /// What it does, for the model.
    fn description(&self) -> &str;
    /// JSON schema of its arguments.
    fn parameters(&self) -> serde_json::Value;
    /// Its approval policy when the configuration names none for it (`None`: the
    /// configured default). A tool from outside may ask by default.
    fn default_policy(&self) -> Option<Policy> {
        None
    }
    /// Checks `args` (a JSON object) before the call is approved or run; a refusal is the
    /// tool error the model sees.
    fn check(&self, _args: &serde_json::Value) -> Result<(), ToolError> {
        Ok(())
    }
    /// Runs it.
    async fn call(&self, ctx: &ToolContext, args: serde_json::Value) -> Result<String, ToolError>;
}

/// A call whose tool exists and whose arguments passed the tool's check.
pub struct Prepared {
    tool: Arc<dyn Tool>,
    args: serde_json::Value,
}

/// The tools available to turns, by name. Tools may join and leave while the server runs
/// (the tools of a server started later, or whose list changed).
pub struct Registry {
    tools: RwLock<BTreeMap<String, Arc<dyn Tool>>>,
    config: ToolsConfig,
    root: PathBuf,
    policies: BTreeMap<String, Policy>,
    default_policy: Policy,
}

impl Registry {
    /// The built-in tools minus the disabled ones; workspaces live under `root`.
    pub fn new(config: &ToolsConfig, root: PathBuf) -> Result<Self, String> {
        let all: [Arc<dyn Tool>; 4] = [
            Arc::new(shell::Shell),
            Arc::new(read_file::ReadFile),
            Arc::new(write_file::WriteFile),
            Arc::new(list_dir::ListDir),
        ];
        let tools = all
            .into_iter()
            .filter(|tool| !config.disabled.iter().any(|d| d == tool.name()))
            .map(|tool| (tool.name().to_owned(), tool))
            .collect();
        let tools = RwLock::new(tools);
        let parse = |name: &str, text: &str| {
            Policy::parse(text).ok_or_else(|| {
                format!("tool policy of {name} must be auto, ask or deny, not {text:?}")
            })
        };
        let policies = config
            .approval
            .iter()
            .map(|(tool, text)| Ok((tool.clone(), parse(tool, text)?)))
            .collect::<Result<_, String>>()?;
        let default_policy = parse("default_policy", &config.default_policy)?;
        Ok(Self { tools, config: config.clone(), root, policies, default_policy })
    }

    /// The approval policy of `tool`: the configured one, else the tool's own default,
    /// else the configured default.
    pub fn policy(&self, tool: &str) -> Policy {
        if let Some(policy) = self.policies.get(tool) {
            return *policy;
        }
        let own = self.tools().get(tool).and_then(|t| t.default_policy());
        own.unwrap_or(self.default_policy)
    }

    fn tools(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<dyn Tool>>> {
        self.tools.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the tools whose names start with `prefix` by `tools` in one step, so no
    /// call in between finds none (unless disabled by configuration).
    pub fn replace_prefixed(&self, prefix: &str, tools: impl IntoIterator<Item = Arc<dyn Tool>>) {
        let mut all = self.tools.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|name, _| !name.starts_with(prefix));
        for tool in tools {
            if !self.config.disabled.iter().any(|d| d == tool.name()) {
                all.insert(tool.name().to_owned(), tool);
            }
        }
    }

    /// The specs offered to the model.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools()
            .values()
            .map(|tool| ToolSpec {
                name: tool.name().into(),
                description: tool.description().into(),
                parameters: tool.parameters(),
            })
            .collect()
    }

    /// The context a tool call of `user` runs with.
    pub fn context(&self, user: &str, cancel: CancellationToken) -> Result<ToolContext, ToolError> {
        Ok(ToolContext {
            user: user.to_owned(),
            workspace: Workspace::for_user(&self.root, user)?,
            cancel,
            max_output_bytes: self.config.max_output_bytes,
            shell_timeout: Duration::from_secs(self.config.shell_timeout_secs),
            progress: Progress::default(),
        })
    }

    /// Finds the tool `name` and checks the raw JSON `arguments` the model wrote, before
    /// anyone is asked to approve the call.
    pub fn prepare(&self, name: &str, arguments: &str) -> Result<Prepared, ToolError> {
        let tool = self.tools().get(name).cloned();
        let tool = tool.ok_or_else(|| ToolError::Unknown(name.into()))?;
        let args: serde_json::Value = serde_json::from_str(arguments)
            .map_err(|e| ToolError::InvalidArguments(format!("not valid JSON: {e}")))?;
        if !args.is_object() {
            return Err(ToolError::InvalidArguments("expected a JSON object".into()));
        }
        tool.check(&args)?;
        Ok(Prepared { tool, args })
    }

    /// Runs a prepared call.
    pub async fn run(&self, ctx: &ToolContext, call: Prepared) -> Result<String, ToolError> {
        call.tool.call(ctx, call.args).await
    }

    /// Prepares and runs the tool `name` with the raw JSON `arguments`.
    pub async fn call(
        &self,
        ctx: &ToolContext,
        name: &str,
        arguments: &str,
    ) -> Result<String, ToolError> {
        self.run(ctx, self.prepare(name, arguments)?).await
    }
}

/// Reads a required string argument.
fn required_str<'a>(args: &'a serde_json::Value, key: &str) -> Result<&'a str, ToolError> {
    args.get(key)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| ToolError::InvalidArguments(format!("missing string argument {key:?}")))
}

/// Cuts `text` to at most `max` bytes on a character boundary, saying how much was cut.
pub(crate) fn cap_output(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("\n[output truncated: {total} bytes, showing the first {end}]"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tool from outside, asking by default.
    struct Outside(&'static str);

    #[async_trait]
    impl Tool for Outside {
        fn name(&self) -> &str {
            self.0
        }
        fn description(&self) -> &str {
            "outside"
        }
        fn parameters(&self) -> serde_json::Value {
            serde_json::json!({"type": "object"})
        }
        fn default_policy(&self) -> Option<Policy> {
            Some(Policy::Ask)
        }
        async fn call(&self, _: &ToolContext, _: serde_json::Value) -> Result<String, ToolError> {
            Ok(format!("{} ran", self.0))
        }
    }

    #[tokio::test]
    async fn tools_join_and_leave_with_their_own_default_policy() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ToolsConfig::default();
        config.approval.clear();
        config.approval.insert("srv__b".into(), "deny".into());
        config.disabled.push("srv__off".into());
        let registry = Registry::new(&config, dir.path().to_path_buf()).unwrap();
        let builtin = registry.specs().len();
        registry.replace_prefixed(
            "srv__",
            [
                Arc::new(Outside("srv__a")) as Arc<dyn Tool>,
                Arc::new(Outside("srv__b")),
                Arc::new(Outside("srv__off")),
            ],
        );
        assert_eq!(registry.specs().len(), builtin + 2, "the disabled one stays out");
        assert_eq!(registry.policy("srv__a"), Policy::Ask, "its own default");
        assert_eq!(registry.policy("srv__b"), Policy::Deny, "configuration wins");
        assert_eq!(registry.policy("list_dir"), registry.default_policy);
        let ctx = registry.context("alice", CancellationToken::new()).unwrap();
        assert_eq!(registry.call(&ctx, "srv__a", "{}").await.unwrap(), "srv__a ran");
        registry.replace_prefixed("srv__", []);
        assert_eq!(registry.specs().len(), builtin);
        assert!(matches!(registry.call(&ctx, "srv__a", "{}").await, Err(ToolError::Unknown(_))));
    }
}
