//! `PARLEY_TEST_STORE=postgres`: the integration suite's servers on PostgreSQL (the database
//! of `PARLEY_TEST_POSTGRES_URL`) instead of a SQLite file, one schema per data folder.
//!
//! A schema lives as long as the test process, since a test may restart a server on the
//! same folder and expect its data. Schemas are named `parley_it_<pid>_<n>`; the first use
//! in a process drops those of processes that are gone. Commands run as child processes
//! (`parley token create`, crash tests) still use SQLite in their folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use sqlx::Connection;

/// The store URL for servers in `data_dir`, or `None` to keep the SQLite default.
pub fn store_url(data_dir: &Path) -> Option<String> {
    if std::env::var("PARLEY_TEST_STORE").ok()? != "postgres" {
        return None;
    }
    let base = std::env::var("PARLEY_TEST_POSTGRES_URL")
        .expect("PARLEY_TEST_STORE=postgres needs PARLEY_TEST_POSTGRES_URL");
    Some(url_for(&base, data_dir))
}

/// The URL of a schema of its own (made on first use) in the database at `base`, for the
/// servers in `data_dir`.
pub fn url_for(base: &str, data_dir: &Path) -> String {
    static SCHEMAS: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
    let mut schemas = SCHEMAS.lock().unwrap_or_else(|e| e.into_inner());
    let schemas = schemas.get_or_insert_with(HashMap::new);
    let count = schemas.len();
    let schema = schemas
        .entry(data_dir.to_path_buf())
        .or_insert_with(|| {
            let schema = format!("parley_it_{}_{count}", std::process::id());
            create(base, &schema);
            schema
        })
        .clone();
    with_search_path(base, &schema)
}

/// `base` with `schema` as the search path of every connection made from it (the URL's
/// `options` parameter reaches the server as `-c search_path=…`).
pub fn with_search_path(base: &str, schema: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{schema}")
}

/// Creates `schema` (and first drops the schemas of test processes that are gone), on a
/// thread of its own: the caller may be inside a runtime, where it cannot block on one.
fn create(base: &str, schema: &str) {
    let (base, schema) = (base.to_owned(), schema.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut admin = sqlx::PgConnection::connect(&base).await.expect("PostgreSQL answers");
            static SWEPT: Once = Once::new();
            let mut stale = Vec::new();
            if !SWEPT.is_completed() {
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT nspname::TEXT FROM pg_namespace WHERE nspname LIKE 'parley\\_it\\_%'",
                )
                .fetch_all(&mut admin)
                .await
                .unwrap();
                stale = names.into_iter().filter(|name| !alive(name)).collect();
                SWEPT.call_once(|| {});
            }
            for name in stale {
                let drop = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
                sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await.unwrap();
            }
            let create = format!("CREATE SCHEMA {schema}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut admin).await.unwrap();
            admin.close().await.unwrap();
        });
    })
    .join()
    .unwrap();
}

/// Whether the process that made schema `parley_it_<pid>_<n>` still runs.
fn alive(schema: &str) -> bool {
    let pid = schema.strip_prefix("parley_it_").and_then(|rest| rest.split('_').next());
    match pid.and_then(|pid| pid.parse::<libc::pid_t>().ok()) {
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        Some(pid) => unsafe { libc::kill(pid, 0) == 0 },
        None => true,
    }
}
