//! Editing an earlier message and regenerating an answer: the conversation branches, the
//! old branch is kept and readable, and the model sees the branch it answers on only.

use serde_json::{Value, json};

use crate::common::live::WsClient;
use crate::common::{FakeProvider, TestServer, transcript};

/// The `seq` of the user message saying `content` on the branch `detail` shows.
fn user_seq(detail: &Value, content: &str) -> i64 {
    let messages = detail["messages"].as_array().unwrap();
    let message = messages.iter().find(|m| m["role"] == "user" && m["content"] == content);
    message.unwrap_or_else(|| panic!("no user message {content:?}"))["seq"].as_i64().unwrap()
}

fn user_message<'a>(detail: &'a Value, content: &str) -> &'a Value {
    let seq = user_seq(detail, content);
    detail["messages"].as_array().unwrap().iter().find(|m| m["seq"] == seq).unwrap()
}

/// What the model was last asked: the roles and texts of its conversation, system aside.
fn last_request(provider: &FakeProvider) -> Vec<(String, String)> {
    let requests = provider.requests();
    let messages = requests.last().unwrap()["messages"].as_array().unwrap().clone();
    messages
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| (m["role"].as_str().unwrap().into(), m["content"].as_str().unwrap().into()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(role, text)| ((*role).into(), (*text).into())).collect()
}

#[tokio::test]
async fn an_edit_branches_the_conversation_and_the_old_branch_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    assert_eq!(server.chat("s", "one").await.0, 200);
    assert_eq!(server.chat("s", "two").await.0, 200);
    let (_, before) = server.get("/api/sessions/s").await;
    let one = user_seq(&before, "one");
    let two = user_seq(&before, "two");
    // A user message names the turn it follows by its user message's seq.
    assert_eq!(user_message(&before, "one")["parent"], 0);
    assert_eq!(user_message(&before, "two")["parent"], one);
    assert!(user_message(&before, "two").get("siblings").is_none());

    // Editing "two" is a new turn following what "two" followed.
    let edit = json!({"content": "two, edited", "parent": one});
    let (status, body) = server.post("/api/sessions/s/messages", edit).await;
    assert_eq!(status, 202, "{body}");
    let after = server.wait_idle("s").await;
    assert_eq!(
        last_request(&provider),
        pairs(&[("user", "one"), ("assistant", "echo: one"), ("user", "two, edited")])
    );
    assert_eq!(
        transcript(&after),
        pairs(&[
            ("user", "one"),
            ("assistant", "echo: one"),
            ("user", "two, edited"),
            ("assistant", "echo: two, edited"),
        ])
    );
    let edited = user_seq(&after, "two, edited");
    assert_eq!(user_message(&after, "two, edited")["siblings"], json!([two, edited]));
    assert_eq!(after["message_count"], 6, "nothing is dropped: {after}");

    // The old branch is still there, read through any of its messages.
    let (status, old) = server.get(&format!("/api/sessions/s?branch={two}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        transcript(&old),
        pairs(&[
            ("user", "one"),
            ("assistant", "echo: one"),
            ("user", "two"),
            ("assistant", "echo: two")
        ])
    );
    assert_eq!(user_message(&old, "two")["siblings"], json!([two, edited]));

    // Going on from the old branch continues it, and makes it the current one.
    let more = json!({"content": "three", "parent": two});
    assert_eq!(server.post("/api/sessions/s/messages", more).await.0, 202);
    let current = server.wait_idle("s").await;
    assert_eq!(
        last_request(&provider),
        pairs(&[
            ("user", "one"),
            ("assistant", "echo: one"),
            ("user", "two"),
            ("assistant", "echo: two"),
            ("user", "three"),
        ])
    );
    assert_eq!(transcript(&current).len(), 6);
    assert_eq!(user_message(&current, "three")["parent"], two);
    // A branch read through its first message goes down to its newest turn.
    let (_, through_one) = server.get(&format!("/api/sessions/s?branch={one}")).await;
    assert_eq!(transcript(&through_one), transcript(&current));
}

#[tokio::test]
async fn regenerating_an_answer_asks_again_beside_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    assert_eq!(server.chat("s", "hello").await.0, 200);
    let (_, before) = server.get("/api/sessions/s").await;
    let first = user_seq(&before, "hello");

    // Over the WebSocket: the same message again, following what it followed (nothing).
    let mut socket = WsClient::connect(&server, "/ws/chat?session_id=s").await;
    assert_eq!(socket.next().await["type"], "session_start");
    socket.send(json!({"type": "message", "content": "hello", "parent": 0})).await;
    let echoed = socket.next_of("user_message").await;
    assert_eq!(echoed["parent"], 0, "{echoed}");
    socket.next_of("done").await;
    assert_eq!(last_request(&provider), pairs(&[("user", "hello")]));

    let after = server.wait_idle("s").await;
    assert_eq!(transcript(&after), pairs(&[("user", "hello"), ("assistant", "echo: hello")]));
    let second = user_seq(&after, "hello");
    assert_ne!(first, second);
    assert_eq!(user_message(&after, "hello")["siblings"], json!([first, second]));
    // A message that follows the newest turn says nothing of a parent on the wire.
    socket.send(json!({"type": "message", "content": "next"})).await;
    let echoed = socket.next_of("user_message").await;
    assert!(echoed.get("parent").is_none(), "{echoed}");
    socket.next_of("done").await;
}

#[tokio::test]
async fn a_parent_or_branch_the_session_does_not_have_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    assert_eq!(server.chat("s", "one").await.0, 200);
    let (_, s) = server.get("/api/sessions/s").await;
    let requests = provider.requests().len();

    for parent in [json!(99), json!(-1)] {
        let body = json!({"content": "edit", "parent": parent});
        let (status, error) = server.post("/api/sessions/s/messages", body).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["code"], "UNKNOWN_MESSAGE");
        assert!(error["error"].as_str().unwrap().contains("no message numbered"), "{error}");
    }
    // A parent for a session that does not exist yet names nothing, and creates nothing.
    let body = json!({"content": "edit", "parent": 3});
    let (status, error) = server.post("/api/sessions/fresh/messages", body).await;
    assert_eq!((status.as_u16(), error["code"].as_str()), (400, Some("UNKNOWN_MESSAGE")));
    assert_eq!(server.get("/api/sessions/fresh").await.0, 404);
    let (status, error) = server.get("/api/sessions/s?branch=99").await;
    assert_eq!((status.as_u16(), error["code"].as_str()), (400, Some("UNKNOWN_MESSAGE")));

    let mut socket = WsClient::connect(&server, "/ws/chat?session_id=s").await;
    assert_eq!(socket.next().await["type"], "session_start");
    socket.send(json!({"type": "message", "content": "edit", "parent": 42})).await;
    let error = socket.next_of("error").await;
    assert_eq!(error["code"], "UNKNOWN_MESSAGE");

    let (_, after) = server.get("/api/sessions/s").await;
    assert_eq!(after["message_count"], s["message_count"]);
    assert_eq!(after["last_seq"], s["last_seq"], "no seq was spent on a refusal");
    assert_eq!(provider.requests().len(), requests);
}

#[tokio::test]
async fn every_branch_exports_as_json_and_one_branch_leaves_the_others_out() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    assert_eq!(server.chat("s", "one").await.0, 200);
    assert_eq!(server.chat("s", "two").await.0, 200);
    let (_, before) = server.get("/api/sessions/s").await;
    let one = user_seq(&before, "one");
    let edit = json!({"content": "two, edited", "parent": one});
    assert_eq!(server.post("/api/sessions/s/messages", edit).await.0, 202);
    server.wait_idle("s").await;

    let contents = |export: &Value| -> Vec<String> {
        let messages = export["messages"].as_array().unwrap();
        messages.iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect()
    };
    let (status, all) = server.get("/api/sessions/s/export?format=json&branches=all").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["branches"], "all");
    assert_eq!(
        contents(&all),
        ["one", "echo: one", "two", "echo: two", "two, edited", "echo: two, edited"]
    );
    // Both versions of the second message say which turn they follow: the tree rebuilds.
    let parents: Vec<&Value> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| &m["parent"])
        .collect();
    assert_eq!(parents, [&json!(0), &json!(one), &json!(one)]);
    let (_, current) = server.get("/api/sessions/s/export?format=json").await;
    assert_eq!(current["branches"], "one");
    assert_eq!(contents(&current), ["one", "echo: one", "two, edited", "echo: two, edited"]);

    for bad in [
        "format=markdown&branches=all",
        "format=json&branches=some",
        "format=json&branches=all&branch=1",
    ] {
        let (status, body) = server.get(&format!("/api/sessions/s/export?{bad}")).await;
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (400, Some("INVALID_QUERY")),
            "{bad}: {body}"
        );
    }
}
