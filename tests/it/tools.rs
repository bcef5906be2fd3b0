//! Tool round trips: the model calls a tool, the result goes back, the history keeps both.

use serde_json::{Value, json};

use crate::common::{FakeProvider, Script, TestServer};

fn messages_of(request: &Value) -> Vec<Value> {
    request["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn shell_and_read_file_round_trip_and_history_goes_back_to_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([
        Script::tool_call(
            "call_1",
            "shell",
            json!({"command": "echo hello > note.txt && echo written"}),
            4,
        ),
        Script::tool_call("call_2", "read_file", json!({"path": "note.txt"}), 3),
        Script::text(&["The file says hello."]),
    ]);
    let server = TestServer::with_provider(dir.path(), &provider).await;

    let (status, body) = server.chat("t1", "write and read a note").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "The file says hello.");
    let calls = body["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["name"], "shell");
    assert_eq!(calls[0]["args"]["command"], "echo hello > note.txt && echo written");
    assert_eq!(calls[0]["output"], "written\n");
    assert_eq!(calls[1]["output"], "hello\n");
    assert_eq!(calls[1]["is_error"], false);
    let on_disk = std::fs::read_to_string(dir.path().join("workspace/default/note.txt")).unwrap();
    assert_eq!(on_disk, "hello\n");

    // The second model call saw the first call and its result.
    let second = messages_of(&provider.requests()[1]);
    let assistant = &second[second.len() - 2];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["tool_calls"][0]["id"], "call_1");
    assert_eq!(assistant["tool_calls"][0]["function"]["name"], "shell");
    assert_eq!(second.last().unwrap()["role"], "tool");
    assert_eq!(second.last().unwrap()["tool_call_id"], "call_1");
    assert_eq!(second.last().unwrap()["content"], "written\n");

    // The next turn's history includes every earlier call and result, in order.
    let (status, _) = server.chat("t1", "thanks").await;
    assert_eq!(status, 200);
    let next = messages_of(provider.requests().last().unwrap());
    let shape: Vec<String> = next
        .iter()
        .map(|m| match m["tool_call_id"].as_str() {
            Some(id) => format!("tool:{id}"),
            None if m["tool_calls"].is_array() => {
                format!("assistant+{}", m["tool_calls"][0]["id"].as_str().unwrap())
            }
            None => m["role"].as_str().unwrap().to_owned(),
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            "system",
            "user",
            "assistant+call_1",
            "tool:call_1",
            "assistant+call_2",
            "tool:call_2",
            "assistant",
            "user"
        ]
    );

    // The persisted timeline.
    let (_, timeline) = server.get("/api/sessions/t1/tool-calls").await;
    let items = timeline["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], "call_1");
    assert_eq!(items[0]["status"], "done");
    assert!(items[0]["duration_ms"].is_u64());
}

#[tokio::test]
async fn workspace_escapes_are_refused_with_an_error_the_model_sees() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("secret.txt");
    std::fs::write(&outside, "top secret").unwrap();
    let workspace = dir.path().join("workspace/default");
    std::fs::create_dir_all(&workspace).unwrap();
    std::os::unix::fs::symlink(dir.path(), workspace.join("up")).unwrap();

    let provider = FakeProvider::start().await;
    provider.push([
        Script::tool_call("a", "read_file", json!({"path": "../../secret.txt"}), 2),
        Script::tool_call("b", "read_file", json!({"path": "up/secret.txt"}), 1),
        Script::tool_call(
            "c",
            "write_file",
            json!({"path": "/tmp/parley-escape.txt", "content": "x"}),
            1,
        ),
        Script::tool_call("d", "list_dir", json!({"path": ".."}), 1),
        Script::text(&["refused"]),
    ]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, body) = server.chat("esc", "try to escape").await;
    assert_eq!(status, 200, "{body}");
    for call in body["tool_calls"].as_array().unwrap() {
        assert_eq!(call["is_error"], true, "{call}");
        let output = call["output"].as_str().unwrap();
        assert!(output.contains("outside the workspace"), "{output}");
        assert!(!output.contains("top secret"));
    }
    assert!(!std::path::Path::new("/tmp/parley-escape.txt").exists());
    // The refusal went back to the model as the tool result.
    let last = provider.requests().last().unwrap().clone();
    let tool_msg = messages_of(&last).into_iter().rev().find(|m| m["role"] == "tool").unwrap();
    assert!(tool_msg["content"].as_str().unwrap().contains("outside the workspace"));
}

#[tokio::test]
async fn a_failing_tool_does_not_end_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.push([
        Script::tool_call("x", "shell", json!({"command": "echo oops >&2; exit 3"}), 1),
        Script::tool_call("y", "no_such_tool", json!({}), 1),
        Script::Stream(vec![crate::common::Step::Chunk(json!({"choices": [{"delta": {"tool_calls": [
            {"index": 0, "id": "z", "function": {"name": "read_file", "arguments": "{not json"}}]}}]})),
            crate::common::Step::Chunk(json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]})),
            crate::common::Step::Raw("data: [DONE]\n\n")]),
        Script::text(&["recovered"]),
    ]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, body) = server.chat("f", "go").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "recovered");
    let calls = body["tool_calls"].as_array().unwrap();
    assert!(calls[0]["output"].as_str().unwrap().contains("exit code 3"));
    assert!(calls[0]["output"].as_str().unwrap().contains("oops"));
    assert!(calls[1]["output"].as_str().unwrap().contains("unknown tool"));
    assert!(calls[2]["output"].as_str().unwrap().contains("invalid arguments"));
    assert!(calls.iter().all(|c| c["is_error"] == true));
}

#[tokio::test]
async fn a_dangling_symlink_in_the_workspace_does_not_lead_writes_outside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace/default");
    std::fs::create_dir_all(&workspace).unwrap();
    // Planted earlier, say by a shell command or an unpacked archive.
    std::os::unix::fs::symlink(outside.path().join("file"), workspace.join("innocent.txt"))
        .unwrap();
    std::os::unix::fs::symlink(outside.path().join("missing_dir"), workspace.join("dir")).unwrap();
    std::fs::write(outside.path().join("secret.txt"), "outside secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), workspace.join("leak.txt"))
        .unwrap();

    let provider = FakeProvider::start().await;
    provider.push([
        Script::tool_call("w1", "write_file", json!({"path": "innocent.txt", "content": "x"}), 2),
        Script::tool_call("w2", "write_file", json!({"path": "dir/x", "content": "x"}), 1),
        Script::text(&["refused"]),
    ]);
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, body) = server.chat("dangling", "write the files").await;
    assert_eq!(status, 200, "{body}");
    let calls = body["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{body}");
    for call in calls {
        assert_eq!(call["is_error"], true, "{call}");
        assert!(call["output"].as_str().unwrap().contains("access denied"), "{call}");
    }
    assert!(!outside.path().join("file").exists(), "write_file followed the link out");
    assert!(!outside.path().join("missing_dir").exists(), "write_file made a folder outside");
    // The refusal went back to the model as the tool result.
    let last = provider.requests().last().unwrap().clone();
    let tool_msg = messages_of(&last).into_iter().rev().find(|m| m["role"] == "tool").unwrap();
    assert!(tool_msg["content"].as_str().unwrap().contains("access denied"), "{tool_msg}");

    for path in ["innocent.txt", "leak.txt", "dir/x"] {
        let response =
            server.client.get(server.url(&format!("/api/workspace/file/{path}"))).send().await;
        let response = response.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!(status == 403 || status == 404, "{path}: {status} {text}");
        assert!(!text.contains("outside secret"), "{path} leaked: {text}");
    }
}
