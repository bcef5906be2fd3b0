//! Prometheus metrics: what the runtime, the agent and the adapters count, in one registry
//! rendered at `GET /metrics` (OpenMetrics text, which Prometheus scrapes as it is).
//! Counting is a few atomic operations; the gauges that describe the node now (connections,
//! queues, components) are read when scraped.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a turn ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TurnEnd {
    /// `done`, `error`, `cancelled` or `interrupted`.
    pub status: String,
    /// The error code (`PROVIDER_ERROR`, ...), empty unless `error`.
    pub code: String,
}

/// One model call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCall {
    /// The provider's name in the configuration (`default` for `[provider]`).
    pub provider: String,
    pub model: String,
    /// `ok`, `cancelled`, or the failure's kind (`rate_limited`, `timeout`, ...).
    pub outcome: String,
}

/// A model, for what is measured per model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Model {
    pub provider: String,
    pub model: String,
}

/// Tokens of one model, one way.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Tokens {
    pub model: String,
    /// `in` (prompt) or `out` (completion).
    pub direction: String,
}

/// A model given up on for the next in its fallback chain.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Fallback {
    /// The model that failed.
    pub from: String,
    /// The model tried next.
    pub to: String,
}

/// A provider request tried again.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Retry {
    pub provider: String,
    /// Why: `rate_limited` or `unavailable`.
    pub reason: String,
}

/// One tool call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolCall {
    pub tool: String,
    /// `ok`, `error`, `refused`, `invalid`, `timeout` or `cancelled`.
    pub outcome: String,
}

/// How an approval was decided.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApprovalDecision {
    /// `approve`, `always`, `deny`, `expired` or `cancelled`.
    pub decision: String,
}

/// The protocol of a streaming connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Protocol {
    /// `ws`, `sse`, `openai` or `ag-ui`.
    pub protocol: String,
}

/// An MCP server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Server {
    /// Its name in the configuration.
    pub server: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds from 5 ms to about 80 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Seconds from 1 ms to about 16 s, for store writes.
fn store_latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Seconds from 0.1 ms to about 3 s, for a turn's start.
fn start_latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// Every metric of a node.
pub struct Metrics {
    registry: Registry,
    pub turns_started: Counter,
    pub turns_finished: Family<TurnEnd, Counter>,
    pub turn_duration: Histogram,
    pub turn_start: Histogram,
    pub provider_requests: Family<ProviderCall, Counter>,
    pub first_token: Histograms<Model>,
    pub tokens: Family<Tokens, Counter>,
    /// What the tokens cost, by model (only models with prices).
    pub cost: Family<Model, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub fallbacks: Family<Fallback, Counter>,
    pub provider_retries: Family<Retry, Counter>,
    pub tool_calls: Family<ToolCall, Counter>,
    pub approvals: Family<ApprovalDecision, Counter>,
    pub store_writes: Histogram,
    /// Read when scraped.
    pub connections: Family<Protocol, Gauge>,
    pub active_turns: Gauge,
    pub queued_turns: Gauge,
    pub loaded_sessions: Gauge,
    pub store_up: Gauge,
    pub store_ping: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub bus_ping: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub bus_up: Gauge,
    pub mcp_server_up: Family<Server, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics, registered under `parley_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("parley");
        let metrics = Self {
            turns_started: Counter::default(),
            turns_finished: Family::default(),
            turn_duration: latency(),
            turn_start: start_latency(),
            provider_requests: Family::default(),
            first_token: Family::new_with_constructor(latency),
            tokens: Family::default(),
            cost: Family::default(),
            fallbacks: Family::default(),
            provider_retries: Family::default(),
            tool_calls: Family::default(),
            approvals: Family::default(),
            store_writes: store_latency(),
            connections: Family::default(),
            active_turns: Gauge::default(),
            queued_turns: Gauge::default(),
            loaded_sessions: Gauge::default(),
            store_up: Gauge::default(),
            store_ping: Gauge::default(),
            bus_ping: Gauge::default(),
            bus_up: Gauge::default(),
            mcp_server_up: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "turns_started",
            "Turns that began to run",
            metrics.turns_started.clone(),
        );
        registry.register(
            "turns_finished",
            "Turns that ended, by status and error code",
            metrics.turns_finished.clone(),
        );
        registry.register(
            "turn_duration_seconds",
            "Time from a turn's start to its end",
            metrics.turn_duration.clone(),
        );
        registry.register(
            "turn_start_seconds",
            "Time from a turn's start (taken off its session's queue) to its first model call",
            metrics.turn_start.clone(),
        );
        registry.register(
            "provider_requests",
            "Model calls, by provider, model and outcome",
            metrics.provider_requests.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time from sending a model call to its first streamed text or thinking",
            metrics.first_token.clone(),
        );
        registry.register("tokens", "Tokens by model, in (prompt) and out", metrics.tokens.clone());
        registry.register(
            "cost",
            "What model calls cost, by model (in the currency of the configured prices)",
            metrics.cost.clone(),
        );
        registry.register(
            "provider_retries",
            "Provider requests tried again after a failure before the first byte",
            metrics.provider_retries.clone(),
        );
        registry.register(
            "provider_fallbacks",
            "Model calls handed to the next model of a fallback chain",
            metrics.fallbacks.clone(),
        );
        registry.register(
            "tool_calls",
            "Tool calls, by tool and outcome",
            metrics.tool_calls.clone(),
        );
        registry.register("approvals", "Approval decisions", metrics.approvals.clone());
        registry.register(
            "store_write_seconds",
            "Time to write a turn's message or tool call to the store",
            metrics.store_writes.clone(),
        );
        registry.register(
            "connections",
            "Open streaming connections, by protocol",
            metrics.connections.clone(),
        );
        registry.register(
            "active_turns",
            "Turns running on this node",
            metrics.active_turns.clone(),
        );
        registry.register(
            "queued_turns",
            "Turns waiting behind a running one on this node",
            metrics.queued_turns.clone(),
        );
        registry.register(
            "loaded_sessions",
            "Sessions held in memory on this node",
            metrics.loaded_sessions.clone(),
        );
        registry.register(
            "store_up",
            "Whether the store answers (1) or not (0)",
            metrics.store_up.clone(),
        );
        registry.register(
            "store_ping_seconds",
            "Time the store took to answer the scrape's check",
            metrics.store_ping.clone(),
        );
        registry.register(
            "bus_ping_seconds",
            "Time the bus took to answer the scrape's round trip (Redis, when clustered)",
            metrics.bus_ping.clone(),
        );
        registry.register(
            "bus_up",
            "Whether the bus delivers (1) or not (0)",
            metrics.bus_up.clone(),
        );
        registry.register(
            "mcp_server_up",
            "Whether each MCP server runs (1) or not (0)",
            metrics.mcp_server_up.clone(),
        );
        Self { registry, ..metrics }
    }

    /// A model call ended (`first_token`: when its first text or thinking arrived).
    pub fn provider_call(
        &self,
        provider: &str,
        model: &str,
        outcome: &str,
        first_token: Option<Duration>,
    ) {
        let call = ProviderCall {
            provider: provider.to_owned(),
            model: model.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.provider_requests.get_or_create(&call).inc();
        if let Some(first_token) = first_token {
            let model = Model { provider: call.provider, model: call.model };
            self.first_token.get_or_create(&model).observe(first_token.as_secs_f64());
        }
    }

    /// Tokens a model call used.
    pub fn tokens(&self, model: &str, prompt: u64, completion: u64) {
        for (direction, count) in [("in", prompt), ("out", completion)] {
            let labels = Tokens { model: model.to_owned(), direction: direction.to_owned() };
            self.tokens.get_or_create(&labels).inc_by(count);
        }
    }

    /// What a model call cost.
    pub fn cost(&self, provider: &str, model: &str, cost: f64) {
        let labels = Model { provider: provider.to_owned(), model: model.to_owned() };
        self.cost.get_or_create(&labels).inc_by(cost);
    }

    /// A provider request failed before its first byte and is tried again.
    pub fn provider_retry(&self, provider: &str, reason: &str) {
        let labels = Retry { provider: provider.to_owned(), reason: reason.to_owned() };
        self.provider_retries.get_or_create(&labels).inc();
    }

    /// A model failed before answering and the next of its chain was tried.
    pub fn fallback(&self, from: &str, to: &str) {
        self.fallbacks.get_or_create(&Fallback { from: from.to_owned(), to: to.to_owned() }).inc();
    }

    /// A tool call ended.
    pub fn tool_call(&self, tool: &str, outcome: &str) {
        let labels = ToolCall { tool: tool.to_owned(), outcome: outcome.to_owned() };
        self.tool_calls.get_or_create(&labels).inc();
    }

    /// An approval was decided (`approve`, `always`, `deny`, `expired`, `cancelled`).
    pub fn approval(&self, decision: &str) {
        self.approvals.get_or_create(&ApprovalDecision { decision: decision.to_owned() }).inc();
    }

    /// A turn ended after `duration`.
    pub fn turn_finished(&self, status: &str, code: Option<&str>, duration: Duration) {
        let end = TurnEnd { status: status.to_owned(), code: code.unwrap_or_default().to_owned() };
        self.turns_finished.get_or_create(&end).inc();
        self.turn_duration.observe(duration.as_secs_f64());
    }

    /// The registry as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
