//! Keeping sessions in order: exporting one as Markdown or JSON.

use serde_json::{Value, json};

use crate::common::{FakeProvider, Script, TestServer, client_with};

#[tokio::test]
async fn a_session_exports_as_markdown_and_as_json_with_its_tool_calls() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    provider.push([
        Script::tool_call("c1", "list_dir", json!({"path": "."}), 2),
        Script::text(&["Here:\n\n```sh\nls\n```\n"]),
    ]);
    assert_eq!(server.chat("s", "what is there?").await.0, 200);
    let patch = json!({"name": "Workspace tour"});
    server.client.patch(server.url("/api/sessions/s")).json(&patch).send().await.unwrap();

    let response = server.client.get(server.url("/api/sessions/s/export")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "text/markdown; charset=utf-8");
    assert_eq!(header("content-disposition"), "attachment; filename=\"s.md\"");
    let markdown = response.text().await.unwrap();
    assert!(markdown.starts_with("# Workspace tour\n"), "{markdown}");
    for part in [
        "## You\n\nwhat is there?\n",
        "## Assistant\n\nLet me check. \n",
        "**Tool call** `list_dir`\n\n```json\n{\"path\":\".\"}\n```\n",
        "**Tool** `list_dir` returned:\n\n```",
        "## Assistant\n\nHere:\n\n```sh\nls\n```\n",
    ] {
        assert!(markdown.contains(part), "{part:?} is missing from:\n{markdown}");
    }

    let url = server.url("/api/sessions/s/export?format=json");
    let response = server.client.get(url).send().await.unwrap();
    assert_eq!(response.headers()["content-disposition"], "attachment; filename=\"s.json\"");
    let exported: Value = response.json().await.unwrap();
    assert_eq!(exported["session"]["name"], "Workspace tour");
    let messages = exported["messages"].as_array().unwrap();
    assert_eq!(messages.len() as i64, exported["session"]["message_count"].as_i64().unwrap());
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(exported["tool_calls"][0]["name"], "list_dir");

    let (status, error) = server.get("/api/sessions/s/export?format=pdf").await;
    assert_eq!((status.as_u16(), error["code"].as_str()), (400, Some("INVALID_QUERY")));
    // Another user's session is not there for them.
    let bob = client_with(&server.token_for("bob", false).await);
    let response = bob.get(server.url("/api/sessions/s/export")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn an_export_follows_the_branch_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    assert_eq!(server.chat("s", "first").await.0, 200);
    let (_, detail) = server.get("/api/sessions/s").await;
    let first = detail["messages"][0]["seq"].as_i64().unwrap();
    let edit = json!({"content": "first, edited", "parent": 0});
    assert_eq!(server.post("/api/sessions/s/messages", edit).await.0, 202);
    server.wait_idle("s").await;

    let export = async |query: &str| {
        let url = server.url(&format!("/api/sessions/s/export{query}"));
        server.client.get(url).send().await.unwrap().text().await.unwrap()
    };
    let current = export("").await;
    assert!(current.contains("## You\n\nfirst, edited\n"), "{current}");
    assert!(!current.contains("## You\n\nfirst\n"), "{current}");
    let old = export(&format!("?branch={first}")).await;
    assert!(old.contains("## You\n\nfirst\n") && old.contains("echo: first\n"), "{old}");
    assert!(!old.contains("edited"), "{old}");
}
