//! The benchmark's fake provider (streams `chunks` deltas as fast as the client reads,
//! each stamped with its send time; or paced, or failing, when the message asks) and the baseline relay (the physical limit: accept a
//! WebSocket, stream one upstream completion, forward each delta, nothing else).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{any, post};
use bytes::Bytes;
use futures_util::StreamExt;
use parley::providers::SseParser;

/// Nanoseconds since the epoch: the stamp carried by every chunk.
pub fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Serves the fake provider on a free port.
pub async fn fake_provider(chunks: usize) -> SocketAddr {
    let app = Router::new().route("/v1/chat/completions", post(complete)).with_state(chunks);
    serve(app).await
}

/// For the agent round trip: a request whose user message is `tools` gets a `list_dir`
/// call until two tool results are in the history, then a one-word answer.
fn tool_step(body: &serde_json::Value) -> Option<String> {
    let messages = body["messages"].as_array()?;
    let asks = messages.iter().rev().find(|m| m["role"] == "user")?["content"] == "tools";
    if !asks {
        return None;
    }
    // Tool results of this turn: after the last user message.
    let results = messages
        .iter()
        .rev()
        .take_while(|m| m["role"] != "user")
        .filter(|m| m["role"] == "tool")
        .count();
    let delta = if results < 2 {
        format!(
            "{{\"tool_calls\":[{{\"index\":0,\"id\":\"call{results}\",\"function\":{{\"name\":\"list_dir\",\"arguments\":\"{{}}\"}}}}]}}"
        )
    } else {
        "{\"content\":\"done\"}".to_owned()
    };
    let reason = if results < 2 { "tool_calls" } else { "stop" };
    Some(format!(
        "data: {{\"choices\":[{{\"delta\":{delta}}}]}}\n\ndata: {{\"choices\":[{{\"delta\":{{}},\"finish_reason\":\"{reason}\"}}]}}\n\ndata: [DONE]\n\n"
    ))
}

/// Line `i` of an answer of `chunks` deltas; a delta carries the time it was made.
fn line(i: usize, chunks: usize) -> Bytes {
    Bytes::from(if i < chunks {
        format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{} \"}}}}]}}\n\n", now_ns())
    } else if i == chunks {
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".to_owned()
    } else {
        "data: [DONE]\n\n".to_owned()
    })
}

/// The content of the request's last user message.
fn last_user(body: &serde_json::Value) -> Option<&str> {
    let messages = body["messages"].as_array()?;
    messages.iter().rev().find(|m| m["role"] == "user")?["content"].as_str()
}

/// `pace MS CHUNKS` asks for CHUNKS deltas, one every MS milliseconds, like a model.
fn pace(body: &serde_json::Value) -> Option<(Duration, usize)> {
    let mut words = last_user(body)?.strip_prefix("pace ")?.split_whitespace();
    let ms = words.next()?.parse().ok()?;
    let chunks = words.next()?.parse().ok()?;
    Some((Duration::from_millis(ms), chunks))
}

/// Where in the first interval a paced answer starts, spread evenly over the answers so
/// that concurrent sessions do not all send their chunks in the same millisecond.
fn phase(pace: Duration) -> Duration {
    static ANSWERS: AtomicU64 = AtomicU64::new(0);
    let n = ANSWERS.fetch_add(1, Ordering::Relaxed);
    // The golden ratio's fractional part spreads consecutive answers evenly.
    pace.mul_f64((n as f64 * 0.618_033_988_75).fract())
}

/// For the soak: `fault 500`, `fault broken` and `fault cut` ask for a provider failure (an
/// HTTP 500, a malformed chunk, a stream cut after its first chunk).
fn fault(body: &serde_json::Value) -> Option<Response> {
    let response = Response::builder().header("content-type", "text/event-stream");
    let chunk =
        || Ok(Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"cut \"}}]}\n\n"));
    let response = match last_user(body)?.strip_prefix("fault ")? {
        "500" => {
            Response::builder().status(500).body(Body::from("{\"error\":{\"message\":\"boom\"}}"))
        }
        "broken" => response.body(Body::from("data: {broken\n\n")),
        _ => response.body(Body::from_stream(futures_util::stream::iter([
            chunk(),
            Err(std::io::Error::other("cut")),
        ]))),
    };
    Some(response.unwrap_or_default())
}

/// For the turn-start figure: how long each `start NS` request took to arrive since the
/// client stamped its message (ns).
static STARTS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// The turn starts noted since the last call.
pub fn take_starts() -> Vec<u64> {
    std::mem::take(&mut *STARTS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// `start NS` (NS: when the client sent it) notes the request's arrival and answers one word.
fn start(body: &serde_json::Value) -> Option<Response> {
    let stamp: u128 = last_user(body)?.strip_prefix("start ")?.trim().parse().ok()?;
    let waited = now_ns().saturating_sub(stamp) as u64;
    STARTS.lock().unwrap_or_else(|e| e.into_inner()).push(waited);
    let reply = "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n\
                 data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                 data: [DONE]\n\n";
    let response = Response::builder().header("content-type", "text/event-stream");
    Some(response.body(Body::from(reply)).unwrap_or_default())
}

async fn complete(State(chunks): State<usize>, body: axum::Json<serde_json::Value>) -> Response {
    if let Some(response) = start(&body) {
        return response;
    }
    if let Some(response) = fault(&body) {
        return response;
    }
    let response = Response::builder().header("content-type", "text/event-stream");
    if let Some(reply) = tool_step(&body) {
        return response.body(Body::from(reply)).unwrap_or_default();
    }
    let body = match pace(&body) {
        Some((every, chunks)) => {
            let first = phase(every);
            Body::from_stream(futures_util::stream::unfold(0, move |i| async move {
                if i > chunks + 1 {
                    return None;
                }
                if i <= chunks {
                    tokio::time::sleep(if i == 0 { first } else { every }).await;
                }
                Some((Ok::<_, std::io::Error>(line(i, chunks)), i + 1))
            }))
        }
        None => Body::from_stream(
            futures_util::stream::iter(0..=chunks + 1)
                .map(move |i| Ok::<_, std::io::Error>(line(i, chunks))),
        ),
    };
    response.body(body).unwrap_or_default()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Nagle off, as Parley's own listener has it: otherwise the baseline pays ~40 ms per
    // small write to delayed acknowledgements.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Runs the baseline relay against `provider` until killed; prints its address.
pub async fn relay(provider: String) {
    let client = reqwest::Client::new();
    let app = Router::new().route("/ws", any(upgrade)).with_state((client, provider));
    let addr = serve(app).await;
    println!("relay listening on {addr}");
    std::future::pending::<()>().await;
}

async fn upgrade(State(state): State<(reqwest::Client, String)>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| relay_socket(socket, state.0, state.1))
}

async fn relay_socket(mut socket: WebSocket, client: reqwest::Client, provider: String) {
    while let Some(Ok(message)) = socket.recv().await {
        let Message::Text(content) = message else { continue };
        let body = serde_json::json!({
            "messages": [{"role": "user", "content": content.as_str()}],
            "stream": true,
        });
        let Ok(response) =
            client.post(format!("{provider}/chat/completions")).json(&body).send().await
        else {
            return;
        };
        let mut stream = response.bytes_stream();
        let mut parser = SseParser::default();
        while let Some(Ok(bytes)) = stream.next().await {
            for data in parser.feed(&bytes) {
                if data == "[DONE]" {
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                if let Some(content) = value["choices"][0]["delta"]["content"].as_str() {
                    let frame =
                        serde_json::json!({"type": "chunk", "content": content}).to_string();
                    if socket.send(Message::Text(frame.into())).await.is_err() {
                        return;
                    }
                }
            }
        }
        if socket.send(Message::Text("{\"type\":\"done\"}".into())).await.is_err() {
            return;
        }
    }
}
