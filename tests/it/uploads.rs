//! Files uploaded into a workspace: stored where the tools find them, confined as the tools
//! are, limited in size, and private to their user.

use serde_json::{Value, json};

use crate::common::{FakeProvider, Script, TestServer, client_with, json_of, test_config};

#[tokio::test]
async fn an_uploaded_file_is_in_the_workspace_for_the_tools_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.limits.max_upload_bytes = 1024;
    let server = TestServer::start(config).await;
    let put = async |client: &reqwest::Client, path: &str, body: Vec<u8>| {
        let url = server.url(&format!("/api/workspace/file/{path}"));
        let response = client
            .put(url)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        json_of(response).await
    };

    let (status, stored) = put(&server.client, "uploads/notes.txt", b"hello upload".to_vec()).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored, json!({"path": "uploads/notes.txt", "size": 12}));
    let on_disk = dir.path().join("workspace/default/uploads/notes.txt");
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), "hello upload");
    let response =
        server.client.get(server.url("/api/workspace/file/uploads/notes.txt")).send().await;
    assert_eq!(response.unwrap().text().await.unwrap(), "hello upload");
    let (_, tree) = server.get("/api/workspace/tree").await;
    let paths: Vec<&str> =
        tree["items"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"uploads/notes.txt"), "{tree}");

    // Out of the workspace (a `/` encoded, as URL normalization would take a plain `../`
    // away before it is sent), too large, onto a folder: refused, and nothing is written.
    let (status, error) = put(&server.client, "..%2Fescape.txt", b"x".to_vec()).await;
    assert_eq!((status.as_u16(), error["code"].as_str()), (403, Some("FORBIDDEN")), "{error}");
    assert!(!dir.path().join("workspace/escape.txt").exists());
    let (status, error) = put(&server.client, "uploads/big.bin", vec![7; 2048]).await;
    assert_eq!((status.as_u16(), error["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")));
    assert!(!dir.path().join("workspace/default/uploads/big.bin").exists());
    let (status, error) = put(&server.client, "uploads", b"x".to_vec()).await;
    assert_eq!((status.as_u16(), error["code"].as_str()), (400, Some("IS_A_DIRECTORY")));
    // Another user's workspace is another folder.
    let bob = client_with(&server.token_for("bob", false).await);
    let response = bob.get(server.url("/api/workspace/file/uploads/notes.txt")).send().await;
    assert_eq!(response.unwrap().status(), 404);

    // Named in a message, the file is there for the agent's tools.
    provider.push([
        Script::tool_call("r1", "read_file", json!({"path": "uploads/notes.txt"}), 2),
        Script::text(&["It says hello."]),
    ]);
    let (status, body) = server.chat("s", "summarise [file: uploads/notes.txt]").await;
    assert_eq!(status, 200, "{body}");
    let calls: &Vec<Value> = body["tool_calls"].as_array().unwrap();
    assert_eq!(calls[0]["output"], "hello upload");
}
