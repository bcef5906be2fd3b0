//! The SQLite store's message search: the FTS5 index `messages_fts` that triggers keep over
//! settled user and assistant messages (an answer is indexed when it stops streaming).

use sqlx::Row;

use super::{Db, bound};
use crate::conversation::Role;
use crate::store::{SearchHit, StoreError, search_prefix, search_words};

pub(super) async fn search(
    db: &Db,
    user: &str,
    query: &str,
    offset: u64,
    limit: u64,
) -> Result<(Vec<SearchHit>, u64), StoreError> {
    let words = search_words(query);
    if words.is_empty() {
        return Ok((Vec::new(), 0));
    }
    // Every word, each quoted (a prefix from two letters on): nothing the user typed is
    // FTS5 syntax.
    let matcher: Vec<String> = words
        .iter()
        .map(
            |word| if search_prefix(word) { format!("\"{word}\"*") } else { format!("\"{word}\"") },
        )
        .collect();
    let matcher = matcher.join(" ");
    let rows = sqlx::query(
        "SELECT s.id AS session_id, s.name AS session_name, m.seq, m.role, m.created_at, \
         snippet(messages_fts, 0, '', '', '…', 16) AS snippet \
         FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid \
         JOIN sessions s ON s.pk = m.session_pk \
         WHERE messages_fts MATCH $1 AND s.user_id = $2 \
         ORDER BY m.id DESC LIMIT $3 OFFSET $4",
    )
    .bind(&matcher)
    .bind(user)
    .bind(bound(limit))
    .bind(bound(offset))
    .fetch_all(&db.pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid \
         JOIN sessions s ON s.pk = m.session_pk WHERE messages_fts MATCH $1 AND s.user_id = $2",
    )
    .bind(&matcher)
    .bind(user)
    .fetch_one(&db.pool)
    .await?;
    let hits = rows
        .iter()
        .map(|row| {
            let role: String = row.try_get("role")?;
            Ok(SearchHit {
                session_id: row.try_get("session_id")?,
                session_name: row.try_get("session_name")?,
                seq: row.try_get("seq")?,
                role: Role::parse(&role).unwrap_or(Role::User),
                snippet: row.try_get("snippet")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok((hits, total as u64))
}
