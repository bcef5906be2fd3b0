//! Two real `parley serve` nodes on one PostgreSQL and one Redis, driven by real clients:
//! whichever node a client reaches, it sees the same session, in `seq` order, complete.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::cluster::{Cluster, Node};
use crate::common::live::{SseClient, WsClient};
use crate::common::{Script, json_of, statuses, wait_for_session};

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

async fn get(client: &reqwest::Client, node: &Node, path: &str) -> (u16, Value) {
    let (status, body) = json_of(client.get(node.url(path)).send().await.unwrap()).await;
    (status.as_u16(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_approvals_on_one_node_reach_the_turn_on_the_other() {
    let Some(cluster) = Cluster::new(15.0).await else { return };
    let token = cluster.token("alice");
    let http = client(&token);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let endless: Vec<&str> = std::iter::repeat_n("more ", 2000).collect();
    cluster.provider.push([
        Script::slow_text(&endless, Duration::from_millis(10)),
        Script::tool_call("c1", "shell", json!({"command": "echo approved on b"}), 1),
        Script::text(&["all done"]),
    ]);

    // A turn runs on a; the Stop comes from a tab on b.
    let (status, _) =
        post(&http, &a, "/api/sessions/s/messages", json!({"content": "go on"})).await;
    assert_eq!(status, 202);
    let mut on_b = WsClient::connect_at(&b.base, "/ws/chat?session_id=s", &token).await;
    on_b.next_of("session_start").await;
    on_b.send(json!({"type": "resume", "last_seq": 0})).await;
    let turn_id = on_b.next_of("chunk").await["turn_id"].as_str().unwrap().to_owned();
    on_b.send(json!({"type": "cancel"})).await;
    let cancelled = on_b.next_of("cancelled").await;
    assert_eq!(cancelled["turn_id"], turn_id.as_str());
    let partial = cancelled["partial"].as_str().unwrap();
    assert!(partial.starts_with("more ") && partial.len() < 2000 * 5, "{partial}");
    let (_, detail) = get(&http, &a, "/api/sessions/s").await;
    assert_eq!(detail["messages"][1]["status"], "interrupted", "{detail}");

    // The next turn asks for approval; b lists it and approves it; a runs the tool.
    let (status, _) = post(&http, &a, "/api/sessions/s/messages", json!({"content": "tool"})).await;
    assert_eq!(status, 202);
    let request = on_b.next_of("approval_request").await;
    let (_, listed) = get(&http, &b, "/api/approvals").await;
    assert_eq!(listed["items"][0]["request_id"], request["request_id"], "listed on b: {listed}");
    let (_, listed) = get(&http, &a, "/api/approvals").await;
    assert_eq!(listed["items"][0]["request_id"], request["request_id"], "and on a: {listed}");
    on_b.send(json!({"type": "approval_response", "request_id": request["request_id"], "decision": "approve"})).await;
    let result = on_b.next_of("tool_result").await;
    assert_eq!(result["output"], "approved on b\n");
    let done = on_b.next_of("done").await;
    assert_eq!(done["full_response"], "all done");
    let (_, listed) = get(&http, &b, "/api/approvals").await;
    assert_eq!(listed["items"], json!([]), "decided: listed nowhere");
    // Deciding it again, from either node, is a clear 404.
    let id = request["request_id"].as_str().unwrap();
    let (status, _) = post(&http, &b, &format!("/api/approvals/{id}/deny"), json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_to_either_node_run_in_one_queue_on_the_session_s_node() {
    let Some(cluster) = Cluster::new(15.0).await else { return };
    let token = cluster.token("alice");
    let http = client(&token);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    cluster.provider.slow_echo(Duration::from_millis(2));
    let mut tab = WsClient::connect_at(&b.base, "/ws/chat?session_id=q", &token).await;
    tab.next_of("session_start").await;
    // Waiting chats on both nodes, for one session.
    let chats = (0..6).map(|i| {
        let (http, node) = (http.clone(), if i % 2 == 0 { &a } else { &b });
        async move {
            let body = json!({"content": format!("m{i}"), "session_id": "q"});
            post(&http, node, "/api/chat", body).await
        }
    });
    let answers = futures_util::future::join_all(chats).await;
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["reply"], format!("echo: ... m{i}"), "{body}");
    }
    // One queue: every turn stored once, each answer right after its message.
    let (_, detail) = get(&http, &a, "/api/sessions/q").await;
    let messages = detail["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 12, "{detail}");
    for pair in messages.chunks(2) {
        let asked = pair[0]["content"].as_str().unwrap();
        assert_eq!(pair[1]["content"], format!("echo: ... {asked}"), "{detail}");
    }
    // The tab on b saw each of them once, in seq order.
    let mut dones = 0;
    let mut last = 0;
    while dones < 6 {
        let frame = tab.next().await;
        if let Some(seq) = frame["seq"].as_u64() {
            assert!(seq > last, "{frame}");
            last = seq;
        }
        dones += usize::from(frame["type"] == "done");
    }
    // Notifications from b land in the session's live view too.
    let (status, body) =
        post(&http, &b, "/api/sessions/q/notify", json!({"event": {"ci": "green"}})).await;
    assert_eq!(status, 202, "{body}");
    let event = tab.next_of("agent_event").await;
    assert_eq!(event["event"]["ci"], "green");
    assert_eq!(event["seq"], body["seq"]);

    // Deleting from b tells every watcher, on both nodes.
    let mut on_a = WsClient::connect_at(&a.base, "/ws/chat?session_id=q", &token).await;
    on_a.next_of("session_start").await;
    let response = http.delete(b.url("/api/sessions/q")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(on_a.next_of("session_deleted").await["session_id"], "q");
    assert_eq!(tab.next_of("session_deleted").await["session_id"], "q");
    let (status, _) = get(&http, &a, "/api/sessions/q").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_node_running_a_turn_is_killed_the_other_takes_the_session_over() {
    // Leases of 2 s: the takeover comes within that (plus a renewal period).
    let Some(cluster) = Cluster::new(2.0).await else { return };
    let token = cluster.token("alice");
    let http = client(&token);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let endless: Vec<&str> = std::iter::repeat_n("more ", 5000).collect();
    cluster.provider.push([
        Script::slow_text(&endless, Duration::from_millis(10)),
        Script::text(&["the queued one, answered"]),
    ]);
    let mut on_b = WsClient::connect_at(&b.base, "/ws/chat?session_id=k", &token).await;
    on_b.next_of("session_start").await;
    for content in ["long", "queued"] {
        let (status, body) =
            post(&http, &a, "/api/sessions/k/messages", json!({"content": content})).await;
        assert_eq!(status, 202, "{body}");
    }
    let cut = on_b.next_of("chunk").await["turn_id"].as_str().unwrap().to_owned();
    // Wait until the partial answer is stored, then kill a: no chance to clean up.
    loop {
        let (_, detail) = get(&http, &b, "/api/sessions/k").await;
        if detail["messages"][1]["status"] == "streaming" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);

    // b takes the session over by itself: the cut turn ends as interrupted (its stored
    // partial answer kept), the queued one runs on b.
    let frames = on_b.until("done").await;
    let cancelled = frames.iter().find(|f| f["type"] == "cancelled").expect("the cut turn ends");
    assert_eq!(cancelled["turn_id"], cut.as_str());
    assert!(cancelled["partial"].as_str().unwrap().starts_with("more "), "{cancelled}");
    assert_eq!(frames.last().unwrap()["full_response"], "the queued one, answered");
    // The new holder numbers on from what the watcher saw: no gap, so no resync.
    assert!(frames.iter().all(|f| f["type"] != "resync"), "{frames:?}");
    let seq: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert!(seq.windows(2).all(|w| w[1] > w[0]), "{seq:?}");
    let (_, detail) = get(&http, &b, "/api/sessions/k").await;
    assert_eq!(
        statuses(&detail),
        [
            ("user", "complete"),
            ("assistant", "interrupted"),
            ("user", "complete"),
            ("assistant", "complete"),
        ],
        "{detail}"
    );
    // And it takes new messages.
    let (status, body) =
        post(&http, &b, "/api/chat", json!({"content": "still there?", "session_id": "k"})).await;
    assert_eq!(status, 200, "{body}\n{}", b.logs());
    assert_eq!(body["reply"], "echo: still there?");
}

fn words(words: &[String]) -> Vec<&str> {
    words.iter().map(String::as_str).collect()
}

/// Polls `node`'s `/health/ready` until its status is `status`.
async fn ready_becomes(node: &Node, status: u16) -> Value {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        let (got, body) = json_of(http.get(node.url("/health/ready")).send().await.unwrap()).await;
        if got.as_u16() == status {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never answered {status} on /health/ready", node.base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_says_so_and_its_watchers_catch_up_or_resync_after() {
    use crate::common::proxy::{proxy, through};
    let Some(cluster) = Cluster::new(15.0).await else { return };
    let token = cluster.token("alice");
    let http = client(&token);
    let (_, upstream) = through(&cluster.redis_url, "127.0.0.1:1".parse().unwrap());
    let (addr, cut) = proxy("127.0.0.1:0".parse().unwrap(), upstream).await;
    let (proxied, _) = through(&cluster.redis_url, addr);
    let (a, b) = (cluster.node("a"), cluster.node_on("b", &proxied));
    let slow = |n: usize| -> Vec<String> { (0..n).map(|i| format!("p{i} ")).collect() };
    let (first, second) = (slow(60), slow(60));
    cluster.provider.push([
        Script::slow_text(&words(&first), Duration::from_millis(15)),
        Script::slow_text(&words(&second), Duration::from_millis(15)),
    ]);
    let mut on_b = WsClient::connect_at(&b.base, "/ws/chat?session_id=r", &token).await;
    on_b.next_of("session_start").await;
    let mut on_a = WsClient::connect_at(&a.base, "/ws/chat?session_id=r", &token).await;
    on_a.next_of("session_start").await;

    // Cut off mid-answer: b says it is not ready; what it missed comes from the stream
    // once Redis is back, in order, nothing lost.
    post(&http, &a, "/api/sessions/r/messages", json!({"content": "one"})).await;
    on_b.next_of("chunk").await;
    cut.cancel();
    let body = ready_becomes(&b, 503).await;
    assert_eq!(body["components"]["bus"]["status"], "unavailable", "{body}");
    ready_becomes(&a, 200).await;
    let on_a_frames = turn_frames(&mut on_a).await;
    let (_, restored) = proxy(addr, upstream).await;
    ready_becomes(&b, 200).await;
    let mut seen = turn_frames(&mut on_b).await;
    assert!(seen.iter().all(|f| f["type"] != "resync"), "{seen:?}");
    let tail = on_a_frames.iter().position(|f| f["seq"] == seen[0]["seq"]).unwrap();
    assert_eq!(seen, on_a_frames[tail..], "b's watcher got every frame a's did");
    seen.clear();

    // Cut off again, and Redis loses the stream meanwhile (as on a restart): b's watcher is
    // told to resync, and the stored answer is whole.
    post(&http, &a, "/api/sessions/r/messages", json!({"content": "two"})).await;
    on_b.next_of("chunk").await;
    restored.cancel();
    ready_becomes(&b, 503).await;
    let redis = ::redis::Client::open(cluster.redis_url.as_str()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    turn_frames(&mut on_a).await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{}log:*", cluster.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = ::redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    let (_, again) = proxy(addr, upstream).await;
    ready_becomes(&b, 200).await;
    // Told on this socket, or by a closed socket whose resume is then told.
    let mut resynced = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(15), on_b.stream_next()).await {
            Ok(Some(frame)) if frame["type"] == "resync" => {
                resynced = true;
                break;
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => panic!("b's watcher was never told\n{}", b.logs()),
        }
    }
    if !resynced {
        let mut back = WsClient::connect_at(&b.base, "/ws/chat?session_id=r", &token).await;
        let start = back.next_of("session_start").await;
        assert!(start["last_seq"].as_u64().is_some());
        back.send(json!({"type": "resume", "last_seq": on_a_frames.last().unwrap()["seq"]})).await;
        back.next_of("resync").await;
    }
    let (_, detail) = get(&http, &b, "/api/sessions/r").await;
    assert_eq!(detail["messages"][3]["content"], second.concat(), "{detail}");
    again.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_tickets_lockouts_and_revocations_hold_across_nodes() {
    let Some(mut cluster) = Cluster::new(15.0).await else { return };
    cluster.env = vec![
        ("PARLEY_LIMITS__REQUESTS_PER_MINUTE_PER_TOKEN", "8".into()),
        ("PARLEY_LIMITS__TURNS_PER_MINUTE", "3".into()),
        ("PARLEY_LIMITS__AUTH_FAILURES_PER_MINUTE", "3".into()),
        ("PARLEY_LIMITS__MAX_CONNECTIONS_PER_USER", "2".into()),
    ];
    let (alice, bob, carol) =
        (cluster.token("alice"), cluster.token("bob"), cluster.token("carol"));
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let nodes = [&a, &b];

    // Turns per minute, counted over both nodes: the fourth is refused, wherever it lands.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let body = json!({"content": format!("m{i}")});
        statuses
            .push(post(&client(&carol), nodes[i % 2], "/api/sessions/t/messages", body).await.0);
    }
    assert_eq!(statuses, [202, 202, 202, 429], "turns of one user, counted cluster-wide");

    // Requests per token, counted over both nodes.
    let mut ok = 0;
    let mut refused = None;
    for i in 0..10 {
        let response = client(&alice).get(nodes[i % 2].url("/api/sessions")).send().await.unwrap();
        match response.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                refused.get_or_insert(i);
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, refused), (8, Some(8)), "8 requests a minute for the token, over both nodes");

    // Failed authentications lock the address out, counted over both nodes.
    let forged = client("not-a-token");
    let mut failures = Vec::new();
    for i in 0..5 {
        failures.push(
            forged.get(nodes[i % 2].url("/api/sessions")).send().await.unwrap().status().as_u16(),
        );
    }
    assert_eq!(failures, [401, 401, 401, 429, 429], "locked out after three, on both nodes");
    // A valid credential from the same address still works.
    let (status, _) = get(&client(&bob), &b, "/api/sessions").await;
    assert_eq!(status, 200);

    // A ticket issued by a works once, on b.
    let (status, ticket) = post(&client(&bob), &a, "/api/chat/ticket", json!({})).await;
    assert_eq!(status, 200);
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let ws_url =
        |node: &Node| format!("{}/ws/chat?ticket={ticket}", node.base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&b)).await.expect("redeemed on b");
    drop(ws.close(None).await);
    for node in nodes {
        let again = tokio_tungstenite::connect_async(ws_url(node)).await;
        assert!(again.is_err(), "a spent ticket is refused on {}", node.base);
    }

    // Connections per user, counted over both nodes.
    let dave = cluster.token("dave");
    let mut first = WsClient::connect_at(&a.base, "/ws/chat?session_id=c1", &dave).await;
    first.next_of("session_start").await;
    let mut second = WsClient::connect_at(&b.base, "/ws/chat?session_id=c2", &dave).await;
    second.next_of("session_start").await;
    let url = format!("{}/api/sessions/c1/events", a.base);
    let third = client(&dave).get(&url).send().await.unwrap();
    assert_eq!(third.status(), 429, "a third connection, on either node, is one too many");
    drop(second);
    let mut admitted = false;
    for _ in 0..100 {
        if client(&dave).get(&url).send().await.unwrap().status() == 200 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a closed connection on b frees a place on a");

    // Revoking bob's token on a closes his socket on b.
    let mut socket = WsClient::connect_at(&b.base, "/ws/chat?session_id=x", &bob).await;
    socket.next_of("session_start").await;
    let admin = client(&cluster.admin_token("root"));
    let (_, tokens) = get(&admin, &a, "/api/tokens").await;
    let bobs = tokens["items"].as_array().unwrap().iter().find(|t| t["user"] == "bob");
    let id = bobs.expect("bob's token is listed")["id"].as_str().unwrap().to_owned();
    let response = admin.delete(a.url(&format!("/api/tokens/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    socket.until_closed().await;
    // Refused there too (429 rather than 401: this address is still locked out, and a
    // revoked token is a failed authentication).
    let (status, _) = get(&client(&bob), &b, "/api/sessions").await;
    assert_eq!(status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_turns_over_both_nodes_are_each_answered_and_stored_once() {
    let Some(cluster) = Cluster::new(15.0).await else { return };
    let token = cluster.token("alice");
    let http = client(&token);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    cluster.provider.slow_echo(Duration::from_millis(1));
    let (sessions, per_session) = (40, 5);
    let chats = (0..sessions * per_session).map(|i| {
        let (http, node) = (http.clone(), if i % 2 == 0 { &a } else { &b });
        let (session, content) = (format!("load{}", i % sessions), format!("turn {i}"));
        async move {
            let body = json!({"content": content, "session_id": session});
            let (status, reply) = post(&http, node, "/api/chat", body).await;
            (status, reply, content)
        }
    });
    let answers = futures_util::future::join_all(chats).await;
    for (status, reply, content) in &answers {
        assert_eq!(*status, 200, "{reply}");
        assert_eq!(reply["reply"], format!("echo: ... {content}"), "{reply}");
    }
    for s in 0..sessions {
        let (_, detail) = get(&http, &b, &format!("/api/sessions/load{s}?limit=100")).await;
        let messages = detail["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2 * per_session, "load{s}: {detail}");
        let mut asked: Vec<&str> = Vec::new();
        for pair in messages.chunks(2) {
            let question = pair[0]["content"].as_str().unwrap();
            assert_eq!(pair[1]["content"], format!("echo: ... {question}"), "load{s}: {detail}");
            asked.push(question);
        }
        let mut expected: Vec<String> =
            (0..per_session).map(|k| format!("turn {}", s + k * sessions)).collect();
        expected.sort();
        asked.sort();
        assert_eq!(asked, expected, "each turn of load{s} stored once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_gracefully_hands_its_sessions_over_at_once() {
    // A lease far longer than the test: only a released lease lets b take over in time.
    let Some(mut cluster) = Cluster::new(600.0).await else { return };
    cluster.env = vec![("PARLEY_SHUTDOWN_GRACE_SECS", "1".into())];
    let token = cluster.token("alice");
    let http = client(&token);
    let (mut a, b) = (cluster.node("a"), cluster.node("b"));
    let (status, body) =
        post(&http, &a, "/api/chat", json!({"content": "on a", "session_id": "h"})).await;
    assert_eq!((status, body["reply"].as_str()), (200, Some("echo: on a")));
    // Another session has a turn running past the grace period and one queued behind it.
    let endless: Vec<&str> = std::iter::repeat_n("long ", 2000).collect();
    cluster.provider.push([Script::slow_text(&endless, Duration::from_millis(20))]);
    for content in ["long", "waiting"] {
        let body = json!({"content": content});
        assert_eq!(post(&http, &a, "/api/sessions/q/messages", body).await.0, 202);
    }
    let mut on_b = WsClient::connect_at(&b.base, "/ws/chat?session_id=q", &token).await;
    on_b.next_of("session_start").await;
    on_b.send(json!({"type": "resume", "last_seq": 0})).await;
    on_b.next_of("chunk").await;
    a.terminate();
    // b runs the queued turn (found once a released the lease), without a client asking.
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match on_b.stream_next().await {
                Some(frame) if frame["type"] == "done" => return Some(frame),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await;
    let Ok(Some(done)) = done else {
        panic!("b never ran it ({done:?}):\n{}\n---\n{}", a.logs(), b.logs());
    };
    assert_eq!(done["full_response"], "echo: waiting");
    let (status, body) =
        post(&http, &b, "/api/chat", json!({"content": "on b", "session_id": "h"})).await;
    assert_eq!(status, 200, "{body}\n{}", b.logs());
    assert_eq!(body["reply"], "echo: on b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_feed_on_one_node_shows_what_happens_on_the_other() {
    let Some(cluster) = Cluster::new(15.0).await else { return };
    let token = cluster.token("alice");
    let http = client(&token);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let mut feed = SseClient::open(http.get(b.url("/api/events"))).await;
    let (status, _) =
        post(&http, &a, "/api/chat", json!({"content": "hi", "session_id": "f"})).await;
    assert_eq!(status, 200);
    let mut kinds = Vec::new();
    while kinds.last().is_none_or(|k| k != "turn_finished") {
        let (id, event) = feed.next().await;
        assert!(id.is_some(), "every event has an id");
        assert_eq!(event["session_id"], "f");
        kinds.push(event["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["session_created", "turn_started", "turn_finished"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_apis_and_ag_ui_work_through_either_node() {
    let Some(cluster) = Cluster::new(15.0).await else { return };
    let token = cluster.token("alice");
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let http = client(&token);
    // Node a runs session s.
    let (status, _) =
        post(&http, &a, "/api/chat", json!({"content": "first", "session_id": "s"})).await;
    assert_eq!(status, 200);

    // A streamed completion in s through b: forwarded to a, streamed back through b.
    cluster.provider.push([Script::text(&["through ", "b"])]);
    let body = json!({"messages": [{"role": "user", "content": "via b"}], "stream": true});
    let response = http
        .post(b.url("/v1/chat/completions"))
        .header("x-session-id", "s")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text =
        tokio::time::timeout(Duration::from_secs(20), response.text()).await.unwrap().unwrap();
    let content: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, "through b", "{text}\n{}\n{}", a.logs(), b.logs());
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // A background response started on b, resumed on a after its first events.
    let parts: Vec<String> = (0..20).map(|i| format!("r{i} ")).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    cluster.provider.push([Script::slow_text(&parts, Duration::from_millis(20))]);
    let (status, started) =
        post(&http, &b, "/v1/responses", json!({"input": "go", "background": true})).await;
    assert_eq!(status, 200, "{started}");
    let id = started["id"].as_str().unwrap();
    let path = format!("/v1/responses/{id}?stream=true&starting_after=0");
    let mut stream = SseClient::open(http.get(a.url(&path))).await;
    let events = stream.until("response.completed").await;
    let deltas: String = events
        .iter()
        .filter(|(_, e)| e["type"] == "response.output_text.delta")
        .map(|(_, e)| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, parts.concat());
    let numbers: Vec<u64> =
        events.iter().map(|(_, e)| e["sequence_number"].as_u64().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");

    // An AG-UI run on thread s through b.
    cluster.provider.push([Script::text(&["agui ", "via b"])]);
    let user = json!([{"id": "u1", "role": "user", "content": "hi"}]);
    let body = json!({"threadId": "s", "runId": "r1", "messages": user});
    let response = http.post(b.url("/api/ag-ui")).json(&body).send().await.unwrap();
    let text =
        tokio::time::timeout(Duration::from_secs(20), response.text()).await.unwrap().unwrap();
    let deltas: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["type"] == "TEXT_MESSAGE_CONTENT")
        .map(|e| e["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas, "agui via b", "{text}");
    assert!(text.contains("\"RUN_FINISHED\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_on_one_node_sees_and_kills_a_turn_running_on_the_other() {
    let Some(cluster) = Cluster::new(15.0).await else { return };
    let (alice, bob, root) = (
        client(&cluster.token("alice")),
        client(&cluster.token("bob")),
        cluster.admin_token("root"),
    );
    let root = client(&root);
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    // Longer than the test can take: the Kill, not the end, stops it.
    let endless: Vec<&str> = std::iter::repeat_n("more ", 20_000).collect();
    cluster.provider.push([Script::slow_text(&endless, Duration::from_millis(10))]);
    let (status, _) = post(&alice, &a, "/api/sessions/k/messages", json!({"content": "go"})).await;
    assert_eq!(status, 202);

    // Node b lists the turn that runs on a, naming its user, session and node.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let (status, listed) = get(&root, &b, "/api/agents?all=true").await;
        assert_eq!(status, 200, "{listed}");
        if !listed["items"].as_array().unwrap().is_empty() {
            break listed;
        }
        assert!(std::time::Instant::now() < deadline, "the turn on a was never listed on b");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let turn = &listed["items"][0];
    assert_eq!((turn["user"].as_str(), turn["session_id"].as_str()), (Some("alice"), Some("k")));
    assert_eq!(turn["node_id"], "a", "{listed}");
    let turn_id = turn["turn_id"].as_str().unwrap().to_owned();
    let (_, own) = get(&alice, &b, "/api/agents").await;
    assert_eq!(own["items"][0]["turn_id"], turn_id.as_str(), "alice sees her own turn on b");
    let (_, others) = get(&bob, &b, "/api/agents").await;
    assert_eq!(others["items"], json!([]), "bob sees none of alice's");
    // The session's page on b says it runs, and where its events stand (not the stored
    // reservation bound, which is ahead of them: a client resuming from it would miss all).
    let (_, on_b) = get(&alice, &b, "/api/sessions/k").await;
    assert_eq!(on_b["running_turn"]["turn_id"], turn_id.as_str(), "{on_b}");
    let (_, on_a) = get(&alice, &a, "/api/sessions/k").await;
    let (seen_b, seen_a) = (on_b["last_seq"].as_u64().unwrap(), on_a["last_seq"].as_u64().unwrap());
    assert!(seen_b > 0 && seen_b <= seen_a, "b says {seen_b}, a (read later) {seen_a}");

    // The admin's Kill on b stops it on a, once it has written something.
    wait_for_session(&alice, &a.base, "k", |s| s["messages"].as_array().unwrap().len() > 1).await;
    let (status, killed) = post(&root, &b, &format!("/api/agents/{turn_id}/kill"), json!({})).await;
    assert_eq!((status, &killed["cancelled"]), (200, &json!(true)), "{killed}");
    let detail = wait_for_session(&alice, &a.base, "k", |s| s["running_turn"].is_null()).await;
    assert_eq!(detail["messages"][1]["status"], "interrupted", "{detail}");
    let (_, listed) = get(&root, &b, "/api/agents?all=true").await;
    assert_eq!(listed["items"], json!([]), "{listed}");
}
