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
use crate::auth::{Caller, PAIRING_TTL_MS, normalize_pairing_code, tokens};
use crate::clock::rfc3339;
use crate::store::{PairingGrant, StoreError};

#[derive(Debug, Deserialize)]
pub(super) struct PairRequest {
    code: String,
    /// The name of the new user; one is made up when absent. A code minted for a user
    /// (`parley pair --user NAME`) pairs a device of that user instead.
    user: Option<String>,
    label: Option<String>,
}

fn invalid_user() -> ApiError {
    ApiError::Unprocessable {
        code: "INVALID_USER",
        message: "user names are 1-64 characters of A-Z a-z 0-9 . _ -".into(),
    }
}

/// Trades a one-time pairing code for a token. A code never grants an existing identity:
/// it creates a new user (a proposed name must be free: 409 `USER_EXISTS`), or a new device
/// of the user an admin or the operator minted it for. Five wrong codes lock the client out.
pub(super) async fn pair(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    Json(request): Json<PairRequest>,
) -> Result<Response, ApiError> {
    let ip = crate::auth::client_ip(&parts);
    let key = ip.to_string();
    let auth = &state.auth;
    // Checked before the code: a pairing code is short enough that guessing must be slowed.
    if let Err(retry_after) = auth.pairing_failures.check(&key) {
        return Err(ApiError::RateLimited { message: "too many wrong pairing codes", retry_after });
    }
    if request.user.as_deref().is_some_and(|user| !tokens::valid_user(user)) {
        return Err(invalid_user());
    }
    let store = state.runtime.store();
    let hash = tokens::hash(&normalize_pairing_code(&request.code));
    let wrong_code = || async {
        auth.audit("pairing_failure", None, Some(ip), None).await;
        if let Some(lock) = auth.pairing_failures.fail(&key) {
            auth.audit("lockout", None, Some(ip), Some(&format!("pairing, {} s", lock.as_secs())))
                .await;
        }
        ApiError::Unauthorized("the pairing code is wrong, used or expired")
    };
    let Some(grant) = store.pairing_code(&hash).await? else {
        return Err(wrong_code().await);
    };
    auth.pairing_failures.clear(&key);
    let (user, new_user, admin) = match (grant.user, request.user) {
        (Some(granted), Some(asked)) if granted != asked => {
            return Err(ApiError::Unprocessable {
                code: "INVALID_USER",
                message: "this pairing code was made for another user; leave out `user`".into(),
            });
        }
        (Some(granted), _) => (granted, false, grant.admin),
        // The first client paired with a fresh server is its owner.
        (None, asked) => (
            asked.unwrap_or_else(|| format!("user-{}", tokens::random_hex(4))),
            true,
            store.active_tokens().await? == 0,
        ),
    };
    let label = request.label.as_deref().or(Some("paired"));
    let (record, secret) = tokens::new_token(&user, admin, label);
    match store.pair(&hash, &record, new_user).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict {
                code: "USER_EXISTS",
                message: format!("the user {user:?} already exists; choose another name"),
            });
        }
        // Spent or expired since it was looked up.
        Err(StoreError::NotFound) => return Err(wrong_code().await),
        Err(other) => return Err(other.into()),
    }
    let detail = if new_user { "new user" } else { "new device" };
    auth.audit("paired", Some(&user), Some(ip), Some(&format!("{detail}, {}", record.id))).await;
    let body = json!({"token": secret, "token_id": record.id, "user": user, "admin": admin});
    Ok((StatusCode::CREATED, JsonResponse(body)).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PairingCodeRequest {
    /// Pair a new device of this user; absent: the code creates a new user.
    user: Option<String>,
    #[serde(default)]
    admin: bool,
}

/// Admins mint pairing codes: for a new device of a user, or for a new user.
pub(super) async fn create_pairing_code(
    State(state): State<AppState>,
    caller: Caller,
    parts: axum::http::request::Parts,
    Json(request): Json<PairingCodeRequest>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    if request.user.as_deref().is_some_and(|user| !tokens::valid_user(user)) {
        return Err(invalid_user());
    }
    if request.admin && request.user.is_none() {
        return Err(ApiError::Unprocessable {
            code: "INVALID_REQUEST",
            message: "an admin pairing code must name its user".into(),
        });
    }
    let grant = PairingGrant { user: request.user, admin: request.admin };
    let code = crate::auth::new_pairing_code(state.runtime.store().as_ref(), &grant).await?;
    let detail = format!("for {}", grant.user.as_deref().unwrap_or("a new user"));
    let ip = crate::auth::client_ip(&parts);
    state.auth.audit("pairing_code_created", Some(&caller.user), Some(ip), Some(&detail)).await;
    let body = json!({
        "code": code,
        "user": grant.user,
        "admin": grant.admin,
        "expires_in": PAIRING_TTL_MS / 1000,
    });
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
