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
    provider.push([
        Script::tool_call("c1", "list_dir", json!({"path": "."}), 1),
        Script::text(&["echo: first"]),
    ]);
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
    assert!(old.contains("**Tool call** `list_dir`"), "{old}");
    assert!(!old.contains("edited"), "{old}");
    // The JSON carries the tool calls of the branch exported only.
    let calls = async |query: &str| {
        let json: Value = serde_json::from_str(&export(query).await).unwrap();
        json["tool_calls"].as_array().unwrap().len()
    };
    assert_eq!(calls("?format=json").await, 0);
    assert_eq!(calls(&format!("?format=json&branch={first}")).await, 1);
}

#[tokio::test]
async fn sessions_pin_archive_and_are_found_by_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    for (id, said) in [("old", "kubernetes deployment"), ("mid", "a cake recipe"), ("new", "hello")]
    {
        assert_eq!(server.chat(id, said).await.0, 200);
    }
    let patch = async |id: &str, body: Value| {
        let url = server.url(&format!("/api/sessions/{id}"));
        let response = server.client.patch(url).json(&body).send().await.unwrap();
        crate::common::json_of(response).await
    };
    let listed = async |query: &str| {
        let (_, page) = server.get(&format!("/api/sessions{query}")).await;
        let ids = page["items"].as_array().unwrap().iter();
        ids.map(|s| s["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let (status, pinned) = patch("old", json!({"pinned": true})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (pinned["pinned"].as_bool(), pinned["archived"].as_bool()),
        (Some(true), Some(false))
    );
    let (_, archived) = patch("mid", json!({"archived": true, "name": "Cakes"})).await;
    assert_eq!(
        (archived["archived"].as_bool(), archived["name"].as_str()),
        (Some(true), Some("Cakes"))
    );
    assert_eq!(listed("").await, ["old", "new"]);
    assert_eq!(listed("?archived=true").await, ["mid"]);
    let (status, error) = patch("old", json!({})).await;
    assert_eq!((status.as_u16(), error["code"].as_str()), (422, Some("INVALID_REQUEST")));
    assert_eq!(patch("nope", json!({"pinned": true})).await.0, 404);

    // Search: every word as a beginning, the caller's own sessions, archived ones included.
    let (status, found) = server.get("/api/search?q=deploy").await;
    assert_eq!(status, 200);
    assert_eq!(found["total"], 2, "{found}");
    let first = &found["items"][0];
    assert_eq!(
        (first["session_id"].as_str(), first["role"].as_str()),
        (Some("old"), Some("assistant"))
    );
    assert!(first["snippet"].as_str().unwrap().contains("deployment"), "{found}");
    let seq = found["items"][1]["seq"].as_i64().unwrap();
    // A match opens where it was said.
    let (status, at) = server.get(&format!("/api/sessions/old?branch={seq}")).await;
    assert_eq!(status, 200);
    assert_eq!(at["messages"][0]["content"], "kubernetes deployment");
    let (_, cakes) = server.get("/api/search?q=cake%20recipe").await;
    assert_eq!(cakes["items"][0]["session_name"], "Cakes");
    let (_, paged) = server.get("/api/search?q=deploy&page=2&limit=1").await;
    assert_eq!((paged["items"].as_array().unwrap().len(), paged["total"].as_u64()), (1, Some(2)));
    let (status, error) = server.get("/api/search?q=x&limit=0").await;
    assert_eq!((status.as_u16(), error["code"].as_str()), (400, Some("INVALID_QUERY")));
    let bob = client_with(&server.token_for("bob", false).await);
    let theirs: Value =
        bob.get(server.url("/api/search?q=deploy")).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs["total"], 0);
}
