//! What the session's events do to the conversation: the answer streams, tool calls and
//! results show, approvals queue up, turns end, and a feed that fell behind catches up
//! from the stored history.

use std::collections::HashSet;

use serde_json::Value;

use super::{Approval, Chat, HISTORY};
use crate::client::api::ClientError;
use crate::client::feed::Incoming;
use crate::client::render::Style;

impl Chat {
    /// Shows what the feed reports; `Some` ends the conversation.
    pub(super) async fn incoming(&mut self, incoming: Incoming) -> Option<Result<(), ClientError>> {
        match incoming {
            Incoming::Frame(frame) => return self.frame(frame).await,
            Incoming::Lost(reason) => {
                self.screen.line(Style::Dim, &format!("connection lost ({reason}); reconnecting…"));
            }
            Incoming::Back => self.screen.line(Style::Dim, "reconnected"),
            Incoming::Ended(err) => {
                self.deleted = err.is_not_found();
                return Some(Err(err));
            }
        }
        None
    }

    /// Shows one event of the session.
    async fn frame(&mut self, frame: Value) -> Option<Result<(), ClientError>> {
        let kind = frame["type"].as_str().unwrap_or_default();
        let seq = frame["seq"].as_u64();
        // Pending approvals are sent again on every connection, seen or not: they are
        // told apart by their id, not their place in the log.
        if kind != "approval_request"
            && let Some(seq) = seq
        {
            if seq <= self.last_seq {
                return None;
            }
            self.last_seq = seq;
        }
        let turn = frame["turn_id"].as_str().unwrap_or_default().to_owned();
        let text = |key: &str| frame[key].as_str().unwrap_or_default().to_owned();
        let ends = matches!(kind, "done" | "cancelled" | "error");
        // An approval sent again on a connection (its seq not new) says nothing new of its
        // turn, which may have ended since the server listed it.
        let fresh = kind != "approval_request" || seq.is_some_and(|seq| seq > self.last_seq);
        if !turn.is_empty() && !ends && fresh && !self.ended.contains(&turn) {
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
            "approval_request" if !self.ended.contains(&turn) => {
                self.requested(&frame, turn).await;
            }
            "approval_resolved" | "approval_expired" => self.resolved(&frame),
            "done" => self.ended(&turn, None),
            "cancelled" => self.ended(&turn, Some((Style::Dim, "[stopped]".to_owned()))),
            "error" => {
                let message = format!("[{}] {}", text("code"), text("message"));
                self.ended(&turn, Some((Style::Error, message)));
            }
            "agent_event" => self.screen.line(Style::Dim, &format!("event: {}", frame["event"])),
            "resync" => return self.resync(frame["last_seq"].as_u64()).await,
            "session_deleted" => {
                self.screen.line(Style::Error, "this session was deleted");
                self.deleted = true;
                return Some(Ok(()));
            }
            _ => {}
        }
        None
    }

    async fn requested(&mut self, frame: &Value, turn_id: String) {
        let request_id = frame["request_id"].as_str().unwrap_or_default().to_owned();
        if self.approvals.iter().any(|approval| approval.request_id == request_id) {
            return;
        }
        let approval = Approval {
            request_id,
            turn_id,
            tool: frame["tool"].as_str().unwrap_or("tool").to_owned(),
            args: frame["args"].clone(),
        };
        // A script answers only its own turns' approvals (its lines are not meant for
        // another client's); a person sees every one.
        let ours = self.ours.contains(&approval.turn_id);
        if !self.input_open {
            self.refuse(&approval).await;
        } else if ours || self.screen.interactive() {
            if self.approvals.is_empty() {
                // Asked now, in place of the idle prompt.
                self.screen.reopen();
            }
            self.approvals.push_back(approval);
        }
    }

    fn resolved(&mut self, frame: &Value) {
        let request_id = frame["request_id"].as_str().unwrap_or_default();
        let Some(at) = self.approvals.iter().position(|a| a.request_id == request_id) else {
            return;
        };
        let Some(approval) = self.approvals.remove(at) else { return };
        if at == 0 {
            self.asked = None;
        }
        let how = match frame["decision"].as_str() {
            Some("cancelled") => "its turn stopped".to_owned(),
            Some(decision) => format!("{decision} elsewhere"),
            None => "not answered in time: denied".to_owned(),
        };
        self.screen.line(Style::Dim, &format!("{}: {how}", approval.tool));
    }

    fn ended(&mut self, turn: &str, note: Option<(Style, String)>) {
        self.screen.end_line();
        if let Some((style, note)) = note {
            self.screen.line(style, &note);
        }
        self.active.remove(turn);
        self.ours.remove(turn);
        if self.ended.len() >= 1024 {
            self.ended.clear();
        }
        self.ended.insert(turn.to_owned());
        self.approvals.retain(|approval| approval.turn_id != turn);
        if self.stopping.as_deref().is_some_and(|stopping| stopping.is_empty() || stopping == turn)
            || self.active.is_empty()
        {
            self.stopping = None;
        }
    }

    /// The feed fell too far behind the server's log (or the log is gone, after a
    /// restart), which goes on at `resumed`. What was missed is read from the stored
    /// history: the messages stored up to `resumed` and not shown whole (the answer under
    /// way shows again, in full); what runs is what the server says; the feed reconnects
    /// from `resumed`, so the approvals still waiting are sent again.
    async fn resync(&mut self, resumed: Option<u64>) -> Option<Result<(), ClientError>> {
        self.screen.line(Style::Dim, "(missed some events; reading the history)");
        let seen = self.last_seq;
        let resumed = resumed.unwrap_or(seen);
        self.last_seq = resumed;
        let mut detail = self.api.session(&self.id, HISTORY).await;
        for wait in [500, 1000, 2000] {
            if detail.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            detail = self.api.session(&self.id, HISTORY).await;
        }
        let detail = match detail {
            Ok(Some(detail)) => detail,
            Ok(None) => {
                self.screen.line(Style::Error, "this session was deleted");
                self.deleted = true;
                return Some(Ok(()));
            }
            Err(err) => {
                // Nothing is known of what ran meanwhile: what looked running is not trusted.
                self.screen.line(Style::Error, &format!("could not read the history: {err}"));
                self.active.clear();
                self.restart_feed(resumed);
                return None;
            }
        };
        let active = &self.active;
        let missed: Vec<Value> = detail["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| {
                let Some(seq) = m["seq"].as_u64() else { return false };
                let under_way = m["role"] != "user"
                    && m["turn_id"].as_str().is_some_and(|turn| active.contains(turn));
                seq <= resumed && (seq > seen || under_way)
            })
            .cloned()
            .collect();
        self.history(&missed);
        // What runs is what the server says; this terminal's own turns wait while others
        // do (the page does not name the queued ones).
        let running = detail["running_turn"]["turn_id"].as_str().map(str::to_owned);
        let waiting = detail["queued"].as_u64().unwrap_or(0) > 0;
        let queued: Option<HashSet<&str>> = detail["queued_turns"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).collect());
        let ours = &self.ours;
        // The queued turns by id where the page names them (another node's session: this
        // terminal's own, while anything waits).
        self.active.retain(|turn| {
            Some(turn) == running.as_ref()
                || queued
                    .as_ref()
                    .map_or(waiting && ours.contains(turn), |q| q.contains(turn.as_str()))
        });
        if let Some(turn) = running {
            self.active.insert(turn);
        }
        let active = &self.active;
        self.ours.retain(|turn| active.contains(turn));
        self.requestion = !self.approvals.is_empty();
        self.approvals.clear();
        self.asked = None;
        self.stopping = None;
        self.restart_feed(resumed);
        None
    }

    /// Follows the session again from `after`, on a new connection.
    fn restart_feed(&mut self, after: u64) {
        if let Some(feed) = self.feed.take() {
            feed.cancel();
        }
        self.follow(after);
    }

    /// Shows stored messages: the person's, the answers, the tool calls and results.
    pub(super) fn history(&mut self, messages: &[Value]) {
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
