//! `/api/ag-ui` refusals as a raw HTTP client sees them (the official client's view is
//! `clients.rs`): each names what is wrong, and nobody reaches another user's runs.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{FakeProvider, TestServer, client_with, json_of};

#[tokio::test]
async fn bad_runs_are_refused_by_name_and_runs_stay_private() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let run = |body: serde_json::Value| server.post("/api/ag-ui", body);
    let user = json!([{"id": "u1", "role": "user", "content": "hi"}]);

    let (status, body) = run(json!({"threadId": "a b", "runId": "r", "messages": user})).await;
    assert_eq!((status, body["param"].as_str()), (StatusCode::BAD_REQUEST, Some("threadId")));
    let assistant_last = json!([{"id": "a1", "role": "assistant", "content": "hello"}]);
    let (status, body) =
        run(json!({"threadId": "t", "runId": "r", "messages": assistant_last})).await;
    assert_eq!((status, body["param"].as_str()), (StatusCode::BAD_REQUEST, Some("messages")));
    let resume = json!([{"interruptId": "nope", "status": "resolved"}]);
    let (status, body) =
        run(json!({"threadId": "t", "runId": "r", "messages": user, "resume": resume})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["param"], "resume[0].interruptId", "{body}");
    let (status, _) = run(json!({"threadId": "t", "runId": "r"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "messages are required");
    assert!(provider.requests().is_empty(), "nothing refused reached the model");

    // A run of ours, read to its end.
    let body = json!({"threadId": "mine", "runId": "r1", "messages": user});
    let response = server.client.post(server.url("/api/ag-ui")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let ids: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert!(text.contains("\"RUN_FINISHED\""), "{text}");
    let first = ids[0].to_owned();

    // Someone else cannot resume it, nor reach its thread through it.
    let resume = |client: reqwest::Client, last: String, thread: &'static str| {
        let body = json!({"threadId": thread, "runId": "r1", "messages": user});
        let request = client.post(server.url("/api/ag-ui")).header("last-event-id", last);
        async move { json_of(request.json(&body).send().await.unwrap()).await }
    };
    let other = client_with(&server.token_for("mallory", false).await);
    let (status, _) = resume(other, first.clone(), "mine").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nor can the owner graft it onto another thread.
    let (status, _) = resume(server.client.clone(), first, "elsewhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = resume(server.client.clone(), "garbage".into(), "mine").await;
    assert_eq!((status, body["param"].as_str()), (StatusCode::BAD_REQUEST, Some("Last-Event-ID")));
}

/// The `data:` JSON of every event of an AG-UI response body.
fn agui_events(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn thinking_is_reasoning_and_a_failed_turn_is_a_run_error() {
    use crate::common::{Script, Step};
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let delta = |d: serde_json::Value| Step::Chunk(json!({"choices": [{"index": 0, "delta": d}]}));
    provider.push([Script::Stream(vec![
        delta(json!({"reasoning_content": "Let me think"})),
        delta(json!({"reasoning_content": " hard."})),
        delta(json!({"content": "Forty-two."})),
        Step::Chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
        Step::Raw("data: [DONE]\n\n"),
    ])]);
    let user = json!([{"id": "u1", "role": "user", "content": "meaning?"}]);
    let body = json!({"threadId": "think", "runId": "r1", "messages": user});
    let response = server.client.post(server.url("/api/ag-ui")).json(&body).send().await.unwrap();
    let events = agui_events(&response.text().await.unwrap());
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "RUN_STARTED",
            "REASONING_START",
            "REASONING_MESSAGE_START",
            "REASONING_MESSAGE_CONTENT",
            "REASONING_MESSAGE_CONTENT",
            "REASONING_MESSAGE_END",
            "REASONING_END",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED",
        ]
    );
    assert_eq!(events[3]["delta"], "Let me think");
    assert_eq!(events[8]["delta"], "Forty-two.");
    assert_eq!(events[10]["outcome"]["type"], "success");

    provider.push([Script::status(400, "bad request upstream")]);
    let user = json!([{"id": "u2", "role": "user", "content": "again"}]);
    let body = json!({"threadId": "think", "runId": "r2", "messages": user});
    let response = server.client.post(server.url("/api/ag-ui")).json(&body).send().await.unwrap();
    let events = agui_events(&response.text().await.unwrap());
    let last = events.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("RUN_ERROR"), Some("PROVIDER_ERROR"))
    );
    assert!(!last["message"].as_str().unwrap().contains("bad request upstream"), "{last}");
}
