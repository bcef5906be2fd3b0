//! The adversarial suite: no credentials, revoked tokens, other users' tokens, tickets,
//! pairing brute force, cross-site WebSockets, path traversal, floods, slow clients.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::live::{SseClient, WsClient};
use crate::common::{FakeProvider, Script, TestServer, client, client_with, json_of, test_config};

/// Every authenticated route, with a body where it takes one.
fn protected_routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/api/status"),
        (Method::POST, "/api/chat"),
        (Method::POST, "/api/chat/ticket"),
        (Method::GET, "/api/chat/stream"),
        (Method::GET, "/ws/chat"),
        (Method::GET, "/api/events"),
        (Method::GET, "/api/sessions"),
        (Method::POST, "/api/sessions/prune"),
        (Method::GET, "/api/sessions/s1"),
        (Method::PATCH, "/api/sessions/s1"),
        (Method::DELETE, "/api/sessions/s1"),
        (Method::POST, "/api/sessions/s1/messages"),
        (Method::POST, "/api/sessions/s1/abort"),
        (Method::GET, "/api/sessions/s1/tool-calls"),
        (Method::GET, "/api/sessions/s1/events"),
        (Method::POST, "/api/sessions/s1/notify"),
        (Method::GET, "/api/approvals"),
        (Method::POST, "/api/approvals/x/approve"),
        (Method::GET, "/api/agents"),
        (Method::POST, "/api/agents/x/kill"),
        (Method::GET, "/api/workspace/tree"),
        (Method::GET, "/api/workspace/file/a.txt"),
        (Method::GET, "/api/tokens"),
        (Method::POST, "/api/tokens"),
        (Method::DELETE, "/api/tokens/x"),
        (Method::GET, "/api/audit"),
    ]
}

async fn call(
    client: &reqwest::Client,
    server: &TestServer,
    method: Method,
    path: &str,
) -> (u16, Value) {
    let response = client
        .request(method, server.url(path))
        .header("content-type", "application/json")
        .body(r#"{"content":"hi","name":"n","event":{},"user":"u"}"#)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn every_entry_point_needs_valid_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let revoked = server.token_for("default", false).await;
    let (status, _) =
        server.post("/api/chat", json!({"content": "keep me", "session_id": "s1"})).await;
    assert_eq!(status, 200);
    let id = server.get("/api/tokens").await.1["items"][0]["id"].as_str().unwrap().to_owned();
    let response =
        server.client.delete(server.url(&format!("/api/tokens/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 200);

    let anonymous = client();
    let with_revoked = client_with(&revoked);
    let forged = client_with("pk_0000000000000000000000000000000000000000000000000000000000000000");
    for (method, path) in protected_routes() {
        for (who, client) in
            [("nobody", &anonymous), ("revoked", &with_revoked), ("forged", &forged)]
        {
            let (status, body) = call(client, &server, method.clone(), path).await;
            assert_eq!(status, 401, "{who} {method} {path}: {body}");
            assert_eq!(body["code"], "AUTH_ERROR", "{who} {method} {path}");
        }
        // Query-string credentials are checked the same way.
        let (status, _) =
            call(&anonymous, &server, method.clone(), &format!("{path}?token={revoked}")).await;
        assert_eq!(status, 401, "?token= {method} {path}");
    }
    // Public routes.
    assert_eq!(anonymous.get(server.url("/health")).send().await.unwrap().status(), 200);
    assert_eq!(anonymous.get(server.url("/health/ready")).send().await.unwrap().status(), 200);
    let (status, body) = call(&anonymous, &server, Method::POST, "/api/pair").await;
    assert_eq!(status, 422, "{body}");
    // Nothing changed.
    let (_, detail) = server.get("/api/sessions/s1").await;
    assert_eq!(detail["message_count"], 2);
}

#[tokio::test]
async fn users_cannot_see_or_touch_each_others_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.tools.approval.insert("shell".into(), "ask".into());
    let server = TestServer::start(config).await;
    let alice = client_with(&server.token_for("alice", false).await);
    let bob_token = server.token_for("bob", false).await;
    let bob = client_with(&bob_token);

    let chat = |client: &reqwest::Client, content: &str, extra: Value| {
        let mut body = json!({"content": content, "session_id": "s1"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        client.post(server.url("/api/chat")).json(&body).send()
    };
    // Both use "s1"; each gets their own, whatever user_id the client claims.
    let (status, _) = json_of(chat(&alice, "alice secret", json!({})).await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, _) =
        json_of(chat(&bob, "bob here", json!({"user_id": "alice"})).await.unwrap()).await;
    assert_eq!(status, 200);
    let (_, alice_s1) =
        json_of(alice.get(server.url("/api/sessions/s1")).send().await.unwrap()).await;
    let (_, bob_s1) = json_of(bob.get(server.url("/api/sessions/s1")).send().await.unwrap()).await;
    assert_eq!(alice_s1["messages"][0]["content"], "alice secret");
    assert_eq!(bob_s1["messages"][0]["content"], "bob here");
    assert_eq!(bob_s1["message_count"], 2);

    // Alice's private session is invisible to Bob: 404 everywhere, never 403.
    json_of(
        alice
            .post(server.url("/api/chat"))
            .json(&json!({"content": "x", "session_id": "only-alice"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for (method, path) in [
        (Method::GET, "/api/sessions/only-alice"),
        (Method::PATCH, "/api/sessions/only-alice"),
        (Method::DELETE, "/api/sessions/only-alice"),
        (Method::POST, "/api/sessions/only-alice/abort"),
        (Method::GET, "/api/sessions/only-alice/tool-calls"),
        (Method::GET, "/api/sessions/only-alice/events"),
        (Method::POST, "/api/sessions/only-alice/notify"),
    ] {
        let (status, body) = call(&bob, &server, method.clone(), path).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (_, listed) = json_of(bob.get(server.url("/api/sessions")).send().await.unwrap()).await;
    assert_eq!(listed["total"], 1);
    let (status, _) =
        json_of(bob.get(server.url("/api/sessions?all=true")).send().await.unwrap()).await;
    assert_eq!(status, 403);
    let (_, everything) = server.get("/api/sessions?all=true").await;
    assert_eq!(everything["total"], 3);

    // Alice's pending approval and running turn are out of Bob's reach.
    provider.push([
        Script::tool_call("c", "shell", json!({"command": "echo hi"}), 1),
        Script::text(&["ok"]),
    ]);
    let mut bob_feed = SseClient::connect_with_client(&server, &bob, "/api/events").await;
    let (status, body) = json_of(
        alice
            .post(server.url("/api/sessions/only-alice/messages"))
            .json(&json!({"content": "run"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let turn_id = body["turn_id"].as_str().unwrap().to_owned();
    let mut approval = Value::Null;
    for _ in 0..500 {
        let (_, list) =
            json_of(alice.get(server.url("/api/approvals")).send().await.unwrap()).await;
        if let Some(first) = list["items"].get(0) {
            approval = first.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let request_id =
        approval["request_id"].as_str().expect("alice has a pending approval").to_owned();
    let (_, bob_list) = json_of(bob.get(server.url("/api/approvals")).send().await.unwrap()).await;
    assert_eq!(bob_list["items"], json!([]));
    let (status, _) =
        call(&bob, &server, Method::POST, &format!("/api/approvals/{request_id}/approve")).await;
    assert_eq!(status, 404);
    let (status, _) =
        call(&bob, &server, Method::POST, &format!("/api/agents/{turn_id}/kill")).await;
    assert_eq!(status, 404);
    let (_, bob_agents) = json_of(bob.get(server.url("/api/agents")).send().await.unwrap()).await;
    assert_eq!(bob_agents["items"], json!([]));
    // A WebSocket approval_response from Bob is refused too.
    let mut bob_ws =
        WsClient::connect_as(&server, "/ws/chat?session_id=only-alice", &[], Some(&bob_token))
            .await;
    let start = bob_ws.next().await;
    assert_eq!(start["message_count"], 0, "bob's own new session, not alice's");
    bob_ws
        .send(json!({"type": "approval_response", "request_id": request_id, "decision": "approve"}))
        .await;
    assert_eq!(bob_ws.next_of("error").await["code"], "NOT_FOUND");
    let (status, _) =
        call(&alice, &server, Method::POST, &format!("/api/approvals/{request_id}/deny")).await;
    assert_eq!(status, 200);
    // Bob's feed saw only his own session being created, nothing of Alice's.
    let (_, event) = bob_feed.next().await;
    assert_eq!(event["type"], "session_created");
    assert_eq!(event["session_id"], "only-alice");
    let (_, bob_s) =
        json_of(bob.get(server.url("/api/sessions/only-alice")).send().await.unwrap()).await;
    assert_eq!(bob_s["message_count"], 0);

    // Workspaces are separate.
    std::fs::create_dir_all(dir.path().join("workspace/alice")).unwrap();
    std::fs::write(dir.path().join("workspace/alice/diary.txt"), "alice only").unwrap();
    let response = alice.get(server.url("/api/workspace/file/diary.txt")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "alice only");
    let (status, _) = call(&bob, &server, Method::GET, "/api/workspace/file/diary.txt").await;
    assert_eq!(status, 404);
    let (status, _) =
        call(&bob, &server, Method::GET, "/api/workspace/file/..%2Falice%2Fdiary.txt").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn path_traversal_in_path_parameters_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    std::fs::write(dir.path().join("outside.txt"), "secret").unwrap();
    // (`%2e%2e` and `..` as whole segments are resolved by the client's URL parser before
    // sending; the raw requests below send them as they are.)
    let evil = [
        "..%2F..%2Fetc",
        "..%252F..%252Fetc",
        "%252e%252e",
        "a%00b",
        "%2e%2e%2f%2e%2e",
        "..%5C..%5Cetc",
    ];
    for id in evil {
        for (method, template) in [
            (Method::GET, "/api/sessions/{}"),
            (Method::DELETE, "/api/sessions/{}"),
            (Method::PATCH, "/api/sessions/{}"),
            (Method::POST, "/api/sessions/{}/messages"),
            (Method::GET, "/api/sessions/{}/events"),
            (Method::GET, "/api/sessions/{}/tool-calls"),
        ] {
            let path = template.replace("{}", id);
            let (status, body) = call(&server.client, &server, method.clone(), &path).await;
            assert!(status == 400 || status == 404, "{method} {path}: {status} {body}");
            assert!(body["code"].is_string());
        }
        for path in [
            format!("/api/approvals/{id}/approve"),
            format!("/api/agents/{id}/kill"),
            format!("/api/tokens/{id}"),
        ] {
            let method =
                if path.starts_with("/api/tokens") { Method::DELETE } else { Method::POST };
            let (status, body) = call(&server.client, &server, method, &path).await;
            assert!(status == 400 || status == 404, "{path}: {status} {body}");
        }
    }
    for path in [
        "..%2F..%2Foutside.txt",
        "..%252F..%252Foutside.txt",
        "%2Fetc%2Fpasswd",
        "a/../../outside.txt",
    ] {
        let response = server
            .client
            .get(server.url(&format!("/api/workspace/file/{path}")))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!(!text.contains("secret") && !text.contains("root:"), "{path} leaked: {text}");
        assert!(status == 403 || status == 404, "{path}: {status} {text}");
    }
    let addr = server.base.trim_start_matches("http://").to_owned();
    for target in [
        "/api/sessions/%2e%2e",
        "/api/sessions/%2e%2e/events",
        "/api/sessions/../sessions/x",
        "/api/workspace/file/%2e%2e/%2e%2e/outside.txt",
    ] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            server.token
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response))
            .await
            .unwrap()
            .unwrap();
        let status: u16 = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!([400, 403, 404].contains(&status), "{target}: {response}");
        assert!(response.contains("\"code\""), "{target}: {response}");
        assert!(!response.contains("secret"), "{target}: {response}");
    }
    let (_, list) = server.get("/api/sessions").await;
    assert_eq!(list["total"], 0, "no session was created by any of that");
}

#[tokio::test]
async fn pairing_trades_a_code_for_a_token_and_locks_out_guessers() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let anonymous = client();
    let code =
        parley::auth::new_pairing_code(server.store.as_ref(), &Default::default()).await.unwrap();
    let pair = |code: String| {
        anonymous.post(server.url("/api/pair")).json(&json!({"code": code, "user": "phone"})).send()
    };
    let (status, body) = json_of(pair(code.to_lowercase()).await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"], "phone");
    let token = body["token"].as_str().unwrap().to_owned();
    let phone = client_with(&token);
    assert_eq!(phone.get(server.url("/api/sessions")).send().await.unwrap().status(), 200);
    // Used codes do not work twice.
    let (status, body) = json_of(pair(code.clone()).await.unwrap()).await;
    assert_eq!(status, 401, "{body}");

    // Brute force: after five wrong codes (one is above), even the right one is refused.
    let fresh =
        parley::auth::new_pairing_code(server.store.as_ref(), &Default::default()).await.unwrap();
    for _ in 0..4 {
        let (status, _) = json_of(pair("WRONG-CODE".into()).await.unwrap()).await;
        assert_eq!(status, 401);
    }
    let response = pair(fresh.clone()).await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 200);
    let (_, body) = json_of(response).await;
    assert_eq!(body["code"], "RATE_LIMITED");
    let (_, audit) = server.get("/api/audit").await;
    let kinds: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"paired")
            && kinds.contains(&"pairing_failure")
            && kinds.contains(&"lockout"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn tickets_websocket_credentials_and_origins() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.auth.allowed_origins = vec!["https://chat.example".into()];
    let server = TestServer::start(config).await;
    let token = server.token.clone();

    // bearer.<token> sub-protocol; the echoed protocol is parley.v1.
    let protocol = format!("bearer.{token}");
    let ws = WsClient::connect_as(&server, "/ws/chat", &[&protocol, "parley.v1"], None).await;
    assert_eq!(ws.protocol.as_deref(), Some("parley.v1"));
    // ?token= works for WebSocket and SSE.
    WsClient::connect_as(&server, &format!("/ws/chat?token={token}"), &[], None).await;
    server.chat("t", "hi").await;
    let mut sse = SseClient::connect_with_client(
        &server,
        &client(),
        &format!("/api/sessions/t/events?after=0&token={token}"),
    )
    .await;
    assert_eq!(sse.next().await.1["type"], "user_message");
    // A ticket works once.
    let ticket =
        server.post("/api/chat/ticket", json!({})).await.1["ticket"].as_str().unwrap().to_owned();
    let path = format!("/api/events?ticket={ticket}");
    SseClient::connect_with_client(&server, &client(), &path).await;
    let (status, body) = json_of(client().get(server.url(&path)).send().await.unwrap()).await;
    assert_eq!(status, 401, "{body}");

    // Cross-site WebSocket hijacking is refused; same origin and the allowlist pass.
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let refused = WsClient::try_connect(
        &server,
        "/ws/chat",
        &[],
        Some(&token),
        &[("origin", "https://evil.example")],
    )
    .await;
    let (status, body) = refused.err().expect("cross-origin upgrade refused");
    assert_eq!(status, 403);
    assert!(body.contains("FORBIDDEN"), "{body}");
    let same = format!("http://127.0.0.1:{port}");
    assert!(
        WsClient::try_connect(&server, "/ws/chat", &[], Some(&token), &[("origin", &same)])
            .await
            .is_ok()
    );
    assert!(
        WsClient::try_connect(
            &server,
            "/ws/chat",
            &[],
            Some(&token),
            &[("origin", "https://chat.example")]
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn revoking_a_token_closes_its_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let victim = server.token_for("carol", false).await;
    let mut by_api = WsClient::connect_as(&server, "/ws/chat", &[], Some(&victim)).await;
    by_api.next().await;
    let other = server.token_for("carol", false).await;
    let mut by_cli = WsClient::connect_as(&server, "/ws/chat", &[], Some(&other)).await;
    by_cli.next().await;
    let (_, tokens) = server.get("/api/tokens").await;
    let ids: Vec<String> = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["user"] == "carol")
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    // Which id is which does not matter: revoke one through the API, the other as
    // `parley token revoke` does (straight in the store, noticed by polling).
    let (status, _) = json_of(
        server.client.delete(server.url(&format!("/api/tokens/{}", ids[0]))).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    server.store.revoke_token(&ids[1]).await.unwrap();
    assert_eq!(by_api.close_code().await, Some(1008));
    assert_eq!(by_cli.close_code().await, Some(1008));
    let (status, _) =
        json_of(client_with(&victim).get(server.url("/api/sessions")).send().await.unwrap()).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn floods_hit_the_rate_limit_and_other_users_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.limits.requests_per_minute_per_token = 20;
    config.limits.turns_per_minute = 3;
    config.limits.max_connections_per_user = 2;
    let server = TestServer::start(config).await;
    let flooder = client_with(&server.token_for("flood", false).await);
    let calm = client_with(&server.token_for("calm", false).await);
    let mut limited = None;
    for _ in 0..25 {
        let response = flooder.get(server.url("/api/sessions")).send().await.unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the flood was limited");
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let (_, body) = json_of(response).await;
    assert_eq!(body["code"], "RATE_LIMITED");
    assert!(body["retry_after"].is_u64());
    assert_eq!(calm.get(server.url("/api/sessions")).send().await.unwrap().status(), 200);

    // Turns per user per minute.
    for i in 0..3 {
        let (status, _) = json_of(
            calm.post(server.url("/api/chat"))
                .json(&json!({"content": format!("t{i}")}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, body) = json_of(
        calm.post(server.url("/api/chat"))
            .json(&json!({"content": "one too many"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "RATE_LIMITED");

    // Connections per user.
    let token = server.token_for("socketeer", false).await;
    let _a = WsClient::connect_as(&server, "/ws/chat", &[], Some(&token)).await;
    let _b = WsClient::connect_as(&server, "/ws/chat", &[], Some(&token)).await;
    let refused = WsClient::try_connect(&server, "/ws/chat", &[], Some(&token), &[]).await;
    assert_eq!(refused.err().expect("third socket refused").0, 429);
}

#[tokio::test]
async fn failed_authentication_locks_the_address_out() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.limits.auth_failures_per_minute = 3;
    config.limits.max_connections = 1;
    let server = TestServer::start(config).await;
    let bad = client_with("pk_bad");
    for _ in 0..3 {
        assert_eq!(bad.get(server.url("/api/sessions")).send().await.unwrap().status(), 401);
    }
    // Guessing from this address is locked out now...
    let (status, body) = json_of(bad.get(server.url("/api/sessions")).send().await.unwrap()).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["retry_after"].as_u64().unwrap() > 200);
    // ...but someone holding a valid token at the same address is never refused.
    let (status, body) =
        json_of(server.client.get(server.url("/api/sessions")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let audit = server.store.audit_log(100).await.unwrap();
    assert!(audit.iter().any(|e| e.kind == "lockout"));
    assert!(audit.iter().filter(|e| e.kind == "auth_failure").count() >= 3);
}

#[tokio::test]
async fn connections_past_the_node_limit_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.limits.max_connections = 1;
    let server = TestServer::start(config).await;
    let _first = WsClient::connect(&server, "/ws/chat").await;
    let (status, body) = WsClient::try_connect(&server, "/ws/chat", &[], Some(&server.token), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("TOO_MANY_CONNECTIONS"), "{body}");
}

#[tokio::test]
async fn slow_clients_are_cut_off_after_the_header_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.limits.header_read_timeout_secs = 1;
    let server = TestServer::start(config).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Never finish the headers: the server closes the connection instead of waiting.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a slow client's connection open");
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn requests_per_address_are_limited_public_ones_included() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), None);
    config.limits.requests_per_minute_per_ip = 5;
    let server = TestServer::start(config).await;
    for _ in 0..5 {
        assert_eq!(client().get(server.url("/health")).send().await.unwrap().status(), 200);
    }
    let (status, body) = json_of(client().get(server.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_carry_secrets_or_content() {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let parley = env!("CARGO_BIN_EXE_parley");
    let run = |args: &[&str]| {
        let output = Command::new(parley).args(args).current_dir(dir.path()).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let token = run(&["token", "create", "--user", "alice", "--label", "laptop"]);
    assert!(
        token.starts_with("pk_") && !token.contains('\n'),
        "the token alone on stdout: {token}"
    );
    let listed = run(&["token", "list"]);
    assert!(listed.contains("alice") && listed.contains("laptop") && !listed.contains(&token));
    let code = run(&["pair"]);
    std::fs::create_dir_all(dir.path().join("data/workspace/alice")).unwrap();
    std::fs::write(dir.path().join("data/workspace/alice/notes.txt"), "TOOL-OUTPUT-7f3a").unwrap();
    provider.push([
        Script::tool_call("r", "read_file", json!({"path": "notes.txt"}), 1),
        Script::text(&["ANSWER-CONTENT-91c2"]),
    ]);

    let mut child = Command::new(parley)
        .arg("serve")
        .current_dir(dir.path())
        .env("PARLEY_LISTEN", "127.0.0.1:0")
        .env("PARLEY_PROVIDER_URL", provider.url())
        .env("PARLEY_API_KEY", "sk-PROVIDER-KEY-55aa")
        .env_remove("PARLEY_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&first).contains("listening on http://")
        || !first.ends_with(b"\n")
    {
        stdout.read_exact(&mut byte).unwrap();
        first.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&first).into_owned();
    let base =
        line.split("listening on ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();

    let alice = client_with(&token);
    let (status, body) = json_of(
        alice
            .post(format!("{base}/api/chat"))
            .json(&json!({"content": "USER-CONTENT-4b1d", "session_id": "s"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "ANSWER-CONTENT-91c2");
    let ticket = json_of(alice.post(format!("{base}/api/chat/ticket")).send().await.unwrap())
        .await
        .1["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    client().get(format!("{base}/api/sessions?ticket={ticket}")).send().await.unwrap();
    client_with("pk_WRONG-TOKEN-0c0c").get(format!("{base}/api/sessions")).send().await.unwrap();
    let paired = client()
        .post(format!("{base}/api/pair"))
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    let pair_token = json_of(paired).await.1["token"].as_str().unwrap().to_owned();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    child.wait().unwrap();
    let logs = format!("{line}{rest}{stderr}");
    assert!(logs.contains("turn finished"), "the log is there: {logs}");
    for secret in [
        token.as_str(),
        pair_token.as_str(),
        ticket.as_str(),
        code.as_str(),
        "USER-CONTENT-4b1d",
        "ANSWER-CONTENT-91c2",
        "TOOL-OUTPUT-7f3a",
        "sk-PROVIDER-KEY-55aa",
        "WRONG-TOKEN-0c0c",
    ] {
        assert!(!logs.contains(secret), "{secret} appeared in the log:\n{logs}");
    }
}
