//! A session exported whole, as Markdown to read or as JSON to keep: one branch of its
//! conversation (the current one, or the one through `?branch=`), with its tool calls; or,
//! as JSON, every branch (`?branches=all`), so nothing an edit left behind is lost.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Path, Query};
use super::sessions::{message_json, tool_call_json};
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::clock::{now_ms, rfc3339};
use crate::conversation::Role;
use crate::runtime::MessagePage;
use crate::store::{Message, Session, ToolCallRecord};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportQuery {
    /// `markdown` (the default) or `json`.
    #[serde(default)]
    format: Option<String>,
    /// The `seq` of a message on the branch to export (absent: the current branch).
    branch: Option<i64>,
    /// `one` (the default) or `all`: every branch, turn by turn (JSON only).
    #[serde(default)]
    branches: Option<String>,
}

/// The session as a file to download: `{id}.md` or `{id}.json`.
#[utoipa::path(get, path = "/api/sessions/{id}/export", tag = "sessions", params(("id" = String, Path, description = "The session id", pattern = "^[A-Za-z0-9._-]{1,128}$"), ExportQuery), responses((status = 200, description = "The session as Markdown (`text/markdown`) or as JSON `{session, messages, tool_calls, branches, exported_at}` (`branches`: `one`, or `all` with `?branches=all`)", content_type = "text/markdown")))]
pub(super) async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let json = match query.format.as_deref() {
        None | Some("markdown" | "md") => false,
        Some("json") => true,
        Some(_) => {
            return Err(ApiError::BadRequest {
                code: "INVALID_QUERY",
                message: "format is markdown or json".into(),
            });
        }
    };
    let every = match query.branches.as_deref() {
        None | Some("one") => false,
        Some("all") if json && query.branch.is_none() => true,
        Some("all") => {
            return Err(ApiError::BadRequest {
                code: "INVALID_QUERY",
                message: "branches=all is JSON only, and names no branch".into(),
            });
        }
        Some(_) => {
            return Err(ApiError::BadRequest {
                code: "INVALID_QUERY",
                message: "branches is one (the default) or all".into(),
            });
        }
    };
    let (session, messages) = if every {
        state.runtime.all_messages(&caller.user, &id).await?
    } else {
        let page = MessagePage { branch: query.branch, before_seq: None, limit: u64::MAX };
        let (session, _, messages) =
            state.runtime.session_messages(&caller.user, &id, page).await?;
        (session, messages)
    };
    // The calls of the turns exported, not of other branches'.
    let turns: std::collections::HashSet<&str> =
        messages.iter().filter_map(|m| m.turn_id.as_deref()).collect();
    let mut calls = state.runtime.tool_calls(&caller.user, &id).await?;
    calls.retain(|call| turns.contains(call.turn_id.as_str()));
    // The session id is `[A-Za-z0-9._-]`: safe in a header as it is.
    let (body, kind, extension) = if json {
        let mut body = as_json(&session, &messages, &calls);
        body["branches"] = json!(if every { "all" } else { "one" });
        (body.to_string(), "application/json", "json")
    } else {
        (as_markdown(&session, &messages, &calls), "text/markdown; charset=utf-8", "md")
    };
    let disposition = format!("attachment; filename=\"{}.{extension}\"", session.id);
    Ok((
        [(header::CONTENT_TYPE, kind.to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        body,
    )
        .into_response())
}

fn as_json(session: &Session, messages: &[Message], calls: &[ToolCallRecord]) -> Value {
    let messages: Vec<Value> = messages.iter().map(message_json).collect();
    let calls: Vec<Value> = calls.iter().map(tool_call_json).collect();
    json!({
        "session": {
            "id": session.id,
            "name": session.name,
            "created_at": rfc3339(session.created_at),
            "updated_at": rfc3339(session.updated_at),
            "message_count": session.message_count,
        },
        "messages": messages,
        "tool_calls": calls,
        "exported_at": rfc3339(now_ms()),
    })
}

fn as_markdown(session: &Session, messages: &[Message], calls: &[ToolCallRecord]) -> String {
    let title = session.name.as_deref().unwrap_or(&session.id);
    let mut out = format!("# {}\n\n", title.replace('\n', " "));
    out.push_str(&format!("_Session `{}`, exported {}._\n", session.id, rfc3339(now_ms())));
    for message in messages {
        match message.role {
            Role::User => out.push_str(&format!("\n## You\n\n{}\n", message.content)),
            Role::Assistant => {
                if !message.content.is_empty() {
                    out.push_str(&format!("\n## Assistant\n\n{}\n", message.content));
                }
                for call in &message.tool_calls {
                    let args = fenced(&call.arguments, "json");
                    out.push_str(&format!("\n**Tool call** `{}`\n\n{args}", call.name));
                }
            }
            Role::Tool => {
                let name = message.tool_name.as_deref().unwrap_or("tool");
                let turn = message.turn_id.as_deref().unwrap_or_default();
                let failed = message.tool_call_id.as_deref().is_some_and(|id| {
                    calls.iter().any(|call| call.id == id && call.turn_id == turn && call.is_error)
                });
                let label = if failed { "failed" } else { "returned" };
                let output = fenced(&message.content, "");
                out.push_str(&format!("\n**Tool** `{name}` {label}:\n\n{output}"));
            }
            Role::System => {}
        }
    }
    out
}

/// `text` in a code fence longer than any run of backticks inside it.
fn fenced(text: &str, language: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}{language}\n{text}\n{fence}\n")
}

#[cfg(test)]
mod tests {
    use super::fenced;

    #[test]
    fn a_fence_outlasts_the_backticks_it_holds() {
        assert_eq!(fenced("ls", "sh"), "```sh\nls\n```\n");
        assert_eq!(fenced("a ```` b", ""), "`````\na ```` b\n`````\n");
    }
}
