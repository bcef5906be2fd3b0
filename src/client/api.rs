//! The HTTP calls `parley chat` makes: the REST endpoints a person's actions map to and the
//! session's SSE stream, over one reqwest client (https works as it does for providers).

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: the address is wrong or the server is down.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server wants a (different) token.
    #[error("the server refused the token ({message})")]
    Unauthorized { message: String },
    /// The server answered with an error body.
    #[error("{message} ({code})")]
    Api { status: u16, code: String, message: String },
    /// Anything else (a bad URL, a body that is not JSON).
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// Whether the server said the thing asked for does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// How long a call (not the event stream) may take before it is given up: a connection
/// that died without a word must not hold the conversation.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A server and the token to call it with.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// A client of the server at `url` (`http://` or `https://`, with or without a path).
    pub(crate) fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Other(format!(
                "the server address must start with http:// or https://: {base}"
            )));
        }
        // The process-wide TLS crypto provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| ClientError::Other(format!("building the HTTP client: {err}")))?;
        Ok(Self { http, base, token: token.filter(|token| !token.trim().is_empty()) })
    }

    /// The server's address as given.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token.trim()),
            None => request,
        }
    }

    /// Sends `request` and returns its response if it succeeded, or the server's error.
    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        // The server's words reach the terminal: shown, never obeyed.
        let message = body["error"].as_str().map_or_else(
            || status.canonical_reason().unwrap_or("error").to_owned(),
            super::render::shown,
        );
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized { message });
        }
        let code = super::render::shown(body["code"].as_str().unwrap_or("HTTP_ERROR"));
        Err(ClientError::Api { status: status.as_u16(), code, message })
    }

    async fn json(&self, request: RequestBuilder) -> Result<Value, ClientError> {
        let response = self.send(request).await?;
        response.json().await.map_err(|err| self.unreachable(&err))
    }

    fn unreachable(&self, err: &reqwest::Error) -> ClientError {
        // reqwest's own text names the URL; the cause chain says what failed.
        let mut reason = String::from(if err.is_connect() { "no connection" } else { "failed" });
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            reason = cause.to_string();
            source = cause.source();
        }
        ClientError::Unreachable { url: self.base.clone(), reason }
    }

    /// A call: a request that must be answered within [`CALL_TIMEOUT`].
    fn call(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).timeout(CALL_TIMEOUT)
    }

    /// `GET /api/status`: whether the server answers and takes the token.
    pub(crate) async fn status(&self) -> Result<Value, ClientError> {
        self.json(self.call(Method::GET, "/api/status")).await
    }

    /// The session with its newest `limit` messages, or `None` when there is no such
    /// session (yet).
    pub(crate) async fn session(&self, id: &str, limit: u32) -> Result<Option<Value>, ClientError> {
        let path = format!("/api/sessions/{id}?limit={limit}");
        match self.json(self.call(Method::GET, &path)).await {
            Ok(detail) => Ok(Some(detail)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Queues a message; returns its turn id once the server has stored it.
    pub(crate) async fn send_message(
        &self,
        id: &str,
        content: &str,
        model: Option<&str>,
    ) -> Result<String, ClientError> {
        let mut body = json!({"content": content});
        if let Some(model) = model {
            body["model"] = json!(model);
        }
        let request = self.call(Method::POST, &format!("/api/sessions/{id}/messages"));
        let accepted = self.json(request.json(&body)).await?;
        Ok(accepted["turn_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Stops the session's running turn; returns its id, or `None` when nothing ran.
    pub(crate) async fn abort(&self, id: &str) -> Result<Option<String>, ClientError> {
        let request = self.call(Method::POST, &format!("/api/sessions/{id}/abort"));
        let answer = self.json(request).await?;
        Ok(answer["turn_id"].as_str().map(str::to_owned))
    }

    /// Answers an approval request: `approve`, `deny` or `always`.
    pub(crate) async fn decide(&self, request_id: &str, decision: &str) -> Result<(), ClientError> {
        let path = format!("/api/approvals/{}/{decision}", segment(request_id));
        self.json(self.call(Method::POST, &path)).await.map(drop)
    }

    /// Opens the session's event stream after `after` (every event past that `seq`, then
    /// live ones).
    pub(crate) async fn events(&self, id: &str, after: u64) -> Result<Response, ClientError> {
        let request = self
            .request(Method::GET, &format!("/api/sessions/{id}/events"))
            .header("accept", "text/event-stream")
            .header("last-event-id", after.to_string());
        self.send(request).await
    }
}

/// `text` as one URL path segment: anything but unreserved characters percent-encoded.
fn segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_one_path_segment() {
        assert_eq!(segment("4f1c-9a_b.c~"), "4f1c-9a_b.c~");
        assert_eq!(segment("../x/y?z#"), "..%2Fx%2Fy%3Fz%23");
    }
}
