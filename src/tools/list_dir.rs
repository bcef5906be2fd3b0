//! `list_dir`: lists a folder of the workspace.

use async_trait::async_trait;
use serde_json::json;

use super::{Tool, ToolContext, ToolError, cap_output};

/// Lists a folder.
pub(super) struct ListDir;

#[async_trait]
impl Tool for ListDir {
    fn name(&self) -> &str {
        "list_dir"
    }

    fn description(&self) -> &str {
        "List the entries of a folder in the workspace (default: the workspace root). Folders end with '/'."
    }

    fn parameters(&self) -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {"path": {"type": "string", "description": "Folder path in the workspace", "default": "."}},
        })
    }

    async fn call(&self, ctx: &ToolContext, args: serde_json::Value) -> Result<String, ToolError> {
        let path = args.get("path").and_then(|v| v.as_str()).unwrap_or(".");
        let resolved = ctx.workspace.resolve(path)?;
        let mut reader = tokio::fs::read_dir(&resolved).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ToolError::NotFound(path.into()),
            _ => ToolError::Failed(format!("listing {path:?}: {e}")),
        })?;
        let mut entries = Vec::new();
        while let Some(entry) = reader
            .next_entry()
            .await
            .map_err(|e| ToolError::Failed(format!("listing {path:?}: {e}")))?
        {
            let mut name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                name.push('/');
            }
            entries.push(name);
        }
        entries.sort();
        if entries.is_empty() {
            return Ok(format!("{} is empty", ctx.workspace.display(&resolved)));
        }
        Ok(cap_output(entries.join("\n"), ctx.max_output_bytes))
    }
}
