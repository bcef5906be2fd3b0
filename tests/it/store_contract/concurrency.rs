//! Two nodes on one database: start-up migrations, and the writes that read before they
//! write, racing on the same rows.

use futures_util::future::join_all;
use parley::conversation::Role;
use parley::store::{PairingGrant, StoreError};

use super::{Db, text};

pub async fn two_nodes_migrate_an_empty_database_together(db: &Db) {
    let url = db.empty_database("fresh.db").await;
    let (first, second) = tokio::join!(parley::store::open(&url), parley::store::open(&url));
    let (first, second) = (first.unwrap(), second.unwrap());
    // Both see one schema, migrated once.
    let (session, created) = first.open_session("alice", "s", None).await.unwrap();
    assert!(created);
    let (same, created) = second.open_session("alice", "s", None).await.unwrap();
    assert_eq!((same.pk, created), (session.pk, false));
    // And a third start finds nothing left to do.
    let third = parley::store::open(&url).await.unwrap();
    assert_eq!(third.list_sessions("alice", false, 0, 10).await.unwrap().1, 1);
}

pub async fn two_nodes_open_the_same_session_once(db: &Db) {
    let second = db.second_node().await;
    let nodes = [db.store.clone(), second];
    let opens = (0..8).map(|i| {
        let node = nodes[i % 2].clone();
        async move { node.open_session("alice", "shared", Some("n")).await }
    });
    let results = join_all(opens).await;
    let opened: Vec<_> = results.into_iter().map(|r| r.expect("no open fails")).collect();
    assert_eq!(opened.iter().filter(|(_, created)| *created).count(), 1);
    assert!(opened.iter().all(|(s, _)| s.pk == opened[0].0.pk));
    assert_eq!(db.store.list_sessions("alice", false, 0, 10).await.unwrap().1, 1);
}

pub async fn two_nodes_append_to_one_session_without_losing_counts(db: &Db) {
    let second = db.second_node().await;
    let nodes = [db.store.clone(), second];
    let (session, _) = db.store.open_session("alice", "s", None).await.unwrap();
    let fence = db.fence(session.pk).await;
    let appends = (1..=20).map(|seq| {
        let node = nodes[seq as usize % 2].clone();
        async move {
            node.reserve_seq(fence, seq + 100).await?;
            // One turn's messages: turns themselves are admitted one at a time.
            node.append_message(fence, &text(seq, 1, Role::Assistant, "m")).await
        }
    });
    for result in join_all(appends).await {
        result.expect("no append fails");
    }
    let stored = db.store.session("alice", "s").await.unwrap().unwrap();
    assert_eq!((stored.message_count, stored.reserved_seq), (20, 120));
    assert_eq!(db.store.messages(session.pk, None, None, 100).await.unwrap().len(), 20);
}

pub async fn two_nodes_spend_one_pairing_code_once(db: &Db) {
    let second = db.second_node().await;
    let nodes = [db.store.clone(), second];
    let expires = parley::clock::now_ms() + 60_000;
    db.store.create_pairing_code("code", expires, &PairingGrant::default()).await.unwrap();
    let records: Vec<_> = (0..6)
        .map(|i| parley::auth::tokens::new_token(&format!("user{i}"), false, None).0)
        .collect();
    let pairs = records.iter().enumerate().map(|(i, record)| {
        let node = nodes[i % 2].clone();
        async move { node.pair("code", record, true).await }
    });
    let results = join_all(pairs).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let lost = results.iter().filter(|r| matches!(r, Err(StoreError::NotFound))).count();
    assert_eq!((won, lost), (1, 5), "{results:?}");
    assert_eq!(db.store.active_tokens().await.unwrap(), 1);
}
