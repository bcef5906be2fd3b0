//! Following a session's events for `parley chat`: its SSE stream, reopened after a
//! dropped connection with `Last-Event-ID` so nothing is missed or shown twice.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::api::{Api, ClientError};
use crate::providers::SseParser;

/// The server sends a keep-alive comment every 15 s (by default); a stream silent for
/// this long is taken for a dead connection, as one cut by a proxy or a network change.
const SILENCE: Duration = Duration::from_secs(90);

/// The first wait before reconnecting, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the feed reports.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A frame of the session (`chunk`, `done`, `approval_request`, `resync`, ...).
    Frame(Value),
    /// The connection dropped; the feed is reconnecting.
    Lost(String),
    /// The feed is following again, from where it was.
    Back,
    /// The feed stopped for good: the session is gone or the token no longer works.
    Ended(ClientError),
}

/// Follows session `id` from after `after` until `stop`, sending what happens to `tx`.
pub(crate) fn follow(
    api: Arc<Api>,
    id: String,
    after: u64,
    tx: mpsc::UnboundedSender<Incoming>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        tokio::select! {
            () = run(&api, &id, after, &tx) => {}
            () = stop.cancelled() => {}
        }
    });
}

async fn run(api: &Api, id: &str, mut last: u64, tx: &mpsc::UnboundedSender<Incoming>) {
    let mut lost = false;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let reason = match api.events(id, last).await {
            Ok(mut response) => {
                if std::mem::take(&mut lost) {
                    let _ = tx.send(Incoming::Back);
                }
                backoff = FIRST_BACKOFF;
                let mut parser = SseParser::default();
                loop {
                    let bytes = match tokio::time::timeout(SILENCE, response.chunk()).await {
                        Ok(Ok(Some(bytes))) => bytes,
                        Ok(Ok(None)) => break "the server closed the stream".to_owned(),
                        Ok(Err(err)) => break format!("the stream broke: {err}"),
                        Err(_) => break "nothing heard for 90 s".to_owned(),
                    };
                    for data in parser.feed(&bytes) {
                        let Ok(frame) = serde_json::from_str::<Value>(&data) else { continue };
                        // A resync names where the log goes on; every other event its own
                        // place in it (approvals re-sent on connect, already seen, are older).
                        if frame["type"] == "resync" {
                            last = frame["last_seq"].as_u64().unwrap_or(last);
                        } else if let Some(seq) = frame["seq"].as_u64() {
                            last = last.max(seq);
                        }
                        let deleted = frame["type"] == "session_deleted";
                        if tx.send(Incoming::Frame(frame)).is_err() || deleted {
                            return;
                        }
                    }
                }
            }
            Err(err) if final_refusal(&err) => {
                let _ = tx.send(Incoming::Ended(err));
                return;
            }
            Err(err) => err.to_string(),
        };
        if !lost {
            lost = true;
            if tx.send(Incoming::Lost(reason)).is_err() {
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether the server refused the stream for good: the token no longer works, or the
/// session is gone. Anything else (a limit, a restarting server behind a proxy, no
/// answer) may pass, so the feed tries again.
fn final_refusal(err: &ClientError) -> bool {
    match err {
        ClientError::Unauthorized { .. } => true,
        ClientError::Api { status, .. } => matches!(status, 400 | 403 | 404 | 410),
        ClientError::Unreachable { .. } | ClientError::Other(_) => false,
    }
}
