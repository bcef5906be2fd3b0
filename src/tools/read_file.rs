//! `read_file`: reads a UTF-8 text file of the workspace.

use async_trait::async_trait;
use serde_json::json;

use super::{Tool, ToolContext, ToolError, cap_output, required_str};

/// Reads a file.
pub(super) struct ReadFile;

#[async_trait]
impl Tool for ReadFile {
    fn name(&self) -> &str {
        "read_file"
    }

    fn description(&self) -> &str {
        "Read a text file from the workspace. Paths are relative to the workspace."
    }

    fn parameters(&self) -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {"path": {"type": "string", "description": "File path in the workspace"}},
            "required": ["path"],
        })
    }

    async fn call(&self, ctx: &ToolContext, args: serde_json::Value) -> Result<String, ToolError> {
        let path = required_str(&args, "path")?;
        let (_, bytes) = ctx.workspace.read(path).await?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ToolError::Failed(format!("{path:?} is not UTF-8 text")))?;
        Ok(cap_output(text, ctx.max_output_bytes))
    }
}
