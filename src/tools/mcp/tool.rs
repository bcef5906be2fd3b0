//! An MCP server's tool as the agent sees it: its name under the server's, its description
//! and input schema as the server gave them, arguments checked against that schema before
//! the call, and the result turned into the text the model reads.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use rmcp::model::CallToolResult;
use serde_json::Value;

use super::server::Server;
use crate::tools::{Policy, Tool, ToolContext, ToolError, cap_output};

/// Longest tool name providers accept (OpenAI: `^[a-zA-Z0-9_-]{1,64}$`).
const MAX_NAME: usize = 64;

/// A tool of an MCP server.
pub(super) struct McpTool {
    /// `SERVER__TOOL`, made safe for providers.
    name: String,
    /// The name the server knows it by.
    remote: String,
    description: String,
    schema: Value,
    validator: Option<jsonschema::Validator>,
    read_only: bool,
    server: Weak<Server>,
}

impl McpTool {
    /// The tool a `tools/list` entry (as JSON) describes, named under `prefix`.
    pub(super) fn from_listing(
        prefix: &str,
        listing: &Value,
        server: &Arc<Server>,
    ) -> Result<Self, String> {
        let remote = listing["name"].as_str().ok_or("a tool without a name")?.to_owned();
        let safe: String = remote
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect();
        let name = format!("{prefix}{safe}");
        if remote.is_empty() || name.len() > MAX_NAME {
            return Err(format!("{name:?} is not a usable tool name (1-{MAX_NAME} characters)"));
        }
        let mut schema = listing.get("inputSchema").cloned().unwrap_or_default();
        if !schema.is_object() {
            schema = serde_json::json!({"type": "object"});
        }
        // A schema the validator cannot compile is passed on, and the server judges.
        let validator = jsonschema::validator_for(&schema)
            .inspect_err(|e| tracing::debug!(tool = %name, "input schema not checked: {e}"))
            .ok();
        let description = listing["description"]
            .as_str()
            .or(listing["title"].as_str())
            .unwrap_or_default()
            .to_owned();
        let read_only = listing["annotations"]["readOnlyHint"].as_bool() == Some(true);
        Ok(Self {
            name,
            remote,
            description,
            schema,
            validator,
            read_only,
            server: Arc::downgrade(server),
        })
    }
}

#[async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        self.schema.clone()
    }

    /// Tools from outside ask, unless the server marks them read-only.
    fn default_policy(&self) -> Option<Policy> {
        if self.read_only { None } else { Some(Policy::Ask) }
    }

    fn check(&self, args: &Value) -> Result<(), ToolError> {
        let Some(validator) = &self.validator else { return Ok(()) };
        let problems: Vec<String> = validator
            .iter_errors(args)
            .take(3)
            .map(|error| {
                let at = error.instance_path.to_string();
                if at.is_empty() { error.to_string() } else { format!("{at}: {error}") }
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(ToolError::InvalidArguments(format!(
            "{} (the tool's input schema: {})",
            problems.join("; "),
            self.schema
        )))
    }

    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<String, ToolError> {
        let server = self.server.upgrade().ok_or(ToolError::Unknown(self.name.clone()))?;
        let Value::Object(args) = args else {
            return Err(ToolError::InvalidArguments("expected a JSON object".into()));
        };
        let output = server.call(ctx, &self.remote, args).await?;
        Ok(cap_output(output, ctx.max_output_bytes))
    }
}

/// The text the model reads for a tool result: text as is, images and audio as a short
/// description, embedded resources by their text, links by their URI, and the structured
/// content when there is no text. A result marked `isError` is a tool error.
pub(super) fn render(result: &CallToolResult) -> Result<String, ToolError> {
    let content = serde_json::to_value(&result.content).unwrap_or_default();
    let mut parts: Vec<String> = Vec::new();
    for block in content.as_array().into_iter().flatten() {
        let mime = block["mimeType"].as_str().unwrap_or("unknown type");
        let size = |data: &Value| data.as_str().map_or(0, |b64| b64.len() / 4 * 3);
        match block["type"].as_str() {
            Some("text") => parts.push(block["text"].as_str().unwrap_or_default().to_owned()),
            Some("image") => {
                parts.push(format!("[image: {mime}, ~{} bytes]", size(&block["data"])))
            }
            Some("audio") => {
                parts.push(format!("[audio: {mime}, ~{} bytes]", size(&block["data"])))
            }
            Some("resource") => {
                let resource = &block["resource"];
                let uri = resource["uri"].as_str().unwrap_or_default();
                match resource["text"].as_str() {
                    Some(text) => parts.push(format!("[resource {uri}]\n{text}")),
                    None => parts.push(format!(
                        "[resource {uri}: {}, ~{} bytes]",
                        resource["mimeType"].as_str().unwrap_or("unknown type"),
                        size(&resource["blob"])
                    )),
                }
            }
            Some("resource_link") => {
                let name = block["name"].as_str().unwrap_or_default();
                let uri = block["uri"].as_str().unwrap_or_default();
                parts.push(format!("[resource link: {name} <{uri}> ({mime})]"));
            }
            _ => parts.push(format!("[{} content]", block["type"].as_str().unwrap_or("unknown"))),
        }
    }
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let text = parts.join("\n");
    if result.is_error == Some(true) {
        return Err(ToolError::Failed(if text.is_empty() {
            "the tool failed".into()
        } else {
            text
        }));
    }
    Ok(text)
}
