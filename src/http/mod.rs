//! The REST API: routes, shared state, JSON errors. Handlers translate between HTTP and
//! the runtime; they never talk to providers or tools.

mod approvals;
mod chat;
mod error;
pub(crate) mod extract;
mod health;
mod sessions;
mod turns;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use tokio_util::sync::CancellationToken;

use crate::auth::Tickets;
use crate::config::Config;
use crate::runtime::Runtime;
use crate::{sse, ws};

pub use error::ApiError;

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
    /// One-time tickets for WebSocket and SSE clients.
    pub tickets: Arc<Tickets>,
    /// Open WebSocket and SSE connections.
    pub connections: Arc<AtomicUsize>,
}

/// Counts a connection while it lives.
pub struct ConnectionCount(Arc<AtomicUsize>);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppState {
    /// Counts a long-lived connection until the returned guard drops.
    pub fn count_connection(&self) -> ConnectionCount {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionCount(self.connections.clone())
    }
}

/// All routes of the server.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/health", get(health::health))
        .route("/health/ready", get(health::ready))
        .route("/api/status", get(health::status))
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
            get(sessions::detail)
                .patch(sessions::rename)
                .delete(sessions::delete),
        )
        .route("/api/sessions/{id}/messages", post(sessions::post_message))
        .route("/api/sessions/{id}/abort", post(sessions::abort))
        .route("/api/sessions/{id}/tool-calls", get(sessions::tool_calls))
        .route("/api/sessions/{id}/notify", post(sessions::notify))
        .route("/api/agents", get(turns::list))
        .route("/api/agents/{turn_id}/kill", post(turns::kill))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
