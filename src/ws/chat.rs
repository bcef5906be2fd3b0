//! `GET /ws/chat`: the Construct / ZeroClaw-compatible streaming chat. One session at a
//! time per socket (a `connect` frame switches), every event of it forwarded with its
//! `seq`, `resume {last_seq}` replays what was missed. A socket that never sends a frame
//! is a listen-only watcher.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::{
    CLOSE_GOING_AWAY, CLOSE_POLICY, Coalescing, admit, approval_frame, close, close_after_error,
    error_frame, event_frame, parse_frame, resync_frame, runtime_error_frame, text,
};
use crate::auth::Caller;
use crate::http::extract::Query;
use crate::http::{ApiError, AppState};
use crate::runtime::{
    Decision, EventKind, NewTurn, RuntimeError, SessionRef, Target, Watch, WatchItem, Watching,
};

/// Query of the upgrade request.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChatQuery {
    session_id: Option<String>,
    name: Option<String>,
    /// Resume right away after this `seq` (the same as a first `resume` frame, without the
    /// race between that frame and the first live events).
    last_seq: Option<u64>,
}

/// Frames a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ClientFrame {
    Connect {
        session_id: Option<String>,
        device_name: Option<String>,
    },
    Message {
        #[serde(default)]
        content: Option<String>,
        #[serde(default)]
        page_context: Option<String>,
        /// The model to answer with (default: the configured default).
        #[serde(default)]
        model: Option<String>,
        /// The message whose turn this one follows (an edit or a regenerated answer,
        /// starting a branch); absent: the session's newest turn.
        #[serde(default)]
        parent: Option<i64>,
    },
    Cancel {
        turn_id: Option<String>,
    },
    Resume {
        last_seq: u64,
    },
    ApprovalResponse {
        request_id: String,
        decision: String,
    },
    Ping,
}

pub(super) const FRAME_TYPES: [&str; 6] =
    ["connect", "message", "cancel", "resume", "approval_response", "ping"];

#[utoipa::path(get, path = "/ws/chat", tag = "live", params(ChatQuery), responses((status = 101, description = "The Construct / ZeroClaw-compatible WebSocket (sub-protocols parley.v1, construct.v1, zeroclaw.v1)")))]
pub(crate) async fn ws_chat(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ChatQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (ws, counted) = admit(&state, &caller, &headers, query.session_id.as_deref(), ws).await?;
    // Captured here: the upgrade callback runs in a task of its own.
    let context = crate::http::RequestContext::current();
    Ok(ws.on_upgrade(move |socket| {
        context.run(async move {
            serve(socket, state, caller, query).await;
            drop(counted);
        })
    }))
}

/// One connection's state.
struct Connection {
    state: AppState,
    caller: Caller,
    /// The session followed, and its events; `None` after it was deleted, until the next
    /// message starts a new one.
    followed: Option<(SessionRef, Watch)>,
    /// The seqs this socket has already been sent by the current watch, so a `resume`
    /// replays what the client missed without repeating what it has.
    sent: Option<(u64, u64)>,
    /// After a `resume`: the range not to send again.
    skip: Option<(u64, u64)>,
    coalescing: Coalescing,
}

async fn serve(mut socket: WebSocket, state: AppState, caller: Caller, query: ChatQuery) {
    let opening = Opening {
        id: query.session_id.as_deref(),
        name: query.name.as_deref(),
        after: query.last_seq,
        fresh: false,
    };
    // Boxed, like the handling of each message below: an idle connection's task then
    // holds only the loop's own state, not the largest of the futures it may await.
    let opened = Box::pin(open(&mut socket, &state, &caller, opening)).await;
    let Some((session, watch)) = opened else {
        return;
    };
    let mut conn = Connection {
        state,
        caller,
        followed: Some((session, watch)),
        sent: None,
        skip: None,
        coalescing: Coalescing::default(),
    };
    let ping_every = Duration::try_from_secs_f64(conn.state.config.stream.ping_interval_secs)
        .unwrap_or(Duration::from_secs(30))
        .max(Duration::from_millis(10));
    let mut pings = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    let shutdown = conn.state.shutdown.clone();
    let revoked = conn.state.auth.revoked(conn.caller.token_id.clone());
    tokio::pin!(revoked);
    loop {
        tokio::select! {
            received = socket.recv() => {
                last_heard = Instant::now();
                match received {
                    None | Some(Ok(Message::Close(_))) => break,
                    Some(Err(err)) => {
                        close_after_error(&mut socket, err).await;
                        break;
                    }
                    Some(Ok(Message::Text(frame))) => {
                        if Box::pin(conn.handle(&mut socket, &frame)).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let frame = error_frame("INVALID_JSON", "binary frames are not supported; send JSON text");
                        if socket.send(frame).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
            item = next_item(&mut conn.followed) => {
                if conn.forward(&mut socket, item).await.is_err() {
                    break;
                }
            }
            _ = pings.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    close(&mut socket, CLOSE_POLICY, "no answer to pings").await;
                    break;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            () = shutdown.cancelled() => {
                close(&mut socket, CLOSE_GOING_AWAY, "server shutting down").await;
                break;
            }
            () = &mut revoked => {
                close(&mut socket, CLOSE_POLICY, "token revoked").await;
                break;
            }
        }
    }
}

/// Which session a socket opens, and from where.
#[derive(Default, Clone, Copy)]
struct Opening<'a> {
    /// The session id; a new session when `None`.
    id: Option<&'a str>,
    name: Option<&'a str>,
    /// Replay the events after this `seq` (`None`: from now on).
    after: Option<u64>,
    /// The session was just created for this socket (by its first message).
    fresh: bool,
}

/// Opens (or creates) the session, sends `session_start` and the pending approvals, and
/// starts watching it; `None` if the socket is gone or the session cannot be opened.
async fn open(
    socket: &mut WebSocket,
    state: &AppState,
    caller: &Caller,
    opening: Opening<'_>,
) -> Option<(SessionRef, Watch)> {
    let Opening { id, name, after, fresh } = opening;
    let opened = state.runtime.watch(&caller.user, id, name, after, true).await;
    let Watching { session, stored, created, watch, missed } = match opened {
        Ok(opened) => opened,
        Err(err) => {
            let _ = socket.send(runtime_error_frame(&err)).await;
            return None;
        }
    };
    let start = text(json!({
        "type": "session_start",
        "session_id": session.id,
        "name": stored.name,
        "resumed": !created && !fresh,
        "message_count": stored.message_count,
        "last_seq": watch.last_seq(),
    }));
    socket.send(start).await.ok()?;
    for approval in &missed {
        socket.send(approval_frame(approval)).await.ok()?;
    }
    Some((session, watch))
}

/// Most frames written before one flush: under load a session's chunks pile up between
/// wake-ups and then share one system call.
const BATCH: usize = 64;

/// The next event of the followed session; never, while none is followed.
async fn next_item(followed: &mut Option<(SessionRef, Watch)>) -> WatchItem {
    match followed {
        Some((_, watch)) => watch.next().await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// Sends `item` and whatever else of the session is ready now, with one flush. `Err`
    /// when the socket is gone. After `session_deleted` the socket follows no session.
    async fn forward(&mut self, socket: &mut WebSocket, item: WatchItem) -> Result<(), ()> {
        let mut next = Some(item);
        let mut written = 0;
        let mut deleted = false;
        let mut waited = false;
        while let Some(item) = next.take() {
            let frame = match item {
                WatchItem::Event(event) => {
                    deleted = matches!(event.kind, EventKind::SessionDeleted);
                    if self.skip.is_some_and(|(first, last)| (first..=last).contains(&event.seq)) {
                        None
                    } else {
                        let first = self.sent.map_or(event.seq, |(first, _)| first);
                        self.sent = Some((first, event.seq));
                        Some(event_frame(&event))
                    }
                }
                WatchItem::Resync { last_seq } => {
                    let id = self.followed.as_ref().map_or("", |(session, _)| &session.id);
                    Some(resync_frame(id, last_seq))
                }
                WatchItem::Closed => {
                    let _ = socket.flush().await;
                    return Err(());
                }
            };
            if let Some(frame) = frame {
                socket.feed(frame).await.map_err(drop)?;
                written += 1;
            }
            if deleted {
                self.detach();
            } else if written < BATCH {
                // The turn streaming into this log may be among the tasks already woken.
                let ready = || self.followed.as_mut().and_then(|(_, watch)| watch.try_next());
                next = self.coalescing.next(written, &mut waited, ready).await;
            }
        }
        socket.flush().await.map_err(drop)
    }

    /// Stops following the session (it was deleted), releasing it.
    fn detach(&mut self) {
        self.followed = None;
        self.sent = None;
        self.skip = None;
    }

    /// Follows `session` from `watch` on.
    fn follow(&mut self, session: SessionRef, watch: Watch) {
        self.followed = Some((session, watch));
        self.sent = None;
        self.skip = None;
    }

    /// The followed session; after a deletion, a new one (announced with `session_start`),
    /// as if the socket had just connected. `None` if the socket is gone or the session
    /// cannot be opened (the client was told).
    async fn session(&mut self, socket: &mut WebSocket) -> Option<SessionRef> {
        if self.followed.is_none() {
            let (session, watch) =
                open(socket, &self.state, &self.caller, Opening::default()).await?;
            self.follow(session, watch);
        }
        self.followed.as_ref().map(|(session, _)| session.clone())
    }

    /// With no session followed (the last one was deleted), a message starts a new one,
    /// as if the socket had just connected; the session exists only once the message is
    /// accepted, and the socket follows it from just before the message.
    async fn start_fresh(
        &mut self,
        socket: &mut WebSocket,
        turn: NewTurn<'_>,
    ) -> Result<(), axum::Error> {
        let runtime = self.state.runtime.clone();
        let submission = match runtime.submit(&self.caller.user, Target::New, turn).await {
            Ok(submission) => submission,
            Err(err) => return socket.send(runtime_error_frame(&err)).await,
        };
        let opening = Opening {
            id: Some(&submission.session.id),
            after: Some(submission.user_seq.saturating_sub(1)),
            fresh: true,
            ..Opening::default()
        };
        if let Some((session, watch)) = open(socket, &self.state, &self.caller, opening).await {
            self.follow(session, watch);
        }
        Ok(())
    }

    /// Handles one client frame; `Err` when the socket is gone.
    async fn handle(&mut self, socket: &mut WebSocket, frame: &str) -> Result<(), axum::Error> {
        let frame: ClientFrame = match parse_frame(frame, &FRAME_TYPES) {
            Ok(frame) => frame,
            Err(error) => return socket.send(error).await,
        };
        let runtime = self.state.runtime.clone();
        let user = &self.caller.user.clone();
        let reply = match frame {
            ClientFrame::Ping => Some(text(json!({"type": "pong"}))),
            ClientFrame::Connect { session_id, device_name } => {
                let current = self.followed.as_ref().map(|(session, _)| session.id.clone());
                if session_id.is_some() && session_id != current {
                    let id = session_id.as_deref();
                    if let Err(err) = super::check_session_id(id) {
                        return socket.send(error_frame(err.code(), &err.to_string())).await;
                    }
                    let opening = Opening { id, ..Opening::default() };
                    let Some((session, watch)) =
                        open(socket, &self.state, &self.caller, opening).await
                    else {
                        return Ok(());
                    };
                    self.follow(session, watch);
                }
                let Some(session) = self.session(socket).await else { return Ok(()) };
                Some(text(json!({
                    "type": "connected",
                    "session_id": session.id,
                    "device_name": device_name,
                })))
            }
            ClientFrame::Message { content, page_context, model, parent } => {
                // A new turn, whose pace is its own.
                self.coalescing = Coalescing::default();
                let content = content.unwrap_or_default();
                let request_id = crate::request_id::current();
                let turn = NewTurn {
                    content: &content,
                    page: page_context.as_deref(),
                    wait: false,
                    request_id: request_id.as_ref(),
                    context: &[],
                    model: model.as_deref(),
                    parent,
                };
                let followed = self.followed.as_ref().map(|(session, _)| session.id.clone());
                let submitted = match &followed {
                    // The followed session only: one deleted meanwhile is not brought back.
                    Some(id) => match runtime.submit(user, Target::Existing(id), turn).await {
                        Err(RuntimeError::NotFound) => {
                            // Deleted meanwhile: pass on what its log still holds (its
                            // `session_deleted`) before starting anew.
                            while let Some(item) =
                                self.followed.as_mut().and_then(|(_, watch)| watch.try_next())
                            {
                                if self.forward(socket, item).await.is_err() {
                                    return Ok(());
                                }
                            }
                            self.detach();
                            None
                        }
                        other => Some(other),
                    },
                    None => None,
                };
                match submitted {
                    Some(result) => result.err().map(|err| runtime_error_frame(&err)),
                    None => return self.start_fresh(socket, turn).await,
                }
            }
            ClientFrame::Cancel { turn_id } => {
                let current = self.followed.as_ref().map(|(session, _)| session.id.as_str());
                let found = match (turn_id, current) {
                    (Some(turn_id), _) => runtime.cancel_turn(user, &turn_id).await,
                    (None, Some(id)) => {
                        matches!(runtime.abort_session(user, id).await, Ok(Some(_)))
                    }
                    (None, None) => false,
                };
                (!found).then(|| error_frame("NOT_FOUND", "no such running turn"))
            }
            ClientFrame::Resume { last_seq } => {
                let Some(id) = self.followed.as_ref().map(|(session, _)| session.id.clone()) else {
                    return socket.send(error_frame("NOT_FOUND", "no session to resume")).await;
                };
                match runtime.watch(user, Some(&id), None, Some(last_seq), false).await {
                    Ok(Watching { session, watch, missed, .. }) => {
                        let skip = self.sent.take().filter(|(_, last)| *last > last_seq);
                        self.follow(session, watch);
                        self.skip = skip;
                        for approval in &missed {
                            socket.send(approval_frame(approval)).await?;
                        }
                        None
                    }
                    Err(err) => Some(runtime_error_frame(&err)),
                }
            }
            ClientFrame::ApprovalResponse { request_id, decision } => {
                match Decision::parse(&decision) {
                    None => Some(error_frame(
                        "INVALID_JSON",
                        "decision must be approve, deny or always",
                    )),
                    Some(decision) => match runtime.decide(user, &request_id, decision).await {
                        Ok(()) => {
                            let detail = format!("{request_id} {}", decision.as_str());
                            let auth = &self.state.auth;
                            auth.audit("approval_decided", Some(user), None, Some(&detail)).await;
                            None
                        }
                        Err(err) => Some(runtime_error_frame(&err)),
                    },
                }
            }
        };
        match reply {
            Some(frame) => socket.send(frame).await,
            None => Ok(()),
        }
    }
}
