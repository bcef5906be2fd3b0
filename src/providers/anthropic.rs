//! An Anthropic Messages API streaming client (`kind = "anthropic"`), on the shared
//! [`Upstream`]: the same connect, first-byte, idle and total time-outs and retry rules as
//! the OpenAI-compatible client (529 `overloaded_error` and 429 with `retry-after` are
//! retried before the first byte).

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use super::anthropic_wire::{Assembler, request_body};
use super::upstream::{Retries, Upstream};
use super::{ChatRequest, Completion, Delta, Provider, ProviderError};
use crate::config::ProviderConfig;

/// The API version Parley speaks.
const API_VERSION: &str = "2023-06-01";

/// A provider speaking Anthropic's Messages API.
pub struct AnthropicProvider {
    upstream: Upstream,
    max_tokens: u32,
    /// Tokens of extended thinking asked for (0: none).
    thinking_budget: u32,
}

impl AnthropicProvider {
    /// A client for `base_url` (including `/v1`, as `https://api.anthropic.com/v1`).
    pub(crate) fn new(
        base_url: &str,
        config: &ProviderConfig,
        retries: Retries,
    ) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        // A key read from a file often ends in a newline, which no header may carry.
        if let Some(key) = config.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            let mut value = HeaderValue::from_str(key)
                .map_err(|_| "the API key is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-api-key"), value);
        }
        // Anthropic's own SDKs take the base URL without `/v1`; Parley's includes it.
        if !base_url.trim_end_matches('/').ends_with("/v1") {
            tracing::warn!(
                "the Anthropic provider URL does not end in /v1; requests go to <url>/messages \
                 (for Anthropic's API use https://api.anthropic.com/v1)"
            );
        }
        let thinking_budget = config.thinking_budget_tokens;
        if thinking_budget > 0 && (thinking_budget < 1024 || thinking_budget >= config.max_tokens) {
            return Err(format!(
                "provider.thinking_budget_tokens must be at least 1024 and below provider.max_tokens \
                 ({}), not {thinking_budget}",
                config.max_tokens
            ));
        }
        Ok(Self {
            upstream: Upstream::new(base_url, "/messages", headers, config, retries)?,
            max_tokens: config.max_tokens.max(1),
            thinking_budget,
        })
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    async fn complete(
        &self,
        model: Option<&str>,
        request: &ChatRequest,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<Completion, ProviderError> {
        // The registry gives every Anthropic model its name.
        let model = model.ok_or(ProviderError::NotConfigured)?;
        let deadline = Instant::now() + self.upstream.total;
        let body = request_body(request, model, self.max_tokens, self.thinking_budget);
        let mut attempt = 0;
        loop {
            let response = self.upstream.send(&body, deadline).await?;
            let mut assembler = Assembler::default();
            let mut answered = false;
            let read = {
                let mut forward = |delta: Delta| {
                    answered = true;
                    on_delta(delta);
                };
                let mut on_event = |data: &str| assembler.apply(data, &mut forward);
                self.upstream.read_events(response, deadline, &mut on_event).await
            };
            let rest = match read {
                Ok((_, rest)) => rest,
                // Overloaded (or rate limited) in the stream before a word of the answer:
                // nothing was shown, so it is tried again like a 529.
                Err(error)
                    if !answered
                        && self.upstream.wait_to_retry(&error, attempt, deadline).await =>
                {
                    attempt += 1;
                    continue;
                }
                Err(error) => return Err(error),
            };
            // A stream cut inside its last event leaves a piece that is not an event.
            if let Some(data) = rest {
                let _ = assembler.apply(&data, on_delta);
            }
            if !assembler.finished() {
                return Err(ProviderError::Unavailable(
                    "the stream ended before the answer was complete".into(),
                ));
            }
            return assembler.finish();
        }
    }

    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn describe(&self) -> String {
        format!("anthropic at {}", self.upstream.base_url)
    }
}
