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
use crate::auth::{Caller, PAIRING_TTL_MS};
use crate::clock::rfc3339;
use crate::store::PairingGrant;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct PairRequest {
    code: String,
    /// The name of the new user; one is made up when absent. A code minted for a user
    /// (`parley pair --user NAME`) pairs a device of that user instead.
    user: Option<String>,
    label: Option<String>,
}

/// Trades a one-time pairing code for a token (see [`crate::auth::Auth::pair`]): a new
/// user, or a new device of the user the code was minted for; never an existing identity.
#[utoipa::path(post, path = "/api/pair", tag = "identity", security(()), request_body = PairRequest, responses((status = 201, body = super::openapi::Paired)))]
pub(super) async fn pair(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    Json(request): Json<PairRequest>,
) -> Result<Response, ApiError> {
    let ip = crate::auth::client_ip(&parts);
    let label = request.label.as_deref();
    let paired = state.auth.pair(ip, &request.code, request.user, label).await?;
    let record = &paired.record;
    let body = json!({
        "token": paired.secret,
        "token_id": record.id,
        "user": record.user,
        "admin": record.admin,
    });
    Ok((StatusCode::CREATED, JsonResponse(body)).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(super) struct PairingCodeRequest {
    /// Pair a new device of this user; absent: the code creates a new user.
    user: Option<String>,
    #[serde(default)]
    admin: bool,
}

/// Admins mint pairing codes: for a new device of a user, or for a new user.
#[utoipa::path(post, path = "/api/pairing-codes", tag = "identity", request_body = PairingCodeRequest, responses((status = 201, body = super::openapi::PairingCode)))]
pub(super) async fn create_pairing_code(
    State(state): State<AppState>,
    caller: Caller,
    parts: axum::http::request::Parts,
    Json(request): Json<PairingCodeRequest>,
) -> Result<Response, ApiError> {
    let ip = crate::auth::client_ip(&parts);
    let grant = PairingGrant { user: request.user, admin: request.admin };
    let code = state.auth.mint_pairing_code(&caller, ip, &grant).await?;
    let body = json!({
        "code": code,
        "user": grant.user,
        "admin": grant.admin,
        "expires_in": PAIRING_TTL_MS / 1000,
    });
    Ok((StatusCode::CREATED, JsonResponse(body)).into_response())
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

#[utoipa::path(get, path = "/api/tokens", tag = "identity", responses((status = 200, body = super::openapi::Items)))]
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<JsonResponse<Value>, ApiError> {
    let tokens = state.auth.list_tokens(&caller).await?;
    Ok(JsonResponse(json!({"items": tokens.iter().map(token_json).collect::<Vec<_>>()})))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct CreateTokenRequest {
    user: String,
    #[serde(default)]
    admin: bool,
    label: Option<String>,
}

#[utoipa::path(post, path = "/api/tokens", tag = "identity", request_body = CreateTokenRequest, responses((status = 201, body = super::openapi::TokenView)))]
pub(super) async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CreateTokenRequest>,
) -> Result<Response, ApiError> {
    let label = request.label.as_deref();
    let (record, secret) =
        state.auth.create_token(&caller, &request.user, request.admin, label).await?;
    let mut body = token_json(&record);
    body["token"] = json!(secret);
    Ok((StatusCode::CREATED, JsonResponse(body)).into_response())
}

#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "identity", params(("id" = String, Path, description = "The token id")), responses((status = 200, body = super::openapi::TokenView)))]
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<JsonResponse<Value>, ApiError> {
    let record = state.auth.revoke_token(&caller, &id).await?;
    Ok(JsonResponse(token_json(&record)))
}

#[utoipa::path(get, path = "/api/audit", tag = "identity", responses((status = 200, body = super::openapi::Items)))]
pub(super) async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<JsonResponse<Value>, ApiError> {
    let entries = state.auth.audit_log(&caller, 500).await?;
    let items: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({"at": rfc3339(e.at), "kind": e.kind, "user": e.user, "ip": e.ip, "detail": e.detail})
        })
        .collect();
    Ok(JsonResponse(json!({"items": items})))
}
