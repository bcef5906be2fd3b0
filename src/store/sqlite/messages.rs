//! The SQLite store's messages: appending, rewriting the one still streaming, and reading
//! a branch's pages and the provider's history in conversation order `(turn_seq, seq)`.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{Db, bound, leases};
use crate::clock::now_ms;
use crate::conversation::{Role, ToolCall};
use crate::store::{Fence, Message, MessageStatus, NewMessage, PartialText, StoreError};

const MESSAGE_COLUMNS: &str = "id, seq, turn_seq, turn_id, role, content, reasoning, tool_calls, \
                               tool_call_id, tool_name, status, created_at, parent_turn";

/// The turns below a message, `down(t)` by `turn_seq`, for a query whose `$1` is the
/// session and `$2` the message's seq (NULL: the session's newest turn, which has none).
const DOWN: &str = "down(t) AS (SELECT COALESCE(\
    (SELECT turn_seq FROM messages WHERE session_pk = $1 AND seq = $2), \
    (SELECT MAX(turn_seq) FROM messages WHERE session_pk = $1 AND $2 IS NULL)) \
    UNION ALL SELECT m.seq FROM messages m JOIN down ON m.session_pk = $1 AND m.parent_turn = down.t)";

/// The recursive step of `path(t)`, a branch's turns by `turn_seq` up from the first one
/// given: each turn's parent. A user message stored without one (written by a node that
/// predates branches) follows the turn before it; `UNION` stops on a loop.
const UP: &str = "SELECT COALESCE(m.parent_turn, (SELECT MAX(p.turn_seq) FROM messages p \
    WHERE p.session_pk = $1 AND p.turn_seq < m.seq)) \
    FROM messages m JOIN path ON m.session_pk = $1 AND m.seq = path.t WHERE path.t > 0";

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
        parent: row.try_get("parent_turn")?,
        siblings: Vec::new(),
        tool_error: false,
    })
}

fn tool_calls_json(calls: &[ToolCall]) -> Option<String> {
    // Serializing plain strings cannot fail.
    (!calls.is_empty()).then(|| serde_json::to_string(calls).unwrap_or_default())
}

/// Inserts a message into the fenced session and counts it there, raising the session's
/// `last_seq` to at least the message's seq and setting its `state` if given; returns its
/// id. The session's update comes first and checks the fence: [`StoreError::Fenced`] if
/// the lease moved on (or the session is gone), with nothing written.
pub(super) async fn insert(
    tx: &mut SqliteConnection,
    fence: Fence,
    message: &NewMessage,
    state: Option<&str>,
) -> Result<i64, StoreError> {
    let now = now_ms();
    let counted = sqlx::query(
        "UPDATE sessions SET message_count = message_count + 1, updated_at = $1, \
         last_seq = MAX(last_seq, $2), state = COALESCE($3, state) \
         WHERE pk = $4 AND lease_fence = $5",
    )
    .bind(now)
    .bind(message.seq)
    .bind(state)
    .bind(fence.session)
    .bind(fence.token)
    .execute(&mut *tx)
    .await?;
    if counted.rows_affected() == 0 {
        return Err(StoreError::Fenced);
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO messages (session_pk, seq, turn_seq, turn_id, role, content, reasoning, \
         tool_calls, tool_call_id, tool_name, status, created_at, parent_turn) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, CASE WHEN $2 = $3 THEN \
         COALESCE($13, (SELECT COALESCE(MAX(turn_seq), 0) FROM messages \
                        WHERE session_pk = $1 AND turn_seq < $3)) END) RETURNING id",
    )
    .bind(fence.session)
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
    .bind(message.parent)
    .fetch_one(&mut *tx)
    .await?;
    Ok(id)
}

pub(super) async fn append(db: &Db, fence: Fence, message: &NewMessage) -> Result<i64, StoreError> {
    let mut tx = db.writer.begin().await?;
    let id = insert(&mut tx, fence, message, None).await?;
    tx.commit().await?;
    Ok(id)
}

pub(super) async fn update(
    db: &Db,
    fence: Fence,
    id: i64,
    content: &str,
    reasoning: Option<&str>,
    tool_calls: &[ToolCall],
    status: MessageStatus,
) -> Result<(), StoreError> {
    let mut tx = db.writer.begin().await?;
    leases::check(&mut tx, fence).await?;
    rewrite(&mut tx, id, content, reasoning, tool_calls, status).await?;
    tx.commit().await?;
    Ok(())
}

/// Rewrites a message's text, calls and status inside the caller's transaction.
pub(super) async fn rewrite(
    tx: &mut SqliteConnection,
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
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The sizes of the statements a round of partial answers is written with, the last one
/// also the most a statement takes (five arguments a row, well under SQLite's 32 766). A
/// round is padded up to the next size with rows that match nothing, so six prepared
/// statements serve every round instead of one parsed per round.
const PARTIAL_ROWS: [usize; 6] = [1, 4, 16, 64, 256, 1024];

/// Stores the partial answers of many sessions' streaming steps, each only while its
/// message streams under its lease: one statement, so one hand-off to the writer's thread,
/// per 1 024 (a statement each cost a round of a thousand sessions a thousand).
pub(super) async fn update_partials(db: &Db, partials: &[PartialText]) -> Result<(), StoreError> {
    let largest = PARTIAL_ROWS[PARTIAL_ROWS.len() - 1];
    // A round past one statement is one transaction, as the contract says; one statement
    // is one by itself (a transaction would cost two more hand-offs).
    let mut write =
        if partials.len() > largest { db.writer.begin().await? } else { db.writer.lock().await? };
    for chunk in partials.chunks(largest) {
        let size = PARTIAL_ROWS.into_iter().find(|&n| n >= chunk.len()).unwrap_or(largest);
        let rows = vec!["(?, ?, ?, ?, ?)"; size].join(", ");
        let sql = format!(
            "WITH p(id, session, fence, content, reasoning) AS (VALUES {rows}) \
             UPDATE messages SET content = p.content, reasoning = p.reasoning FROM p \
             WHERE messages.id = p.id AND messages.status = 'streaming' AND EXISTS \
             (SELECT 1 FROM sessions s WHERE s.pk = p.session AND s.lease_fence = p.fence)"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for partial in chunk {
            query = query
                .bind(partial.message_id)
                .bind(partial.fence.session)
                .bind(partial.fence.token)
                .bind(&partial.content)
                .bind(&partial.reasoning);
        }
        for _ in chunk.len()..size {
            // A NULL id matches no message.
            query = query.bind(None::<i64>).bind(None::<i64>).bind(None::<i64>);
            query = query.bind(None::<String>).bind(None::<String>);
        }
        query.execute(&mut *write).await?;
    }
    if partials.len() > largest {
        write.commit().await?;
    }
    Ok(())
}

pub(super) async fn page(
    db: &Db,
    session: i64,
    branch: Option<i64>,
    before_seq: Option<i64>,
    limit: u64,
) -> Result<Vec<Message>, StoreError> {
    // The cursor is a message's seq; its place in conversation order is (turn_seq, seq).
    let sql = format!(
        "WITH RECURSIVE {DOWN}, path(t) AS (SELECT MAX(t) FROM down UNION {UP}) \
         SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_pk = $1 AND \
         turn_seq IN (SELECT t FROM path) AND \
         (turn_seq, seq) < (COALESCE((SELECT turn_seq FROM messages \
                                      WHERE session_pk = $1 AND seq = $3), $3), $3) \
         ORDER BY turn_seq DESC, seq DESC LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(session)
        .bind(branch)
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(bound(limit))
        .fetch_all(&db.pool)
        .await?;
    let mut messages = rows.iter().map(message_from_row).collect::<Result<Vec<_>, _>>()?;
    messages.reverse();
    let parents: Vec<i64> = messages.iter().filter_map(|m| m.parent).collect();
    if !parents.is_empty() {
        let parents = serde_json::to_string(&parents).unwrap_or_default();
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT parent_turn, seq FROM messages WHERE session_pk = $1 AND parent_turn IN \
             (SELECT value FROM json_each($2)) ORDER BY seq",
        )
        .bind(session)
        .bind(parents)
        .fetch_all(&db.pool)
        .await?;
        crate::store::attach_siblings(&mut messages, &rows);
    }
    Ok(messages)
}

pub(super) async fn turn_of(db: &Db, session: i64, seq: i64) -> Result<Option<i64>, StoreError> {
    let turn =
        sqlx::query_scalar("SELECT turn_seq FROM messages WHERE session_pk = $1 AND seq = $2")
            .bind(session)
            .bind(seq)
            .fetch_optional(&db.pool)
            .await?;
    Ok(turn)
}

pub(super) async fn history(
    db: &Db,
    session: i64,
    up_to_turn: i64,
) -> Result<Vec<Message>, StoreError> {
    // The turn's branch, up from it.
    let sql = format!(
        "WITH RECURSIVE path(t) AS (SELECT $2 UNION {UP}) \
         SELECT {MESSAGE_COLUMNS}, CASE WHEN tool_call_id IS NULL THEN FALSE ELSE EXISTS \
         (SELECT 1 FROM tool_calls c WHERE c.session_pk = messages.session_pk \
         AND c.turn_id = messages.turn_id AND c.call_id = messages.tool_call_id \
         AND c.is_error) END AS tool_error \
         FROM messages WHERE session_pk = $1 AND turn_seq IN (SELECT t FROM path) \
         ORDER BY turn_seq, seq"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(session)
        .bind(up_to_turn)
        .fetch_all(&db.pool)
        .await?;
    // A tool's answer is marked failed by its call's record.
    rows.iter()
        .map(|row| {
            let mut message = message_from_row(row)?;
            message.tool_error = row.try_get("tool_error")?;
            Ok(message)
        })
        .collect()
}

pub(super) async fn all(db: &Db, session: i64) -> Result<Vec<Message>, StoreError> {
    // Conversation order: a turn's messages together (a turn queued behind another took
    // its user message's seq first), a parent turn before the turns that follow it.
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_pk = $1 ORDER BY turn_seq, seq"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(session).fetch_all(&db.pool).await?;
    rows.iter().map(message_from_row).collect()
}

pub(super) async fn of_turn(
    db: &Db,
    session: i64,
    turn_seq: i64,
) -> Result<Vec<Message>, StoreError> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_pk = $1 AND turn_seq = $2 \
         ORDER BY seq"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(session)
        .bind(turn_seq)
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(message_from_row).collect()
}
