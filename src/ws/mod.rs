//! WebSocket adapters: `/ws/chat` (Construct / ZeroClaw protocol) and `/api/chat/stream`
//! (Oxios). They parse frames, submit and cancel through the runtime, and forward the
//! events of the sessions they watch; a turn never depends on its socket.

mod chat;
mod stream;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::HeaderMap;

use crate::auth::Caller;
use crate::config::StreamConfig;
use crate::http::{ApiError, AppState, ConnectionCount};
use crate::runtime::{ApprovalInfo, Event, RuntimeError};
use crate::store::StoreError;

pub(crate) use chat::ws_chat;
pub(crate) use stream::chat_stream;

/// The WebSocket routes in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(chat::ws_chat, stream::chat_stream))]
pub(crate) struct WsApi;

/// Whether a socket's writer, with one frame written and nothing else ready, lets the
/// tasks already woken run before it flushes. While a session streams faster than the
/// socket writes, waiting makes the chunks the turn adds meanwhile share the flush (one
/// system call for many). At a model's pace nothing comes meanwhile, and the wait only
/// holds the frame behind every task woken on its thread: a writer whose last few waits
/// brought nothing stops waiting, until a wake-up finds frames piled up again or the client
/// sends a message (a new turn, whose pace is its own).
#[derive(Default)]
struct Coalescing {
    /// Waits in a row that brought nothing.
    empty_waits: u8,
}

/// Empty waits in a row after which a writer stops waiting. One is too few: a fast stream's
/// waits now and then bring nothing, and the writer would stop for good (it wakes on every
/// chunk, so frames rarely pile up enough to turn waiting back on).
const EMPTY_WAITS: u8 = 4;

impl Coalescing {
    /// The next frame of a flush of which `written` frames are written: what `ready` gives
    /// now, or, once per flush (`waited`) and while waiting pays, what it gives after the
    /// tasks already woken ran (under load, the chunks they add share the flush).
    async fn next<T>(
        &mut self,
        written: usize,
        waited: &mut bool,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let next = ready();
        if written == 1 {
            self.found(next.is_some());
        }
        if next.is_some() || *waited || !self.should_wait() {
            return next;
        }
        *waited = true;
        tokio::task::yield_now().await;
        let next = ready();
        self.waited(next.is_some());
        next
    }

    /// A wake-up found more frames ready right after its first one (or none).
    fn found(&mut self, more: bool) {
        if more {
            self.empty_waits = 0;
        }
    }

    /// Whether to wait now; [`Coalescing::waited`] says what the wait brought.
    fn should_wait(&self) -> bool {
        self.empty_waits < EMPTY_WAITS
    }

    fn waited(&mut self, brought: bool) {
        self.empty_waits = if brought { 0 } else { self.empty_waits.saturating_add(1) };
    }
}

/// Sub-protocols Parley speaks; the first one the client offers is echoed.
const PROTOCOLS: [&str; 3] = ["parley.v1", "construct.v1", "zeroclaw.v1"];

/// Close code: the message was too big (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: protocol error.
const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: the server is going away.
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: the peer stopped answering pings, or its token was revoked.
const CLOSE_POLICY: u16 = 1008;

/// The upgrade with Parley's limits: sub-protocols, message size, buffers sized for chat
/// frames rather than the library's 128 KiB defaults. The read buffer is every idle
/// connection's largest allocation, and what clients send is short: 1 KiB at a time (a
/// longer frame takes a few more reads). Frames fed without a flush collect up to 16 KiB
/// before they are written (every `send` flushes).
fn configure(ws: WebSocketUpgrade, config: &StreamConfig) -> WebSocketUpgrade {
    ws.protocols(PROTOCOLS)
        .max_message_size(config.max_frame_bytes)
        .max_frame_size(config.max_frame_bytes)
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
}

/// Parses a client frame: `INVALID_JSON` for text that is not JSON or a frame with the
/// wrong fields, `UNKNOWN_MESSAGE_TYPE` for a `type` not in `types`.
fn parse_frame<T: DeserializeOwned>(frame: &str, types: &[&str]) -> Result<T, Message> {
    let value: Value = serde_json::from_str(frame)
        .map_err(|err| error_frame("INVALID_JSON", &format!("invalid JSON: {err}")))?;
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
    if !types.contains(&kind.as_str()) {
        let message =
            format!("unknown message type {kind:?}; expected one of {}", types.join(", "));
        return Err(error_frame("UNKNOWN_MESSAGE_TYPE", &message));
    }
    serde_json::from_value(value)
        .map_err(|err| error_frame("INVALID_JSON", &format!("invalid {kind} frame: {err}")))
}

/// What a client's text frame parses to in each protocol (`/ws/chat`, then
/// `/api/chat/stream`): the frame, or the `error` frame sent back. For the fuzz targets.
pub(crate) fn parse_client_frames(frame: &str) -> [Result<String, Message>; 2] {
    [
        parse_frame::<chat::ClientFrame>(frame, &chat::FRAME_TYPES).map(|f| format!("{f:?}")),
        parse_frame::<stream::ClientFrame>(frame, &stream::FRAME_TYPES).map(|f| format!("{f:?}")),
    ]
}

/// An `error` frame with a stable code and the id of the connection's request.
fn error_frame(code: &str, message: &str) -> Message {
    let mut frame = json!({"type": "error", "code": code, "message": message});
    if let Some(id) = crate::request_id::current() {
        frame["request_id"] = json!(&*id);
    }
    text(frame)
}

/// The wire code of a runtime refusal.
fn runtime_code(err: &RuntimeError) -> &'static str {
    match err {
        RuntimeError::EmptyContent => "EMPTY_CONTENT",
        RuntimeError::ContentTooLarge { .. } => "MESSAGE_TOO_LARGE",
        RuntimeError::QueueFull { .. } => "SESSION_QUEUE_FULL",
        RuntimeError::RateLimited { .. } => "RATE_LIMITED",
        RuntimeError::NotFound | RuntimeError::ApprovalNotFound => "NOT_FOUND",
        RuntimeError::InvalidSessionId => "INVALID_SESSION_ID",
        RuntimeError::UnknownMessage { .. } => "UNKNOWN_MESSAGE",
        RuntimeError::SessionBusy => "SESSION_BUSY",
        RuntimeError::UnknownModel(_) => "UNKNOWN_MODEL",
        RuntimeError::BudgetExceeded { .. } => "BUDGET_EXCEEDED",
        RuntimeError::Store(StoreError::Unavailable(_)) => "STORE_UNAVAILABLE",
        RuntimeError::ShuttingDown | RuntimeError::Store(_) => "AGENT_ERROR",
    }
}

/// An error frame for a runtime refusal; storage details are logged, not sent.
fn runtime_error_frame(err: &RuntimeError) -> Message {
    let message = match err {
        RuntimeError::Store(StoreError::Unavailable(inner)) => {
            tracing::warn!(%inner, "the store is unavailable");
            "the store is unavailable; try again shortly".to_owned()
        }
        RuntimeError::Store(inner) => {
            tracing::error!(%inner, "storage failed on a websocket request");
            "internal error; see the server log".to_owned()
        }
        other => other.to_string(),
    };
    error_frame(runtime_code(err), &message)
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

/// An event's shared JSON bytes as a text frame (serialized once for every watcher).
fn event_frame(event: &Event) -> Message {
    match Utf8Bytes::try_from(event.json.clone()) {
        Ok(text) => Message::Text(text),
        // serde_json only writes UTF-8; kept total rather than panicking.
        Err(_) => Message::Text(String::from_utf8_lossy(&event.json).into_owned().into()),
    }
}

/// A pending approval re-sent to a watcher that missed its event.
fn approval_frame(approval: &ApprovalInfo) -> Message {
    text(approval.frame())
}

/// A `resync` frame: events were lost to this watcher; reload the history.
fn resync_frame(session_id: &str, last_seq: u64) -> Message {
    text(crate::runtime::resync_frame(session_id, last_seq))
}

/// Closes the socket with `code`, ignoring a peer that is already gone.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Closes the socket after a read error with the code its type calls for: 1009 for a
/// message over the limit, 1002 for a protocol violation.
async fn close_after_error(socket: &mut WebSocket, err: axum::Error) {
    let Ok(err) = err.into_inner().downcast::<tungstenite::Error>() else {
        return;
    };
    match *err {
        tungstenite::Error::Capacity(_) => close(socket, CLOSE_TOO_BIG, "message too large").await,
        tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_) => {
            close(socket, CLOSE_PROTOCOL, "protocol error").await;
        }
        _ => {}
    }
}

/// Everything checked before an upgrade: the session id, the `Origin`, the connection
/// limits. Returns the configured upgrade and the connection's place in the count.
async fn admit(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    session_id: Option<&str>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<(WebSocketUpgrade, ConnectionCount), ApiError> {
    check_session_id(session_id)?;
    state.auth.check_origin(headers)?;
    let ws = configure(ws?, &state.config.stream);
    let counted = state.connections.open(&caller.user, "ws").await?;
    Ok((ws, counted))
}

/// Rejects a bad session id before upgrading.
fn check_session_id(id: Option<&str>) -> Result<(), ApiError> {
    match id {
        Some(id) if !crate::runtime::valid_session_id(id) => {
            Err(RuntimeError::InvalidSessionId.into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::Coalescing;

    #[test]
    fn a_writer_stops_waiting_at_a_models_pace_and_waits_again_under_load() {
        let mut coalescing = Coalescing::default();
        // A fast stream: each wait brings the chunks added meanwhile, and now and then one
        // brings nothing without ending the waits.
        for brought in [true, true, false, true, false, false, true] {
            assert!(coalescing.should_wait());
            coalescing.waited(brought);
        }
        // At a model's pace every wait is empty: after a few the writer flushes at once.
        for _ in 0..4 {
            coalescing.found(false);
            assert!(coalescing.should_wait());
            coalescing.waited(false);
        }
        coalescing.found(false);
        assert!(!coalescing.should_wait());
        // Frames piled up between wake-ups: the stream outruns the socket again.
        coalescing.found(true);
        assert!(coalescing.should_wait());
    }
}
