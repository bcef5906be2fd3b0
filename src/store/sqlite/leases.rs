//! The SQLite store's session leases: taking one (and cleaning up what the previous holder
//! left unfinished, in the same transaction), renewing and releasing them, finding sessions
//! whose holder is gone, and the fence check every write of a turn makes first.

use sqlx::{Row, SqliteConnection};

use super::Db;
use crate::clock::now_ms;
use crate::store::{Fence, Lease, Orphan, QueuedTurn, StoreError};

/// Fails with [`StoreError::Fenced`] unless `fence` is still the session's. Called inside
/// the write transaction (`BEGIN IMMEDIATE` holds the write lock), so no acquisition can
/// slip in between the check and the write.
pub(super) async fn check(conn: &mut SqliteConnection, fence: Fence) -> Result<(), StoreError> {
    let held: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM sessions WHERE pk = $1 AND lease_fence = $2")
            .bind(fence.session)
            .bind(fence.token)
            .fetch_optional(conn)
            .await?;
    held.map(|_| ()).ok_or(StoreError::Fenced)
}

/// [`check`] and the session's state set (when given) in one statement.
pub(super) async fn check_setting(
    conn: &mut SqliteConnection,
    fence: Fence,
    state: Option<&str>,
) -> Result<(), StoreError> {
    let updated = sqlx::query(
        "UPDATE sessions SET state = COALESCE($3, state) WHERE pk = $1 AND lease_fence = $2",
    )
    .bind(fence.session)
    .bind(fence.token)
    .bind(state)
    .execute(conn)
    .await?;
    if updated.rows_affected() == 0 { Err(StoreError::Fenced) } else { Ok(()) }
}

pub(super) async fn acquire(
    db: &Db,
    session: i64,
    node: &str,
    until: i64,
    steal: bool,
) -> Result<Option<Lease>, StoreError> {
    let now = now_ms();
    let mut tx = db.writer.begin().await?;
    let taken = sqlx::query(
        "UPDATE sessions SET lease_node = $1, lease_until = $2, lease_fence = lease_fence + 1, \
         state = CASE WHEN last_seq = 0 THEN 'idle' ELSE state END \
         WHERE pk = $3 AND (lease_node IS NULL OR lease_node = $1 OR lease_until < $4 OR $5) \
         RETURNING lease_fence, last_seq",
    )
    .bind(node)
    .bind(until)
    .bind(session)
    .bind(now)
    .bind(steal)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = taken else {
        return Ok(None);
    };
    let fence = Fence { session, token: row.try_get("lease_fence")? };
    let reserved_seq = row.try_get("last_seq")?;
    if reserved_seq == 0 {
        // Nothing was ever numbered in the session (every stored message and every reserved
        // seq raises last_seq): no turn ran or waits, and the update left it idle. A new
        // session's first lease skips the look for what a previous holder left.
        tx.commit().await?;
        let (interrupted, queued) = (Vec::new(), Vec::new());
        return Ok(Some(Lease { fence, reserved_seq, stored_seq: 0, interrupted, queued }));
    }
    // What the previous holder was doing when it stopped: the running turn and the partial
    // answer it had stored.
    let interrupted: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.id, COALESCE(( \
           SELECT group_concat(m.content, '') FROM messages m \
           WHERE m.session_pk = t.session_pk AND m.turn_id = t.id AND m.status = 'streaming'), '') \
         FROM turns t WHERE t.session_pk = $1 AND t.status = 'running' ORDER BY t.created_at",
    )
    .bind(session)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE turns SET status = 'interrupted', finished_at = $1 \
         WHERE session_pk = $2 AND status = 'running'",
    )
    .bind(now)
    .bind(session)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE messages SET status = 'interrupted' \
         WHERE session_pk = $1 AND status = 'streaming'",
    )
    .bind(session)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE tool_calls SET status = 'interrupted', is_error = 1, \
         output = COALESCE(output, 'interrupted: the server stopped while this tool ran') \
         WHERE session_pk = $1 AND status = 'running'",
    )
    .bind(session)
    .execute(&mut *tx)
    .await?;
    let queued = sqlx::query_as(
        "SELECT t.id, m.seq, t.model FROM turns t \
         JOIN messages m ON m.session_pk = t.session_pk AND m.turn_id = t.id AND m.role = 'user' \
         WHERE t.session_pk = $1 AND t.status = 'queued' ORDER BY m.seq",
    )
    .bind(session)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(turn_id, user_seq, model)| QueuedTurn { turn_id, user_seq, model })
    .collect::<Vec<_>>();
    // Busy while the queued turns wait for the new holder's worker; idle otherwise.
    let state = if queued.is_empty() { "idle" } else { "running" };
    sqlx::query("UPDATE sessions SET state = $1 WHERE pk = $2")
        .bind(state)
        .bind(session)
        .execute(&mut *tx)
        .await?;
    let stored_seq: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE session_pk = $1")
            .bind(session)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(Some(Lease { fence, reserved_seq, stored_seq, interrupted, queued }))
}

pub(super) async fn renew(db: &Db, node: &str, until: i64) -> Result<Vec<Fence>, StoreError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "UPDATE sessions SET lease_until = $1 WHERE lease_node = $2 RETURNING pk, lease_fence",
    )
    .bind(until)
    .bind(node)
    .fetch_all(&mut *db.writer.lock().await?)
    .await?;
    Ok(rows.into_iter().map(|(session, token)| Fence { session, token }).collect())
}

pub(super) async fn release(db: &Db, fence: Fence) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE sessions SET lease_node = NULL, lease_until = 0 \
         WHERE pk = $1 AND lease_fence = $2",
    )
    .bind(fence.session)
    .bind(fence.token)
    .execute(&mut *db.writer.lock().await?)
    .await?;
    Ok(())
}

pub(super) async fn orphans(db: &Db, now: i64) -> Result<Vec<Orphan>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT s.user_id, s.id FROM sessions s WHERE (s.lease_node IS NULL OR s.lease_until < $1) \
         AND s.pk IN (SELECT session_pk FROM turns WHERE status IN ('queued', 'running'))",
    )
    .bind(now)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(|(user, id)| Orphan { user, id }).collect())
}

pub(super) async fn holder(db: &Db, session: i64, now: i64) -> Result<Option<String>, StoreError> {
    let holder: Option<Option<String>> =
        sqlx::query_scalar("SELECT lease_node FROM sessions WHERE pk = $1 AND lease_until >= $2")
            .bind(session)
            .bind(now)
            .fetch_optional(&db.pool)
            .await?;
    Ok(holder.flatten())
}
