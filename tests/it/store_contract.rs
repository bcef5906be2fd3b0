//! The store contract: one suite exercising every `Store` method through `Arc<dyn Store>`,
//! written once and run on each backend: SQLite always, PostgreSQL when
//! `PARLEY_TEST_POSTGRES_URL` names a database (`scripts/test` sets it; under `CI=true`
//! its absence fails the PostgreSQL half, elsewhere that half is skipped, loudly).
//!
//! Each test gets a database of its own, so the tests run in parallel without seeing each
//! other: a temporary SQLite file, or a fresh PostgreSQL schema that the store reaches
//! through the URL's `options=-c search_path=…` and that is dropped afterwards.
//!
//! The bodies live in `store_contract/`, one file per table group; the macro at the end
//! instantiates each of them once per backend, as `store_contract::<backend>::<name>`.

mod concurrency;
mod identity;
mod leases;
mod messages;
mod organize;
mod sessions;
mod turns;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Once};

use futures_util::FutureExt;
use parley::conversation::{Role, ToolCall};
use parley::store::{Fence, NewMessage, Store};
use sqlx::Connection;
use tempfile::TempDir;

/// The variable naming the PostgreSQL database the PostgreSQL half runs on.
const POSTGRES_URL: &str = "PARLEY_TEST_POSTGRES_URL";

/// The backend a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Sqlite,
    /// On the database named by `PARLEY_TEST_POSTGRES_URL`.
    Postgres,
}

/// A fresh, migrated database for one test.
pub struct Db {
    pub store: Arc<dyn Store>,
    url: String,
    kind: Kind,
    dir: TempDir,
    /// The PostgreSQL schemas this test made, dropped by [`Db::close`].
    schemas: Mutex<Vec<String>>,
    /// The lease the test holds on each session it writes to, taken on first use.
    fences: Mutex<HashMap<i64, Fence>>,
}

/// The PostgreSQL database to test on, or `None` (after saying so) to skip.
pub fn postgres_url() -> Option<String> {
    if let Ok(url) = std::env::var(POSTGRES_URL) {
        return Some(url);
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!(
            "{POSTGRES_URL} is not set: under CI=true the store contract must run on PostgreSQL \
             too (scripts/test sets it)"
        );
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let line = format!(
            "\n*** SKIPPED: the tests on PostgreSQL (store_contract::postgres::*, store_copy, \
             store_outage) pass without running. Set \
             {POSTGRES_URL}=postgres://postgres@127.0.0.1:5432/test to run them. ***\n\n"
        );
        // Straight to fd 2: libtest captures what a passing test prints with eprintln!, and
        // this line must be seen.
        // SAFETY: writes `line.len()` bytes from a live buffer to the process's stderr.
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    });
    None
}

/// Creates an empty schema of a unique name and returns it with a URL whose connections
/// use it.
async fn new_schema(base: &str) -> (String, String) {
    let schema = format!("parley_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(base).await.expect("PostgreSQL answers");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    (crate::common::postgres::with_search_path(base, &schema), schema)
}

impl Db {
    /// A fresh database on `kind`; `None` if the backend is not available here.
    pub async fn open(kind: Kind) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mut schemas = Vec::new();
        let url = match kind {
            Kind::Sqlite => format!("sqlite://{}", dir.path().join("parley.db").display()),
            Kind::Postgres => {
                let (url, schema) = new_schema(&postgres_url()?).await;
                schemas.push(schema);
                url
            }
        };
        let store = parley::store::open(&url).await.expect("the store opens");
        let fences = Mutex::new(HashMap::new());
        Some(Self { store, url, kind, dir, schemas: Mutex::new(schemas), fences })
    }

    /// The fence of the test's lease on session `pk` (node `test`), taken on first use.
    pub async fn fence(&self, pk: i64) -> Fence {
        if let Some(fence) = self.fences.lock().unwrap().get(&pk) {
            return *fence;
        }
        let lease = self.store.acquire_lease(pk, "test", i64::MAX, false).await.unwrap();
        let fence = lease.expect("a session nobody holds can be leased").fence;
        self.fences.lock().unwrap().insert(pk, fence);
        fence
    }

    /// Another handle on the same database, as a second node would open it.
    pub async fn second_node(&self) -> Arc<dyn Store> {
        parley::store::open(&self.url).await.expect("a second node opens the store")
    }

    /// The URL of another database of this backend, created empty (not migrated).
    pub async fn empty_database(&self, name: &str) -> String {
        match self.kind {
            Kind::Sqlite => format!("sqlite://{}", self.dir.path().join(name).display()),
            Kind::Postgres => {
                let base = std::env::var(POSTGRES_URL).unwrap();
                let (url, schema) = new_schema(&base).await;
                self.schemas.lock().unwrap().push(schema);
                url
            }
        }
    }

    /// Drops what the test made.
    pub async fn close(self) {
        drop(self.store);
        let schemas = self.schemas.into_inner().unwrap();
        if schemas.is_empty() {
            return;
        }
        let base = std::env::var(POSTGRES_URL).unwrap();
        let mut admin = sqlx::PgConnection::connect(&base).await.expect("PostgreSQL answers");
        for schema in schemas {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        admin.close().await.unwrap();
    }
}

/// Runs one contract test body on `kind`, cleaning up even when it fails.
pub async fn run<F>(kind: Kind, body: F)
where
    F: AsyncFnOnce(&Db),
{
    let Some(db) = Db::open(kind).await else { return };
    let outcome = AssertUnwindSafe(body(&db)).catch_unwind().await;
    db.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A complete text message of turn `turn_seq`.
pub fn text(seq: i64, turn_seq: i64, role: Role, content: &str) -> NewMessage {
    NewMessage::text(seq, turn_seq, &format!("turn-{turn_seq}"), role, content)
}

/// A tool call as the model would ask for it.
pub fn call(id: &str, name: &str) -> ToolCall {
    ToolCall { id: id.into(), name: name.into(), arguments: format!("{{\"call\":\"{id}\"}}") }
}

/// Instantiates every contract test once per backend.
macro_rules! contract {
    ($($file:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::run(super::Kind::Sqlite, super::$file::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::run(super::Kind::Postgres, super::$file::$name).await;
                }
            )*
        }
    };
}

contract! {
    sessions::open_session_creates_once_and_creates_the_user,
    sessions::sessions_are_scoped_per_user,
    sessions::list_pages_newest_activity_first_with_total,
    sessions::rename_changes_the_name_or_is_not_found,
    sessions::delete_takes_messages_turns_and_tool_calls_with_it,
    sessions::set_session_state_is_stored,
    sessions::prune_by_count_keeps_the_newest_and_running_sessions,
    sessions::prune_by_ttl_keeps_recent_and_running_sessions,
    sessions::reserve_seq_never_goes_backwards,
    sessions::a_stored_message_raises_last_seq,
    messages::append_keeps_every_field_and_counts_the_message,
    messages::duplicate_seq_is_a_conflict_and_changes_nothing,
    messages::update_message_rewrites_content_and_status,
    messages::update_partials_only_touch_streaming_messages,
    messages::a_large_round_of_partials_lands_whole,
    messages::pages_go_backwards_in_conversation_order,
    messages::history_stops_at_the_turn_in_conversation_order,
    messages::edits_and_regenerations_branch_and_each_branch_reads_alone,
    organize::pinned_sessions_list_first_and_archived_ones_apart,
    organize::search_finds_every_word_in_the_users_own_messages,
    organize::pruning_keeps_pinned_sessions_and_counts_only_the_others,
    messages::any_text_round_trips_nul_characters_included,
    turns::create_turn_stores_the_turn_and_its_message_together,
    turns::start_and_finish_turn_are_recorded,
    turns::tool_calls_form_a_timeline,
    turns::a_turn_is_found_by_its_id_with_its_own_messages,
    turns::unfinished_turns_are_counted_per_user_and_running_ones_listed,
    turns::usage_is_ledgered_per_model_and_outlives_the_session,
    turns::a_turn_can_start_as_it_is_stored_and_end_in_one_write,
    leases::a_lease_is_held_until_it_expires_or_is_released,
    leases::a_moved_fence_refuses_every_write_of_a_turn,
    leases::taking_a_lease_interrupts_what_the_last_holder_left_running,
    leases::renewing_extends_every_lease_a_node_holds,
    leases::orphans_are_sessions_with_unfinished_turns_and_no_live_lease,
    leases::two_nodes_racing_for_a_lease_get_one_holder,
    leases::the_live_holder_of_a_lease_and_the_session_of_a_turn_are_found,
    identity::tokens_are_created_found_listed_and_revoked_once,
    identity::pairing_code_lookup_ignores_used_and_expired_codes,
    identity::pairing_a_new_user_spends_the_code_once,
    identity::pairing_an_existing_name_conflicts_and_leaves_the_code_unspent,
    identity::a_code_for_a_user_pairs_a_new_device_of_theirs,
    identity::audit_log_is_newest_first_and_limited,
    identity::ping_answers,
    concurrency::two_nodes_migrate_an_empty_database_together,
    concurrency::two_nodes_open_the_same_session_once,
    concurrency::two_nodes_append_to_one_session_without_losing_counts,
    concurrency::two_nodes_spend_one_pairing_code_once,
}
