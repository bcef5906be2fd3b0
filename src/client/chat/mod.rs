//! The conversation's state: what was typed, what the session's events say, which turns are
//! still running, which approvals wait for an answer here. This file reads the person's
//! input; `events` the server's.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod events;

use super::Line;
use super::api::{Api, ClientError};
use super::feed::{self, Incoming};
use super::render::{Screen, Style};

/// How many earlier messages are shown when a session is continued.
const HISTORY: u32 = 20;

const HELP: &str = "Enter sends; a line ending in \\ goes on on the next line. Ctrl-C stops \
the answer being written (twice: leaves); Ctrl-D or /quit leaves (the session stays). \
/session shows the session's id. A message starting with / is sent as // .";

/// What one line typed at the prompt means.
enum Input {
    Message(String),
    Quit,
    Help,
    Session,
}

/// The decision a line answers an approval with, if it is one.
fn decision(line: &str) -> Option<&'static str> {
    match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Some("approve"),
        "n" | "no" => Some("deny"),
        "a" | "always" => Some("always"),
        _ => None,
    }
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

/// An approval request waiting for an answer.
struct Approval {
    request_id: String,
    turn_id: String,
    tool: String,
    args: Value,
}

/// The conversation.
pub(super) struct Chat {
    api: Arc<Api>,
    model: Option<String>,
    id: String,
    screen: Screen,
    /// Where the feed sends; kept so the feed can be started once the session exists.
    tx: mpsc::UnboundedSender<Incoming>,
    rx: Option<mpsc::UnboundedReceiver<Incoming>>,
    /// The running feed, once the session exists.
    feed: Option<CancellationToken>,
    /// The newest `seq` shown.
    last_seq: u64,
    /// Turns this terminal submitted (their `user_message` echo is not shown again).
    ours: HashSet<String>,
    /// Turns submitted or seen that have not ended yet.
    active: HashSet<String>,
    /// Approval requests waiting for an answer, the first one asked at the prompt.
    approvals: VecDeque<Approval>,
    /// The approval asked, and when its question was first shown: only a line typed after
    /// that answers it.
    asked: Option<(String, Instant)>,
    /// Ctrl-C asked a turn to stop (its id when the server named it): another one leaves.
    stopping: Option<String>,
    /// Turns seen to end (a stale approval sent again for one is not asked).
    ended: HashSet<String>,
    /// A question was on the screen when a resync dropped it: a lone answer typed before
    /// it is asked again is not sent as a message.
    requestion: bool,
    /// Whether standard input is still open.
    input_open: bool,
    /// Whether the session was deleted (nothing to come back to).
    deleted: bool,
}

impl Chat {
    pub(super) fn new(api: Api, id: String, model: Option<String>, screen: Screen) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            api: Arc::new(api),
            model,
            id,
            screen,
            tx,
            rx: Some(rx),
            feed: None,
            last_seq: 0,
            ours: HashSet::new(),
            active: HashSet::new(),
            approvals: VecDeque::new(),
            asked: None,
            stopping: None,
            ended: HashSet::new(),
            requestion: false,
            input_open: true,
            deleted: false,
        }
    }

    /// Greets, follows the session, and talks until the person leaves.
    pub(super) async fn run(
        mut self,
        lines: mpsc::UnboundedReceiver<Line>,
        mut interrupts: mpsc::UnboundedReceiver<()>,
    ) -> Result<(), ClientError> {
        tokio::select! {
            opened = self.open() => opened?,
            Some(()) = interrupts.recv() => return Ok(()),
        }
        let result = self.converse(lines, interrupts).await;
        self.screen.end_line();
        // The session exists once it is followed (continued, or its first message sent).
        if let Some(feed) = &self.feed {
            feed.cancel();
            if !self.deleted {
                let id = &self.id;
                self.screen.line(
                    Style::Dim,
                    &format!("session {id} · continue with: parley chat --session {id}"),
                );
            }
        }
        result
    }

    /// Greets, shows an existing session's last messages, and follows it.
    async fn open(&mut self) -> Result<(), ClientError> {
        let detail = self.api.session(&self.id, HISTORY).await?;
        let what = if detail.is_some() { "continued" } else { "new" };
        let server = crate::config::redact_url_and_query(self.api.base());
        let banner = format!("parley chat · {server} · session {} ({what}) · /help", self.id);
        self.screen.line(Style::Dim, &banner);
        let Some(detail) = detail else { return Ok(()) };
        let messages = detail["messages"].as_array().cloned().unwrap_or_default();
        let running = detail["running_turn"]["turn_id"].as_str().map(str::to_owned);
        // A turn still running is shown from its message on, by replaying its events;
        // everything before is history.
        let cut = running.as_ref().and_then(|turn| {
            messages.iter().position(|m| m["role"] == "user" && m["turn_id"] == turn.as_str())
        });
        let shown = cut.map_or(&messages[..], |cut| &messages[..=cut]);
        let count = detail["message_count"].as_u64().unwrap_or(0) as usize;
        if count > messages.len() {
            let hidden = count - messages.len();
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
        mut lines: mpsc::UnboundedReceiver<Line>,
        mut interrupts: mpsc::UnboundedReceiver<()>,
    ) -> Result<(), ClientError> {
        let Some(mut events) = self.rx.take() else { return Ok(()) };
        loop {
            // Once input ends, a script waits for the answers to its own messages; a person
            // who pressed Ctrl-D has left.
            if !self.input_open && (self.screen.interactive() || self.own_running().is_none()) {
                return Ok(());
            }
            self.prompt();
            // Piped input is a script: each message waits for the answers before it, and
            // an approval is answered by its next line.
            let reading = self.input_open
                && (self.screen.interactive()
                    || self.own_running().is_none()
                    || !self.approvals.is_empty());
            // What a line, an event or a Ctrl-C sets off may wait on the server: a Ctrl-C
            // meanwhile leaves.
            let leave = tokio::select! {
                line = lines.recv(), if reading => tokio::select! {
                    // The work first: a Ctrl-C queued meanwhile is a stop, seen next round.
                    biased;
                    leave = self.read(line) => leave,
                    Some(()) = interrupts.recv() => Some(Ok(())),
                },
                Some(incoming) = events.recv() => tokio::select! {
                    biased;
                    leave = self.incoming(incoming) => leave,
                    Some(()) = interrupts.recv() => Some(Ok(())),
                },
                Some(()) = interrupts.recv() => tokio::select! {
                    biased;
                    leave = self.interrupted() => leave.then_some(Ok(())),
                    Some(()) = interrupts.recv() => Some(Ok(())),
                },
            };
            if let Some(result) = leave {
                return result;
            }
        }
    }

    /// One of this terminal's own turns still running or waiting, if any.
    fn own_running(&self) -> Option<&String> {
        self.active.iter().find(|turn| self.ours.contains(*turn))
    }

    /// Acts on a line read, or on the end of input; `Some` leaves.
    async fn read(&mut self, line: Option<Line>) -> Option<Result<(), ClientError>> {
        match line {
            Some(line) => self.typed(line).await.then_some(Ok(())),
            None => {
                self.input_open = false;
                self.input_closed().await;
                None
            }
        }
    }

    /// Shows the pending approval's question, or the prompt when nothing runs, unless it
    /// is the last thing on the screen already.
    fn prompt(&mut self) {
        if self.screen.asking() {
            return;
        }
        if let Some(approval) = self.approvals.front() {
            // Stamped before it shows, once per approval: a line typed as it appears is
            // an answer to it.
            if self.asked.as_ref().is_none_or(|(id, _)| *id != approval.request_id) {
                self.asked = Some((approval.request_id.clone(), Instant::now()));
            }
            // The arguments as JSON on one line: whatever they hold cannot break the
            // question over lines or pass for its end.
            let question = format!(
                "? allow {} {}  [y]es / [n]o / [a]lways in this session: ",
                approval.tool, approval.args
            );
            self.screen.ask(Style::Ask, &question);
        } else if self.active.is_empty() && self.input_open && self.screen.interactive() {
            self.screen.ask(Style::Plain, "› ");
        }
    }

    /// Acts on a typed line; returns whether to leave.
    async fn typed(&mut self, line: Line) -> bool {
        self.screen.answered();
        let mut text = line.text;
        if let Some(front) = self.approvals.front() {
            // A line typed before the question showed was meant for something else (a
            // piped script's lines are all read ahead, and answer in order).
            let after_question = !self.screen.interactive()
                || self
                    .asked
                    .as_ref()
                    .is_some_and(|(id, at)| *id == front.request_id && line.read_at >= *at);
            if after_question {
                match self.answer(text).await {
                    Some(rest) => text = rest,
                    None => return false,
                }
            } else if decision(&text).is_some() {
                self.screen.line(Style::Dim, "that came before the question: answer it again");
                return false;
            }
        } else if std::mem::take(&mut self.requestion) && decision(&text).is_some() {
            self.screen.line(Style::Dim, "the question is being asked again: answer it then");
            return false;
        }
        match parse(&text) {
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

    /// Answers the first approval with `line` (y, n or a). A script's line that is no
    /// answer denies it and is returned, to be taken as what it is.
    async fn answer(&mut self, line: String) -> Option<String> {
        let (decision, rest) = match decision(&line) {
            Some(decision) => (decision, None),
            None if self.screen.interactive() => {
                self.screen.line(Style::Dim, "answer y, n or a");
                return None;
            }
            None => {
                self.screen.line(Style::Dim, "no answer given: denied");
                ("deny", Some(line))
            }
        };
        let approval = self.approvals.pop_front()?;
        self.asked = None;
        if let Err(err) = self.api.decide(&approval.request_id, decision).await {
            let not_pending = err.is_not_found();
            self.screen.line(Style::Error, &format!("the answer was not taken: {err}"));
            // Still pending on the server (it could not be reached): ask again, with the
            // next line; the line that was no answer goes with the failed denial.
            if !not_pending {
                self.approvals.push_front(approval);
                if let Some(line) = rest {
                    self.screen.line(Style::Error, &format!("not sent: {line}"));
                }
                return None;
            }
        }
        rest
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

    /// Standard input ended (Ctrl-D, or the end of piped input). Nobody is left here to
    /// answer an approval: this terminal's own turns' are denied, others' are left to the
    /// clients that started them. A script still shows the answers to its messages; a
    /// person has left, and their answer goes on on the server.
    async fn input_closed(&mut self) {
        self.screen.end_line();
        self.asked = None;
        for approval in std::mem::take(&mut self.approvals) {
            self.refuse(&approval).await;
        }
        if self.screen.interactive() && self.own_running().is_some() {
            self.screen.line(Style::Dim, "the answer goes on on the server");
        }
    }

    async fn refuse(&mut self, approval: &Approval) {
        if self.ours.contains(&approval.turn_id) {
            self.screen.line(Style::Dim, &format!("input closed: {} denied", approval.tool));
            let _ = self.api.decide(&approval.request_id, "deny").await;
        }
    }

    /// Ctrl-C: stops the running turn; leaves when nothing runs, or when pressed again
    /// while a stop is under way.
    async fn interrupted(&mut self) -> bool {
        if self.active.is_empty() || self.stopping.is_some() {
            return true;
        }
        self.screen.line(Style::Dim, "stopping… (Ctrl-C again leaves)");
        match self.api.abort(&self.id).await {
            Ok(Some(turn_id)) => self.stopping = Some(turn_id),
            Ok(None) => {
                // The server runs nothing here: what this terminal took for running is not.
                self.screen.line(Style::Dim, "nothing is running");
                self.active.clear();
            }
            Err(err) => {
                self.stopping = Some(String::new());
                self.screen.line(Style::Error, &format!("could not stop it: {err}"));
            }
        }
        false
    }
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
