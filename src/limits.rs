//! Rate limits and lockouts, keyed by token, IP or user: fixed windows. A node alone keeps
//! them in memory, pruned as they age; in a cluster they are counted on the bus (Redis), so
//! they hold across nodes, and in memory again while the bus is down (per node, rather than
//! none at all).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bus::Bus;

/// Where a limit is counted: the cluster's bus, or (`None`) this node's memory alone.
pub type Shared = Option<Arc<dyn Bus>>;

/// The bus to count on, if it is a cluster's.
pub fn shared(bus: &Arc<dyn Bus>) -> Shared {
    bus.clustered().then(|| bus.clone())
}

/// Past this many keys, stale entries are dropped on the next check.
const PRUNE_AT: usize = 10_000;

/// Allows `per_window` events per key per window.
pub struct RateLimiter {
    /// Names the limit's keys on the bus.
    name: &'static str,
    per_window: u32,
    window: Duration,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
    shared: Shared,
}

impl RateLimiter {
    /// `per_minute` events per key per minute, in this node's memory; 0 means unlimited.
    pub fn per_minute(per_minute: u32) -> Self {
        Self::shared_per_minute("local", per_minute, None)
    }

    /// `per_minute` events per key per minute, counted on `shared` if given (the limit's
    /// keys named after `name`).
    pub fn shared_per_minute(name: &'static str, per_minute: u32, shared: Shared) -> Self {
        Self {
            name,
            per_window: per_minute,
            window: Duration::from_secs(60),
            windows: Mutex::new(HashMap::new()),
            shared,
        }
    }

    /// Counts an event for `key`; `Err(retry_after)` if it is over the limit.
    pub async fn check(&self, key: &str) -> Result<(), Duration> {
        if self.per_window == 0 {
            return Ok(());
        }
        if let Some(bus) = &self.shared {
            let counted = bus.count(&format!("rate:{}:{key}", self.name), self.window).await;
            if let Ok((count, left)) = counted {
                if count > u64::from(self.per_window) {
                    return Err(left.max(Duration::from_secs(1)));
                }
                return Ok(());
            }
        }
        self.check_here(key)
    }

    fn check_here(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > PRUNE_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let (start, count) = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_window {
            return Err(self
                .window
                .saturating_sub(now.duration_since(*start))
                .max(Duration::from_secs(1)));
        }
        *count += 1;
        Ok(())
    }
}

/// Locks a key out for `lock_for` after `threshold` failures within `window`.
pub struct Lockouts {
    name: &'static str,
    threshold: u32,
    window: Duration,
    lock_for: Duration,
    entries: Mutex<HashMap<String, Lockout>>,
    shared: Shared,
}

struct Lockout {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

impl Lockouts {
    /// A `threshold` of 0 never locks anyone out. Kept in this node's memory.
    pub fn new(threshold: u32, window: Duration, lock_for: Duration) -> Self {
        Self::shared("local", threshold, window, lock_for, None)
    }

    /// As [`Lockouts::new`], kept on `shared` if given (keys named after `name`).
    pub fn shared(
        name: &'static str,
        threshold: u32,
        window: Duration,
        lock_for: Duration,
        shared: Shared,
    ) -> Self {
        Self { name, threshold, window, lock_for, entries: Mutex::new(HashMap::new()), shared }
    }

    fn keys(&self, key: &str) -> (String, String) {
        (format!("lock:{}:{key}", self.name), format!("fail:{}:{key}", self.name))
    }

    /// `Err(retry_after)` while `key` is locked out.
    pub async fn check(&self, key: &str) -> Result<(), Duration> {
        if let Some(bus) = &self.shared
            && let Ok(left) = bus.ttl(&self.keys(key).0).await
        {
            return left.map_or(Ok(()), Err);
        }
        self.check_here(key)
    }

    fn check_here(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key).and_then(|e| e.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns `Some(lock)` if this failure locked the key out.
    pub async fn fail(&self, key: &str) -> Option<Duration> {
        if self.threshold == 0 {
            return None;
        }
        if let Some(bus) = &self.shared {
            let (lock, failures) = self.keys(key);
            if let Ok((count, _)) = bus.count(&failures, self.window).await {
                if count != u64::from(self.threshold) {
                    return None;
                }
                let locked = bus.set(&lock, bytes::Bytes::new(), self.lock_for).await;
                return locked.is_ok().then_some(self.lock_for);
            }
        }
        self.fail_here(key)
    }

    fn fail_here(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > PRUNE_AT {
            entries.retain(|_, e| {
                e.locked_until.is_some_and(|u| u > now)
                    || now.duration_since(e.window_start) < self.window
            });
        }
        let entry = entries.entry(key.to_owned()).or_insert(Lockout {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if entry.locked_until.is_some_and(|u| u <= now)
            || now.duration_since(entry.window_start) >= self.window
        {
            *entry = Lockout { window_start: now, failures: 0, locked_until: None };
        }
        entry.failures += 1;
        if entry.failures >= self.threshold && entry.locked_until.is_none() {
            entry.locked_until = Some(now + self.lock_for);
            return Some(self.lock_for);
        }
        None
    }

    /// Forgets the key's failures (after a success).
    pub async fn clear(&self, key: &str) {
        if let Some(bus) = &self.shared {
            let _ = bus.delete(&self.keys(key).1).await;
        }
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_per_key() {
        let limiter = RateLimiter::per_minute(2);
        assert!(limiter.check("a").await.is_ok());
        assert!(limiter.check("a").await.is_ok());
        assert!(limiter.check("a").await.is_err());
        assert!(limiter.check("b").await.is_ok());
        assert!(RateLimiter::per_minute(0).check("a").await.is_ok());
    }

    #[tokio::test]
    async fn locks_out_after_the_threshold() {
        let lockouts = Lockouts::new(3, Duration::from_secs(60), Duration::from_secs(300));
        assert_eq!(lockouts.fail("ip").await, None);
        assert_eq!(lockouts.fail("ip").await, None);
        assert!(lockouts.check("ip").await.is_ok());
        assert!(lockouts.fail("ip").await.is_some());
        assert!(lockouts.check("ip").await.unwrap_err() > Duration::from_secs(290));
        assert!(lockouts.check("other").await.is_ok());
    }
}
