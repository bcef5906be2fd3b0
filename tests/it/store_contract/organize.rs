//! Keeping sessions in order: pinned first, archived apart, and a search over what was said.

use parley::conversation::Role;
use parley::store::{MessageStatus, NewMessage, PartialText, StoreError};

use super::{Db, text};

pub async fn pinned_sessions_list_first_and_archived_ones_apart(db: &Db) {
    let store = &db.store;
    for id in ["old", "middle", "new"] {
        store.open_session("alice", id, None).await.unwrap();
    }
    let ids = async |archived: bool| {
        let (page, total) = store.list_sessions("alice", archived, 0, 10).await.unwrap();
        assert_eq!(total as usize, page.len());
        page.into_iter().map(|s| s.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(false).await, ["new", "middle", "old"]);
    let pinned = store.set_session_flags("alice", "old", Some(true), None).await.unwrap();
    assert!(pinned.pinned && !pinned.archived);
    let archived = store.set_session_flags("alice", "middle", None, Some(true)).await.unwrap();
    assert!(archived.archived && !archived.pinned);
    assert_eq!(ids(false).await, ["old", "new"]);
    assert_eq!(ids(true).await, ["middle"]);
    // What is left out stays; another user's session of the same id is another session.
    let back = store.set_session_flags("alice", "middle", None, Some(false)).await.unwrap();
    assert!(!back.archived);
    assert_eq!(ids(false).await, ["old", "new", "middle"]);
    let missing = store.set_session_flags("bob", "old", Some(true), None).await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
    // A pinned session is never pruned.
    store.prune(Some("alice"), 1, 0).await.unwrap();
    assert_eq!(ids(false).await, ["old", "new"]);
}

pub async fn search_finds_every_word_in_the_users_own_messages(db: &Db) {
    let store = &db.store;
    let (a, _) = store.open_session("alice", "a", Some("Ops")).await.unwrap();
    let (b, _) = store.open_session("alice", "b", None).await.unwrap();
    let (c, _) = store.open_session("bob", "c", None).await.unwrap();
    let say = async |pk: i64, message: NewMessage| {
        store.append_message(db.fence(pk).await, &message).await.unwrap()
    };
    say(a.pk, text(1, 1, Role::User, "Deploying the gateway on Kubernetes?")).await;
    say(a.pk, text(2, 1, Role::Assistant, "Use a Deployment with two replicas.")).await;
    let tool = NewMessage {
        tool_call_id: Some("t".into()),
        tool_name: Some("shell".into()),
        ..text(3, 1, Role::Tool, "deployment secret")
    };
    say(a.pk, tool).await;
    say(b.pk, text(1, 1, Role::User, "the quarterly report")).await;
    say(b.pk, text(2, 2, Role::User, "Un café près de Zürich")).await;
    say(c.pk, text(1, 1, Role::User, "deploy for bob")).await;

    let found = async |user: &str, query: &str| {
        let (hits, total) = store.search_messages(user, query, 0, 10).await.unwrap();
        assert_eq!(total as usize, hits.len());
        hits.into_iter().map(|h| (h.session_id, h.seq)).collect::<Vec<_>>()
    };
    // Words are prefixes; newest first; tool output is left out; only the user's own.
    assert_eq!(found("alice", "deploy").await, [("a".into(), 2), ("a".into(), 1)]);
    assert_eq!(found("alice", "DEPLOY gateway").await, [("a".to_owned(), 1)]);
    assert_eq!(found("bob", "deploy").await, [("c".to_owned(), 1)]);
    // Accents are folded, in what was said and in what is typed.
    assert_eq!(found("alice", "cafe zurich").await, [("b".to_owned(), 2)]);
    assert_eq!(found("alice", "CAFÉ Pres").await, [("b".to_owned(), 2)]);
    assert_eq!(found("alice", "zü").await, [("b".to_owned(), 2)]);
    // A single letter is a whole word, not the start of every word it begins.
    assert_eq!(found("alice", "u cafe").await, []);
    assert_eq!(found("alice", "un cafe").await, [("b".to_owned(), 2)]);
    assert_eq!(found("alice", "the report").await, [("b".to_owned(), 1)]);
    // Nothing typed is query syntax.
    assert_eq!(found("alice", "(deploy* \"").await.len(), 2);
    assert_eq!(found("alice", "deploy OR report").await.len(), 0);
    assert!(found("alice", " \" * ").await.is_empty());
    let (hits, total) = store.search_messages("alice", "deploy", 1, 1).await.unwrap();
    assert_eq!((hits.len(), total), (1, 2));
    let hit = &hits[0];
    assert_eq!((hit.role, hit.session_name.as_deref()), (Role::User, Some("Ops")));
    assert!(hit.snippet.contains("Deploying the gateway"), "{}", hit.snippet);

    // A streaming answer is found once it has ended, by what it said (its partial flushes
    // are not indexed).
    let streaming =
        NewMessage { status: MessageStatus::Streaming, ..text(4, 4, Role::Assistant, "") };
    let id = say(b.pk, streaming).await;
    let fence_b = db.fence(b.pk).await;
    let partial = |content: &str| PartialText {
        fence: fence_b,
        message_id: id,
        content: content.into(),
        reasoning: None,
    };
    store.update_partials(&[partial("a zebra crossing")]).await.unwrap();
    assert!(found("alice", "zebra").await.is_empty());
    store.update_partials(&[partial("a zebra and an okapi")]).await.unwrap();
    store
        .update_message(fence_b, id, "a giraffe", None, &[], MessageStatus::Complete)
        .await
        .unwrap();
    assert!(found("alice", "zebra").await.is_empty());
    assert_eq!(found("alice", "giraffe").await, [("b".to_owned(), 4)]);
    // Edited once settled, it is found by its new words only.
    store
        .update_message(fence_b, id, "an okapi", None, &[], MessageStatus::Complete)
        .await
        .unwrap();
    assert!(found("alice", "giraffe").await.is_empty());
    assert_eq!(found("alice", "okapi").await.len(), 1);
    // An answer cut off mid-stream is found by the words it had when it stopped.
    let cut = NewMessage { status: MessageStatus::Streaming, ..text(5, 5, Role::Assistant, "") };
    let cut_id = say(b.pk, cut).await;
    let flush = PartialText {
        fence: fence_b,
        message_id: cut_id,
        content: "a lemur".into(),
        reasoning: None,
    };
    store.update_partials(&[flush]).await.unwrap();
    assert!(found("alice", "lemur").await.is_empty());
    // Another node takes the session over: what was streaming is marked interrupted.
    store.acquire_lease(b.pk, "other-node", i64::MAX, true).await.unwrap().unwrap();
    assert_eq!(found("alice", "lemur").await, [("b".to_owned(), 5)]);
    // A deleted session's messages are gone from the search.
    store.delete_session("alice", "a").await.unwrap();
    assert!(found("alice", "deploy").await.is_empty());
}

pub async fn pruning_keeps_pinned_sessions_and_counts_only_the_others(db: &Db) {
    let store = &db.store;
    // Oldest first (ties go by creation): two unpinned, then a pinned one, the newest.
    for id in ["u2", "u1", "p"] {
        store.open_session("alice", id, None).await.unwrap();
    }
    store.set_session_flags("alice", "p", Some(true), None).await.unwrap();
    let pruned = store.prune(Some("alice"), 1, 0).await.unwrap();
    assert_eq!(pruned, [("alice".to_owned(), "u2".to_owned())]);
    let (page, _) = store.list_sessions("alice", false, 0, 10).await.unwrap();
    let ids: Vec<_> = page.into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["p", "u1"]);
}
