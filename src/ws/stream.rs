//! `GET /api/chat/stream`: the Oxios-compatible WebSocket. Messages may target several
//! sessions and be in flight at once; each session's events are forwarded as `token`,
//! `done` and `error` frames tagged with their `turn_id`, so every answer is matched to its
//! own message. `resume {last_seq}` replays what the current session's watcher missed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    CLOSE_GOING_AWAY, CLOSE_POLICY, Coalescing, admit, close, close_after_error, error_frame,
    parse_frame, resync_frame, runtime_error_frame, text,
};
use crate::auth::Caller;
use crate::http::extract::Query;
use crate::http::{ApiError, AppState};
use crate::runtime::{Event, EventKind, NewTurn, RuntimeError, Target, Watch, WatchItem};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamQuery {
    session_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ClientFrame {
    Message {
        #[serde(default, alias = "message")]
        content: Option<String>,
        session_id: Option<String>,
        project_id: Option<String>,
        /// A client-chosen id echoed in the `accepted` frame.
        id: Option<Value>,
        /// The model to answer with (default: the configured default).
        #[serde(default)]
        model: Option<String>,
    },
    Resume {
        last_seq: u64,
        session_id: Option<String>,
    },
    Cancel {
        turn_id: Option<String>,
    },
    Ping,
}

pub(super) const FRAME_TYPES: [&str; 4] = ["message", "resume", "cancel", "ping"];

/// Frames waiting for the socket, from every forwarding task.
const OUTBOX: usize = 256;
/// Most frames written before one flush.
const BATCH: usize = 64;

#[utoipa::path(get, path = "/api/chat/stream", tag = "live", params(StreamQuery), responses((status = 101, description = "The Oxios-compatible streaming WebSocket")))]
pub(crate) async fn chat_stream(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (ws, counted) = admit(&state, &caller, &headers, query.session_id.as_deref(), ws).await?;
    // Captured here: the upgrade callback runs in a task of its own.
    let context = crate::http::RequestContext::current();
    Ok(ws.on_upgrade(move |socket| {
        context.run(async move {
            serve(socket, state, caller, query.session_id).await;
            drop(counted);
        })
    }))
}

struct Connection {
    state: AppState,
    caller: Caller,
    /// The session of messages that name none.
    current: Option<String>,
    /// Whether `current` is known to exist (it was used or resumed): then a message must
    /// not recreate it after a deletion. The `?session_id=` of the upgrade is created by
    /// the first message if missing.
    current_exists: bool,
    /// A forwarding task per watched session id, with the key of the session it follows
    /// (a deleted session's id may be taken again by a new one).
    watching: HashMap<String, (i64, CancellationToken)>,
    outbox: mpsc::Sender<Outgoing>,
    closed: CancellationToken,
    /// Whether the writer waits for woken tasks before it flushes.
    coalescing: Coalescing,
}

/// What the forwarding tasks hand the socket's loop.
enum Outgoing {
    Frame(Message),
    /// The session (id, key) was deleted (its `session_deleted` frame went before): stop
    /// following it; a message that names no session then starts a new one.
    Detached(String, i64),
}

async fn serve(mut socket: WebSocket, state: AppState, caller: Caller, session_id: Option<String>) {
    let (outbox, mut outgoing) = mpsc::channel(OUTBOX);
    let closed = state.shutdown.child_token();
    let mut conn = Connection {
        state: state.clone(),
        caller,
        current: session_id,
        current_exists: false,
        watching: HashMap::new(),
        outbox,
        closed: closed.clone(),
        coalescing: Coalescing::default(),
    };
    let revoked = state.auth.revoked(conn.caller.token_id.clone());
    tokio::pin!(revoked);
    // Follow the named session if it exists; if not, the first message creates it.
    if let Some(id) = conn.current.clone() {
        match conn.follow(&id, None, None).await {
            Ok(()) => conn.current_exists = true,
            Err(RuntimeError::NotFound) => {}
            Err(err) => {
                let _ = socket.send(runtime_error_frame(&err)).await;
            }
        }
    }
    loop {
        tokio::select! {
            received = socket.recv() => match received {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Err(err)) => {
                    close_after_error(&mut socket, err).await;
                    break;
                }
                Some(Ok(Message::Text(frame))) => {
                    // Boxed: an idle connection's task holds only the loop's own state.
                    if let Some(reply) = Box::pin(conn.handle(&frame)).await
                        && socket.send(reply).await.is_err()
                    {
                        break;
                    }
                }
                Some(Ok(_)) => {}
            },
            Some(item) = outgoing.recv() => {
                if write_ready(&mut socket, item, &mut outgoing, &mut conn).await.is_err() {
                    break;
                }
            }
            () = state.shutdown.cancelled() => {
                close(&mut socket, CLOSE_GOING_AWAY, "server shutting down").await;
                break;
            }
            () = &mut revoked => {
                close(&mut socket, CLOSE_POLICY, "token revoked").await;
                break;
            }
        }
    }
    // Stops the forwarding tasks; the turns themselves run on.
    closed.cancel();
}

/// Writes `item` and whatever else waits in the outbox (up to a batch), with one flush.
async fn write_ready(
    socket: &mut WebSocket,
    item: Outgoing,
    outgoing: &mut mpsc::Receiver<Outgoing>,
    conn: &mut Connection,
) -> Result<(), axum::Error> {
    let mut next = Some(item);
    let mut handled = 0;
    let mut waited = false;
    while let Some(item) = next.take() {
        match item {
            Outgoing::Frame(frame) => socket.feed(frame).await?,
            Outgoing::Detached(id, pk) => conn.detach(&id, pk),
        }
        handled += 1;
        if handled < BATCH {
            next = conn.coalescing.next(handled, &mut waited, || outgoing.try_recv().ok()).await;
        }
    }
    socket.flush().await
}

impl Connection {
    /// Handles one client frame, returning the direct reply if any.
    async fn handle(&mut self, frame: &str) -> Option<Message> {
        let frame: ClientFrame = match parse_frame(frame, &FRAME_TYPES) {
            Ok(frame) => frame,
            Err(error) => return Some(error),
        };
        let runtime = self.state.runtime.clone();
        let user = self.caller.user.clone();
        match frame {
            ClientFrame::Ping => Some(text(json!({"type": "pong"}))),
            ClientFrame::Message { content, session_id, project_id, id, model } => {
                // A new turn, whose pace is its own.
                self.coalescing = Coalescing::default();
                let content = content.unwrap_or_default();
                let request_id = crate::request_id::current();
                let turn = NewTurn {
                    content: &content,
                    page: None,
                    wait: false,
                    request_id: request_id.as_ref(),
                    context: &[],
                    model: model.as_deref(),
                    parent: None,
                };
                // Every check comes before anything is created or followed: a refused message
                // leaves no session and no watcher behind. A named session is created if
                // missing; the socket's current one must still exist (if it was just
                // deleted, the message starts a new session instead of bringing it back).
                let submitted = match (&session_id, &self.current) {
                    (Some(target), _) => runtime.submit(&user, Target::Id(target), turn).await,
                    (None, Some(current)) if !self.current_exists => {
                        runtime.submit(&user, Target::Id(current), turn).await
                    }
                    (None, Some(current)) => {
                        match runtime.submit(&user, Target::Existing(current), turn).await {
                            Err(RuntimeError::NotFound) => {
                                runtime.submit(&user, Target::New, turn).await
                            }
                            other => other,
                        }
                    }
                    (None, None) => runtime.submit(&user, Target::New, turn).await,
                };
                let submission = match submitted {
                    Ok(submission) => submission,
                    Err(err) => return Some(runtime_error_frame(&err)),
                };
                let session_id = submission.session.id.clone();
                // From just before the message: the turn's first token cannot be missed.
                let after = submission.user_seq.saturating_sub(1);
                let pk = Some(submission.session.pk);
                if let Err(err) = self.follow(&session_id, Some(after), pk).await {
                    return Some(runtime_error_frame(&err));
                }
                self.current = Some(session_id.clone());
                self.current_exists = true;
                Some(text(json!({
                    "type": "accepted",
                    "id": id,
                    "turn_id": submission.turn_id,
                    "session_id": session_id,
                    "project_id": project_id,
                })))
            }
            ClientFrame::Resume { last_seq, session_id } => {
                let Some(target) = session_id.or_else(|| self.current.clone()) else {
                    return Some(error_frame("NOT_FOUND", "no session to resume; send session_id"));
                };
                if let Some((_, task)) = self.watching.remove(&target) {
                    task.cancel();
                }
                let resumed = self.follow(&target, Some(last_seq), None).await;
                if resumed.is_ok() {
                    // Messages that name no session go to the one resumed.
                    self.current = Some(target);
                    self.current_exists = true;
                }
                resumed.err().map(|err| runtime_error_frame(&err))
            }
            ClientFrame::Cancel { turn_id } => {
                let found = match (turn_id, &self.current) {
                    (Some(turn_id), _) => runtime.cancel_turn(&user, &turn_id).await,
                    (None, Some(current)) => {
                        matches!(runtime.abort_session(&user, current).await, Ok(Some(_)))
                    }
                    (None, None) => false,
                };
                (!found).then(|| error_frame("NOT_FOUND", "no such running turn"))
            }
        }
    }

    /// Starts forwarding the session's events after `after`; the session must exist. Once
    /// per session: nothing to do if the session with key `known` is followed already.
    async fn follow(
        &mut self,
        id: &str,
        after: Option<u64>,
        known: Option<i64>,
    ) -> Result<(), RuntimeError> {
        if let (Some(pk), Some((followed, _))) = (known, self.watching.get(id))
            && *followed == pk
        {
            return Ok(());
        }
        let watching =
            self.state.runtime.watch(&self.caller.user, Some(id), None, after, false).await?;
        let (session, watch) = (watching.session, watching.watch);
        let stop = self.closed.child_token();
        // A task still following a deleted session of the same id goes on until it has
        // sent that session's `session_deleted`.
        self.watching.insert(session.id.clone(), (session.pk, stop.clone()));
        let outbox = self.outbox.clone();
        tokio::spawn(forward(session.id.clone(), session.pk, watch, outbox, stop));
        Ok(())
    }

    /// Stops following a deleted session (unless its id already names a new one).
    fn detach(&mut self, id: &str, pk: i64) {
        if self.watching.get(id).is_none_or(|(followed, _)| *followed != pk) {
            return;
        }
        if let Some((_, task)) = self.watching.remove(id) {
            task.cancel();
        }
        if self.current.as_deref() == Some(id) {
            self.current = None;
        }
    }
}

/// Forwards one session's events as Oxios frames until stopped or the session is deleted.
async fn forward(
    session_id: String,
    pk: i64,
    mut watch: Watch,
    outbox: mpsc::Sender<Outgoing>,
    stop: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            item = watch.next() => item,
            () = stop.cancelled() => return,
        };
        let (frame, deleted) = match item {
            WatchItem::Event(event) => match oxios_frame(&event) {
                Some(frame) => (frame, matches!(event.kind, EventKind::SessionDeleted)),
                None => continue,
            },
            WatchItem::Resync { last_seq } => (resync_frame(&session_id, last_seq), false),
            WatchItem::Closed => return,
        };
        // A full outbox means a slow socket: waiting here slows only this watcher, whose
        // bus subscription then lags and catches up from the session log.
        if outbox.send(Outgoing::Frame(frame)).await.is_err() {
            return;
        }
        if deleted {
            let _ = outbox.send(Outgoing::Detached(session_id, pk)).await;
            return;
        }
    }
}

/// The Oxios frame of a runtime event, if that protocol has one.
fn oxios_frame(event: &Arc<Event>) -> Option<Message> {
    let common = |mut value: Value| {
        value["session_id"] = json!(event.session_id);
        value["turn_id"] = json!(event.turn_id);
        value["seq"] = json!(event.seq);
        text(value)
    };
    match &event.kind {
        EventKind::Chunk { content } => Some(common(json!({"type": "token", "content": content}))),
        EventKind::Done { full_response, usage, tool_calls, duration_ms, .. } => {
            Some(common(json!({
                "type": "done",
                "reply": full_response,
                "tool_calls": tool_calls,
                "duration_ms": duration_ms,
                "usage": usage,
            })))
        }
        EventKind::Cancelled { partial } => Some(common(json!({
            "type": "done",
            "reply": partial,
            "cancelled": true,
            "tool_calls": [],
        }))),
        EventKind::Error { message, code } => {
            Some(common(json!({"type": "error", "message": message, "code": code})))
        }
        EventKind::SessionDeleted => Some(common(json!({"type": "session_deleted"}))),
        _ => None,
    }
}
