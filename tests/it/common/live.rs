//! Live clients: a WebSocket client and an SSE client that read JSON frames with a time
//! limit, so a missing frame fails the test instead of hanging it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestServer;

/// How long a test waits for one frame before failing.
const FRAME_WAIT: Duration = Duration::from_secs(15);

/// A WebSocket client.
pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The sub-protocol the server chose.
    pub protocol: Option<String>,
    /// The `X-Request-Id` of the upgrade response.
    pub request_id: Option<String>,
}

impl WsClient {
    /// Connects to `path` (with its query) on the server, offering `protocols`.
    pub async fn connect_with(server: &TestServer, path: &str, protocols: &[&str]) -> Self {
        Self::connect_as(server, path, protocols, Some(&server.token)).await
    }

    /// Connects with `token` as a bearer header (or no credentials at all).
    pub async fn connect_as(
        server: &TestServer,
        path: &str,
        protocols: &[&str],
        token: Option<&str>,
    ) -> Self {
        Self::try_connect(server, path, protocols, token, &[]).await.expect("websocket connects")
    }

    /// Tries to connect, returning the refusal's status and body.
    pub async fn try_connect(
        server: &TestServer,
        path: &str,
        protocols: &[&str],
        token: Option<&str>,
        extra_headers: &[(&str, &str)],
    ) -> Result<Self, (u16, String)> {
        Self::try_connect_at(&server.base, path, protocols, token, extra_headers).await
    }

    /// Connects to `path` on the server at `base` (`http://host:port`) with `token`.
    pub async fn connect_at(base: &str, path: &str, token: &str) -> Self {
        let connected = Self::try_connect_at(base, path, &["parley.v1"], Some(token), &[]).await;
        connected.expect("websocket connects")
    }

    async fn try_connect_at(
        base: &str,
        path: &str,
        protocols: &[&str],
        token: Option<&str>,
        extra_headers: &[(&str, &str)],
    ) -> Result<Self, (u16, String)> {
        let url = format!("{}{path}", base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        for (name, value) in extra_headers {
            let name: reqwest::header::HeaderName = name.parse().unwrap();
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        if !protocols.is_empty() {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocols.join(", ").parse().unwrap());
        }
        let (stream, response) = match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body =
                    response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
                return Err((response.status().as_u16(), body.unwrap_or_default()));
            }
            Err(err) => panic!("websocket failed: {err}"),
        };
        let header =
            |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let (protocol, request_id) = (header("sec-websocket-protocol"), header("x-request-id"));
        Ok(Self { stream, protocol, request_id })
    }

    /// Connects to `path` with the `parley.v1` sub-protocol.
    pub async fn connect(server: &TestServer, path: &str) -> Self {
        Self::connect_with(server, path, &["parley.v1"]).await
    }

    pub async fn send(&mut self, value: Value) {
        self.stream.send(Message::Text(value.to_string().into())).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::Text(text.to_owned().into())).await.unwrap();
    }

    /// The next JSON text frame (pings and pongs skipped).
    pub async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(FRAME_WAIT, self.stream.next())
                .await
                .expect("a frame arrives in time")
                .expect("the socket is open")
                .expect("the frame is readable");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Close(frame) => panic!("socket closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// The next JSON text frame, or `None` once the socket is closed.
    pub async fn stream_next(&mut self) -> Option<Value> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Frames up to and including the first of type `last`.
    pub async fn until(&mut self, last: &str) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next().await;
            let done = frame["type"] == last;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// The next frame of type `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        self.until(kind).await.pop().unwrap()
    }

    /// The frames that arrive until the server closes the socket.
    pub async fn until_closed(&mut self) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout(FRAME_WAIT, self.stream.next())
                .await
                .expect("closes in time")
            {
                Some(Ok(Message::Text(text))) => frames.push(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return frames,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits for the close frame and returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(FRAME_WAIT, self.stream.next())
                .await
                .expect("closes in time")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// An SSE client yielding `(id, data as JSON)`.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
    pub headers: reqwest::header::HeaderMap,
    /// The `event:` name of the event `next` returned last, if it had one.
    pub event_name: Option<String>,
}

impl SseClient {
    /// Opens `path` with `client`'s credentials.
    pub async fn connect_with_client(
        server: &TestServer,
        client: &reqwest::Client,
        path: &str,
    ) -> Self {
        Self::open(client.get(server.url(path))).await
    }

    /// Opens `path`, with `Last-Event-ID` if given.
    pub async fn connect(server: &TestServer, path: &str, last_event_id: Option<u64>) -> Self {
        let mut request = server.client.get(server.url(path));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        Self::open(request).await
    }

    /// Opens the stream `request` asks for.
    pub async fn open(request: reqwest::RequestBuilder) -> Self {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        Self { response, buffer: String::new(), headers, event_name: None }
    }

    /// The next event with data (comments skipped).
    pub async fn next(&mut self) -> (Option<u64>, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                self.event_name = None;
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix("event:") {
                        self.event_name = Some(rest.trim().to_owned());
                    } else if let Some(rest) = line.strip_prefix("id:") {
                        id = Some(rest.trim().parse().unwrap());
                    } else if let Some(rest) = line.strip_prefix("data:") {
                        data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                    }
                }
                if !data.is_empty() {
                    return (id, serde_json::from_str(&data).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout(FRAME_WAIT, self.response.chunk())
                .await
                .expect("an event arrives in time")
                .unwrap()
                .expect("the stream is open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Whether the server ends the stream (after nothing but comments) in time.
    pub async fn ends(&mut self) -> bool {
        loop {
            let chunk = tokio::time::timeout(FRAME_WAIT, self.response.chunk()).await;
            match chunk {
                Ok(Ok(None)) => return true,
                Ok(Ok(Some(chunk))) => {
                    let text = String::from_utf8_lossy(&chunk);
                    if text.lines().any(|l| !l.is_empty() && !l.starts_with(':')) {
                        return false;
                    }
                }
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    /// Events up to and including the first of type `last`.
    pub async fn until(&mut self, last: &str) -> Vec<(Option<u64>, Value)> {
        let mut events = Vec::new();
        loop {
            let event = self.next().await;
            let done = event.1["type"] == last;
            events.push(event);
            if done {
                return events;
            }
        }
    }
}
