//! Provider failures become typed errors with the right code; the session stays usable.

use std::time::Duration;

use serde_json::json;

use crate::common::{FakeProvider, Script, Step, TestServer, test_config};

#[tokio::test]
async fn rate_limit_with_retry_after_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([
        Script::Status {
            status: 429,
            retry_after: Some("0"),
            body: json!({"error": {"message": "slow down"}}),
        },
        Script::status(503, "overloaded"),
        Script::text(&["made it"]),
    ]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, body) = server.chat("r", "hello").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "made it");
    assert_eq!(provider.requests().len(), 3);
}

#[tokio::test]
async fn each_failure_is_a_provider_error_and_the_session_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.provider.max_retries = 1;
    config.provider.first_byte_timeout_secs = 0.3;
    let server = TestServer::start(config).await;

    let cases: Vec<(&str, Vec<Script>, &str)> = vec![
        (
            "server error",
            vec![Script::status(500, "boom"), Script::status(500, "boom")],
            "unavailable",
        ),
        ("bad key", vec![Script::status(401, "invalid api key")], "credentials"),
        (
            "bad request",
            vec![Script::status(400, "model not found")],
            "rejected the request (HTTP 400)",
        ),
        (
            "malformed chunk",
            vec![Script::Stream(vec![Step::Raw("data: {\"choices\": [oops\n\n")])],
            "cannot use",
        ),
        (
            "cut mid-stream",
            vec![Script::Stream(vec![
                Step::Chunk(json!({"choices": [{"delta": {"content": "partial "}}]})),
                // Let the headers and the first chunk reach the client before the cut.
                Step::Delay(Duration::from_millis(100)),
                Step::Cut,
            ])],
            "unavailable",
        ),
        (
            "ends early",
            vec![Script::Stream(vec![Step::Chunk(
                json!({"choices": [{"delta": {"content": "half"}}]}),
            )])],
            "unavailable",
        ),
        (
            "slow first byte",
            vec![Script::Slow(Duration::from_secs(2), Box::new(Script::text(&["late"])))],
            "did not answer in time",
        ),
    ];
    for (name, scripts, expected) in cases {
        provider.push(scripts);
        let (status, body) = server.chat("fail", name).await;
        assert_eq!(status, 502, "{name}: {body}");
        assert_eq!(body["code"], "PROVIDER_ERROR", "{name}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(expected), "{name}: {message}");
        // The upstream's own words stay in the log: they may carry internals.
        for upstream in ["boom", "invalid api key", "model not found", "oops", "127.0.0.1"] {
            assert!(!message.contains(upstream), "{name}: {message}");
        }
        assert_eq!(body["session_id"], "fail");

        // The session still answers.
        let (status, body) = server.chat("fail", "still there?").await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["reply"], "echo: still there?");
    }
    // The partial text of the cut stream was kept, marked interrupted.
    let (_, detail) = server.get("/api/sessions/fail?limit=500").await;
    let partial = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["content"] == "partial ")
        .expect("partial answer stored");
    assert_eq!(partial["status"], "interrupted");
}

#[tokio::test]
async fn no_provider_configured_is_a_clear_503() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), None)).await;
    let (status, body) = server.chat("np", "hello").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "PROVIDER_NOT_CONFIGURED");
    // The user message is stored all the same.
    let (_, detail) = server.get("/api/sessions/np").await;
    assert_eq!(detail["messages"][0]["content"], "hello");
}
