//! The SQLite store's users and sessions, and each session's reserved `seq` bound.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{Db, bound};
use crate::clock::now_ms;
use crate::store::{Fence, Session, StoreError};

const SESSION_COLUMNS: &str = "pk, user_id, id, name, state, message_count, last_seq, created_at, updated_at, pinned, \
     archived";

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
        pinned: row.try_get("pinned")?,
        archived: row.try_get("archived")?,
    })
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

pub(super) async fn ensure_user(db: &Db, user: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(user)
        .bind(now_ms())
        .execute(&mut *db.writer.lock().await?)
        .await?;
    Ok(())
}

pub(super) async fn open(
    db: &Db,
    user: &str,
    id: &str,
    name: Option<&str>,
) -> Result<(Session, bool), StoreError> {
    // Most opens find the session (every connection to it opens it): a read, without
    // waiting for the writer. Only a new one is made under the write lock, looked for again
    // there since another open may have made it meanwhile.
    if let Some(session) = get(db, user, id).await? {
        return Ok((session, false));
    }
    let mut tx = db.writer.begin().await?;
    if let Some(session) = session_in(&mut tx, user, id).await? {
        return Ok((session, false));
    }
    let now = now_ms();
    sqlx::query("INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
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
    let session = session_in(&mut tx, user, id).await?.ok_or(StoreError::NotFound)?;
    tx.commit().await?;
    Ok((session, true))
}

pub(super) async fn get(db: &Db, user: &str, id: &str) -> Result<Option<Session>, StoreError> {
    let mut conn = db.pool.acquire().await?;
    session_in(&mut conn, user, id).await
}

pub(super) async fn list_all(
    db: &Db,
    offset: u64,
    limit: u64,
) -> Result<(Vec<Session>, u64), StoreError> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions \
         ORDER BY updated_at DESC, pk DESC LIMIT $1 OFFSET $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(bound(limit))
        .bind(bound(offset))
        .fetch_all(&db.pool)
        .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(&db.pool).await?;
    let sessions = rows.iter().map(session_from_row).collect::<Result<_, _>>()?;
    Ok((sessions, total as u64))
}

pub(super) async fn list(
    db: &Db,
    user: &str,
    archived: bool,
    offset: u64,
    limit: u64,
) -> Result<(Vec<Session>, u64), StoreError> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND archived = $2 \
         ORDER BY pinned DESC, updated_at DESC, pk DESC LIMIT $3 OFFSET $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user)
        .bind(archived)
        .bind(bound(limit))
        .bind(bound(offset))
        .fetch_all(&db.pool)
        .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND archived = $2")
            .bind(user)
            .bind(archived)
            .fetch_one(&db.pool)
            .await?;
    let sessions = rows.iter().map(session_from_row).collect::<Result<_, _>>()?;
    Ok((sessions, total as u64))
}

pub(super) async fn rename(
    db: &Db,
    user: &str,
    id: &str,
    name: &str,
) -> Result<Session, StoreError> {
    let mut tx = db.writer.begin().await?;
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
    let session = session_in(&mut tx, user, id).await?.ok_or(StoreError::NotFound)?;
    tx.commit().await?;
    Ok(session)
}

/// Deletes the session; its messages, turns and tool calls go with it (`ON DELETE CASCADE`).
pub(super) async fn delete(db: &Db, user: &str, id: &str) -> Result<(), StoreError> {
    let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id = $2")
        .bind(user)
        .bind(id)
        .execute(&mut *db.writer.lock().await?)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) async fn set_state(db: &Db, fence: Fence, state: &str) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE sessions SET state = $1 WHERE pk = $2 AND lease_fence = $3")
        .bind(state)
        .bind(fence.session)
        .bind(fence.token)
        .execute(&mut *db.writer.lock().await?)
        .await?;
    fenced(done.rows_affected())
}

pub(super) async fn reserve_seq(db: &Db, fence: Fence, up_to: i64) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE sessions SET last_seq = MAX(last_seq, $1) WHERE pk = $2 AND lease_fence = $3",
    )
    .bind(up_to)
    .bind(fence.session)
    .bind(fence.token)
    .execute(&mut *db.writer.lock().await?)
    .await?;
    fenced(done.rows_affected())
}

/// A fenced single-statement update of the session row changed nothing: the fence moved on
/// (or the session is gone).
fn fenced(rows: u64) -> Result<(), StoreError> {
    if rows == 0 { Err(StoreError::Fenced) } else { Ok(()) }
}

pub(super) async fn set_flags(
    db: &Db,
    user: &str,
    id: &str,
    pinned: Option<bool>,
    archived: Option<bool>,
) -> Result<Session, StoreError> {
    let sql = format!(
        "UPDATE sessions SET pinned = COALESCE($1, pinned), archived = COALESCE($2, archived) \
         WHERE user_id = $3 AND id = $4 RETURNING {SESSION_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(pinned)
        .bind(archived)
        .bind(user)
        .bind(id)
        .fetch_optional(&mut *db.writer.lock().await?)
        .await?
        .ok_or(StoreError::NotFound)?;
    session_from_row(&row)
}
