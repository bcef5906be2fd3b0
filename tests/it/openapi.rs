//! `GET /api/openapi.json`: it documents every route the server has (read off the router's
//! source, so a new route without its annotation fails here), and schemathesis, fuzzing a
//! running server against it for a bounded time, finds no 5xx, no status the document does
//! not name, and no body that does not match its schema (errors included: each is the JSON
//! error body with its `code`). `scripts/test` installs schemathesis, pinned with hashes,
//! into `tests/clients/schemathesis/.venv`; it is required like the other clients.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::clients::present;
use crate::common::{FakeProvider, TestServer, client, json_of, test_config};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The paths routed in `file`, as OpenAPI writes them (`{*path}` is `{path}`).
fn routed(file: &str) -> Vec<String> {
    let source = std::fs::read_to_string(root().join(file)).unwrap();
    source
        .split(".route(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|path| path.replace("{*", "{"))
        .collect()
}

#[tokio::test]
async fn the_document_describes_every_route_and_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), None)).await;
    // Public, as a client generator fetches it.
    let response = client().get(server.url("/api/openapi.json")).send().await.unwrap();
    let (status, doc) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let mut routes = routed("src/http/mod.rs");
    routes.extend(routed("src/openai/mod.rs"));
    // The web chat's pages and assets are not the API.
    let web = ["/", "/s/{id}", "/assets/{path}"];
    for route in routes.iter().filter(|r| !web.contains(&r.as_str())) {
        assert!(paths.contains_key(route), "{route} is routed but not documented");
    }
    assert!(routes.len() > 35, "{routes:?}");
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let error = &operation["responses"]["default"]["content"]["application/json"];
            let schema = error["schema"]["$ref"].as_str().unwrap_or_default();
            assert!(schema.ends_with("ErrorBody"), "{method} {path}: no error body: {operation}");
            // OpenAPI requires it, and client generators refuse a document without.
            for (status, response) in operation["responses"].as_object().unwrap() {
                let description = response["description"].as_str().unwrap_or_default();
                assert!(!description.is_empty(), "{method} {path} {status}: no description");
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["ErrorBody"]["required"], serde_json::json!(["error", "code"]));
    let chat = &schemas["ChatRequest"]["properties"];
    assert!(chat["content"].is_object() && chat["model"].is_object(), "{chat}");
    // Public routes say so; the rest need the bearer token.
    assert_eq!(paths["/health"]["get"]["security"], serde_json::json!([{}]));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_schema() {
    let st = root().join("tests/clients/schemathesis/.venv/bin/st");
    let install = "`./scripts/test` installs it (or: `python3 -m venv \
                   tests/clients/schemathesis/.venv` and `tests/clients/schemathesis/.venv/bin/pip \
                   install --require-hashes -r tests/clients/schemathesis/requirements.txt`)";
    if !present("schemathesis_finds_no_server_error_and_no_answer_off_the_schema", &st, install) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::start(test_config(dir.path(), Some(&provider))).await;
    let report = dir.path().join("schemathesis");
    let child = tokio::process::Command::new(&st)
        .args(["run", &server.url("/api/openapi.json")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        .args(["--header", &format!("Authorization: Bearer {}", server.token)])
        // Streams that never end by themselves (a live feed) are not for a fuzzer.
        .args(["--exclude-path", "/api/events", "--exclude-path", "/api/sessions/{id}/events"])
        .args(["--max-examples", "8", "--request-timeout", "15", "--seed", "1"])
        .args(["--no-shrink", "--suppress-health-check", "all"])
        .arg("--report-dir")
        .arg(&report)
        .env("NO_COLOR", "1")
        // Its caches (`.schemathesis`, `.hypothesis`) go there, not into the checkout.
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("schemathesis starts");
    let output = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .expect("schemathesis finishes within ten minutes")
        .expect("its output is readable");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "schemathesis found failures:\n{stdout}\n{stderr}");
    let (_, detail) = json_of(server.client.get(server.url("/health")).send().await.unwrap()).await;
    assert_eq!(detail["status"], Value::from("ok"), "the server is still up");
}
