//! Accounting of long-lived connections (WebSocket, SSE) per node and per user.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::ApiError;

/// Open connections and their limits.
pub struct Connections {
    total: AtomicUsize,
    per_user: Mutex<HashMap<String, usize>>,
    max: usize,
    max_per_user: usize,
}

impl Connections {
    pub fn new(max: usize, max_per_user: usize) -> Self {
        Self { total: AtomicUsize::new(0), per_user: Mutex::new(HashMap::new()), max, max_per_user }
    }

    /// How many are open.
    pub fn count(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Admits a connection of `user`: 503 past the node's limit, 429 past the user's.
    pub fn open(self: &Arc<Self>, user: &str) -> Result<ConnectionCount, ApiError> {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max {
            return Err(ApiError::TooManyConnections);
        }
        let mine = per_user.entry(user.to_owned()).or_insert(0);
        if *mine >= self.max_per_user {
            return Err(ApiError::RateLimited {
                message: "too many open connections for this user",
                retry_after: Duration::from_secs(5),
            });
        }
        *mine += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionCount { connections: self.clone(), user: user.to_owned() })
    }
}

/// Holds one admitted connection until dropped.
pub struct ConnectionCount {
    connections: Arc<Connections>,
    user: String,
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        let mut per_user = self.connections.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mine) = per_user.get_mut(&self.user) {
            *mine -= 1;
            if *mine == 0 {
                per_user.remove(&self.user);
            }
        }
        self.connections.total.fetch_sub(1, Ordering::Relaxed);
    }
}
