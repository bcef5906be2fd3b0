//! The PostgreSQL store's turns (queued with their user message, started, finished with their
//! usage) and the tool-call timeline.

use sqlx::Row;
use sqlx::postgres::PgPool;

use super::text::{self, escape, escape_opt};
use super::{leases, messages, usage, write};
use crate::clock::now_ms;
use crate::conversation::ToolCall;
use crate::conversation::Usage;
use crate::store::{
    AnswerWrite, Fence, MessageStatus, NewMessage, RunningTurn, StoreError, ToolCallRecord,
    TurnEnd, TurnRecord, TurnStatus, from_nanos, nanos,
};

pub(super) async fn create(
    pool: &PgPool,
    fence: Fence,
    turn_id: &str,
    model: &str,
    message: &NewMessage,
    starts: bool,
) -> Result<(), StoreError> {
    let mut tx = write(pool).await?;
    // The message first: its session update checks the fence.
    let running = starts.then_some("running");
    messages::insert(&mut tx, fence, message, running).await?;
    let session = fence.session;
    let (status, now) = (if starts { TurnStatus::Running } else { TurnStatus::Queued }, now_ms());
    // The model asked for, until the turn's end records the one that served it.
    sqlx::query(
        "INSERT INTO turns (id, session_pk, status, model, created_at, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(escape(turn_id))
    .bind(session)
    .bind(status.as_str())
    .bind(escape(model))
    .bind(now)
    .bind(starts.then_some(now))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn start(pool: &PgPool, fence: Fence, turn_id: &str) -> Result<(), StoreError> {
    let mut tx = write(pool).await?;
    // The session first: its update checks the fence.
    let marked =
        sqlx::query("UPDATE sessions SET state = 'running' WHERE pk = $1 AND lease_fence = $2")
            .bind(fence.session)
            .bind(fence.token)
            .execute(&mut *tx)
            .await?;
    if marked.rows_affected() == 0 {
        return Err(StoreError::Fenced);
    }
    sqlx::query("UPDATE turns SET status = $1, started_at = $2 WHERE id = $3")
        .bind(TurnStatus::Running.as_str())
        .bind(now_ms())
        .bind(escape(turn_id))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn finish(
    pool: &PgPool,
    fence: Fence,
    turn_id: &str,
    end: &TurnEnd,
) -> Result<(), StoreError> {
    let mut tx = write(pool).await?;
    if let Some(call) = &end.ledger {
        let (user, turn, model) = (&call.user, &call.turn_id, &call.model);
        usage::record(&mut *tx, user, turn, call.step, model, &call.usage).await?;
    }
    // The fence is checked first, by the session's update that returns it to idle: the
    // answer's insert's when there is one.
    let idle = end.idle.then_some("idle");
    let fenced = match &end.answer {
        Some(AnswerWrite::Insert(message)) => {
            messages::insert(&mut tx, fence, message, idle).await.map(drop)
        }
        _ => leases::check_setting(&mut tx, fence, idle).await,
    };
    if let Err(err) = fenced {
        if end.ledger.is_some() && matches!(err, StoreError::Fenced) {
            // The call was made: it counts, whoever finishes the turn. Fenced all the same
            // if that fails: the caller's next step depends on it.
            if let Err(failed) = tx.commit().await {
                tracing::error!(%failed, "recording a fenced turn's last model call failed");
            }
        }
        return Err(err);
    }
    if let Some(AnswerWrite::Update { id, content, reasoning }) = &end.answer {
        let (reasoning, complete) = (reasoning.as_deref(), MessageStatus::Complete);
        messages::rewrite(&mut tx, *id, content, reasoning, &[], complete).await?;
    }
    sqlx::query(
        "UPDATE turns SET status = $1, error_code = $2, error_message = $3, model = $4, \
         prompt_tokens = $5, completion_tokens = $6, total_tokens = $7, finished_at = $8, \
         duration_ms = $9, cached_tokens = $10, cost_nanos = $11 WHERE id = $12",
    )
    .bind(end.status.as_str())
    .bind(escape_opt(end.error_code.as_deref()))
    .bind(escape_opt(end.error_message.as_deref()))
    .bind(escape_opt(end.model.as_deref()))
    .bind(end.usage.prompt_tokens as i64)
    .bind(end.usage.completion_tokens as i64)
    .bind(end.usage.total_tokens as i64)
    .bind(now_ms())
    .bind(end.duration_ms)
    .bind(end.usage.cached_tokens as i64)
    .bind(nanos(end.usage.cost))
    .bind(escape(turn_id))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn start_tool_call(
    pool: &PgPool,
    fence: Fence,
    turn_id: &str,
    call: &ToolCall,
) -> Result<i64, StoreError> {
    let mut tx = write(pool).await?;
    leases::check(&mut tx, fence).await?;
    let pk = sqlx::query_scalar(
        "INSERT INTO tool_calls (session_pk, turn_id, call_id, name, args, status, started_at) \
         VALUES ($1, $2, $3, $4, $5, 'running', $6) RETURNING pk",
    )
    .bind(fence.session)
    .bind(escape(turn_id))
    .bind(escape(&call.id))
    .bind(escape(&call.name))
    .bind(escape(&call.arguments))
    .bind(now_ms())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(pk)
}

pub(super) async fn finish_tool_call(
    pool: &PgPool,
    fence: Fence,
    pk: i64,
    output: &str,
    is_error: bool,
    status: &str,
    duration_ms: i64,
) -> Result<(), StoreError> {
    let mut tx = write(pool).await?;
    leases::check(&mut tx, fence).await?;
    sqlx::query(
        "UPDATE tool_calls SET output = $1, is_error = $2, status = $3, duration_ms = $4 \
         WHERE pk = $5",
    )
    .bind(escape(output))
    .bind(is_error)
    .bind(escape(status))
    .bind(duration_ms)
    .bind(pk)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The session's tool calls (only turn `turn`'s, if given), in the order they started.
pub(super) async fn tool_calls(
    pool: &PgPool,
    session: i64,
    turn: Option<&str>,
) -> Result<Vec<ToolCallRecord>, StoreError> {
    const COLUMNS: &str = "call_id, turn_id, name, args, output, is_error, status, \
                           started_at, duration_ms";
    let query = match turn {
        None => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tool_calls WHERE session_pk = $1 ORDER BY pk"
        )))
        .bind(session),
        Some(turn) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM tool_calls WHERE session_pk = $1 AND turn_id = $2 ORDER BY pk"
        )))
        .bind(session)
        .bind(escape(turn)),
    };
    let rows = query.fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            Ok(ToolCallRecord {
                id: text::get(row, "call_id")?,
                turn_id: text::get(row, "turn_id")?,
                name: text::get(row, "name")?,
                args: text::get(row, "args")?,
                output: text::get_opt(row, "output")?,
                is_error: row.try_get("is_error")?,
                status: text::get(row, "status")?,
                started_at: row.try_get("started_at")?,
                duration_ms: row.try_get("duration_ms")?,
            })
        })
        .collect()
}

pub(super) async fn session_of(
    pool: &PgPool,
    user: &str,
    turn_id: &str,
) -> Result<Option<(String, i64)>, StoreError> {
    let found: Option<(String, i64)> = sqlx::query_as(
        "SELECT s.id, s.pk FROM turns t JOIN sessions s ON s.pk = t.session_pk \
         WHERE t.id = $1 AND s.user_id = $2",
    )
    .bind(escape(turn_id))
    .bind(escape(user))
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|(id, pk)| (text::unescape(id), pk)))
}

pub(super) async fn unfinished(pool: &PgPool, user: &str) -> Result<u64, StoreError> {
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM turns t JOIN sessions s ON s.pk = t.session_pk \
         WHERE t.status IN ('queued', 'running') AND s.user_id = $1",
    )
    .bind(escape(user))
    .fetch_one(pool)
    .await?;
    Ok(count.max(0) as u64)
}

/// The (user's) running turns of live leases, each with its session's owner, id and lease
/// holder, and how many turns wait behind it.
pub(super) async fn running(
    pool: &PgPool,
    user: Option<&str>,
    now: i64,
) -> Result<Vec<RunningTurn>, StoreError> {
    type Row = (String, String, String, Option<String>, Option<i64>, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT t.id, s.user_id, s.id, s.lease_node, t.started_at, t.created_at, \
         (SELECT COUNT(*) FROM turns q WHERE q.session_pk = t.session_pk AND q.status = 'queued') \
         FROM turns t JOIN sessions s ON s.pk = t.session_pk \
         WHERE t.status = 'running' AND s.lease_until >= $1 AND ($2::text IS NULL OR s.user_id = $2::text) \
         ORDER BY t.created_at, t.id",
    )
    .bind(now)
    .bind(escape_opt(user))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(turn_id, user, session_id, node, started_at, created_at, queued)| RunningTurn {
            turn_id: text::unescape(turn_id),
            user: text::unescape(user),
            session_id: text::unescape(session_id),
            node: node.map(text::unescape),
            started_at: started_at.unwrap_or(created_at),
            queued: queued.max(0) as u64,
        })
        .collect())
}

pub(super) async fn record(
    pool: &PgPool,
    user: &str,
    turn_id: &str,
) -> Result<Option<TurnRecord>, StoreError> {
    // The turn's user message numbers its messages (`turn_seq`); it is found within the
    // session's messages, by the session's index.
    let row = sqlx::query(
        "SELECT t.id, s.id AS session_id, s.pk, t.status, t.error_code, t.error_message, \
         t.model, t.prompt_tokens, t.completion_tokens, t.total_tokens, t.cached_tokens, \
         t.cost_nanos, t.created_at, t.finished_at, (SELECT MIN(m.seq) FROM messages m \
         WHERE m.session_pk = s.pk AND m.turn_id = t.id) AS user_seq \
         FROM turns t JOIN sessions s ON s.pk = t.session_pk \
         WHERE t.id = $1 AND s.user_id = $2",
    )
    .bind(escape(turn_id))
    .bind(escape(user))
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let count =
        |name: &str| -> Result<u64, sqlx::Error> { Ok(row.try_get::<i64, _>(name)?.max(0) as u64) };
    let status: String = row.try_get("status")?;
    Ok(Some(TurnRecord {
        id: text::unescape(row.try_get("id")?),
        session_id: text::unescape(row.try_get("session_id")?),
        session_pk: row.try_get("pk")?,
        user_seq: row.try_get::<Option<i64>, _>("user_seq")?.unwrap_or_default(),
        status: TurnStatus::parse(&status),
        error_code: row.try_get("error_code")?,
        error_message: row.try_get::<Option<String>, _>("error_message")?.map(text::unescape),
        model: row.try_get::<Option<String>, _>("model")?.map(text::unescape),
        usage: Usage {
            prompt_tokens: count("prompt_tokens")?,
            completion_tokens: count("completion_tokens")?,
            total_tokens: count("total_tokens")?,
            cached_tokens: count("cached_tokens")?,
            cost: row.try_get::<Option<i64>, _>("cost_nanos")?.map(from_nanos),
        },
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    }))
}
