//! The SQLite store's maintenance: pruning old sessions.

use super::{Db, bound};
use crate::clock::now_ms;
use crate::store::StoreError;

pub(super) async fn prune(
    db: &Db,
    user: Option<&str>,
    max_sessions: u64,
    ttl_ms: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut pruned = Vec::new();
    if ttl_ms > 0 {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM sessions WHERE state = 'idle' AND NOT pinned AND updated_at < $1 \
             AND ($2 IS NULL OR user_id = $2) RETURNING user_id, id",
        )
        .bind(now_ms() - ttl_ms)
        .bind(user)
        .fetch_all(&mut *db.writer.lock().await?)
        .await?;
        pruned.extend(rows);
    }
    if max_sessions > 0 {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM sessions WHERE state = 'idle' AND NOT pinned AND pk IN ( \
               SELECT pk FROM ( \
                 SELECT pk, ROW_NUMBER() OVER \
                   (PARTITION BY user_id ORDER BY updated_at DESC, pk DESC) AS rank \
                 FROM sessions WHERE ($1 IS NULL OR user_id = $1) AND NOT pinned) ranked \
               WHERE rank > $2) RETURNING user_id, id",
        )
        .bind(user)
        .bind(bound(max_sessions))
        .fetch_all(&mut *db.writer.lock().await?)
        .await?;
        pruned.extend(rows);
    }
    Ok(pruned)
}
