//! `parley store copy`: every row of one store into another, keys kept, so a single-node
//! installation moves to PostgreSQL (or back) with its users, tokens, sessions, messages,
//! turns, tool calls, usage ledger, pairing codes and audit log. Tables are read in key order, in batches,
//! and written in dependency order; the target must be empty unless told to replace.

use async_trait::async_trait;

use super::{Backend, PostgresStore, SqliteStore, StoreError};

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// An integer (keys, counts, epoch milliseconds).
    Int(i64),
    /// A flag.
    Bool(bool),
    /// Text, exactly as the caller stored it (U+0000 included).
    Text(String),
}

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// INTEGER / BIGINT.
    Int,
    /// Stored as an integer by SQLite and as a BOOLEAN by PostgreSQL.
    Bool,
    /// TEXT.
    Text,
}

/// A table as both backends have it: its columns (the key first) and whether the key is a
/// generated integer (a PostgreSQL sequence to move past the copied keys).
#[derive(Debug)]
pub struct Table {
    /// The table's name.
    pub name: &'static str,
    /// Its columns, the key first.
    pub columns: &'static [(&'static str, Kind)],
    /// Whether the key is generated (BIGSERIAL / AUTOINCREMENT).
    pub serial: bool,
}

use Kind::{Bool, Int, Text};

/// Every table, parents before children.
pub const TABLES: &[Table] = &[
    Table {
        name: "users",
        columns: &[("id", Text), ("is_admin", Bool), ("created_at", Int)],
        serial: false,
    },
    Table {
        name: "sessions",
        columns: &[
            ("pk", Int),
            ("user_id", Text),
            ("id", Text),
            ("name", Text),
            ("state", Text),
            ("message_count", Int),
            ("last_seq", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("pinned", Bool),
            ("archived", Bool),
            // Leases travel as they are: a copy made while nodes run is refused anyway
            // (the target must be empty), and a fence must never go back.
            ("lease_node", Text),
            ("lease_until", Int),
            ("lease_fence", Int),
        ],
        serial: true,
    },
    Table {
        name: "turns",
        columns: &[
            ("id", Text),
            ("session_pk", Int),
            ("status", Text),
            ("error_code", Text),
            ("error_message", Text),
            ("model", Text),
            ("prompt_tokens", Int),
            ("completion_tokens", Int),
            ("total_tokens", Int),
            ("created_at", Int),
            ("started_at", Int),
            ("finished_at", Int),
            ("duration_ms", Int),
            ("cached_tokens", Int),
            ("cost_nanos", Int),
        ],
        serial: false,
    },
    Table {
        name: "messages",
        columns: &[
            ("id", Int),
            ("session_pk", Int),
            ("seq", Int),
            ("turn_seq", Int),
            ("turn_id", Text),
            ("role", Text),
            ("content", Text),
            ("reasoning", Text),
            ("tool_calls", Text),
            ("tool_call_id", Text),
            ("tool_name", Text),
            ("status", Text),
            ("created_at", Int),
            ("parent_turn", Int),
        ],
        serial: true,
    },
    Table {
        name: "tool_calls",
        columns: &[
            ("pk", Int),
            ("session_pk", Int),
            ("turn_id", Text),
            ("call_id", Text),
            ("name", Text),
            ("args", Text),
            ("output", Text),
            ("is_error", Bool),
            ("status", Text),
            ("started_at", Int),
            ("duration_ms", Int),
        ],
        serial: true,
    },
    Table {
        name: "usage_records",
        columns: &[
            ("id", Int),
            ("turn_id", Text),
            ("step", Int),
            ("model", Text),
            ("user_id", Text),
            ("prompt_tokens", Int),
            ("completion_tokens", Int),
            ("cached_tokens", Int),
            ("cost_nanos", Int),
            ("created_at", Int),
        ],
        serial: true,
    },
    Table {
        name: "tokens",
        columns: &[
            ("id", Text),
            ("user_id", Text),
            ("hash", Text),
            ("label", Text),
            ("is_admin", Bool),
            ("created_at", Int),
            ("revoked_at", Int),
        ],
        serial: false,
    },
    Table {
        name: "pairing_codes",
        columns: &[
            ("hash", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("used_at", Int),
            ("user_id", Text),
            ("is_admin", Bool),
        ],
        serial: false,
    },
    Table {
        name: "audit",
        columns: &[
            ("id", Int),
            ("at", Int),
            ("kind", Text),
            ("user_id", Text),
            ("ip", Text),
            ("detail", Text),
        ],
        serial: true,
    },
];

impl Table {
    /// The key column.
    pub(super) fn key(&self) -> &'static str {
        self.columns[0].0
    }

    /// `SELECT COUNT(*)` of the table.
    pub(super) fn count_sql(&self) -> String {
        format!("SELECT COUNT(*) FROM {}", self.name)
    }

    /// A page in key order: `$1` is the limit, or with `after`, `$1` the key to start
    /// after and `$2` the limit. The same SQL on both backends.
    pub(super) fn read_sql(&self, after: bool) -> String {
        let columns = self.columns.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
        let (name, key) = (self.name, self.key());
        if after {
            format!("SELECT {columns} FROM {name} WHERE {key} > $1 ORDER BY {key} LIMIT $2")
        } else {
            format!("SELECT {columns} FROM {name} ORDER BY {key} LIMIT $1")
        }
    }

    /// One row's `INSERT`, every column bound in order.
    pub(super) fn insert_sql(&self) -> String {
        let columns = self.columns.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
        let values: Vec<String> = (1..=self.columns.len()).map(|i| format!("${i}")).collect();
        format!("INSERT INTO {} ({columns}) VALUES ({})", self.name, values.join(", "))
    }
}

/// `DELETE` statements that empty every table, children first.
pub(super) fn clear_sql() -> impl Iterator<Item = String> {
    TABLES.iter().rev().map(|table| format!("DELETE FROM {}", table.name))
}

/// Rows read or written at a time.
pub const BATCH: u64 = 500;

/// Raw access to a store's tables, for copying.
#[async_trait]
pub trait Tables: Send + Sync {
    /// How many rows `table` has.
    async fn count(&self, table: &Table) -> Result<u64, StoreError>;

    /// Up to `limit` rows of `table` in key order, after the key `after` (from the first
    /// without one).
    async fn read(
        &self,
        table: &Table,
        after: Option<&Cell>,
        limit: u64,
    ) -> Result<Vec<Vec<Cell>>, StoreError>;

    /// Inserts `rows` (keys included), in one transaction.
    async fn write(&self, table: &Table, rows: &[Vec<Cell>]) -> Result<(), StoreError>;

    /// Deletes every row of every table.
    async fn clear(&self) -> Result<(), StoreError>;

    /// After a copy: generated keys continue past the copied ones.
    async fn finish(&self) -> Result<(), StoreError>;

    /// What tells this store from any other: the database file, or the server, database
    /// and schema; two handles on one store have the same identity.
    async fn identity(&self) -> Result<String, StoreError>;
}

/// Opens the store at `url` for copying (applying its migrations, as `open` does). A SQLite
/// source must exist (`must_exist`): a mistyped path must not read as an empty store.
pub async fn open_tables(url: &str, must_exist: bool) -> Result<Box<dyn Tables>, StoreError> {
    match Backend::of(url)? {
        Backend::Sqlite(path) => {
            if must_exist && !path.is_file() {
                return Err(StoreError::Other(format!("no SQLite database at {}", path.display())));
            }
            Ok(Box::new(SqliteStore::open(path).await?))
        }
        Backend::Postgres => Ok(Box::new(PostgresStore::open(url).await?)),
    }
}

/// Why a copy did not start.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target has rows and `replace` was not asked for.
    #[error(
        "the target already holds data ({rows} rows in {table}); pass --replace to empty it first"
    )]
    NotEmpty { table: &'static str, rows: u64 },
    /// The source has no row at all: most likely a wrong URL.
    #[error("the source holds no data: is --from the right store?")]
    EmptySource,
    /// Source and target are one store: with `--replace` the copy would empty it.
    #[error("--from and --to are the same store")]
    SameStore,
    /// Reading or writing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies every table of `from` into `to`; with `replace`, empties `to` first, else refuses
/// a `to` that holds any row. Returns the rows copied per table.
pub async fn copy(
    from: &dyn Tables,
    to: &dyn Tables,
    replace: bool,
) -> Result<Vec<(&'static str, u64)>, CopyError> {
    if from.identity().await? == to.identity().await? {
        return Err(CopyError::SameStore);
    }
    let mut source_rows = 0;
    for table in TABLES {
        source_rows += from.count(table).await?;
    }
    if source_rows == 0 {
        return Err(CopyError::EmptySource);
    }
    if replace {
        to.clear().await?;
    } else {
        for table in TABLES {
            let rows = to.count(table).await?;
            if rows > 0 {
                return Err(CopyError::NotEmpty { table: table.name, rows });
            }
        }
    }
    let mut copied = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let mut rows_copied = 0;
        let mut after: Option<Cell> = None;
        loop {
            let rows = from.read(table, after.as_ref(), BATCH).await?;
            if rows.is_empty() {
                break;
            }
            to.write(table, &rows).await?;
            rows_copied += rows.len() as u64;
            after = rows.last().and_then(|row| row.first()).cloned();
            if (rows.len() as u64) < BATCH {
                break;
            }
        }
        copied.push((table.name, rows_copied));
    }
    to.finish().await?;
    Ok(copied)
}
