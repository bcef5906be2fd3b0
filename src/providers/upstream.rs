//! The HTTP side every streaming provider shares: one client with the configured connect
//! time-out, retries (429, 5xx, connect errors) with backoff until the response headers
//! arrive, typed errors from a failed status, and the SSE stream read under the first-byte,
//! idle and total deadlines.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use tokio::time::{Instant, timeout_at};

use super::{ProviderError, SseParser};
use crate::config::ProviderConfig;
use crate::metrics::Metrics;

/// Longest `Retry-After` Parley honours before giving up on a retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// One provider endpoint and the limits its calls run under.
pub(super) struct Upstream {
    client: reqwest::Client,
    /// The base URL for messages and logs (`http://host/v1`), its password and query as
    /// `***`.
    pub base_url: String,
    endpoint: String,
    /// Sent with every request (credentials, API version).
    headers: HeaderMap,
    first_byte: Duration,
    idle: Duration,
    /// Longest a whole call may take.
    pub total: Duration,
    max_retries: u32,
    retry_base: Duration,
    retries: Retries,
}

/// Where a provider's retries are counted: each try again after a failure, by the
/// provider's configured name and the failure's kind.
#[derive(Clone)]
pub(crate) struct Retries {
    metrics: std::sync::Arc<Metrics>,
    provider: String,
}

impl Retries {
    /// Retries of `provider`, counted in `metrics`.
    pub(crate) fn new(metrics: std::sync::Arc<Metrics>, provider: &str) -> Self {
        Self { metrics, provider: provider.to_owned() }
    }
}

impl Upstream {
    /// The endpoint `path` under `base_url` (which includes `/v1`), with `headers` on every
    /// request.
    pub(super) fn new(
        base_url: &str,
        path: &str,
        headers: HeaderMap,
        config: &ProviderConfig,
        retries: Retries,
    ) -> Result<Self, String> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(format!("provider url must start with http:// or https://: {base_url}"));
        }
        // The process-wide TLS crypto provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(secs(config.connect_timeout_secs))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            client,
            endpoint: format!("{base_url}{path}"),
            base_url: crate::config::redact_url_and_query(&base_url),
            headers,
            first_byte: secs(config.first_byte_timeout_secs),
            idle: secs(config.idle_timeout_secs),
            total: secs(config.total_timeout_secs),
            max_retries: config.max_retries,
            retry_base: Duration::from_millis(config.retry_base_ms),
            retries,
        })
    }

    /// Posts `body`, retrying 429, 5xx and connect errors with backoff until the response
    /// headers arrive.
    pub(super) async fn send(
        &self,
        body: &serde_json::Value,
        deadline: Instant,
    ) -> Result<Response, ProviderError> {
        let mut attempt = 0;
        loop {
            let first_byte_deadline = deadline.min(Instant::now() + self.first_byte);
            let request = self.client.post(&self.endpoint).headers(self.headers.clone()).json(body);
            let error = match timeout_at(first_byte_deadline, request.send()).await {
                Err(_) => return Err(ProviderError::Timeout("waiting for the first byte")),
                Ok(Ok(response)) if response.status().is_success() => return Ok(response),
                Ok(Ok(response)) => status_error(response).await,
                Ok(Err(err)) if err.is_connect() => {
                    ProviderError::Unavailable(format!("cannot connect to {}", self.base_url))
                }
                Ok(Err(err)) if err.is_timeout() => ProviderError::Timeout("connecting"),
                Ok(Err(err)) => ProviderError::Unavailable(format!("request failed: {err}")),
            };
            if !self.wait_to_retry(&error, attempt, deadline).await {
                return Err(error);
            }
            attempt += 1;
        }
    }

    /// Waits before trying again after `error` on try number `attempt` (from 0) and says
    /// so in the log; `false` at once when it is not worth another try: not retryable
    /// (only rate limits and unavailability are), out of tries, or past `deadline`.
    pub(super) async fn wait_to_retry(
        &self,
        error: &ProviderError,
        attempt: u32,
        deadline: Instant,
    ) -> bool {
        let retryable =
            matches!(error, ProviderError::RateLimited { .. } | ProviderError::Unavailable(_));
        if !retryable || attempt >= self.max_retries {
            return false;
        }
        let backoff = match error {
            ProviderError::RateLimited { retry_after: Some(after) } => *after,
            _ => self.retry_base * 2u32.saturating_pow(attempt) + jitter(self.retry_base),
        };
        if backoff > MAX_RETRY_AFTER || Instant::now() + backoff >= deadline {
            return false;
        }
        tracing::warn!(attempt, kind = error.kind(), ?backoff, "provider call failed; retrying");
        self.retries.metrics.provider_retry(&self.retries.provider, error.kind());
        tokio::time::sleep(backoff).await;
        true
    }

    /// Reads the SSE stream of `response`, handing each event's data to `on_event` until
    /// it returns `true` (the provider said it is done) or the stream ends. Returns whether
    /// it was said to be done, and the data of an event the stream ended inside.
    pub(super) async fn read_events(
        &self,
        response: Response,
        deadline: Instant,
        on_event: &mut (dyn FnMut(&str) -> Result<bool, ProviderError> + Send),
    ) -> Result<(bool, Option<String>), ProviderError> {
        let mut stream = response.bytes_stream();
        let mut parser = SseParser::default();
        let mut received_any = false;
        loop {
            let wait = if received_any { self.idle } else { self.first_byte };
            let chunk_deadline = deadline.min(Instant::now() + wait);
            let next = match timeout_at(chunk_deadline, stream.next()).await {
                Ok(next) => next,
                Err(_) if Instant::now() >= deadline => {
                    return Err(ProviderError::Timeout("total time for the answer"));
                }
                Err(_) if received_any => {
                    return Err(ProviderError::Timeout("idle between chunks"));
                }
                Err(_) => return Err(ProviderError::Timeout("waiting for the first byte")),
            };
            let bytes = match next {
                None => return Ok((false, parser.finish())),
                Some(Ok(bytes)) => bytes,
                Some(Err(err)) => {
                    return Err(ProviderError::Unavailable(format!("the stream was cut: {err}")));
                }
            };
            received_any = true;
            for data in parser.feed(&bytes) {
                if on_event(&data)? {
                    return Ok((true, None));
                }
            }
        }
    }
}

/// Maps an unsuccessful HTTP status to a typed error, reading the provider's message
/// (`{"error": {"message"}}` in both OpenAI's and Anthropic's shape).
async fn status_error(response: Response) -> ProviderError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            error.get("message").or(Some(error))?.as_str().map(str::to_owned)
        })
        .unwrap_or(body);
    let message: String = message.chars().take(300).collect();
    match status {
        StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited { retry_after },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            ProviderError::Auth { status: status.as_u16() }
        }
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
            ProviderError::Timeout("the provider's own time-out")
        }
        // 5xx, Anthropic's 529 "overloaded" among them: worth another try.
        s if s.is_server_error() => ProviderError::Unavailable(format!("HTTP {s}: {message}")),
        s => ProviderError::Rejected { status: s.as_u16(), message },
    }
}

fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::from_secs(60))
}

/// Up to `base` of randomness, so retrying clients do not move in lock-step.
fn jitter(base: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u64 % 1000;
    base * random as u32 / 1000
}
