//! The soak: a fresh `parley serve` under mixed load (REST turns, turns over both
//! WebSocket protocols, SSE replays, sessions created and deleted) with provider faults,
//! its resident memory and open files sampled before, under and after the load. The
//! test suite runs the same mix for correctness; the figures live here because a shared
//! machine makes them too noisy to be pass/fail.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::process::Server;

/// Environment of the soak's server: small event rings that fill at once and sessions
/// evicted after a second idle, so a steady state is reached within a short run.
pub const ENV: &[(&str, &str)] = &[
    ("PARLEY_SESSIONS__EVENT_LOG_CAPACITY", "64"),
    ("PARLEY_SESSIONS__IDLE_EVICT_SECS", "1"),
    ("PARLEY_PROVIDER__MAX_RETRIES", "0"),
];

/// Resident memory (bytes) and open files of the server at one moment.
#[derive(Clone, Copy)]
struct Usage {
    rss: u64,
    files: usize,
}

fn usage(server: &Server) -> Usage {
    Usage { rss: server.rss(), files: server.open_files() }
}

/// What one soak measured.
pub struct Soak {
    clients: usize,
    secs: u64,
    operations: u64,
    /// Operations whose outcome was neither an answer nor a typed provider error, or that
    /// took over 30 s.
    unexpected: u64,
    before: Usage,
    /// Every half second under load.
    samples: Vec<Usage>,
    /// Three seconds after the load (idle sessions evicted).
    after: Usage,
}

/// `clients` clients mix operations against `server` for `secs` seconds.
pub async fn run(server: &Server, token: &str, clients: usize, secs: u64) -> Soak {
    let before = usage(server);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let http = reqwest::Client::new();
    let mut workers = Vec::new();
    for w in 0..clients {
        let client =
            Client { addr: server.addr.clone(), token: token.to_owned(), http: http.clone() };
        workers.push(tokio::spawn(async move {
            // xorshift, a fixed mix per client.
            let mut random = 0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1);
            let (mut operations, mut unexpected) = (0, 0);
            while Instant::now() < deadline {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                // Conversations of about 20 operations: the history sent to the model
                // stays that size, the stored sessions pile up.
                let session = format!("soak{w}-{}", operations / 20);
                let step = client.operation(&session, random % (1 << 20));
                if !tokio::time::timeout(Duration::from_secs(30), step).await.unwrap_or(false) {
                    unexpected += 1;
                }
                operations += 1;
            }
            (operations, unexpected)
        }));
    }
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        samples.push(usage(server));
    }
    let (mut operations, mut unexpected) = (0, 0);
    for worker in workers {
        let (done, odd) = worker.await.unwrap_or((0, 1));
        operations += done;
        unexpected += odd;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    Soak { clients, secs, operations, unexpected, before, samples, after: usage(server) }
}

/// One soak client: the server's address, a token and an HTTP client.
struct Client {
    addr: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// One operation of the mix on `session`; whether its outcome was an expected one.
    async fn operation(&self, session: &str, pick: u64) -> bool {
        const FAULTS: [&str; 3] = ["fault 500", "fault broken", "fault cut"];
        // One turn in five meets a provider fault.
        let content =
            if pick.is_multiple_of(5) { FAULTS[(pick / 5 % 3) as usize] } else { "pace 2 6" };
        match pick % 6 {
            0 | 1 => self.rest_turn(session, content).await,
            2 => self.socket_turn(&format!("/ws/chat?session_id={session}"), content).await,
            3 => self.socket_turn(&format!("/api/chat/stream?session_id={session}"), content).await,
            // An SSE watcher that replays the ring and leaves (a session with no turn yet is
            // not found).
            4 => {
                let url = format!("http://{}/api/sessions/{session}/events?after=0", self.addr);
                match self.http.get(url).bearer_auth(&self.token).send().await {
                    Ok(response) if response.status() == 404 => true,
                    Ok(mut response) => {
                        response.status().is_success() && response.chunk().await.is_ok()
                    }
                    Err(_) => false,
                }
            }
            // Reads, and a throwaway session created and deleted.
            _ => {
                let sessions = format!("http://{}/api/sessions", self.addr);
                let listed = self.http.get(&sessions).bearer_auth(&self.token).send().await;
                let tmp = format!("tmp{pick}");
                let created = self.rest_turn(&tmp, "pace 1 2").await;
                let deleted =
                    self.http.delete(format!("{sessions}/{tmp}")).bearer_auth(&self.token).send();
                listed.is_ok_and(|r| r.status().is_success())
                    && created
                    && deleted.await.is_ok_and(|r| r.status().is_success())
            }
        }
    }

    /// A turn over REST: an answer (200) or a typed provider error (502).
    async fn rest_turn(&self, session: &str, content: &str) -> bool {
        let body = serde_json::json!({"content": content, "session_id": session});
        let url = format!("http://{}/api/chat", self.addr);
        let response = self.http.post(url).bearer_auth(&self.token).json(&body).send().await;
        response.is_ok_and(|r| matches!(r.status().as_u16(), 200 | 502))
    }

    /// A turn over a WebSocket protocol, read to its end, then the socket closes.
    async fn socket_turn(&self, path: &str, content: &str) -> bool {
        let Ok(mut request) = format!("ws://{}{path}", self.addr).into_client_request() else {
            return false;
        };
        let Ok(bearer) = format!("Bearer {}", self.token).parse() else { return false };
        request.headers_mut().insert("authorization", bearer);
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(request).await else {
            return false;
        };
        let message = serde_json::json!({"type": "message", "content": content}).to_string();
        if socket.send(Message::Text(message.into())).await.is_err() {
            return false;
        }
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else { continue };
            let frame: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            match frame["type"].as_str() {
                Some("done") => return true,
                Some("error") => return frame["code"] == "PROVIDER_ERROR",
                _ => {}
            }
        }
        false
    }
}

impl Soak {
    /// The report's section.
    pub fn section(&self) -> String {
        let mib = |b: u64| b as f64 / 1048576.0;
        let third = (self.samples.len() / 3).max(1).min(self.samples.len());
        let (first, last) = (&self.samples[..third], &self.samples[self.samples.len() - third..]);
        let range = |samples: &[Usage], f: &dyn Fn(&Usage) -> f64, unit: &str, digits: usize| {
            let values: Vec<f64> = samples.iter().map(f).collect();
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if values.is_empty() {
                "–".to_owned()
            } else {
                format!("{min:.digits$}–{max:.digits$}{unit}")
            }
        };
        let rss = |u: &Usage| mib(u.rss);
        let files = |u: &Usage| u.files as f64;
        let mut out = String::new();
        writeln!(
            out,
            "\n## Soak ({} clients, {} s of mixed load and provider faults)\n",
            self.clients, self.secs
        )
        .ok();
        writeln!(
            out,
            "A fresh `parley serve` (event rings of 64 events, sessions evicted after 1 s \
             idle); each client mixes REST turns, turns over `/ws/chat` and \
             `/api/chat/stream`, SSE replays and sessions created and deleted; one turn in \
             five meets a provider fault (500, malformed chunk, cut stream). `--soak-secs 600` \
             is the long run.\n"
        )
        .ok();
        writeln!(out, "| figure | before | load, first third | load, last third | 3 s after |")
            .ok();
        writeln!(out, "|---|---:|---:|---:|---:|").ok();
        writeln!(
            out,
            "| resident memory | {:.1} MiB | {} | {} | {:.1} MiB |",
            mib(self.before.rss),
            range(first, &rss, " MiB", 1),
            range(last, &rss, " MiB", 1),
            mib(self.after.rss)
        )
        .ok();
        writeln!(
            out,
            "| open files | {} | {} | {} | {} |",
            self.before.files,
            range(first, &files, "", 0),
            range(last, &files, "", 0),
            self.after.files
        )
        .ok();
        writeln!(
            out,
            "\n{} operations ({:.0}/s), {} with an unexpected outcome. Memory under load after \
             the first third: {:+.2} MiB/min (least squares over the half-second samples).",
            self.operations,
            self.operations as f64 / self.secs.max(1) as f64,
            self.unexpected,
            self.slope() * 60.0 / 1048576.0
        )
        .ok();
        out
    }

    /// RSS growth in bytes per second over the samples after the first third (warm-up).
    fn slope(&self) -> f64 {
        let warm = &self.samples[self.samples.len() / 3..];
        let n = warm.len() as f64;
        if n < 2.0 {
            return 0.0;
        }
        let points = warm.iter().enumerate().map(|(i, u)| (i as f64 * 0.5, u.rss as f64));
        let (sx, sy) = points.clone().fold((0.0, 0.0), |(x, y), (px, py)| (x + px, y + py));
        let (mx, my) = (sx / n, sy / n);
        let (cov, var) = points
            .fold((0.0, 0.0), |(c, v), (x, y)| (c + (x - mx) * (y - my), v + (x - mx) * (x - mx)));
        if var == 0.0 { 0.0 } else { cov / var }
    }
}
