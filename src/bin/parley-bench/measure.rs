//! The measurements: streaming relay, fan-out, idle connections, history.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Barrier, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::process::Server;
use super::upstream::now_ns;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Which server a client talks to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Relay,
    Parley,
}

/// Connects a WebSocket; for Parley, authenticated and past `session_start`.
async fn connect(addr: &str, target: Target, session: &str, token: &str) -> Socket {
    let url = match target {
        Target::Relay => format!("ws://{addr}/ws"),
        Target::Parley => format!("ws://{addr}/ws/chat?session_id={session}"),
    };
    let mut request = url.into_client_request().expect("request");
    if target == Target::Parley {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, None, true).await.expect("connect");
    if target == Target::Parley {
        // session_start
        socket.next().await.expect("frame").expect("frame");
    }
    socket
}

/// What a client reads of a frame.
#[derive(Default, serde::Deserialize)]
struct ClientFrame<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    content: std::borrow::Cow<'a, str>,
}

/// Reads frames until `done`, returning the latency of each chunk (ns).
pub async fn read_answer(socket: &mut Socket) -> Vec<u64> {
    let mut latencies = Vec::new();
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else { continue };
        // Only the two fields read: at thousands of sessions the clients share the
        // machine with both servers, so they parse as little as they can.
        let frame: ClientFrame = serde_json::from_str(&text).unwrap_or_default();
        match frame.kind.as_ref() {
            "chunk" => {
                let stamp: u128 = frame.content.trim().parse().unwrap_or(0);
                latencies.push(now_ns().saturating_sub(stamp) as u64);
            }
            "done" | "error" => break,
            _ => {}
        }
    }
    latencies
}

/// One streaming run's figures.
pub struct StreamRun {
    pub chunks: usize,
    pub elapsed: Duration,
    pub latencies: Vec<u64>,
    pub cpu: Duration,
}

/// `sessions` clients each stream one answer at the same time, asking with `content`.
pub async fn stream(
    server: &Server,
    target: Target,
    sessions: usize,
    run: &str,
    token: &str,
    content: &str,
) -> StreamRun {
    let barrier = Arc::new(Barrier::new(sessions + 1));
    let gate = Arc::new(Semaphore::new(200));
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let (addr, token, barrier, gate) =
            (server.addr.clone(), token.to_owned(), barrier.clone(), gate.clone());
        let (content, id) = (content.to_owned(), format!("{run}-{i}"));
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("gate");
            let mut socket = connect(&addr, target, &id, &token).await;
            drop(permit);
            barrier.wait().await;
            let start = match target {
                Target::Relay => content,
                Target::Parley => {
                    serde_json::json!({"type": "message", "content": content}).to_string()
                }
            };
            socket.send(Message::Text(start.into())).await.expect("send");
            read_answer(&mut socket).await
        }));
    }
    barrier.wait().await;
    let cpu = server.cpu();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    StreamRun {
        chunks: latencies.len(),
        elapsed: started.elapsed(),
        cpu: server.cpu() - cpu,
        latencies,
    }
}

/// One session, `watchers` listen-only clients plus the sender: chunks delivered per second.
pub async fn fan_out(
    server: &Server,
    watchers: usize,
    run: usize,
    token: &str,
) -> (usize, Duration) {
    let session = format!("fan{run}-{watchers}");
    let mut sockets = Vec::new();
    for _ in 0..watchers {
        sockets.push(connect(&server.addr, Target::Parley, &session, token).await);
    }
    let mut sender = connect(&server.addr, Target::Parley, &session, token).await;
    let started = Instant::now();
    let message = serde_json::json!({"type": "message", "content": "go"}).to_string();
    sender.send(Message::Text(message.into())).await.expect("send");
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut s| tokio::spawn(async move { read_answer(&mut s).await.len() }))
        .collect();
    let mut delivered = 0;
    for reader in readers {
        delivered += reader.await.expect("reader");
    }
    (delivered, started.elapsed())
}

/// Opens `count` idle authenticated connections; returns (bytes per connection, time per
/// accepted connection).
pub async fn idle_connections(server: &Server, count: usize, token: &str) -> (u64, Duration) {
    let before = server.rss();
    let gate = Arc::new(Semaphore::new(100));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..count {
        let (addr, token, gate) = (server.addr.clone(), token.to_owned(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("gate");
            connect(&addr, Target::Parley, &format!("idle{}", i % 100), &token).await
        }));
    }
    let mut sockets = Vec::with_capacity(count);
    for task in tasks {
        sockets.push(task.await.expect("connect"));
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss();
    drop(sockets);
    (after.saturating_sub(before) / count as u64, elapsed / count as u32)
}

/// `sessions` sessions, one after another, each send `turns` messages one after another,
/// each stamped as it is sent: how long each took to reach the provider as a model request
/// (ns), turn start included. Short conversations, so the figure is the turn's start rather
/// than its history's length.
pub async fn turn_starts(
    server: &Server,
    target: Target,
    token: &str,
    sessions: usize,
    turns: usize,
) -> Vec<u64> {
    super::upstream::take_starts();
    for session in 0..sessions {
        let id = format!("start-{session}");
        let mut socket = connect(&server.addr, target, &id, token).await;
        for _ in 0..turns {
            let content = format!("start {}", now_ns());
            let frame = match target {
                Target::Relay => content,
                Target::Parley => {
                    serde_json::json!({"type": "message", "content": content}).to_string()
                }
            };
            socket.send(Message::Text(frame.into())).await.expect("send");
            read_answer(&mut socket).await;
        }
    }
    super::upstream::take_starts()
}

/// A histogram of Parley's `/metrics`, as scraped.
#[derive(Default)]
pub struct Scraped {
    /// Cumulative counts by upper bound (seconds).
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Scraped {
    /// What was observed between `earlier` and this scrape: the mean, and the upper bound
    /// of the bucket holding the median (seconds).
    pub fn since(&self, earlier: &Scraped) -> (f64, f64) {
        let count = self.count.saturating_sub(earlier.count);
        let mean = (self.sum - earlier.sum) / count.max(1) as f64;
        let median = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .find(|((_, now), (_, then))| (now - then) * 2 >= count)
            .map_or(f64::INFINITY, |((le, _), _)| *le);
        (mean, median)
    }
}

/// Scrapes the histogram `name` from the server's `/metrics`.
pub async fn scrape(server: &Server, token: &str, name: &str) -> Scraped {
    let text = reqwest::Client::new()
        .get(format!("http://{}/metrics", server.addr))
        .bearer_auth(token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let mut scraped = Scraped::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let value = |v: &str| v.trim().parse::<f64>().unwrap_or(0.0);
        if let Some(bucket) = rest.strip_prefix("_bucket{le=\"") {
            let (le, count) = bucket.split_once("\"}").unwrap_or(("inf", "0"));
            let le = le.parse().unwrap_or(f64::INFINITY);
            scraped.buckets.push((le, value(count) as u64));
        } else if let Some(sum) = rest.strip_prefix("_sum ") {
            scraped.sum = value(sum);
        } else if let Some(count) = rest.strip_prefix("_count ") {
            scraped.count = value(count) as u64;
        }
    }
    scraped
}

/// Percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Median of values.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Median client-side duration of a turn with two tool calls against the zero-latency
/// provider: what the gateway itself costs per turn (two extra model calls, two tools,
/// every message and result stored).
pub async fn agent_round_trip(server: &Server, token: &str, turns: usize) -> (Duration, Duration) {
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/chat", server.addr);
    let mut client_side = Vec::new();
    let mut server_side = Vec::new();
    for i in 0..turns {
        let started = Instant::now();
        let response = client
            .post(&url)
            .bearer_auth(token)
            .json(&serde_json::json!({"content": "tools", "session_id": format!("rt{}", i % 10)}))
            .send()
            .await
            .expect("chat");
        let body: serde_json::Value = response.json().await.expect("json");
        client_side.push(started.elapsed().as_secs_f64());
        assert_eq!(body["tool_calls"].as_array().map(Vec::len), Some(2), "{body}");
        server_side.push(body["duration_ms"].as_f64().unwrap_or(0.0) / 1e3);
    }
    let secs = |v: Vec<f64>| Duration::from_secs_f64(median(v));
    (secs(client_side), secs(server_side))
}
