//! Session leases seen from outside: a node that loses a session's lease (another holder
//! took it) stops its turn without another write, lets its watchers go, and the session
//! carries on under the lease's next holder.

use std::time::Duration;

use serde_json::json;

use crate::common::live::WsClient;
use crate::common::{FakeProvider, Script, TestServer, test_config};

#[tokio::test]
async fn a_node_that_lost_a_lease_writes_nothing_more_and_lets_the_session_go() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    // An answer of about a second: without fencing, the node would finish and store it.
    let parts: Vec<&str> = std::iter::repeat_n("chunk ", 100).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(10))]);
    let mut config = test_config(dir.path(), Some(&provider));
    // Renewed (and found lost) every 100 ms.
    config.lease_secs = 0.3;
    let server = TestServer::start(config).await;
    let mut tab = WsClient::connect(&server, "/ws/chat?session_id=s").await;
    tab.next_of("session_start").await;
    tab.send(json!({"type": "message", "content": "a long answer please"})).await;
    let turn_id = tab.next_of("chunk").await["turn_id"].as_str().unwrap().to_owned();
    server.wait_for("s", |d| d["messages"][1]["status"] == "streaming").await;

    // Someone else takes the session's lease (as a node that took it over would).
    let session = server.store.session("default", "s").await.unwrap().unwrap();
    let intruder = server.store.acquire_lease(session.pk, "intruder", i64::MAX, true).await;
    let intruder = intruder.unwrap().expect("a stolen lease");
    // The watcher is let go once the node notices, before the answer ends.
    let frames = tab.until_closed().await;
    assert!(frames.iter().all(|f| f["type"] != "done"), "{frames:?}");

    // The turn stopped here without recording its end or its answer: the rows stay as the
    // takeover left them, also once the provider's answer would have been complete.
    let stored = server.wait_for("s", |d| d["running_turn"].is_null()).await;
    let partial = stored["messages"][1]["content"].as_str().unwrap().len();
    assert_eq!(stored["messages"][1]["status"], "interrupted", "{stored}");
    assert!(partial < "chunk ".len() * 100, "{stored}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, later) = server.get("/api/sessions/s").await;
    assert_eq!(later["messages"].as_array().unwrap().len(), 2, "{later}");
    assert_eq!(later["messages"][1]["status"], "interrupted", "{later}");
    assert_eq!(later["messages"][1]["content"].as_str().unwrap().len(), partial);

    // The intruder gives the lease back (or it expires): the session takes messages again.
    server.store.release_lease(intruder.fence).await.unwrap();
    let (status, body) = server.chat("s", "are you there?").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "echo: are you there?");
    let (_, detail) = server.get("/api/sessions/s").await;
    let turns: Vec<_> = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["turn_id"] == turn_id.as_str())
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    assert_eq!(turns, ["complete", "interrupted"]);
    server.stop().await;
}
