//! Storage figures, in process against the SQLite store: append latency as a session grows,
//! opening a page of a long session, listing many sessions.

use std::time::{Duration, Instant};

use parley::conversation::Role;
use parley::store::{Fence, NewMessage, SqliteStore, Store};

/// Append latency (mean of 50 appends) at each mark, then the time to read the newest
/// page of 100 messages at 10 000 messages, then listing page 1 of 10 000 sessions.
pub struct History {
    pub appends: Vec<(u64, Duration)>,
    pub open_page: Duration,
    pub list_page: Duration,
}

pub async fn measure(dir: &std::path::Path, marks: &[u64]) -> History {
    let store = SqliteStore::open(&dir.join("history.db")).await.expect("store");
    let (session, _) = store.open_session("bench", "long", None).await.expect("session");
    let lease = store.acquire_lease(session.pk, "bench", i64::MAX, true).await.expect("lease");
    let fence = lease.expect("a lease on a fresh store").fence;
    let mut appends = Vec::new();
    let mut next = 1u64;
    let mut open_page = Duration::ZERO;
    for &mark in marks {
        while next < mark {
            append(&store, fence, next).await;
            next += 1;
        }
        let started = Instant::now();
        for _ in 0..50 {
            append(&store, fence, next).await;
            next += 1;
        }
        appends.push((mark, started.elapsed() / 50));
        if mark == 10_000 {
            let started = Instant::now();
            store.messages(session.pk, None, None, 100).await.expect("page");
            open_page = started.elapsed();
        }
    }
    for i in 0..10_000 {
        store.open_session("many", &format!("s{i}"), None).await.expect("session");
    }
    let started = Instant::now();
    store.list_sessions("many", false, 0, 50).await.expect("list");
    History { appends, open_page, list_page: started.elapsed() }
}

async fn append(store: &SqliteStore, fence: Fence, seq: u64) {
    let role = if seq % 2 == 1 { Role::User } else { Role::Assistant };
    let turn_seq = if seq % 2 == 1 { seq } else { seq - 1 } as i64;
    let message = NewMessage::text(
        seq as i64,
        turn_seq,
        "turn",
        role,
        "a message of ordinary length, about a line of text",
    );
    store.append_message(fence, &message).await.expect("append");
}
