//! Server-Sent Events: `GET /api/sessions/{id}/events` (a session's events) and
//! `GET /api/events` (the caller's lifecycle feed, no content). Every event carries
//! `id: <seq>`; a client resumes with `Last-Event-ID` or `?after=`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, HeaderName, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;

use crate::auth::Caller;
use crate::http::extract::{Path, Query};
use crate::http::{ApiError, AppState};
use crate::runtime::{ApprovalInfo, EventKind, Watch, WatchItem, resync_frame};

/// The SSE routes in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(session_events, global_events))]
pub(crate) struct SseApi;

/// Query of an SSE request.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    after: Option<u64>,
}

/// Where to resume: `Last-Event-ID` wins over `?after=`.
fn resume_point(headers: &HeaderMap, query: &EventsQuery) -> Result<Option<u64>, ApiError> {
    match headers.get("last-event-id") {
        Some(value) => value.to_str().ok().and_then(|v| v.trim().parse().ok()).map(Some).ok_or(
            ApiError::BadRequest {
                code: "INVALID_QUERY",
                message: "Last-Event-ID must be a number".into(),
            },
        ),
        None => Ok(query.after),
    }
}

/// The events of one of the caller's sessions.
#[utoipa::path(get, path = "/api/sessions/{id}/events", tag = "live", params(("id" = String, Path), EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq")), responses((status = 200, description = "The session's events as SSE (`id:` is the seq)", content_type = "text/event-stream")))]
pub(crate) async fn session_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after = resume_point(&headers, &query)?;
    let watching = state.runtime.watch(&caller.user, Some(&id), None, after, false).await?;
    respond(&state, &caller, Some(watching.session.id), watching.watch, watching.missed).await
}

/// The caller's lifecycle feed.
#[utoipa::path(get, path = "/api/events", tag = "live", params(EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this id")), responses((status = 200, description = "The caller's lifecycle feed as SSE", content_type = "text/event-stream")))]
pub(crate) async fn global_events(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after = resume_point(&headers, &query)?;
    let watch = state.runtime.watch_feed(&caller.user, after).await;
    respond(&state, &caller, None, watch, Vec::new()).await
}

/// Streams `watch` as SSE. For a session (`session_id`), the stream ends after a
/// `session_deleted` event (sent with that event name); the lifecycle feed goes on.
async fn respond(
    state: &AppState,
    caller: &Caller,
    session_id: Option<String>,
    watch: Watch,
    missed: Vec<ApprovalInfo>,
) -> Result<Response, ApiError> {
    let counted = state.connections.open(&caller.user, "sse").await?;
    let approvals = stream::iter(
        missed.into_iter().map(|approval| SseEvent::default().data(approval.frame().to_string())),
    );
    let events = stream::unfold(
        (watch, session_id, false, counted),
        |(mut watch, session_id, ended, counted)| async move {
            if ended {
                return None;
            }
            let (event, ended) = match watch.next().await {
                WatchItem::Event(event) => {
                    let data = String::from_utf8_lossy(&event.json).into_owned();
                    let sse = SseEvent::default().id(event.seq.to_string()).data(data);
                    match event.kind {
                        EventKind::SessionDeleted if session_id.is_some() => {
                            (sse.event("session_deleted"), true)
                        }
                        _ => (sse, false),
                    }
                }
                WatchItem::Resync { last_seq } => {
                    let id = session_id.as_deref().unwrap_or_default();
                    let data = resync_frame(id, last_seq).to_string();
                    (SseEvent::default().id(last_seq.to_string()).data(data), false)
                }
                WatchItem::Closed => return None,
            };
            Some((event, (watch, session_id, ended, counted)))
        },
    );
    Ok(live(state, caller, approvals.chain(events)))
}

/// An SSE response of `events` (a session's, the feed's, or a protocol adapter's own): it
/// ends with the server or the caller's token, keeps proxies from buffering, and sends
/// keep-alive comments.
pub(crate) fn live<S>(state: &AppState, caller: &Caller, events: S) -> Response
where
    S: Stream<Item = SseEvent> + Send + 'static,
{
    let end = futures_util::future::select(
        Box::pin(state.shutdown.clone().cancelled_owned()),
        Box::pin(state.auth.revoked(caller.token_id.clone())),
    );
    let events = events.map(Ok::<_, Infallible>).take_until(end);
    let keep_alive = Duration::try_from_secs_f64(state.config.stream.sse_keepalive_secs)
        .unwrap_or(Duration::from_secs(15));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    response
}
