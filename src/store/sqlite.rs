//! The SQLite store: one file in WAL mode, migrations embedded in the binary.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};
use tracing::instrument;

use super::{
    AuditEntry, Message, MessageStatus, NewMessage, PairingGrant, PartialText, Recovery, Session,
    Store, StoreError, TokenRecord, ToolCallRecord, TurnEnd, TurnStatus,
};
use crate::clock::now_ms;
use crate::conversation::{Role, ToolCall};

/// Migrations in order; each runs once, inside a transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_auth.sql")),
    (3, include_str!("../../migrations/sqlite/0003_pairing_grants.sql")),
];

const SESSION_COLUMNS: &str =
    "pk, user_id, id, name, state, message_count, last_seq, created_at, updated_at";
const MESSAGE_COLUMNS: &str = "id, seq, turn_seq, turn_id, role, content, reasoning, tool_calls, \
                               tool_call_id, tool_name, status, created_at";

/// [`super::Store`] on a SQLite file.
pub struct SqliteStore {
    pool: SqlitePool,
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            other => StoreError::Other(other.to_string()),
        }
    }
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
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock up front, so a
    /// transaction that reads before it writes waits for other writers (busy timeout)
    /// instead of failing when one commits in between.
    pub(super) async fn write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations \
             (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for (version, sql) in MIGRATIONS {
            let mut tx = self.write().await?;
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

    async fn session_in(
        conn: &mut SqliteConnection,
        user: &str,
        id: &str,
    ) -> Result<Option<Session>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }
}

fn session_from_row(row: &SqliteRow) -> Result<Session, StoreError> {
    Ok(Session {
        pk: row.try_get("pk")?,
        user_id: row.try_get("user_id")?,
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        state: row.try_get("state")?,
        message_count: row.try_get("message_count")?,
        reserved_seq: row.try_get("last_seq")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn message_from_row(row: &SqliteRow) -> Result<Message, StoreError> {
    let role: String = row.try_get("role")?;
    let tool_calls: Option<String> = row.try_get("tool_calls")?;
    let status: String = row.try_get("status")?;
    Ok(Message {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        turn_seq: row.try_get("turn_seq")?,
        turn_id: row.try_get("turn_id")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Other(format!("bad role {role}")))?,
        content: row.try_get("content")?,
        reasoning: row.try_get("reasoning")?,
        tool_calls: match tool_calls {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| StoreError::Other(format!("bad tool_calls json: {e}")))?,
            None => Vec::new(),
        },
        tool_call_id: row.try_get("tool_call_id")?,
        tool_name: row.try_get("tool_name")?,
        status: MessageStatus::parse(&status),
        created_at: row.try_get("created_at")?,
    })
}

/// Inserts a message and counts it on its session; returns its id.
async fn insert_message(
    tx: &mut Transaction<'static, Sqlite>,
    session: i64,
    message: &NewMessage,
) -> Result<i64, StoreError> {
    let now = now_ms();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO messages (session_pk, seq, turn_seq, turn_id, role, content, reasoning, \
         tool_calls, tool_call_id, tool_name, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    )
    .bind(session)
    .bind(message.seq)
    .bind(message.turn_seq)
    .bind(&message.turn_id)
    .bind(message.role.as_str())
    .bind(&message.content)
    .bind(&message.reasoning)
    .bind(tool_calls_json(&message.tool_calls))
    .bind(&message.tool_call_id)
    .bind(&message.tool_name)
    .bind(message.status.as_str())
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE sessions SET message_count = message_count + 1, updated_at = $1, \
         last_seq = MAX(last_seq, $2) WHERE pk = $3",
    )
    .bind(now)
    .bind(message.seq)
    .bind(session)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

fn tool_calls_json(calls: &[ToolCall]) -> Option<String> {
    // Serializing plain strings cannot fail.
    (!calls.is_empty()).then(|| serde_json::to_string(calls).unwrap_or_default())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn ensure_user(&self, user: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(user)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[instrument(skip_all, fields(session = id))]
    async fn open_session(
        &self,
        user: &str,
        id: &str,
        name: Option<&str>,
    ) -> Result<(Session, bool), StoreError> {
        let mut tx = self.write().await?;
        if let Some(session) = Self::session_in(&mut tx, user, id).await? {
            return Ok((session, false));
        }
        let now = now_ms();
        sqlx::query(
            "INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(user)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO sessions (user_id, id, name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(user)
        .bind(id)
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let session = Self::session_in(&mut tx, user, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok((session, true))
    }

    #[instrument(skip_all, fields(session = id))]
    async fn session(&self, user: &str, id: &str) -> Result<Option<Session>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::session_in(&mut conn, user, id).await
    }

    #[instrument(skip_all)]
    async fn list_all_sessions(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Session>, u64), StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions \
             ORDER BY updated_at DESC, pk DESC LIMIT $1 OFFSET $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit as i64)
            .bind(offset as i64)
            .fetch_all(&self.pool)
            .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(&self.pool).await?;
        let sessions = rows.iter().map(session_from_row).collect::<Result<_, _>>()?;
        Ok((sessions, total as u64))
    }

    #[instrument(skip_all)]
    async fn list_sessions(
        &self,
        user: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Session>, u64), StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 \
             ORDER BY updated_at DESC, pk DESC LIMIT $2 OFFSET $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .bind(limit as i64)
            .bind(offset as i64)
            .fetch_all(&self.pool)
            .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1")
            .bind(user)
            .fetch_one(&self.pool)
            .await?;
        let sessions = rows.iter().map(session_from_row).collect::<Result<_, _>>()?;
        Ok((sessions, total as u64))
    }

    #[instrument(skip_all, fields(session = id))]
    async fn rename_session(
        &self,
        user: &str,
        id: &str,
        name: &str,
    ) -> Result<Session, StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE sessions SET name = $1, updated_at = $2 WHERE user_id = $3 AND id = $4",
        )
        .bind(name)
        .bind(now_ms())
        .bind(user)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let session = Self::session_in(&mut tx, user, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(session)
    }

    #[instrument(skip_all, fields(session = id))]
    async fn delete_session(&self, user: &str, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id = $2")
            .bind(user)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn set_session_state(&self, session: i64, state: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET state = $1 WHERE pk = $2")
            .bind(state)
            .bind(session)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn reserve_seq(&self, session: i64, up_to: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_seq = MAX(last_seq, $1) WHERE pk = $2")
            .bind(up_to)
            .bind(session)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn append_message(&self, session: i64, message: &NewMessage) -> Result<i64, StoreError> {
        let mut tx = self.write().await?;
        let id = insert_message(&mut tx, session, message).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn update_message(
        &self,
        id: i64,
        content: &str,
        reasoning: Option<&str>,
        tool_calls: &[ToolCall],
        status: MessageStatus,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE messages SET content = $1, reasoning = $2, tool_calls = $3, status = $4 \
             WHERE id = $5",
        )
        .bind(content)
        .bind(reasoning)
        .bind(tool_calls_json(tool_calls))
        .bind(status.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn update_partials(&self, partials: &[PartialText]) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        for partial in partials {
            sqlx::query(
                "UPDATE messages SET content = $1, reasoning = $2 \
                 WHERE id = $3 AND status = 'streaming'",
            )
            .bind(&partial.content)
            .bind(&partial.reasoning)
            .bind(partial.message_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[instrument(skip_all)]
    async fn messages(
        &self,
        session: i64,
        before_seq: Option<i64>,
        limit: u64,
    ) -> Result<Vec<Message>, StoreError> {
        // The cursor is a message's seq; its place in conversation order is (turn_seq, seq).
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_pk = $1 AND \
             (turn_seq, seq) < (COALESCE((SELECT turn_seq FROM messages \
                                          WHERE session_pk = $1 AND seq = $2), $2), $2) \
             ORDER BY turn_seq DESC, seq DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(before_seq.unwrap_or(i64::MAX))
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        let mut messages = rows.iter().map(message_from_row).collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        Ok(messages)
    }

    #[instrument(skip_all)]
    async fn history(&self, session: i64, up_to_turn: i64) -> Result<Vec<Message>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_pk = $1 AND turn_seq <= $2 \
             ORDER BY turn_seq, seq"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(up_to_turn)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(message_from_row).collect()
    }

    #[instrument(skip_all)]
    async fn create_turn(
        &self,
        session: i64,
        turn_id: &str,
        message: &NewMessage,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO turns (id, session_pk, status, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(turn_id)
        .bind(session)
        .bind(TurnStatus::Queued.as_str())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        insert_message(&mut tx, session, message).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn start_turn(&self, session: i64, turn_id: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE turns SET status = $1, started_at = $2 WHERE id = $3")
            .bind(TurnStatus::Running.as_str())
            .bind(now_ms())
            .bind(turn_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE sessions SET state = 'running' WHERE pk = $1")
            .bind(session)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_turn(&self, turn_id: &str, end: &TurnEnd) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE turns SET status = $1, error_code = $2, error_message = $3, model = $4, \
             prompt_tokens = $5, completion_tokens = $6, total_tokens = $7, finished_at = $8, \
             duration_ms = $9 WHERE id = $10",
        )
        .bind(end.status.as_str())
        .bind(&end.error_code)
        .bind(&end.error_message)
        .bind(&end.model)
        .bind(end.usage.prompt_tokens as i64)
        .bind(end.usage.completion_tokens as i64)
        .bind(end.usage.total_tokens as i64)
        .bind(now_ms())
        .bind(end.duration_ms)
        .bind(turn_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn start_tool_call(
        &self,
        session: i64,
        turn_id: &str,
        call: &ToolCall,
    ) -> Result<i64, StoreError> {
        let pk = sqlx::query_scalar(
            "INSERT INTO tool_calls (session_pk, turn_id, call_id, name, args, status, started_at) \
             VALUES ($1, $2, $3, $4, $5, 'running', $6) RETURNING pk",
        )
        .bind(session)
        .bind(turn_id)
        .bind(&call.id)
        .bind(&call.name)
        .bind(&call.arguments)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(pk)
    }

    async fn finish_tool_call(
        &self,
        pk: i64,
        output: &str,
        is_error: bool,
        status: &str,
        duration_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tool_calls SET output = $1, is_error = $2, status = $3, duration_ms = $4 \
             WHERE pk = $5",
        )
        .bind(output)
        .bind(is_error)
        .bind(status)
        .bind(duration_ms)
        .bind(pk)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn tool_calls(&self, session: i64) -> Result<Vec<ToolCallRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT call_id, turn_id, name, args, output, is_error, status, started_at, \
             duration_ms FROM tool_calls WHERE session_pk = $1 ORDER BY pk",
        )
        .bind(session)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ToolCallRecord {
                    id: row.try_get("call_id")?,
                    turn_id: row.try_get("turn_id")?,
                    name: row.try_get("name")?,
                    args: row.try_get("args")?,
                    output: row.try_get("output")?,
                    is_error: row.try_get("is_error")?,
                    status: row.try_get("status")?,
                    started_at: row.try_get("started_at")?,
                    duration_ms: row.try_get("duration_ms")?,
                })
            })
            .collect()
    }

    async fn recover(&self) -> Result<Recovery, StoreError> {
        self.recover_interrupted().await
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.insert_token(token).await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.find_token(hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.all_tokens().await
    }

    async fn revoke_token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        self.revoke(id).await
    }

    async fn revoked_since(&self, since: i64) -> Result<Vec<String>, StoreError> {
        self.revoked_after(since).await
    }

    async fn active_tokens(&self) -> Result<u64, StoreError> {
        self.count_active_tokens().await
    }

    async fn create_pairing_code(
        &self,
        hash: &str,
        expires_at: i64,
        grant: &PairingGrant,
    ) -> Result<(), StoreError> {
        self.insert_pairing_code(hash, expires_at, grant).await
    }

    async fn pairing_code(&self, hash: &str) -> Result<Option<PairingGrant>, StoreError> {
        self.find_pairing_code(hash).await
    }

    async fn pair(
        &self,
        hash: &str,
        token: &TokenRecord,
        new_user: bool,
    ) -> Result<(), StoreError> {
        self.spend_pairing_code(hash, token, new_user).await
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.append_audit(entry).await
    }

    async fn audit_log(&self, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        self.recent_audit(limit).await
    }

    async fn prune(
        &self,
        user: Option<&str>,
        max_sessions: u64,
        ttl_ms: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.prune_sessions(user, max_sessions, ttl_ms).await
    }
}
