//! Redis for the tests that need it: `PARLEY_TEST_REDIS_URL` (scripts/test sets it). Under
//! `CI=true` its absence fails those tests; elsewhere they skip, loudly.

use std::sync::Once;

/// The variable naming the Redis the cluster tests use.
const REDIS_URL: &str = "PARLEY_TEST_REDIS_URL";

/// The Redis URL to test on, or `None` (after saying so) to skip.
pub fn url() -> Option<String> {
    if let Ok(url) = std::env::var(REDIS_URL) {
        return Some(url);
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{REDIS_URL} is not set: under CI=true the Redis and cluster tests must run");
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let line = format!(
            "\n*** SKIPPED: the tests on Redis (bus_contract::*, cluster::*) pass without \
             running. Set {REDIS_URL}=redis://127.0.0.1:6379 to run them. ***\n\n"
        );
        // Straight to fd 2, past libtest's capture of passing tests' output.
        // SAFETY: writes `line.len()` bytes from a live buffer to the process's stderr.
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    });
    None
}

/// A key prefix no other test uses.
pub fn prefix() -> String {
    format!("parley-test:{}:", uuid::Uuid::new_v4().simple())
}
