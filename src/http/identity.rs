//! Identity endpoints: `POST /api/pair` (public: trade a pairing code for a token), and the
//! admin-only token and audit-log endpoints.

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Json, Path};
use super::{ApiError, AppState};
use crate::auth::{Caller, normalize_pairing_code, tokens};
use crate::clock::rfc3339;

#[derive(Debug, Deserialize)]
pub(super) struct PairRequest {
    code: String,
    /// The user the token is for; a new one is made up when absent.
    user: Option<String>,
    label: Option<String>,
}

/// Trades a one-time pairing code for a token. Five wrong codes lock the client out.
pub(super) async fn pair(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    Json(request): Json<PairRequest>,
) -> Result<Response, ApiError> {
    let ip = crate::auth::client_ip(&parts);
    let key = ip.to_string();
    let auth = &state.auth;
    if let Err(retry_after) = auth.pairing_failures.check(&key) {
        return Err(ApiError::RateLimited { message: "too many wrong pairing codes", retry_after });
    }
    let user = match request.user.as_deref() {
        Some(user) if !tokens::valid_user(user) => {
            return Err(ApiError::Unprocessable {
                code: "INVALID_USER",
                message: "user names are 1-64 characters of A-Z a-z 0-9 . _ -".into(),
            });
        }
        Some(user) => user.to_owned(),
        None => format!("user-{}", tokens::random_hex(4)),
    };
    let store = state.runtime.store();
    let hash = tokens::hash(&normalize_pairing_code(&request.code));
    if !store.redeem_pairing_code(&hash).await? {
        auth.audit("pairing_failure", None, Some(ip), None).await;
        if let Some(lock) = auth.pairing_failures.fail(&key) {
            auth.audit("lockout", None, Some(ip), Some(&format!("pairing, {} s", lock.as_secs())))
                .await;
        }
        return Err(ApiError::Unauthorized("the pairing code is wrong, used or expired"));
    }
    auth.pairing_failures.clear(&key);
    // The first client paired with a fresh server is its owner.
    let admin = store.active_tokens().await? == 0;
    let label = request.label.as_deref().or(Some("paired"));
    let (record, secret) = tokens::issue(store.as_ref(), &user, admin, label).await?;
    auth.audit("paired", Some(&user), Some(ip), Some(&record.id)).await;
    let body = json!({"token": secret, "token_id": record.id, "user": user, "admin": admin});
    Ok((StatusCode::CREATED, JsonResponse(body)).into_response())
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin { Ok(()) } else { Err(ApiError::Forbidden("this needs an admin token")) }
}

fn token_json(token: &crate::store::TokenRecord) -> Value {
    json!({
        "id": token.id,
        "user": token.user,
        "label": token.label,
        "admin": token.admin,
        "created_at": rfc3339(token.created_at),
        "revoked_at": token.revoked_at.map(rfc3339),
    })
}

pub(super) async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<JsonResponse<Value>, ApiError> {
    require_admin(&caller)?;
    let tokens = state.runtime.store().list_tokens().await?;
    Ok(JsonResponse(json!({"items": tokens.iter().map(token_json).collect::<Vec<_>>()})))
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateTokenRequest {
    user: String,
    #[serde(default)]
    admin: bool,
    label: Option<String>,
}

pub(super) async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CreateTokenRequest>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    if !tokens::valid_user(&request.user) {
        return Err(ApiError::Unprocessable {
            code: "INVALID_USER",
            message: "user names are 1-64 characters of A-Z a-z 0-9 . _ -".into(),
        });
    }
    let store = state.runtime.store();
    let (record, secret) =
        tokens::issue(store.as_ref(), &request.user, request.admin, request.label.as_deref())
            .await?;
    state.auth.audit("token_created", Some(&record.user), None, Some(&record.id)).await;
    let mut body = token_json(&record);
    body["token"] = json!(secret);
    Ok((StatusCode::CREATED, JsonResponse(body)).into_response())
}

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<JsonResponse<Value>, ApiError> {
    require_admin(&caller)?;
    let record = state.runtime.store().revoke_token(&id).await?;
    state.auth.announce_revocation(&record.id);
    state.auth.audit("token_revoked", Some(&record.user), None, Some(&record.id)).await;
    Ok(JsonResponse(token_json(&record)))
}

pub(super) async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<JsonResponse<Value>, ApiError> {
    require_admin(&caller)?;
    let entries = state.runtime.store().audit_log(500).await?;
    let items: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({"at": rfc3339(e.at), "kind": e.kind, "user": e.user, "ip": e.ip, "detail": e.detail})
        })
        .collect();
    Ok(JsonResponse(json!({"items": items})))
}
