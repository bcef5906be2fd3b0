//! `/v1` as a raw HTTP client sees it: what reaches the model, what a disconnect does, the
//! error shape, and one session seen through `/v1` and `/ws/chat` alike. (The official
//! SDK's view is `clients.rs`.)

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::live::{SseClient, WsClient};
use crate::common::{FakeProvider, Script, TestServer, client_with, json_of, test_config};

/// Reads a chat completion stream to its end: the chunks' JSON and whether `[DONE]` came.
async fn read_chunks(mut response: reqwest::Response) -> (Vec<Value>, bool) {
    let mut buffer = String::new();
    let mut chunks = Vec::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    if data == "[DONE]" {
                        return (chunks, true);
                    }
                    chunks.push(serde_json::from_str(data).unwrap());
                }
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("a chunk arrives in time")
            .unwrap();
        match chunk {
            Some(bytes) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
            None => return (chunks, false),
        }
    }
}

/// Polls `done` until it holds (within about five seconds).
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    for _ in 0..500 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

fn content_of(chunks: &[Value]) -> String {
    let deltas = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str());
    deltas.collect()
}

#[tokio::test]
async fn a_stateless_request_gives_the_model_its_whole_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.agent.system_prompt = "You are Parley's agent.".into();
    let server = TestServer::start(config).await;
    provider.push([Script::text(&["6"])]);
    let body = json!({"model": "x", "messages": [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{\"e\":\"2+2\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "3+3?"},
    ]});
    let (status, completion) = server.post("/v1/chat/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{completion}");
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["content"], "6");
    let sent = &provider.requests()[0]["messages"];
    let roles: Vec<&str> =
        sent.as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "system", "user", "assistant", "tool", "assistant", "user"]);
    assert_eq!(sent[0]["content"], "You are Parley's agent.");
    assert_eq!(sent[1]["content"], "Answer with a number.");
    assert_eq!(sent[3]["tool_calls"][0]["function"]["name"], "calc");
    assert_eq!(sent[4]["tool_call_id"], "c1");
    assert_eq!(sent[6]["content"], "3+3?");

    // Kept by default, as an ordinary session holding the new message and its answer.
    let session = completion["parley"]["session_id"].as_str().unwrap().to_owned();
    let detail = server.wait_idle(&session).await;
    let contents: Vec<&str> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["3+3?", "6"]);

    // `store: false` keeps nothing.
    let body = json!({"messages": [{"role": "user", "content": "forget me"}], "store": false});
    let (status, completion) = server.post("/v1/chat/completions", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(completion["choices"][0]["message"]["content"], "echo: forget me");
    let gone = completion["parley"]["session_id"].as_str().unwrap().to_owned();
    let url = format!("/api/sessions/{gone}");
    eventually("the store:false session goes", || async {
        server.get(&url).await.0 == StatusCode::NOT_FOUND
    })
    .await;
}

#[tokio::test]
async fn a_stateless_stream_whose_client_leaves_stops_the_provider_request() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let parts: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(30))]);
    let body = json!({"messages": [{"role": "user", "content": "talk"}], "stream": true});
    let mut response =
        server.client.post(server.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Read until some of the answer came, then hang up.
    let mut seen = String::new();
    while !seen.contains("w2 ") {
        let chunk = response.chunk().await.unwrap().expect("the stream is open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first: Value =
        serde_json::from_str(seen.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    let turn = first["id"].as_str().unwrap().trim_start_matches("chatcmpl-").to_owned();
    drop(response);
    eventually("the provider request is dropped", || async { provider.abandoned() == 1 }).await;
    // The provider sees the drop before the turn's end is stored: wait for that.
    let mut view = Value::Null;
    for _ in 0..500 {
        view = server.get(&format!("/v1/responses/resp_{turn}")).await.1;
        if view["status"] != "in_progress" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(view["status"], "cancelled", "{view}");

    // The same for a client that waits for the whole answer and gives up.
    provider.push([Script::slow_text(&parts, Duration::from_millis(30))]);
    let body = json!({"messages": [{"role": "user", "content": "talk again"}]});
    let impatient = server
        .client
        .post(server.url("/v1/chat/completions"))
        .timeout(Duration::from_millis(500))
        .json(&body)
        .send()
        .await;
    assert!(impatient.is_err_and(|e| e.is_timeout()));
    eventually("the abandoned non-stream request's provider request is dropped", || async {
        provider.abandoned() == 2
    })
    .await;
}

#[tokio::test]
async fn a_stream_in_a_session_goes_on_without_its_client_and_matches_the_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=shared").await;
    ws.next_of("session_start").await;

    // Read to the end: the content is the one the WebSocket watcher saw.
    provider.push([Script::text(&["Hello", ", ", "world"])]);
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true});
    let response = server
        .client
        .post(server.url("/v1/chat/completions"))
        .header("x-session-id", "shared")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (chunks, done) = read_chunks(response).await;
    assert!(done, "no [DONE]");
    let frames = ws.until("done").await;
    let ws_text: String = frames
        .iter()
        .filter(|f| f["type"] == "chunk")
        .map(|f| f["content"].as_str().unwrap())
        .collect();
    assert_eq!(content_of(&chunks), "Hello, world");
    assert_eq!(ws_text, "Hello, world");
    assert_eq!(frames.last().unwrap()["full_response"], "Hello, world");
    let last = chunks.iter().rev().find(|c| c["choices"][0]["finish_reason"] == "stop").unwrap();
    assert_eq!(last["parley"]["session_id"], "shared");

    // Hang up mid-answer: the turn finishes anyway and is stored.
    let parts: Vec<String> = (0..20).map(|i| format!("p{i} ")).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(20))]);
    let body = json!({"messages": [{"role": "user", "content": "more"}], "stream": true});
    let mut response = server
        .client
        .post(server.url("/v1/chat/completions"))
        .header("x-session-id", "shared")
        .json(&body)
        .send()
        .await
        .unwrap();
    response.chunk().await.unwrap();
    drop(response);
    let done = ws.next_of("done").await;
    assert_eq!(done["full_response"], parts.concat());
    assert_eq!(provider.abandoned(), 0);
    let detail = server.wait_idle("shared").await;
    let last = detail["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"], parts.concat());
}

#[tokio::test]
async fn v1_errors_have_openai_s_shape_and_other_routes_keep_parley_s() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let anonymous = crate::common::client();
    let response = anonymous.get(server.url("/v1/models")).send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert_eq!(body["error"]["code"], "AUTH_ERROR");
    assert!(body["error"]["message"].is_string() && body["error"]["param"].is_null());

    let post = |body: &'static str| {
        server
            .client
            .post(server.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (status, body) = json_of(post("{not json").await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    // A missing field is a 400 too (OpenAI's status for it), not axum's 422.
    let (status, body) = json_of(post("{\"model\": \"x\"}").await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = json_of(
        post("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"user\": \"a b\"}")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "user", "{body}");
    let (status, body) = server.get("/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["type"], "not_found_error", "{body}");

    // Outside /v1, Parley's own shape.
    let (status, body) =
        json_of(anonymous.get(server.url("/api/sessions")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "AUTH_ERROR");
    assert!(body["error"].is_string());
    // Nothing was sent to the model along the way.
    assert!(provider.requests().is_empty());
}

#[tokio::test]
async fn responses_are_private_and_continue_their_own_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, first) = server.post("/v1/responses", json!({"input": "I am Ada."})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    let body =
        json!({"input": "Who am I?", "previous_response_id": id, "instructions": "Be brief."});
    let (status, second) = server.post("/v1/responses", body).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let sent = &provider.requests()[1]["messages"];
    let said: Vec<(&str, &str)> = sent
        .as_array()
        .unwrap()
        .iter()
        .skip(1) // Parley's own system prompt
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [
            ("system", "Be brief."),
            ("user", "I am Ada."),
            ("assistant", "echo: I am Ada."),
            ("user", "Who am I?"),
        ]
    );

    // Another user sees neither the response nor the conversation through it.
    let other = client_with(&server.token_for("mallory", false).await);
    let (status, _) =
        json_of(other.get(server.url(&format!("/v1/responses/{id}"))).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body = json!({"input": "hi", "previous_response_id": id});
    let response = other.post(server.url("/v1/responses")).json(&body).send().await.unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = json_of(
        other.post(server.url(&format!("/v1/responses/{id}/cancel"))).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_tool_call_waiting_for_approval_is_answered_with_an_approval_response() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.tools.approval.insert("list_dir".into(), "ask".into());
    let server = TestServer::start(config).await;
    provider.push([
        Script::tool_call("call_1", "list_dir", json!({"path": "."}), 2),
        Script::text(&["All ", "listed."]),
    ]);
    let body = json!({"input": "list", "stream": true});
    let mut stream =
        SseClient::open(server.client.post(server.url("/v1/responses")).json(&body)).await;
    let events = stream.until("response.output_item.done").await;
    let created = &events[0].1;
    assert_eq!(created["type"], "response.created");
    let response_id = created["response"]["id"].as_str().unwrap().to_owned();
    let mut item = events.last().unwrap().1["item"].clone();
    while item["type"] != "mcp_approval_request" {
        item = stream.until("response.output_item.done").await.last().unwrap().1["item"].clone();
    }
    assert_eq!(item["name"], "list_dir");
    let answer = json!({
        "previous_response_id": response_id,
        "input": [{"type": "mcp_approval_response", "approval_request_id": item["id"], "approve": true}],
        "stream": true,
    });
    let mut continued =
        SseClient::open(server.client.post(server.url("/v1/responses")).json(&answer)).await;
    let rest = continued.until("response.completed").await;
    let kinds: Vec<&str> = rest.iter().map(|(_, e)| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"response.mcp_call.completed"), "{kinds:?}");
    let last = &rest.last().unwrap().1["response"];
    assert_eq!(last["id"], response_id);
    let output = last["output"].as_array().unwrap();
    assert_eq!(output.last().unwrap()["content"][0]["text"], "All listed.");
    // The first stream saw the same ending.
    let first_end = stream.until("response.completed").await;
    assert_eq!(first_end.last().unwrap().1["response"]["status"], "completed");
    // A response the client waits for returns once it needs a decision; so does its
    // retrieval: both show the approval to answer.
    provider.push([
        Script::tool_call("call_2", "list_dir", json!({"path": "."}), 2),
        Script::text(&["Listed again."]),
    ]);
    let (status, waiting) = server.post("/v1/responses", json!({"input": "list again"})).await;
    assert_eq!(status, StatusCode::OK, "{waiting}");
    assert_eq!(waiting["status"], "in_progress");
    let pending = waiting["output"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(pending["type"], "mcp_approval_request", "{waiting}");
    let (_, read) = server.get(&format!("/v1/responses/{}", waiting["id"].as_str().unwrap())).await;
    assert_eq!(read["output"].as_array().unwrap().last().unwrap()["id"], pending["id"]);
    let answer = json!({"input": [{"type": "mcp_approval_response", "approval_request_id": pending["id"], "approve": false}]});
    let (status, _) = server.post("/v1/responses", answer).await;
    assert_eq!(status, StatusCode::OK);
    // An approval nobody asked for is refused by name.
    let bogus = json!({"input": [{"type": "mcp_approval_response", "approval_request_id": "mcpr_x", "approve": true}]});
    let (status, body) = server.post("/v1/responses", bogus).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "input[0].approval_request_id", "{body}");
}

#[tokio::test]
async fn store_false_forgets_only_a_conversation_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (_, first) = server.post("/v1/responses", json!({"input": "keep me"})).await;
    let session = first["parley"]["session_id"].as_str().unwrap().to_owned();
    let body = json!({"input": "and this?", "previous_response_id": first["id"], "store": false});
    let (status, second) = server.post("/v1/responses", body).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let detail = server.wait_idle(&session).await;
    assert_eq!(detail["messages"].as_array().unwrap().len(), 4, "{detail}");
    let (status, _) = server.get(&format!("/v1/responses/{}", first["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    // A new conversation sent with store:false is gone once answered.
    let (_, third) =
        server.post("/v1/responses", json!({"input": "forget me", "store": false})).await;
    let url = format!("/api/sessions/{}", third["parley"]["session_id"].as_str().unwrap());
    eventually("the store:false conversation goes", || async {
        server.get(&url).await.0 == StatusCode::NOT_FOUND
    })
    .await;
}

#[tokio::test]
async fn a_finished_response_resumes_to_its_end_after_its_events_left_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.sessions.event_log_capacity = 8;
    let server = TestServer::start(config).await;
    let parts: Vec<String> = (0..40).map(|i| format!("p{i} ")).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    provider.push([Script::text(&parts)]);
    let (status, done) = server.post("/v1/responses", json!({"input": "long"})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let id = done["id"].as_str().unwrap().to_owned();
    // Resume from the very start: the log holds only the last 8 events by now.
    let path = format!("/v1/responses/{id}?stream=true&starting_after=0");
    let mut stream = SseClient::open(server.client.get(server.url(&path))).await;
    let events = stream.until("response.completed").await;
    let last = &events.last().unwrap().1["response"];
    assert_eq!(last["status"], "completed");
    assert_eq!(last["output"][0]["content"][0]["text"], parts.concat());
    assert!(stream.ends().await, "the stream ends with the response");

    // The same for an AG-UI run resumed after its events left the log.
    provider.push([Script::text(&parts)]);
    let user = json!([{"id": "u1", "role": "user", "content": "long"}]);
    let body = json!({"threadId": "t-wrap", "runId": "r1", "messages": user});
    let text = server.client.post(server.url("/api/ag-ui")).json(&body).send().await.unwrap();
    let text = text.text().await.unwrap();
    let first_id = text.lines().find_map(|l| l.strip_prefix("id: ")).unwrap().to_owned();
    let again = server
        .client
        .post(server.url("/api/ag-ui"))
        .header("last-event-id", first_id)
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = again.text().await.unwrap();
    assert!(text.contains("\"RUN_STARTED\"") && text.contains("\"RUN_FINISHED\""), "{text}");
}

#[tokio::test]
async fn a_stream_refused_for_too_many_connections_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.limits.max_connections_per_user = 0;
    let server = TestServer::start(config).await;
    let chat = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true});
    let response = server
        .client
        .post(server.url("/v1/chat/completions"))
        .header("x-session-id", "full")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = server.post("/v1/responses", json!({"input": "hi", "stream": true})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let user = json!([{"id": "u1", "role": "user", "content": "hi"}]);
    let (status, _) = server
        .post("/api/ag-ui", json!({"threadId": "full", "runId": "r", "messages": user}))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(provider.requests().is_empty(), "nothing ran");
    assert_eq!(server.get("/api/sessions/full").await.0, StatusCode::NOT_FOUND);
}
