//! Several real `parley serve` processes on one PostgreSQL schema and one Redis key prefix
//! (both of their own per test), with the fake provider, as an operator would run a
//! cluster. Needs `PARLEY_TEST_POSTGRES_URL` and `PARLEY_TEST_REDIS_URL`: under `CI=true`
//! their absence fails the test, elsewhere it skips, loudly.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use tempfile::TempDir;

use super::FakeProvider;

/// What every node of a test's cluster shares.
pub struct Cluster {
    pub dir: TempDir,
    pub database_url: String,
    pub redis_url: String,
    pub prefix: String,
    pub provider: FakeProvider,
    /// Seconds a session lease lasts.
    pub lease_secs: f64,
    /// More settings for every node (after the defaults, so they win).
    pub env: Vec<(&'static str, String)>,
}

/// One `parley serve` process, killed (SIGKILL) when dropped.
pub struct Node {
    pub child: Child,
    pub base: String,
    /// Its log (standard output) so far.
    pub log: Arc<Mutex<String>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// `path` on this node.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the node with SIGTERM, as an orchestrator does, and waits for it to exit.
    pub fn terminate(&mut self) {
        // SAFETY: sends SIGTERM to a child process this test started and still owns.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// What the node logged so far, for a failing test's message.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Cluster {
    /// A fresh cluster's shared parts, or `None` (after saying so) if PostgreSQL or Redis is
    /// not available here.
    pub async fn new(lease_secs: f64) -> Option<Self> {
        let postgres = crate::store_contract::postgres_url()?;
        let redis_url = super::redis::url()?;
        let dir = tempfile::tempdir().unwrap();
        let database_url = super::postgres::url_for(&postgres, dir.path());
        let provider = FakeProvider::start().await;
        let prefix = super::redis::prefix();
        Some(Self { dir, database_url, redis_url, prefix, provider, lease_secs, env: Vec::new() })
    }

    /// A new API token of `user`, made with the `parley` command on the shared store.
    pub fn token(&self, user: &str) -> String {
        self.make_token(&["token", "create", "--user", user])
    }

    /// A new admin token of `user`.
    pub fn admin_token(&self, user: &str) -> String {
        self.make_token(&["token", "create", "--user", user, "--admin"])
    }

    fn make_token(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(args)
            .current_dir(self.dir.path())
            .env("PARLEY_DATABASE_URL", &self.database_url)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Starts node `name` and waits until it listens.
    pub fn node(&self, name: &str) -> Node {
        self.node_on(name, &self.redis_url)
    }

    /// Starts node `name` reaching Redis at `redis_url` (a proxy the test controls).
    pub fn node_on(&self, name: &str, redis_url: &str) -> Node {
        let data = self.dir.path().join(name);
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
            .arg("serve")
            .current_dir(self.dir.path())
            .env("PARLEY_LISTEN", "127.0.0.1:0")
            .env("PARLEY_DATA_DIR", &data)
            .env("PARLEY_DATABASE_URL", &self.database_url)
            .env("PARLEY_REDIS_URL", redis_url)
            .env("PARLEY_REDIS_PREFIX", &self.prefix)
            .env("PARLEY_NODE_ID", name)
            .env("PARLEY_LEASE_SECS", self.lease_secs.to_string())
            .env("PARLEY_PROVIDER_URL", self.provider.url())
            .env("PARLEY_SESSIONS__PARTIAL_FLUSH_MS", "20")
            .env("PARLEY_SHUTDOWN_GRACE_SECS", "5")
            .env("PARLEY_LIMITS__TURNS_PER_MINUTE", "0")
            .env("PARLEY_LIMITS__REQUESTS_PER_MINUTE_PER_TOKEN", "0")
            .env("PARLEY_LIMITS__REQUESTS_PER_MINUTE_PER_IP", "0")
            .env("PARLEY_LOG", "info")
            .envs(self.env.iter().map(|(name, value)| (*name, value.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (base, log) = super::listening(&mut child);
        Node { child, base, log }
    }
}
