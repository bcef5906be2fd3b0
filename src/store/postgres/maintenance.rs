//! The PostgreSQL store's maintenance: start-up recovery after a crash, and pruning.

use sqlx::postgres::PgPool;

use super::text::{escape_opt, unescape};
use super::{bound, write};
use crate::clock::now_ms;
use crate::store::{Recovery, StoreError};

pub(super) async fn recover(pool: &PgPool) -> Result<Recovery, StoreError> {
    let mut tx = write(pool).await?;
    let turns = sqlx::query(
        "UPDATE turns SET status = 'interrupted', finished_at = $1 \
         WHERE status IN ('queued', 'running')",
    )
    .bind(now_ms())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let messages =
        sqlx::query("UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'")
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let tool_calls = sqlx::query(
        "UPDATE tool_calls SET status = 'interrupted', is_error = TRUE, \
         output = COALESCE(output, 'interrupted: the server stopped while this tool ran') \
         WHERE status = 'running'",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("UPDATE sessions SET state = 'idle' WHERE state <> 'idle'")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Recovery { turns, messages, tool_calls })
}

pub(super) async fn prune(
    pool: &PgPool,
    user: Option<&str>,
    max_sessions: u64,
    ttl_ms: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut pruned = Vec::new();
    if ttl_ms > 0 {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM sessions WHERE state = 'idle' AND updated_at < $1 \
             AND ($2 IS NULL OR user_id = $2) RETURNING user_id, id",
        )
        .bind(now_ms() - ttl_ms)
        .bind(escape_opt(user))
        .fetch_all(pool)
        .await?;
        pruned.extend(rows.into_iter().map(|(user, id)| (unescape(user), unescape(id))));
    }
    if max_sessions > 0 {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM sessions WHERE state = 'idle' AND pk IN ( \
               SELECT pk FROM ( \
                 SELECT pk, ROW_NUMBER() OVER \
                   (PARTITION BY user_id ORDER BY updated_at DESC, pk DESC) AS rank \
                 FROM sessions WHERE ($1 IS NULL OR user_id = $1)) ranked \
               WHERE rank > $2) RETURNING user_id, id",
        )
        .bind(escape_opt(user))
        .bind(bound(max_sessions))
        .fetch_all(pool)
        .await?;
        pruned.extend(rows.into_iter().map(|(user, id)| (unescape(user), unescape(id))));
    }
    Ok(pruned)
}
