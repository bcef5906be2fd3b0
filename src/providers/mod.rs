//! LLM providers: the [`Provider`] trait, its typed errors, and the registry of the
//! configured models ([`Models`]) that builds them. One file per provider (and one per wire format), over the HTTP
//! side they share (`upstream`).

mod anthropic;
mod anthropic_wire;
mod models;
mod openai;
mod openai_chunk;
mod sse;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::config::ProviderConfig;
use crate::conversation::{ChatMessage, ToolCall, Usage};

pub use anthropic::AnthropicProvider;
pub use models::{Models, Price, Route, UNNAMED, UnknownModel};
pub use openai::OpenAiProvider;
pub(crate) use openai_chunk::Assembler;
pub use sse::SseParser;
pub(crate) use upstream::Retries;

/// Why a model call failed. Callers branch on the variant, never on the text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("no provider is configured (set PARLEY_PROVIDER_URL)")]
    NotConfigured,
    #[error("the provider is rate limiting requests")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the provider refused the credentials (HTTP {status})")]
    Auth { status: u16 },
    #[error("the provider timed out ({0})")]
    Timeout(&'static str),
    #[error("the provider sent a response Parley cannot use: {0}")]
    BadResponse(String),
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the provider rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
}

impl ProviderError {
    /// What a client is told: the kind of failure in plain words, never the upstream's
    /// address or error body (those go to the log).
    pub fn public_message(&self) -> String {
        match self {
            ProviderError::NotConfigured => self.to_string(),
            ProviderError::RateLimited { .. } => {
                "the model provider is rate limiting requests; try again shortly".into()
            }
            ProviderError::Auth { .. } => "the model provider refused Parley's credentials".into(),
            ProviderError::Timeout(_) => "the model provider did not answer in time".into(),
            ProviderError::BadResponse(_) => {
                "the model provider sent an answer Parley cannot use".into()
            }
            ProviderError::Unavailable(_) => "the model provider is unavailable".into(),
            ProviderError::Rejected { status, .. } => {
                format!("the model provider rejected the request (HTTP {status})")
            }
        }
    }

    /// A short stable name of the failure kind, for clients and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::NotConfigured => "not_configured",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Auth { .. } => "auth",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::BadResponse(_) => "bad_response",
            ProviderError::Unavailable(_) => "unavailable",
            ProviderError::Rejected { .. } => "rejected",
        }
    }
}

/// A tool as offered to the model.
#[derive(Debug, Clone, Serialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments.
    pub parameters: serde_json::Value,
}

/// One model call.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
}

/// A piece of a streaming answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    Text(String),
    Thinking(String),
}

/// A whole model answer, assembled from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub text: String,
    pub thinking: String,
    /// The provider's signature of `thinking` (Anthropic), to send it back with the calls.
    pub thinking_signature: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
}

/// A model behind an API.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Streams one completion of `model` (none: the server's default), handing each delta
    /// to `on_delta` as it arrives. Dropping the future cancels the request.
    async fn complete(
        &self,
        model: Option<&str>,
        request: &ChatRequest,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<Completion, ProviderError>;

    /// The API it speaks (`openai`, `anthropic`), for metrics.
    fn kind(&self) -> &'static str;

    /// A short description for logs and status (`openai at http://host/v1`).
    fn describe(&self) -> String;
}

/// The stand-in used when no provider URL is configured: every turn fails with
/// `PROVIDER_NOT_CONFIGURED` instead of the server refusing to start.
struct Unconfigured;

#[async_trait]
impl Provider for Unconfigured {
    async fn complete(
        &self,
        _model: Option<&str>,
        _request: &ChatRequest,
        _on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<Completion, ProviderError> {
        Err(ProviderError::NotConfigured)
    }

    fn kind(&self) -> &'static str {
        "none"
    }

    fn describe(&self) -> String {
        "none (set PARLEY_PROVIDER_URL)".into()
    }
}

/// Builds a provider with a URL, its retries counted under `retries`.
fn build_one(config: &ProviderConfig, retries: Retries) -> Result<Arc<dyn Provider>, String> {
    let url = config.url.as_deref().unwrap_or_default();
    match config.kind.as_str() {
        "openai" => Ok(Arc::new(OpenAiProvider::new(url, config, retries)?)),
        "anthropic" => Ok(Arc::new(AnthropicProvider::new(url, config, retries)?)),
        other => {
            Err(format!("unknown provider kind {other:?} (expected \"openai\" or \"anthropic\")"))
        }
    }
}
