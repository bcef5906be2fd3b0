//! What an operator reads off a running server: `GET /api/config` and `GET /metrics`.

use parley::config::McpServerConfig;

use crate::common::{FakeProvider, TestServer, client_with, test_config};

#[tokio::test]
async fn the_effective_configuration_is_shown_to_admins_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.provider.api_key = Some("sk-provider-secret".into());
    let url = provider.url().replace("http://", "http://me:url-secret@");
    config.provider.url = Some(format!("{url}?key=query-secret"));
    config.limits.turns_per_minute = 42;
    // A server that never starts is enough to show its configuration.
    let server_config = McpServerConfig {
        command: Some("/nonexistent/mcp".into()),
        args: vec!["--api-key".into(), "arg-secret".into()],
        env: [("API_TOKEN".to_owned(), "env-secret".to_owned())].into(),
        ..McpServerConfig::default()
    };
    config.mcp.servers.insert("tools".into(), server_config);
    let server = TestServer::start(config).await;

    let (status, body) = server.get("/api/config").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["limits"]["turns_per_minute"], 42);
    assert_eq!(body["provider"]["api_key"], "***");
    assert_eq!(body["mcp"]["servers"]["tools"]["env"]["API_TOKEN"], "***");
    let text = body.to_string();
    for secret in ["sk-provider-secret", "env-secret", "url-secret", "query-secret", "arg-secret"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    // Nor in what every user can read.
    let (_, status) = server.get("/api/status").await;
    assert!(!status.to_string().contains("url-secret"), "{status}");

    let toml = server.client.get(server.url("/api/config?format=toml")).send().await.unwrap();
    assert_eq!(toml.status(), 200);
    assert!(toml.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let toml = toml.text().await.unwrap();
    assert!(toml.contains("turns_per_minute = 42") && toml.contains("api_key = \"***\""), "{toml}");
    assert!(!toml.contains("sk-provider-secret"), "{toml}");

    let (status, body) = server.get("/api/config?format=yaml").await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (400, Some("INVALID_QUERY")), "{body}");

    // Not for other users.
    let user = client_with(&server.token_for("bob", false).await);
    let response = user.get(server.url("/api/config")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "FORBIDDEN");
    assert!(!body.to_string().contains("sk-provider-secret"));
    server.stop().await;
}

/// The value of the sample `name{labels}` in OpenMetrics text (NaN when absent, so no
/// comparison passes for a misspelled series).
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let key = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
    text.lines()
        .find_map(|line| line.strip_prefix(&key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

async fn scrape(client: &reqwest::Client, server: &TestServer) -> String {
    let response = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_change_as_turns_run_and_need_an_admin_or_an_allowed_address() {
    use crate::common::Script;
    use crate::common::live::WsClient;
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.tools.approval.insert("write_file".into(), "ask".into());
    let server = TestServer::start(config).await;
    let before = scrape(&server.client, &server).await;
    assert!(before.ends_with("# EOF\n"), "{before}");
    assert_eq!(sample(&before, "parley_turns_started_total", ""), 0.0);

    // A turn with a tool call; one whose provider fails; one with an approval, denied.
    // The first call is rate limited once, and answered on its retry.
    provider.push([
        Script::status(429, "slow down"),
        Script::tool_call("c1", "list_dir", json!({"path": "."}), 1),
        Script::text(&["listed"]),
        Script::status(400, "nope"),
        Script::tool_call("c2", "write_file", json!({"path": "a.txt", "content": "x"}), 1),
        Script::text(&["not written"]),
    ]);
    assert_eq!(server.chat("m", "list").await.0, 200);
    assert_eq!(server.chat("m", "fail").await.0, 502);
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=w").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "write"})).await;
    let request = ws.next_of("approval_request").await;
    let text = scrape(&server.client, &server).await;
    assert_eq!(sample(&text, "parley_connections", "protocol=\"ws\""), 1.0, "{text}");
    assert_eq!(sample(&text, "parley_active_turns", ""), 1.0, "{text}");
    ws.send(json!({"type": "approval_response", "request_id": request["request_id"], "decision": "deny"})).await;
    ws.next_of("done").await;

    let text = scrape(&server.client, &server).await;
    assert_eq!(sample(&text, "parley_turns_started_total", ""), 3.0, "{text}");
    assert_eq!(
        sample(&text, "parley_turns_finished_total", "status=\"done\",code=\"\""),
        2.0,
        "{text}"
    );
    let failed = "status=\"error\",code=\"PROVIDER_ERROR\"";
    assert_eq!(sample(&text, "parley_turns_finished_total", failed), 1.0, "{text}");
    assert_eq!(sample(&text, "parley_turn_duration_seconds_count", ""), 3.0, "{text}");
    // Each of the three turns reached its first model call once, however many it made.
    assert_eq!(sample(&text, "parley_turn_start_seconds_count", ""), 3.0, "{text}");
    let ok = "provider=\"default\",model=\"parley\",outcome=\"ok\"";
    assert_eq!(sample(&text, "parley_provider_requests_total", ok), 4.0, "{text}");
    let rejected = "provider=\"default\",model=\"parley\",outcome=\"rejected\"";
    assert_eq!(sample(&text, "parley_provider_requests_total", rejected), 1.0, "{text}");
    let first = "provider=\"default\",model=\"parley\"";
    assert_eq!(sample(&text, "parley_time_to_first_token_seconds_count", first), 4.0, "{text}");
    assert_eq!(sample(&text, "parley_tokens_total", "model=\"parley\",direction=\"in\""), 40.0);
    assert_eq!(sample(&text, "parley_tokens_total", "model=\"parley\",direction=\"out\""), 20.0);
    assert_eq!(sample(&text, "parley_tool_calls_total", "tool=\"list_dir\",outcome=\"ok\""), 1.0);
    let refused = "tool=\"write_file\",outcome=\"refused\"";
    assert_eq!(sample(&text, "parley_tool_calls_total", refused), 1.0, "{text}");
    assert_eq!(sample(&text, "parley_approvals_total", "decision=\"deny\""), 1.0, "{text}");
    let retried = "provider=\"default\",reason=\"rate_limited\"";
    assert_eq!(sample(&text, "parley_provider_retries_total", retried), 1.0, "{text}");
    // Creating and finishing each turn are store writes too.
    assert!(sample(&text, "parley_store_write_seconds_count", "") >= 10.0, "{text}");
    assert!(sample(&text, "parley_bus_ping_seconds", "") < 1.0, "{text}");
    assert_eq!(sample(&text, "parley_store_up", ""), 1.0);
    assert_eq!(sample(&text, "parley_bus_up", ""), 1.0);
    assert_eq!(sample(&text, "parley_active_turns", ""), 0.0);

    // Scraping needs an admin token...
    let anonymous = reqwest::Client::new().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let user = client_with(&server.token_for("eve", false).await);
    let response = user.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 403);
    server.stop().await;

    // ... unless the scraper's address is allowed: behind a trusted proxy, the address the
    // proxy names; never the proxy's own (a request it did not say the client of).
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(&provider));
    config.trusted_proxies = vec!["127.0.0.1".into()];
    config.metrics.allow = vec!["10.0.0.0/8".into(), "127.0.0.1".into()];
    let server = TestServer::start(config).await;
    let anonymous = reqwest::Client::new();
    let from = |client: &str| {
        anonymous.get(server.url("/metrics")).header("x-forwarded-for", client.to_owned()).send()
    };
    assert_eq!(from("10.1.2.3").await.unwrap().status(), 200);
    assert_eq!(from("203.0.113.9").await.unwrap().status(), 401);
    let direct = anonymous.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(direct.status(), 401, "the proxy's own address allows nothing");
    server.stop().await;

    let mut config = test_config(dir.path(), Some(&provider));
    config.metrics.allow = vec!["0.0.0.0/0".into()];
    assert!(config.validate().unwrap_err().contains("metrics.allow"));
}
