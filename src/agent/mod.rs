//! The agent loop: history + new message → provider → stream text → run the tool calls →
//! feed the results back → until a final answer or the iteration cap. What the loop does is
//! reported to a [`TurnObserver`], which the runtime implements to persist and publish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::OptionFuture;
use tokio_util::sync::CancellationToken;

use crate::conversation::{ChatMessage, Role, SignedThinking, ToolCall};
use crate::metrics::Metrics;
use crate::providers::{ChatRequest, Completion, Delta, Models, ProviderError, Route};
use crate::store::StoreError;
use crate::tools::{Policy, Prepared, Progress, Registry, ToolContext, ToolError, cap_output};

/// Why a turn did not reach a final answer.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("the agent reached its limit of {0} model calls without a final answer")]
    IterationLimit(u32),
    /// The user spent their monthly budget before the turn began.
    #[error("your monthly budget is spent ({spent:.2} of {limit:.2}); it renews on the 1st")]
    BudgetExceeded { spent: f64, limit: f64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a model call that failed before answering is tried on the next model of the
/// chain: the provider could not take it, not that it refused this request.
fn falls_back(error: &ProviderError) -> bool {
    matches!(
        error,
        ProviderError::Unavailable(_)
            | ProviderError::RateLimited { .. }
            | ProviderError::Timeout(_)
    )
}

/// The result of one tool call.
#[derive(Debug, Clone)]
pub struct ToolOutcome {
    pub output: String,
    pub is_error: bool,
    /// The call was stopped by the turn's cancellation.
    pub interrupted: bool,
    pub duration: Duration,
}

/// A turn's final answer (its usage and model reach the observer call by call).
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub text: String,
}

/// Receives what the loop does, to persist it and tell watchers.
#[async_trait]
pub trait TurnObserver: Send + Sync {
    /// A call to `model` begins.
    async fn step_started(&self, model: &str) -> Result<(), StoreError>;
    /// `from` failed before it answered; the step is tried again on `to` (no I/O here).
    fn fell_back(&self, from: &str, to: &str);
    /// A piece of the answer arrived (hot path: no I/O here).
    fn delta(&self, delta: Delta);
    /// Called on a timer while a step streams: persist the partial text.
    async fn flush(&self) -> Result<(), StoreError>;
    /// A model call completed (its `model` is the one that served it, its usage priced).
    async fn step_finished(&self, completion: &Completion) -> Result<(), StoreError>;
    /// A model call was stopped: persist its partial text marked interrupted.
    async fn step_interrupted(&self) -> Result<(), StoreError>;
    /// A tool call is about to run.
    async fn tool_started(&self, call: &ToolCall) -> Result<(), StoreError>;
    /// A running tool call says how far it is (no I/O here).
    fn tool_progress(&self, call: &ToolCall, detail: String);
    /// Asks the user whether a tool call may run; `Some(reason)` refuses it.
    async fn approve(
        &self,
        call: &ToolCall,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, StoreError>;
    /// A tool call ended.
    async fn tool_finished(&self, call: &ToolCall, outcome: &ToolOutcome)
    -> Result<(), StoreError>;
}

/// The loop's fixed parts.
pub struct Agent {
    /// The models turns may ask for, with their providers.
    pub models: Arc<Models>,
    pub tools: Arc<Registry>,
    /// Where model and tool calls are counted.
    pub metrics: Arc<Metrics>,
    pub max_iterations: u32,
    pub flush_every: Duration,
}

impl Agent {
    /// Runs the loop on `messages` (system prompt, history and the new user message) with
    /// `model` (a configured id), falling back along its chain.
    pub async fn run(
        &self,
        model: &str,
        mut messages: Vec<ChatMessage>,
        ctx: &ToolContext,
        cancel: &CancellationToken,
        observer: &dyn TurnObserver,
    ) -> Result<Answer, AgentError> {
        let tools = self.tools.specs();
        let chain = self.models.chain(model);
        // A model given up on stays given up on for the rest of the turn.
        let mut at = 0;
        for _ in 0..self.max_iterations {
            if cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            let request = ChatRequest { messages: messages.clone(), tools: tools.clone() };
            observer.step_started(&chain[at].id).await?;
            let completion = loop {
                let route = &chain[at];
                let (result, answered) =
                    self.measured_step(route, &request, cancel, observer).await;
                match result {
                    Ok(completion) => break completion,
                    Err(AgentError::Provider(err))
                        if !answered && at + 1 < chain.len() && falls_back(&err) =>
                    {
                        let next = &chain[at + 1];
                        tracing::warn!(
                            model = %route.id,
                            next = %next.id,
                            error = %err,
                            "the model failed before answering; trying the next of its chain"
                        );
                        self.metrics.fallback(&route.id, &next.id);
                        observer.fell_back(&route.id, &next.id);
                        at += 1;
                    }
                    Err(err) => {
                        observer.step_interrupted().await?;
                        return Err(err);
                    }
                }
            };
            observer.step_finished(&completion).await?;
            if completion.tool_calls.is_empty() {
                return Ok(Answer { text: completion.text });
            }
            let mut step = ChatMessage::with_calls(
                Role::Assistant,
                completion.text.clone(),
                completion.tool_calls.clone(),
                None,
            );
            // Within the turn, the model gets its signed thinking back with its calls.
            step.thinking = completion
                .thinking_signature
                .clone()
                .map(|signature| SignedThinking { text: completion.thinking.clone(), signature });
            messages.push(step);
            for call in &completion.tool_calls {
                let outcome = self.run_tool(call, ctx, observer).await?;
                messages.push(ChatMessage::tool_result(
                    outcome.output,
                    call.id.clone(),
                    outcome.is_error,
                ));
            }
            if cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
        }
        Err(AgentError::IterationLimit(self.max_iterations))
    }

    /// [`Self::stream_step`] on `route`, counted (its outcome, time to the first token,
    /// tokens and cost) and labelled: the completion names the model that served it and
    /// carries its cost. Also says whether any of the answer reached the observer.
    async fn measured_step(
        &self,
        route: &Route,
        request: &ChatRequest,
        cancel: &CancellationToken,
        observer: &dyn TurnObserver,
    ) -> (Result<Completion, AgentError>, bool) {
        let started = Instant::now();
        let first = std::sync::OnceLock::new();
        let mut result = self.stream_step(route, request, cancel, observer, &first).await;
        // The configured names, not the one upstream answers with: a bounded set of
        // labels, and successes and failures under the same one.
        let (provider, model) = (route.provider_name.as_str(), route.id.as_str());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(AgentError::Cancelled) => "cancelled",
            Err(AgentError::Provider(err)) => err.kind(),
            Err(_) => "other",
        };
        let first_token = first.get().map(|at: &Instant| at.duration_since(started));
        self.metrics.provider_call(provider, model, outcome, first_token);
        if let Ok(completion) = &mut result {
            let usage = &mut completion.usage;
            self.metrics.tokens(model, usage.prompt_tokens, usage.completion_tokens);
            usage.cost = route.price.map(|price| price.cost(usage));
            if let Some(cost) = usage.cost {
                self.metrics.cost(provider, model, cost);
            }
            // A model sent no name is known by the name its server answers with.
            if route.upstream().is_some() || completion.model.is_none() {
                completion.model = Some(route.id.clone());
            }
        }
        (result, first.get().is_some())
    }

    /// One model call, streamed to the observer, flushed on a timer, stopped on cancel
    /// (dropping the provider future drops its HTTP request). `first` gets the time the
    /// first delta arrived.
    async fn stream_step(
        &self,
        route: &Route,
        request: &ChatRequest,
        cancel: &CancellationToken,
        observer: &dyn TurnObserver,
        first: &std::sync::OnceLock<Instant>,
    ) -> Result<Completion, AgentError> {
        let mut on_delta = |delta: Delta| {
            first.get_or_init(Instant::now);
            observer.delta(delta)
        };
        let call = route.provider.complete(route.upstream(), request, &mut on_delta);
        tokio::pin!(call);
        let mut ticker = tokio::time::interval(self.flush_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        // A flush runs beside the stream, never holding up the chunks; it is always
        // finished before the step ends, so the step's row is written once.
        let mut flushing = std::pin::pin!(OptionFuture::from(None));
        let mut flush_running = false;
        let ended = loop {
            tokio::select! {
                result = &mut call => break result.map_err(AgentError::from),
                () = cancel.cancelled() => break Err(AgentError::Cancelled),
                Some(flushed) = &mut flushing, if flush_running => {
                    flushed?;
                    flushing.set(None.into());
                    flush_running = false;
                }
                _ = ticker.tick(), if !flush_running => {
                    flushing.set(Some(observer.flush()).into());
                    flush_running = true;
                }
            }
        };
        if let Some(flushed) = flushing.await {
            flushed?;
        }
        ended
    }

    /// Runs one tool call; its failure becomes the output the model sees. A call the tool
    /// refuses (unknown, or arguments that do not fit) fails before anyone is asked.
    async fn run_tool(
        &self,
        call: &ToolCall,
        ctx: &ToolContext,
        observer: &dyn TurnObserver,
    ) -> Result<ToolOutcome, AgentError> {
        observer.tool_started(call).await?;
        let started = Instant::now();
        let result = match self.tools.prepare(&call.name, &call.arguments) {
            Err(err) => Err(err),
            Ok(prepared) => {
                let refusal = match self.tools.policy(&call.name) {
                    Policy::Auto => None,
                    Policy::Deny => Some("the tool policy denies this tool".to_owned()),
                    Policy::Ask => observer.approve(call, &ctx.cancel).await?,
                };
                if ctx.cancel.is_cancelled() {
                    Err(ToolError::Cancelled)
                } else if let Some(reason) = refusal {
                    Err(ToolError::Refused(reason))
                } else {
                    self.run_reporting(call, ctx, prepared, observer).await
                }
            }
        };
        let label = match &result {
            Ok(_) => "ok",
            Err(ToolError::Refused(_)) => "refused",
            Err(ToolError::Cancelled) => "cancelled",
            Err(ToolError::Timeout(_)) => "timeout",
            Err(ToolError::Unknown(_) | ToolError::InvalidArguments(_)) => "invalid",
            Err(_) => "error",
        };
        // A name the model made up is not a tool: counted under one label.
        let known = !matches!(&result, Err(ToolError::Unknown(_)));
        self.metrics.tool_call(if known { &call.name } else { "unknown" }, label);
        let outcome = match result {
            Ok(output) => ToolOutcome {
                output,
                is_error: false,
                interrupted: false,
                duration: started.elapsed(),
            },
            // An error may carry what the tool's far end sent (an MCP server's message):
            // capped like any output.
            Err(err) => ToolOutcome {
                interrupted: matches!(err, ToolError::Cancelled),
                output: cap_output(format!("error: {err}"), ctx.max_output_bytes),
                is_error: true,
                duration: started.elapsed(),
            },
        };
        observer.tool_finished(call, &outcome).await?;
        Ok(outcome)
    }

    /// Runs a prepared call, passing what it reports on to the observer as it comes, at
    /// most one report per quarter second (each is an event in the session's log).
    async fn run_reporting(
        &self,
        call: &ToolCall,
        ctx: &ToolContext,
        prepared: Prepared,
        observer: &dyn TurnObserver,
    ) -> Result<String, ToolError> {
        let (progress, mut reports) = Progress::channel();
        let ctx = ToolContext { progress, ..ctx.clone() };
        let run = self.tools.run(&ctx, prepared);
        tokio::pin!(run);
        let mut last: Option<Instant> = None;
        loop {
            tokio::select! {
                result = &mut run => return result,
                Some(detail) = reports.recv() => {
                    if last.is_none_or(|at| at.elapsed() >= Duration::from_millis(250)) {
                        last = Some(Instant::now());
                        observer.tool_progress(call, detail);
                    }
                }
            }
        }
    }
}
