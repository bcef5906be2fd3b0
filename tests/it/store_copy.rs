//! `parley store copy`: a single-node installation moved to PostgreSQL and back keeps
//! everything — its users and tokens (the same token still signs in), sessions, messages
//! (any text), tool calls, pairing codes and audit log — and goes on where it stopped.

use serde_json::{Value, json};
use sqlx::Connection;

use crate::common::{FakeProvider, Script, TestServer, client_with, test_config};

/// What a user sees of an installation: sessions with their messages and tool calls.
async fn snapshot(server: &TestServer, token: &str) -> Value {
    let client = client_with(token);
    let get = |path: String| {
        let request = client.get(server.url(&path));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let list = get("/api/sessions?limit=500".into()).await;
    let mut sessions = Vec::new();
    for item in list["items"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        let mut detail = get(format!("/api/sessions/{id}?limit=500")).await;
        // A loaded session shows its last event's seq, one in the store only the bound
        // its numbering resumes from: which it is depends on the server, not on the copy.
        detail.as_object_mut().unwrap().remove("last_seq");
        let calls = get(format!("/api/sessions/{id}/tool-calls")).await;
        sessions.push(json!({"detail": detail, "tool_calls": calls}));
    }
    // The audit log, for an admin (others get no request-specific refusal to compare).
    let audit = get("/api/audit".into()).await;
    let audit = if audit.get("items").is_some() { audit } else { Value::Null };
    json!({"sessions": sessions, "audit": audit, "total": list["total"]})
}

fn run_copy(from: &str, to: &str, replace: bool) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_parley"));
    command.args(["store", "copy", "--from", from, "--to", to]);
    if replace {
        command.arg("--replace");
    }
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_moves_to_postgres_and_back_with_everything() {
    let Some(base) = crate::store_contract::postgres_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("single.db").display());
    let provider = FakeProvider::start().await;
    provider.push([
        Script::tool_call("c1", "list_dir", json!({"path": "."}), 2),
        Script::text(&["listed"]),
    ]);
    let mut config = test_config(dir.path(), Some(&provider));
    config.database_url = Some(sqlite.clone());
    let server = TestServer::start(config.clone()).await;
    let admin = server.token.clone();
    let (status, _) = server.chat("tools", "look around").await;
    assert_eq!(status, 200);
    let (status, _) = server.chat("odd", "a nul \u{0} and a \u{10FFFF} in text").await;
    assert_eq!(status, 200);
    let alice = server.token_for("alice", false).await;
    let response = client_with(&alice)
        .post(server.url("/api/chat"))
        .json(&json!({"content": "alice's", "session_id": "hers"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, minted) = server.post("/api/pairing-codes", json!({"user": "alice"})).await;
    assert_eq!(status, 201);
    let code = minted["code"].as_str().unwrap().to_owned();
    // More rows than one batch, in tables keyed by text and by number.
    for n in 0..600 {
        parley::auth::tokens::issue(server.store.as_ref(), &format!("u{n}"), false, None)
            .await
            .unwrap();
        let entry = parley::store::AuditEntry {
            at: n,
            kind: "filler".into(),
            user: None,
            ip: None,
            detail: Some(format!("entry {n}")),
        };
        server.store.audit(&entry).await.unwrap();
    }
    let tokens_before = server.store.list_tokens().await.unwrap();
    let before = snapshot(&server, &admin).await;
    let alice_before = snapshot(&server, &alice).await;
    server.stop().await;

    let schema = format!("parley_copy_{}", uuid::Uuid::new_v4().simple());
    let mut pg = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut pg)
        .await
        .unwrap();
    let postgres = crate::common::postgres::with_search_path(&base, &schema);
    let copied = run_copy(&sqlite, &postgres, false);
    assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
    let report = String::from_utf8(copied.stdout).unwrap();
    assert!(report.contains("messages\t") && report.contains("tool_calls\t1"), "{report}");
    assert!(report.contains(&format!("tokens\t{}", tokens_before.len())), "{report}");
    assert!(report.contains("users\t60"), "{report}");
    // A target that holds data is refused unless told.
    let again = run_copy(&sqlite, &postgres, false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--replace"));

    let mut moved = config.clone();
    moved.database_url = Some(postgres.clone());
    let server = TestServer::start(moved).await;
    let mut tokens_after = server.store.list_tokens().await.unwrap();
    tokens_after.retain(|token| token.label.as_deref() != Some("tests"));
    let mut expected = tokens_before.clone();
    expected.retain(|token| token.label.as_deref() != Some("tests"));
    let ids = |tokens: &[parley::store::TokenRecord]| {
        let mut ids: Vec<String> = tokens.iter().map(|t| format!("{} {}", t.id, t.user)).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&tokens_after), ids(&expected), "every token, keys kept");
    assert_eq!(snapshot(&server, &admin).await, before, "the same token sees the same");
    assert_eq!(snapshot(&server, &alice).await, alice_before);
    // A pairing code minted before the move still pairs a device of alice's.
    let (status, paired) = server.post("/api/pair", json!({"code": code})).await;
    assert_eq!((status.as_u16(), &paired["user"]), (201, &json!("alice")), "{paired}");
    // It goes on where it stopped: new messages get new keys and later seqs.
    let (status, body) = server.chat("tools", "and now?").await;
    assert_eq!(status, 200, "{body}");
    let (_, detail) = server.get("/api/sessions/tools?limit=500").await;
    let seqs: Vec<u64> =
        detail["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let after = snapshot(&server, &admin).await;
    assert_ne!(after, before, "the pairing and the new turn are in it");
    server.stop().await;

    // Copying a store onto itself, or from a file that is not there, is refused.
    let alias = format!("sqlite://{}/./single.db", dir.path().display());
    let itself = run_copy(&sqlite, &alias, true);
    assert!(String::from_utf8_lossy(&itself.stderr).contains("same store"), "{itself:?}");
    let missing = run_copy("sqlite:///nowhere/parley.db", &postgres, true);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no SQLite database"));
    // And back to SQLite, replacing a file that holds something else.
    let back = format!("sqlite://{}", dir.path().join("back.db").display());
    let other = parley::store::open(&back).await.unwrap();
    parley::auth::tokens::issue(other.as_ref(), "stranger", true, None).await.unwrap();
    drop(other);
    let refused = run_copy(&postgres, &back, false);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--replace"));
    let returned = run_copy(&postgres, &back, true);
    assert!(returned.status.success(), "{}", String::from_utf8_lossy(&returned.stderr));
    let mut home = config;
    home.database_url = Some(back);
    let server = TestServer::start(home).await;
    assert_eq!(snapshot(&server, &admin).await, after);
    let strangers = server.store.list_tokens().await.unwrap();
    assert!(strangers.iter().all(|t| t.user != "stranger"), "--replace emptied it first");
    server.stop().await;
    let drop_schema = format!("DROP SCHEMA {schema} CASCADE");
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop_schema)).execute(&mut pg).await.unwrap();
}

/// Every table and column the migrations make, as `name.column` in order.
fn columns_of_tables() -> Vec<String> {
    parley::store::copy::TABLES
        .iter()
        .flat_map(|table| {
            table.columns.iter().map(move |(column, _)| format!("{}.{column}", table.name))
        })
        .collect()
}

#[tokio::test]
async fn the_copy_knows_every_table_and_column_of_both_backends() {
    let mut expected = columns_of_tables();
    expected.sort();
    // The search index (`messages_fts*`) is not copied: it is made from the messages, by
    // triggers, as they are written.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("schema.db").display());
    drop(parley::store::open(&url).await.unwrap());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut sqlite: Vec<String> = sqlx::query_scalar(
        "SELECT m.name || '.' || p.name FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT IN ('schema_migrations', 'sqlite_sequence') \
         AND m.name NOT LIKE 'messages_fts%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    sqlite.sort();
    assert_eq!(sqlite, expected, "store::copy::TABLES matches the SQLite migrations");
    let Some(base) = crate::store_contract::postgres_url() else { return };
    let schema = format!("parley_columns_{}", uuid::Uuid::new_v4().simple());
    let mut pg = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut pg)
        .await
        .unwrap();
    let url = crate::common::postgres::with_search_path(&base, &schema);
    drop(parley::store::open(&url).await.unwrap());
    let mut postgres: Vec<String> = sqlx::query_scalar(
        "SELECT table_name || '.' || column_name FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name <> 'schema_migrations'",
    )
    .bind(&schema)
    .fetch_all(&mut pg)
    .await
    .unwrap();
    postgres.sort();
    let drop_schema = format!("DROP SCHEMA {schema} CASCADE");
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop_schema)).execute(&mut pg).await.unwrap();
    assert_eq!(postgres, expected, "store::copy::TABLES matches the PostgreSQL migrations");
}
