//! `GET /metrics`: the node's Prometheus metrics, for a scraper that either comes from an
//! address in `metrics.allow` or shows an admin token.

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::auth::ClientAddr;
use crate::tools::mcp::Phase;

/// Whether `check` answered yes within a second, and the seconds it took.
async fn timed(check: impl std::future::Future<Output = bool>) -> (bool, f64) {
    let started = std::time::Instant::now();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(1), check).await;
    (answered.unwrap_or(false), started.elapsed().as_secs_f64())
}

/// The metrics as OpenMetrics text, the gauges read now.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus metrics (admins, or the addresses of metrics.allow)", body = String, content_type = "application/openmetrics-text")))]
pub(super) async fn metrics(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    // By address only when the address is the client's: one that is a trusted proxy means
    // the proxy did not name its client, who may be anyone.
    let allowed = parts.extensions.get::<ClientAddr>().is_some_and(|ClientAddr(ip)| {
        !state.auth.is_proxy(*ip) && state.metrics_allow.iter().any(|net| net.contains(*ip))
    });
    if !allowed {
        let caller = state.auth.authenticate(&parts).await?;
        if !caller.admin {
            return Err(ApiError::Forbidden(
                "metrics need an admin token (or an address in metrics.allow)",
            ));
        }
    }
    let metrics = &state.agent_metrics;
    for (protocol, open) in state.connections.by_protocol() {
        let protocol = crate::metrics::Protocol { protocol: protocol.to_owned() };
        metrics.connections.get_or_create(&protocol).set(open as i64);
    }
    let (active, queued) = state.runtime.turn_counts().await;
    metrics.active_turns.set(active as i64);
    metrics.queued_turns.set(queued as i64);
    metrics.loaded_sessions.set(state.runtime.loaded_sessions().await as i64);
    // The store and the bus are each checked with a round trip, side by side; one that
    // hangs must not take the whole scrape with it (a second at most).
    let bus = state.runtime.bus();
    // A read of a stream nobody writes.
    let bus_check = async { bus.newest("metrics-probe").await.is_ok() };
    let ((store_up, store_ping), (bus_answered, bus_ping)) =
        tokio::join!(timed(state.runtime.store_ready()), timed(bus_check));
    metrics.store_ping.set(store_ping);
    metrics.store_up.set(i64::from(store_up));
    metrics.bus_ping.set(bus_ping);
    metrics.bus_up.set(i64::from(bus.healthy() && bus_answered));
    for server in state.mcp.statuses() {
        let up = i64::from(server.state == Phase::Running);
        metrics
            .mcp_server_up
            .get_or_create(&crate::metrics::Server { server: server.name })
            .set(up);
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], metrics.render()).into_response())
}
