//! `parley chat`: the conversation from a terminal, as a client of a running server over
//! its REST API and a session's SSE stream. Answers stream as they are written, tool calls
//! show as they run, approvals are asked at the prompt, Ctrl-C stops the running turn, and
//! a dropped connection is followed again from the last event seen. Like every other
//! client it only submits and watches: the turn runs on the server and goes on without it.

mod api;
mod chat;
mod feed;
mod render;

use std::io::{BufRead, IsTerminal};
use std::time::Instant;

use tokio::sync::mpsc;

pub use api::ClientError;

/// What `parley chat` was asked to do.
pub struct ChatOptions {
    /// The server, e.g. `http://127.0.0.1:8787`.
    pub url: String,
    /// The bearer token (none for a server with `auth.mode = "none"`).
    pub token: Option<String>,
    /// The session to continue (or to start under this id); a new one when absent.
    pub session: Option<String>,
    /// The model to answer with (the server's default when absent).
    pub model: Option<String>,
}

/// Runs the conversation until the person leaves.
pub async fn run(options: ChatOptions) -> Result<(), ClientError> {
    let api = api::Api::new(&options.url, options.token)?;
    api.status().await?;
    let id = match options.session {
        Some(id) if crate::runtime::valid_session_id(&id) => id,
        Some(id) => {
            return Err(ClientError::Other(format!(
                "a session id is 1-128 characters of A-Z a-z 0-9 . _ -, not {:?}",
                render::shown(&id)
            )));
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let interactive = std::io::stdin().is_terminal();
    let screen = render::Screen::new(Box::new(std::io::stdout()), color, interactive);
    chat::Chat::new(api, id, options.model, screen).run(stdin_lines(), interrupts()).await
}

/// A line typed on standard input and when it was read.
pub(crate) struct Line {
    pub text: String,
    pub read_at: Instant,
}

/// The lines of standard input; the channel closes at its end. A line ending in `\` goes
/// on with the next one; bytes that are not UTF-8 are replaced, not taken for the end.
/// Read on a thread of its own, which a blocking read may keep past the end of the
/// conversation: it dies with the process.
fn stdin_lines() -> mpsc::UnboundedReceiver<Line> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut pending = String::new();
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            match input.read_until(b'\n', &mut bytes) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&bytes);
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(start) = line.strip_suffix('\\') {
                pending.push_str(start);
                pending.push('\n');
                continue;
            }
            pending.push_str(line);
            let text = std::mem::take(&mut pending);
            if tx.send(Line { text, read_at: Instant::now() }).is_err() {
                return;
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(Line { text: pending, read_at: Instant::now() });
        }
    });
    rx
}

/// Ctrl-C presses. Once this runs, Ctrl-C no longer ends the process by itself.
fn interrupts() -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    rx
}
