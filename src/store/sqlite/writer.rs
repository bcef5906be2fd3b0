//! The SQLite store's one writer: every write of this process goes through one connection,
//! taken in turn.
//!
//! SQLite lets one transaction write at a time. Through the pool, writers raced for that
//! lock on separate connections and the losers slept in SQLite's busy handler (1 ms, then
//! longer); and each use of a pooled connection cost two more hand-offs to its thread (sqlx
//! pings a connection as it leaves the pool and as it returns). Here writers queue on a
//! fair async lock instead, the connection never leaves the writer, and a transaction's
//! `BEGIN` and `COMMIT` are statements like the others (sqlx's own make two hand-offs each:
//! its thread waits for the caller to take the answer). Reads keep the pool (WAL lets them
//! run beside the writer).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard};

/// The connection and what its last user left.
struct Slot {
    /// `None` after a failure that left the connection in doubt; the next user reopens it.
    conn: Option<SqliteConnection>,
    /// A transaction was begun and neither committed nor rolled back (its user returned
    /// early or was cancelled): rolled back before anyone else writes.
    unsettled: bool,
}

/// The process's writing connection.
pub(super) struct Writer {
    slot: Arc<Mutex<Slot>>,
    options: SqliteConnectOptions,
}

impl Writer {
    /// Opens the connection with the store's options (WAL, foreign keys, busy time-out:
    /// another process, such as `parley token create`, may write the file too).
    pub(super) async fn open(options: &SqliteConnectOptions) -> Result<Self, sqlx::Error> {
        let conn = options.connect().await?;
        let slot = Slot { conn: Some(conn), unsettled: false };
        Ok(Self { slot: Arc::new(Mutex::new(slot)), options: options.clone() })
    }

    /// Waits for the connection (writers are served in the order they ask), settles what
    /// the previous user left, and returns it outside any transaction.
    pub(super) async fn lock(&self) -> Result<Write, sqlx::Error> {
        let mut slot = Arc::clone(&self.slot).lock_owned().await;
        if slot.unsettled {
            rollback(&mut slot).await;
        }
        if slot.conn.is_none() {
            slot.conn = Some(self.options.connect().await?);
        }
        Ok(Write { slot: Some(slot) })
    }

    /// [`Writer::lock`], then `BEGIN IMMEDIATE`: the write lock is taken up front, so a
    /// transaction that reads before it writes cannot find the data changed under it.
    pub(super) async fn begin(&self) -> Result<Write, sqlx::Error> {
        let mut write = self.lock().await?;
        // Before BEGIN is sent: a cancel while it runs still leaves a rollback behind.
        write.slot().unsettled = true;
        sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *write).await?;
        Ok(write)
    }
}

/// Rolls back what a user left open; a connection that cannot is closed and reopened by the
/// next user rather than handed on mid-transaction.
async fn rollback(slot: &mut Slot) {
    slot.unsettled = false;
    let Some(conn) = slot.conn.as_mut() else {
        return;
    };
    let rolled_back = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    // "no transaction is active": the failure came before BEGIN, or ended the transaction.
    let in_doubt = matches!(&rolled_back, Err(err) if !err.to_string().contains("no transaction"));
    if in_doubt {
        tracing::warn!("closing the store's writing connection after a failed rollback");
        slot.conn = None;
    }
}

/// The writing connection, held until dropped; derefs to the connection for queries.
pub(super) struct Write {
    /// `Some` until dropped.
    slot: Option<OwnedMutexGuard<Slot>>,
}

impl Write {
    fn slot(&mut self) -> &mut Slot {
        // Only `Drop` takes it.
        self.slot.as_mut().expect("the writer's slot is held until drop")
    }

    /// Commits the transaction [`Writer::begin`] opened.
    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("COMMIT").execute(&mut *self).await?;
        self.slot().unsettled = false;
        Ok(())
    }
}

impl Deref for Write {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        let slot = self.slot.as_ref().expect("the writer's slot is held until drop");
        // `lock` reopens a missing connection before it returns a `Write`.
        slot.conn.as_ref().expect("a Write holds an open connection")
    }
}

impl DerefMut for Write {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        let slot = self.slot.as_mut().expect("the writer's slot is held until drop");
        slot.conn.as_mut().expect("a Write holds an open connection")
    }
}

impl Drop for Write {
    /// A transaction left open is rolled back now, in a task that keeps the connection
    /// until it is done, so it does not hold SQLite's write lock until the next write.
    fn drop(&mut self) {
        let Some(mut slot) = self.slot.take().filter(|slot| slot.unsettled) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { rollback(&mut slot).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use super::*;

    async fn writer(dir: &tempfile::TempDir) -> (Writer, SqliteConnectOptions) {
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let options = SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true);
        let writer = Writer::open(&options).await.unwrap();
        sqlx::raw_sql("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER NOT NULL)")
            .execute(&mut *writer.lock().await.unwrap())
            .await
            .unwrap();
        (writer, options)
    }

    async fn count(writer: &Writer) -> i64 {
        let mut write = writer.lock().await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&mut *write).await.unwrap()
    }

    #[tokio::test]
    async fn a_transaction_left_open_is_rolled_back_and_frees_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        {
            let mut write = writer.begin().await.unwrap();
            sqlx::raw_sql("INSERT INTO t VALUES (1)").execute(&mut *write).await.unwrap();
            // Dropped without a commit, as by an early return or a cancelled task.
        }
        // Another process can write before this one writes again: the rollback did not
        // wait for the writer's next user (its busy time-out would have run out).
        let mut other = options.busy_timeout(Duration::from_secs(5)).connect().await.unwrap();
        sqlx::raw_sql("BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT")
            .execute(&mut other)
            .await
            .unwrap();
        let mut write = writer.begin().await.unwrap();
        sqlx::raw_sql("INSERT INTO t VALUES (3)").execute(&mut *write).await.unwrap();
        write.commit().await.unwrap();
        let mut values: Vec<i64> = sqlx::query_scalar("SELECT v FROM t")
            .fetch_all(&mut *writer.lock().await.unwrap())
            .await
            .unwrap();
        values.sort();
        assert_eq!(values, [2, 3]);
    }

    #[tokio::test]
    async fn a_transaction_that_fails_part_way_leaves_nothing_and_the_writer_usable() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _) = writer(&dir).await;
        {
            let mut write = writer.begin().await.unwrap();
            sqlx::raw_sql("INSERT INTO t VALUES (1)").execute(&mut *write).await.unwrap();
            // NOT NULL: the transaction's user gives up with an error.
            let failed = sqlx::raw_sql("INSERT INTO t VALUES (NULL)").execute(&mut *write).await;
            assert!(failed.is_err());
        }
        assert_eq!(count(&writer).await, 0);
        let mut write = writer.begin().await.unwrap();
        sqlx::raw_sql("INSERT INTO t VALUES (4); INSERT INTO t VALUES (5)")
            .execute(&mut *write)
            .await
            .unwrap();
        write.commit().await.unwrap();
        assert_eq!(count(&writer).await, 2);
    }
}
