//! The PostgreSQL store's message search: a GIN index over settled (not streaming) user and
//! assistant messages' words with their accents folded (`to_tsvector('simple',
//! parley_fold(content))`, as SQLite's tokenizer folds them).

use sqlx::Row;
use sqlx::postgres::PgPool;

use super::bound;
use super::text::{self, escape};
use crate::conversation::Role;
use crate::store::{SearchHit, StoreError, search_prefix, search_words};

pub(super) async fn search(
    pool: &PgPool,
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
    // tsquery syntax.
    let matcher: Vec<String> = words
        .iter()
        .map(|word| if search_prefix(word) { format!("'{word}':*") } else { format!("'{word}'") })
        .collect();
    let matcher = matcher.join(" & ");
    let rows = sqlx::query(
        "SELECT s.id AS session_id, s.name AS session_name, m.seq, m.role, m.created_at, \
         ts_headline('simple', m.content, q, 'MaxWords=16, MinWords=6, StartSel=\"\", \
         StopSel=\"\"') AS snippet \
         FROM messages m JOIN sessions s ON s.pk = m.session_pk, \
         to_tsquery('simple', parley_fold($1)) q \
         WHERE s.user_id = $2 AND m.role IN ('user', 'assistant') AND m.status <> 'streaming' \
         AND to_tsvector('simple', parley_fold(m.content)) @@ q \
         ORDER BY m.id DESC LIMIT $3 OFFSET $4",
    )
    .bind(&matcher)
    .bind(escape(user))
    .bind(bound(limit))
    .bind(bound(offset))
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages m JOIN sessions s ON s.pk = m.session_pk \
         WHERE s.user_id = $2 AND m.role IN ('user', 'assistant') AND m.status <> 'streaming' \
         AND to_tsvector('simple', parley_fold(m.content)) @@ to_tsquery('simple', parley_fold($1))",
    )
    .bind(&matcher)
    .bind(escape(user))
    .fetch_one(pool)
    .await?;
    let hits = rows
        .iter()
        .map(|row| {
            let role: String = row.try_get("role")?;
            Ok(SearchHit {
                session_id: text::get(row, "session_id")?,
                session_name: text::get_opt(row, "session_name")?,
                seq: row.try_get("seq")?,
                role: Role::parse(&role).unwrap_or(Role::User),
                snippet: text::get(row, "snippet")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok((hits, total as u64))
}
