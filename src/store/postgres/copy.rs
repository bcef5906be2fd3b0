//! The PostgreSQL store's tables as rows, for `parley store copy`; strings are unescaped
//! on the way out and escaped on the way in (see `text.rs`).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgRow};

use super::text::{escape, unescape};
use super::{PostgresStore, write};
use crate::store::StoreError;
use crate::store::copy::{Cell, Kind, TABLES, Table, Tables, clear_sql};

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, PgArguments>;

fn bind<'q>(query: Query<'q>, (cell, kind): (&'q Cell, Kind)) -> Query<'q> {
    match (cell, kind) {
        (Cell::Null, Kind::Int) => query.bind(None::<i64>),
        (Cell::Null, Kind::Bool) => query.bind(None::<bool>),
        (Cell::Null, Kind::Text) => query.bind(None::<String>),
        (Cell::Int(value), _) => query.bind(*value),
        (Cell::Bool(value), _) => query.bind(*value),
        (Cell::Text(value), _) => query.bind(escape(value).into_owned()),
    }
}

fn cells(table: &Table, row: &PgRow) -> Result<Vec<Cell>, sqlx::Error> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            Ok(match kind {
                Kind::Int => row.try_get::<Option<i64>, _>(i)?.map_or(Cell::Null, Cell::Int),
                Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map_or(Cell::Null, Cell::Bool),
                Kind::Text => row
                    .try_get::<Option<String>, _>(i)?
                    .map_or(Cell::Null, |text| Cell::Text(unescape(text))),
            })
        })
        .collect()
}

#[async_trait]
impl Tables for PostgresStore {
    async fn count(&self, table: &Table) -> Result<u64, StoreError> {
        let sql = table.count_sql();
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&self.pool).await?;
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
            query = bind(query, (after, table.columns[0].1));
        }
        let rows =
            query.bind(i64::try_from(limit).unwrap_or(i64::MAX)).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|row| cells(table, row)).collect::<Result<_, _>>()?)
    }

    async fn write(&self, table: &Table, rows: &[Vec<Cell>]) -> Result<(), StoreError> {
        let sql = table.insert_sql();
        let kinds = table.columns.iter().map(|(_, kind)| *kind);
        let mut tx = write(&self.pool).await?;
        for row in rows {
            let query = row
                .iter()
                .zip(kinds.clone())
                .fold(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), bind);
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let mut tx = write(&self.pool).await?;
        for sql in clear_sql() {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn finish(&self) -> Result<(), StoreError> {
        for table in TABLES.iter().filter(|table| table.serial) {
            let (name, key) = (table.name, table.key());
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{name}', '{key}'), \
                 COALESCE((SELECT MAX({key}) FROM {name}), 0) + 1, false)"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn identity(&self) -> Result<String, StoreError> {
        // The cluster's own identifier (the same however the server is reached), the
        // database and the schema the tables live in.
        let (cluster, database, schema): (i64, String, String) = sqlx::query_as(
            "SELECT (SELECT system_identifier FROM pg_control_system()), current_database(), \
             current_schema()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(format!("postgres:{cluster}/{database}/{schema}"))
    }
}
