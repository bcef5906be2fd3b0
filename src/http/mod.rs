//! The REST API: routes, shared state, JSON errors. Handlers translate between HTTP and
//! the runtime; they never talk to providers or tools.

mod approvals;
mod chat;
mod connections;
mod error;
pub(crate) mod extract;
mod health;
mod identity;
mod listener;
mod sessions;
mod turns;
mod web;
mod workspace;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::routing::{get, post};

use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::config::Config;
use crate::runtime::Runtime;
use crate::{sse, ws};

pub use connections::{ConnectionCount, Connections};
pub use error::ApiError;
pub use listener::serve;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Runtime,
    pub config: Arc<Config>,
    pub started: Instant,
    /// How the provider was described at start-up (for status).
    pub provider: Arc<str>,
    /// Whether a provider URL is configured.
    pub provider_configured: bool,
    /// Cancelled when the server stops: long-lived connections close.
    pub shutdown: CancellationToken,
    /// Authentication, tickets, limits and the audit log.
    pub auth: Arc<Auth>,
    /// Open WebSocket and SSE connections.
    pub connections: Arc<Connections>,
}

/// All routes of the server.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/", get(web::index))
        .route("/s/{id}", get(web::index))
        .route("/assets/{*path}", get(web::asset))
        .route("/health", get(health::health))
        .route("/health/ready", get(health::ready))
        .route("/api/status", get(health::status))
        .route("/api/pair", post(identity::pair))
        .route("/api/tokens", get(identity::list_tokens).post(identity::create_token))
        .route("/api/tokens/{id}", axum::routing::delete(identity::revoke_token))
        .route("/api/audit", get(identity::audit_log))
        .route("/api/chat", post(chat::chat))
        .route("/api/chat/ticket", post(chat::ticket))
        .route("/api/chat/stream", get(ws::chat_stream))
        .route("/ws/chat", get(ws::ws_chat))
        .route("/api/events", get(sse::global_events))
        .route("/api/sessions/{id}/events", get(sse::session_events))
        .route("/api/approvals", get(approvals::list))
        .route("/api/approvals/{id}/{decision}", post(approvals::decide))
        .route("/api/sessions", get(sessions::list))
        .route("/api/sessions/prune", post(sessions::prune))
        .route(
            "/api/sessions/{id}",
            get(sessions::detail).patch(sessions::rename).delete(sessions::delete),
        )
        .route("/api/sessions/{id}/messages", post(sessions::post_message))
        .route("/api/sessions/{id}/abort", post(sessions::abort))
        .route("/api/sessions/{id}/tool-calls", get(sessions::tool_calls))
        .route("/api/sessions/{id}/notify", post(sessions::notify))
        .route("/api/workspace/tree", get(workspace::tree))
        .route("/api/workspace/file/{*path}", get(workspace::file))
        .route("/api/agents", get(turns::list))
        .route("/api/agents/{turn_id}/kill", post(turns::kill))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limit_ip))
        .with_state(state)
}

/// Counts every request, public ones included, against its client address's limit.
async fn limit_ip(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let ip = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
    if let Some(info) = ip
        && let Err(err) = state.auth.limit_ip(info.0.ip())
    {
        return axum::response::IntoResponse::into_response(err);
    }
    next.run(request).await
}
