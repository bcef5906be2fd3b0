//! MCP tools against the reference server `@modelcontextprotocol/server-everything`
//! (`tests/clients/mcp`, installed by `scripts/test` from its lock file), over stdio and
//! over streamable HTTP: tools listed to the model by their names, calls round-tripping,
//! approvals, schema checks, progress, cancel, a server killed and restarted while another
//! keeps working, per-user processes with their own roots, and `parley mcp list`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley::config::{Config, McpServerConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::live::WsClient;
use crate::common::{FakeProvider, Script, TestServer, parley_command, test_config};

/// The reference server's entry point, if installed (else the test fails under CI and skips
/// loudly elsewhere).
fn everything(test: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let modules =
        root.join("tests/clients/mcp/node_modules/@modelcontextprotocol/server-everything");
    let install = "`./scripts/test` installs it (or: `npm ci --prefix tests/clients/mcp`)";
    crate::clients::present(test, &modules, install).then(|| modules.join("dist/index.js"))
}

/// A stdio server that records what it receives in `<dir>/<name>.log` and its process
/// group in `<dir>/<name>.pid` (rewritten on each start).
fn recorded_stdio(index: &Path, dir: &Path, name: &str) -> McpServerConfig {
    let log = dir.join(format!("{name}.log"));
    let pid = dir.join(format!("{name}.pid"));
    let script = format!(
        "echo $$ > '{}'; tee -a '{}' | node '{}' stdio",
        pid.display(),
        log.display(),
        index.display()
    );
    McpServerConfig {
        command: Some("sh".into()),
        args: vec!["-c".into(), script],
        ..McpServerConfig::default()
    }
}

fn plain_stdio(index: &Path) -> McpServerConfig {
    McpServerConfig {
        command: Some("node".into()),
        args: vec![index.display().to_string(), "stdio".into()],
        ..McpServerConfig::default()
    }
}

fn config_with(dir: &Path, provider: &FakeProvider, servers: &[(&str, McpServerConfig)]) -> Config {
    let mut config = test_config(dir, Some(provider));
    for (name, server) in servers {
        config.mcp.servers.insert((*name).into(), server.clone());
    }
    config.mcp.start_timeout_secs = 20.0;
    config.mcp.max_restart_backoff_secs = 1.0;
    config
}

/// Waits until `/api/status` shows `server` in `state` (and `check` holds for its entry).
async fn wait_for_server(
    server: &TestServer,
    name: &str,
    state: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = server.get("/api/status").await;
        let entry = status["components"]["mcp"][name].clone();
        if entry["state"] == state && check(&entry) {
            return entry;
        }
        assert!(Instant::now() < deadline, "{name} never reached {state}: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tool_names(request: &Value) -> Vec<String> {
    let tools = request["tools"].as_array().cloned().unwrap_or_default();
    tools.iter().map(|t| t["function"]["name"].as_str().unwrap_or_default().to_owned()).collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_tools_reach_the_model_round_trip_ask_and_check_their_arguments() {
    let Some(index) =
        everything("stdio_tools_reach_the_model_round_trip_ask_and_check_their_arguments")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut every = recorded_stdio(&index, dir.path(), "every");
    every.env.insert("FROM_CONFIG".into(), "yes".into());
    let config = config_with(dir.path(), &provider, &[("every", every)]);
    let server = TestServer::start(config).await;
    let entry = wait_for_server(&server, "every", "running", |_| true).await;
    assert!(entry["tools"].as_array().unwrap().contains(&json!("every__get-sum")), "{entry}");
    let (_, ready) = server.get("/health/ready").await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["components"]["mcp"]["every"]["status"], "ok");

    // A call round-trips into the answer and the timeline.
    provider.push([
        Script::tool_call("c1", "every__get-sum", json!({"a": 2, "b": 3}), 3),
        Script::text(&["It is 5."]),
    ]);
    let (status, body) = server.chat("m1", "add 2 and 3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"], "It is 5.");
    assert_eq!(body["tool_calls"][0]["output"], "The sum of 2 and 3 is 5.");
    let first = &provider.requests()[0];
    let names = tool_names(first);
    for name in ["every__get-sum", "every__echo", "every__trigger-long-running-operation", "shell"]
    {
        assert!(names.contains(&name.to_owned()), "{name} not in {names:?}");
    }
    let sum = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "every__get-sum")
        .unwrap();
    assert_eq!(sum["function"]["description"], "Returns the sum of two numbers");
    assert_eq!(sum["function"]["parameters"]["properties"]["a"]["type"], "number", "{sum}");
    let second = &provider.requests()[1];
    let last = second["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"], "The sum of 2 and 3 is 5.");
    let (_, timeline) = server.get("/api/sessions/m1/tool-calls").await;
    assert_eq!(timeline["items"][0]["name"], "every__get-sum");
    assert_eq!(timeline["items"][0]["status"], "done");

    // Images, resource links and structured content become text the model can read; the
    // server's environment holds what the configuration gives it, not Parley's own.
    provider.push([
        Script::tool_call("i1", "every__get-tiny-image", json!({}), 1),
        Script::tool_call("i2", "every__get-resource-links", json!({"count": 2}), 1),
        Script::tool_call(
            "i3",
            "every__get-structured-content",
            json!({"location": "New York"}),
            1,
        ),
        Script::tool_call("i4", "every__get-env", json!({}), 1),
        Script::text(&["Seen."]),
    ]);
    let (_, body) = server.chat("m3", "show me").await;
    let outputs: Vec<&str> = body["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["output"].as_str().unwrap())
        .collect();
    assert!(outputs[0].contains("[image: image/png, ~"), "{}", outputs[0]);
    assert_eq!(outputs[1].matches("[resource link: ").count(), 2, "{}", outputs[1]);
    assert!(outputs[2].contains("temperature"), "{}", outputs[2]);
    let env: serde_json::Map<String, Value> = serde_json::from_str(outputs[3]).unwrap();
    assert_eq!(env["FROM_CONFIG"], "yes");
    let allowed =
        ["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "FROM_CONFIG", "PWD"];
    for key in env.keys() {
        assert!(allowed.contains(&key.as_str()), "Parley's environment leaked: {key}");
    }

    // Non-admins see the state, not the details.
    let user = crate::common::client_with(&server.token_for("carol", false).await);
    let status: Value =
        user.get(server.url("/api/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["components"]["mcp"]["every"]["state"], "running");
    assert!(status["components"]["mcp"]["every"]["tools"].is_null(), "{status}");

    // An argument that does not fit the schema is refused before the call.
    let calls = |log: &str| log.matches("\"tools/call\"").count();
    let before = calls(&read(&dir.path().join("every.log")));
    provider.push([
        Script::tool_call("c2", "every__get-sum", json!({"a": "two", "b": 3}), 1),
        Script::text(&["Sorry."]),
    ]);
    let (_, body) = server.chat("m1", "add two and 3").await;
    let refused = &body["tool_calls"][0];
    assert_eq!(refused["is_error"], true, "{refused}");
    let output = refused["output"].as_str().unwrap();
    assert!(output.contains("invalid arguments") && output.contains("/a"), "{output}");
    let log = read(&dir.path().join("every.log"));
    assert_eq!(calls(&log), before, "the invalid call never reached the server: {log}");

    // A tool the server does not mark read-only asks by default: denied, the server never
    // gets it; approved, it runs.
    let toggle = "every__toggle-simulated-logging";
    provider.push([
        Script::tool_call("c3", toggle, json!({}), 1),
        Script::tool_call("c4", toggle, json!({}), 1),
        Script::text(&["Toggled."]),
    ]);
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=m2").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "toggle"})).await;
    let request = ws.next_of("approval_request").await;
    assert_eq!(request["tool"], toggle);
    ws.send(json!({"type": "approval_response", "request_id": request["request_id"], "decision": "deny"})).await;
    let result = ws.next_of("tool_result").await;
    assert_eq!(result["is_error"], true);
    assert!(!read(&dir.path().join("every.log")).contains("toggle-simulated-logging\""));
    let request = ws.next_of("approval_request").await;
    ws.send(json!({"type": "approval_response", "request_id": request["request_id"], "decision": "approve"})).await;
    let result = ws.next_of("tool_result").await;
    assert_eq!(result["is_error"], false, "{result}");
    assert!(read(&dir.path().join("every.log")).contains("toggle-simulated-logging\""));
    assert_eq!(ws.next_of("done").await["full_response"], "Toggled.");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_cancel_reaches_the_server_and_a_killed_server_is_restarted_while_another_works() {
    let Some(index) = everything(
        "stdio_cancel_reaches_the_server_and_a_killed_server_is_restarted_while_another_works",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let servers =
        [("every", recorded_stdio(&index, dir.path(), "every")), ("other", plain_stdio(&index))];
    let server = TestServer::start(config_with(dir.path(), &provider, &servers)).await;
    wait_for_server(&server, "every", "running", |_| true).await;
    wait_for_server(&server, "other", "running", |_| true).await;

    // A long operation reports progress to watchers; Stop ends the turn at once and the
    // server is told.
    let long = json!({"duration": 60, "steps": 60});
    provider.push([Script::tool_call(
        "l1",
        "every__trigger-long-running-operation",
        long.clone(),
        1,
    )]);
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=k1").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "work"})).await;
    loop {
        let frame = ws.next_of("operator_status").await;
        if frame["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("every__trigger-long-running-operation: 1/60"))
        {
            break;
        }
    }
    let asked = Instant::now();
    ws.send(json!({"type": "cancel"})).await;
    let result = ws.next_of("tool_result").await;
    assert_eq!(result["is_error"], true);
    ws.next_of("cancelled").await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "cancel took {:?} (the call had ~58 s left)",
        asked.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(&dir.path().join("every.log")).contains("notifications/cancelled") {
        assert!(Instant::now() < deadline, "the server never got notifications/cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Killed mid-call: the model gets a tool error, the turn ends, the server comes back.
    provider.push([
        Script::tool_call("l2", "every__trigger-long-running-operation", long, 1),
        Script::text(&["It broke."]),
    ]);
    ws.send(json!({"type": "message", "content": "work again"})).await;
    ws.next_of("tool_call").await;
    // Once the call is surely in flight (its progress arrives)...
    loop {
        let frame = ws.next_of("operator_status").await;
        if frame["detail"].as_str().is_some_and(|d| d.contains("operation: 1/60")) {
            break;
        }
    }
    // ... the whole server goes: the wrapper, the recorder and node.
    let old_pid = read(&dir.path().join("every.pid")).trim().to_owned();
    assert!(!old_pid.is_empty());
    let group = format!("-{old_pid}");
    let killed = std::process::Command::new("kill").args(["-9", "--", &group]).status().unwrap();
    assert!(killed.success());
    let result = ws.next_of("tool_result").await;
    assert_eq!(result["is_error"], true);
    assert!(result["output"].as_str().unwrap().contains("stopped"), "{result}");
    assert_eq!(ws.next_of("done").await["full_response"], "It broke.");

    // The other server answers while `every` is down or restarting.
    provider.push([
        Script::tool_call("o1", "other__echo", json!({"message": "still here"}), 1),
        Script::text(&["ok"]),
    ]);
    let (_, body) = server.chat("k2", "other").await;
    assert_eq!(body["tool_calls"][0]["output"], "Echo: still here", "{body}");

    let entry =
        wait_for_server(&server, "every", "running", |e| e["restarts"].as_u64() >= Some(1)).await;
    assert!(entry["tools"].as_array().unwrap().len() > 5, "{entry}");
    assert_ne!(read(&dir.path().join("every.pid")).trim(), old_pid, "a new process");
    provider.push([
        Script::tool_call("s1", "every__get-sum", json!({"a": 1, "b": 1}), 1),
        Script::text(&["2"]),
    ]);
    let (_, body) = server.chat("k3", "sum").await;
    assert_eq!(body["tool_calls"][0]["output"], "The sum of 1 and 1 is 2.", "{body}");

    // Shutdown stops the child processes, and theirs.
    let group: i64 = read(&dir.path().join("every.pid")).trim().parse().unwrap();
    assert!(group_alive(group));
    server.stop().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_alive(group) {
        assert!(Instant::now() < deadline, "processes of group {group} outlived the gateway");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a live (not zombie) process of the process group `group` exists.
fn group_alive(group: i64) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|entry| {
        let stat = read(&entry.path().join("stat"));
        // After the `(comm)`: state, ppid, pgrp.
        let Some((_, rest)) = stat.rsplit_once(") ") else { return false };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2].parse() == Ok(group)
    })
}

/// A TCP relay in front of `target` that records what clients send (plain HTTP/1.1, so the
/// JSON-RPC bodies are readable in it).
async fn recording_relay(target: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut in_read, mut in_write) = inbound.split();
                let (mut out_read, mut out_write) = outbound.split();
                let upstream = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match in_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if out_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = out_write.shutdown().await;
                };
                let downstream = tokio::io::copy(&mut out_read, &mut in_write);
                let _ = tokio::join!(upstream, downstream);
            });
        }
    });
    (format!("http://{addr}/mcp"), seen)
}

/// The reference server over streamable HTTP on `port`, once it accepts connections.
async fn http_everything(index: &Path, port: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new("node")
        .arg(index)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "the HTTP MCP server never listened on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_tools_round_trip_cancel_and_survive_a_server_restart() {
    let Some(index) =
        everything("streamable_http_tools_round_trip_cancel_and_survive_a_server_restart")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let port = free_port();
    let mut remote = http_everything(&index, port).await;
    let (url, seen) = recording_relay(format!("127.0.0.1:{port}")).await;
    let http = McpServerConfig {
        url: Some(url),
        headers: [("X-Api-Key".to_owned(), "hdr-secret".to_owned())].into(),
        ..McpServerConfig::default()
    };
    // The same server again, with a short time-out for its calls.
    let hasty = McpServerConfig { call_timeout_secs: Some(1.0), ..http.clone() };
    let servers = [("web", http), ("hasty", hasty)];
    let mut config = config_with(dir.path(), &provider, &servers);
    config.tools.max_output_bytes = 400;
    let server = TestServer::start(config).await;
    wait_for_server(&server, "web", "running", |_| true).await;
    wait_for_server(&server, "hasty", "running", |_| true).await;
    assert!(
        String::from_utf8_lossy(&seen.lock().unwrap())
            .to_ascii_lowercase()
            .contains("x-api-key: hdr-secret")
    );

    provider.push([
        Script::tool_call("h1", "web__get-sum", json!({"a": 40, "b": 2}), 2),
        Script::text(&["42"]),
    ]);
    let (_, body) = server.chat("h", "sum").await;
    assert_eq!(body["tool_calls"][0]["output"], "The sum of 40 and 2 is 42.", "{body}");
    assert!(tool_names(&provider.requests()[0]).contains(&"web__get-sum".to_owned()));

    // Output is capped like every tool's.
    provider.push([Script::tool_call("e1", "web__get-env", json!({}), 1), Script::text(&["long"])]);
    let (_, body) = server.chat("e", "env").await;
    let output = body["tool_calls"][0]["output"].as_str().unwrap();
    assert!(output.len() < 500 && output.contains("[output truncated"), "{output}");

    // A call past the server's time-out is a tool error, and the server is told to stop.
    provider.push([
        Script::tool_call(
            "t1",
            "hasty__trigger-long-running-operation",
            json!({"duration": 30, "steps": 3}),
            1,
        ),
        Script::text(&["too slow"]),
    ]);
    let (_, body) = server.chat("t", "slow").await;
    assert_eq!(body["tool_calls"][0]["is_error"], true, "{body}");
    assert!(body["tool_calls"][0]["output"].as_str().unwrap().contains("timed out"), "{body}");
    assert!(String::from_utf8_lossy(&seen.lock().unwrap()).contains("notifications/cancelled"));
    seen.lock().unwrap().clear();

    // Stop during a long call ends the turn and the server is sent the cancellation.
    provider.push([Script::tool_call(
        "h2",
        "web__trigger-long-running-operation",
        json!({"duration": 60, "steps": 60}),
        1,
    )]);
    let mut ws = WsClient::connect(&server, "/ws/chat?session_id=h").await;
    ws.next().await;
    ws.send(json!({"type": "message", "content": "long"})).await;
    ws.next_of("tool_call").await;
    loop {
        let frame = ws.next_of("operator_status").await;
        if frame["detail"].as_str().is_some_and(|d| d.contains("1/60")) {
            break;
        }
    }
    ws.send(json!({"type": "cancel"})).await;
    ws.next_of("cancelled").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&seen.lock().unwrap()).contains("notifications/cancelled") {
        assert!(Instant::now() < deadline, "the HTTP server never got notifications/cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The server goes away: a call is a tool error, and health says degraded, not down.
    remote.kill().await.unwrap();
    provider.push([
        Script::tool_call("h3", "web__get-sum", json!({"a": 1, "b": 2}), 1),
        Script::text(&["down"]),
    ]);
    let (status, body) = server.chat("h", "sum again").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tool_calls"][0]["is_error"], true, "{body}");
    wait_for_server(&server, "web", "restarting", |_| true).await;
    let (status, ready) = server.get("/health/ready").await;
    assert_eq!((status.as_u16(), ready["status"].as_str()), (200, Some("degraded")), "{ready}");
    // Anyone may read readiness: it names the state, never the why.
    let public = ready["components"]["mcp"]["web"].as_object().unwrap();
    let keys: Vec<&str> = public.keys().map(String::as_str).collect();
    assert_eq!(keys, ["state", "status"], "{ready}");
    let (_, admin) = server.get("/api/status").await;
    assert_eq!(admin["status"], "degraded", "{admin}");
    assert!(admin["components"]["mcp"]["web"]["error"].is_string(), "{admin}");

    // Back on the same port, the gateway reconnects and the tools work again.
    let _remote = http_everything(&index, port).await;
    wait_for_server(&server, "web", "running", |_| true).await;
    provider.push([
        Script::tool_call("h4", "web__get-sum", json!({"a": 1, "b": 2}), 1),
        Script::text(&["3"]),
    ]);
    let (_, body) = server.chat("h", "sum once more").await;
    assert_eq!(body["tool_calls"][0]["output"], "The sum of 1 and 2 is 3.", "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_servers_run_one_process_per_user_rooted_in_their_workspace() {
    let Some(index) =
        everything("per_user_servers_run_one_process_per_user_rooted_in_their_workspace")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let own = McpServerConfig { per_user: true, ..plain_stdio(&index) };
    let mut config = config_with(dir.path(), &provider, &[("mine", own)]);
    config.mcp.idle_secs = 8.0;
    let server = TestServer::start(config).await;
    let entry = wait_for_server(&server, "mine", "running", |_| true).await;
    assert_eq!(entry["user_processes"], 0, "{entry}");

    let roots_of = |user: &'static str| {
        let server = &server;
        let provider = &provider;
        async move {
            provider.push([
                Script::tool_call("r", "mine__get-roots-list", json!({}), 1),
                Script::text(&["listed"]),
            ]);
            let token = server.token_for(user, false).await;
            let client = crate::common::client_with(&token);
            let response = client
                .post(server.url("/api/chat"))
                .json(&json!({"content": "roots?", "session_id": "r"}))
                .send()
                .await
                .unwrap();
            let body: Value = response.json().await.unwrap();
            body["tool_calls"][0]["output"].as_str().unwrap_or_default().to_owned()
        }
    };
    let alice = roots_of("alice").await;
    let alice_root = dir.path().join("workspace/alice").canonicalize().unwrap();
    assert!(alice.contains(&format!("file://{}", alice_root.display())), "{alice}");
    let bob = roots_of("bob").await;
    let bob_root = dir.path().join("workspace/bob").canonicalize().unwrap();
    assert!(bob.contains(&format!("file://{}", bob_root.display())), "{bob}");
    assert!(!bob.contains("alice"), "{bob}");

    let (_, status) = server.get("/api/status").await;
    assert_eq!(status["components"]["mcp"]["mine"]["user_processes"], 2, "{status}");

    // Idle processes stop.
    wait_for_server(&server, "mine", "running", |e| e["user_processes"] == 0).await;
    server.stop().await;
}

#[test]
fn mcp_list_prints_each_server_its_state_and_its_tools() {
    let Some(index) = everything("mcp_list_prints_each_server_its_state_and_its_tools") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[mcp.servers.every]\ncommand = \"node\"\nargs = [\"{}\", \"stdio\"]\nenv = {{ TOKEN = \"env-secret\" }}\n\n\
         [mcp.servers.gone]\ncommand = \"/nonexistent/server\"\n\n[mcp]\nstart_timeout_secs = 20\n",
        index.display()
    );
    std::fs::write(dir.path().join("parley.toml"), toml).unwrap();
    let parley = parley_command(dir.path());
    let output = parley(&["mcp", "list"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "a server that cannot start fails the command");
    assert!(stdout.contains("every\tstdio\trunning\t"), "{stdout}");
    assert!(stdout.contains("  every__get-sum\tauto\tReturns the sum of two numbers"), "{stdout}");
    assert!(stdout.contains("  every__toggle-simulated-logging\task\t"), "{stdout}");
    assert!(stdout.contains("gone\tstdio\trestarting ("), "{stdout}");
    let config = parley(&["config"]);
    let printed = String::from_utf8_lossy(&config.stdout);
    assert!(printed.contains("TOKEN = \"***\"") && !printed.contains("env-secret"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tool_list_is_followed_and_a_misbehaving_server_is_contained() {
    let test = "a_changed_tool_list_is_followed_and_a_misbehaving_server_is_contained";
    let Some(_) = everything(test) else { return };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mcp/changing.mjs");
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let changing = McpServerConfig {
        command: Some("node".into()),
        args: vec![script.display().to_string()],
        ..McpServerConfig::default()
    };
    let mut config = config_with(dir.path(), &provider, &[("chg", changing)]);
    config.tools.max_output_bytes = 1000;
    config.tools.approval.insert("chg__grow".into(), "auto".into());
    config.tools.approval.insert("chg__grown-1".into(), "auto".into());
    config.tools.approval.insert("chg__noisy".into(), "auto".into());
    config.tools.approval.insert("chg__flood".into(), "auto".into());
    let server = TestServer::start(config).await;
    let entry = wait_for_server(&server, "chg", "running", |_| true).await;
    assert!(!entry["tools"].as_array().unwrap().contains(&json!("chg__grown-1")));

    // The server adds a tool and says so; the registry follows, and the next turn has it.
    provider.push([Script::tool_call("g", "chg__grow", json!({}), 1), Script::text(&["grew"])]);
    let (_, body) = server.chat("c", "grow").await;
    assert_eq!(body["tool_calls"][0]["output"], "added grown-1", "{body}");
    wait_for_server(&server, "chg", "running", |e| {
        e["tools"].as_array().is_some_and(|tools| tools.contains(&json!("chg__grown-1")))
    })
    .await;
    provider.push([Script::tool_call("n", "chg__grown-1", json!({}), 1), Script::text(&["ran"])]);
    let (_, body) = server.chat("c", "use it").await;
    assert_eq!(body["tool_calls"][0]["output"], "grown 1 ran", "{body}");
    assert!(tool_names(provider.requests().last().unwrap()).contains(&"chg__grown-1".to_owned()));

    // Junk on stderr does not kill it; an error result is capped like any output.
    provider.push([
        Script::tool_call("j1", "chg__noisy", json!({}), 1),
        Script::tool_call("j2", "chg__noisy", json!({}), 1),
        Script::tool_call("f", "chg__flood", json!({}), 1),
        Script::text(&["contained"]),
    ]);
    let (_, body) = server.chat("c", "misbehave").await;
    let calls = body["tool_calls"].as_array().unwrap();
    assert_eq!(calls[0]["output"], "still here", "{body}");
    assert_eq!(calls[1]["output"], "still here", "{body}");
    let flood = calls[2]["output"].as_str().unwrap();
    assert_eq!(calls[2]["is_error"], true);
    assert!(flood.len() < 1200 && flood.contains("[output truncated"), "{} bytes", flood.len());
    let entry = wait_for_server(&server, "chg", "running", |_| true).await;
    assert_eq!(entry["restarts"], 0, "{entry}");
    server.stop().await;
}
