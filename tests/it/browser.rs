//! The web chat in headless Chromium: `tests/browser/ui.mjs` (playwright-core) against the
//! real server and the fake provider. Needs Node, Chromium (`CHROMIUM` names it, otherwise
//! `/usr/bin/chromium`) and `npm ci --prefix tests/browser`; `scripts/test` installs them.
//!
//! Without them the test fails when the browser is required (`CI=true`, or
//! `PARLEY_REQUIRE_BROWSER=1`, which `scripts/test` sets), and otherwise skips with a
//! notice written straight to the process's stderr: libtest captures the `print!` family
//! of a passing test, so an `eprintln!` notice would never be seen.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{FakeProvider, TestServer, test_config};

/// The Chromium to drive: `CHROMIUM` alone when it is set (so a wrong path is reported,
/// not papered over by the distribution's copy), otherwise the distribution's.
fn chromium() -> Result<String, String> {
    if let Ok(path) = std::env::var("CHROMIUM")
        && !path.is_empty()
    {
        return if Path::new(&path).exists() {
            Ok(path)
        } else {
            Err(format!("Chromium: CHROMIUM={path} does not exist"))
        };
    }
    let candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];
    candidates.into_iter().find(|path| Path::new(path).exists()).map(str::to_owned).ok_or_else(
        || format!("Chromium: none of {} (set CHROMIUM to use another)", candidates.join(", ")),
    )
}

/// A chat of 1 000 turns (2 000 messages) for the test user, written straight to the store:
/// a thousand turns through the API would take most of the test's time.
async fn long_chat(server: &TestServer) {
    use parley::conversation::{Role, Usage};
    use parley::store::{AnswerWrite, NewMessage, TurnEnd, TurnStatus};
    let store = &server.store;
    let (session, _) = store.open_session("default", "long", Some("Long chat")).await.unwrap();
    let lease = store.acquire_lease(session.pk, "browser-test", i64::MAX, false).await.unwrap();
    let fence = lease.expect("nobody holds the new session").fence;
    for i in 0..1000_i64 {
        let (seq, turn) = (2 * i + 1, format!("long-{i}"));
        let asked = NewMessage::text(seq, seq, &turn, Role::User, format!("message {i}"));
        store.create_turn(fence, &turn, "fake-a", &asked, false).await.unwrap();
        let answer =
            NewMessage::text(seq + 1, seq, &turn, Role::Assistant, format!("echo: message {i}"));
        let end = TurnEnd {
            status: TurnStatus::Done,
            error_code: None,
            error_message: None,
            model: Some("fake-a".into()),
            usage: Usage::default(),
            duration_ms: 1,
            answer: Some(AnswerWrite::Insert(answer)),
            ledger: None,
            idle: true,
        };
        store.finish_turn(fence, &turn, &end).await.unwrap();
    }
    store.release_lease(fence).await.unwrap();
}

/// Whether a missing browser fails the test instead of skipping it.
fn browser_required() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .is_ok_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "false"))
    };
    set("CI") || set("PARLEY_REQUIRE_BROWSER")
}

/// What the test needs: Chromium, Node, playwright-core and axe-core, or every piece that is
/// missing.
fn browser() -> Result<String, Vec<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    let chromium = chromium().inspect_err(|m| missing.push(m.clone())).ok();
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("Node: `node --version` does not run".into());
    }
    for module in ["playwright-core", "axe-core"] {
        let path: PathBuf = root.join("tests/browser/node_modules").join(module);
        if !path.exists() {
            missing.push(format!("{module}: no {}", path.display()));
        }
    }
    match chromium {
        Some(chromium) if missing.is_empty() => Ok(chromium),
        _ => Err(missing),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_chat_works_in_a_real_browser() {
    let chromium = match browser() {
        Ok(chromium) => chromium,
        Err(missing) => {
            let missing = missing.join("\n  - ");
            let install = "`./scripts/test` installs them (or: `apt-get install chromium` and \
                           `npm ci --prefix tests/browser`)";
            assert!(
                !browser_required(),
                "the browser is required (CI or PARLEY_REQUIRE_BROWSER) but missing:\n  - \
                 {missing}\n{install}"
            );
            let notice = format!(
                "\n=== SKIPPED browser::the_web_chat_works_in_a_real_browser: it counts as a \
                 pass but did NOT run ===\n  - {missing}\n{install}; CI=true or \
                 PARLEY_REQUIRE_BROWSER=1 make this a failure.\n\n"
            );
            // Past libtest's capture, which would hide an `eprintln!` of a passing test.
            let _ = std::io::stderr().lock().write_all(notice.as_bytes());
            return;
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.tools.approval.insert("shell".into(), "ask".into());
    // Two models, the second priced: the picker offers both.
    config.provider.models = vec!["fake-a".into(), "fake-b".into()];
    let price = parley::config::ModelConfig {
        input_price: Some(1.0),
        output_price: Some(2.0),
        ..Default::default()
    };
    config.models.insert("fake-b".into(), price);
    let server = TestServer::start(config).await;
    long_chat(&server).await;
    let code =
        parley::auth::new_pairing_code(server.store.as_ref(), &Default::default()).await.unwrap();
    let artifacts = root.join("tests/artifacts");
    let output = tokio::task::spawn_blocking({
        let (base, token) = (server.base.clone(), server.token.clone());
        let fake = format!("http://{}", provider.addr);
        let script = root.join("tests/browser/ui.mjs");
        move || {
            Command::new("node")
                .arg(script)
                .env("PARLEY_BASE", base)
                .env("PARLEY_TOKEN", token)
                .env("PARLEY_PAIR_CODE", code)
                .env("FAKE_CONTROL", fake)
                .env("ARTIFACTS", artifacts)
                .env("CHROMIUM", chromium)
                .output()
                .expect("node runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "browser tests failed:\n{stdout}\n{stderr}");
    let asked: Vec<Value> = provider.requests().iter().map(|r| r["model"].clone()).collect();
    assert!(asked.contains(&json!("fake-b")), "the picked model was asked: {asked:?}");
    assert!(asked.contains(&json!("fake-a")), "the default answers otherwise: {asked:?}");
}
