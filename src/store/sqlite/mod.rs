//! The SQLite store: one file in WAL mode, migrations embedded in the binary.
//!
//! This file opens and migrates the database and dispatches each [`Store`] method to the
//! file that owns its tables (`sessions`, `messages`, `turns`, `auth`, `maintenance`);
//! `store/postgres/` mirrors it file for file.

mod auth;
mod copy;
mod leases;
mod maintenance;
mod messages;
mod search;
mod sessions;
mod turns;
mod usage;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tracing::instrument;

use super::{
    AuditEntry, Fence, Lease, Message, MessageStatus, NewMessage, Orphan, PairingGrant,
    PartialText, RunningTurn, SearchHit, Session, Store, StoreError, TokenRecord, ToolCallRecord,
    TurnEnd, TurnRecord, UsageLine, UsageQuery,
};
use crate::clock::now_ms;
use crate::conversation::{ToolCall, Usage};
use writer::Writer;

/// Migrations in order; each runs once, inside a transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../../migrations/sqlite/0002_auth.sql")),
    (3, include_str!("../../../migrations/sqlite/0003_pairing_grants.sql")),
    (4, include_str!("../../../migrations/sqlite/0004_leases.sql")),
    (5, include_str!("../../../migrations/sqlite/0005_turn_lookup.sql")),
    (6, include_str!("../../../migrations/sqlite/0006_usage.sql")),
    (7, include_str!("../../../migrations/sqlite/0007_branches.sql")),
    (8, include_str!("../../../migrations/sqlite/0008_organize.sql")),
    (9, include_str!("../../../migrations/sqlite/0009_search_folding.sql")),
    (10, include_str!("../../../migrations/sqlite/0010_search_settled.sql")),
];

/// [`super::Store`] on a SQLite file.
pub struct SqliteStore {
    db: Db,
}

/// The database as the store's files use it: reads from the pool, writes through the
/// process's one [`Writer`].
struct Db {
    pool: SqlitePool,
    writer: Writer,
}

/// A count for `LIMIT` / `OFFSET`: past `i64::MAX` means "all" / "past the end", never
/// the negative number a plain cast would make.
fn bound(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Other(format!("creating {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // Two processes opening a new file at once can find it locked while the other
        // switches it to WAL (a change the busy time-out does not cover): try again briefly.
        let mut attempt = 0;
        loop {
            let opened = async {
                // A SQLite connection cannot drop like a network one: no ping each time
                // one leaves the pool (a hand-off to its thread).
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .test_before_acquire(false)
                    .connect_with(options.clone())
                    .await?;
                let writer = Writer::open(&options).await?;
                let store = Self { db: Db { pool, writer } };
                store.migrate().await?;
                Ok::<_, StoreError>(store)
            }
            .await;
            match opened {
                Err(StoreError::Other(message)) if attempt < 5 && message.contains("locked") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations \
             (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *self.db.writer.lock().await?)
        .await?;
        for (version, sql) in MIGRATIONS {
            let mut tx = self.db.writer.begin().await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_none() {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.db.pool).await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn ensure_user(&self, user: &str) -> Result<(), StoreError> {
        sessions::ensure_user(&self.db, user).await
    }

    #[instrument(skip_all, fields(session = id))]
    async fn open_session(
        &self,
        user: &str,
        id: &str,
        name: Option<&str>,
    ) -> Result<(Session, bool), StoreError> {
        sessions::open(&self.db, user, id, name).await
    }

    #[instrument(skip_all, fields(session = id))]
    async fn session(&self, user: &str, id: &str) -> Result<Option<Session>, StoreError> {
        sessions::get(&self.db, user, id).await
    }

    #[instrument(skip_all)]
    async fn list_all_sessions(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Session>, u64), StoreError> {
        sessions::list_all(&self.db, offset, limit).await
    }

    #[instrument(skip_all)]
    async fn list_sessions(
        &self,
        user: &str,
        archived: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Session>, u64), StoreError> {
        sessions::list(&self.db, user, archived, offset, limit).await
    }

    #[instrument(skip_all, fields(session = id))]
    async fn set_session_flags(
        &self,
        user: &str,
        id: &str,
        pinned: Option<bool>,
        archived: Option<bool>,
    ) -> Result<Session, StoreError> {
        sessions::set_flags(&self.db, user, id, pinned, archived).await
    }

    #[instrument(skip_all)]
    async fn search_messages(
        &self,
        user: &str,
        query: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<SearchHit>, u64), StoreError> {
        search::search(&self.db, user, query, offset, limit).await
    }

    #[instrument(skip_all, fields(session = id))]
    async fn rename_session(
        &self,
        user: &str,
        id: &str,
        name: &str,
    ) -> Result<Session, StoreError> {
        sessions::rename(&self.db, user, id, name).await
    }

    #[instrument(skip_all, fields(session = id))]
    async fn delete_session(&self, user: &str, id: &str) -> Result<(), StoreError> {
        sessions::delete(&self.db, user, id).await
    }

    #[instrument(skip_all, fields(session))]
    async fn acquire_lease(
        &self,
        session: i64,
        node: &str,
        until: i64,
        steal: bool,
    ) -> Result<Option<Lease>, StoreError> {
        leases::acquire(&self.db, session, node, until, steal).await
    }

    async fn renew_leases(&self, node: &str, until: i64) -> Result<Vec<Fence>, StoreError> {
        leases::renew(&self.db, node, until).await
    }

    async fn release_lease(&self, fence: Fence) -> Result<(), StoreError> {
        leases::release(&self.db, fence).await
    }

    #[instrument(skip_all)]
    async fn orphans(&self, now: i64) -> Result<Vec<Orphan>, StoreError> {
        leases::orphans(&self.db, now).await
    }

    async fn lease_holder(&self, session: i64, now: i64) -> Result<Option<String>, StoreError> {
        leases::holder(&self.db, session, now).await
    }

    async fn unfinished_turns(&self, user: &str) -> Result<u64, StoreError> {
        turns::unfinished(&self.db, user).await
    }

    async fn running_turns(
        &self,
        user: Option<&str>,
        now: i64,
    ) -> Result<Vec<RunningTurn>, StoreError> {
        turns::running(&self.db, user, now).await
    }

    #[instrument(skip_all)]
    async fn record_usage(
        &self,
        user: &str,
        turn_id: &str,
        step: i64,
        model: &str,
        usage: &Usage,
    ) -> Result<(), StoreError> {
        usage::record(&mut *self.db.writer.lock().await?, user, turn_id, step, model, usage).await
    }

    #[instrument(skip_all)]
    async fn usage_report(&self, query: &UsageQuery) -> Result<Vec<UsageLine>, StoreError> {
        usage::report(&self.db, query).await
    }

    #[instrument(skip_all)]
    async fn spent_since(&self, user: &str, since: i64) -> Result<f64, StoreError> {
        usage::spent(&self.db, user, since).await
    }

    async fn turn_session(
        &self,
        user: &str,
        turn_id: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        turns::session_of(&self.db, user, turn_id).await
    }

    #[instrument(skip_all)]
    async fn turn(&self, user: &str, turn_id: &str) -> Result<Option<TurnRecord>, StoreError> {
        turns::record(&self.db, user, turn_id).await
    }

    #[instrument(skip_all)]
    async fn turn_messages(&self, session: i64, turn_seq: i64) -> Result<Vec<Message>, StoreError> {
        messages::of_turn(&self.db, session, turn_seq).await
    }

    #[instrument(skip_all)]
    async fn all_messages(&self, session: i64) -> Result<Vec<Message>, StoreError> {
        messages::all(&self.db, session).await
    }

    async fn set_session_state(&self, fence: Fence, state: &str) -> Result<(), StoreError> {
        sessions::set_state(&self.db, fence, state).await
    }

    async fn reserve_seq(&self, fence: Fence, up_to: i64) -> Result<(), StoreError> {
        sessions::reserve_seq(&self.db, fence, up_to).await
    }

    #[instrument(skip_all)]
    async fn append_message(&self, fence: Fence, message: &NewMessage) -> Result<i64, StoreError> {
        messages::append(&self.db, fence, message).await
    }

    async fn update_message(
        &self,
        fence: Fence,
        id: i64,
        content: &str,
        reasoning: Option<&str>,
        tool_calls: &[ToolCall],
        status: MessageStatus,
    ) -> Result<(), StoreError> {
        messages::update(&self.db, fence, id, content, reasoning, tool_calls, status).await
    }

    #[instrument(skip_all)]
    async fn update_partials(&self, partials: &[PartialText]) -> Result<(), StoreError> {
        messages::update_partials(&self.db, partials).await
    }

    #[instrument(skip_all)]
    async fn messages(
        &self,
        session: i64,
        branch: Option<i64>,
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError> {
        messages::page(&self.db, session, branch, before_seq, limit).await
    }

    #[instrument(skip_all)]
    async fn turn_of(&self, session: i64, seq: i64) -> Result<Option<i64>, StoreError> {
        messages::turn_of(&self.db, session, seq).await
    }

    #[instrument(skip_all)]
    async fn history(&self, session: i64, up_to_turn: i64) -> Result<Vec<Message>, StoreError> {
        messages::history(&self.db, session, up_to_turn).await
    }

    #[instrument(skip_all)]
    async fn create_turn(
        &self,
        fence: Fence,
        turn_id: &str,
        model: &str,
        message: &NewMessage,
        starts: bool,
    ) -> Result<(), StoreError> {
        turns::create(&self.db, fence, turn_id, model, message, starts).await
    }

    async fn start_turn(&self, fence: Fence, turn_id: &str) -> Result<(), StoreError> {
        turns::start(&self.db, fence, turn_id).await
    }

    async fn finish_turn(
        &self,
        fence: Fence,
        turn_id: &str,
        end: &TurnEnd,
    ) -> Result<(), StoreError> {
        turns::finish(&self.db, fence, turn_id, end).await
    }

    async fn start_tool_call(
        &self,
        fence: Fence,
        turn_id: &str,
        call: &ToolCall,
    ) -> Result<i64, StoreError> {
        turns::start_tool_call(&self.db, fence, turn_id, call).await
    }

    async fn finish_tool_call(
        &self,
        fence: Fence,
        pk: i64,
        output: &str,
        is_error: bool,
        status: &str,
        duration_ms: i64,
    ) -> Result<(), StoreError> {
        turns::finish_tool_call(&self.db, fence, pk, output, is_error, status, duration_ms).await
    }

    async fn tool_calls(&self, session: i64) -> Result<Vec<ToolCallRecord>, StoreError> {
        turns::tool_calls(&self.db, session, None).await
    }

    async fn turn_tool_calls(
        &self,
        session: i64,
        turn_id: &str,
    ) -> Result<Vec<ToolCallRecord>, StoreError> {
        turns::tool_calls(&self.db, session, Some(turn_id)).await
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        auth::create_token(&self.db, token).await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        auth::token_by_hash(&self.db, hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        auth::list_tokens(&self.db).await
    }

    async fn revoke_token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        auth::revoke_token(&self.db, id).await
    }

    async fn revoked_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        auth::revoked_since(&self.db, since).await
    }

    async fn active_tokens(&self) -> Result<u64, StoreError> {
        auth::active_tokens(&self.db).await
    }

    async fn create_pairing_code(
        &self,
        hash: &str,
        expires_at: i64,
        grant: &PairingGrant,
    ) -> Result<(), StoreError> {
        auth::create_pairing_code(&self.db, hash, expires_at, grant).await
    }

    async fn pairing_code(&self, hash: &str) -> Result<Option<PairingGrant>, StoreError> {
        auth::pairing_code(&self.db, hash).await
    }

    async fn pair(
        &self,
        hash: &str,
        token: &TokenRecord,
        new_user: bool,
    ) -> Result<(), StoreError> {
        auth::pair(&self.db, hash, token, new_user).await
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        auth::audit(&self.db, entry).await
    }

    async fn audit_log(&self, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        auth::audit_log(&self.db, limit).await
    }

    #[instrument(skip_all)]
    async fn prune(
        &self,
        user: Option<&str>,
        max_sessions: u64,
        ttl_ms: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        maintenance::prune(&self.db, user, max_sessions, ttl_ms).await
    }
}

#[cfg(test)]
mod tests {
    use sqlx::ConnectOptions;

    use super::*;

    /// A database as migration 9 left it: a session with a user message and a streaming
    /// answer, both indexed by 0008's triggers.
    async fn before_settled_search(path: &Path) {
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true);
        let mut conn = options.connect().await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations \
             (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        for (version, sql) in &MIGRATIONS[..9] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql)).execute(&mut conn).await.unwrap();
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)")
                .bind(version)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::raw_sql(
            "INSERT INTO users (id, created_at) VALUES ('alice', 0); \
             INSERT INTO sessions (user_id, id, created_at, updated_at, last_seq) \
                 VALUES ('alice', 's', 0, 0, 2); \
             INSERT INTO messages (session_pk, seq, turn_seq, role, content, status, created_at) \
                 VALUES (1, 1, 1, 'user', 'tell me of zebras', 'complete', 0), \
                        (1, 2, 1, 'assistant', 'a zebra is', 'streaming', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }

    /// FTS5's integrity check: of the index itself, and with `settled` (every message of
    /// the database then belongs in the index) against the messages too, which catches a
    /// stray or a missing entry.
    async fn fts_is_whole(store: &SqliteStore, settled: bool) {
        sqlx::query("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', $1)")
            .bind(i64::from(settled))
            .execute(&mut *store.db.writer.lock().await.unwrap())
            .await
            .expect("the search index matches the messages it holds");
    }

    #[tokio::test]
    async fn migrating_to_the_settled_search_index_keeps_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parley.db");
        before_settled_search(&path).await;
        let store = SqliteStore::open(&path).await.unwrap();
        // The streaming answer is in the messages, not the index: the index alone.
        fts_is_whole(&store, false).await;
        let found = async |query: &str| {
            let (hits, _) = store.search_messages("alice", query, 0, 10).await.unwrap();
            hits.iter().map(|hit| hit.seq).collect::<Vec<_>>()
        };
        // The answer still streams: out of the index; the question stays in.
        assert_eq!(found("zebra").await, [1]);
        let fence = store.acquire_lease(1, "n", i64::MAX, false).await.unwrap().unwrap().fence;
        store
            .update_message(fence, 2, "a zebra is striped", None, &[], MessageStatus::Complete)
            .await
            .unwrap();
        assert_eq!(found("striped").await, [2]);
        fts_is_whole(&store, true).await;
        // A session deleted with an answer still streaming leaves the index whole.
        let streaming = NewMessage {
            status: MessageStatus::Streaming,
            ..NewMessage::text(3, 3, "t", crate::conversation::Role::Assistant, "half")
        };
        store.append_message(fence, &streaming).await.unwrap();
        store.delete_session("alice", "s").await.unwrap();
        fts_is_whole(&store, true).await;
        assert!(found("zebra").await.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_opening_a_new_file_at_once_both_open_it() {
        // Without the retry, one of the two found the file locked within a few rounds.
        for round in 0..60 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("parley.db");
            let (a, b) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
            assert!(a.is_ok() && b.is_ok(), "round {round}: {:?} / {:?}", a.err(), b.err());
        }
    }
}
