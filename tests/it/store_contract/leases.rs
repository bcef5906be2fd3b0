//! Session leases: one holder at a time, fencing of every write of a turn, and the clean-up
//! a new holder gets of what the previous one left running.

use futures_util::future::join_all;
use parley::conversation::Role;
use parley::store::{MessageStatus, NewMessage, PartialText, StoreError, TurnStatus};

use super::turns::end;
use super::{Db, call, text};

const FAR: i64 = i64::MAX;

pub async fn a_lease_is_held_until_it_expires_or_is_released(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let now = parley::clock::now_ms();
    let a = store.acquire_lease(session.pk, "node-a", now + 60_000, false).await.unwrap().unwrap();
    assert_eq!(a.fence.session, session.pk);
    // Held: another node is refused, the holder itself may take it again (a new fence).
    assert!(store.acquire_lease(session.pk, "node-b", FAR, false).await.unwrap().is_none());
    let again = store.acquire_lease(session.pk, "node-a", now + 60_000, false).await.unwrap();
    let again = again.unwrap();
    assert!(again.fence.token > a.fence.token);
    // Released under an old fence: nothing happens; under the current one, the lease is free.
    store.release_lease(a.fence).await.unwrap();
    assert!(store.acquire_lease(session.pk, "node-b", FAR, false).await.unwrap().is_none());
    store.release_lease(again.fence).await.unwrap();
    let b = store.acquire_lease(session.pk, "node-b", now + 1, false).await.unwrap().unwrap();
    assert!(b.fence.token > again.fence.token, "a fence never goes back");
    // Expired (its time is past): another node takes it without the holder's consent.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let c = store.acquire_lease(session.pk, "node-c", FAR, false).await.unwrap().unwrap();
    assert!(c.fence.token > b.fence.token);
    // A node running alone takes a live lease (`steal`): its holder can only be its own
    // earlier, killed life.
    let d = store.acquire_lease(session.pk, "node-d", FAR, true).await.unwrap().unwrap();
    assert!(d.fence.token > c.fence.token);
    // The reservation bound comes with the lease: the new holder numbers after it.
    store.reserve_seq(d.fence, 40).await.unwrap();
    let e = store.acquire_lease(session.pk, "node-e", FAR, true).await.unwrap().unwrap();
    assert_eq!(e.reserved_seq, 40);
    let missing = store.acquire_lease(session.pk + 1000, "node-e", FAR, true).await.unwrap();
    assert!(missing.is_none(), "no lease on a session that does not exist");
}

pub async fn a_moved_fence_refuses_every_write_of_a_turn(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let old = store.acquire_lease(session.pk, "node-a", FAR, false).await.unwrap().unwrap().fence;
    store.create_turn(old, "turn-1", "m", &text(1, 1, Role::User, "go"), false).await.unwrap();
    store.start_turn(old, "turn-1").await.unwrap();
    let streaming =
        NewMessage { status: MessageStatus::Streaming, ..text(2, 1, Role::Assistant, "half") };
    let message = store.append_message(old, &streaming).await.unwrap();
    let tool = store.start_tool_call(old, "turn-1", &call("c1", "shell")).await.unwrap();
    // Another node takes the session over.
    let new = store.acquire_lease(session.pk, "node-b", FAR, true).await.unwrap().unwrap().fence;

    let refused = [
        store.create_turn(old, "turn-2", "m", &text(3, 3, Role::User, "late"), false).await,
        store.start_turn(old, "turn-1").await,
        store.append_message(old, &text(4, 1, Role::Assistant, "late")).await.map(drop),
        store.update_message(old, message, "late", None, &[], MessageStatus::Complete).await,
        store.start_tool_call(old, "turn-1", &call("c2", "shell")).await.map(drop),
        store.finish_tool_call(old, tool, "late", false, "done", 1).await,
        store.finish_turn(old, "turn-1", &end(TurnStatus::Done)).await,
        store.reserve_seq(old, 100).await,
        store.set_session_state(old, "idle").await,
    ];
    for (i, result) in refused.iter().enumerate() {
        assert!(matches!(result, Err(StoreError::Fenced)), "write {i}: {result:?}");
    }
    let partial =
        PartialText { fence: old, message_id: message, content: "late".into(), reasoning: None };
    store.update_partials(&[partial]).await.unwrap();

    // Nothing of the refused writes landed: the takeover's state stands.
    let stored = store.messages(session.pk, None, None, 10).await.unwrap();
    let contents: Vec<_> = stored.iter().map(|m| (m.content.as_str(), m.status)).collect();
    assert_eq!(contents, [("go", MessageStatus::Complete), ("half", MessageStatus::Interrupted)]);
    let calls = store.tool_calls(session.pk).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].status, "interrupted");
    let stored = store.session("alice", "s").await.unwrap().unwrap();
    assert_eq!(stored.reserved_seq, 2);
    // The new holder writes; the old one's partial flushes do not touch its messages.
    store.create_turn(new, "turn-2", "m", &text(3, 3, Role::User, "now"), false).await.unwrap();
    store.reserve_seq(new, 100).await.unwrap();
    let theirs =
        NewMessage { status: MessageStatus::Streaming, ..text(6, 3, Role::Assistant, "new") };
    let theirs = store.append_message(new, &theirs).await.unwrap();
    let stale =
        PartialText { fence: old, message_id: theirs, content: "old".into(), reasoning: None };
    store.update_partials(&[stale]).await.unwrap();
    let last = store.messages(session.pk, None, None, 10).await.unwrap().pop().unwrap();
    assert_eq!(last.content, "new", "a stale fence's flush changes nothing");
    let current =
        PartialText { fence: new, message_id: theirs, content: "newer".into(), reasoning: None };
    store.update_partials(&[current]).await.unwrap();
    let last = store.messages(session.pk, None, None, 10).await.unwrap().pop().unwrap();
    assert_eq!((last.content.as_str(), last.status), ("newer", MessageStatus::Streaming));
    // A deleted session fences everyone out.
    store.delete_session("alice", "s").await.unwrap();
    let gone = store.append_message(new, &text(5, 3, Role::Assistant, "x")).await;
    assert!(matches!(gone, Err(StoreError::Fenced)), "{gone:?}");
}

pub async fn taking_a_lease_interrupts_what_the_last_holder_left_running(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let (other, _) = store.open_session("bob", "s", None).await.unwrap();
    let a = store.acquire_lease(session.pk, "node-a", 1, false).await.unwrap().unwrap().fence;
    let b = store.acquire_lease(other.pk, "node-a", FAR, false).await.unwrap().unwrap().fence;
    store.create_turn(a, "turn-1", "m", &text(1, 1, Role::User, "go"), false).await.unwrap();
    store.start_turn(a, "turn-1").await.unwrap();
    store.create_turn(a, "turn-2", "m", &text(2, 2, Role::User, "queued"), false).await.unwrap();
    store
        .create_turn(a, "turn-3", "other", &text(3, 3, Role::User, "queued too"), false)
        .await
        .unwrap();
    let streaming =
        NewMessage { status: MessageStatus::Streaming, ..text(4, 1, Role::Assistant, "half") };
    store.append_message(a, &streaming).await.unwrap();
    store.start_tool_call(a, "turn-1", &call("c1", "shell")).await.unwrap();
    store.create_turn(b, "turn-b", "m", &text(1, 1, Role::User, "go"), false).await.unwrap();
    store.start_turn(b, "turn-b").await.unwrap();

    // node-a's lease on alice's session expired (it died): node-b takes it.
    let lease = store.acquire_lease(session.pk, "node-b", FAR, false).await.unwrap().unwrap();
    assert_eq!(lease.interrupted, [("turn-1".to_owned(), "half".to_owned())]);
    let queued: Vec<_> = lease.queued.iter().map(|t| (t.turn_id.as_str(), t.user_seq)).collect();
    assert_eq!(queued, [("turn-2", 2), ("turn-3", 3)], "queued turns are handed over, in order");
    let models: Vec<_> = lease.queued.iter().map(|t| t.model.as_deref()).collect();
    assert_eq!(models, [Some("m"), Some("other")], "each with the model it asked for");
    let stored = store.messages(session.pk, None, None, 10).await.unwrap();
    let statuses: Vec<_> = stored.iter().map(|m| (m.content.as_str(), m.status)).collect();
    assert_eq!(
        statuses,
        [
            ("go", MessageStatus::Complete),
            ("half", MessageStatus::Interrupted),
            ("queued", MessageStatus::Complete),
            ("queued too", MessageStatus::Complete),
        ]
    );
    let calls = store.tool_calls(session.pk).await.unwrap();
    assert_eq!((calls[0].status.as_str(), calls[0].is_error), ("interrupted", true));
    assert!(calls[0].output.as_deref().unwrap().starts_with("interrupted"), "{:?}", calls[0]);
    // Bob's session, whose lease is live, was not touched.
    let bobs = store.acquire_lease(other.pk, "node-b", FAR, false).await.unwrap();
    assert!(bobs.is_none());
    store.finish_turn(b, "turn-b", &end(TurnStatus::Done)).await.unwrap();
    // Taking it again finds nothing more to interrupt; the queued turns are still queued.
    let again = store.acquire_lease(session.pk, "node-b", FAR, false).await.unwrap().unwrap();
    assert!(again.interrupted.is_empty());
    assert_eq!(again.queued.len(), 2);
}

pub async fn renewing_extends_every_lease_a_node_holds(db: &Db) {
    let store = &db.store;
    let mut fences = Vec::new();
    for id in ["a", "b"] {
        let (session, _) = store.open_session("alice", id, None).await.unwrap();
        let lease = store.acquire_lease(session.pk, "node-a", 1, false).await.unwrap().unwrap();
        fences.push(lease.fence);
    }
    let (theirs, _) = store.open_session("alice", "c", None).await.unwrap();
    store.acquire_lease(theirs.pk, "node-b", FAR, false).await.unwrap().unwrap();
    // Both of node-a's leases expired; renewing brings them back, and only them.
    let mut held = store.renew_leases("node-a", FAR).await.unwrap();
    held.sort_by_key(|f| f.session);
    assert_eq!(held, fences);
    for fence in &fences {
        let taken = store.acquire_lease(fence.session, "node-b", FAR, false).await.unwrap();
        assert!(taken.is_none(), "renewed leases are live again");
    }
    // A released lease is no longer renewed.
    store.release_lease(fences[0]).await.unwrap();
    assert_eq!(store.renew_leases("node-a", FAR).await.unwrap(), [fences[1]]);
    assert!(store.renew_leases("node-z", FAR).await.unwrap().is_empty());
}

pub async fn orphans_are_sessions_with_unfinished_turns_and_no_live_lease(db: &Db) {
    let store = &db.store;
    let now = parley::clock::now_ms();
    let open = async |id: &str, until: i64| {
        let (session, _) = store.open_session("alice", id, None).await.unwrap();
        store.acquire_lease(session.pk, "node-a", until, false).await.unwrap().unwrap().fence
    };
    let dead = open("dead", now - 1).await;
    let live = open("live", now + 60_000).await;
    let idle = open("idle", now - 1).await;
    let released = open("released", now + 60_000).await;
    for (fence, turn) in [(dead, "t1"), (live, "t2"), (released, "t3")] {
        store.create_turn(fence, turn, "m", &text(1, 1, Role::User, "go"), false).await.unwrap();
    }
    store.create_turn(idle, "t4", "m", &text(1, 1, Role::User, "go"), false).await.unwrap();
    store.finish_turn(idle, "t4", &end(TurnStatus::Done)).await.unwrap();
    store.release_lease(released).await.unwrap();
    let mut orphans: Vec<_> = store.orphans(now).await.unwrap().into_iter().map(|o| o.id).collect();
    orphans.sort();
    assert_eq!(orphans, ["dead", "released"]);
    let orphan = &store.orphans(now).await.unwrap()[0];
    assert_eq!(orphan.user, "alice");
}

pub async fn two_nodes_racing_for_a_lease_get_one_holder(db: &Db) {
    let second = db.second_node().await;
    let nodes = [db.store.clone(), second];
    let (session, _) = db.store.open_session("alice", "s", None).await.unwrap();
    let races = (0..8).map(|i| {
        let node = nodes[i % 2].clone();
        async move { node.acquire_lease(session.pk, &format!("node-{i}"), FAR, false).await }
    });
    let results = join_all(races).await;
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().unwrap().as_ref()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
}

pub async fn the_live_holder_of_a_lease_and_the_session_of_a_turn_are_found(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let now = parley::clock::now_ms();
    assert_eq!(store.lease_holder(session.pk, now).await.unwrap(), None);
    let lease = store.acquire_lease(session.pk, "node-a", now + 60_000, false).await.unwrap();
    let fence = lease.unwrap().fence;
    assert_eq!(store.lease_holder(session.pk, now).await.unwrap().as_deref(), Some("node-a"));
    assert_eq!(store.lease_holder(session.pk, now + 120_000).await.unwrap(), None, "expired");
    store.create_turn(fence, "turn-1", "m", &text(1, 1, Role::User, "go"), false).await.unwrap();
    let found = store.turn_session("alice", "turn-1").await.unwrap();
    assert_eq!(found, Some(("s".to_owned(), session.pk)));
    assert_eq!(store.turn_session("bob", "turn-1").await.unwrap(), None, "only the owner's");
    assert_eq!(store.turn_session("alice", "turn-2").await.unwrap(), None);
    store.release_lease(fence).await.unwrap();
    assert_eq!(store.lease_holder(session.pk, now).await.unwrap(), None);
}
