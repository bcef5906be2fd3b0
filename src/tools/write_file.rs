//! `write_file`: writes (creating folders as needed) a text file of the workspace.

use async_trait::async_trait;
use serde_json::json;

use super::{Tool, ToolContext, ToolError, required_str};

/// Writes a file.
pub(super) struct WriteFile;

#[async_trait]
impl Tool for WriteFile {
    fn name(&self) -> &str {
        "write_file"
    }

    fn description(&self) -> &str {
        "Write a text file in the workspace, replacing it if it exists. Paths are relative to the workspace."
    }

    fn parameters(&self) -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File path in the workspace"},
                "content": {"type": "string", "description": "The whole new content"},
            },
            "required": ["path", "content"],
        })
    }

    async fn call(&self, ctx: &ToolContext, args: serde_json::Value) -> Result<String, ToolError> {
        let path = required_str(&args, "path")?;
        let content = required_str(&args, "content")?;
        let written = ctx.workspace.write(path, content.as_bytes()).await?;
        Ok(format!("wrote {} bytes to {}", content.len(), ctx.workspace.display(&written)))
    }
}
