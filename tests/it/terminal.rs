//! `parley chat` in a pseudo-terminal, as a person uses it: answers stream, tool calls show,
//! approvals are asked at the prompt, Ctrl-C stops the answer, a dropped connection is
//! followed again, `--session` continues a conversation.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::proxy::proxy;
use crate::common::terminal::Terminal;
use crate::common::{FakeProvider, Script, TestServer, test_config, transcript};

/// `parley chat` against `url` with `token`, without colors (so the screen is plain text
/// and any escape sequence on it came from the server).
fn chat(url: &str, token: &str, args: &[&str]) -> Terminal {
    let mut all = vec!["chat", "--url", url];
    all.extend_from_slice(args);
    Terminal::spawn(&all, &[("PARLEY_TOKEN", token), ("NO_COLOR", "1")])
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test]
async fn answers_stream_tool_calls_show_and_approvals_are_asked_at_the_prompt() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(&provider));
    config.tools.approval.insert("shell".into(), "ask".into());
    let server = TestServer::start(config).await;
    let token = server.token_for("ann", false).await;
    let mut term = chat(&server.base, &token, &["--session", "t1"]);
    term.expect("session t1 (new)").await;
    term.expect("› ").await;

    provider.push([Script::slow_text(&["Hello ", "from ", "the ", "agent."], ms(30))]);
    term.type_line("hi");
    term.expect("Hello from the agent.").await;
    term.expect("› ").await;

    // A tool call that needs approval: asked at the prompt, approved, run, answered.
    provider.push([
        Script::tool_call("c1", "shell", json!({"command": "echo tool-ran"}), 2),
        Script::text(&["It printed tool-ran."]),
    ]);
    term.type_line("run it");
    term.expect("⚙ shell").await;
    term.expect("? allow shell").await;
    term.expect("[y]es / [n]o / [a]lways").await;
    term.type_line("maybe");
    term.expect("answer y, n or a").await;
    term.expect("? allow shell").await;
    term.type_line("y");
    term.expect("↳ shell").await;
    term.expect("tool-ran").await;
    term.expect("It printed tool-ran.").await;
    term.expect("› ").await;

    // Denied: the tool does not run, the model hears so and answers.
    provider.push([
        Script::tool_call("c2", "shell", json!({"command": "touch never-made"}), 1),
        Script::text(&["Fine, I will not."]),
    ]);
    term.type_line("try again");
    term.expect("? allow shell").await;
    term.type_line("n");
    term.expect("✗ shell").await;
    term.expect("Fine, I will not.").await;
    term.expect("› ").await;
    assert!(!dir.path().join("workspace/ann/never-made").exists());

    // Text from the server cannot drive the terminal.
    provider.push([Script::text(&["safe \u{1b}]0;pwned\u{7}\u{1b}[2J", " end."])]);
    term.type_line("hostile");
    term.expect("end.").await;
    term.expect("› ").await;
    assert!(!term.screen().contains('\u{1b}'), "{:?}", term.screen());

    term.type_line("/quit");
    term.expect("continue with: parley chat --session t1").await;
    assert!(term.exited().await.success());
    // The screen, to look at (as the browser test's screenshots are).
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("terminal.txt"), term.screen()).unwrap();

    // What the terminal showed is what the server keeps, as the user's own session.
    let client = crate::common::client_with(&token);
    let detail: Value =
        client.get(server.url("/api/sessions/t1")).send().await.unwrap().json().await.unwrap();
    let said = transcript(&detail);
    assert_eq!(said[0], ("user".into(), "hi".into()), "{said:?}");
    assert_eq!(said[1], ("assistant".into(), "Hello from the agent.".into()));
    let calls: Value = client
        .get(server.url("/api/sessions/t1/tool-calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let outcomes: Vec<(&str, bool)> = calls["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["is_error"].as_bool().unwrap_or(false)))
        .collect();
    assert_eq!(outcomes, [("c1", false), ("c2", true)], "{calls}");
}

#[tokio::test]
async fn ctrl_c_stops_the_answer_and_the_conversation_goes_on() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let mut term = chat(&server.base, &server.token, &["--session", "stop"]);
    term.expect("› ").await;

    // Far longer than the test takes: only the stop ends it.
    let words: Vec<String> = (0..300).map(|n| format!("w{n} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    provider.push([Script::slow_text(&words, ms(100))]);
    term.type_line("count");
    term.expect("w0 ").await;
    term.ctrl_c();
    term.expect("stopping").await;
    term.expect("[stopped]").await;
    term.expect("› ").await;

    // The server stopped the turn and kept what was said, marked interrupted.
    let detail = server.wait_idle("stop").await;
    let last = detail["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["status"], "interrupted", "{detail}");
    assert!(!last["content"].as_str().unwrap().contains("w299"), "{last}");
    assert!(!term.screen().contains("w299"), "{}", term.screen());

    provider.push([Script::text(&["Still here."])]);
    term.type_line("are you there?");
    term.expect("Still here.").await;
    term.expect("› ").await;

    // Ctrl-C with nothing running leaves, naming the session to come back to.
    term.ctrl_c();
    term.expect("continue with: parley chat --session stop").await;
    assert!(term.exited().await.success());
}

#[tokio::test]
async fn a_dropped_connection_is_followed_again_with_nothing_missed_or_repeated() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::with_provider(dir.path(), &provider).await;
    let upstream: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let (addr, cut) = proxy("127.0.0.1:0".parse().unwrap(), upstream).await;
    let mut term = chat(&format!("http://{addr}"), &server.token, &["--session", "drop"]);
    term.expect("› ").await;

    let words: Vec<String> = (0..40).map(|n| format!("word{n}. ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    provider.push([Script::slow_text(&words, ms(75))]);
    term.type_line("go");
    term.expect("word0.").await;
    cut.cancel();
    term.expect("reconnecting").await;
    // The turn goes on without its watcher and ends while the connection is down.
    server.wait_idle("drop").await;
    let (_, restored) = proxy(addr, upstream).await;
    term.expect("reconnected").await;
    term.shows("word39.").await;
    term.expect("› ").await;

    // Every word once, in order, whether it came before the cut or after.
    let screen = term.screen();
    let mut from = 0;
    for word in words {
        let word = word.trim();
        assert_eq!(screen.matches(word).count(), 1, "{word} once:\n{screen}");
        let at = screen[from..].find(word).unwrap_or_else(|| panic!("{word} in order:\n{screen}"));
        from += at + word.len();
    }
    term.type_line("/quit");
    assert!(term.exited().await.success());
    restored.cancel();
}

#[tokio::test]
async fn session_continues_a_conversation_and_joins_its_running_answer() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::with_provider(dir.path(), &provider).await;
    provider.push([Script::text(&["First answer."])]);
    server.chat("c1", "first question").await;
    // A second turn, started elsewhere, is half written when the terminal joins; the rest
    // comes once the test opens the gate.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    provider.push([Script::gated_text(&["slow ", "and "], gate.clone(), &["steady."])]);
    let (status, _) =
        server.post("/api/sessions/c1/messages", json!({"content": "second question"})).await;
    assert_eq!(status, 202);
    server.wait_for("c1", |s| s["messages"].as_array().unwrap().len() > 3).await;

    let mut term = chat(&server.base, &server.token, &["--session", "c1"]);
    term.expect("session c1 (continued)").await;
    term.expect("› first question").await;
    term.expect("First answer.").await;
    term.expect("› second question").await;
    term.expect("slow and ").await;
    gate.notify_one();
    term.expect("steady.").await;
    term.expect("› ").await;
    // The answer under way shows from its start, once.
    let screen = term.screen();
    assert_eq!(screen.matches("second question").count(), 1, "{screen}");
    assert_eq!(screen.matches("slow").count(), 1, "{screen}");

    provider.push([Script::text(&["Third answer."])]);
    term.type_line("third question");
    term.expect("Third answer.").await;
    term.ctrl_d();
    assert!(term.exited().await.success());
    let detail = server.wait_idle("c1").await;
    let said: Vec<String> = transcript(&detail).into_iter().map(|(_, text)| text).collect();
    assert_eq!(
        said,
        [
            "first question",
            "First answer.",
            "second question",
            "slow and steady.",
            "third question",
            "Third answer."
        ],
        "{detail}"
    );
}

#[tokio::test]
async fn a_refused_token_or_an_absent_server_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(test_config(dir.path(), None)).await;
    // The server runs on this test's thread: the command is waited for without blocking it.
    let run = async |url: &str, token: &str| {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["chat", "--url", url])
            .env("PARLEY_TOKEN", token)
            .env("RUST_BACKTRACE", "0")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (ok, err) = run(&server.base, "pk_not-a-token").await;
    assert!(!ok);
    assert!(err.contains("refused the token") && err.contains("PARLEY_TOKEN"), "{err}");
    assert!(!err.contains("pk_not-a-token"), "the token is not repeated: {err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (ok, err) = run(&format!("http://{closed}"), &server.token).await;
    assert!(!ok);
    assert!(err.contains("cannot reach"), "{err}");
    let (ok, err) = run("ftp://example.com", &server.token).await;
    assert!(!ok && err.contains("http:// or https://"), "{err}");
}

#[tokio::test]
async fn piped_input_is_a_script_whose_next_line_answers_an_approval() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(&provider));
    config.tools.approval.insert("shell".into(), "ask".into());
    let server = TestServer::start(config).await;
    provider.push([
        Script::tool_call("p1", "shell", json!({"command": "echo piped-ok"}), 1),
        Script::text(&["Ran it."]),
        Script::tool_call("p2", "shell", json!({"command": "touch not-made"}), 1),
        Script::text(&["Skipped."]),
        Script::text(&["Fine."]),
    ]);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["chat", "--url", &server.base, "--session", "script"])
        .env("PARLEY_TOKEN", &server.token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The second question gets a line that is no answer: it is denied, and the line is the
    // next message.
    let script = b"run it\ny\nand then?\nnever mind\n";
    tokio::io::AsyncWriteExt::write_all(&mut stdin, script).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("parley chat ends with its script")
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}");
    // The transcript shows each message, the question, the tool's output and both answers,
    // in order; the second message waited for the first answer.
    let mut from = 0;
    let steps = [
        "› run it",
        "? allow shell",
        "piped-ok",
        "Ran it.",
        "› and then?",
        "? allow shell",
        "no answer given: denied",
        "› never mind",
        "Skipped.",
        "Fine.",
    ];
    for step in steps {
        let at = out[from..].find(step).unwrap_or_else(|| panic!("{step:?} in order:\n{out}"));
        from += at + step.len();
    }
    assert!(!out.contains('\u{1b}'), "no colors into a pipe: {out:?}");
    let detail = server.wait_idle("script").await;
    let said: Vec<String> = transcript(&detail).into_iter().map(|(_, text)| text).collect();
    assert_eq!(said.first().map(String::as_str), Some("run it"), "{detail}");
    assert_eq!(said.last().map(String::as_str), Some("Fine."), "{detail}");
    assert!(!dir.path().join("workspace/default/not-made").exists());
}

#[tokio::test]
async fn a_server_restarted_mid_answer_is_caught_up_from_the_history() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), Some(&provider));
    config.shutdown_grace_secs = 0;
    let first = TestServer::start(config.clone()).await;
    let token = first.token.clone();
    let upstream: SocketAddr = first.base.trim_start_matches("http://").parse().unwrap();
    let (addr, cut) = proxy("127.0.0.1:0".parse().unwrap(), upstream).await;
    let mut term = chat(&format!("http://{addr}"), &token, &["--session", "restart"]);
    term.expect("› ").await;

    let words: Vec<String> = (0..300).map(|n| format!("w{n} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    provider.push([Script::slow_text(&words, ms(100))]);
    term.type_line("go");
    term.expect("w1 ").await;
    // The server goes away mid-answer and another starts on the same data: the answer is
    // stored interrupted, and the new server's event log knows nothing of the old one's.
    cut.cancel();
    first.stop().await;
    let second = TestServer::start(config).await;
    let upstream: SocketAddr = second.base.trim_start_matches("http://").parse().unwrap();
    let (_, restored) = proxy(addr, upstream).await;
    term.expect("reconnected").await;
    term.expect("missed some events").await;
    term.expect("[stopped]").await;
    term.expect("› ").await;

    // The terminal knows nothing runs: the conversation goes on with the new server.
    provider.push([Script::text(&["After the restart."])]);
    term.type_line("still there?");
    term.expect("After the restart.").await;
    term.expect("› ").await;
    term.type_line("/quit");
    assert!(term.exited().await.success());
    restored.cancel();
}
