//! The SQLite store's usage ledger: each model call's tokens and cost, with its turn, model
//! and user, summed for reports and budgets.

use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use crate::clock::now_ms;
use crate::conversation::Usage;
use crate::store::{StoreError, UsageGroup, UsageLine, UsageQuery, from_nanos, nanos};

/// Adds one model call of a turn to the ledger, under `user` (once: the same step again
/// changes nothing). Not fenced: a call that was made is counted, whoever holds the session.
pub(super) async fn record(
    pool: &SqlitePool,
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
    .bind(count(usage.prompt_tokens))
    .bind(count(usage.completion_tokens))
    .bind(count(usage.cached_tokens))
    .bind(nanos(usage.cost))
    .bind(now_ms())
    .execute(pool)
    .await?;
    Ok(())
}

/// A token count as stored (past `i64::MAX`, which no real call reaches, it saturates).
fn count(tokens: u64) -> i64 {
    i64::try_from(tokens).unwrap_or(i64::MAX)
}

pub(super) async fn report(
    pool: &SqlitePool,
    query: &UsageQuery,
) -> Result<Vec<UsageLine>, StoreError> {
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
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            let count = |name: &str| -> Result<u64, sqlx::Error> {
                Ok(row.try_get::<Option<i64>, _>(name)?.unwrap_or(0).max(0) as u64)
            };
            let key: String = row.try_get("k")?;
            let (prompt, completion) = (count("prompt")?, count("completion")?);
            Ok(UsageLine {
                key: day_or(query.group_by, key),
                turns: count("turns")?,
                usage: Usage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    total_tokens: prompt + completion,
                    cached_tokens: count("cached")?,
                    cost: row.try_get::<Option<i64>, _>("cost")?.map(from_nanos),
                },
            })
        })
        .collect()
}

pub(super) async fn spent(pool: &SqlitePool, user: &str, since: i64) -> Result<f64, StoreError> {
    let nanos: Option<i64> = sqlx::query_scalar(
        "SELECT SUM(cost_nanos) FROM usage_records WHERE user_id = $1 AND created_at >= $2",
    )
    .bind(user)
    .bind(since)
    .fetch_one(pool)
    .await?;
    Ok(nanos.map_or(0.0, from_nanos))
}

/// A day number as its date; any other key as it is.
fn day_or(group: UsageGroup, key: String) -> String {
    match (group, key.parse::<i64>()) {
        (UsageGroup::Day, Ok(day)) => crate::clock::date(day),
        _ => key,
    }
}
