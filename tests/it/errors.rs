//! Every refusal is a JSON `{error, code}` with the right status, and changes nothing; a
//! configuration with a name that is not a setting refuses to start (file) or is warned
//! about (environment).

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::{FakeProvider, TestServer, json_of, test_config};

#[tokio::test]
async fn every_error_response_has_a_json_body_with_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.limits.max_body_bytes = 256 * 1024;
    let server = TestServer::start(config).await;
    let (status, _) = server.chat("keep", "precious").await;
    assert_eq!(status, 200);

    let big_content = "x".repeat(64 * 1024 + 1);
    let huge_body = "y".repeat(300 * 1024);
    // (method, path, content type, body, expected status, expected code)
    type Case<'a> = (Method, &'a str, Option<&'a str>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/api/chat",
            Some("application/json"),
            "{\"content\":".into(),
            400,
            "INVALID_JSON",
        ),
        (
            Method::POST,
            "/api/chat",
            Some("text/plain"),
            "{\"content\":\"hi\"}".into(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            Method::POST,
            "/api/chat",
            None,
            "{\"content\":\"hi\"}".into(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            Method::POST,
            "/api/chat",
            Some("application/json"),
            "{\"content\":42}".into(),
            422,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/api/chat",
            Some("application/json"),
            "{\"content\":\"   \"}".into(),
            422,
            "EMPTY_CONTENT",
        ),
        (
            Method::POST,
            "/api/chat",
            Some("application/json"),
            json!({"content": big_content}).to_string(),
            413,
            "MESSAGE_TOO_LARGE",
        ),
        (
            Method::POST,
            "/api/chat",
            Some("application/json"),
            json!({"content": huge_body}).to_string(),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            Method::POST,
            "/api/chat",
            Some("application/json"),
            json!({"content": "hi", "session_id": "../etc"}).to_string(),
            400,
            "INVALID_SESSION_ID",
        ),
        (
            Method::POST,
            "/api/chat",
            Some("application/json"),
            json!({"content": "hi", "session_id": "a b"}).to_string(),
            400,
            "INVALID_SESSION_ID",
        ),
        (Method::GET, "/api/sessions/nope", None, String::new(), 404, "NOT_FOUND"),
        (
            Method::GET,
            "/api/sessions/..%2F..%2Fetc",
            None,
            String::new(),
            400,
            "INVALID_SESSION_ID",
        ),
        (Method::GET, "/api/sessions/%252e%252e", None, String::new(), 400, "INVALID_SESSION_ID"),
        (Method::DELETE, "/api/sessions/nope", None, String::new(), 404, "NOT_FOUND"),
        (
            Method::PATCH,
            "/api/sessions/keep",
            Some("application/json"),
            "{\"name\":\"\"}".into(),
            422,
            "INVALID_NAME",
        ),
        (
            Method::PATCH,
            "/api/sessions/keep",
            Some("application/json"),
            "{}".into(),
            422,
            "INVALID_REQUEST",
        ),
        (Method::GET, "/api/sessions?limit=0", None, String::new(), 400, "INVALID_QUERY"),
        (Method::GET, "/api/sessions?limit=501", None, String::new(), 400, "INVALID_QUERY"),
        (Method::GET, "/api/sessions?page=abc", None, String::new(), 400, "INVALID_QUERY"),
        (Method::GET, "/api/sessions/keep?before_seq=x", None, String::new(), 400, "INVALID_QUERY"),
        (Method::POST, "/api/sessions/nope/abort", None, String::new(), 404, "NOT_FOUND"),
        (Method::GET, "/api/sessions/nope/tool-calls", None, String::new(), 404, "NOT_FOUND"),
        (
            Method::POST,
            "/api/sessions/nope/notify",
            Some("application/json"),
            "{\"event\":{}}".into(),
            404,
            "NOT_FOUND",
        ),
        (
            Method::POST,
            "/api/sessions/keep/messages",
            Some("application/json"),
            "\"text\"".into(),
            422,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            "/api/sessions/prune",
            Some("application/json"),
            "{oops".into(),
            400,
            "INVALID_JSON",
        ),
        (Method::POST, "/api/agents/nope/kill", None, String::new(), 404, "NOT_FOUND"),
        (Method::GET, "/api/nothing-here", None, String::new(), 404, "NOT_FOUND"),
        (Method::DELETE, "/api/chat", None, String::new(), 405, "METHOD_NOT_ALLOWED"),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let mut request = server.client.request(method.clone(), server.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (got, json) = json_of(request.send().await.unwrap()).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {json}");
        assert_eq!(json["code"], code, "{method} {path}: {json}");
        assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {path}: {json}");
    }

    // Nothing changed: one session, its two messages.
    let (_, list) = server.get("/api/sessions").await;
    assert_eq!(list["total"], 1);
    let (_, detail) = server.get("/api/sessions/keep").await;
    assert_eq!(detail["message_count"], 2);
    assert_eq!(detail["messages"][0]["content"], "precious");
}

#[test]
fn a_typo_in_the_configuration_file_stops_the_server_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[limits]\nturns_per_minit = 5\n").unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("--config")
        .arg(&file)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .current_dir(dir.path())
        .env_remove("PARLEY_CONFIG")
        .env("PARLEY_AUTH_MODE", "none")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A server that started anyway would never exit: poll with an overall limit.
    let mut exited = false;
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !exited {
        child.kill().unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(exited, "parley started with a typo in its configuration: {stderr}");
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("`limits.turns_per_minit`"), "{stderr}");
    assert!(stderr.contains("did you mean `limits.turns_per_minute`?"), "{stderr}");
    assert!(!data.exists(), "nothing was set up before the refusal");
}

#[test]
fn an_unknown_parley_variable_is_warned_about_on_stderr_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("config")
        .current_dir(dir.path())
        .env_remove("PARLEY_CONFIG")
        .env("PARLEY_LIMITS__TURNS_PER_MINIT", "5")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("PARLEY_LIMITS__TURNS_PER_MINIT"), "{stderr}");
    assert!(stderr.contains("did you mean `limits.turns_per_minute`?"), "{stderr}");
    assert!(stdout.contains("turns_per_minute = 60"), "the default still applies: {stdout}");
    assert!(!stdout.contains("unknown setting"), "stdout is the configuration only: {stdout}");
}
