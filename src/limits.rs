//! Rate limits and lockouts, keyed by token, IP or user: fixed one-minute windows, kept in
//! memory and pruned as they age.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many keys, stale entries are dropped on the next check.
const PRUNE_AT: usize = 10_000;

/// Allows `per_window` events per key per window.
pub struct RateLimiter {
    per_window: u32,
    window: Duration,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    /// `per_minute` events per key per minute; 0 means unlimited.
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            per_window: per_minute,
            window: Duration::from_secs(60),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an event for `key`; `Err(retry_after)` if it is over the limit.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.per_window == 0 {
            return Ok(());
        }
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
    threshold: u32,
    window: Duration,
    lock_for: Duration,
    entries: Mutex<HashMap<String, Lockout>>,
}

struct Lockout {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

impl Lockouts {
    /// A `threshold` of 0 never locks anyone out.
    pub fn new(threshold: u32, window: Duration, lock_for: Duration) -> Self {
        Self { threshold, window, lock_for, entries: Mutex::new(HashMap::new()) }
    }

    /// `Err(retry_after)` while `key` is locked out.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key).and_then(|e| e.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns `Some(lock)` if this failure locked the key out.
    pub fn fail(&self, key: &str) -> Option<Duration> {
        if self.threshold == 0 {
            return None;
        }
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
    pub fn clear(&self, key: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key() {
        let limiter = RateLimiter::per_minute(2);
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
        assert!(limiter.check("b").is_ok());
        assert!(RateLimiter::per_minute(0).check("a").is_ok());
    }

    #[test]
    fn locks_out_after_the_threshold() {
        let lockouts = Lockouts::new(3, Duration::from_secs(60), Duration::from_secs(300));
        assert_eq!(lockouts.fail("ip"), None);
        assert_eq!(lockouts.fail("ip"), None);
        assert!(lockouts.check("ip").is_ok());
        assert!(lockouts.fail("ip").is_some());
        assert!(lockouts.check("ip").unwrap_err() > Duration::from_secs(290));
        assert!(lockouts.check("other").is_ok());
    }
}
