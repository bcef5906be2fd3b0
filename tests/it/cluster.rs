//! Two real `parley serve` nodes on one PostgreSQL and one Redis, driven by real clients:
//! whichever node a client reaches, it sees the same session, in `seq` order, complete.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::cluster::{Cluster, Node};
use crate::common::live::{SseClient, WsClient};
use crate::common::{Script, json_of};

fn client(token: &str) -> reqwest::Client {
    crate::common::client_with(token)
}

/// The frames of one turn on a `/ws/chat` socket, up to its `done`.
async fn turn_frames(ws: &mut WsClient) -> Vec<Value> {
    ws.until("done").await.into_iter().filter(|f| f["seq"].is_u64()).collect()
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect()
}

async fn post(client: &reqwest::Client, node: &Node, path: &str, body: Value) -> (u16, Value) {
    let response = client.post(node.url(path)).json(&body).send().await.unwrap();
    let (status, body) = json_of(response).await;
    (status.as_u16(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_node_sees_a_turn_run_on_the_other_and_resumes_anywhere() {
    let Some(cluster) = Cluster::new(15.0).await else { return };
    let token = cluster.token("alice");
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let parts: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    cluster.provider.push([Script::slow_text(&parts, Duration::from_millis(5))]);

    // Tabs on both nodes, opened before the turn.
    let mut on_b = WsClient::connect_at(&b.base, "/ws/chat?session_id=s", &token).await;
    on_b.next_of("session_start").await;
    let mut on_a = WsClient::connect_at(&a.base, "/ws/chat?session_id=s", &token).await;
    on_a.next_of("session_start").await;
    let (status, body) =
        post(&client(&token), &a, "/api/sessions/s/messages", json!({"content": "hello"})).await;
    assert_eq!(status, 202, "{body}");

    let seen_on_b = turn_frames(&mut on_b).await;
    let seen_on_a = turn_frames(&mut on_a).await;
    assert_eq!(seen_on_b, seen_on_a, "both nodes' watchers see the same frames");
    let seq = seqs(&seen_on_b);
    assert!(
        seq.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none missing: {seq:?}\n{}\n{}",
        a.logs(),
        b.logs()
    );
    assert_eq!(seen_on_b[0]["type"], "user_message");
    let done = seen_on_b.last().unwrap();
    assert_eq!(done["full_response"], parts.concat());

    // A client that watched on b comes back on a from the middle of the turn.
    let middle = seq[seq.len() / 2];
    let request = client(&token).get(a.url(&format!("/api/sessions/s/events?after={middle}")));
    let mut sse = SseClient::open(request).await;
    let mut resumed = Vec::new();
    while resumed.last().is_none_or(|f: &Value| f["type"] != "done") {
        resumed.push(sse.next().await.1);
    }
    assert_eq!(resumed, seen_on_b[seq.len() / 2 + 1..], "the rest, exactly");

    // And the other way round: a new tab on b replays from the start of the turn.
    let before = seq[0] - 1;
    let mut late = WsClient::connect_at(&b.base, "/ws/chat?session_id=s", &token).await;
    late.next_of("session_start").await;
    late.send(json!({"type": "resume", "last_seq": before})).await;
    assert_eq!(turn_frames(&mut late).await, seen_on_b);
    // The stored session is the same from both nodes.
    let (_, from_a) =
        json_of(client(&token).get(a.url("/api/sessions/s")).send().await.unwrap()).await;
    let (_, from_b) =
        json_of(client(&token).get(b.url("/api/sessions/s")).send().await.unwrap()).await;
    assert_eq!(from_a["messages"], from_b["messages"]);
    assert_eq!(from_a["messages"][1]["content"], parts.concat());
}
