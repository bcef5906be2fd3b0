//! The per-session FIFO queue: many messages run one at a time, in order, none lost.

use serde_json::json;

use crate::common::{FakeProvider, Script, TestServer, test_config, transcript};

#[tokio::test]
async fn a_hundred_queued_messages_run_in_order_with_none_lost() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    for i in 0..100 {
        let (status, body) =
            server.post("/api/sessions/q/messages", json!({"content": format!("m{i}")})).await;
        assert_eq!(status, 202, "{body}");
        assert!(body["turn_id"].is_string());
    }
    let detail =
        server.wait_for("q", |d| d["message_count"] == 200 && d["running_turn"].is_null()).await;
    let expected: Vec<(String, String)> = (0..100)
        .flat_map(|i| {
            [("user".to_owned(), format!("m{i}")), ("assistant".to_owned(), format!("echo: m{i}"))]
        })
        .collect();
    assert_eq!(transcript(&detail), expected);
    // Each turn's model call saw only the turns before it.
    let requests = provider.requests();
    assert_eq!(requests.len(), 100);
    let last_users: Vec<_> = requests
        .iter()
        .map(|r| r["messages"].as_array().unwrap().last().unwrap()["content"].clone())
        .collect();
    assert_eq!(last_users, (0..100).map(|i| json!(format!("m{i}"))).collect::<Vec<_>>());
    assert_eq!(requests[99]["messages"].as_array().unwrap().len(), 1 + 199);
}

#[tokio::test]
async fn a_full_queue_is_refused_with_429_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([Script::slow_text(&["slow"], std::time::Duration::from_millis(500))]);
    let mut config = test_config(dir.path(), Some(&provider));
    config.sessions.queue_depth = 2;
    let server = TestServer::start(config).await;
    let (status, _) = server.post("/api/sessions/full/messages", json!({"content": "m0"})).await;
    assert_eq!(status, 202);
    server.wait_for("full", |d| !d["running_turn"].is_null()).await;
    let mut accepted = 1;
    let mut refused = None;
    for i in 1..5 {
        let response = server
            .client
            .post(server.url("/api/sessions/full/messages"))
            .json(&json!({"content": format!("m{i}")}))
            .send()
            .await
            .unwrap();
        if response.status() == 202 {
            accepted += 1;
        } else {
            assert_eq!(response.status(), 429);
            assert_eq!(response.headers()["retry-after"], "1");
            refused = Some(response.json::<serde_json::Value>().await.unwrap());
        }
    }
    // One running and two waiting.
    assert_eq!(accepted, 3);
    let refused = refused.unwrap();
    assert_eq!(refused["code"], "SESSION_QUEUE_FULL");
    assert_eq!(refused["limit"], 2);
    let detail =
        server.wait_for("full", |d| d["message_count"] == 6 && d["running_turn"].is_null()).await;
    let users: Vec<_> =
        transcript(&detail).into_iter().filter(|(r, _)| r == "user").map(|(_, c)| c).collect();
    assert_eq!(users, vec!["m0", "m1", "m2"]);
}

#[tokio::test]
async fn the_session_page_names_the_turns_waiting_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    provider.push([Script::gated_text(&["working "], gate.clone(), &["done."])]);
    let mut turns = Vec::new();
    for content in ["first", "second", "third"] {
        let (status, body) =
            server.post("/api/sessions/w/messages", json!({"content": content})).await;
        assert_eq!(status, 202, "{body}");
        turns.push(body["turn_id"].as_str().unwrap().to_owned());
    }
    let detail = server.wait_for("w", |d| !d["running_turn"].is_null()).await;
    assert_eq!(detail["running_turn"]["turn_id"], turns[0].as_str());
    assert_eq!((detail["queued"].as_u64(), &detail["queued_turns"]), (Some(2), &json!(turns[1..])));
    gate.notify_one();
    let idle = server.wait_idle("w").await;
    assert_eq!(idle["queued_turns"], json!([]), "{idle}");
}
