//! The SQLite store's usage ledger: each model call's tokens and cost, with its turn, model
//! and user, summed for reports and budgets.

use sqlx::Row;

use super::Db;
use crate::clock::now_ms;
use crate::conversation::Usage;
use crate::store::{
    StoreError, Sums, UsageGroup, UsageLine, UsageQuery, from_nanos, nanos, stored_count,
};

/// Adds one model call of a turn to the ledger, under `user` (once: the same step again
/// changes nothing). Not fenced: a call that was made is counted, whoever holds the session.
pub(super) async fn record<'c>(
    conn: impl sqlx::SqliteExecutor<'c>,
    user: &str,
    turn_id: &str,
    step: i64,
    model: &str,
    usage: &Usage,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO usage_records (turn_id, step, model, user_id, prompt_tokens, \
         completion_tokens, cached_tokens, cost_nanos, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (turn_id, step) DO NOTHING",
    )
    .bind(turn_id)
    .bind(step)
    .bind(model)
    .bind(user)
    .bind(stored_count(usage.prompt_tokens))
    .bind(stored_count(usage.completion_tokens))
    .bind(stored_count(usage.cached_tokens))
    .bind(nanos(usage.cost))
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn report(db: &Db, query: &UsageQuery) -> Result<Vec<UsageLine>, StoreError> {
    let key = match query.group_by {
        UsageGroup::User => "user_id",
        UsageGroup::Model => "model",
        UsageGroup::Day => "CAST(created_at / 86400000 AS TEXT)",
    };
    let sql = format!(
        "SELECT {key} AS k, COUNT(DISTINCT turn_id) AS turns, SUM(prompt_tokens) AS prompt, \
         SUM(completion_tokens) AS completion, SUM(cached_tokens) AS cached, \
         SUM(cost_nanos) AS cost FROM usage_records \
         WHERE created_at >= $1 AND created_at < $2 AND ($3 IS NULL OR user_id = $3) \
         GROUP BY k ORDER BY MIN(created_at)"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(query.from)
        .bind(query.to)
        .bind(query.user.as_deref())
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|row| {
            let sums = Sums {
                key: row.try_get("k")?,
                turns: row.try_get("turns")?,
                prompt: row.try_get("prompt")?,
                completion: row.try_get("completion")?,
                cached: row.try_get("cached")?,
                cost_nanos: row.try_get("cost")?,
            };
            Ok(sums.into_line(query.group_by))
        })
        .collect()
}

pub(super) async fn spent(db: &Db, user: &str, since: i64) -> Result<f64, StoreError> {
    let nanos: Option<i64> = sqlx::query_scalar(
        "SELECT SUM(cost_nanos) FROM usage_records WHERE user_id = $1 AND created_at >= $2",
    )
    .bind(user)
    .bind(since)
    .fetch_one(&db.pool)
    .await?;
    Ok(nanos.map_or(0.0, from_nanos))
}
