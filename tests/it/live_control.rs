//! Cancel from every entry point, tool approvals, and the running-turn list.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::live::{SseClient, WsClient};
use crate::common::{FakeProvider, Script, TestServer, test_config};

#[tokio::test]
async fn cancel_frame_stops_a_streaming_answer_and_keeps_the_partial() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let parts: Vec<&str> = std::iter::repeat_n("more ", 1000).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(10))]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=stop").await;
    let mut watcher = WsClient::connect(&server, "/ws/chat?session_id=stop").await;
    ws.next().await;
    watcher.next().await;
    ws.send(json!({"type": "message", "content": "talk"})).await;
    ws.next_of("chunk").await;
    ws.next_of("chunk").await;
    ws.send(json!({"type": "cancel"})).await;
    let cancelled = ws.next_of("cancelled").await;
    let partial = cancelled["partial"].as_str().unwrap().to_owned();
    assert!(partial.starts_with("more more ") && partial.len() < 5000, "{partial}");
    // Every watcher is told.
    assert_eq!(watcher.next_of("cancelled").await["partial"], partial.as_str());
    let detail = server.wait_idle("stop").await;
    assert_eq!(detail["messages"][1]["status"], "interrupted");
    assert_eq!(detail["messages"][1]["content"], partial.as_str());
}

#[tokio::test]
async fn cancel_before_the_first_byte_drops_the_provider_request() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([Script::Slow(Duration::from_secs(60), Box::new(Script::text(&["too late"])))]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, body) =
        server.post("/api/sessions/wait/messages", json!({"content": "hello?"})).await;
    assert_eq!(status, 202);
    let turn_id = body["turn_id"].as_str().unwrap().to_owned();
    // Wait until the request reached the provider, then kill the turn by id.
    for _ in 0..500 {
        if !provider.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, agents) = server.get("/api/agents").await;
    assert_eq!(agents["items"][0]["turn_id"], turn_id.as_str());
    assert_eq!(agents["items"][0]["session_id"], "wait");
    let (_, status) = server.get("/api/status").await;
    assert_eq!(agents["items"][0]["node_id"], status["node_id"], "the node running it");
    let (status, body) = server.post(&format!("/api/agents/{turn_id}/kill"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let detail = server.wait_idle("wait").await;
    assert_eq!(detail["message_count"], 1, "no answer was stored: {detail}");
    let (_, agents) = server.get("/api/agents").await;
    assert_eq!(agents["items"], json!([]));
}

fn alive(pid: i32) -> bool {
    // A zombie has exited; only a running or sleeping process counts.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test]
async fn cancel_kills_a_running_shell_and_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let command = "sleep 31 & echo $! > bg.pid; echo $$ > sh.pid; sleep 30";
    provider.push([Script::tool_call("s", "shell", json!({"command": command}), 2)]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=sh").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "sleep"})).await;
    ws.next_of("tool_call").await;
    let workspace = dir.path().join("workspace/default");
    let mut pids = Vec::new();
    for _ in 0..500 {
        let read = |name: &str| {
            std::fs::read_to_string(workspace.join(name))
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
        };
        if let (Some(sh), Some(bg)) = (read("sh.pid"), read("bg.pid")) {
            pids = vec![sh, bg];
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pids.len(), 2, "the command started");
    assert!(pids.iter().all(|&pid| alive(pid)));
    let (status, body) = server.post("/api/sessions/sh/abort", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["aborted"], true);
    let frames = ws.until("cancelled").await;
    let result = frames.iter().find(|f| f["type"] == "tool_result").expect("the tool call ended");
    assert_eq!(result["is_error"], true);
    assert!(result["output"].as_str().unwrap().contains("cancelled"));
    for _ in 0..500 {
        if pids.iter().all(|&pid| !alive(pid)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(pids.iter().all(|&pid| !alive(pid)), "processes {pids:?} survived the cancel");
    let (_, timeline) = server.get("/api/sessions/sh/tool-calls").await;
    assert_eq!(timeline["items"][0]["status"], "interrupted");
}

fn approval_config(
    dir: &std::path::Path,
    provider: &FakeProvider,
    timeout_secs: f64,
) -> parley::config::Config {
    let mut config = test_config(dir, Some(provider));
    config.tools.approval.insert("shell".into(), "ask".into());
    config.tools.approval.insert("write_file".into(), "deny".into());
    config.tools.approval_timeout_secs = timeout_secs;
    config
}

#[tokio::test]
async fn approvals_approved_denied_always_and_refused_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([
        Script::tool_call("a1", "shell", json!({"command": "echo approved"}), 1),
        Script::tool_call("a2", "shell", json!({"command": "echo never"}), 1),
        Script::tool_call("a3", "write_file", json!({"path": "x.txt", "content": "x"}), 1),
        Script::tool_call("a4", "shell", json!({"command": "echo always"}), 1),
        Script::tool_call("a5", "shell", json!({"command": "echo remembered"}), 1),
        Script::text(&["finished"]),
    ]);
    let server = TestServer::start(approval_config(dir.path(), &provider, 30.0)).await;
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=ap").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "run things"})).await;

    // Approved over the socket.
    let request = ws.next_of("approval_request").await;
    assert_eq!(request["tool"], "shell");
    assert_eq!(request["args"]["command"], "echo approved");
    assert_eq!(request["timeout_secs"], 30.0);
    let (_, listed) = server.get("/api/approvals").await;
    assert_eq!(listed["items"][0]["request_id"], request["request_id"]);
    ws.send(json!({"type": "approval_response", "request_id": request["request_id"], "decision": "approve"})).await;
    let result = ws.next_of("tool_result").await;
    assert_eq!(result["output"], "approved\n");

    // Denied over REST.
    let request = ws.next_of("approval_request").await;
    let id = request["request_id"].as_str().unwrap();
    let (status, _) = server.post(&format!("/api/approvals/{id}/deny"), json!({})).await;
    assert_eq!(status, 200);
    let result = ws.next_of("tool_result").await;
    assert_eq!(result["is_error"], true);
    assert_eq!(result["code"], "TOOL_ERROR");
    assert!(result["output"].as_str().unwrap().contains("denied"));
    // Deciding it again is a clear 404.
    let (status, body) = server.post(&format!("/api/approvals/{id}/approve"), json!({})).await;
    assert_eq!(status, 404, "{body}");

    // Refused by policy without asking.
    let frames = ws.until("tool_result").await;
    assert!(frames.iter().all(|f| f["type"] != "approval_request"));
    assert!(frames.last().unwrap()["output"].as_str().unwrap().contains("policy"));
    assert!(!dir.path().join("workspace/default/x.txt").exists());

    // "Always" approves this call and the next shell call of the session.
    let request = ws.next_of("approval_request").await;
    ws.send(json!({"type": "approval_response", "request_id": request["request_id"], "decision": "always"})).await;
    assert_eq!(ws.next_of("tool_result").await["output"], "always\n");
    let frames = ws.until("tool_result").await;
    assert!(frames.iter().all(|f| f["type"] != "approval_request"), "{frames:?}");
    assert_eq!(frames.last().unwrap()["output"], "remembered\n");
    assert_eq!(ws.next_of("done").await["full_response"], "finished");
}

#[tokio::test]
async fn an_unanswered_approval_expires_and_the_tool_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([
        Script::tool_call("e", "shell", json!({"command": "echo nope"}), 1),
        Script::text(&["ok"]),
    ]);
    let server = TestServer::start(approval_config(dir.path(), &provider, 0.2)).await;
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=exp").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "try"})).await;
    let request = ws.next_of("approval_request").await;
    let expired = ws.next_of("approval_expired").await;
    assert_eq!(expired["request_id"], request["request_id"]);
    let result = ws.next_of("tool_result").await;
    assert!(result["output"].as_str().unwrap().contains("in time"));
    assert_eq!(ws.next_of("done").await["full_response"], "ok");
}

#[tokio::test]
async fn a_pending_approval_reaches_a_client_that_connects_later() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([
        Script::tool_call("late", "shell", json!({"command": "echo late"}), 1),
        Script::text(&["done"]),
    ]);
    let server = TestServer::start(approval_config(dir.path(), &provider, 30.0)).await;
    let (status, _) = server.post("/api/sessions/late/messages", json!({"content": "go"})).await;
    assert_eq!(status, 202);
    for _ in 0..500 {
        if server.get("/api/approvals").await.1["items"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A WebSocket and an SSE client that connect now both get the request.
    let mut sse = SseClient::connect(&server, "/api/sessions/late/events", None).await;
    let (_, from_sse) = sse.next().await;
    assert_eq!(from_sse["type"], "approval_request");
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=late").await;
    assert_eq!(ws.next().await["type"], "session_start");
    let request = ws.next().await;
    assert_eq!(request["type"], "approval_request");
    assert_eq!(request["request_id"], from_sse["request_id"]);
    assert_eq!(request["tool"], "shell");
    ws.send(json!({"type": "approval_response", "request_id": request["request_id"], "decision": "approve"})).await;
    assert_eq!(ws.next_of("tool_result").await["output"], "late\n");
    assert_eq!(ws.next_of("done").await["full_response"], "done");
}

#[tokio::test]
async fn an_admin_sees_and_stops_anyones_turn_and_a_user_only_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([Script::Slow(Duration::from_secs(60), Box::new(Script::text(&["too late"])))]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let dave = crate::common::client_with(&server.token_for("dave", false).await);
    let url = server.url("/api/sessions/theirs/messages");
    let response = dave.post(url).json(&json!({"content": "slow"})).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let turn_id = response.json::<Value>().await.unwrap()["turn_id"].as_str().unwrap().to_owned();
    for _ in 0..500 {
        if !provider.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Who asks, as /api/status tells the web chat.
    let (_, status) = server.get("/api/status").await;
    assert_eq!((status["user"].as_str(), status["admin"].as_bool()), (Some("default"), Some(true)));
    let mine: Value =
        dave.get(server.url("/api/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!((mine["user"].as_str(), mine["admin"].as_bool()), (Some("dave"), Some(false)));
    // The admin's own list is empty; everyone's has dave's turn; dave may not ask for all.
    assert_eq!(server.get("/api/agents").await.1["items"], json!([]));
    let (_, all) = server.get("/api/agents?all=true").await;
    assert_eq!(all["items"][0]["turn_id"], turn_id.as_str());
    assert_eq!(all["items"][0]["user"], "dave");
    let response = dave.get(server.url("/api/agents?all=true")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    // Another user cannot stop it; the admin can.
    let eve = crate::common::client_with(&server.token_for("eve", false).await);
    let url = server.url(&format!("/api/agents/{turn_id}/kill"));
    assert_eq!(eve.post(&url).send().await.unwrap().status(), 404);
    let (status, body) = server.post(&format!("/api/agents/{turn_id}/kill"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..500 {
        if server.get("/api/agents?all=true").await.1["items"] == json!([]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the killed turn is still running");
}
