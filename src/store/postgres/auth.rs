//! The PostgreSQL store's identity tables: tokens, pairing codes, the audit log.

use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::text::{self, escape, escape_opt};
use super::{bound, write};
use crate::clock::now_ms;
use crate::store::{AuditEntry, PairingGrant, StoreError, TokenRecord};

const TOKEN_COLUMNS: &str = "id, user_id, hash, label, is_admin, created_at, revoked_at";

fn token_from_row(row: &PgRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: text::get(row, "id")?,
        user: text::get(row, "user_id")?,
        hash: text::get(row, "hash")?,
        label: text::get_opt(row, "label")?,
        admin: row.try_get("is_admin")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub(super) async fn create_token(pool: &PgPool, token: &TokenRecord) -> Result<(), StoreError> {
    let mut tx = write(pool).await?;
    sqlx::query("INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(escape(&token.user))
        .bind(token.created_at)
        .execute(&mut *tx)
        .await?;
    insert_token(&mut tx, token).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_token(
    tx: &mut Transaction<'static, Postgres>,
    token: &TokenRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tokens (id, user_id, hash, label, is_admin, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(escape(&token.id))
    .bind(escape(&token.user))
    .bind(escape(&token.hash))
    .bind(escape_opt(token.label.as_deref()))
    .bind(token.admin)
    .bind(token.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn token_by_hash(
    pool: &PgPool,
    hash: &str,
) -> Result<Option<TokenRecord>, StoreError> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(escape(hash)).fetch_optional(pool).await?;
    row.as_ref().map(token_from_row).transpose()
}

pub(super) async fn list_tokens(pool: &PgPool) -> Result<Vec<TokenRecord>, StoreError> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at DESC, id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?;
    rows.iter().map(token_from_row).collect()
}

/// Revokes an active token. A concurrent revocation holds the row until it commits; this
/// update then re-checks `revoked_at IS NULL`, finds it set, and reports `NotFound`.
pub(super) async fn revoke_token(pool: &PgPool, id: &str) -> Result<TokenRecord, StoreError> {
    let sql = format!(
        "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
         RETURNING {TOKEN_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now_ms())
        .bind(escape(id))
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)?;
    token_from_row(&row)
}

pub(super) async fn revoked_since(pool: &PgPool, since: i64) -> Result<Vec<String>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM tokens WHERE revoked_at >= $1")
        .bind(since)
        .fetch_all(pool)
        .await?;
    Ok(ids.into_iter().map(text::unescape).collect())
}

pub(super) async fn active_tokens(pool: &PgPool) -> Result<u64, StoreError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL")
        .fetch_one(pool)
        .await?;
    Ok(count as u64)
}

pub(super) async fn create_pairing_code(
    pool: &PgPool,
    hash: &str,
    expires_at: i64,
    grant: &PairingGrant,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO pairing_codes (hash, created_at, expires_at, user_id, is_admin) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(escape(hash))
    .bind(now_ms())
    .bind(expires_at)
    .bind(escape_opt(grant.user.as_deref()))
    .bind(grant.admin)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn pairing_code(
    pool: &PgPool,
    hash: &str,
) -> Result<Option<PairingGrant>, StoreError> {
    let row = sqlx::query(
        "SELECT user_id, is_admin FROM pairing_codes \
         WHERE hash = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(escape(hash))
    .bind(now_ms())
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(PairingGrant { user: text::get_opt(&row, "user_id")?, admin: row.try_get("is_admin")? })
    })
    .transpose()
}

/// Spends the code, creates the user and stores the token in one transaction, so a
/// `Conflict` on a taken user name rolls the spending back. The spending `UPDATE` locks the
/// code's row: a second node pairing with the same code waits for this transaction, then
/// re-checks `used_at IS NULL` and finds the code spent (or unspent, after a rollback).
pub(super) async fn pair(
    pool: &PgPool,
    hash: &str,
    token: &TokenRecord,
    new_user: bool,
) -> Result<(), StoreError> {
    let mut tx = write(pool).await?;
    let now = now_ms();
    let spent = sqlx::query(
        "UPDATE pairing_codes SET used_at = $1 \
         WHERE hash = $2 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(escape(hash))
    .execute(&mut *tx)
    .await?;
    if spent.rows_affected() != 1 {
        return Err(StoreError::NotFound);
    }
    let created = sqlx::query(
        "INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(escape(&token.user))
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if new_user && created == 0 {
        // Dropping the transaction rolls the spending back: the code stays good.
        return Err(StoreError::Conflict(format!("the user {:?} exists", token.user)));
    }
    insert_token(&mut tx, token).await.map_err(|err| match err {
        // Token ids are random: a collision is a failure, not a taken user name.
        StoreError::Conflict(message) => StoreError::Other(format!("token id taken: {message}")),
        other => other,
    })?;
    if new_user && token.admin {
        // The server has its owner now: the other owner codes (one per start without a
        // token, printed to a console or a log) must not make a second one.
        sqlx::query(
            "UPDATE pairing_codes SET used_at = $1 \
             WHERE used_at IS NULL AND user_id IS NULL AND is_admin = TRUE",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn audit(pool: &PgPool, entry: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit (at, kind, user_id, ip, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(entry.at)
        .bind(escape(&entry.kind))
        .bind(escape_opt(entry.user.as_deref()))
        .bind(escape_opt(entry.ip.as_deref()))
        .bind(escape_opt(entry.detail.as_deref()))
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn audit_log(pool: &PgPool, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
    let rows =
        sqlx::query("SELECT at, kind, user_id, ip, detail FROM audit ORDER BY id DESC LIMIT $1")
            .bind(bound(limit))
            .fetch_all(pool)
            .await?;
    rows.iter()
        .map(|row| {
            Ok(AuditEntry {
                at: row.try_get("at")?,
                kind: text::get(row, "kind")?,
                user: text::get_opt(row, "user_id")?,
                ip: text::get_opt(row, "ip")?,
                detail: text::get_opt(row, "detail")?,
            })
        })
        .collect()
}
