//! Accounting of long-lived connections (WebSocket, SSE) per node and per user. The
//! per-user limit holds across a cluster: each node lists its count of a user's
//! connections on the bus (refreshed while open, so a dead node's entries age out), and a
//! new connection counts the other nodes' entries too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::ApiError;
use crate::bus::Bus;

/// How long a node's listed count holds without being refreshed.
const LISTED_FOR: Duration = Duration::from_secs(60);

/// Open connections and their limits.
pub struct Connections {
    total: AtomicUsize,
    per_user: Mutex<HashMap<String, usize>>,
    /// Open connections by protocol (`ws`, `sse`, `openai`, `ag-ui`), for metrics.
    per_protocol: Mutex<HashMap<&'static str, usize>>,
    max: usize,
    max_per_user: usize,
    /// The cluster's bus and this node's name, to count a user's connections on every node.
    shared: Option<(Arc<dyn Bus>, String)>,
}

fn key(user: &str) -> String {
    format!("connections:{user}")
}

impl Connections {
    pub fn new(max: usize, max_per_user: usize) -> Self {
        Self::shared(max, max_per_user, None)
    }

    /// As [`Connections::new`], with the per-user limit counted over the cluster of `shared`
    /// (its bus and this node's name) when it is one.
    pub fn shared(max: usize, max_per_user: usize, shared: Option<(Arc<dyn Bus>, String)>) -> Self {
        let shared = shared.filter(|(bus, _)| bus.clustered());
        Self {
            total: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
            per_protocol: Mutex::new(HashMap::new()),
            max,
            max_per_user,
            shared,
        }
    }

    /// How many are open.
    pub fn count(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn per_user(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.per_user.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn per_protocol(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, usize>> {
        self.per_protocol.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many are open, by protocol.
    pub fn by_protocol(&self) -> Vec<(&'static str, usize)> {
        self.per_protocol().iter().map(|(protocol, count)| (*protocol, *count)).collect()
    }

    /// Admits a connection of `user` over `protocol`: 503 past the node's limit, 429 past
    /// the user's (on every node together, in a cluster).
    pub async fn open(
        self: &Arc<Self>,
        user: &str,
        protocol: &'static str,
    ) -> Result<ConnectionCount, ApiError> {
        let elsewhere = self.elsewhere(user).await;
        let mut per_user = self.per_user();
        if self.total.load(Ordering::Relaxed) >= self.max {
            return Err(ApiError::TooManyConnections);
        }
        let mine = per_user.entry(user.to_owned()).or_insert(0);
        if *mine + elsewhere >= self.max_per_user {
            return Err(ApiError::RateLimited {
                message: "too many open connections for this user",
                retry_after: Duration::from_secs(5),
            });
        }
        *mine += 1;
        let count = *mine;
        drop(per_user);
        self.total.fetch_add(1, Ordering::Relaxed);
        *self.per_protocol().entry(protocol).or_insert(0) += 1;
        self.list(user, count);
        Ok(ConnectionCount { connections: self.clone(), user: user.to_owned(), protocol })
    }

    /// The user's connections the other nodes list (0 alone, or if the bus fails).
    async fn elsewhere(&self, user: &str) -> usize {
        let Some((bus, node)) = &self.shared else { return 0 };
        let Ok(entries) = bus.entries(&key(user)).await else { return 0 };
        let now = crate::clock::now_ms();
        entries
            .iter()
            .filter(|(listed_by, _)| listed_by != node)
            .filter_map(|(_, value)| {
                let text = std::str::from_utf8(value).ok()?;
                let (count, until) = text.split_once(' ')?;
                let until: i64 = until.parse().ok()?;
                (until > now).then(|| count.parse::<usize>().ok()).flatten()
            })
            .sum()
    }

    /// Lists this node's count of the user's connections for the other nodes.
    fn list(&self, user: &str, count: usize) {
        let Some((bus, node)) = self.shared.clone() else { return };
        let user = user.to_owned();
        tokio::spawn(async move {
            let listed = if count == 0 {
                bus.remove(&key(&user), &node).await
            } else {
                let until = crate::clock::now_ms() + LISTED_FOR.as_millis() as i64;
                let value = Bytes::from(format!("{count} {until}"));
                bus.put(&key(&user), &node, value, LISTED_FOR).await
            };
            if let Err(err) = listed {
                tracing::debug!(%err, "listing a user's connections failed");
            }
        });
    }

    /// Lists this node's counts again every third of their listing time, so they hold while
    /// the connections are open and age out if the node dies; ends with `connections`.
    pub async fn keep_listed(connections: Weak<Self>) {
        let mut tick = tokio::time::interval(LISTED_FOR / 3);
        loop {
            tick.tick().await;
            let Some(connections) = connections.upgrade() else { return };
            let counts: Vec<(String, usize)> =
                connections.per_user().iter().map(|(user, count)| (user.clone(), *count)).collect();
            for (user, count) in counts {
                connections.list(&user, count);
            }
        }
    }
}

/// Holds one admitted connection until dropped.
pub struct ConnectionCount {
    connections: Arc<Connections>,
    user: String,
    protocol: &'static str,
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        let mut per_user = self.connections.per_user();
        let mut left = 0;
        if let Some(mine) = per_user.get_mut(&self.user) {
            *mine -= 1;
            left = *mine;
            if *mine == 0 {
                per_user.remove(&self.user);
            }
        }
        drop(per_user);
        if let Some(open) = self.connections.per_protocol().get_mut(self.protocol) {
            *open = open.saturating_sub(1);
        }
        self.connections.total.fetch_sub(1, Ordering::Relaxed);
        self.connections.list(&self.user, left);
    }
}
