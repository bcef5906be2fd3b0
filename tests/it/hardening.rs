//! Holes found by attacking a running server, each closed and kept closed: pairing that
//! granted existing users, lockouts that denied valid tokens, forwarded addresses, error
//! bodies that carried internals.

use serde_json::json;

use crate::common::live::WsClient;
use crate::common::{FakeProvider, TestServer, client, client_with, json_of, test_config};

#[tokio::test]
async fn a_pairing_code_never_grants_an_existing_user() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), None)).await;
    let alice = client_with(&server.token_for("alice", false).await);
    let (status, _) = json_of(
        alice
            .post(server.url("/api/sessions/private/messages"))
            .json(&json!({"content": "hi"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202);
    let code =
        parley::auth::new_pairing_code(server.store.as_ref(), &Default::default()).await.unwrap();
    let pair = |user: &str| {
        client().post(server.url("/api/pair")).json(&json!({"code": code, "user": user})).send()
    };
    // Naming an existing user is refused, and the code stays good for a new name.
    for taken in ["alice", "default"] {
        let (status, body) = json_of(pair(taken).await.unwrap()).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["code"], "USER_EXISTS");
        assert!(body.get("token").is_none());
    }
    let (status, body) = json_of(pair("newcomer").await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"], "newcomer");
    assert_eq!(body["admin"], false, "only a fresh server's first pairing makes an admin");
    let newcomer = client_with(body["token"].as_str().unwrap());
    let response = newcomer.get(server.url("/api/sessions/private")).send().await.unwrap();
    assert_eq!(response.status(), 404, "alice's session stays hers");

    // A code minted by an admin for alice pairs a new device of alice's.
    let (status, minted) = server.post("/api/pairing-codes", json!({"user": "alice"})).await;
    assert_eq!(status, 201, "{minted}");
    assert_eq!(minted["expires_in"], 3600);
    let minted_code = minted["code"].as_str().unwrap().to_owned();
    let (status, body) = json_of(
        client()
            .post(server.url("/api/pair"))
            .json(&json!({"code": minted_code, "user": "bob"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "a code for alice cannot become bob: {body}");
    let (status, body) = json_of(
        client()
            .post(server.url("/api/pair"))
            .json(&json!({"code": minted_code}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"], "alice");
    assert_eq!(body["admin"], false);
    let device = client_with(body["token"].as_str().unwrap());
    let response = device.get(server.url("/api/sessions/private")).send().await.unwrap();
    assert_eq!(response.status(), 200, "the new device sees alice's sessions");

    // Only admins mint codes for a user.
    let response = alice
        .post(server.url("/api/pairing-codes"))
        .json(&json!({"user": "default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let audit = server.store.audit_log(100).await.unwrap();
    let details: Vec<String> = audit
        .iter()
        .filter(|e| e.kind == "paired")
        .map(|e| {
            format!("{} {}", e.user.as_deref().unwrap_or("-"), e.detail.as_deref().unwrap_or(""))
        })
        .collect();
    assert!(details.iter().any(|d| d.starts_with("newcomer new user")), "{details:?}");
    assert!(details.iter().any(|d| d.starts_with("alice new device")), "{details:?}");
    assert!(audit.iter().any(|e| e.kind == "pairing_code_created"));
}

#[tokio::test]
async fn the_operator_mints_device_codes_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = crate::common::parley_command(dir.path());
    let created = run(&["token", "create", "--user", "carol"]);
    assert!(created.status.success());
    let minted = run(&["pair", "--user", "carol"]);
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let code = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let refused = run(&["pair", "--admin"]);
    assert!(!refused.status.success(), "an admin code needs its user");
    let mut config = test_config(dir.path(), None);
    config.data_dir = dir.path().join("data");
    let server = TestServer::start(config).await;
    let (status, body) = json_of(
        client().post(server.url("/api/pair")).json(&json!({"code": code})).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"], "carol");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_limits_and_lockouts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), None);
    config.trusted_proxies = vec!["127.0.0.0/8".into()];
    config.limits.requests_per_minute_per_ip = 5;
    config.limits.auth_failures_per_minute = 2;
    let server = TestServer::start(config).await;
    let via = |client_addr: &str, token: &str| {
        client_with(token).get(server.url("/api/sessions")).header("x-forwarded-for", client_addr)
    };
    // The attacker's address is locked out after two wrong tokens...
    for _ in 0..2 {
        assert_eq!(via("6.6.6.6", "pk_bad").send().await.unwrap().status(), 401);
    }
    assert_eq!(via("6.6.6.6", "pk_bad").send().await.unwrap().status(), 429);
    // A forged `Forwarded` beside the proxy's `X-Forwarded-For` changes nothing.
    let forged = via("6.6.6.6", "pk_bad").header("forwarded", "for=9.9.9.9").send().await;
    assert_eq!(forged.unwrap().status(), 429);
    // ...which never refuses a valid token from there; then the address's budget is spent,
    // and another client's is untouched.
    assert_eq!(via("6.6.6.6", &server.token).send().await.unwrap().status(), 200);
    assert_eq!(via("6.6.6.6", &server.token).send().await.unwrap().status(), 429);
    assert_eq!(via("7.7.7.7", "pk_bad").send().await.unwrap().status(), 401);
    assert_eq!(via("2001:db8::7", &server.token).send().await.unwrap().status(), 200);
    let audit = server.store.audit_log(100).await.unwrap();
    let lockout = audit.iter().find(|e| e.kind == "lockout").expect("the lockout is audited");
    assert_eq!(lockout.ip.as_deref(), Some("6.6.6.6"));
}

#[tokio::test]
async fn forwarding_headers_from_untrusted_peers_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), None);
    config.limits.requests_per_minute_per_ip = 3;
    let server = TestServer::start(config).await;
    // A client cannot dodge its limit by making up addresses.
    for n in 0..3 {
        let response = client()
            .get(server.url("/health"))
            .header("x-forwarded-for", format!("9.9.9.{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let refused =
        client().get(server.url("/health")).header("x-forwarded-for", "8.8.8.8").send().await;
    assert_eq!(refused.unwrap().status(), 429);
}

#[test]
fn a_bad_trusted_proxies_entry_is_refused_at_start() {
    let config = parley::config::Config {
        trusted_proxies: vec!["10.0.0.0/99".into()],
        ..Default::default()
    };
    let err = config.validate().unwrap_err();
    assert!(err.contains("10.0.0.0/99"), "{err}");
}

#[tokio::test]
async fn errors_carry_a_request_id_and_no_internals() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), None);
    // A provider nobody listens on, at an address that must not reach clients.
    config.provider.url = Some("http://127.0.0.1:9/v1-internal-path".into());
    config.provider.max_retries = 0;
    let server = TestServer::start(config).await;
    let response = server
        .client
        .post(server.url("/api/chat"))
        .header("x-request-id", "trace-42.a")
        .json(&json!({"content": "hi", "session_id": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42.a");
    let (status, body) = json_of(response).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "PROVIDER_ERROR");
    assert_eq!(body["error"], "the model provider is unavailable");
    assert_eq!(body["request_id"], "trace-42.a");
    let text = body.to_string();
    assert!(!text.contains("127.0.0.1") && !text.contains("internal"), "{text}");

    // A malformed id is replaced; every response has one, and errors repeat it.
    let response =
        server.client.get(server.url("/api/nope")).header("x-request-id", "bad id\t").send().await;
    let response = response.unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!id.is_empty() && id != "bad id\t");
    let (status, body) = json_of(response).await;
    assert_eq!(status, 404);
    assert_eq!(body["request_id"], id.as_str());
    let health = client().get(server.url("/health")).send().await.unwrap();
    assert!(health.headers().contains_key("x-request-id"));

    // A WebSocket keeps the id of its upgrade request for its own errors...
    let token = server.token.clone();
    let headers = [("x-request-id", "ws-trace-9")];
    let mut ws =
        WsClient::try_connect(&server, "/ws/chat?session_id=w", &[], Some(&token), &headers)
            .await
            .unwrap();
    assert_eq!(ws.request_id.as_deref(), Some("ws-trace-9"));
    ws.next_of("session_start").await;
    ws.send_text("not json").await;
    let error = ws.next_of("error").await;
    assert_eq!(error["code"], "INVALID_JSON");
    assert_eq!(error["request_id"], "ws-trace-9");
    // ...and the `error` of its turn says the same plain thing as REST.
    ws.send(json!({"type": "message", "content": "hi"})).await;
    let error = ws.next_of("error").await;
    assert_eq!(error["code"], "PROVIDER_ERROR");
    assert_eq!(error["message"], "the model provider is unavailable");
    assert!(!error.to_string().contains("127.0.0.1"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_ties_a_failure_to_its_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let process = crate::durability::spawn_parley_with(
        dir.path(),
        &provider,
        1,
        &[("PARLEY_PROVIDER_URL", "http://127.0.0.1:9/v1"), ("PARLEY_PROVIDER__MAX_RETRIES", "0")],
    );
    let response = client()
        .post(format!("{}/api/chat", process.base))
        .header("x-request-id", "report-7781")
        .json(&json!({"content": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let mut found = String::new();
    for _ in 0..500 {
        let log = process.log.lock().unwrap().clone();
        if let Some(line) = log.lines().find(|l| l.contains("report-7781")) {
            found = line.to_owned();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(found.contains("WARN") && found.contains("cannot connect"), "log line: {found:?}");
}

#[tokio::test]
async fn only_a_code_minted_as_an_admin_code_pairs_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let command = crate::common::parley_command(dir.path());
    let run = |args: &[&str]| {
        let output = command(args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    // Minted while nobody can use the server: the owner's codes (one per start, say).
    let owner_code = run(&["pair"]);
    let second_owner_code = run(&["pair"]);
    run(&["token", "create", "--user", "someone"]);
    let plain_code = run(&["pair"]);
    let mut config = test_config(dir.path(), None);
    config.data_dir = dir.path().join("data");
    let server = TestServer::start(config).await;
    let url = server.url("/api/pair");
    let pair = |code: String| {
        let request = client().post(&url).json(&json!({"code": code}));
        async move { json_of(request.send().await.unwrap()).await }
    };
    let (status, body) = pair(plain_code).await;
    assert_eq!((status.as_u16(), &body["admin"]), (201, &json!(false)), "{body}");
    // With every token revoked, a code minted as a plain one still pairs a plain user...
    for token in server.store.list_tokens().await.unwrap() {
        if token.revoked_at.is_none() {
            server.store.revoke_token(&token.id).await.unwrap();
        }
    }
    let late =
        parley::auth::new_pairing_code(server.store.as_ref(), &Default::default()).await.unwrap();
    let (status, body) = pair(late).await;
    assert_eq!((status.as_u16(), &body["admin"]), (201, &json!(false)), "{body}");
    // ...and only the owner's code makes an admin.
    let (status, body) = pair(owner_code).await;
    assert_eq!((status.as_u16(), &body["admin"]), (201, &json!(true)), "{body}");
    // Once the owner has paired, the other owner codes are spent: no second owner.
    let (status, body) = pair(second_owner_code).await;
    assert_eq!(status, 401, "{body}");
}
