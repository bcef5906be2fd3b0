//! Sessions: creation, scoping per user, listing, renaming, deleting, state, pruning, and
//! the reserved `seq` bound.

use std::time::Duration;

use parley::conversation::Role;
use parley::store::{PairingGrant, StoreError};

use super::{Db, call, text};

pub async fn open_session_creates_once_and_creates_the_user(db: &Db) {
    let store = &db.store;
    let (created, is_new) = store.open_session("alice", "s1", Some("first")).await.unwrap();
    assert!(is_new);
    assert_eq!((created.user_id.as_str(), created.id.as_str()), ("alice", "s1"));
    assert_eq!(created.name.as_deref(), Some("first"));
    assert_eq!(
        (created.state.as_str(), created.message_count, created.reserved_seq),
        ("idle", 0, 0)
    );
    assert!(created.created_at > 0 && created.updated_at == created.created_at);

    // Opening again loads it: same row, the name given now is ignored.
    let (again, is_new) = store.open_session("alice", "s1", Some("other")).await.unwrap();
    assert!(!is_new);
    assert_eq!(again.pk, created.pk);
    assert_eq!(again.name.as_deref(), Some("first"));
    let found = store.session("alice", "s1").await.unwrap().unwrap();
    assert_eq!(found.pk, created.pk);

    // The user now exists: a code for a new user of that name cannot take it.
    store.create_pairing_code("code", i64::MAX, &PairingGrant::default()).await.unwrap();
    let (token, _) = parley::auth::tokens::new_token("alice", false, None);
    assert!(matches!(store.pair("code", &token, true).await, Err(StoreError::Conflict(_))));
    // ensure_user is idempotent, for new and existing users.
    store.ensure_user("alice").await.unwrap();
    store.ensure_user("bob").await.unwrap();
    store.ensure_user("bob").await.unwrap();
}

pub async fn sessions_are_scoped_per_user(db: &Db) {
    let store = &db.store;
    let (alice, _) = store.open_session("alice", "same", None).await.unwrap();
    let (bob, created) = store.open_session("bob", "same", None).await.unwrap();
    assert!(created, "another user's session of the same id is a new session");
    assert_ne!(alice.pk, bob.pk);
    assert!(store.session("carol", "same").await.unwrap().is_none());
    assert!(store.session("alice", "missing").await.unwrap().is_none());
    assert!(matches!(store.rename_session("carol", "same", "x").await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete_session("carol", "same").await, Err(StoreError::NotFound)));
    store.delete_session("bob", "same").await.unwrap();
    assert!(store.session("alice", "same").await.unwrap().is_some());
}

pub async fn list_pages_newest_activity_first_with_total(db: &Db) {
    let store = &db.store;
    for id in ["a", "b", "c", "d", "e"] {
        store.open_session("alice", id, None).await.unwrap();
    }
    store.open_session("bob", "z", None).await.unwrap();
    let ids =
        |page: &[parley::store::Session]| page.iter().map(|s| s.id.clone()).collect::<Vec<_>>();

    // Sessions made in the same millisecond keep creation order (newest first).
    let (page, total) = store.list_sessions("alice", false, 0, 2).await.unwrap();
    assert_eq!((ids(&page), total), (vec!["e".to_owned(), "d".into()], 5));
    let (page, total) = store.list_sessions("alice", false, 4, 2).await.unwrap();
    assert_eq!((ids(&page), total), (vec!["a".to_owned()], 5));
    let (page, total) = store.list_sessions("alice", false, u64::MAX, u64::MAX).await.unwrap();
    assert_eq!((page.len(), total), (0, 5));
    let (page, total) = store.list_sessions("nobody", false, 0, 10).await.unwrap();
    assert_eq!((page.len(), total), (0, 0));

    // Activity moves a session to the top (timestamps are in milliseconds).
    tokio::time::sleep(Duration::from_millis(3)).await;
    let (b, _) = store.open_session("alice", "b", None).await.unwrap();
    store.append_message(db.fence(b.pk).await, &text(1, 1, Role::User, "hi")).await.unwrap();
    let (page, _) = store.list_sessions("alice", false, 0, 2).await.unwrap();
    assert_eq!(ids(&page), ["b", "e"]);

    let (page, total) = store.list_all_sessions(0, 100).await.unwrap();
    assert_eq!(total, 6);
    assert_eq!(ids(&page), ["b", "z", "e", "d", "c", "a"]);
    assert_eq!(page[1].user_id, "bob");
    let (page, total) = store.list_all_sessions(5, u64::MAX).await.unwrap();
    assert_eq!((ids(&page), total), (vec!["a".to_owned()], 6));
}

pub async fn rename_changes_the_name_or_is_not_found(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let renamed = store.rename_session("alice", "s", "new name").await.unwrap();
    assert_eq!((renamed.pk, renamed.name.as_deref()), (session.pk, Some("new name")));
    assert!(renamed.updated_at >= session.updated_at);
    let found = store.session("alice", "s").await.unwrap().unwrap();
    assert_eq!(found.name.as_deref(), Some("new name"));
    assert!(matches!(
        store.rename_session("alice", "missing", "x").await,
        Err(StoreError::NotFound)
    ));
}

pub async fn delete_takes_messages_turns_and_tool_calls_with_it(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "gone", None).await.unwrap();
    store
        .create_turn(
            db.fence(session.pk).await,
            "turn-1",
            "m",
            &text(1, 1, Role::User, "hi"),
            false,
        )
        .await
        .unwrap();
    store.start_turn(db.fence(session.pk).await, "turn-1").await.unwrap();
    store
        .start_tool_call(db.fence(session.pk).await, "turn-1", &call("c1", "list_dir"))
        .await
        .unwrap();
    store
        .append_message(db.fence(session.pk).await, &text(2, 1, Role::Assistant, "there"))
        .await
        .unwrap();

    store.delete_session("alice", "gone").await.unwrap();
    assert!(store.session("alice", "gone").await.unwrap().is_none());
    assert!(store.messages(session.pk, None, None, 100).await.unwrap().is_empty());
    assert!(store.history(session.pk, i64::MAX).await.unwrap().is_empty());
    assert!(store.tool_calls(session.pk).await.unwrap().is_empty());
    // The running turn went too: nothing is left for another node to take over.
    assert!(store.orphans(i64::MAX).await.unwrap().is_empty());
    assert!(matches!(store.delete_session("alice", "gone").await, Err(StoreError::NotFound)));

    // The id can be used again, for a session that starts empty.
    let (again, created) = store.open_session("alice", "gone", None).await.unwrap();
    assert!(created);
    assert_eq!((again.message_count, again.reserved_seq), (0, 0));
    assert!(store.messages(again.pk, None, None, 100).await.unwrap().is_empty());
}

pub async fn set_session_state_is_stored(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    store.set_session_state(db.fence(session.pk).await, "running").await.unwrap();
    assert_eq!(store.session("alice", "s").await.unwrap().unwrap().state, "running");
    store.set_session_state(db.fence(session.pk).await, "idle").await.unwrap();
    assert_eq!(store.session("alice", "s").await.unwrap().unwrap().state, "idle");
}

fn sorted(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.sort();
    pairs
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(u, i)| ((*u).to_owned(), (*i).to_owned())).collect()
}

pub async fn prune_by_count_keeps_the_newest_and_running_sessions(db: &Db) {
    let store = &db.store;
    for id in ["a", "b", "c", "d"] {
        store.open_session("alice", id, None).await.unwrap();
    }
    for id in ["x", "y", "z"] {
        store.open_session("bob", id, None).await.unwrap();
    }
    let (a, _) = store.open_session("alice", "a", None).await.unwrap();
    store.set_session_state(db.fence(a.pk).await, "running").await.unwrap();

    // Only alice's: her two newest stay, and the running oldest one is spared.
    let pruned = store.prune(Some("alice"), 2, 0).await.unwrap();
    assert_eq!(sorted(pruned), pairs(&[("alice", "b")]));
    // No limits prune nothing.
    assert!(store.prune(None, 0, 0).await.unwrap().is_empty());
    // Everyone's: bob keeps his two newest.
    let pruned = store.prune(None, 2, 0).await.unwrap();
    assert_eq!(sorted(pruned), pairs(&[("bob", "x")]));
    let (left, total) = store.list_all_sessions(0, 100).await.unwrap();
    assert_eq!(total, 5);
    let mut left: Vec<_> = left.into_iter().map(|s| (s.user_id, s.id)).collect();
    left.sort();
    assert_eq!(
        left,
        pairs(&[("alice", "a"), ("alice", "c"), ("alice", "d"), ("bob", "y"), ("bob", "z")])
    );
}

pub async fn prune_by_ttl_keeps_recent_and_running_sessions(db: &Db) {
    let store = &db.store;
    for (user, id) in [("alice", "old"), ("alice", "busy"), ("bob", "old")] {
        store.open_session(user, id, None).await.unwrap();
    }
    let (busy, _) = store.open_session("alice", "busy", None).await.unwrap();
    store.set_session_state(db.fence(busy.pk).await, "running").await.unwrap();

    // Nothing is an hour idle yet.
    assert!(store.prune(None, 0, 3_600_000).await.unwrap().is_empty());
    // Idle for more than a millisecond: alice's idle one goes, her running one stays,
    // and bob's is not hers to prune.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let pruned = store.prune(Some("alice"), 0, 1).await.unwrap();
    assert_eq!(pruned, pairs(&[("alice", "old")]));
    assert!(store.session("alice", "busy").await.unwrap().is_some());
    let pruned = store.prune(None, 0, 1).await.unwrap();
    assert_eq!(pruned, pairs(&[("bob", "old")]));
}

pub async fn reserve_seq_never_goes_backwards(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let reserved = async || store.session("alice", "s").await.unwrap().unwrap().reserved_seq;
    store.reserve_seq(db.fence(session.pk).await, 10).await.unwrap();
    assert_eq!(reserved().await, 10);
    store.reserve_seq(db.fence(session.pk).await, 4).await.unwrap();
    assert_eq!(reserved().await, 10);
    store.reserve_seq(db.fence(session.pk).await, 25).await.unwrap();
    assert_eq!(reserved().await, 25);
    // Survives a reopen, as it must across a restart.
    let second = db.second_node().await;
    assert_eq!(second.session("alice", "s").await.unwrap().unwrap().reserved_seq, 25);
}

pub async fn a_stored_message_raises_last_seq(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let reserved = async || store.session("alice", "s").await.unwrap().unwrap().reserved_seq;
    store
        .create_turn(
            db.fence(session.pk).await,
            "turn-3",
            "m",
            &text(3, 3, Role::User, "hi"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(reserved().await, 3);
    store
        .append_message(db.fence(session.pk).await, &text(7, 3, Role::Assistant, "a"))
        .await
        .unwrap();
    assert_eq!(reserved().await, 7);
    // A message below the bound leaves it where it is.
    store.reserve_seq(db.fence(session.pk).await, 20).await.unwrap();
    store
        .append_message(db.fence(session.pk).await, &text(8, 3, Role::Assistant, "b"))
        .await
        .unwrap();
    assert_eq!(reserved().await, 20);
}
