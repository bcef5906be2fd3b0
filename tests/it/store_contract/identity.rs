//! Identity: tokens, pairing codes, the audit log, and the health check.

use parley::auth::tokens::new_token;
use parley::clock::now_ms;
use parley::store::{AuditEntry, PairingGrant, StoreError, TokenRecord};

use super::Db;

fn token(id: &str, user: &str, admin: bool, created_at: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        user: user.into(),
        label: Some(format!("label of {id}")),
        admin,
        created_at,
        revoked_at: None,
        hash: format!("hash-{id}"),
    }
}

pub async fn tokens_are_created_found_listed_and_revoked_once(db: &Db) {
    let store = &db.store;
    assert_eq!(store.active_tokens().await.unwrap(), 0);
    store.create_token(&token("t1", "alice", true, 1_000)).await.unwrap();
    store.create_token(&token("t2", "bob", false, 3_000)).await.unwrap();
    store.create_token(&token("t3", "alice", false, 2_000)).await.unwrap();
    assert_eq!(store.active_tokens().await.unwrap(), 3);

    let found = store.token_by_hash("hash-t1").await.unwrap().unwrap();
    assert_eq!((found.id.as_str(), found.user.as_str(), found.admin), ("t1", "alice", true));
    assert_eq!((found.label.as_deref(), found.created_at), (Some("label of t1"), 1_000));
    assert_eq!((found.revoked_at, found.hash.as_str()), (None, "hash-t1"));
    assert!(store.token_by_hash("hash-none").await.unwrap().is_none());
    let listed: Vec<_> = store.list_tokens().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(listed, ["t2", "t3", "t1"]);
    // Creating a token created its user.
    store.create_pairing_code("code", i64::MAX, &PairingGrant::default()).await.unwrap();
    let (bob, _) = new_token("bob", false, None);
    assert!(matches!(store.pair("code", &bob, true).await, Err(StoreError::Conflict(_))));
    // A secret (hash) or id is stored once.
    let same_hash = TokenRecord { id: "t4".into(), ..token("t1", "carol", false, 4_000) };
    assert!(matches!(store.create_token(&same_hash).await, Err(StoreError::Conflict(_))));
    let same_id = token("t2", "carol", false, 4_000);
    assert!(matches!(store.create_token(&same_id).await, Err(StoreError::Conflict(_))));

    let before = now_ms();
    let revoked = store.revoke_token("t3").await.unwrap();
    assert_eq!((revoked.id.as_str(), revoked.user.as_str()), ("t3", "alice"));
    assert!(revoked.revoked_at.unwrap() >= before);
    assert!(matches!(store.revoke_token("t3").await, Err(StoreError::NotFound)));
    assert!(matches!(store.revoke_token("none").await, Err(StoreError::NotFound)));
    let found = store.token_by_hash("hash-t3").await.unwrap().unwrap();
    assert_eq!(found.revoked_at, revoked.revoked_at);
    assert_eq!(store.active_tokens().await.unwrap(), 2);
    assert_eq!(store.revoked_since(before).await.unwrap(), ["t3"]);
    assert!(store.revoked_since(revoked.revoked_at.unwrap() + 1).await.unwrap().is_empty());
}

pub async fn pairing_code_lookup_ignores_used_and_expired_codes(db: &Db) {
    let store = &db.store;
    let now = now_ms();
    let grant = PairingGrant { user: Some("alice".into()), admin: true };
    store.create_pairing_code("fresh", now + 60_000, &PairingGrant::default()).await.unwrap();
    store.create_pairing_code("granted", now + 60_000, &grant).await.unwrap();
    store.create_pairing_code("expired", now - 1, &PairingGrant::default()).await.unwrap();
    assert_eq!(store.pairing_code("fresh").await.unwrap(), Some(PairingGrant::default()));
    assert_eq!(store.pairing_code("granted").await.unwrap(), Some(grant));
    assert_eq!(store.pairing_code("expired").await.unwrap(), None);
    assert_eq!(store.pairing_code("unknown").await.unwrap(), None);
    let (record, _) = new_token("someone", false, None);
    assert!(matches!(store.pair("expired", &record, true).await, Err(StoreError::NotFound)));
    assert!(matches!(store.pair("unknown", &record, true).await, Err(StoreError::NotFound)));
    // A code is stored once.
    let again = store.create_pairing_code("fresh", now + 60_000, &PairingGrant::default()).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
}

pub async fn pairing_a_new_user_spends_the_code_once(db: &Db) {
    let store = &db.store;
    store.create_pairing_code("code", now_ms() + 60_000, &PairingGrant::default()).await.unwrap();
    let (record, _) = new_token("newbie", true, Some("paired"));
    store.pair("code", &record, true).await.unwrap();
    let stored = store.token_by_hash(&record.hash).await.unwrap().unwrap();
    assert_eq!(
        (stored.id, stored.user.as_str(), stored.admin),
        (record.id.clone(), "newbie", true)
    );
    // Spent: neither looked up nor paired again.
    assert_eq!(store.pairing_code("code").await.unwrap(), None);
    let (other, _) = new_token("another", false, None);
    assert!(matches!(store.pair("code", &other, true).await, Err(StoreError::NotFound)));
    assert!(store.token_by_hash(&other.hash).await.unwrap().is_none());
    assert_eq!(store.active_tokens().await.unwrap(), 1);
}

pub async fn pairing_an_existing_name_conflicts_and_leaves_the_code_unspent(db: &Db) {
    let store = &db.store;
    store.ensure_user("taken").await.unwrap();
    store.create_pairing_code("code", now_ms() + 60_000, &PairingGrant::default()).await.unwrap();
    let (record, _) = new_token("taken", false, None);
    let refused = store.pair("code", &record, true).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
    assert!(store.token_by_hash(&record.hash).await.unwrap().is_none());
    assert_eq!(store.pairing_code("code").await.unwrap(), Some(PairingGrant::default()));
    // The same code still pairs under a free name.
    let (record, _) = new_token("free", false, None);
    store.pair("code", &record, true).await.unwrap();
    assert_eq!(store.token_by_hash(&record.hash).await.unwrap().unwrap().user, "free");
}

pub async fn a_code_for_a_user_pairs_a_new_device_of_theirs(db: &Db) {
    let store = &db.store;
    store.create_token(&token("t1", "alice", false, 1)).await.unwrap();
    let grant = PairingGrant { user: Some("alice".into()), admin: true };
    store.create_pairing_code("code", now_ms() + 60_000, &grant).await.unwrap();
    let (device, _) = new_token("alice", true, Some("phone"));
    store.pair("code", &device, false).await.unwrap();
    let stored = store.token_by_hash(&device.hash).await.unwrap().unwrap();
    assert_eq!(
        (stored.user.as_str(), stored.admin, stored.label.as_deref()),
        ("alice", true, Some("phone"))
    );
    assert_eq!(store.active_tokens().await.unwrap(), 2);
    assert_eq!(store.pairing_code("code").await.unwrap(), None);
    // A grant for a user not seen before creates them.
    let grant = PairingGrant { user: Some("dave".into()), admin: false };
    store.create_pairing_code("code2", now_ms() + 60_000, &grant).await.unwrap();
    let (device, _) = new_token("dave", false, None);
    store.pair("code2", &device, false).await.unwrap();
    assert_eq!(store.token_by_hash(&device.hash).await.unwrap().unwrap().user, "dave");
}

pub async fn audit_log_is_newest_first_and_limited(db: &Db) {
    let store = &db.store;
    assert!(store.audit_log(10).await.unwrap().is_empty());
    for (i, kind) in ["login_failed", "paired", "token_revoked"].into_iter().enumerate() {
        let entry = AuditEntry {
            at: 1_000 + i as i64,
            kind: kind.into(),
            user: (i != 0).then(|| "alice".to_owned()),
            ip: Some("127.0.0.1".into()),
            detail: (i == 2).then(|| "tok_1".to_owned()),
        };
        store.audit(&entry).await.unwrap();
    }
    let kinds = |log: Vec<AuditEntry>| log.into_iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(
        kinds(store.audit_log(10).await.unwrap()),
        ["token_revoked", "paired", "login_failed"]
    );
    assert_eq!(kinds(store.audit_log(2).await.unwrap()), ["token_revoked", "paired"]);
    assert_eq!(store.audit_log(u64::MAX).await.unwrap().len(), 3);
    let newest = &store.audit_log(1).await.unwrap()[0];
    assert_eq!((newest.at, newest.user.as_deref()), (1_002, Some("alice")));
    assert_eq!(
        (newest.ip.as_deref(), newest.detail.as_deref()),
        (Some("127.0.0.1"), Some("tok_1"))
    );
    let oldest = &store.audit_log(3).await.unwrap()[2];
    assert_eq!((oldest.user.as_deref(), oldest.detail.as_deref()), (None, None));
}

pub async fn ping_answers(db: &Db) {
    db.store.ping().await.unwrap();
    db.second_node().await.ping().await.unwrap();
}
