//! The PostgreSQL store, for several nodes sharing one database: a small pool with short
//! time-outs, migrations embedded in the binary and applied under an advisory lock.
//!
//! This file opens and migrates the database and dispatches each [`Store`] method to the
//! file that owns its tables (`sessions`, `messages`, `turns`, `auth`, `maintenance`),
//! mirroring `store/sqlite/` file for file; only the SQL differs, and strings pass through
//! `text.rs` on the way in and out, because PostgreSQL's TEXT cannot hold U+0000.
//!
//! Where SQLite serializes writers with `BEGIN IMMEDIATE`, two nodes here write at once
//! under READ COMMITTED. Every write that reads first is therefore a single statement that
//! locks what it reads: `INSERT … ON CONFLICT` (opening a session), `UPDATE … RETURNING`
//! (renaming, revoking), or an `UPDATE` whose `WHERE` is re-checked once the row lock is
//! granted (spending a pairing code), and counters are bumped in place
//! (`message_count + 1`, `GREATEST(last_seq, …)`), never read and written back.

mod auth;
mod copy;
mod leases;
mod maintenance;
mod messages;
mod search;
mod sessions;
mod text;
mod turns;
mod usage;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};
use tracing::instrument;

use super::{
    AuditEntry, Fence, Lease, Message, MessageStatus, NewMessage, Orphan, PairingGrant,
    PartialText, RunningTurn, SearchHit, Session, Store, StoreError, TokenRecord, ToolCallRecord,
    TurnEnd, TurnRecord, UsageLine, UsageQuery,
};
use crate::clock::now_ms;
use crate::conversation::{ToolCall, Usage};

/// Migrations in order; each runs once, inside a transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../../migrations/postgres/0002_auth.sql")),
    (3, include_str!("../../../migrations/postgres/0003_pairing_grants.sql")),
    (4, include_str!("../../../migrations/postgres/0004_leases.sql")),
    (5, include_str!("../../../migrations/postgres/0005_turn_lookup.sql")),
    (6, include_str!("../../../migrations/postgres/0006_usage.sql")),
    (7, include_str!("../../../migrations/postgres/0007_branches.sql")),
    (8, include_str!("../../../migrations/postgres/0008_organize.sql")),
    (9, include_str!("../../../migrations/postgres/0009_search_folding.sql")),
    (10, include_str!("../../../migrations/postgres/0010_search_settled.sql")),
];

/// The advisory lock key that serializes migrations across nodes ("parley" in ASCII).
/// Advisory locks are per database, not per schema: stores in several schemas of one
/// database (the contract tests' way) migrate one after the other, which only costs a wait.
const MIGRATION_LOCK: i64 = 0x7061_726c_6579;

/// Connections per node: a turn writes a few rows at a time, so a handful suffices and
/// many nodes stay well under the server's `max_connections`.
const POOL_SIZE: u32 = 8;

/// How long to wait for a connection, including connecting: a database that is down fails
/// start-up and requests quickly instead of hanging them.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// [`super::Store`] on a PostgreSQL database.
pub struct PostgresStore {
    pool: PgPool,
}

/// A count for `LIMIT` / `OFFSET`: past `i64::MAX` means "all" / "past the end", never
/// the negative number a plain cast would make (PostgreSQL refuses negative ones).
fn bound(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A write transaction, READ COMMITTED: the statements in it lock the rows they change, so
/// they need no stronger isolation (see the module documentation).
async fn write(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin().await
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://` or `postgresql://`; its `options`
    /// parameter, such as `options=-c search_path=NAME`, reaches the server) and applies
    /// pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|err| match err {
                sqlx::Error::PoolTimedOut => StoreError::Other(format!(
                    "no connection to PostgreSQL within {}s: is it running and reachable?",
                    CONNECT_TIMEOUT.as_secs()
                )),
                other => other.into(),
            })?;
        migrate(&pool).await?;
        Ok(Self { pool })
    }
}

/// Applies pending migrations while holding the migration lock, so nodes starting together
/// migrate one after the other and the later ones find nothing to do.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    // The lock belongs to the connection's session, so this connection is taken out of the
    // pool: if a step fails it is dropped (closing it releases the lock), never handed back
    // to the pool still holding the lock.
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut conn).await?;
    apply_migrations(&mut conn).await?;
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

async fn apply_migrations(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    for (version, sql) in MIGRATIONS {
        let mut tx = conn.begin().await?;
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

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn ensure_user(&self, user: &str) -> Result<(), StoreError> {
        sessions::ensure_user(&self.pool, user).await
    }

    #[instrument(skip_all, fields(session = id))]
    async fn open_session(
        &self,
        user: &str,
        id: &str,
        name: Option<&str>,
    ) -> Result<(Session, bool), StoreError> {
        sessions::open(&self.pool, user, id, name).await
    }

    #[instrument(skip_all, fields(session = id))]
    async fn session(&self, user: &str, id: &str) -> Result<Option<Session>, StoreError> {
        sessions::get(&self.pool, user, id).await
    }

    #[instrument(skip_all)]
    async fn list_all_sessions(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Session>, u64), StoreError> {
        sessions::list_all(&self.pool, offset, limit).await
    }

    #[instrument(skip_all)]
    async fn list_sessions(
        &self,
        user: &str,
        archived: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Session>, u64), StoreError> {
        sessions::list(&self.pool, user, archived, offset, limit).await
    }

    #[instrument(skip_all, fields(session = id))]
    async fn set_session_flags(
        &self,
        user: &str,
        id: &str,
        pinned: Option<bool>,
        archived: Option<bool>,
    ) -> Result<Session, StoreError> {
        sessions::set_flags(&self.pool, user, id, pinned, archived).await
    }

    #[instrument(skip_all)]
    async fn search_messages(
        &self,
        user: &str,
        query: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<SearchHit>, u64), StoreError> {
        search::search(&self.pool, user, query, offset, limit).await
    }

    #[instrument(skip_all, fields(session = id))]
    async fn rename_session(
        &self,
        user: &str,
        id: &str,
        name: &str,
    ) -> Result<Session, StoreError> {
        sessions::rename(&self.pool, user, id, name).await
    }

    #[instrument(skip_all, fields(session = id))]
    async fn delete_session(&self, user: &str, id: &str) -> Result<(), StoreError> {
        sessions::delete(&self.pool, user, id).await
    }

    #[instrument(skip_all, fields(session))]
    async fn acquire_lease(
        &self,
        session: i64,
        node: &str,
        until: i64,
        steal: bool,
    ) -> Result<Option<Lease>, StoreError> {
        leases::acquire(&self.pool, session, node, until, steal).await
    }

    async fn renew_leases(&self, node: &str, until: i64) -> Result<Vec<Fence>, StoreError> {
        leases::renew(&self.pool, node, until).await
    }

    async fn release_lease(&self, fence: Fence) -> Result<(), StoreError> {
        leases::release(&self.pool, fence).await
    }

    #[instrument(skip_all)]
    async fn orphans(&self, now: i64) -> Result<Vec<Orphan>, StoreError> {
        leases::orphans(&self.pool, now).await
    }

    async fn lease_holder(&self, session: i64, now: i64) -> Result<Option<String>, StoreError> {
        leases::holder(&self.pool, session, now).await
    }

    async fn unfinished_turns(&self, user: &str) -> Result<u64, StoreError> {
        turns::unfinished(&self.pool, user).await
    }

    async fn running_turns(
        &self,
        user: Option<&str>,
        now: i64,
    ) -> Result<Vec<RunningTurn>, StoreError> {
        turns::running(&self.pool, user, now).await
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
        usage::record(&self.pool, user, turn_id, step, model, usage).await
    }

    #[instrument(skip_all)]
    async fn usage_report(&self, query: &UsageQuery) -> Result<Vec<UsageLine>, StoreError> {
        usage::report(&self.pool, query).await
    }

    #[instrument(skip_all)]
    async fn spent_since(&self, user: &str, since: i64) -> Result<f64, StoreError> {
        usage::spent(&self.pool, user, since).await
    }

    async fn turn_session(
        &self,
        user: &str,
        turn_id: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        turns::session_of(&self.pool, user, turn_id).await
    }

    #[instrument(skip_all)]
    async fn turn(&self, user: &str, turn_id: &str) -> Result<Option<TurnRecord>, StoreError> {
        turns::record(&self.pool, user, turn_id).await
    }

    #[instrument(skip_all)]
    async fn turn_messages(&self, session: i64, turn_seq: i64) -> Result<Vec<Message>, StoreError> {
        messages::of_turn(&self.pool, session, turn_seq).await
    }

    #[instrument(skip_all)]
    async fn all_messages(&self, session: i64) -> Result<Vec<Message>, StoreError> {
        messages::all(&self.pool, session).await
    }

    async fn set_session_state(&self, fence: Fence, state: &str) -> Result<(), StoreError> {
        sessions::set_state(&self.pool, fence, state).await
    }

    async fn reserve_seq(&self, fence: Fence, up_to: i64) -> Result<(), StoreError> {
        sessions::reserve_seq(&self.pool, fence, up_to).await
    }

    #[instrument(skip_all)]
    async fn append_message(&self, fence: Fence, message: &NewMessage) -> Result<i64, StoreError> {
        messages::append(&self.pool, fence, message).await
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
        messages::update(&self.pool, fence, id, content, reasoning, tool_calls, status).await
    }

    #[instrument(skip_all)]
    async fn update_partials(&self, partials: &[PartialText]) -> Result<(), StoreError> {
        messages::update_partials(&self.pool, partials).await
    }

    #[instrument(skip_all)]
    async fn messages(
        &self,
        session: i64,
        branch: Option<i64>,
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError> {
        messages::page(&self.pool, session, branch, before_seq, limit).await
    }

    #[instrument(skip_all)]
    async fn turn_of(&self, session: i64, seq: i64) -> Result<Option<i64>, StoreError> {
        messages::turn_of(&self.pool, session, seq).await
    }

    #[instrument(skip_all)]
    async fn history(&self, session: i64, up_to_turn: i64) -> Result<Vec<Message>, StoreError> {
        messages::history(&self.pool, session, up_to_turn).await
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
        turns::create(&self.pool, fence, turn_id, model, message, starts).await
    }

    async fn start_turn(&self, fence: Fence, turn_id: &str) -> Result<(), StoreError> {
        turns::start(&self.pool, fence, turn_id).await
    }

    async fn finish_turn(
        &self,
        fence: Fence,
        turn_id: &str,
        end: &TurnEnd,
    ) -> Result<(), StoreError> {
        turns::finish(&self.pool, fence, turn_id, end).await
    }

    async fn start_tool_call(
        &self,
        fence: Fence,
        turn_id: &str,
        call: &ToolCall,
    ) -> Result<i64, StoreError> {
        turns::start_tool_call(&self.pool, fence, turn_id, call).await
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
        turns::finish_tool_call(&self.pool, fence, pk, output, is_error, status, duration_ms).await
    }

    async fn tool_calls(&self, session: i64) -> Result<Vec<ToolCallRecord>, StoreError> {
        turns::tool_calls(&self.pool, session, None).await
    }

    async fn turn_tool_calls(
        &self,
        session: i64,
        turn_id: &str,
    ) -> Result<Vec<ToolCallRecord>, StoreError> {
        turns::tool_calls(&self.pool, session, Some(turn_id)).await
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        auth::create_token(&self.pool, token).await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        auth::token_by_hash(&self.pool, hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        auth::list_tokens(&self.pool).await
    }

    async fn revoke_token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        auth::revoke_token(&self.pool, id).await
    }

    async fn revoked_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        auth::revoked_since(&self.pool, since).await
    }

    async fn active_tokens(&self) -> Result<u64, StoreError> {
        auth::active_tokens(&self.pool).await
    }

    async fn create_pairing_code(
        &self,
        hash: &str,
        expires_at: i64,
        grant: &PairingGrant,
    ) -> Result<(), StoreError> {
        auth::create_pairing_code(&self.pool, hash, expires_at, grant).await
    }

    async fn pairing_code(&self, hash: &str) -> Result<Option<PairingGrant>, StoreError> {
        auth::pairing_code(&self.pool, hash).await
    }

    async fn pair(
        &self,
        hash: &str,
        token: &TokenRecord,
        new_user: bool,
    ) -> Result<(), StoreError> {
        auth::pair(&self.pool, hash, token, new_user).await
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        auth::audit(&self.pool, entry).await
    }

    async fn audit_log(&self, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        auth::audit_log(&self.pool, limit).await
    }

    #[instrument(skip_all)]
    async fn prune(
        &self,
        user: Option<&str>,
        max_sessions: u64,
        ttl_ms: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        maintenance::prune(&self.pool, user, max_sessions, ttl_ms).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn a_database_that_is_down_fails_the_open_within_seconds() {
        let started = Instant::now();
        // Nothing listens on port 1: connecting is refused, and retried until the time-out.
        let opened = PostgresStore::open("postgres://postgres@127.0.0.1:1/parley").await;
        let Err(StoreError::Other(message)) = opened else {
            panic!("opened a database that is not there");
        };
        assert!(message.contains("no connection to PostgreSQL"), "{message}");
        assert!(started.elapsed() < CONNECT_TIMEOUT * 3, "took {:?}", started.elapsed());
    }
}
