//! The SQLite store's identity tables: tokens, pairing codes, the audit log.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{Db, bound};
use crate::clock::now_ms;
use crate::store::{AuditEntry, PairingGrant, StoreError, TokenRecord};

const TOKEN_COLUMNS: &str = "id, user_id, hash, label, is_admin, created_at, revoked_at";

fn token_from_row(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        user: row.try_get("user_id")?,
        hash: row.try_get("hash")?,
        label: row.try_get("label")?,
        admin: row.try_get("is_admin")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub(super) async fn create_token(db: &Db, token: &TokenRecord) -> Result<(), StoreError> {
    let mut tx = db.writer.begin().await?;
    sqlx::query("INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(&token.user)
        .bind(token.created_at)
        .execute(&mut *tx)
        .await?;
    insert_token(&mut tx, token).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_token(tx: &mut SqliteConnection, token: &TokenRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tokens (id, user_id, hash, label, is_admin, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&token.id)
    .bind(&token.user)
    .bind(&token.hash)
    .bind(&token.label)
    .bind(token.admin)
    .bind(token.created_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(super) async fn token_by_hash(db: &Db, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(hash).fetch_optional(&db.pool).await?;
    row.as_ref().map(token_from_row).transpose()
}

pub(super) async fn list_tokens(db: &Db) -> Result<Vec<TokenRecord>, StoreError> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at DESC, id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&db.pool).await?;
    rows.iter().map(token_from_row).collect()
}

pub(super) async fn revoke_token(db: &Db, id: &str) -> Result<TokenRecord, StoreError> {
    let mut tx = db.writer.begin().await?;
    let done =
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    token_from_row(&row)
}

pub(super) async fn revoked_since(db: &Db, since: i64) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM tokens WHERE revoked_at >= $1")
        .bind(since)
        .fetch_all(&db.pool)
        .await?)
}

pub(super) async fn active_tokens(db: &Db) -> Result<u64, StoreError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL")
        .fetch_one(&db.pool)
        .await?;
    Ok(count as u64)
}

pub(super) async fn create_pairing_code(
    db: &Db,
    hash: &str,
    expires_at: i64,
    grant: &PairingGrant,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO pairing_codes (hash, created_at, expires_at, user_id, is_admin) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hash)
    .bind(now_ms())
    .bind(expires_at)
    .bind(&grant.user)
    .bind(grant.admin)
    .execute(&mut *db.writer.lock().await?)
    .await?;
    Ok(())
}

pub(super) async fn pairing_code(db: &Db, hash: &str) -> Result<Option<PairingGrant>, StoreError> {
    let row = sqlx::query(
        "SELECT user_id, is_admin FROM pairing_codes \
         WHERE hash = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(hash)
    .bind(now_ms())
    .fetch_optional(&db.pool)
    .await?;
    row.map(|row| {
        Ok(PairingGrant { user: row.try_get("user_id")?, admin: row.try_get("is_admin")? })
    })
    .transpose()
}

/// Spends the code, creates the user and stores the token in one transaction, so a
/// `Conflict` on a taken user name rolls the spending back.
pub(super) async fn pair(
    db: &Db,
    hash: &str,
    token: &TokenRecord,
    new_user: bool,
) -> Result<(), StoreError> {
    let mut tx = db.writer.begin().await?;
    let now = now_ms();
    let spent = sqlx::query(
        "UPDATE pairing_codes SET used_at = $1 \
         WHERE hash = $2 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(hash)
    .execute(&mut *tx)
    .await?;
    if spent.rows_affected() != 1 {
        return Err(StoreError::NotFound);
    }
    let created = sqlx::query(
        "INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&token.user)
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

pub(super) async fn audit(db: &Db, entry: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit (at, kind, user_id, ip, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(entry.at)
        .bind(&entry.kind)
        .bind(&entry.user)
        .bind(&entry.ip)
        .bind(&entry.detail)
        .execute(&mut *db.writer.lock().await?)
        .await?;
    Ok(())
}

pub(super) async fn audit_log(db: &Db, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
    let rows =
        sqlx::query("SELECT at, kind, user_id, ip, detail FROM audit ORDER BY id DESC LIMIT $1")
            .bind(bound(limit))
            .fetch_all(&db.pool)
            .await?;
    rows.iter()
        .map(|row| {
            Ok(AuditEntry {
                at: row.try_get("at")?,
                kind: row.try_get("kind")?,
                user: row.try_get("user_id")?,
                ip: row.try_get("ip")?,
                detail: row.try_get("detail")?,
            })
        })
        .collect()
}
