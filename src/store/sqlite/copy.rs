//! The SQLite store's tables as rows, for `parley store copy`.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{SqliteArguments, SqliteRow};

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::copy::{Cell, Kind, Table, Tables, clear_sql};

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments>;

fn bind<'q>(query: Query<'q>, cell: &'q Cell) -> Query<'q> {
    match cell {
        Cell::Null => query.bind(None::<i64>),
        Cell::Int(value) => query.bind(*value),
        Cell::Bool(value) => query.bind(*value),
        Cell::Text(value) => query.bind(value.as_str()),
    }
}

fn cells(table: &Table, row: &SqliteRow) -> Result<Vec<Cell>, sqlx::Error> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            Ok(match kind {
                Kind::Int => row.try_get::<Option<i64>, _>(i)?.map_or(Cell::Null, Cell::Int),
                Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map_or(Cell::Null, Cell::Bool),
                Kind::Text => row.try_get::<Option<String>, _>(i)?.map_or(Cell::Null, Cell::Text),
            })
        })
        .collect()
}

#[async_trait]
impl Tables for SqliteStore {
    async fn count(&self, table: &Table) -> Result<u64, StoreError> {
        let sql = table.count_sql();
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&self.db.pool).await?;
        Ok(count as u64)
    }

    async fn read(
        &self,
        table: &Table,
        after: Option<&Cell>,
        limit: u64,
    ) -> Result<Vec<Vec<Cell>>, StoreError> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(table.read_sql(after.is_some())));
        if let Some(after) = after {
            query = bind(query, after);
        }
        let rows =
            query.bind(i64::try_from(limit).unwrap_or(i64::MAX)).fetch_all(&self.db.pool).await?;
        Ok(rows.iter().map(|row| cells(table, row)).collect::<Result<_, _>>()?)
    }

    async fn write(&self, table: &Table, rows: &[Vec<Cell>]) -> Result<(), StoreError> {
        let sql = table.insert_sql();
        let mut tx = self.db.writer.begin().await?;
        for row in rows {
            let query = row.iter().fold(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), bind);
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let mut tx = self.db.writer.begin().await?;
        for sql in clear_sql() {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn finish(&self) -> Result<(), StoreError> {
        // AUTOINCREMENT keys already continue past the largest key inserted.
        Ok(())
    }

    async fn identity(&self) -> Result<String, StoreError> {
        // The main database's file, as SQLite resolved it.
        let file: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&self.db.pool)
                .await?;
        let canonical = std::fs::canonicalize(&file).map_or(file, |p| p.display().to_string());
        Ok(format!("sqlite:{canonical}"))
    }
}
