//! The REST API: routes, shared state, JSON errors. Handlers translate between HTTP and
//! the runtime; they never talk to providers or tools.

mod approvals;
pub(crate) mod chat;
mod connections;
mod error;
mod export;
pub(crate) mod extract;
mod health;
mod identity;
mod listener;
mod metrics;
mod openapi;
mod search;
mod sessions;
mod turns;
mod usage;
mod web;
mod workspace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::Instrument;

use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, ClientAddr};
use crate::config::Config;
use crate::runtime::Runtime;
use crate::{request_id, sse, ws};

pub use connections::{ConnectionCount, Connections};
pub use error::{ApiError, ErrorInfo};
pub use listener::serve;
pub use openapi::openapi;

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
    /// This node's name in logs and status.
    pub node_id: Arc<str>,
    /// AG-UI streams attached to each running turn.
    pub agui_runs: Arc<crate::agui::Attached>,
    /// The MCP servers whose tools the agent uses.
    pub mcp: Arc<crate::tools::mcp::McpServers>,
    /// What the runtime and the agent count, for `GET /metrics`.
    pub agent_metrics: Arc<crate::metrics::Metrics>,
    /// Addresses that may scrape `/metrics` without a token.
    pub metrics_allow: Arc<[crate::auth::Network]>,
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
        .route("/metrics", get(metrics::metrics))
        .route("/api/status", get(health::status))
        .route("/api/config", get(health::config))
        .route("/api/usage", get(usage::usage))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/pair", post(identity::pair))
        .route("/api/pairing-codes", post(identity::create_pairing_code))
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
        .route("/api/search", get(search::search))
        .route("/api/sessions", get(sessions::list))
        .route("/api/sessions/prune", post(sessions::prune))
        .route(
            "/api/sessions/{id}",
            get(sessions::detail).patch(sessions::update).delete(sessions::delete),
        )
        .route("/api/sessions/{id}/messages", post(sessions::post_message))
        .route("/api/sessions/{id}/abort", post(sessions::abort))
        .route("/api/sessions/{id}/tool-calls", get(sessions::tool_calls))
        .route("/api/sessions/{id}/export", get(export::export))
        .route("/api/sessions/{id}/notify", post(sessions::notify))
        .route("/api/workspace/tree", get(workspace::tree))
        .route(
            "/api/workspace/file/{*path}",
            get(workspace::file).merge(
                axum::routing::put(workspace::upload)
                    .layer(DefaultBodyLimit::max(state.config.limits.max_upload_bytes)),
            ),
        )
        .route("/api/ag-ui", post(crate::agui::run))
        .route("/api/agents", get(turns::list))
        .route("/api/agents/{turn_id}/kill", post(turns::kill))
        .merge(crate::openai::routes())
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limit_ip))
        .layer(axum::middleware::from_fn(crate::openai::error_shape))
        .layer(axum::middleware::from_fn_with_state(state.clone(), request_context))
        .with_state(state)
}

/// The header a request id travels in, both ways.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Establishes who is asking and under which id, around everything else: the client's
/// address (through trusted proxies), the request id (answered in `X-Request-Id`), and a
/// span carrying both for every log line of the request.
async fn request_context(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let sent = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok());
    let id = request_id::accept_or_generate(sent);
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    if let Some(peer) = peer {
        let client = state.auth.client_addr(peer, request.headers());
        request.extensions_mut().insert(ClientAddr(client));
    }
    let client = request.extensions().get::<ClientAddr>().map(|c| c.0);
    let span = tracing::info_span!("request", node = %state.node_id, id = %id, client = ?client);
    let mut response = request_id::scope(id.clone(), next.run(request)).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Counts every request, public ones included, against its client address's limit.
async fn limit_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(ClientAddr(ip)) = request.extensions().get::<ClientAddr>()
        && let Err(err) = state.auth.limit_ip(*ip).await
    {
        return ApiError::from(err).into_response();
    }
    next.run(request).await
}

/// The id and log span of the request being served, captured in its handler to carry into
/// a task it leads to (a WebSocket after its upgrade runs in a task of its own).
pub(crate) struct RequestContext {
    id: Arc<str>,
    span: tracing::Span,
}

impl RequestContext {
    /// The context of the request this task serves.
    pub(crate) fn current() -> Self {
        let id = request_id::current().unwrap_or_else(|| request_id::accept_or_generate(None));
        Self { id, span: tracing::Span::current() }
    }

    /// Runs `future` under this request's id and span.
    pub(crate) fn run<F: std::future::Future>(
        self,
        future: F,
    ) -> impl std::future::Future<Output = F::Output> {
        request_id::scope(self.id, future).instrument(self.span)
    }
}
