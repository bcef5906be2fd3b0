//! The Oxios stream, the global lifecycle feed, and every `/ws/chat` error code.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::live::{SseClient, WsClient};
use crate::common::{FakeProvider, Script, TestServer, test_config, transcript};

#[tokio::test]
async fn several_messages_in_flight_on_the_stream_are_each_answered_once() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, ticket) = server.post("/api/chat/ticket", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(ticket["expires_in"], 30);
    let path = format!("/api/chat/stream?ticket={}", ticket["ticket"].as_str().unwrap());
    // The ticket alone authenticates the socket.
    let mut ws = WsClient::connect_as(&server, &path, &[], None).await;

    let messages = [("one", "alpha"), ("two", "beta"), ("one", "gamma"), ("three", "delta")];
    for (i, (session, content)) in messages.iter().enumerate() {
        ws.send(json!({"type": "message", "content": content, "session_id": session, "id": i}))
            .await;
    }
    let mut accepted = HashMap::new();
    let mut tokens: HashMap<String, String> = HashMap::new();
    let mut done: HashMap<String, Value> = HashMap::new();
    while done.len() < messages.len() {
        let frame = ws.next().await;
        let turn = frame["turn_id"].as_str().unwrap_or_default().to_owned();
        match frame["type"].as_str().unwrap() {
            "accepted" => {
                accepted.insert(turn, frame["id"].as_u64().unwrap() as usize);
            }
            "token" => tokens.entry(turn).or_default().push_str(frame["content"].as_str().unwrap()),
            "done" => {
                assert!(done.insert(turn, frame).is_none(), "one done per turn");
            }
            other => panic!("unexpected frame {other}: {frame}"),
        }
    }
    assert_eq!(accepted.len(), messages.len());
    for (turn, index) in &accepted {
        let expected = format!("echo: {}", messages[*index].1);
        assert_eq!(done[turn]["reply"], expected.as_str());
        assert_eq!(tokens[turn], expected);
        assert_eq!(done[turn]["session_id"], messages[*index].0);
    }
    // Persisted exactly once, in order per session.
    let (_, one) = server.get("/api/sessions/one").await;
    assert_eq!(
        transcript(&one).into_iter().map(|(_, c)| c).collect::<Vec<_>>(),
        vec!["alpha", "echo: alpha", "gamma", "echo: gamma"]
    );
    // The ticket was single use.
    let anonymous = crate::common::client();
    let response = anonymous.get(server.url(&path)).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn the_stream_resumes_after_last_seq() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let parts: Vec<&str> = std::iter::repeat_n("z", 30).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(10))]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let mut ws = WsClient::connect_with(&server, "/api/chat/stream?session_id=ox", &[]).await;
    ws.send(json!({"type": "message", "content": "stream"})).await;
    let mut text = String::new();
    let mut last = 0;
    while text.len() < 5 {
        let frame = ws.next().await;
        if frame["type"] == "token" {
            text.push_str(frame["content"].as_str().unwrap());
            last = frame["seq"].as_u64().unwrap();
        }
    }
    drop(ws);
    let mut again = WsClient::connect_with(&server, "/api/chat/stream", &[]).await;
    again.send(json!({"type": "resume", "last_seq": last, "session_id": "ox"})).await;
    loop {
        let frame = again.next().await;
        match frame["type"].as_str().unwrap() {
            "token" => text.push_str(frame["content"].as_str().unwrap()),
            "done" => break,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(text, parts.concat());
}

#[tokio::test]
async fn the_global_feed_carries_lifecycle_events_without_content() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider
        .push([Script::tool_call("g", "list_dir", json!({}), 1), Script::text(&["secret answer"])]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let mut feed = SseClient::connect(&server, "/api/events", None).await;
    let (status, _) = server.chat("feed", "secret question").await;
    assert_eq!(status, 200);
    let events = feed.until("turn_finished").await;
    let kinds: Vec<&str> = events.iter().map(|(_, e)| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["session_created", "turn_started", "tool_called", "turn_finished"]);
    assert_eq!(events[3].1["status"], "done");
    assert!(events.iter().all(|(id, e)| id.is_some() && e["session_id"] == "feed"));
    let raw = serde_json::to_string(&events.iter().map(|(_, e)| e).collect::<Vec<_>>()).unwrap();
    assert!(!raw.contains("secret"), "{raw}");
    // Resumable: after the first event, the rest again.
    let first = events[0].0.unwrap();
    let mut again = SseClient::connect(&server, "/api/events", Some(first)).await;
    assert_eq!(again.next().await.1["type"], "turn_started");
    // Deleting a session is news on the feed, not its end: it goes on after it.
    let deleted = server.client.delete(server.url("/api/sessions/feed")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(feed.until("session_deleted").await.last().unwrap().1["session_id"], "feed");
    assert_eq!(server.chat("after", "more").await.0, 200);
    let events = feed.until("turn_finished").await;
    assert!(events.iter().all(|(_, e)| e["session_id"] == "after"), "{events:?}");
}

#[tokio::test]
async fn a_turn_stopped_by_its_sessions_deletion_finishes_on_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([Script::tool_call("w", "list_dir", json!({}), 1)]);
    let mut config = test_config(dir.path(), Some(&provider));
    config.tools.approval.insert("list_dir".into(), "ask".into());
    let server = TestServer::start(config).await;
    let mut feed = SseClient::connect(&server, "/api/events", None).await;
    let (status, _) = server.post("/api/sessions/doomed/messages", json!({"content": "go"})).await;
    assert_eq!(status, 202);
    feed.until("approval_requested").await;
    let deleted = server.client.delete(server.url("/api/sessions/doomed")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let events = feed.until("session_deleted").await;
    let finished = events.iter().find(|(_, e)| e["type"] == "turn_finished");
    assert_eq!(finished.unwrap().1["status"], "cancelled", "{events:?}");
}

#[tokio::test]
async fn every_frame_error_code_is_produced_and_the_socket_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.sessions.queue_depth = 1;
    config.agent.max_iterations = 1;
    let server = TestServer::start(config).await;
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=codes").await;
    ws.next().await;

    let expect = async |ws: &mut WsClient, frame: &str, code: &str| {
        ws.send_text(frame).await;
        let reply = ws.next_of("error").await;
        assert_eq!(reply["code"], code, "{frame}: {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    expect(&mut ws, "{not json", "INVALID_JSON").await;
    expect(&mut ws, r#"{"type": "dance"}"#, "UNKNOWN_MESSAGE_TYPE").await;
    expect(&mut ws, r#"{"content": "no type"}"#, "UNKNOWN_MESSAGE_TYPE").await;
    expect(&mut ws, r#"{"type": "resume", "last_seq": "x"}"#, "INVALID_JSON").await;
    expect(&mut ws, r#"{"type": "message", "content": "  "}"#, "EMPTY_CONTENT").await;
    let big = json!({"type": "message", "content": "x".repeat(70 * 1024)}).to_string();
    expect(&mut ws, &big, "MESSAGE_TOO_LARGE").await;
    expect(&mut ws, r#"{"type": "cancel"}"#, "NOT_FOUND").await;
    expect(
        &mut ws,
        r#"{"type": "approval_response", "request_id": "nope", "decision": "approve"}"#,
        "NOT_FOUND",
    )
    .await;
    expect(&mut ws, r#"{"type": "connect", "session_id": "../x"}"#, "INVALID_SESSION_ID").await;

    provider.push([Script::status(400, "bad model")]);
    expect(&mut ws, r#"{"type": "message", "content": "fail"}"#, "PROVIDER_ERROR").await;
    provider.push([Script::tool_call("i", "list_dir", json!({}), 1)]);
    expect(&mut ws, r#"{"type": "message", "content": "loop"}"#, "AGENT_ERROR").await;

    provider.push([Script::slow_text(&["slow"], Duration::from_millis(300))]);
    ws.send(json!({"type": "message", "content": "first"})).await;
    ws.next_of("operator_status").await;
    ws.send(json!({"type": "message", "content": "second"})).await;
    expect(&mut ws, r#"{"type": "message", "content": "third"}"#, "SESSION_QUEUE_FULL").await;

    // Still usable after all of that.
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next_of("pong").await["type"], "pong");

    // A frame over the limit closes the socket with 1009; the server goes on.
    let huge = json!({"type": "message", "content": "y".repeat(200 * 1024)}).to_string();
    ws.send_text(&huge).await;
    assert_eq!(ws.close_code().await, Some(1009));
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 200);

    // Without a provider.
    let bare = TestServer::start(test_config(&dir.path().join("bare"), None)).await;
    let mut ws = WsClient::connect(&bare, "/ws/chat").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "anyone?"})).await;
    assert_eq!(ws.next_of("error").await["code"], "PROVIDER_NOT_CONFIGURED");
}

#[tokio::test]
async fn a_connect_frame_switches_session() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    server.chat("left", "hello").await;
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=right").await;
    let first = ws.next().await;
    assert_eq!(first["session_id"], "right", "{first}");
    ws.send(json!({"type": "connect", "session_id": "left", "device_name": "phone"})).await;
    let start = ws.next().await;
    assert_eq!(start["type"], "session_start");
    assert_eq!(start["session_id"], "left");
    assert_eq!(start["resumed"], true);
    assert_eq!(start["message_count"], 2);
    let connected = ws.next().await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["device_name"], "phone");
    ws.send(json!({"type": "message", "content": "again"})).await;
    let done = ws.next_of("done").await;
    assert_eq!(done["session_id"], "left");
}

#[tokio::test]
async fn bad_upgrades_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, body) = server.get("/ws/chat?session_id=..%2Fetc").await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "INVALID_SESSION_ID");
    let (status, body) = server.get("/api/sessions/missing/events").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "NOT_FOUND");
    let anonymous = crate::common::client();
    let response =
        anonymous.get(server.url("/api/chat/stream?ticket=forged")).send().await.unwrap();
    let (status, body) = crate::common::json_of(response).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "AUTH_ERROR");
}

#[tokio::test]
async fn the_server_pings_and_drops_a_peer_that_stops_answering() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.stream.ping_interval_secs = 0.05;
    let server = TestServer::start(config).await;
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=pings").await;
    // Not reading means not answering pings: the server gives up after two intervals.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ws.next().await["type"], "session_start");
    assert_eq!(ws.close_code().await, Some(1008));
}

#[tokio::test]
async fn sse_sends_keep_alive_comments() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.stream.sse_keepalive_secs = 0.05;
    let server = TestServer::start(config).await;
    server.chat("ka", "hi").await;
    let mut response =
        server.client.get(server.url("/api/sessions/ka/events")).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk).starts_with(": keep-alive"), "{chunk:?}");
}
