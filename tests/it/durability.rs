//! Durability: restarts, crashes, cancel and graceful shutdown lose nothing acknowledged.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::common::{
    FakeProvider, Script, TestServer, json_of, statuses, transcript, wait_for_session,
};

#[tokio::test]
async fn a_session_survives_a_restart_with_its_messages_and_tool_calls() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider
        .push([Script::tool_call("c1", "list_dir", json!({}), 1), Script::text(&["empty folder"])]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, _) = server.chat("keep", "what is here?").await;
    assert_eq!(status, 200);
    let (_, before) = server.get("/api/sessions/keep").await;
    server.stop().await;

    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, after) = server.get("/api/sessions/keep").await;
    assert_eq!(status, 200);
    assert_eq!(transcript(&after), transcript(&before));
    assert_eq!(after["messages"][1]["tool_calls"][0]["name"], "list_dir");
    let (_, timeline) = server.get("/api/sessions/keep/tool-calls").await;
    assert_eq!(timeline["items"][0]["id"], "c1");

    // Sequence numbers never go back across the restart.
    let last_before = before["last_seq"].as_u64().unwrap();
    let (status, _) = server.chat("keep", "again").await;
    assert_eq!(status, 200);
    let (_, again) = server.get("/api/sessions/keep").await;
    let newest = again["messages"].as_array().unwrap().last().unwrap()["seq"].as_u64().unwrap();
    assert!(newest > last_before, "{newest} <= {last_before}");
    // And the model got the whole history, tool call included.
    let last = provider.requests().last().unwrap().clone();
    assert_eq!(last["messages"].as_array().unwrap().len(), 1 + 5);
}

#[tokio::test]
async fn the_stored_partial_answer_grows_while_streaming_and_the_final_text_wins() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let parts: Vec<String> = (0..60).map(|i| format!("w{i} ")).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(10))]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, _) = server.post("/api/sessions/grow/messages", json!({"content": "go"})).await;
    assert_eq!(status, 202);
    // Seen streaming with some text, then with more: the flushes after the first one
    // (the shared writer's) reach the store too.
    let streaming_text = |d: &serde_json::Value| {
        let messages = d["messages"].as_array().unwrap();
        let answer = messages.iter().find(|m| m["role"] == "assistant")?;
        (answer["status"] == "streaming").then(|| answer["content"].as_str().unwrap().len())
    };
    let first = server.wait_for("grow", |d| streaming_text(d).is_some_and(|n| n > 0)).await;
    let first = streaming_text(&first).unwrap();
    server.wait_for("grow", |d| streaming_text(d).is_some_and(|n| n > first)).await;
    let detail = server.wait_idle("grow").await;
    let answer = &detail["messages"][1];
    assert_eq!(answer["status"], "complete");
    assert_eq!(answer["content"], parts.concat());
    // Nothing written late brings back an older partial.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, again) = server.get("/api/sessions/grow").await;
    assert_eq!(again["messages"][1]["content"], parts.concat());
    assert_eq!(again["messages"][1]["status"], "complete");
}

#[tokio::test]
async fn abort_mid_stream_stores_the_partial_answer_marked_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let parts: Vec<&str> = std::iter::repeat_n("word ", 200).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(20))]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, _) =
        server.post("/api/sessions/ab/messages", json!({"content": "talk a lot"})).await;
    assert_eq!(status, 202);
    server
        .wait_for("ab", |d| {
            d["messages"].as_array().unwrap().iter().any(|m| m["status"] == "streaming")
        })
        .await;
    let (status, body) = server.post("/api/sessions/ab/abort", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["aborted"], true);
    let detail = server.wait_idle("ab").await;
    let answer = &detail["messages"][1];
    assert_eq!(answer["status"], "interrupted");
    let text = answer["content"].as_str().unwrap();
    assert!(text.starts_with("word ") && text.len() < 200 * 5, "{text:?}");
    // The session takes new turns.
    let (status, body) = server.chat("ab", "next").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "echo: next");
}

/// A `parley serve` process, killed if the test ends early.
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) base: String,
    /// Its log (standard output) so far.
    pub(crate) log: Arc<Mutex<String>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn spawn_parley(dir: &Path, provider: &FakeProvider, grace_secs: u64) -> Process {
    spawn_parley_with(dir, provider, grace_secs, &[])
}

/// [`spawn_parley`] with more environment.
pub(crate) fn spawn_parley_with(
    dir: &Path,
    provider: &FakeProvider,
    grace_secs: u64,
    env: &[(&str, &str)],
) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("serve")
        .current_dir(dir)
        .env("PARLEY_LISTEN", "127.0.0.1:0")
        .env("PARLEY_DATA_DIR", dir.join("data"))
        .env("PARLEY_PROVIDER_URL", provider.url())
        .env("PARLEY_SESSIONS__PARTIAL_FLUSH_MS", "20")
        .env("PARLEY_AUTH_MODE", "none")
        .env("PARLEY_SHUTDOWN_GRACE_SECS", grace_secs.to_string())
        .envs(env.iter().copied())
        .env_remove("PARLEY_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (base, log) = crate::common::listening(&mut child);
    Process { child, base, log }
}

/// Sends a message to be queued in `session`; it must be acknowledged (202).
async fn accept(client: &reqwest::Client, base: &str, session: &str, content: &str) {
    let response = client
        .post(format!("{base}/api/sessions/{session}/messages"))
        .json(&json!({"content": content}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{content} is acknowledged");
}

async fn get(client: &reqwest::Client, url: String) -> serde_json::Value {
    json_of(client.get(url).send().await.unwrap()).await.1
}

async fn wait_streaming(client: &reqwest::Client, base: &str, session: &str) {
    let streaming = |d: &serde_json::Value| {
        d["messages"].as_array().is_some_and(|m| m.iter().any(|m| m["status"] == "streaming"))
    };
    wait_for_session(client, base, session, streaming).await;
}

// Multi-threaded: the fake provider must keep streaming while the test blocks on the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_the_interrupted_turn_is_marked_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let parts: Vec<&str> = std::iter::repeat_n("chunk ", 500).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(20))]);
    let client = crate::common::client();
    let mut process = spawn_parley(dir.path(), &provider, 5);
    accept(&client, &process.base, "crash", "acknowledged message").await;
    wait_streaming(&client, &process.base, "crash").await;
    process.child.kill().unwrap(); // SIGKILL: no chance to clean up
    process.child.wait().unwrap();

    let mut process = spawn_parley(dir.path(), &provider, 5);
    let detail = get(&client, format!("{}/api/sessions/crash", process.base)).await;
    assert_eq!(detail["messages"][0]["content"], "acknowledged message");
    assert_eq!(detail["messages"][1]["status"], "interrupted");
    assert!(detail["messages"][1]["content"].as_str().unwrap().starts_with("chunk "));
    assert_eq!(detail["state"], "idle");
    let (status, body) = json_of(
        client
            .post(format!("{}/api/chat", process.base))
            .json(&json!({"content": "are you back?", "session_id": "crash"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "echo: are you back?");
    // The model saw the interrupted partial answer as part of the history.
    let last = provider.requests().last().unwrap().clone();
    assert_eq!(last["messages"].as_array().unwrap().len(), 1 + 3);
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

// Multi-threaded: the fake provider must keep streaming while the test blocks on the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_queued_behind_the_one_a_crash_cut_run_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let parts: Vec<&str> = std::iter::repeat_n("chunk ", 500).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(20))]);
    let client = crate::common::client();
    let mut process = spawn_parley(dir.path(), &provider, 5);
    for content in ["the long one", "queued one", "queued two"] {
        accept(&client, &process.base, "q", content).await;
    }
    wait_streaming(&client, &process.base, "q").await;
    process.child.kill().unwrap(); // SIGKILL: the two queued turns never started
    process.child.wait().unwrap();

    let mut process = spawn_parley(dir.path(), &provider, 5);
    // They run once the node is back, without anyone asking, in order.
    let detail = wait_for_session(&client, &process.base, "q", |d| d["state"] == "idle").await;
    let messages = statuses(&detail);
    assert_eq!(
        messages,
        [
            ("user", "complete"),
            ("assistant", "interrupted"),
            ("user", "complete"),
            ("assistant", "complete"),
            ("user", "complete"),
            ("assistant", "complete"),
        ],
        "{detail}"
    );
    let contents: Vec<&str> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents[2..], ["queued one", "echo: queued one", "queued two", "echo: queued two"]);
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_turn_finish_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let parts: Vec<&str> = std::iter::repeat_n("bit ", 20).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(25))]);
    let client = crate::common::client();
    let mut process = spawn_parley(dir.path(), &provider, 30);
    let response = client
        .post(format!("{}/api/sessions/term/messages", process.base))
        .json(&json!({"content": "finish please"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    wait_streaming(&client, &process.base, "term").await;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(process.child.id() as i32, libc::SIGTERM) };
    let status = process.child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let mut process = spawn_parley(dir.path(), &provider, 5);
    let detail = get(&client, format!("{}/api/sessions/term", process.base)).await;
    assert_eq!(detail["messages"][1]["status"], "complete");
    assert_eq!(detail["messages"][1]["content"], "bit ".repeat(20));
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

// Multi-threaded: the fake provider must keep streaming while the test blocks on the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_still_queued_at_a_graceful_stop_run_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let parts: Vec<&str> = std::iter::repeat_n("long ", 2000).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(20))]);
    let client = crate::common::client();
    // A grace period shorter than the running answer: it is cut, the queued one waits.
    let mut process = spawn_parley(dir.path(), &provider, 1);
    accept(&client, &process.base, "grace", "the long one").await;
    wait_streaming(&client, &process.base, "grace").await;
    // The second one's sender waits for its answer.
    let waiting = tokio::spawn(
        client
            .post(format!("{}/api/chat", process.base))
            .json(&json!({"content": "waiting", "session_id": "grace"}))
            .send(),
    );
    wait_for_session(&client, &process.base, "grace", |d| d["queued"] == 1).await;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(process.child.id() as i32, libc::SIGTERM) };
    // It is told the turn stays queued (not an error): it runs after the restart.
    let (status, body) = json_of(waiting.await.unwrap().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["status"].as_str(), body["reply"].as_str()), (Some("queued"), Some("")));
    assert!(process.child.wait().unwrap().success());

    let mut process = spawn_parley(dir.path(), &provider, 5);
    let settled = |d: &serde_json::Value| {
        d["state"] == "idle" && d["messages"].as_array().is_some_and(|m| m.len() == 4)
    };
    let detail = wait_for_session(&client, &process.base, "grace", settled).await;
    let messages = detail["messages"].as_array().unwrap();
    assert_eq!(messages[1]["status"], "interrupted", "{detail}");
    assert_eq!(messages[2]["content"], "waiting");
    assert_eq!(messages[3]["content"], "echo: waiting", "the queued turn ran: {detail}");
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

#[tokio::test]
async fn config_command_prints_the_effective_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("parley.toml"),
        "listen = \"127.0.0.1:9999\"\n[agent]\nmax_iterations = 7\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["config", "--model", "from-flag"])
        .current_dir(dir.path())
        .env("PARLEY_API_KEY", "sk-very-secret")
        .env("PARLEY_LISTEN", "127.0.0.1:7777")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains("sk-very-secret"), "{text}");
    assert!(text.contains("api_key = \"***\""), "{text}");
    assert!(text.contains("listen = \"127.0.0.1:7777\""), "env beats the file: {text}");
    assert!(text.contains("max_iterations = 7"), "the file is read: {text}");
    assert!(text.contains("model = \"from-flag\""), "flags apply: {text}");

    let output = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["config", "--listen", "127.0.0.1:5555"])
        .current_dir(dir.path())
        .env("PARLEY_LISTEN", "127.0.0.1:7777")
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:5555\""), "flags beat env: {text}");
}

#[tokio::test]
async fn refuses_to_run_without_authentication_on_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .current_dir(dir.path())
        .env("PARLEY_AUTH_MODE", "none")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("loopback"), "{text}");
}
