//! `write_file`: writes (creating folders as needed) a text file of the workspace.

use async_trait::async_trait;
use serde_json::json;

use super::{Tool, ToolContext, ToolError, required_str};

/// Writes a file.
pub(super) struct WriteFile;

#[async_trait]
impl Tool for WriteFile {
    fn name(&self) -> &'static str {
        "write_file"
    }

    fn description(&self) -> &'static str {
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
        let resolved = ctx.workspace.resolve(path)?;
        if resolved == ctx.workspace.root() {
            return Err(ToolError::InvalidArguments("path names the workspace itself".into()));
        }
        if let Some(parent) = resolved.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| ToolError::Failed(format!("creating folders for {path:?}: {e}")))?;
            // Folders created just now cannot be symlinks, but re-check the final location.
            ctx.workspace.resolve(path)?;
        }
        tokio::fs::write(&resolved, content)
            .await
            .map_err(|e| ToolError::Failed(format!("writing {path:?}: {e}")))?;
        Ok(format!("wrote {} bytes to {}", content.len(), ctx.workspace.display(&resolved)))
    }
}
