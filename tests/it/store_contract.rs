//! The store contract: one suite exercising every `Store` method through `Arc<dyn Store>`,
//! written once and run on each backend. Each test gets a database of its own (a temporary
//! SQLite file), so the tests run in parallel without seeing each other.
//!
//! The bodies live in `store_contract/`, one file per table group; the macro at the end
//! instantiates each of them once per backend, as `store_contract::<backend>::<name>`.

mod concurrency;
mod identity;
mod messages;
mod sessions;
mod turns;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use parley::conversation::{Role, ToolCall};
use parley::store::{NewMessage, Store};
use tempfile::TempDir;

/// The backend a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Sqlite,
}

/// A fresh, migrated database for one test.
pub struct Db {
    pub store: Arc<dyn Store>,
    url: String,
    kind: Kind,
    dir: TempDir,
}

impl Db {
    /// A fresh database on `kind`.
    pub async fn open(kind: Kind) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let url = match kind {
            Kind::Sqlite => format!("sqlite://{}", dir.path().join("parley.db").display()),
        };
        let store = parley::store::open(&url).await.expect("the store opens");
        Some(Self { store, url, kind, dir })
    }

    /// Another handle on the same database, as a second node would open it.
    pub async fn second_node(&self) -> Arc<dyn Store> {
        parley::store::open(&self.url).await.expect("a second node opens the store")
    }

    /// The URL of another database of this backend, created empty (not migrated).
    pub async fn empty_database(&self, name: &str) -> String {
        match self.kind {
            Kind::Sqlite => format!("sqlite://{}", self.dir.path().join(name).display()),
        }
    }

    /// Drops what the test made.
    pub async fn close(self) {
        drop(self.store);
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
    messages::pages_go_backwards_in_conversation_order,
    messages::history_stops_at_the_turn_in_conversation_order,
    turns::create_turn_stores_the_turn_and_its_message_together,
    turns::start_and_finish_turn_are_seen_by_recovery,
    turns::recover_interrupts_what_a_crash_left_running,
    turns::tool_calls_form_a_timeline,
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
