//! The PostgreSQL store's maintenance: pruning old sessions.

use sqlx::postgres::PgPool;

use super::bound;
use super::text::{escape_opt, unescape};
use crate::clock::now_ms;
use crate::store::StoreError;

pub(super) async fn prune(
    pool: &PgPool,
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
        .bind(escape_opt(user))
        .fetch_all(pool)
        .await?;
        pruned.extend(rows.into_iter().map(|(user, id)| (unescape(user), unescape(id))));
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
        .bind(escape_opt(user))
        .bind(bound(max_sessions))
        .fetch_all(pool)
        .await?;
        pruned.extend(rows.into_iter().map(|(user, id)| (unescape(user), unescape(id))));
    }
    Ok(pruned)
}
