//! The database going away and coming back, for real: PostgreSQL reached through a TCP
//! proxy the test cuts and restores. While it is gone requests fail fast with 503
//! `STORE_UNAVAILABLE` (nothing hangs, nothing leaks); when it is back, service resumes by
//! itself.

use std::time::Duration;

use serde_json::json;
use sqlx::Connection;

use crate::common::live::WsClient;
use crate::common::proxy::{proxy, through};
use crate::common::{TestServer, json_of, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_fast_while_postgres_is_down_and_service_resumes_after() {
    let Some(base) = crate::store_contract::postgres_url() else { return };
    let schema = format!("parley_outage_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (_, upstream) = through(&base, "127.0.0.1:1".parse().unwrap());
    let (addr, cut) = proxy("127.0.0.1:0".parse().unwrap(), upstream).await;
    let (url, _) = through(&base, addr);
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), None);
    config.database_url = Some(crate::common::postgres::with_search_path(&url, &schema));
    // Without authentication, requests reach the runtime's store calls (with it, the token
    // lookup would be the first to fail).
    config.auth.mode = "none".into();
    let server = TestServer::start(config).await;
    let (status, _) =
        server.post("/api/sessions/kept/messages", json!({"content": "before"})).await;
    assert_eq!(status, 202);

    cut.cancel();
    let limit = Duration::from_secs(30);
    for (method, path) in [("GET", "/api/sessions"), ("POST", "/api/chat")] {
        let request = match method {
            "GET" => server.client.get(server.url(path)),
            _ => server.client.post(server.url(path)).json(&json!({"content": "during"})),
        };
        let response = tokio::time::timeout(limit, request.send()).await.expect("no hang").unwrap();
        assert!(response.headers().contains_key("retry-after"));
        let (status, body) = json_of(response).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["code"], "STORE_UNAVAILABLE", "{path}: {body}");
        assert!(!body.to_string().contains(&addr.to_string()), "no internals: {body}");
    }
    // A WebSocket is told the same in its `error` frame.
    let opened =
        tokio::time::timeout(limit, WsClient::connect(&server, "/ws/chat?session_id=kept"));
    let mut ws = opened.await.expect("no hang");
    let error = tokio::time::timeout(limit, ws.next_of("error")).await.expect("no hang");
    assert_eq!(error["code"], "STORE_UNAVAILABLE", "{error}");
    let ready = tokio::time::timeout(limit, server.client.get(server.url("/health/ready")).send());
    let (status, body) = json_of(ready.await.expect("no hang").unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(body["components"]["store"], "unavailable");

    // Back on the same address: the server recovers by itself.
    let (_, restored) = proxy(addr, upstream).await;
    let mut answered = false;
    for _ in 0..300 {
        let (status, _) = server.get("/api/sessions").await;
        if status == 200 {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "service resumed once the database was back");
    let (status, body) = server.get("/api/sessions/kept").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["content"], "before", "nothing stored was lost");
    restored.cancel();
    drop(server);
    let drop_schema = format!("DROP SCHEMA {schema} CASCADE");
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop_schema)).execute(&mut admin).await.unwrap();
}
