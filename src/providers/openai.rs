//! An OpenAI-compatible streaming client (OpenAI, Ollama, vLLM, llama.cpp, OpenRouter...),
//! on the shared [`Upstream`] (time-outs at every stage, retries before the first byte).

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio::time::{Instant, timeout_at};

use super::openai_chunk::{Assembler, request_body};
use super::upstream::{Retries, Upstream};
use super::{ChatRequest, Completion, Delta, Provider, ProviderError};
use crate::config::ProviderConfig;

/// A provider speaking the OpenAI chat-completions API.
pub struct OpenAiProvider {
    upstream: Upstream,
}

impl OpenAiProvider {
    /// A client for `base_url` (including `/v1`).
    pub(crate) fn new(
        base_url: &str,
        config: &ProviderConfig,
        retries: Retries,
    ) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        // A key read from a file often ends in a newline, which no header may carry.
        if let Some(key) = config.api_key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| "the API key is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(Self {
            upstream: Upstream::new(base_url, "/chat/completions", headers, config, retries)?,
        })
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn complete(
        &self,
        model: Option<&str>,
        request: &ChatRequest,
        on_delta: &mut (dyn FnMut(Delta) + Send),
    ) -> Result<Completion, ProviderError> {
        let deadline = Instant::now() + self.upstream.total;
        let body = request_body(request, model);
        let response = self.upstream.send(&body, deadline).await?;
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let mut assembler = Assembler::default();
        if is_json {
            // The server ignored `stream: true` and sent one whole completion.
            let text = timeout_at(deadline, response.text())
                .await
                .map_err(|_| ProviderError::Timeout("reading the response"))?
                .map_err(|e| ProviderError::Unavailable(format!("reading the response: {e}")))?;
            assembler.apply(&text, on_delta)?;
            return assembler.finish();
        }
        let mut on_event = |data: &str| {
            if data.trim() == "[DONE]" {
                return Ok(true);
            }
            assembler.apply(data, on_delta).map(|()| false)
        };
        let (done, rest) = self.upstream.read_events(response, deadline, &mut on_event).await?;
        if !done {
            if let Some(data) = rest.filter(|d| d.trim() != "[DONE]") {
                assembler.apply(&data, on_delta)?;
            }
            if !assembler.finished() {
                return Err(ProviderError::Unavailable(
                    "the stream ended before the answer was complete".into(),
                ));
            }
        }
        assembler.finish()
    }

    fn kind(&self) -> &'static str {
        "openai"
    }

    fn describe(&self) -> String {
        format!("openai-compatible at {}", self.upstream.base_url)
    }
}
