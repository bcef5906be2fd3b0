//! An MCP server's tool as the agent sees it: its name under the server's, its description
//! and input schema as the server gave them, arguments checked against that schema before
//! the call, and the result turned into the text the model reads.

use std::sync::Weak;

use async_trait::async_trait;
use rmcp::model::CallToolResult;
use serde_json::Value;

use super::server::Server;
use crate::tools::{Policy, Tool, ToolContext, ToolError, cap_output};

/// Longest tool name providers accept (OpenAI: `^[a-zA-Z0-9_-]{1,64}$`).
const MAX_NAME: usize = 64;
/// Longest description passed on, and largest input schema taken (serialized): every turn
/// sends them to the model.
const MAX_DESCRIPTION: usize = 8 * 1024;
const MAX_SCHEMA: usize = 64 * 1024;

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
        server: Weak<Server>,
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
        if schema.to_string().len() > MAX_SCHEMA {
            return Err(format!("{name}: its input schema is over {MAX_SCHEMA} bytes"));
        }
        // A schema the validator cannot compile is passed on, and the server judges.
        let validator = jsonschema::validator_for(&schema)
            .inspect_err(|e| tracing::debug!(tool = %name, "input schema not checked: {e}"))
            .ok();
        let description = listing["description"].as_str().or(listing["title"].as_str());
        let description = cap_output(description.unwrap_or_default().to_owned(), MAX_DESCRIPTION);
        let read_only = listing["annotations"]["readOnlyHint"].as_bool() == Some(true);
        Ok(Self { name, remote, description, schema, validator, read_only, server })
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
        let schema = cap_output(self.schema.to_string(), 2048);
        Err(ToolError::InvalidArguments(format!(
            "{} (the tool's input schema: {schema})",
            problems.join("; ")
        )))
    }

    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<String, ToolError> {
        let server = self.server.upgrade().ok_or(ToolError::Unknown(self.name.clone()))?;
        let Value::Object(args) = args else {
            return Err(ToolError::InvalidArguments("expected a JSON object".into()));
        };
        // Errors are capped with every tool's output by the agent.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(listing: Value) -> Result<McpTool, String> {
        McpTool::from_listing("srv__", &listing, Weak::new())
    }

    fn rendered(result: Value) -> Result<String, ToolError> {
        render(&serde_json::from_value(result).unwrap())
    }

    #[test]
    fn listings_become_tools_named_for_providers() {
        let schema =
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
        let read_only = tool(json!({"name": "a.b/c", "description": "d", "inputSchema": schema,
            "annotations": {"readOnlyHint": true}}))
        .unwrap();
        assert_eq!(read_only.name(), "srv__a_b_c");
        assert_eq!(read_only.remote, "a.b/c");
        assert_eq!(read_only.default_policy(), None, "read-only: the configured default");
        let writer = tool(json!({"name": "w", "inputSchema": schema})).unwrap();
        assert_eq!(writer.default_policy(), Some(Policy::Ask));
        assert!(writer.check(&json!({"n": 3})).is_ok());
        let refused = writer.check(&json!({"n": "three"})).unwrap_err().to_string();
        assert!(refused.contains("/n") && refused.contains("integer"), "{refused}");
        assert!(writer.check(&json!({})).unwrap_err().to_string().contains("\"n\""));

        assert!(tool(json!({"name": "x".repeat(60)})).is_err(), "past 64 characters");
        assert!(tool(json!({"description": "nameless"})).is_err());
        let huge = json!({"name": "big", "inputSchema": {"type": "object", "description": "x".repeat(70_000)}});
        assert!(tool(huge).is_err());
        let long = tool(json!({"name": "long", "description": "y".repeat(10_000)})).unwrap();
        assert!(long.description().len() < 9_000);
    }

    #[test]
    fn results_become_text_the_model_reads() {
        let text = rendered(json!({"content": [
            {"type": "text", "text": "hello"},
            {"type": "image", "data": "AAAA", "mimeType": "image/png"},
            {"type": "audio", "data": "AAAAAAAA", "mimeType": "audio/wav"},
            {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "inside"}},
            {"type": "resource", "resource": {"uri": "file:///b.bin", "blob": "AAAA", "mimeType": "application/zip"}},
            {"type": "resource_link", "uri": "file:///c", "name": "c", "mimeType": "text/plain"}
        ]}))
        .unwrap();
        assert_eq!(
            text,
            "hello\n[image: image/png, ~3 bytes]\n[audio: audio/wav, ~6 bytes]\n\
             [resource file:///a.txt]\ninside\n[resource file:///b.bin: application/zip, ~3 bytes]\n\
             [resource link: c <file:///c> (text/plain)]"
        );
        let structured = rendered(json!({"content": [], "structuredContent": {"t": 21}})).unwrap();
        assert_eq!(structured, r#"{"t":21}"#);
        let failed = rendered(
            json!({"content": [{"type": "text", "text": "no such city"}], "isError": true}),
        );
        assert!(matches!(failed, Err(ToolError::Failed(text)) if text == "no such city"));
    }
}
