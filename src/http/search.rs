//! Searching the caller's conversations: `GET /api/search?q=`, newest match first, each
//! with its session and the `seq` to open it at (`GET /api/sessions/{id}?branch=SEQ`).

use axum::Json as JsonResponse;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::Query;
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::clock::rfc3339;

/// Largest page of matches.
const MAX_LIMIT: u64 = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SearchQuery {
    /// Words to find, each as a word's beginning (`depl` finds `deploy`); all must match.
    q: String,
    #[serde(default = "first_page")]
    page: u64,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn first_page() -> u64 {
    1
}

fn default_limit() -> u64 {
    20
}

/// Messages (the user's and the agent's answers, not tool output) of the caller's sessions
/// that hold every word: `{items: [{session_id, session_name, seq, role, snippet,
/// created_at}], total, page, limit}`.
#[utoipa::path(get, path = "/api/search", tag = "sessions", params(SearchQuery), responses((status = 200, description = "`{items: [{session_id, session_name, seq, role, snippet, created_at}], total, page, limit}`", body = Value)))]
pub(super) async fn search(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<SearchQuery>,
) -> Result<JsonResponse<Value>, ApiError> {
    if !(1..=MAX_LIMIT).contains(&query.limit) {
        return Err(ApiError::BadRequest {
            code: "INVALID_QUERY",
            message: format!("limit must be 1-{MAX_LIMIT}"),
        });
    }
    if query.q.len() > 500 {
        return Err(ApiError::BadRequest {
            code: "INVALID_QUERY",
            message: "q is at most 500 bytes".into(),
        });
    }
    let (page, limit) = (query.page.max(1), query.limit);
    let offset = (page - 1).saturating_mul(limit);
    let (hits, total) = state.runtime.search(&caller.user, &query.q, offset, limit).await?;
    let items: Vec<Value> = hits
        .iter()
        .map(|hit| {
            json!({
                "session_id": hit.session_id,
                "session_name": hit.session_name,
                "seq": hit.seq,
                "role": hit.role,
                "snippet": hit.snippet,
                "created_at": rfc3339(hit.created_at),
            })
        })
        .collect();
    Ok(JsonResponse(json!({"items": items, "total": total, "page": page, "limit": limit})))
}
