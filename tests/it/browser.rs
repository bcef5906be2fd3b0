//! The web chat in headless Chromium: `tests/browser/ui.mjs` (playwright-core) against the
//! real server and the fake provider. Needs Chromium and `npm ci` in `tests/browser`
//! (`scripts/test` and `.ci/run` install both); without them it says so and skips.

use std::path::Path;
use std::process::Command;

use crate::common::{FakeProvider, TestServer, test_config};

fn chromium() -> Option<String> {
    let candidates = [
        std::env::var("CHROMIUM").unwrap_or_default(),
        "/usr/bin/chromium".into(),
        "/usr/bin/chromium-browser".into(),
    ];
    candidates.into_iter().find(|path| !path.is_empty() && Path::new(path).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_chat_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join("tests/browser/node_modules/playwright-core");
    let (Some(chromium), true) = (chromium(), modules.exists()) else {
        eprintln!(
            "SKIPPED the_web_chat_works_in_a_real_browser: needs Chromium and `npm ci --prefix tests/browser` \
             (scripts/test installs both)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let provider = FakeProvider::start().await;
    let mut config = test_config(dir.path(), Some(&provider));
    config.tools.approval.insert("shell".into(), "ask".into());
    let server = TestServer::start(config).await;
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
}
