//! Plain answers, the Oxios response shape and the stored conversation.

use serde_json::json;

use crate::common::{FakeProvider, Script, TestServer, transcript};

#[tokio::test]
async fn plain_answer_is_returned_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([Script::text(&["Hel", "lo ", "world"])]);
    let server = TestServer::with_provider(dir.path(), &provider).await;

    let (status, body) = server
        .post("/api/chat", json!({"message": "hi there", "session_id": "s1", "user_id": "mallory"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "Hello world");
    assert_eq!(body["echo"], "hi there");
    assert_eq!(body["session_id"], "s1");
    assert_eq!(body["status"], "done");
    assert_eq!(body["usage"]["total_tokens"], 15);
    assert_eq!(body["model"], "fake-model");
    assert!(body["turn_id"].as_str().is_some_and(|t| !t.is_empty()));

    let request = &provider.requests()[0];
    assert_eq!(request["stream"], true);
    let roles: Vec<_> =
        request["messages"].as_array().unwrap().iter().map(|m| m["role"].clone()).collect();
    assert_eq!(roles, vec![json!("system"), json!("user")]);
    assert!(request["tools"].as_array().unwrap().iter().any(|t| t["function"]["name"] == "shell"));

    let (status, detail) = server.get("/api/sessions/s1").await;
    assert_eq!(status, 200);
    assert_eq!(
        transcript(&detail),
        vec![("user".into(), "hi there".into()), ("assistant".into(), "Hello world".into())]
    );
    assert_eq!(detail["message_count"], 2);
    assert!(detail["messages"][1]["seq"].as_u64() > detail["messages"][0]["seq"].as_u64());
}

#[tokio::test]
async fn a_chat_without_session_id_creates_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;

    let (status, body) = server.post("/api/chat", json!({"content": "first"})).await;
    assert_eq!(status, 200, "{body}");
    let id = body["session_id"].as_str().unwrap().to_owned();
    assert_eq!(body["reply"], "echo: first");

    let (_, list) = server.get("/api/sessions").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id);
}

#[tokio::test]
async fn sessions_can_be_listed_renamed_paginated_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    for i in 0..3 {
        let (status, _) = server.chat(&format!("s{i}"), "hello").await;
        assert_eq!(status, 200);
    }
    let (_, page) = server.get("/api/sessions?page=1&limit=2").await;
    assert_eq!(page["total"], 3);
    let ids: Vec<_> = page["items"].as_array().unwrap().iter().map(|s| s["id"].clone()).collect();
    assert_eq!(ids, vec![json!("s2"), json!("s1")], "newest first");
    let (_, page2) = server.get("/api/sessions?page=2&limit=2").await;
    assert_eq!(page2["items"][0]["id"], "s0");

    let response = server
        .client
        .patch(server.url("/api/sessions/s1"))
        .json(&json!({"name": "Renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, detail) = server.get("/api/sessions/s1").await;
    assert_eq!(detail["name"], "Renamed");

    let response = server.client.delete(server.url("/api/sessions/s1")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let (status, body) = server.get("/api/sessions/s1").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "NOT_FOUND");
    let (_, list) = server.get("/api/sessions").await;
    assert_eq!(list["total"], 2);
}

#[tokio::test]
async fn messages_page_backwards_with_before_seq() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    for i in 0..5 {
        server.chat("p", &format!("m{i}")).await;
    }
    let (_, last) = server.get("/api/sessions/p?limit=4").await;
    assert_eq!(last["has_more"], true);
    let contents: Vec<_> = transcript(&last).into_iter().map(|(_, c)| c).collect();
    assert_eq!(contents, vec!["m3", "echo: m3", "m4", "echo: m4"]);
    let before = last["next_before_seq"].as_u64().unwrap();
    let (_, older) = server.get(&format!("/api/sessions/p?limit=4&before_seq={before}")).await;
    let contents: Vec<_> = transcript(&older).into_iter().map(|(_, c)| c).collect();
    assert_eq!(contents, vec!["m1", "echo: m1", "m2", "echo: m2"]);
}

#[tokio::test]
async fn status_and_health_report_components() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::test_config(dir.path(), None);
    config.node_id = Some("node-a".into());
    let server = TestServer::start(config).await;
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    let (status, ready) = server.get("/health/ready").await;
    assert_eq!(status, 200);
    assert_eq!(ready["node_id"], "node-a");
    assert_eq!(ready["components"]["store"], "ok");
    assert_eq!(ready["components"]["bus"], json!({"kind": "local", "status": "ok"}));
    assert_eq!(ready["components"]["provider"], "not_configured");
    let (status, body) = server.get("/api/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["active_turns"], 0);
    assert_eq!(body["nodes"], json!([{"id": "node-a", "alive": true, "active_turns": 0}]));
    assert!(body["uptime_secs"].is_u64());
    // Without a configured name, each start makes one up.
    let other = tempfile::tempdir().unwrap();
    let unnamed = TestServer::start(crate::common::test_config(other.path(), None)).await;
    let (_, ready) = unnamed.get("/health/ready").await;
    let id = ready["node_id"].as_str().unwrap();
    assert!(!id.is_empty() && id != "node-a", "{id}");
    let bad = parley::config::Config { node_id: Some("no spaces".into()), ..Default::default() };
    assert!(bad.validate().unwrap_err().contains("node_id"));
}

#[tokio::test]
async fn idle_unwatched_sessions_leave_memory_and_come_back_intact() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = crate::common::test_config(dir.path(), Some(&provider));
    config.sessions.idle_evict_secs = 0.05;
    let server = TestServer::start(config).await;
    let (status, _) = server.chat("ev", "before").await;
    assert_eq!(status, 200);
    let (_, before) = server.get("/api/sessions/ev").await;
    let loaded =
        || async { server.get("/api/status").await.1["loaded_sessions"].as_u64().unwrap() };

    // A watcher keeps it loaded.
    let mut watcher =
        crate::common::live::WsClient::connect(&server, "/ws/chat?session_id=ev").await;
    watcher.next().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(loaded().await, 1);
    drop(watcher);
    for _ in 0..500 {
        if loaded().await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(loaded().await, 0, "evicted once idle and unwatched");

    let (status, body) = server.chat("ev", "after").await;
    assert_eq!(status, 200, "{body}");
    let (_, after) = server.get("/api/sessions/ev").await;
    assert_eq!(
        transcript(&after),
        vec![
            ("user".into(), "before".into()),
            ("assistant".into(), "echo: before".into()),
            ("user".into(), "after".into()),
            ("assistant".into(), "echo: after".into()),
        ]
    );
    let last_before = before["messages"][1]["seq"].as_u64().unwrap();
    assert!(after["messages"][2]["seq"].as_u64().unwrap() > last_before, "seq keeps going up");
}
