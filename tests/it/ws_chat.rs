//! `/ws/chat`: frames, resume, fan-out across protocols, turns that outlive sockets.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::live::{SseClient, WsClient};
use crate::common::{FakeProvider, Script, TestServer, test_config};

fn types(frames: &[Value]) -> Vec<String> {
    frames.iter().map(|f| f["type"].as_str().unwrap().to_owned()).collect()
}

fn chunks(frames: &[Value]) -> String {
    frames.iter().filter(|f| f["type"] == "chunk").map(|f| f["content"].as_str().unwrap()).collect()
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["seq"].as_u64()).collect()
}

fn assert_contiguous(seqs: &[u64]) {
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "gap or duplicate in {seqs:?}");
    }
}

#[tokio::test]
async fn a_turn_with_a_tool_call_streams_every_frame_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([
        Script::tool_call("call_7", "list_dir", json!({"path": "."}), 2),
        Script::text(&["All ", "done"]),
    ]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=frames&name=Frames").await;
    assert_eq!(ws.protocol.as_deref(), Some("parley.v1"));

    let start = ws.next().await;
    assert_eq!(start["type"], "session_start");
    assert_eq!(start["session_id"], "frames");
    assert_eq!(start["name"], "Frames");
    assert_eq!(start["resumed"], false);
    assert_eq!(start["message_count"], 0);

    ws.send(json!({"type": "message", "content": "look around"})).await;
    let frames = ws.until("done").await;
    assert_eq!(
        types(&frames),
        vec![
            "user_message",
            "operator_status",
            "chunk",
            "chunk_reset",
            "operator_status",
            "tool_call",
            "tool_result",
            "operator_status",
            "chunk",
            "chunk",
            "done",
        ]
    );
    let turn_id = frames[0]["turn_id"].as_str().unwrap();
    assert!(frames.iter().all(|f| f["turn_id"] == turn_id && f["session_id"] == "frames"));
    assert_contiguous(&seqs(&frames));
    assert_eq!(frames[0]["content"], "look around");
    assert_eq!(frames[1]["phase"], "model");
    assert_eq!(frames[2]["content"], "Let me check. ");
    assert_eq!(frames[4]["phase"], "tool");
    assert_eq!(frames[5]["id"], "call_7");
    assert_eq!(frames[5]["name"], "list_dir");
    assert_eq!(frames[5]["args"], json!({"path": "."}));
    assert_eq!(frames[6]["id"], "call_7");
    assert_eq!(frames[6]["is_error"], false);
    assert!(frames[6]["duration_ms"].is_u64());
    let done = &frames[10];
    assert_eq!(done["full_response"], "All done");
    assert_eq!(done["usage"]["total_tokens"], 30);
    assert_eq!(done["model"], "fake-model");
    assert_eq!(done["tool_calls"][0]["name"], "list_dir");

    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next().await["type"], "pong");

    // Reconnecting resumes the same session.
    let mut again =
        WsClient::connect_with(&server, "/ws/chat?session_id=frames", &["zeroclaw.v1"]).await;
    assert_eq!(again.protocol.as_deref(), Some("zeroclaw.v1"));
    let start = again.next().await;
    assert_eq!(start["resumed"], true);
    assert_eq!(start["message_count"], 4);
    assert_eq!(start["last_seq"], done["seq"]);
}

#[tokio::test]
async fn reload_mid_answer_resumes_with_no_gap_and_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let words: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    let parts: Vec<&str> = words.iter().map(String::as_str).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(10))]);
    let server = TestServer::with_provider(dir.path(), &provider).await;

    let mut first = WsClient::connect(&server, "/ws/chat?session_id=reload").await;
    first.next().await;
    first.send(json!({"type": "message", "content": "count"})).await;
    let mut seen = Vec::new();
    while seen.iter().filter(|f: &&Value| f["type"] == "chunk").count() < 5 {
        seen.push(first.next().await);
    }
    let last_seen = seen.last().unwrap()["seq"].as_u64().unwrap();
    drop(first);

    let mut second = WsClient::connect(&server, "/ws/chat?session_id=reload").await;
    assert_eq!(second.next().await["type"], "session_start");
    second.send(json!({"type": "resume", "last_seq": last_seen})).await;
    let rest = second.until("done").await;
    let mut all = seen.clone();
    all.extend(rest.iter().cloned());
    // Live events may reach the new socket before its `resume` is read (only `?last_seq=`
    // resumes before any live event): then the missed ones follow them, each exactly once.
    all.sort_by_key(|frame| frame["seq"].as_u64());
    assert_contiguous(&seqs(&all));
    assert_eq!(chunks(&all), parts.concat());
    assert_eq!(rest.last().unwrap()["full_response"], parts.concat());
}

#[tokio::test]
async fn sse_resumes_after_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let parts: Vec<&str> = std::iter::repeat_n("tick ", 30).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(10))]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, _) = server.post("/api/sessions/sse/messages", json!({"content": "go"})).await;
    assert_eq!(status, 202);
    let mut sse = SseClient::connect(&server, "/api/sessions/sse/events?after=0", None).await;
    assert_eq!(sse.headers["cache-control"], "no-cache");
    assert_eq!(sse.headers["x-accel-buffering"], "no");
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(sse.next().await);
    }
    let last_id = seen.last().unwrap().0.unwrap();
    drop(sse);
    let mut resumed = SseClient::connect(&server, "/api/sessions/sse/events", Some(last_id)).await;
    seen.extend(resumed.until("done").await);
    let ids: Vec<u64> = seen.iter().map(|(id, _)| id.unwrap()).collect();
    assert_contiguous(&ids);
    let frames: Vec<Value> = seen
        .into_iter()
        .map(|(id, data)| {
            assert_eq!(data["seq"].as_u64(), id);
            data
        })
        .collect();
    assert_eq!(frames[0]["type"], "user_message");
    assert_eq!(chunks(&frames), parts.concat());
}

#[tokio::test]
async fn two_websockets_and_an_sse_client_see_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([
        Script::tool_call("t", "list_dir", json!({}), 3),
        Script::slow_text(&["a", "b", "c"], Duration::from_millis(5)),
    ]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let mut one = WsClient::connect(&server, "/ws/chat?session_id=fan").await;
    one.next().await;
    let mut two =
        WsClient::connect_with(&server, "/ws/chat?session_id=fan", &["construct.v1"]).await;
    two.next().await;
    let mut sse = SseClient::connect(&server, "/api/sessions/fan/events", None).await;

    // The second client sends; everyone sees it, including the listen-only ones.
    two.send(json!({"type": "message", "content": "hello all"})).await;
    let a = one.until("done").await;
    let b = two.until("done").await;
    let c: Vec<Value> = sse.until("done").await.into_iter().map(|(_, data)| data).collect();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a[0]["content"], "hello all");
}

#[tokio::test]
async fn a_turn_survives_its_socket_closing() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([Script::slow_text(&["still ", "here"], Duration::from_millis(50))]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=gone").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "answer after I leave"})).await;
    assert_eq!(ws.next().await["type"], "user_message");
    ws.stream.close(None).await.unwrap();
    drop(ws);
    let detail = server.wait_idle("gone").await;
    assert_eq!(detail["messages"][1]["content"], "still here");
    assert_eq!(detail["messages"][1]["status"], "complete");
}

#[tokio::test]
async fn a_watcher_that_reads_nothing_does_not_block_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let big = "x".repeat(2000);
    let parts: Vec<&str> = std::iter::repeat_n(big.as_str(), 3000).collect();
    provider.push([Script::text(&parts)]);
    let mut config = test_config(dir.path(), Some(&provider));
    config.sessions.event_log_capacity = 64;
    let server = TestServer::start(config).await;
    // Connected, but never reads a frame.
    let mut stuck = WsClient::connect(&server, "/ws/chat?session_id=slow").await;
    let (status, _) = server.post("/api/sessions/slow/messages", json!({"content": "flood"})).await;
    assert_eq!(status, 202);
    let detail = server.wait_idle("slow").await;
    assert_eq!(detail["messages"][1]["content"].as_str().unwrap().len(), 2000 * 3000);
    // When it finally reads, it is told it missed events rather than given a silent gap.
    let mut resynced = false;
    for _ in 0..4000 {
        let frame = stuck.next().await;
        if frame["type"] == "resync" {
            resynced = true;
            break;
        }
        if frame["type"] == "done" {
            break;
        }
    }
    assert!(resynced, "a watcher that fell behind the log must get a resync frame");
}
