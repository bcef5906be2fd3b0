//! The ecosystem's own clients against the real server and the fake provider: the official
//! `openai` Python package (`tests/clients/python`, for `/v1/chat/completions`,
//! `/v1/models` and `/v1/responses`) and `@ag-ui/client` (`tests/clients/agui`, for
//! `/api/ag-ui`). `scripts/test` installs them, pinned, into folders git ignores.
//!
//! A missing client fails the test when clients are required (`CI=true`, or
//! `PARLEY_REQUIRE_CLIENTS=1`, which `scripts/test` sets), and otherwise skips with a
//! notice written straight to stderr (libtest would hide an `eprintln!` of a passing test).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{FakeProvider, TestServer, test_config};

fn required() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .is_ok_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "false"))
    };
    set("CI") || set("PARLEY_REQUIRE_CLIENTS")
}

/// Fails (when required) or skips loudly; returns whether the test should go on.
pub(crate) fn present(test: &str, path: &Path, install: &str) -> bool {
    if path.exists() {
        return true;
    }
    assert!(
        !required(),
        "the client is required (CI or PARLEY_REQUIRE_CLIENTS) but {} is missing; {install}",
        path.display()
    );
    let notice = format!(
        "\n=== SKIPPED clients::{test}: it counts as a pass but did NOT run ===\n  - no {}\n\
         {install}; CI=true or PARLEY_REQUIRE_CLIENTS=1 make this a failure.\n\n",
        path.display()
    );
    let _ = std::io::stderr().lock().write_all(notice.as_bytes());
    false
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a client's check script against `server`; fails with its output (or if it runs
/// for more than three minutes: a hung client must not hang the suite).
async fn run_checks(program: PathBuf, script: PathBuf, server: &TestServer, fake: &FakeProvider) {
    let child = tokio::process::Command::new(program)
        .arg(script)
        .env("PARLEY_URL", &server.base)
        .env("PARLEY_TOKEN", &server.token)
        .env("FAKE_URL", format!("http://{}", fake.addr))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the client starts");
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the client checks finish within three minutes")
        .expect("the client's output is readable");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "client checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("checks passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_ag_ui_client_works_against_ag_ui() {
    let modules = root().join("tests/clients/agui/node_modules/@ag-ui/client");
    let install = "`./scripts/test` installs it (or: `npm ci --prefix tests/clients/agui`)";
    if !present("the_official_ag_ui_client_works_against_ag_ui", &modules, install) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.tools.approval.insert("shell".into(), "ask".into());
    let server = TestServer::start(config).await;
    let script = root().join("tests/clients/agui/agui.mjs");
    run_checks("node".into(), script, &server, &provider).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_package_works_against_v1() {
    let python = root().join("tests/clients/python/.venv/bin/python");
    let install = "`./scripts/test` installs it (or: `python3 -m venv tests/clients/python/.venv` \
                   and `tests/clients/python/.venv/bin/pip install --require-hashes -r \
                   tests/clients/python/requirements.txt`)";
    if !present("the_official_openai_python_package_works_against_v1", &python, install) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    // One turn may wait behind the running one: the script checks the 429 past it.
    config.sessions.queue_depth = 1;
    let server = TestServer::start(config).await;
    let script = root().join("tests/clients/python/openai_clients.py");
    run_checks(python, script, &server, &provider).await;
}
