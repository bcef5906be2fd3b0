//! What happens around a session's life: its watchers are told when it is deleted, a
//! refused message leaves nothing behind, and messages sent at once are stored, echoed and
//! answered in one order — the order of their `seq`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::live::{SseClient, WsClient};
use crate::common::{FakeProvider, Script, TestServer, test_config, transcript};

async fn loaded_sessions(server: &TestServer) -> u64 {
    server.get("/api/status").await.1["loaded_sessions"].as_u64().unwrap()
}

#[tokio::test]
async fn deleting_a_session_tells_every_watcher_and_detaches_them() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, _) = server.chat("doomed", "hello").await;
    assert_eq!(status, 200);

    let mut tab = WsClient::connect(&server, "/ws/chat?session_id=doomed").await;
    assert_eq!(tab.next().await["type"], "session_start");
    let mut oxios = WsClient::connect(&server, "/api/chat/stream").await;
    oxios.send(json!({"type": "resume", "last_seq": 0, "session_id": "doomed"})).await;
    let mut sse = SseClient::connect(&server, "/api/sessions/doomed/events", None).await;
    // The Oxios socket follows the session once its replay arrives.
    oxios.next_of("done").await;

    let response = server.client.delete(server.url("/api/sessions/doomed")).send().await.unwrap();
    assert_eq!(response.status(), 204);

    let frame = tab.next_of("session_deleted").await;
    assert_eq!(frame["session_id"], "doomed");
    let frame = oxios.next_of("session_deleted").await;
    assert_eq!(frame["session_id"], "doomed");
    let (_, event) = sse.next().await;
    assert_eq!(event["type"], "session_deleted");
    assert_eq!(sse.event_name.as_deref(), Some("session_deleted"));
    assert!(sse.ends().await, "the session's event stream ends");

    // The next message on each socket starts a fresh session that the socket follows.
    tab.send(json!({"type": "message", "content": "again"})).await;
    let start = tab.next_of("session_start").await;
    let fresh = start["session_id"].as_str().unwrap().to_owned();
    assert_ne!(fresh, "doomed");
    assert_eq!(start["resumed"], false);
    let done = tab.next_of("done").await;
    assert_eq!(done["session_id"], fresh.as_str());
    assert_eq!(done["full_response"], "echo: again");

    oxios.send(json!({"type": "message", "content": "still here?"})).await;
    let accepted = oxios.next_of("accepted").await;
    let other = accepted["session_id"].as_str().unwrap().to_owned();
    assert_ne!(other, "doomed");
    let done = oxios.next_of("done").await;
    assert_eq!(done["session_id"], other.as_str());
    assert_eq!(done["reply"], "echo: still here?");
    let (status, _) = server.get("/api/sessions/doomed").await;
    assert_eq!(status, 404, "nothing brought the deleted session back");
}

#[tokio::test]
async fn refused_messages_create_no_session_and_no_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.limits.turns_per_minute = 5;
    let server = TestServer::start(config).await;
    // Connecting to, or resuming, a session that does not exist creates nothing.
    let mut ws = WsClient::connect(&server, "/api/chat/stream?session_id=ghost").await;
    ws.send(json!({"type": "resume", "last_seq": 0, "session_id": "phantom"})).await;
    assert_eq!(ws.next_of("error").await["code"], "NOT_FOUND");
    ws.send(json!({"type": "message", "content": "  ", "session_id": "blank"})).await;
    assert_eq!(ws.next_of("error").await["code"], "EMPTY_CONTENT");
    ws.send(json!({"type": "message", "content": "x", "session_id": "bad id!"})).await;
    assert_eq!(ws.next_of("error").await["code"], "INVALID_SESSION_ID");

    let (mut accepted, mut limited) = (0, 0);
    for n in 0..15 {
        ws.send(json!({"type": "message", "content": "hi", "session_id": format!("s{n}")})).await;
        let reply = loop {
            let frame = ws.next().await;
            if frame["type"] == "accepted" || frame["type"] == "error" {
                break frame;
            }
        };
        match reply["type"].as_str() {
            Some("accepted") => accepted += 1,
            _ => {
                assert_eq!(reply["code"], "RATE_LIMITED", "{reply}");
                limited += 1;
            }
        }
    }
    assert_eq!((accepted, limited), (5, 10));
    let (_, list) = server.get("/api/sessions?limit=100").await;
    assert_eq!(list["total"], 5, "{list}");
    for n in 0..5 {
        server.wait_idle(&format!("s{n}")).await;
    }
    drop(ws);
    // Only the accepted sessions were ever loaded (none of the refused ones lingers).
    let loaded = loaded_sessions(&server).await;
    assert!(loaded <= 5, "{loaded} sessions in memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_sent_at_once_are_stored_echoed_and_answered_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.slow_echo(Duration::from_millis(1));
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, _) = server.chat("order", "first").await;
    assert_eq!(status, 200);
    let mut watcher = WsClient::connect(&server, "/ws/chat?session_id=order").await;
    assert_eq!(watcher.next().await["type"], "session_start");

    let sends = (0..40).map(|n| {
        let (client, url) = (server.client.clone(), server.url("/api/sessions/order/messages"));
        tokio::spawn(async move {
            let response = client.post(url).json(&json!({"content": format!("m{n}")})).send();
            response.await.unwrap().status()
        })
    });
    for send in sends.collect::<Vec<_>>() {
        assert_eq!(send.await.unwrap(), 202);
    }
    let mut echoes: Vec<Value> = Vec::new();
    let mut answers: Vec<Value> = Vec::new();
    while answers.len() < 40 {
        let frame = watcher.next().await;
        match frame["type"].as_str() {
            Some("user_message") => echoes.push(frame),
            Some("done") => answers.push(frame),
            _ => {}
        }
    }
    // Echoes come in seq order, and turns answer in the order of their messages' seqs.
    let seqs: Vec<u64> = echoes.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let echoed: Vec<&str> = echoes.iter().map(|e| e["content"].as_str().unwrap()).collect();
    let answered: Vec<String> = answers
        .iter()
        .map(|a| a["full_response"].as_str().unwrap().trim_start_matches("echo: ... ").to_owned())
        .collect();
    assert_eq!(echoed, answered, "turns ran in the order of their seq");
    // Every echo is a stored message with the same seq, each followed by its own answer.
    let detail = server.wait_idle("order").await;
    let stored = transcript(&detail);
    let messages = detail["messages"].as_array().unwrap();
    for echo in &echoes {
        let at = messages.iter().position(|m| m["seq"] == echo["seq"]).expect("the echo is stored");
        assert_eq!(messages[at]["content"], echo["content"]);
        let answer = format!("echo: ... {}", echo["content"].as_str().unwrap());
        assert_eq!(stored[at + 1].1, answer);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_seq_a_watcher_saw_is_handed_out_again_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let parts: Vec<&str> = std::iter::repeat_n("tick ", 400).collect();
    provider.push([Script::slow_text(&parts, Duration::from_millis(5))]);
    let process = crate::durability::spawn_parley(dir.path(), &provider, 1);
    let ws_url = |path: &str| format!("{}{path}", process.base.replacen("http", "ws", 1));
    let (mut socket, _) =
        tokio_tungstenite::connect_async(ws_url("/ws/chat?session_id=crash")).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    let message = json!({"type": "message", "content": "go"}).to_string();
    socket.send(message.into()).await.unwrap();
    let mut highest = 0;
    while highest < 50 {
        let frame = tokio::time::timeout(Duration::from_secs(15), socket.next()).await.unwrap();
        let frame: Value =
            serde_json::from_str(frame.unwrap().unwrap().to_text().unwrap()).unwrap();
        highest = highest.max(frame["seq"].as_u64().unwrap_or(0));
    }
    let mut process = process;
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    drop(socket);

    provider.push([Script::text(&["after"])]);
    let restarted = crate::durability::spawn_parley(dir.path(), &provider, 1);
    let url = format!("{}/ws/chat?session_id=crash", restarted.base.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let message = json!({"type": "message", "content": "again"}).to_string();
    socket.send(message.into()).await.unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), socket.next()).await.unwrap();
        let frame: Value =
            serde_json::from_str(frame.unwrap().unwrap().to_text().unwrap()).unwrap();
        if let Some(seq) = frame["seq"].as_u64() {
            assert!(seq > highest, "seq {seq} reused after the crash (saw {highest}): {frame}");
        }
        if frame["type"] == "done" {
            break;
        }
    }
}

#[tokio::test]
async fn a_message_that_could_not_be_stored_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let (status, _) = server.chat("fragile", "stored fine").await;
    assert_eq!(status, 200);
    let mut watcher = WsClient::connect(&server, "/ws/chat?session_id=fragile").await;
    assert_eq!(watcher.next().await["type"], "session_start");
    // The store refuses the next turn of this session, as a full disk or a lost database
    // connection would.
    let refusal = StoreFault::inject(dir.path()).await;
    let (status, body) =
        server.post("/api/sessions/fragile/messages", json!({"content": "lost"})).await;
    assert_eq!(status, 500, "{body}");
    assert!(!body.to_string().contains("injected"), "no internals: {body}");
    let frame = watcher.next().await;
    assert_eq!(frame["type"], "error", "the watcher is told, and never sees an echo: {frame}");
    assert_eq!(frame["code"], "AGENT_ERROR");
    refusal.lift().await;
    // The session goes on, its numbering intact.
    let (status, _) =
        server.post("/api/sessions/fragile/messages", json!({"content": "again"})).await;
    assert_eq!(status, 202);
    let echo = watcher.next_of("user_message").await;
    assert_eq!(echo["content"], "again");
    assert_eq!(echo["seq"].as_u64(), frame["seq"].as_u64().map(|seq| seq + 1));
    watcher.next_of("done").await;
    let detail = server.wait_idle("fragile").await;
    let contents: Vec<String> = transcript(&detail).into_iter().map(|(_, c)| c).collect();
    assert!(!contents.contains(&"lost".to_owned()), "{contents:?}");
}

/// A trigger that makes the store refuse every new turn, on whichever backend the test
/// servers in `dir` use.
enum StoreFault {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl StoreFault {
    async fn inject(dir: &std::path::Path) -> Self {
        match crate::common::postgres::store_url(dir) {
            None => {
                let url = format!("sqlite://{}", dir.join("parley.db").display());
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                sqlx::query(
                    "CREATE TRIGGER refuse_turns BEFORE INSERT ON turns BEGIN \
                     SELECT RAISE(ABORT, 'injected failure'); END",
                )
                .execute(&pool)
                .await
                .unwrap();
                StoreFault::Sqlite(pool)
            }
            Some(url) => {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                sqlx::raw_sql(
                    "CREATE FUNCTION refuse_turn() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
                     CREATE TRIGGER refuse_turns BEFORE INSERT ON turns \
                     FOR EACH ROW EXECUTE FUNCTION refuse_turn();",
                )
                .execute(&pool)
                .await
                .unwrap();
                StoreFault::Postgres(pool)
            }
        }
    }

    async fn lift(self) {
        match self {
            StoreFault::Sqlite(pool) => {
                sqlx::query("DROP TRIGGER refuse_turns").execute(&pool).await.unwrap();
            }
            StoreFault::Postgres(pool) => {
                sqlx::query("DROP TRIGGER refuse_turns ON turns").execute(&pool).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn a_session_read_as_idle_already_holds_its_last_answer() {
    // What a session is doing is read before its history: a reader told no turn runs any
    // more gets the answers of the turns that ran (read the other way round, the history
    // could predate the end of the turn the live state had seen end).
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let server = TestServer::with_provider(dir.path(), &provider).await;
    for i in 0..20 {
        let body = json!({"content": format!("m{i}")});
        let (status, _) = server.post("/api/sessions/s/messages", body).await;
        assert_eq!(status, 202);
        let detail = server.wait_idle("s").await;
        let answers = transcript(&detail).into_iter().filter(|(role, _)| role == "assistant");
        assert_eq!(answers.count(), i + 1, "{detail}");
        assert_eq!(detail["message_count"], 2 * (i + 1), "{detail}");
    }
}
