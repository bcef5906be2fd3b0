//! `GET /api/workspace/tree`, `GET /api/workspace/file/{*path}` and `PUT` of the same: the
//! files the caller's tools read and wrote, and the ones the caller uploads for them,
//! confined to their workspace exactly as the tools are.

use std::path::Path as FsPath;

use axum::Json as JsonResponse;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::extract::Path;
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::tools::{ToolError, Workspace};

/// Most entries listed in one tree.
const MAX_ENTRIES: usize = 10_000;

fn workspace(state: &AppState, caller: &Caller) -> Result<Workspace, ApiError> {
    Workspace::for_user(&state.config.workspace_root(), &caller.user).map_err(tool_error)
}

fn tool_error(err: ToolError) -> ApiError {
    match err {
        ToolError::Denied(_) | ToolError::InvalidArguments(_) => {
            ApiError::Forbidden("that path is outside your workspace")
        }
        ToolError::NotFound(_) => ApiError::NotFound("file"),
        ToolError::IsADirectory(_) => {
            ApiError::BadRequest { code: "IS_A_DIRECTORY", message: "that path is a folder".into() }
        }
        other => ApiError::Internal(other.to_string()),
    }
}

#[utoipa::path(get, path = "/api/workspace/tree", tag = "workspace", responses((status = 200, description = "`{items: [{path, kind, size}], truncated}`", body = Value)))]
pub(super) async fn tree(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<JsonResponse<Value>, ApiError> {
    let workspace = workspace(&state, &caller)?;
    let root = workspace.root().to_path_buf();
    let items = tokio::task::spawn_blocking(move || list(&root))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let truncated = items.len() >= MAX_ENTRIES;
    Ok(JsonResponse(json!({"items": items, "truncated": truncated})))
}

/// Walks the folder without following symlinks (a link is listed, never entered).
fn list(root: &FsPath) -> Vec<Value> {
    let mut items = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if items.len() >= MAX_ENTRIES {
                return items;
            }
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            let (label, size) = if kind.is_symlink() {
                ("symlink", None)
            } else if kind.is_dir() {
                pending.push(path.clone());
                ("dir", None)
            } else {
                ("file", entry.metadata().ok().map(|m| m.len()))
            };
            items.push(json!({"path": rel, "kind": label, "size": size}));
        }
    }
    items
}

#[utoipa::path(get, path = "/api/workspace/file/{path}", tag = "workspace", params(("path" = String, Path, description = "A path inside the workspace")), responses((status = 200, description = "The file, with its MIME type", content_type = "application/octet-stream")))]
pub(super) async fn file(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let workspace = workspace(&state, &caller)?;
    let (resolved, bytes) = workspace.read(&path).await.map_err(tool_error)?;
    let (mime, inline) = mime_of(&resolved);
    let mut response = Body::from(bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(mime));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !inline {
        // Active content (HTML, SVG, unknown) is downloaded, never rendered on our origin.
        headers.insert(CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
    Ok(response)
}

/// Stores the request's body as the file at `path` (folders made as needed, a file there
/// replaced): `{path, size}`. At most `limits.max_upload_bytes`.
#[utoipa::path(put, path = "/api/workspace/file/{path}", tag = "workspace", params(("path" = String, Path, description = "A path inside the workspace")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"), responses((status = 201, description = "`{path, size}`: where it is, relative to the workspace", body = Value)))]
pub(super) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let workspace = workspace(&state, &caller)?;
    let limit = state.config.limits.max_upload_bytes;
    // Read up to the limit only: a larger body is refused before it is all in memory.
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::BodyTooLarge)?;
    let written = workspace.write(&path, &bytes).await.map_err(tool_error)?;
    let body = json!({"path": workspace.display(&written), "size": bytes.len()});
    Ok((axum::http::StatusCode::CREATED, JsonResponse(body)).into_response())
}

/// The MIME type by extension, and whether it is safe to show inline.
fn mime_of(path: &FsPath) -> (&'static str, bool) {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "txt" | "md" | "log" | "rs" | "py" | "js" | "ts" | "toml" | "yaml" | "yml" | "sh"
        | "csv" => ("text/plain; charset=utf-8", true),
        "json" => ("application/json", true),
        "png" => ("image/png", true),
        "jpg" | "jpeg" => ("image/jpeg", true),
        "gif" => ("image/gif", true),
        "webp" => ("image/webp", true),
        "pdf" => ("application/pdf", true),
        "html" | "htm" => ("text/html; charset=utf-8", false),
        "svg" => ("image/svg+xml", false),
        _ => ("application/octet-stream", false),
    }
}
