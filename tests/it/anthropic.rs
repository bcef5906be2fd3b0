//! The Anthropic Messages provider (`kind = "anthropic"`) driven through the real server
//! against a fake that streams like the real API: events cut anywhere (inside JSON and
//! inside characters), tool input in JSON fragments, pings, thinking, errors before and
//! in the stream. And one conversation with tool calls moving between the OpenAI-compatible
//! provider and Anthropic and back, each sent a valid history.

use serde_json::{Value, json};

use crate::common::fake_anthropic::Anthropic;
use crate::common::live::WsClient;
use crate::common::{FakeProvider, Script, TestServer, test_config};
use parley::config::Config;

fn anthropic_config(dir: &std::path::Path, provider: &FakeProvider) -> Config {
    let mut config = test_config(dir, Some(provider));
    config.provider.kind = "anthropic".into();
    config.provider.model = Some("claude-fake-1".into());
    // As read from a secret file, newline and all.
    config.provider.api_key = Some("sk-ant-test\n".into());
    config
}

fn roles_and_blocks(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let blocks: Vec<String> = m["content"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| match b["type"].as_str().unwrap() {
                    "text" => format!("text:{}", b["text"].as_str().unwrap()),
                    "tool_use" => format!("tool_use:{}", b["id"].as_str().unwrap()),
                    "tool_result" => format!("tool_result:{}", b["tool_use_id"].as_str().unwrap()),
                    other => other.to_owned(),
                })
                .collect();
            format!("{}[{}]", m["role"].as_str().unwrap(), blocks.join(","))
        })
        .collect()
}

#[tokio::test]
async fn anthropic_streams_tool_calls_and_thinking_through_the_real_client() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([
        Anthropic::tool_use("toolu_1", "list_dir", json!({"path": "."}), 4),
        Anthropic::text(&["Héllo ", "✓ done"]),
    ]);
    let server = TestServer::start(anthropic_config(dir.path(), &provider)).await;
    let (status, body) = server.chat("a", "look around").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "Héllo ✓ done");
    assert_eq!(body["tool_calls"][0]["name"], "list_dir");
    assert_eq!(body["tool_calls"][0]["args"], json!({"path": "."}));
    assert_eq!(body["tool_calls"][0]["is_error"], false);
    // Input, cache writes and cache reads all count as prompt tokens, over both calls.
    assert_eq!(body["usage"]["prompt_tokens"], 32, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 18, "{body}");

    let requests = provider.requests();
    assert_eq!(requests[0]["model"], "claude-fake-1");
    assert_eq!(requests[0]["max_tokens"], 8192);
    assert_eq!(requests[0]["stream"], true);
    assert!(requests[0]["system"].as_str().unwrap().contains("Parley"), "{}", requests[0]);
    let tool =
        requests[0]["tools"].as_array().unwrap().iter().find(|t| t["name"] == "list_dir").unwrap();
    assert_eq!(tool["input_schema"]["type"], "object");
    assert_eq!(roles_and_blocks(&requests[0]), ["user[text:look around]"]);
    assert_eq!(
        roles_and_blocks(&requests[1]),
        [
            "user[text:look around]",
            "assistant[text:Let me check.,tool_use:toolu_1]",
            "user[tool_result:toolu_1]"
        ]
    );
    assert_eq!(requests[1]["messages"][1]["content"][1]["input"], json!({"path": "."}));
    let headers = provider.anthropic_headers();
    assert_eq!(headers.len(), 2);
    for (key, version) in headers {
        assert_eq!(key.as_deref(), Some("sk-ant-test"));
        assert_eq!(version.as_deref(), Some("2023-06-01"));
    }

    // Thinking streams to watchers as `thinking`, apart from the answer.
    provider.push([Anthropic::thinking(&["Let me ", "think"], "Answer.")]);
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=t").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "ponder"})).await;
    let frames = ws.until("done").await;
    let thinking: String = frames
        .iter()
        .filter(|f| f["type"] == "thinking")
        .map(|f| f["content"].as_str().unwrap())
        .collect();
    assert_eq!(thinking, "Let me think");
    assert_eq!(frames.last().unwrap()["full_response"], "Answer.");
    // The model that served it, by the name it is configured (and listed) under.
    assert_eq!(frames.last().unwrap()["model"], "claude-fake-1");
}

#[tokio::test]
async fn anthropic_errors_are_typed_and_retried_before_the_first_byte() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::start(anthropic_config(dir.path(), &provider)).await;

    // Overloaded (529) and rate limited (429 with retry-after) are tried again.
    provider.push([
        Anthropic::status(529, "overloaded_error", None),
        Anthropic::status(429, "rate_limit_error", Some("0")),
        Anthropic::text(&["made it"]),
    ]);
    let (status, body) = server.chat("e", "hello").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "made it");
    assert_eq!(provider.requests().len(), 3);

    // Overloaded as the stream's first word: nothing was shown, so it is tried again.
    let before = provider.requests().len();
    provider
        .push([Anthropic::error_at_start("overloaded_error"), Anthropic::text(&["second try"])]);
    let (status, body) = server.chat("e", "once more").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "second try");
    assert_eq!(provider.requests().len(), before + 2);

    // An error after part of the answer ends the turn; the partial text is kept, interrupted.
    provider.push([Anthropic::error_mid_stream("overloaded_error")]);
    let (status, body) = server.chat("e", "again").await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (502, Some("PROVIDER_ERROR")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("unavailable"), "{body}");
    let (_, detail) = server.get("/api/sessions/e?limit=500").await;
    let partial = detail["messages"].as_array().unwrap().iter().find(|m| m["content"] == "Partly ");
    assert_eq!(partial.expect("the partial answer is stored")["status"], "interrupted");

    // A refused request is not retried, and its words stay in the log.
    let before = provider.requests().len();
    provider.push([Anthropic::status(400, "invalid_request_error", None)]);
    let (status, body) = server.chat("e", "bad").await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("HTTP 400"), "{body}");
    assert!(!body["error"].as_str().unwrap().contains("fake"), "{body}");
    assert_eq!(provider.requests().len(), before + 1);

    // The session still answers.
    let (status, body) = server.chat("e", "still there?").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "echo: still there?");

    // Without a model there is nothing to ask for: start-up says so.
    let mut config = anthropic_config(dir.path(), &provider);
    config.provider.model = None;
    let refused = parley::server::build(config).await.err().expect("refused").to_string();
    assert!(refused.contains("provider.model"), "{refused}");
}

#[tokio::test]
async fn a_conversation_with_tool_calls_moves_between_providers_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;

    // Started on the OpenAI-compatible provider, with an id Anthropic would refuse and a
    // tool that prints nothing.
    provider.push([
        Script::tool_call("functions.shell:0", "shell", json!({"command": "mkdir made"}), 2),
        Script::text(&["A done"]),
    ]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, _) = server.chat("x", "first").await;
    assert_eq!(status, 200);
    server.stop().await;

    // Continued on Anthropic: the OpenAI-made call and its result are blocks.
    let seen = provider.requests().len();
    provider.push([
        Anthropic::tool_use("toolu_b", "list_dir", json!({"path": "."}), 2),
        Anthropic::text(&["B done"]),
    ]);
    let server = TestServer::start(anthropic_config(dir.path(), &provider)).await;
    let (status, body) = server.chat("x", "second").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "B done");
    let requests = provider.requests();
    // The OpenAI-made id, made safe the same way in the call and in its result.
    let call_a = requests[seen]["messages"][1]["content"][1]["id"].as_str().unwrap().to_owned();
    assert!(call_a.starts_with("functions_shell_0_"), "{call_a}");
    assert_eq!(requests[seen]["messages"][2]["content"][0]["content"], "(no output)");
    assert_eq!(
        roles_and_blocks(&requests[seen + 1]),
        [
            "user[text:first]",
            &format!("assistant[text:Let me check. ,tool_use:{call_a}]"),
            &format!("user[tool_result:{call_a}]"),
            "assistant[text:A done]",
            "user[text:second]",
            "assistant[text:Let me check.,tool_use:toolu_b]",
            "user[tool_result:toolu_b]",
        ]
    );
    server.stop().await;

    // And back: the Anthropic-made call is an OpenAI tool call answered by a tool message.
    provider.push([Script::text(&["C done"])]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, _) = server.chat("x", "third").await;
    assert_eq!(status, 200);
    let last = provider.requests().last().unwrap().clone();
    let shape: Vec<String> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            match (
                m["role"].as_str().unwrap(),
                m["tool_calls"][0]["id"].as_str(),
                m["tool_call_id"].as_str(),
            ) {
                (_, Some(call), _) => format!("assistant+{call}"),
                (_, _, Some(id)) => format!("tool:{id}"),
                (role, _, _) => role.to_owned(),
            }
        })
        .collect();
    assert_eq!(
        shape,
        [
            "system",
            "user",
            "assistant+functions.shell:0",
            "tool:functions.shell:0",
            "assistant",
            "user",
            "assistant+toolu_b",
            "tool:toolu_b",
            "assistant",
            "user"
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn extended_thinking_is_asked_for_and_its_signature_goes_back_with_the_calls() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = anthropic_config(dir.path(), &provider);
    config.provider.thinking_budget_tokens = 2048;
    provider.push([
        Anthropic::thinking_tool_use("I should look.", "toolu_t", "list_dir", json!({"path": "."})),
        Anthropic::text(&["Looked."]),
    ]);
    let server = TestServer::start(config).await;
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=th").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "look"})).await;
    let frames = ws.until("done").await;
    assert!(frames.iter().any(|f| f["type"] == "thinking" && f["content"] == "I should look."));
    assert_eq!(frames.last().unwrap()["full_response"], "Looked.", "{frames:?}");
    let requests = provider.requests();
    assert_eq!(requests[0]["thinking"], json!({"type": "enabled", "budget_tokens": 2048}));
    let step = &requests[1]["messages"][1]["content"];
    assert_eq!(
        step[0],
        json!({"type": "thinking", "thinking": "I should look.", "signature": "sig-123"})
    );
    assert_eq!(step[1]["type"], "tool_use");

    // A budget the API would refuse stops start-up.
    let mut config = anthropic_config(dir.path(), &provider);
    config.provider.thinking_budget_tokens = 500;
    let refused = parley::server::build(config).await.err().expect("refused").to_string();
    assert!(refused.contains("thinking_budget_tokens"), "{refused}");
}
