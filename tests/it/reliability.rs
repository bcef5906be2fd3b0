//! The reliability suite, short version (CI): kill -9 at random points of running turns
//! and check nothing acknowledged is lost and every kill cut a turn that restart marks
//! interrupted; provider faults under concurrent load end every turn with an answer or a
//! typed error; clients of every protocol that drop and resume at random see every event
//! once. `PARLEY_RELIABILITY_ROUNDS` makes it longer; `PARLEY_RELIABILITY_SEED` replays a
//! run (a failing test names its seed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::common::{FakeProvider, Script, Step, TestServer, json_of, wait_for_session};
use crate::durability::spawn_parley;

fn rounds(default: u64) -> u64 {
    std::env::var("PARLEY_RELIABILITY_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(default)
}

/// The seed of a randomized test: `PARLEY_RELIABILITY_SEED`, or the clock. Held for the
/// test's length; if the test fails, its drop names the seed so the run can be replayed.
struct Seed(u64);

impl Seed {
    fn new() -> Self {
        let seed = std::env::var("PARLEY_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(parley::clock::now_ms() as u64 | 1);
        println!("reliability seed {seed}");
        Seed(seed)
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let seed = self.0;
            eprintln!("reliability seed {seed} (rerun with PARLEY_RELIABILITY_SEED={seed})");
        }
    }
}

/// A small deterministic generator (xorshift), so a seed replays a run.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point.
        Random(seed.max(1))
    }

    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// The first text of the answer [`endless_answer`] gives in `round`.
fn endless_mark(round: u64) -> String {
    format!("cut by kill {round} ")
}

/// An answer that streams far longer than a round of the crash loop lasts (a part every
/// 20 ms for 20 s), so the kill always finds it mid-stream.
fn endless_answer(round: u64) -> Script {
    let chunk =
        |text: &str| Step::Chunk(json!({"choices": [{"index": 0, "delta": {"content": text}}]}));
    let mut steps = vec![chunk(&endless_mark(round))];
    for _ in 0..1000 {
        steps.push(Step::Delay(Duration::from_millis(20)));
        steps.push(chunk("more "));
    }
    Script::Stream(steps)
}

/// Waits until one of `sessions` shows a streaming answer that starts with `mark`, i.e. its
/// partial text is stored.
async fn wait_for_partial(client: &reqwest::Client, base: &str, sessions: u64, mark: &str) {
    for _ in 0..1000 {
        for s in 0..sessions {
            let response = client.get(format!("{base}/api/sessions/s{s}")).send().await.unwrap();
            let (_, detail) = json_of(response).await;
            let messages = detail["messages"].as_array().cloned().unwrap_or_default();
            if messages.iter().any(|m| {
                m["status"] == "streaming"
                    && m["content"].as_str().is_some_and(|c| c.starts_with(mark))
            }) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the answer {mark:?} never started streaming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_nothing_acknowledged() {
    let seed = Seed::new();
    let mut random = Random::new(seed.0);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("data/parley.db").display());
    let provider = FakeProvider::start().await;
    provider.slow_echo(Duration::from_millis(15));
    let client = crate::common::client();
    let mut acknowledged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let sessions = 3;
    let mut process = spawn_parley(dir.path(), &provider, 5);
    for round in 0..rounds(6) {
        // The round's first model call gets an answer that outlasts the round: the kill
        // always cuts a turn mid-answer. The other turns echo, cut wherever they are.
        provider.push([endless_answer(round)]);
        for i in 0..(2 + random.next(6)) {
            let session = format!("s{}", random.next(sessions));
            let content = format!("round {round} message {i}");
            let response = client
                .post(format!("{}/api/sessions/{session}/messages", process.base))
                .json(&json!({"content": content}))
                .send()
                .await
                .unwrap();
            if response.status() == 202 {
                acknowledged.entry(session).or_default().push(content);
            }
        }
        wait_for_partial(&client, &process.base, sessions, &endless_mark(round)).await;
        tokio::time::sleep(Duration::from_millis(random.next(250))).await;
        drop(process); // SIGKILL
        // Start-up recovery marks what the kill cut.
        process = spawn_parley(dir.path(), &provider, 5);
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let cut: Vec<(String, String)> = sqlx::query_as(
            "SELECT m.status, t.status FROM messages m JOIN turns t ON t.id = m.turn_id \
             WHERE m.role = 'assistant' AND m.content LIKE $1",
        )
        .bind(format!("{}%", endless_mark(round)))
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        assert_eq!(
            cut,
            [("interrupted".to_owned(), "interrupted".to_owned())],
            "round {round}: the answer streaming at the kill is kept and marked interrupted, \
             and so is its turn"
        );
    }

    for (session, sent) in &acknowledged {
        // Turns the last kill left queued run after the restart: wait for them.
        wait_for_session(&client, &process.base, session, |d| d["state"] == "idle").await;
        let (status, detail) = json_of(
            client
                .get(format!("{}/api/sessions/{session}?limit=500", process.base))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{session} loads");
        let messages = detail["messages"].as_array().unwrap();
        let users: Vec<&str> = messages
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(
            users,
            sent.iter().map(String::as_str).collect::<Vec<_>>(),
            "every acknowledged message, in order"
        );
        assert!(
            messages.iter().all(|m| m["status"] != "streaming"),
            "interrupted work is marked: {detail}"
        );
        assert_eq!(detail["state"], "idle");
        // The session takes new turns.
        let (status, body) = json_of(
            client
                .post(format!("{}/api/chat", process.base))
                .json(&json!({"content": "still alive?", "session_id": session}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["reply"], "echo: ... still alive?", "{session} answers after the kills");
    }
    drop(process);
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let check: String =
        sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&pool).await.unwrap();
    assert_eq!(check, "ok");
    let unfinished: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM turns WHERE status IN ('queued', 'running')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unfinished, 0, "no turn is left running");
    let interrupted: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM turns WHERE status = 'interrupted'")
            .fetch_one(&pool)
            .await
            .unwrap();
    println!("{interrupted} turns were cut by a kill and marked interrupted");
    // A kill cuts the turn each session was running; the turns queued behind it run after
    // the restart instead of being dropped.
    let kills = rounds(6) as i64;
    assert!(
        interrupted <= kills * sessions as i64,
        "{interrupted} turns interrupted by {kills} kills"
    );
}

#[tokio::test]
async fn provider_faults_under_load_end_every_turn_with_an_answer_or_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = crate::common::test_config(dir.path(), Some(&provider));
    config.provider.max_retries = 1;
    config.provider.first_byte_timeout_secs = 0.5;
    config.provider.idle_timeout_secs = 0.5;
    let server = TestServer::start(config).await;
    let turns = 8 * rounds(5) as usize;
    let seed = Seed::new();
    let mut random = Random::new(seed.0);
    let faults: Vec<Script> = (0..turns)
        .map(|_| match random.next(7) {
            0 => Script::Status {
                status: 429,
                retry_after: Some("0"),
                body: json!({"error": {"message": "slow down"}}),
            },
            1 => Script::status(500, "boom"),
            2 => Script::Stream(vec![
                Step::Chunk(json!({"choices": [{"delta": {"content": "cut "}}]})),
                Step::Delay(Duration::from_millis(50)),
                Step::Cut,
            ]),
            3 => Script::Stream(vec![Step::Raw("data: {broken\n\n")]),
            4 => Script::Slow(Duration::from_secs(2), Box::new(Script::text(&["late"]))),
            5 => Script::Stream(vec![
                Step::Chunk(json!({"choices": [{"delta": {"content": "stall"}}]})),
                Step::Delay(Duration::from_secs(2)),
            ]),
            _ => Script::text(&["fine"]),
        })
        .collect();
    provider.push(faults);
    let mut tasks = Vec::new();
    for i in 0..turns {
        let (client, url) = (server.client.clone(), server.url("/api/chat"));
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&json!({"content": format!("m{i}"), "session_id": format!("load{}", i % 8)}))
                .send();
            tokio::time::timeout(Duration::from_secs(60), response)
                .await
                .expect("the turn ended")
                .unwrap()
        }));
    }
    let mut outcomes = BTreeMap::new();
    for task in tasks {
        let (status, body) = json_of(task.await.unwrap()).await;
        let code = body["code"].as_str().unwrap_or("done").to_owned();
        assert!(
            (status == 200 && code == "done") || (status == 502 && code == "PROVIDER_ERROR"),
            "an answer or a typed error, got {status} {body}"
        );
        *outcomes.entry(code).or_insert(0) += 1;
    }
    println!("outcomes {outcomes:?}");
    let (_, status) = server.get("/api/status").await;
    assert_eq!(status["active_turns"], 0);
    // Every session answers afterwards.
    for s in 0..8 {
        let (status, _) = server.chat(&format!("load{s}"), "after the storm").await;
        assert_eq!(status, 200);
    }
}

/// One `/ws/chat` client sending `messages` in turn, dropping its socket at random points
/// and resuming with the last seq it saw; returns the seqs it received, in order.
async fn churning_client(
    server: Arc<TestServer>,
    session: String,
    messages: usize,
    seed: u64,
) -> Vec<u64> {
    use crate::common::live::WsClient;
    let server = server.as_ref();
    let mut random = Random::new(seed);
    let mut seen: Vec<u64> = Vec::new();
    let mut ws = WsClient::connect(server, &format!("/ws/chat?session_id={session}")).await;
    // Events before the connection are not this client's: it resumes from here at worst.
    let start = ws.next().await["last_seq"].as_u64().unwrap();
    for m in 0..messages {
        ws.send(json!({"type": "message", "content": format!("{session} m{m}")})).await;
        let mut drop_after = if random.next(2) == 0 { Some(random.next(8)) } else { None };
        let (mut read, mut echoed) = (0, false);
        loop {
            // Only once the message is echoed (acknowledged): a socket dropped before that
            // may take the unread message down with it (the client would send it again).
            if echoed && drop_after.is_some_and(|after| read >= after) {
                drop_after = None;
                let last = seen.last().copied().unwrap_or(start);
                ws = WsClient::connect(
                    server,
                    &format!("/ws/chat?session_id={session}&last_seq={last}"),
                )
                .await;
                ws.next().await; // session_start
            }
            let frame = ws.next().await;
            read += 1;
            echoed |= frame["type"] == "user_message";
            let Some(seq) = frame["seq"].as_u64() else { continue };
            seen.push(seq);
            if frame["type"] == "done" {
                break;
            }
        }
    }
    seen
}

/// One Oxios `/api/chat/stream` client sending `messages` in turn, dropping its socket at
/// random points and resuming on a new one with `resume {last_seq}`; returns each answer
/// as assembled from its tokens. Its frames' seqs only ever grow (the protocol skips the
/// event kinds it has no frame for).
async fn churning_stream_client(
    server: Arc<TestServer>,
    session: String,
    messages: usize,
    seed: u64,
) -> Vec<String> {
    use crate::common::live::WsClient;
    let server = server.as_ref();
    let mut random = Random::new(seed);
    let mut last = 0;
    let mut answers = Vec::new();
    let path = format!("/api/chat/stream?session_id={session}");
    let mut ws = WsClient::connect_with(server, &path, &[]).await;
    for m in 0..messages {
        ws.send(json!({"type": "message", "content": format!("{session} m{m}")})).await;
        let mut drop_after = if random.next(2) == 0 { Some(random.next(8)) } else { None };
        let (mut read, mut answer, mut accepted) = (0, String::new(), false);
        loop {
            // Only once the message is acknowledged: a socket dropped before that may take
            // the unread message down with it (the client would send it again).
            if accepted && drop_after.is_some_and(|after| read >= after) {
                drop_after = None;
                ws = WsClient::connect_with(server, "/api/chat/stream", &[]).await;
                ws.send(json!({"type": "resume", "last_seq": last, "session_id": session})).await;
            }
            let frame = ws.next().await;
            read += 1;
            accepted |= frame["type"] == "accepted";
            let Some(seq) = frame["seq"].as_u64() else { continue };
            assert!(
                seq > last,
                "{session}: seq {seq} after {last}: a repeat: {frame} (message {m}, read {read})"
            );
            last = seq;
            match frame["type"].as_str() {
                Some("token") => answer.push_str(frame["content"].as_str().unwrap()),
                Some("done") => break,
                _ => panic!("{session}: unexpected {frame}"),
            }
        }
        answers.push(answer);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_random_disconnects_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.slow_echo(Duration::from_millis(3));
    let server = Arc::new(TestServer::with_provider(dir.path(), &provider).await);
    let clients = 4;
    let messages = rounds(5) as usize;
    let seed = Seed::new();
    // An SSE watcher on the first session must see each of its events once.
    let (_, created) =
        server.post("/api/chat", json!({"content": "open", "session_id": "churn0"})).await;
    assert!(created["reply"].is_string());
    let (_, detail) = server.get("/api/sessions/churn0").await;
    let start = detail["last_seq"].as_u64().unwrap();
    let mut sse = crate::common::live::SseClient::connect(
        &server,
        &format!("/api/sessions/churn0/events?after={start}"),
        None,
    )
    .await;

    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(churning_client(
            server.clone(),
            format!("churn{c}"),
            messages,
            seed.0 + c as u64,
        )));
    }
    let mut oxios = Vec::new();
    for c in 0..2 {
        let (server, session) = (server.clone(), format!("ox{c}"));
        oxios.push(tokio::spawn(churning_stream_client(
            server,
            session,
            messages,
            seed.0 + 10 + c,
        )));
    }
    // REST clients at the same time.
    let mut rest = Vec::new();
    for c in 0..2 {
        let (client, url) = (server.client.clone(), server.url("/api/chat"));
        rest.push(tokio::spawn(async move {
            for m in 0..messages {
                let body =
                    json!({"content": format!("rest{c} m{m}"), "session_id": format!("rest{c}")});
                let response = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
            }
        }));
    }
    let mut streams = Vec::new();
    for task in tasks {
        streams.push(task.await.unwrap());
    }
    for task in rest {
        task.await.unwrap();
    }
    for (c, task) in oxios.into_iter().enumerate() {
        let answers = task.await.unwrap();
        let expected: Vec<String> =
            (0..messages).map(|m| format!("echo: ... ox{c} m{m}")).collect();
        assert_eq!(answers, expected, "every token of every answer, once");
        let (_, detail) = server.get(&format!("/api/sessions/ox{c}?limit=500")).await;
        assert_eq!(detail["message_count"], 2 * messages);
    }
    for (c, seqs) in streams.iter().enumerate() {
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "client {c}: a gap or a repeat in {seqs:?}");
        }
    }
    // The SSE watcher saw session churn0's events, each once, in order.
    let mut sse_seqs = Vec::new();
    let mut dones = 0;
    while dones < messages {
        let (id, event) = sse.next().await;
        sse_seqs.push(id.unwrap());
        if event["type"] == "done" {
            dones += 1;
        }
    }
    assert_eq!(
        &sse_seqs[..],
        &streams[0][..],
        "the SSE watcher and the churning client saw the same events"
    );
    // Stored: exactly one user message and one answer per message sent.
    for c in 0..clients {
        let (_, detail) = server.get(&format!("/api/sessions/churn{c}?limit=500")).await;
        let offset = if c == 0 { 2 } else { 0 };
        let messages_stored = detail["messages"].as_array().unwrap();
        assert_eq!(messages_stored.len(), offset + 2 * messages, "churn{c}");
        for m in 0..messages {
            assert_eq!(messages_stored[offset + 2 * m]["content"], format!("churn{c} m{m}"));
            assert_eq!(
                messages_stored[offset + 2 * m + 1]["content"],
                format!("echo: ... churn{c} m{m}")
            );
        }
    }
    for c in 0..2 {
        let (_, detail) = server.get(&format!("/api/sessions/rest{c}?limit=500")).await;
        assert_eq!(detail["message_count"], 2 * messages);
    }
}

/// The answer the fake provider's slow echo gives to `content`.
fn echo(content: &str) -> String {
    format!("echo: ... {content}")
}

/// One operation of the soak's mix on `session`, against a server without authentication.
/// Checks what the operation's client sees and returns the user message it stored in
/// `session`, if it started a turn there.
async fn soak_step(
    base: &str,
    provider: &FakeProvider,
    client: &reqwest::Client,
    session: &str,
    pick: u64,
) -> Option<String> {
    use tokio_tungstenite::tungstenite::Message;
    // A turn over REST ends with its own answer or a typed error (any turn may meet one of
    // the faults queued by op 1, from any worker).
    let rest_turn = |content: String| async move {
        let body = json!({"content": content, "session_id": session});
        let response = client.post(format!("{base}/api/chat")).json(&body).send().await.unwrap();
        let (status, body) = json_of(response).await;
        assert!(
            (status == 200 && body["reply"] == echo(&content))
                || (status == 502 && body["code"] == "PROVIDER_ERROR"),
            "{session}: {content:?} got {status} {body}"
        );
        Some(content)
    };
    match pick % 6 {
        0 => rest_turn(format!("rest {pick}")).await,
        // A provider fault, then a turn that may meet it.
        1 => {
            provider.push([match pick % 3 {
                0 => Script::status(500, "boom"),
                1 => Script::Stream(vec![Step::Raw("data: {broken\n\n")]),
                _ => Script::Stream(vec![
                    Step::Chunk(json!({"choices": [{"delta": {"content": "cut "}}]})),
                    Step::Cut,
                ]),
            }]);
            rest_turn(format!("fault {pick}")).await
        }
        // A turn over each WebSocket protocol, read to its end, then the socket closes.
        2 | 3 => {
            let (path, answer) = if pick % 6 == 2 {
                (format!("/ws/chat?session_id={session}"), "full_response")
            } else {
                (format!("/api/chat/stream?session_id={session}"), "reply")
            };
            let url = format!("{}{path}", base.replace("http://", "ws://"));
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let content = format!("ws {pick}");
            let message = json!({"type": "message", "content": content});
            futures_util::SinkExt::send(&mut ws, Message::Text(message.to_string().into()))
                .await
                .unwrap();
            loop {
                let Some(Ok(message)) = futures_util::StreamExt::next(&mut ws).await else {
                    panic!("{path}: the socket closed before the turn ended");
                };
                let Message::Text(text) = message else { continue };
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                // The turn's end: its answer, or a fault's typed error.
                match frame["type"].as_str() {
                    Some("done") => assert_eq!(frame[answer], echo(&content), "{path}: {frame}"),
                    Some("error") => assert_eq!(frame["code"], "PROVIDER_ERROR", "{path}: {frame}"),
                    _ => continue,
                }
                break Some(content);
            }
        }
        // An SSE watcher that replays the ring and leaves.
        4 => {
            let url = format!("{base}/api/sessions/{session}/events?after=0");
            if let Ok(mut response) = client.get(url).send().await {
                let _ = response.chunk().await;
            }
            None
        }
        // Reads, and a throwaway session created and deleted.
        _ => {
            let response = client.get(format!("{base}/api/sessions")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let body = json!({"content": "brief", "session_id": format!("tmp{pick}")});
            client.post(format!("{base}/api/chat")).json(&body).send().await.unwrap();
            let response =
                client.delete(format!("{base}/api/sessions/tmp{pick}")).send().await.unwrap();
            assert!(response.status().is_success(), "tmp{pick}: {}", response.status());
            None
        }
    }
}

/// Soak: mixed load over every protocol, provider faults included, for `PARLEY_SOAK_SECS`
/// (12 here; 600 for the long run), with small event rings and sessions evicted after a
/// second idle. No operation hangs, every turn ends with its own answer or a typed error,
/// and every message sent is stored, in order, in its session. Memory and open files
/// under this load are figures, not pass/fail: `parley-bench --only soak` measures them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_of_mixed_load_and_faults_loses_nothing_and_hangs_nothing() {
    let secs: u64 =
        std::env::var("PARLEY_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    provider.slow_echo(Duration::from_millis(2));
    let process = crate::durability::spawn_parley_with(
        dir.path(),
        &provider,
        5,
        &[
            // Small rings fill at once, so watchers that replay hit their ends.
            ("PARLEY_SESSIONS__EVENT_LOG_CAPACITY", "64"),
            ("PARLEY_SESSIONS__IDLE_EVICT_SECS", "1"),
            ("PARLEY_PROVIDER__MAX_RETRIES", "0"),
            ("PARLEY_LIMITS__TURNS_PER_MINUTE", "0"),
            ("PARLEY_LIMITS__REQUESTS_PER_MINUTE_PER_TOKEN", "0"),
            ("PARLEY_LIMITS__REQUESTS_PER_MINUTE_PER_IP", "0"),
        ],
    );
    let base = Arc::new(process.base.clone());
    let provider = Arc::new(provider);
    let client = crate::common::client();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let seed = Seed::new();
    let mut workers = Vec::new();
    for w in 0..6 {
        let (base, provider, client) = (base.clone(), provider.clone(), client.clone());
        let mut random = Random::new(seed.0 + w);
        workers.push(tokio::spawn(async move {
            let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut steps = 0u64;
            while tokio::time::Instant::now() < deadline {
                // Conversations of about 20 operations, as people have them: the history
                // sent to the model stays that size, the stored sessions pile up.
                let session = format!("soak{w}-{}", steps / 20);
                let pick = random.next(1 << 20);
                let step = soak_step(&base, &provider, &client, &session, pick);
                let stored = tokio::time::timeout(Duration::from_secs(30), step)
                    .await
                    .unwrap_or_else(|_| panic!("{session}: operation {pick} hung"));
                if let Some(content) = stored {
                    sent.entry(session).or_default().push(content);
                }
                steps += 1;
            }
            (steps, sent)
        }));
    }
    let mut steps = 0;
    let mut sent = BTreeMap::new();
    for worker in workers {
        let (worker_steps, worker_sent) = worker.await.unwrap();
        steps += worker_steps;
        sent.extend(worker_sent);
    }
    println!("{steps} operations in {secs}s over {} sessions", sent.len());
    assert!(steps > 20, "the load ran");
    let (_, status) = json_of(client.get(format!("{base}/api/status")).send().await.unwrap()).await;
    assert_eq!(status["active_turns"], 0, "no turn outlives its client: {status}");
    // Nothing lost: every message sent is stored in its session, in order, and every
    // answer has ended.
    for (session, contents) in &sent {
        let url = format!("{base}/api/sessions/{session}?limit=500");
        let (status, detail) = json_of(client.get(url).send().await.unwrap()).await;
        assert_eq!(status, 200, "{session} loads");
        let messages = detail["messages"].as_array().unwrap();
        let users: Vec<&str> = messages
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(users, *contents, "{session}: every message sent, once, in order");
        assert!(messages.iter().all(|m| m["status"] != "streaming"), "{session}: {detail}");
        assert_eq!(detail["state"], "idle", "{session}");
    }
    // Evicted sessions come back: the first one takes a new turn.
    let (session, _) = sent.first_key_value().unwrap();
    let body = json!({"content": "after the soak", "session_id": session});
    let response = client.post(format!("{base}/api/chat")).json(&body).send().await.unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!((status.as_u16(), &body["reply"]), (200, &json!(echo("after the soak"))));
}
