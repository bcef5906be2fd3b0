//! Running one turn: the agent loop with a [`Recorder`] that publishes every step as
//! events and makes each message, tool call and result durable as soon as it is complete.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::approvals::{ApprovalInfo, Decision};
use super::event::{EventKind, ToolCallSummary, TurnError};
use super::session::{LiveSession, PendingTurn};
use super::{Inner, TurnOutcome};
use crate::agent::{AgentError, ToolOutcome, TurnObserver};
use crate::conversation::{ChatMessage, Role, ToolCall, Usage};
use crate::providers::{Completion, Delta};
use crate::store::{
    AnswerWrite, LedgerEntry, MessageStatus, NewMessage, PartialText, Store, StoreError, TurnEnd,
    TurnStatus,
};

/// The step being streamed.
#[derive(Default)]
struct Step {
    /// The seq the step's assistant message is stored under.
    seq: u64,
    text: String,
    thinking: String,
    /// The stored row once the partial text was first flushed.
    message_id: Option<i64>,
    flushed_len: usize,
}

/// Publishes and persists what a turn does.
struct Recorder<'a> {
    inner: &'a Inner,
    session: &'a LiveSession,
    store: &'a dyn Store,
    turn_id: &'a str,
    turn_seq: i64,
    step: Mutex<Step>,
    /// Timeline rows of running tool calls, by call id.
    running_tools: Mutex<HashMap<String, i64>>,
    summaries: Mutex<Vec<ToolCallSummary>>,
    /// What the turn's finished model calls used in all, and the model of the latest.
    used: Mutex<(Usage, Option<String>)>,
    /// The answer's last write and its model call's ledger entry, left for the turn's end
    /// to make in its own transaction.
    last: Mutex<Option<(AnswerWrite, LedgerEntry)>>,
    /// When the turn started, until its first model call.
    starting: Mutex<Option<Instant>>,
}

impl Recorder<'_> {
    fn emit(&self, kind: EventKind) -> u64 {
        self.session.emit(Some(self.turn_id), kind).seq
    }

    fn step(&self) -> MutexGuard<'_, Step> {
        self.step.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the step's text under `status`, inserting its row on first write.
    async fn write_step(
        &self,
        status: MessageStatus,
        tool_calls: &[ToolCall],
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let written = match self.answer() {
            AnswerWrite::Update { id, content, reasoning } => {
                let (fence, reasoning) = (self.session.fence, reasoning.as_deref());
                self.store.update_message(fence, id, &content, reasoning, tool_calls, status).await
            }
            AnswerWrite::Insert(message) => {
                let message = NewMessage { tool_calls: tool_calls.to_vec(), status, ..message };
                let id = self.store.append_message(self.session.fence, &message).await?;
                self.step().message_id = Some(id);
                Ok(())
            }
        };
        self.inner.agent.metrics.store_writes.observe(started.elapsed().as_secs_f64());
        written
    }

    fn partial(&self) -> String {
        self.step().text.clone()
    }

    /// The step's text as its row's next write: the row, or its update once a flush made
    /// it (complete and without calls, as the end of the turn writes an answer).
    fn answer(&self) -> AnswerWrite {
        let mut step = self.step();
        step.flushed_len = step.text.len();
        let reasoning = (!step.thinking.is_empty()).then(|| step.thinking.clone());
        match step.message_id {
            Some(id) => AnswerWrite::Update { id, content: step.text.clone(), reasoning },
            None => AnswerWrite::Insert(NewMessage {
                reasoning,
                ..NewMessage::text(
                    step.seq as i64,
                    self.turn_seq,
                    self.turn_id,
                    Role::Assistant,
                    step.text.clone(),
                )
            }),
        }
    }

    /// Takes what was left for the turn's end.
    fn take_last(&self) -> Option<(AnswerWrite, LedgerEntry)> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[async_trait]
impl TurnObserver for Recorder<'_> {
    async fn step_started(&self, model: &str) -> Result<(), StoreError> {
        if let Some(started) = self.starting.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.inner.agent.metrics.turn_start.observe(started.elapsed().as_secs_f64());
        }
        if let Some((_, call)) = self.take_last() {
            // A step after an answer (not how the agent goes on, but never lost if it did):
            // the answer, still this step's, is written now.
            count(self.store, &call).await?;
            self.write_step(MessageStatus::Complete, &[]).await?;
        }
        let detail = Some(model.to_owned());
        let seq = self.emit(EventKind::OperatorStatus { phase: "model".into(), detail });
        *self.step() = Step { seq, ..Step::default() };
        Ok(())
    }

    fn fell_back(&self, from: &str, to: &str) {
        let detail = Some(format!("{to} ({from} is unavailable)"));
        let seq = self.emit(EventKind::OperatorStatus { phase: "model".into(), detail });
        // The step starts again: its message goes under the newest `model` status, as the
        // adapters that name streamed messages by it expect (nothing of it is stored yet).
        *self.step() = Step { seq, ..Step::default() };
    }

    fn delta(&self, delta: Delta) {
        let kind = match delta {
            Delta::Text(content) => {
                self.step().text.push_str(&content);
                EventKind::Chunk { content }
            }
            Delta::Thinking(content) => {
                self.step().thinking.push_str(&content);
                EventKind::Thinking { content }
            }
        };
        self.emit(kind);
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let partial = {
            let mut step = self.step();
            if step.text.len() == step.flushed_len {
                return Ok(());
            }
            // Once the row exists, its updates go to the shared writer.
            step.message_id.map(|message_id| {
                step.flushed_len = step.text.len();
                PartialText {
                    fence: self.session.fence,
                    message_id,
                    content: step.text.clone(),
                    reasoning: (!step.thinking.is_empty()).then(|| step.thinking.clone()),
                }
            })
        };
        match partial {
            Some(partial) => self.inner.partials.write(partial).await,
            None => self.write_step(MessageStatus::Streaming, &[]).await?,
        }
        Ok(())
    }

    async fn step_finished(&self, completion: &Completion) -> Result<(), StoreError> {
        let model = completion.model.clone().unwrap_or_default();
        {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            used.0.add(completion.usage);
            used.1 = Some(model.clone());
        }
        let step = self.step().seq as i64;
        let user = &self.session.user;
        if completion.tool_calls.is_empty() {
            // The answer: stored with the turn's end, in one transaction.
            let call = LedgerEntry {
                user: user.clone(),
                turn_id: self.turn_id.to_owned(),
                step,
                model,
                usage: completion.usage,
            };
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((self.answer(), call));
            return Ok(());
        }
        // Counted first: the call was made even if the session was deleted or taken over
        // meanwhile (and the step's own write below is refused).
        self.store.record_usage(user, self.turn_id, step, &model, &completion.usage).await?;
        self.write_step(MessageStatus::Complete, &completion.tool_calls).await?;
        if !completion.text.is_empty() {
            self.emit(EventKind::ChunkReset);
        }
        Ok(())
    }

    async fn step_interrupted(&self) -> Result<(), StoreError> {
        let has_text = {
            let step = self.step();
            !step.text.is_empty() || step.message_id.is_some()
        };
        if has_text {
            self.write_step(MessageStatus::Interrupted, &[]).await?;
        }
        Ok(())
    }

    async fn tool_started(&self, call: &ToolCall) -> Result<(), StoreError> {
        self.inner.lifecycle(
            self.session,
            Some(self.turn_id),
            EventKind::ToolCalled { name: call.name.clone() },
        );
        self.emit(EventKind::OperatorStatus {
            phase: "tool".into(),
            detail: Some(call.name.clone()),
        });
        self.emit(EventKind::ToolCall {
            id: call.id.clone(),
            name: call.name.clone(),
            args: args_value(&call.arguments),
        });
        let pk = self.store.start_tool_call(self.session.fence, self.turn_id, call).await?;
        self.running_tools.lock().unwrap_or_else(|e| e.into_inner()).insert(call.id.clone(), pk);
        Ok(())
    }

    fn tool_progress(&self, call: &ToolCall, detail: String) {
        self.emit(EventKind::OperatorStatus {
            phase: "tool".into(),
            detail: Some(format!("{}: {detail}", call.name)),
        });
    }

    async fn approve(
        &self,
        call: &ToolCall,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, StoreError> {
        if self.session.always_allowed(&call.name) {
            return Ok(None);
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let timeout = self.inner.approval_timeout;
        let args = args_value(&call.arguments);
        self.emit(EventKind::OperatorStatus {
            phase: "approval".into(),
            detail: Some(call.name.clone()),
        });
        let seq = self.emit(EventKind::ApprovalRequest {
            request_id: request_id.clone(),
            tool: call.name.clone(),
            args: args.clone(),
            timeout_secs: timeout.as_secs_f64(),
        });
        let info = ApprovalInfo {
            request_id: request_id.clone(),
            user: self.session.user.clone(),
            session_id: self.session.id.clone(),
            turn_id: self.turn_id.to_owned(),
            tool: call.name.clone(),
            args,
            timeout_secs: timeout.as_secs_f64(),
            expires_at: crate::clock::now_ms() + timeout.as_millis() as i64,
            seq,
        };
        self.inner.share_approval(&info);
        let decided = self.inner.approvals.register(info);
        self.inner.lifecycle(
            self.session,
            Some(self.turn_id),
            EventKind::ApprovalRequested {
                request_id: request_id.clone(),
                tool: call.name.clone(),
            },
        );
        let decision = tokio::select! {
            decision = decided => decision.ok(),
            () = tokio::time::sleep(timeout) => None,
            () = cancel.cancelled() => Some(Decision::Deny),
        };
        self.inner.approvals.remove(&request_id);
        self.inner.unshare_approval(&self.session.user, &request_id);
        let (label, refusal) = match decision {
            Some(Decision::Approve) => ("approve", None),
            Some(Decision::Always) => {
                self.session.allow_always(&call.name);
                ("always", None)
            }
            Some(Decision::Deny) if cancel.is_cancelled() => {
                ("cancelled", Some("the turn was cancelled"))
            }
            Some(Decision::Deny) => ("deny", Some("the user denied this tool call")),
            None => {
                self.emit(EventKind::ApprovalExpired { request_id: request_id.clone() });
                ("expired", Some("nobody approved this tool call in time"))
            }
        };
        self.inner.agent.metrics.approval(label);
        if label != "expired" {
            self.emit(EventKind::ApprovalResolved {
                request_id: request_id.clone(),
                decision: label.into(),
            });
        }
        self.inner.lifecycle(
            self.session,
            Some(self.turn_id),
            EventKind::ApprovalResolved { request_id, decision: label.into() },
        );
        Ok(refusal.map(str::to_owned))
    }

    async fn tool_finished(
        &self,
        call: &ToolCall,
        outcome: &ToolOutcome,
    ) -> Result<(), StoreError> {
        let duration_ms = outcome.duration.as_millis() as u64;
        let seq = self.emit(EventKind::ToolResult {
            id: call.id.clone(),
            name: call.name.clone(),
            output: outcome.output.clone(),
            is_error: outcome.is_error,
            duration_ms,
            code: outcome.is_error.then_some("TOOL_ERROR".into()),
        });
        let pk = self.running_tools.lock().unwrap_or_else(|e| e.into_inner()).remove(&call.id);
        if let Some(pk) = pk {
            let status = if outcome.interrupted { "interrupted" } else { "done" };
            let fence = self.session.fence;
            let (output, is_error) = (&outcome.output, outcome.is_error);
            self.store
                .finish_tool_call(fence, pk, output, is_error, status, duration_ms as i64)
                .await?;
        }
        let message = NewMessage {
            tool_call_id: Some(call.id.clone()),
            tool_name: Some(call.name.clone()),
            ..NewMessage::text(seq as i64, self.turn_seq, self.turn_id, Role::Tool, &outcome.output)
        };
        let started = Instant::now();
        self.store.append_message(self.session.fence, &message).await?;
        self.inner.agent.metrics.store_writes.observe(started.elapsed().as_secs_f64());
        self.summaries.lock().unwrap_or_else(|e| e.into_inner()).push(ToolCallSummary {
            id: call.id.clone(),
            name: call.name.clone(),
            args: args_value(&call.arguments),
            output: outcome.output.clone(),
            is_error: outcome.is_error,
            duration_ms,
        });
        Ok(())
    }
}

/// Adds a model call to the usage ledger on its own (the same step is never counted twice).
async fn count(store: &dyn Store, call: &LedgerEntry) -> Result<(), StoreError> {
    let (user, model) = (&call.user, &call.model);
    store.record_usage(user, &call.turn_id, call.step, model, &call.usage).await
}

/// The model's arguments as JSON, or as a string if they are not valid JSON.
fn args_value(arguments: &str) -> serde_json::Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| serde_json::Value::String(arguments.into()))
}

/// Runs `turn` to its end and records how it ended; `idle` tells whether that record also
/// marked the session idle.
pub(super) async fn run(
    inner: &Inner,
    session: &LiveSession,
    turn: &PendingTurn,
    idle: &mut bool,
) -> TurnOutcome {
    *idle = false;
    let started = Instant::now();
    let recorder = Recorder {
        inner,
        session,
        store: inner.store.as_ref(),
        turn_id: &turn.turn_id,
        turn_seq: turn.user_seq as i64,
        step: Mutex::new(Step::default()),
        running_tools: Mutex::new(HashMap::new()),
        summaries: Mutex::new(Vec::new()),
        used: Mutex::new((Usage::default(), None)),
        last: Mutex::new(None),
        starting: Mutex::new(Some(started)),
    };
    inner.lifecycle(session, Some(&turn.turn_id), EventKind::TurnStarted);
    let metrics = &inner.agent.metrics;
    metrics.turns_started.inc();
    let result = if turn.cancel.is_cancelled() {
        Err(AgentError::Cancelled)
    } else {
        execute(inner, session, turn, &recorder).await
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let tool_calls =
        std::mem::take(&mut *recorder.summaries.lock().unwrap_or_else(|e| e.into_inner()));
    let mut outcome = TurnOutcome {
        turn_id: turn.turn_id.clone(),
        session_id: session.id.clone(),
        status: TurnStatus::Done,
        reply: String::new(),
        tool_calls,
        usage: Default::default(),
        model: Some(turn.model.clone()),
        duration_ms,
        error: None,
    };
    if session.lost() || matches!(&result, Err(AgentError::Store(err)) if super::lease::fenced(err))
    {
        // Another node took the session: the turn's rows are its to finish, and nothing
        // more is published here. Its last model call was made all the same.
        if let Some((_, call)) = recorder.take_last()
            && let Err(err) = count(inner.store.as_ref(), &call).await
        {
            tracing::error!(%err, "recording a model call's usage failed");
        }
        inner.lose(session).await;
        outcome.status = TurnStatus::Interrupted;
        outcome.reply = recorder.partial();
        tracing::warn!(turn_id = %turn.turn_id, "turn stopped: this node lost the session's lease");
        metrics.turn_finished(outcome.status.as_str(), None, started.elapsed());
        return outcome;
    }
    // Every finished model call counts, whether or not the turn reached an answer.
    let (usage, model) =
        std::mem::take(&mut *recorder.used.lock().unwrap_or_else(|e| e.into_inner()));
    outcome.usage = usage;
    if model.is_some() {
        outcome.model = model;
    }
    let mut kind = match result {
        Ok(answer) => {
            outcome.reply = answer.text;
            EventKind::Done {
                full_response: outcome.reply.clone(),
                usage: outcome.usage,
                model: outcome.model.clone(),
                duration_ms,
                tool_calls: outcome.tool_calls.clone(),
            }
        }
        Err(AgentError::Cancelled) => {
            outcome.status = if inner.hard_stop.is_cancelled() {
                TurnStatus::Interrupted
            } else {
                TurnStatus::Cancelled
            };
            outcome.reply = recorder.partial();
            EventKind::Cancelled { partial: outcome.reply.clone() }
        }
        Err(err) => {
            let (code, message) = TurnError::of(&err);
            outcome.status = TurnStatus::Error;
            outcome.reply = recorder.partial();
            outcome.error = Some((code, message.clone()));
            EventKind::Error { message, code }
        }
    };
    let (answer, ledger) = recorder.take_last().unzip();
    let end = TurnEnd {
        answer,
        ledger,
        // Nothing waits after it: the session is idle from this write on (a turn admitted
        // meanwhile marks it running again as it starts).
        idle: session.queue().pending.is_empty(),
        status: outcome.status,
        error_code: outcome.error.as_ref().map(|(code, _)| code.code().to_owned()),
        error_message: outcome.error.as_ref().map(|(_, message)| message.clone()),
        model: outcome.model.clone(),
        usage: outcome.usage,
        duration_ms: duration_ms as i64,
    };
    let writing = Instant::now();
    let finished = inner.store.finish_turn(session.fence, &turn.turn_id, &end).await;
    metrics.store_writes.observe(writing.elapsed().as_secs_f64());
    match finished {
        Ok(()) => *idle = end.idle,
        Err(StoreError::Fenced) => {
            // Taken over just now: the end is the new holder's to record and announce.
            inner.lose(session).await;
            outcome.status = TurnStatus::Interrupted;
            metrics.turn_finished(outcome.status.as_str(), None, started.elapsed());
            return outcome;
        }
        Err(err) => {
            tracing::error!(%err, turn_id = %turn.turn_id, "recording the end of a turn failed");
            // The last call was made all the same: counted on its own.
            if let Some(call) = &end.ledger
                && let Err(err) = count(inner.store.as_ref(), call).await
            {
                tracing::error!(%err, "recording a model call's usage failed");
            }
            if end.answer.is_some() && outcome.status == TurnStatus::Done {
                // The answer went with that write: watchers are not told it is done when
                // it is not stored (its record stays unfinished until recovery marks it).
                let (code, message) = TurnError::of(&AgentError::Store(err));
                outcome.status = TurnStatus::Error;
                outcome.error = Some((code, message.clone()));
                kind = EventKind::Error { message, code };
            }
        }
    }
    session.emit(Some(&turn.turn_id), kind);
    inner.lifecycle(
        session,
        Some(&turn.turn_id),
        EventKind::TurnFinished { status: outcome.status.as_str().into() },
    );
    tracing::info!(
        turn_id = %turn.turn_id,
        status = ?outcome.status,
        duration_ms,
        tools = outcome.tool_calls.len(),
        "turn finished"
    );
    let code = outcome.error.as_ref().map(|(code, _)| code.code());
    metrics.turn_finished(outcome.status.as_str(), code, started.elapsed());
    outcome
}

async fn execute(
    inner: &Inner,
    session: &LiveSession,
    turn: &PendingTurn,
    recorder: &Recorder<'_>,
) -> Result<crate::agent::Answer, AgentError> {
    if !turn.started {
        inner.store.start_turn(session.fence, &turn.turn_id).await?;
    }
    // Checked again as the turn starts: turns queued before the budget ran out do not run.
    if let Some(budget) = inner.budget_of(&session.user).await?
        && budget.spent()
    {
        return Err(AgentError::BudgetExceeded { spent: budget.spent, limit: budget.limit });
    }
    let history = inner.store.history(session.pk, turn.user_seq as i64).await?;
    let mut messages = Vec::with_capacity(history.len() + turn.context.len() + 1);
    if !inner.system_prompt.is_empty() {
        messages.push(ChatMessage::text(Role::System, inner.system_prompt.clone()));
    }
    messages.extend(turn.context.iter().cloned());
    messages.extend(super::replay::provider_history(history));
    if let Some(hint) = &turn.hint {
        // Just before the user's message, so the model reads it as context for it.
        let at = messages.len().saturating_sub(1);
        messages.insert(at, ChatMessage::text(Role::System, format!("Page context: {hint}")));
    }
    let ctx = inner
        .agent
        .tools
        .context(&session.user, turn.cancel.clone())
        .map_err(|e| AgentError::Store(StoreError::Other(format!("workspace: {e}"))))?;
    inner.agent.run(&turn.model, messages, &ctx, &turn.cancel, recorder).await
}
