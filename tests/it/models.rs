//! Several providers and models: every model listed, a turn on the model it names (on every
//! submit path), the fallback chain when a model cannot answer, and what turns cost: usage
//! with `cost`, `GET /api/usage`, and monthly budgets.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::fake_anthropic::Anthropic;
use crate::common::live::WsClient;
use crate::common::{
    FakeProvider, Script, Step, TestServer, client_with, json_of, test_config, wait_for_session,
};
use parley::config::{Config, ModelConfig, ProviderConfig};

/// A provider on `url` serving `models`, with the tests' fast retries.
fn provider(kind: &str, url: String, models: &[&str]) -> ProviderConfig {
    ProviderConfig {
        kind: kind.into(),
        url: Some(url),
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        retry_base_ms: 10,
        max_retries: 0,
        first_byte_timeout_secs: 10.0,
        idle_timeout_secs: 10.0,
        ..ProviderConfig::default()
    }
}

/// `local` (OpenAI-compatible: `small`, `big`) and `claude` (Anthropic: `sonnet`), `small`
/// the default.
fn two_providers(dir: &std::path::Path, local: &FakeProvider, claude: &FakeProvider) -> Config {
    let mut config = test_config(dir, None);
    config.providers.insert("local".into(), provider("openai", local.url(), &["small", "big"]));
    config.providers.insert("claude".into(), provider("anthropic", claude.url(), &["sonnet"]));
    config.default_model = Some("small".into());
    config
}

fn models_asked(provider: &FakeProvider) -> Vec<String> {
    provider.requests().iter().map(|r| r["model"].as_str().unwrap_or("-").to_owned()).collect()
}

#[tokio::test]
async fn every_model_is_listed_and_each_turn_runs_on_the_one_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let (local, claude) = (FakeProvider::start().await, FakeProvider::start().await);
    let server = TestServer::start(two_providers(dir.path(), &local, &claude)).await;

    let (status, list) = server.get("/v1/models").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> =
        list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["small", "sonnet", "big"], "the default first, then by provider");
    assert_eq!(server.get("/v1/models/sonnet").await.0, 200);
    assert_eq!(server.get("/v1/models/gpt-4o").await.0, 404);

    // No model named: the default.
    let (status, body) = server.chat("s", "hello").await;
    assert_eq!((status, body["model"].as_str()), (StatusCode::OK, Some("small")), "{body}");
    // Oxios `POST /api/chat`.
    claude.push([Anthropic::text(&["from ", "claude"])]);
    let (status, body) = server
        .post("/api/chat", json!({"content": "hi", "session_id": "s", "model": "sonnet"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["reply"].as_str(), body["model"].as_str()),
        (Some("from claude"), Some("sonnet"))
    );
    // REST: queue a turn.
    let (status, _) =
        server.post("/api/sessions/s/messages", json!({"content": "more", "model": "big"})).await;
    assert_eq!(status, 202);
    server.wait_idle("s").await;
    // The Construct WebSocket.
    claude.push([Anthropic::text(&["ws claude"])]);
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=s").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "ws", "model": "sonnet"})).await;
    let frames = ws.until("done").await;
    let done = frames.last().unwrap();
    assert_eq!(
        (done["full_response"].as_str(), done["model"].as_str()),
        (Some("ws claude"), Some("sonnet"))
    );
    let status = frames.iter().find(|f| f["type"] == "operator_status" && f["phase"] == "model");
    assert_eq!(status.unwrap()["detail"], "sonnet", "{frames:?}");
    // The Oxios stream socket.
    let mut stream = WsClient::connect(&server, "/api/chat/stream").await;
    stream
        .send(json!({"type": "message", "content": "st", "session_id": "s2", "model": "big"}))
        .await;
    stream.until("done").await;
    // OpenAI chat completions and Responses.
    let (status, body) = server
        .post(
            "/v1/chat/completions",
            json!({"model": "big", "messages": [{"role": "user", "content": "v1"}]}),
        )
        .await;
    assert_eq!((status, body["model"].as_str()), (StatusCode::OK, Some("big")), "{body}");
    claude.push([Anthropic::text(&["responses"])]);
    let (status, body) =
        server.post("/v1/responses", json!({"model": "sonnet", "input": "r"})).await;
    assert_eq!((status, body["model"].as_str()), (StatusCode::OK, Some("sonnet")), "{body}");
    // AG-UI, through its forwarded properties.
    claude.push([Anthropic::text(&["agui"])]);
    let run = json!({"threadId": "g", "runId": "r1", "messages": [{"id": "m1", "role": "user", "content": "a"}],
                     "forwardedProps": {"model": "sonnet"}});
    let response = server.client.post(server.url("/api/ag-ui")).json(&run).send().await.unwrap();
    let text = response.text().await.unwrap();
    assert!(text.contains("\"RUN_FINISHED\""), "{text}");

    assert_eq!(models_asked(&local), ["small", "big", "big", "big"]);
    assert_eq!(models_asked(&claude), ["sonnet", "sonnet", "sonnet", "sonnet"]);

    // A model nobody serves is refused before anything is stored or sent, in each
    // protocol's own way.
    let (status, body) = server
        .post("/api/chat", json!({"content": "x", "session_id": "new", "model": "gpt-4o"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str(), body["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("UNKNOWN_MODEL"), Some("model"))
    );
    let (status, body) = server
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["type"], "not_found_error");
    ws.send(json!({"type": "message", "content": "x", "model": "gpt-4o"})).await;
    let error = ws.next_of("error").await;
    assert_eq!(error["code"], "UNKNOWN_MODEL");
    assert_eq!(server.get("/api/sessions/new").await.0, 404, "nothing was created");
    assert_eq!(local.requests().len() + claude.requests().len(), 8, "nothing was sent");
}

#[tokio::test]
async fn one_conversation_moves_between_models_turn_by_turn_with_a_valid_history() {
    let dir = tempfile::tempdir().unwrap();
    let (local, claude) = (FakeProvider::start().await, FakeProvider::start().await);
    let server = TestServer::start(two_providers(dir.path(), &local, &claude)).await;
    local.push([
        Script::tool_call("call-1", "list_dir", json!({"path": "."}), 2),
        Script::text(&["listed"]),
    ]);
    assert_eq!(server.chat("m", "first").await.0, 200);
    // The fake Anthropic API refuses a history the real one would.
    claude.push([
        Anthropic::tool_use("toolu_2", "list_dir", json!({"path": "."}), 2),
        Anthropic::text(&["again"]),
    ]);
    let (status, body) = server
        .post("/api/chat", json!({"content": "second", "session_id": "m", "model": "sonnet"}))
        .await;
    assert_eq!((status, body["reply"].as_str()), (StatusCode::OK, Some("again")), "{body}");
    let last = claude.requests().last().unwrap().clone();
    let roles: Vec<&str> =
        last["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user", "assistant", "user"]);
    // And back.
    let (status, body) = server.chat("m", "third").await;
    assert_eq!((status, body["model"].as_str()), (StatusCode::OK, Some("small")));
    let last = local.requests().last().unwrap().clone();
    let tool_answers =
        last["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "tool").count();
    assert_eq!(tool_answers, 2, "both tool calls answered: {last}");
}

/// An address nothing listens on.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn a_model_that_cannot_answer_falls_back_along_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (FakeProvider::start().await, FakeProvider::start().await);
    let mut config = test_config(dir.path(), None);
    let mut primary = provider("openai", first.url(), &["primary"]);
    primary.first_byte_timeout_secs = 0.5;
    config.providers.insert("one".into(), primary);
    config.providers.insert("two".into(), provider("anthropic", second.url(), &["backup"]));
    config.providers.insert("gone".into(), provider("openai", dead_url().await, &["dead"]));
    let chain = |models: &[&str]| ModelConfig {
        fallback: models.iter().map(|m| (*m).to_owned()).collect(),
        ..Default::default()
    };
    config.models.insert("primary".into(), chain(&["backup"]));
    config.models.insert("dead".into(), chain(&["primary"]));
    config.default_model = Some("primary".into());
    let server = TestServer::start(config).await;

    // Rate limited, then stalled before the first byte: the backup answers, and says so.
    first.push([Script::status(429, "slow down")]);
    second.push([Anthropic::text(&["backup answers"])]);
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=f").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "one"})).await;
    let frames = ws.until("done").await;
    let done = frames.last().unwrap();
    assert_eq!(
        (done["full_response"].as_str(), done["model"].as_str()),
        (Some("backup answers"), Some("backup"))
    );
    let details: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "operator_status" && f["phase"] == "model")
        .filter_map(|f| f["detail"].as_str())
        .collect();
    assert_eq!(details, ["primary", "backup (primary is unavailable)"]);

    first.push([Script::Slow(Duration::from_secs(3), Box::new(Script::text(&["too late"])))]);
    second.push([Anthropic::text(&["backup again"])]);
    let (status, body) = server.chat("f", "two").await;
    assert_eq!((status, body["model"].as_str()), (StatusCode::OK, Some("backup")), "{body}");

    // Down: nothing listens; the next of its chain answers.
    let (status, body) = server
        .post("/api/chat", json!({"content": "three", "session_id": "f", "model": "dead"}))
        .await;
    assert_eq!((status, body["model"].as_str()), (StatusCode::OK, Some("primary")), "{body}");

    // A refused request is not the provider's absence: no fallback.
    first.push([Script::status(400, "bad request")]);
    let (status, body) = server.chat("f", "four").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("PROVIDER_ERROR")),
        "{body}"
    );
    // Nor is a failure after part of the answer was shown.
    first.push([Script::Stream(vec![
        Step::Chunk(json!({"choices": [{"index": 0, "delta": {"content": "half"}}]})),
        Step::Delay(Duration::from_millis(200)),
        Step::Cut,
    ])]);
    let (status, body) = server.chat("f", "five").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(second.requests().len(), 2, "the backup was asked twice only");

    let metrics =
        server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let fell = "parley_provider_fallbacks_total{from=\"primary\",to=\"backup\"} 2";
    assert!(metrics.contains(fell), "{metrics}");
    assert!(metrics.contains("parley_provider_fallbacks_total{from=\"dead\",to=\"primary\"} 1"));
}

/// Prices that make each fake call (10 tokens in, 5 out) cost 0.02.
fn priced(dir: &std::path::Path, provider: &FakeProvider) -> Config {
    let mut config = test_config(dir, Some(provider));
    config.provider.model = Some("priced".into());
    config.provider.models = vec!["free".into()];
    let price = ModelConfig {
        input_price: Some(1000.0),
        output_price: Some(2000.0),
        cached_input_price: Some(100.0),
        ..Default::default()
    };
    config.models.insert("priced".into(), price);
    config.budget.monthly = 0.05;
    config.budget.users.insert("bob".into(), 100.0);
    config
}

fn close(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

#[tokio::test]
async fn turns_cost_what_their_tokens_cost_and_a_spent_budget_refuses_new_turns() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::start().await;
    let server = TestServer::start(priced(dir.path(), &fake)).await;
    let alice = client_with(&server.token_for("alice", false).await);
    let bob = client_with(&server.token_for("bob", false).await);
    let chat = |client: &reqwest::Client, body: Value| {
        let request = client.post(server.url("/api/chat")).json(&body);
        async move { json_of(request.send().await.unwrap()).await }
    };

    // Two model calls (a tool call, then the answer): their costs add up.
    fake.push([
        Script::tool_call("c1", "list_dir", json!({"path": "."}), 2),
        Script::text(&["ok"]),
    ]);
    let (status, body) = chat(&alice, json!({"content": "one", "session_id": "a"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(close(&body["usage"]["cost"], 0.04), "{body}");
    // A model without prices has no cost.
    let (_, body) =
        chat(&alice, json!({"content": "free", "session_id": "a", "model": "free"})).await;
    assert!(body["usage"].get("cost").is_none(), "{body}");
    // Cached input is priced apart.
    fake.push([Script::Stream(vec![
        Step::Chunk(json!({"choices": [{"index": 0, "delta": {"content": "cached"}, "finish_reason": "stop"}]})),
        Step::Chunk(json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 10}}})),
        Step::Raw("data: [DONE]\n\n"),
    ])]);
    let (_, body) = chat(&alice, json!({"content": "two", "session_id": "a"})).await;
    assert_eq!(body["usage"]["cached_tokens"], 10, "{body}");
    assert!(close(&body["usage"]["cost"], 0.011), "{body}");

    // Spent 0.051 of 0.05: refused until the month ends, even after deleting the chat.
    let response = alice.delete(server.url("/api/sessions/a")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let response =
        alice.post(server.url("/api/chat")).json(&json!({"content": "more"})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=31 * 86_400).contains(&retry), "{retry}");
    let (_, body) = json_of(response).await;
    assert_eq!(body["code"], "BUDGET_EXCEEDED", "{body}");
    assert!(close(&body["spent"], 0.051) && close(&body["limit"], 0.05), "{body}");
    let token = server.token_for("alice", false).await;
    let mut ws = WsClient::connect_as(&server, "/ws/chat", &["parley.v1"], Some(&token)).await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "ws"})).await;
    assert_eq!(ws.next_of("error").await["code"], "BUDGET_EXCEEDED");
    // Bob's own budget is larger.
    let (status, _) = chat(&bob, json!({"content": "bob", "session_id": "b"})).await;
    assert_eq!(status, 200);

    // Usage: a user sees their own, with their budget; an admin sees everyone's.
    let (status, mine) =
        json_of(alice.get(server.url("/api/usage?group_by=model")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{mine}");
    let models: Vec<(&str, u64)> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["model"].as_str().unwrap(), i["turns"].as_u64().unwrap()))
        .collect();
    assert_eq!(models, [("priced", 2), ("free", 1)]);
    assert!(close(&mine["total"]["cost"], 0.051), "{mine}");
    assert_eq!(mine["total"]["prompt_tokens"], 40);
    assert!(
        close(&mine["budget"]["limit"], 0.05) && close(&mine["budget"]["spent"], 0.051),
        "{mine}"
    );
    let (status, _) =
        json_of(alice.get(server.url("/api/usage?user=bob")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, all) = server.get("/api/usage?group_by=user").await;
    let users: Vec<&str> =
        all["items"].as_array().unwrap().iter().map(|i| i["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["alice", "bob"]);
    let (_, days) = server.get("/api/usage?group_by=day&from=2020-01-01").await;
    let today = &parley::clock::rfc3339(parley::clock::now_ms())[..10];
    assert_eq!(days["items"][0]["day"], today, "{days}");
    let (_, later) = server.get("/api/usage?from=2999-01-01&to=2999-02-01").await;
    assert_eq!(later["items"], json!([]));
    for bad in ["group_by=week", "from=yesterday", "from=2026-02-01&to=2026-01-01"] {
        let (status, body) = server.get(&format!("/api/usage?{bad}")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST")),
            "{bad}"
        );
    }

    let metrics =
        server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("parley_cost_total{provider=\"default\",model=\"priced\"}"),
        "{metrics}"
    );
}

/// Polls until the caller has a pending approval, and returns its id.
async fn pending_approval(client: &reqwest::Client, server: &TestServer) -> String {
    for _ in 0..200 {
        let (_, listed) =
            json_of(client.get(server.url("/api/approvals")).send().await.unwrap()).await;
        if let Some(id) = listed["items"][0]["request_id"].as_str() {
            return id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no approval was asked for");
}

#[tokio::test]
async fn spending_is_counted_as_each_call_ends_and_checked_as_each_turn_starts() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::start().await;
    let mut config = priced(dir.path(), &fake);
    config.tools.approval.insert("list_dir".into(), "ask".into());
    let server = TestServer::start(config).await;
    let alice = client_with(&server.token_for("alice", false).await);
    let post = |path: &str, body: Value| {
        let request = alice.post(server.url(path)).json(&body);
        async move { json_of(request.send().await.unwrap()).await }
    };
    let spent = || async {
        let (_, report) = json_of(alice.get(server.url("/api/usage")).send().await.unwrap()).await;
        report["budget"]["spent"].as_f64().unwrap()
    };

    // A call that ended counts even if its turn never does: the chat is deleted while the
    // turn waits for an approval.
    fake.push([Script::tool_call("c1", "list_dir", json!({"path": "."}), 1)]);
    let (status, _) = post("/api/sessions/gone/messages", json!({"content": "look"})).await;
    assert_eq!(status, 202);
    pending_approval(&alice, &server).await;
    assert!((spent().await - 0.02).abs() < 1e-9);
    let deleted = alice.delete(server.url("/api/sessions/gone")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert!((spent().await - 0.02).abs() < 1e-9, "deleting the chat gave nothing back");

    // Turns queued while there was budget left are checked again as each starts.
    fake.push([Script::tool_call("c2", "list_dir", json!({"path": "."}), 1), Script::text(&["a"])]);
    let (status, _) = post("/api/sessions/q/messages", json!({"content": "first"})).await;
    assert_eq!(status, 202);
    let approval = pending_approval(&alice, &server).await;
    for content in ["second", "third"] {
        let (status, body) = post("/api/sessions/q/messages", json!({"content": content})).await;
        assert_eq!(status, 202, "admitted: the budget was not spent yet: {body}");
    }
    let token = server.token_for("alice", false).await;
    let mut ws =
        WsClient::connect_as(&server, "/ws/chat?session_id=q", &["parley.v1"], Some(&token)).await;
    ws.next().await;
    let asked_before = fake.requests().len();
    post(&format!("/api/approvals/{approval}/approve"), json!({})).await;
    // 0.02 (the deleted chat) + 0.04 (first) spends the 0.05: the turns behind it are
    // refused as each starts.
    for _ in ["second", "third"] {
        let error = ws.next_of("error").await;
        assert_eq!(error["code"], "BUDGET_EXCEEDED", "{error}");
    }
    let idle = |s: &Value| s["running_turn"].is_null() && s["queued"] == 0;
    wait_for_session(&alice, &server.base, "q", idle).await;
    assert_eq!(fake.requests().len(), asked_before + 1, "only the first turn reached the model");
    assert!((spent().await - 0.06).abs() < 1e-9);
}
