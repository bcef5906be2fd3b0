//! `shell`: runs a command with `sh -c` in the workspace, in its own process group, so a
//! time-out or a cancelled turn kills it and everything it started.

use std::process::Stdio;

use async_trait::async_trait;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::process_group::ProcessGroup;
use super::{Tool, ToolContext, ToolError, required_str};

/// Runs a shell command.
pub(super) struct Shell;

#[async_trait]
impl Tool for Shell {
    fn name(&self) -> &str {
        "shell"
    }

    fn description(&self) -> &str {
        "Run a shell command (sh -c) in the workspace folder and return its output and exit code."
    }

    fn parameters(&self) -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The command line to run"}},
            "required": ["command"],
        })
    }

    async fn call(&self, ctx: &ToolContext, args: serde_json::Value) -> Result<String, ToolError> {
        let command = required_str(&args, "command")?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(ctx.workspace.root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ToolError::Failed(format!("starting sh: {e}")))?;
        let pid = child.id().ok_or_else(|| ToolError::Failed("sh exited at once".into()))?;
        // Killed when dropped: on time-out, on cancel, when the turn's task is dropped, and
        // after a normal exit (so nothing the command left behind keeps running).
        let _group = ProcessGroup::of(pid);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let max = ctx.max_output_bytes;
        let run = async {
            tokio::join!(read_capped(stdout, max), read_capped(stderr, max), child.wait())
        };
        let (stdout, stderr, status) = tokio::select! {
            result = run => result,
            () = tokio::time::sleep(ctx.shell_timeout) => {
                return Err(ToolError::Timeout(ctx.shell_timeout));
            }
            () = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
        };
        let status = status.map_err(|e| ToolError::Failed(format!("waiting for sh: {e}")))?;
        let mut output = stdout;
        if !stderr.is_empty() {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str("[stderr]\n");
            output.push_str(&stderr);
        }
        match status.code() {
            Some(0) => Ok(output),
            Some(code) => Err(ToolError::Failed(format!("{output}\n[exit code {code}]"))),
            None => Err(ToolError::Failed(format!("{output}\n[killed by a signal]"))),
        }
    }
}

/// Reads a pipe to its end, keeping at most `max` bytes and counting the rest.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, max: usize) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n;
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if total > kept.len() {
        text.push_str(&format!(
            "\n[output truncated: {total} bytes, showing the first {}]",
            kept.len()
        ));
    }
    text
}
