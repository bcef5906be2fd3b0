//! The REST API: routes, shared state, JSON errors. Handlers translate between HTTP and
//! the runtime; they never talk to providers or tools.

mod chat;
mod error;
mod extract;
mod health;
mod sessions;
mod turns;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::config::Config;
use crate::runtime::Runtime;

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
}

/// All routes of the server.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/health", get(health::health))
        .route("/health/ready", get(health::ready))
        .route("/api/status", get(health::status))
        .route("/api/chat", post(chat::chat))
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
