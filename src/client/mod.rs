//! `parley chat`: the conversation from a terminal, as a client of a running server over
//! its REST API and a session's SSE stream. Answers stream as they are written, tool calls
//! show as they run, approvals are asked at the prompt, Ctrl-C stops the running turn, and
//! a dropped connection is followed again from the last event seen. Like every other
//! client it only submits and watches: the turn runs on the server and goes on without it.

mod api;
mod feed;
mod render;

use std::collections::{HashSet, VecDeque};
use std::io::IsTerminal;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use api::Api;
pub use api::ClientError;
use feed::Incoming;
use render::{Screen, Style, compact};

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

/// How many earlier messages are shown when a session is continued.
const HISTORY: u32 = 20;

const HELP: &str = "Enter sends; a line ending in \\ goes on on the next line. Ctrl-C stops \
the answer being written; Ctrl-D or /quit leaves (the session stays). /session shows the \
session's id. A message starting with / is sent as // .";

/// Runs the conversation until the person leaves.
pub async fn run(options: ChatOptions) -> Result<(), ClientError> {
    let api = Arc::new(Api::new(&options.url, options.token)?);
    api.status().await?;
    let id = match options.session {
        Some(id) if crate::runtime::valid_session_id(&id) => id,
        Some(id) => {
            return Err(ClientError::Other(format!(
                "a session id is 1-128 characters of A-Z a-z 0-9 . _ -, not {id:?}"
            )));
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let interactive = std::io::stdin().is_terminal();
    let screen = Screen::new(Box::new(std::io::stdout()), color, interactive);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut chat = Chat {
        api,
        model: options.model,
        id,
        screen,
        tx,
        feed: None,
        last_seq: 0,
        ours: HashSet::new(),
        active: HashSet::new(),
        approvals: VecDeque::new(),
        stopping: false,
    };
    chat.open().await?;
    let result = chat.converse(rx).await;
    chat.screen.end_line();
    // The session exists once it is followed (continued, or its first message sent).
    if let Some(feed) = &chat.feed {
        feed.cancel();
        chat.screen.line(
            Style::Dim,
            &format!("session {0} · continue with: parley chat --session {0}", chat.id),
        );
    }
    result
}

/// What one line typed at the prompt means.
enum Input {
    Message(String),
    Quit,
    Help,
    Session,
}

fn parse(line: &str) -> Option<Input> {
    let trimmed = line.trim();
    match trimmed {
        "" => None,
        "/quit" | "/exit" => Some(Input::Quit),
        "/help" | "/?" => Some(Input::Help),
        "/session" => Some(Input::Session),
        _ if trimmed.starts_with("//") => Some(Input::Message(trimmed[1..].to_owned())),
        _ => Some(Input::Message(line.trim_end().to_owned())),
    }
}

/// The conversation's state.
struct Chat {
    api: Arc<Api>,
    model: Option<String>,
    id: String,
    screen: Screen,
    /// Where the feed sends; kept so the feed can be (re)started.
    tx: mpsc::UnboundedSender<Incoming>,
    /// The running feed, once the session exists.
    feed: Option<CancellationToken>,
    /// The newest `seq` shown.
    last_seq: u64,
    /// Turns this terminal submitted (their `user_message` echo is not shown again).
    ours: HashSet<String>,
    /// Turns submitted or seen that have not ended yet.
    active: HashSet<String>,
    /// Approval requests waiting for an answer, the first one asked at the prompt.
    approvals: VecDeque<(String, String, Value)>,
    /// Whether Ctrl-C asked the running turn to stop.
    stopping: bool,
}

impl Chat {
    /// Greets, shows an existing session's last messages, and follows it.
    async fn open(&mut self) -> Result<(), ClientError> {
        let detail = self.api.session(&self.id, HISTORY).await?;
        let what = if detail.is_some() { "continued" } else { "new" };
        self.screen.line(
            Style::Dim,
            &format!("parley chat · {} · session {} ({what}) · /help", self.api.base(), self.id),
        );
        let Some(detail) = detail else { return Ok(()) };
        let messages = detail["messages"].as_array().cloned().unwrap_or_default();
        let running = detail["running_turn"]["turn_id"].as_str().map(str::to_owned);
        // A turn still running is shown from its message on, by replaying its events;
        // everything before is history.
        let cut = running.as_ref().and_then(|turn| {
            messages.iter().position(|m| m["role"] == "user" && m["turn_id"] == turn.as_str())
        });
        let shown = cut.map_or(&messages[..], |cut| &messages[..=cut]);
        let earlier = detail["message_count"].as_u64().unwrap_or(0) as usize;
        if earlier > messages.len() {
            let hidden = earlier - messages.len();
            self.screen.line(Style::Dim, &format!("… {hidden} earlier messages"));
        }
        self.history(shown);
        let after = match cut {
            Some(cut) => messages[cut]["seq"].as_u64().unwrap_or(0),
            None => detail["last_seq"].as_u64().unwrap_or(0),
        };
        if let Some(turn) = running {
            self.active.insert(turn);
        }
        self.follow(after);
        Ok(())
    }

    /// Starts following the session's events after `after`.
    fn follow(&mut self, after: u64) {
        if self.feed.is_none() {
            let stop = CancellationToken::new();
            feed::follow(self.api.clone(), self.id.clone(), after, self.tx.clone(), stop.clone());
            self.feed = Some(stop);
            self.last_seq = after;
        }
    }

    /// Reads lines and events until the person leaves.
    async fn converse(
        &mut self,
        mut events: mpsc::UnboundedReceiver<Incoming>,
    ) -> Result<(), ClientError> {
        let mut lines = stdin_lines();
        let mut interrupts = interrupts();
        let mut input_open = true;
        loop {
            if !input_open && self.active.is_empty() {
                return Ok(());
            }
            self.prompt();
            // Piped input is a script of messages: each waits for the answers before it.
            let reading = input_open && (self.screen.interactive() || self.active.is_empty());
            tokio::select! {
                line = lines.recv(), if reading => match line {
                    Some(line) => {
                        if self.typed(line).await {
                            return Ok(());
                        }
                    }
                    None => {
                        input_open = false;
                        self.input_closed().await;
                    }
                },
                Some(incoming) = events.recv() => {
                    if let Some(end) = self.incoming(incoming).await {
                        return end;
                    }
                }
                Some(()) = interrupts.recv() => {
                    if self.interrupted().await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Shows the pending approval's question, or the prompt when nothing runs, unless it
    /// is the last thing on the screen already.
    fn prompt(&mut self) {
        if self.screen.asking() {
            return;
        }
        if let Some((_, tool, args)) = self.approvals.front() {
            let question = format!(
                "? allow {tool} {}  [y]es / [n]o / [a]lways in this session: ",
                compact(args)
            );
            self.screen.ask(Style::Ask, &question);
        } else if self.active.is_empty() && self.screen.interactive() {
            self.screen.ask(Style::Plain, "› ");
        }
    }

    /// Acts on a typed line; returns whether to leave.
    async fn typed(&mut self, line: String) -> bool {
        self.screen.answered();
        if let Some((request_id, _, _)) = self.approvals.front().cloned() {
            let decision = match line.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => "approve",
                "n" | "no" => "deny",
                "a" | "always" => "always",
                _ => {
                    self.screen.line(Style::Dim, "answer y, n or a");
                    return false;
                }
            };
            self.approvals.pop_front();
            if let Err(err) = self.api.decide(&request_id, decision).await {
                self.screen.line(Style::Error, &format!("the answer was not taken: {err}"));
            }
            return false;
        }
        match parse(&line) {
            None => false,
            Some(Input::Quit) => true,
            Some(Input::Help) => {
                self.screen.line(Style::Dim, HELP);
                false
            }
            Some(Input::Session) => {
                self.screen.line(Style::Dim, &format!("session {}", self.id));
                false
            }
            Some(Input::Message(content)) => {
                self.send(&content).await;
                false
            }
        }
    }

    async fn send(&mut self, content: &str) {
        if !self.screen.interactive() {
            // Piped input is not echoed by a terminal: the transcript shows it.
            self.screen.line(Style::Dim, &format!("› {content}"));
        }
        match self.api.send_message(&self.id, content, self.model.as_deref()).await {
            Ok(turn_id) => {
                self.ours.insert(turn_id.clone());
                self.active.insert(turn_id);
                // A new session exists now: its whole log is this turn.
                self.follow(0);
            }
            Err(err) => self.screen.line(Style::Error, &format!("not sent: {err}")),
        }
    }

    /// Standard input ended (Ctrl-D, or the end of piped input): the answers under way
    /// are still shown; nobody is left to answer an approval, so it is denied.
    async fn input_closed(&mut self) {
        self.screen.end_line();
        while let Some((request_id, tool, _)) = self.approvals.pop_front() {
            self.screen.line(Style::Dim, &format!("input closed: {tool} denied"));
            let _ = self.api.decide(&request_id, "deny").await;
        }
    }

    /// Ctrl-C: stops the running turn, or leaves when nothing runs (or on a second one).
    async fn interrupted(&mut self) -> bool {
        if self.active.is_empty() || self.stopping {
            return true;
        }
        self.stopping = true;
        self.screen.line(Style::Dim, "stopping… (Ctrl-C again leaves)");
        match self.api.abort(&self.id).await {
            Ok(true) => {}
            Ok(false) => self.stopping = false,
            Err(err) => {
                self.stopping = false;
                self.screen.line(Style::Error, &format!("could not stop it: {err}"));
            }
        }
        false
    }

    /// Shows what the feed reports; `Some` ends the conversation.
    async fn incoming(&mut self, incoming: Incoming) -> Option<Result<(), ClientError>> {
        match incoming {
            Incoming::Frame(frame) => return self.frame(frame).await,
            Incoming::Lost(reason) => {
                self.screen.line(Style::Dim, &format!("connection lost ({reason}); reconnecting…"));
            }
            Incoming::Back => self.screen.line(Style::Dim, "reconnected"),
            Incoming::Ended(err) => return Some(Err(err)),
        }
        None
    }

    /// Shows one event of the session.
    async fn frame(&mut self, frame: Value) -> Option<Result<(), ClientError>> {
        if let Some(seq) = frame["seq"].as_u64() {
            if seq <= self.last_seq {
                return None;
            }
            self.last_seq = seq;
        }
        let turn = frame["turn_id"].as_str().unwrap_or_default().to_owned();
        let text = |key: &str| frame[key].as_str().unwrap_or_default().to_owned();
        let kind = frame["type"].as_str().unwrap_or_default();
        if !turn.is_empty() && !matches!(kind, "done" | "cancelled" | "error") {
            self.active.insert(turn.clone());
        }
        match kind {
            "user_message" if !self.ours.contains(&turn) => {
                self.screen
                    .line(Style::Dim, &format!("› {} (from another client)", text("content")));
            }
            "chunk" => self.screen.stream(Style::Plain, &text("content")),
            "thinking" => self.screen.stream(Style::Dim, &text("content")),
            "chunk_reset" => self.screen.end_line(),
            "tool_call" => self.screen.tool_call(&text("name"), &frame["args"]),
            "tool_result" => self.screen.tool_result(&frame),
            "approval_request" => {
                let request_id = text("request_id");
                if !self.approvals.iter().any(|(id, _, _)| *id == request_id) {
                    self.approvals.push_back((request_id, text("tool"), frame["args"].clone()));
                }
            }
            "approval_resolved" | "approval_expired" => {
                let request_id = text("request_id");
                if let Some(at) = self.approvals.iter().position(|(id, _, _)| *id == request_id) {
                    let (_, tool, _) = self.approvals.remove(at).unwrap_or_default();
                    let how = match frame["decision"].as_str() {
                        Some(decision) => format!("{decision} elsewhere"),
                        None => "not answered in time: denied".to_owned(),
                    };
                    self.screen.line(Style::Dim, &format!("{tool}: {how}"));
                }
            }
            "done" => self.ended(&turn, None),
            "cancelled" => self.ended(&turn, Some((Style::Dim, "[stopped]".to_owned()))),
            "error" => {
                let message = format!("[{}] {}", text("code"), text("message"));
                self.ended(&turn, Some((Style::Error, message)));
            }
            "agent_event" => self.screen.line(Style::Dim, &format!("event: {}", frame["event"])),
            "resync" => return self.resync().await,
            "session_deleted" => {
                self.screen.line(Style::Error, "this session was deleted");
                return Some(Ok(()));
            }
            _ => {}
        }
        None
    }

    fn ended(&mut self, turn: &str, note: Option<(Style, String)>) {
        self.screen.end_line();
        if let Some((style, note)) = note {
            self.screen.line(style, &note);
        }
        self.active.remove(turn);
        self.ours.remove(turn);
        if self.active.is_empty() {
            self.stopping = false;
        }
    }

    /// The feed fell too far behind for the server's log: what was missed is read from
    /// the stored history instead.
    async fn resync(&mut self) -> Option<Result<(), ClientError>> {
        self.screen.line(Style::Dim, "(missed some events; reading the history)");
        match self.api.session(&self.id, HISTORY).await {
            Ok(Some(detail)) => {
                let seen = self.last_seq;
                let messages = detail["messages"].as_array().cloned().unwrap_or_default();
                let missed: Vec<Value> = messages
                    .into_iter()
                    .filter(|m| m["seq"].as_u64().is_some_and(|seq| seq > seen))
                    .collect();
                self.history(&missed);
                if detail["running_turn"].is_null() && detail["queued"] == 0 {
                    self.active.clear();
                }
                self.last_seq = self.last_seq.max(detail["last_seq"].as_u64().unwrap_or(0));
                None
            }
            Ok(None) => {
                self.screen.line(Style::Error, "this session was deleted");
                Some(Ok(()))
            }
            Err(err) => {
                self.screen.line(Style::Error, &format!("could not read the history: {err}"));
                None
            }
        }
    }

    /// Shows stored messages: the person's, the answers, the tool calls and results.
    fn history(&mut self, messages: &[Value]) {
        for message in messages {
            let content = message["content"].as_str().unwrap_or_default();
            match message["role"].as_str() {
                Some("user") => self.screen.line(Style::Dim, &format!("› {content}")),
                Some("assistant") => {
                    if !content.is_empty() {
                        self.screen.line(Style::Plain, content);
                    }
                    for call in message["tool_calls"].as_array().into_iter().flatten() {
                        let args = call["arguments"].as_str().unwrap_or_default();
                        let args = serde_json::from_str(args).unwrap_or(Value::from(args));
                        self.screen.tool_call(call["name"].as_str().unwrap_or("tool"), &args);
                    }
                    if message["status"] == "interrupted" {
                        self.screen.line(Style::Dim, "[stopped]");
                    }
                }
                Some("tool") => {
                    let result = serde_json::json!({
                        "name": message["tool_name"], "output": content,
                    });
                    self.screen.tool_result(&result);
                }
                _ => {}
            }
        }
    }
}

/// The lines typed on standard input; the channel closes at its end. A line ending in `\`
/// goes on with the next one. Read on a thread of its own, which a blocking read may keep
/// past the end of the conversation: it dies with the process.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut pending = String::new();
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            match line.strip_suffix('\\') {
                Some(start) => {
                    pending.push_str(start);
                    pending.push('\n');
                }
                None => {
                    pending.push_str(&line);
                    if tx.send(std::mem::take(&mut pending)).is_err() {
                        return;
                    }
                }
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(pending);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lines_are_commands_or_messages() {
        assert!(parse("   ").is_none());
        assert!(matches!(parse("/quit"), Some(Input::Quit)));
        assert!(matches!(parse(" /exit "), Some(Input::Quit)));
        assert!(matches!(parse("/help"), Some(Input::Help)));
        assert!(matches!(parse("//quit"), Some(Input::Message(m)) if m == "/quit"));
        assert!(matches!(parse("  hello  "), Some(Input::Message(m)) if m == "  hello"));
    }
}
