//! Shared test support: the real server on `127.0.0.1:0` with a temporary data folder, the
//! fake provider, and small client helpers.

pub mod cluster;
pub mod fake_anthropic;
pub mod fake_provider;
pub mod live;
pub mod postgres;
pub mod proxy;
pub mod redis;
pub mod terminal;

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use parley::auth::tokens;
use parley::config::Config;
use parley::store::Store;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use fake_provider::{FakeProvider, Script, Step};

/// A reqwest client (installing the TLS crypto provider reqwest needs first).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A client that sends `token` as its bearer token on every request.
pub fn client_with(token: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// A server running in this process.
pub struct TestServer {
    pub base: String,
    /// A client authenticated as the admin user `default`.
    pub client: reqwest::Client,
    /// The bearer token of `client`.
    pub token: String,
    pub store: Arc<dyn Store>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Test defaults: a free port, fast flushes and retries, the fake provider if given; the
/// store is SQLite in `data_dir`, or PostgreSQL with `PARLEY_TEST_STORE=postgres`.
pub fn test_config(data_dir: &Path, provider: Option<&FakeProvider>) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        database_url: postgres::store_url(data_dir),
        ..Config::default()
    };
    config.provider.url = provider.map(FakeProvider::url);
    config.provider.retry_base_ms = 10;
    config.provider.first_byte_timeout_secs = 10.0;
    config.provider.idle_timeout_secs = 10.0;
    config.sessions.partial_flush_ms = 20;
    config.shutdown_grace_secs = 5;
    // Tools run without asking unless a test turns approvals on.
    config.tools.approval.clear();
    // Rate limits only where a test is about them.
    config.limits.turns_per_minute = 0;
    config.limits.requests_per_minute_per_token = 0;
    config.limits.requests_per_minute_per_ip = 0;
    config.limits.auth_failures_per_minute = 0;
    config
}

impl TestServer {
    /// Starts a server on `config`.
    pub async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = parley::server::build(config).await.expect("server builds");
        let store = state.runtime.store().clone();
        let (_, token) =
            tokens::issue(store.as_ref(), "default", true, Some("tests")).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(parley::server::run(listener, state, async {
            let _ = stopped.await;
        }));
        Self { base, client: client_with(&token), token, store, stop: Some(stop), task: Some(task) }
    }

    /// A new token for `user`.
    pub async fn token_for(&self, user: &str, admin: bool) -> String {
        tokens::issue(self.store.as_ref(), user, admin, None).await.unwrap().1
    }

    /// Starts a server with the test defaults in `data_dir`.
    pub async fn with_provider(data_dir: &Path, provider: &FakeProvider) -> Self {
        Self::start(test_config(data_dir, Some(provider))).await
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).ok();
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET returning status and JSON body.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        json_of(response).await
    }

    /// POST with a JSON body, returning status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self.client.post(self.url(path)).json(&body).send().await.unwrap();
        json_of(response).await
    }

    /// Sends `content` to `session` and waits for the answer.
    pub async fn chat(&self, session: &str, content: &str) -> (StatusCode, Value) {
        self.post("/api/chat", serde_json::json!({"content": content, "session_id": session})).await
    }

    /// Polls the session until `done` holds for its detail (no fixed sleeps: a short poll
    /// with an overall limit).
    pub async fn wait_for(&self, session: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_for_session(&self.client, &self.base, session, done).await
    }

    /// Waits until the session has no running or queued turn.
    pub async fn wait_idle(&self, session: &str) -> Value {
        self.wait_for(session, |s| s["running_turn"].is_null() && s["queued"] == 0).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

/// Runs the `parley` command in `dir` on the same store as [`test_config`]'s servers there
/// (SQLite in the folder, or the PostgreSQL schema of `PARLEY_TEST_STORE=postgres`).
pub fn parley_command(dir: &Path) -> impl Fn(&[&str]) -> std::process::Output {
    let (dir, store) = (dir.to_path_buf(), postgres::store_url(dir));
    move |args| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_parley"));
        command.args(args).current_dir(&dir).env_remove("PARLEY_DATABASE_URL");
        if let Some(url) = &store {
            command.env("PARLEY_DATABASE_URL", url);
        }
        command.output().unwrap()
    }
}

/// Status and JSON body of a response; panics if the body is not JSON.
pub async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// The messages of a session detail as `(role, content)` pairs.
/// Polls session `session` of the server at `base` until its detail satisfies `done`
/// (within about ten seconds); returns that detail.
pub async fn wait_for_session(
    client: &reqwest::Client,
    base: &str,
    session: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let url = format!("{base}/api/sessions/{session}?limit=500");
    let mut last = Value::Null;
    for _ in 0..1000 {
        let (status, body) = json_of(client.get(&url).send().await.unwrap()).await;
        if status == StatusCode::OK && done(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("session {session} never reached the expected state: {last}");
}

/// Each message's role and status, in order.
pub fn statuses(detail: &Value) -> Vec<(&str, &str)> {
    let messages = detail["messages"].as_array().unwrap().iter();
    messages.map(|m| (m["role"].as_str().unwrap(), m["status"].as_str().unwrap())).collect()
}

pub fn transcript(detail: &Value) -> Vec<(String, String)> {
    detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Reads a `parley serve` child's standard output until its `listening on ADDR` line;
/// returns the base URL and its log so far, which a thread keeps filling (so the child never
/// blocks on a full pipe). Panics, with the log, if the child exits first.
pub fn listening(child: &mut std::process::Child) -> (String, Arc<std::sync::Mutex<String>>) {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("parley exited before listening:\n{}", log.lock().unwrap());
        };
        log.lock().unwrap().push_str(&format!("{line}\n"));
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
    (base, log)
}
