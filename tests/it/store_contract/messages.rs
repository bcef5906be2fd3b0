//! Messages: appending, the unique `(session, seq)`, rewriting, partial flushes, pages and
//! the provider's history in conversation order `(turn_seq, seq)`.

use parley::conversation::Role;
use parley::store::{MessageStatus, NewMessage, PartialText, StoreError};

use super::{Db, call, text};

fn seqs(messages: &[parley::store::Message]) -> Vec<i64> {
    messages.iter().map(|m| m.seq).collect()
}

pub async fn append_keeps_every_field_and_counts_the_message(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let asked = NewMessage {
        reasoning: Some("thinking".into()),
        tool_calls: vec![call("c1", "read_file"), call("c2", "shell")],
        status: MessageStatus::Streaming,
        ..text(2, 1, Role::Assistant, "let me look")
    };
    let answer = NewMessage {
        tool_call_id: Some("c1".into()),
        tool_name: Some("read_file".into()),
        turn_id: None,
        ..text(3, 1, Role::Tool, "contents ✓ \u{1F600}")
    };
    let first = store
        .append_message(db.fence(session.pk).await, &text(1, 1, Role::User, "hi"))
        .await
        .unwrap();
    let second = store.append_message(db.fence(session.pk).await, &asked).await.unwrap();
    let third = store.append_message(db.fence(session.pk).await, &answer).await.unwrap();
    assert!(first < second && second < third, "ids grow: {first} {second} {third}");

    let stored = store.messages(session.pk, None, None, 10).await.unwrap();
    assert_eq!(seqs(&stored), [1, 2, 3]);
    let m = &stored[1];
    assert_eq!((m.id, m.seq, m.turn_seq), (second, 2, 1));
    assert_eq!(
        (m.turn_id.as_deref(), m.role, m.content.as_str()),
        (Some("turn-1"), Role::Assistant, "let me look")
    );
    assert_eq!(m.reasoning.as_deref(), Some("thinking"));
    assert_eq!(m.tool_calls, asked.tool_calls);
    assert_eq!(m.status, MessageStatus::Streaming);
    assert!(m.created_at > 0);
    let t = &stored[2];
    assert_eq!((t.role, t.content.as_str()), (Role::Tool, "contents ✓ \u{1F600}"));
    assert_eq!(
        (t.tool_call_id.as_deref(), t.tool_name.as_deref()),
        (Some("c1"), Some("read_file"))
    );
    assert_eq!((t.turn_id.as_deref(), t.reasoning.as_deref()), (None, None));
    assert!(t.tool_calls.is_empty());
    assert_eq!(t.status, MessageStatus::Complete);

    let session = store.session("alice", "s").await.unwrap().unwrap();
    assert_eq!(session.message_count, 3);
}

pub async fn duplicate_seq_is_a_conflict_and_changes_nothing(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    store
        .append_message(db.fence(session.pk).await, &text(1, 1, Role::User, "first"))
        .await
        .unwrap();
    let again =
        store.append_message(db.fence(session.pk).await, &text(1, 1, Role::User, "again")).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let turn = store
        .create_turn(
            db.fence(session.pk).await,
            "turn-x",
            "m",
            &text(1, 1, Role::User, "again"),
            false,
        )
        .await;
    assert!(matches!(turn, Err(StoreError::Conflict(_))), "{turn:?}");
    // Nothing of the refused writes is left: not the count, not the turn.
    let stored = store.messages(session.pk, None, None, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].content, "first");
    assert_eq!(store.session("alice", "s").await.unwrap().unwrap().message_count, 1);
    assert!(store.orphans(i64::MAX).await.unwrap().is_empty(), "no turn was left behind");
    // The same seq in another session is fine.
    let (other, _) = store.open_session("alice", "t", None).await.unwrap();
    store.append_message(db.fence(other.pk).await, &text(1, 1, Role::User, "first")).await.unwrap();
}

pub async fn update_message_rewrites_content_and_status(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let streaming = NewMessage {
        status: MessageStatus::Streaming,
        reasoning: Some("hmm".into()),
        ..text(2, 1, Role::Assistant, "")
    };
    let id = store.append_message(db.fence(session.pk).await, &streaming).await.unwrap();
    let calls = [call("c9", "write_file")];
    store
        .update_message(
            db.fence(session.pk).await,
            id,
            "done",
            None,
            &calls,
            MessageStatus::Complete,
        )
        .await
        .unwrap();
    let stored = store.messages(session.pk, None, None, 10).await.unwrap();
    let m = &stored[0];
    assert_eq!((m.content.as_str(), m.reasoning.as_deref()), ("done", None));
    assert_eq!((m.tool_calls.as_slice(), m.status), (calls.as_slice(), MessageStatus::Complete));
    store
        .update_message(
            db.fence(session.pk).await,
            id,
            "cut",
            Some("r"),
            &[],
            MessageStatus::Interrupted,
        )
        .await
        .unwrap();
    let m = &store.messages(session.pk, None, None, 10).await.unwrap()[0];
    assert_eq!((m.content.as_str(), m.reasoning.as_deref()), ("cut", Some("r")));
    assert!(m.tool_calls.is_empty());
    assert_eq!(m.status, MessageStatus::Interrupted);
    // Rewriting is not appending.
    assert_eq!(store.session("alice", "s").await.unwrap().unwrap().message_count, 1);
}

pub async fn update_partials_only_touch_streaming_messages(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let streaming =
        |seq| NewMessage { status: MessageStatus::Streaming, ..text(seq, 1, Role::Assistant, "") };
    let a = store.append_message(db.fence(session.pk).await, &streaming(2)).await.unwrap();
    let b = store.append_message(db.fence(session.pk).await, &streaming(3)).await.unwrap();
    let done = store
        .append_message(db.fence(session.pk).await, &text(4, 1, Role::Assistant, "final"))
        .await
        .unwrap();
    store
        .update_message(db.fence(session.pk).await, b, "whole", None, &[], MessageStatus::Complete)
        .await
        .unwrap();

    let fence = db.fence(session.pk).await;
    let partial = |id, content: &str| PartialText {
        fence,
        message_id: id,
        content: content.into(),
        reasoning: Some(format!("r-{content}")),
    };
    let partials = [partial(a, "so far"), partial(b, "stale"), partial(done, "stale")];
    store.update_partials(&partials).await.unwrap();
    store.update_partials(&[]).await.unwrap();
    let stored = store.messages(session.pk, None, None, 10).await.unwrap();
    let contents: Vec<_> =
        stored.iter().map(|m| (m.content.as_str(), m.reasoning.as_deref())).collect();
    assert_eq!(contents, [("so far", Some("r-so far")), ("whole", None), ("final", None)]);
    assert_eq!(stored[0].status, MessageStatus::Streaming);
}

/// A round of the partial writer can hold thousands of sessions' steps: more than one
/// statement's worth (a thousand) all land, each on its own message.
pub async fn a_large_round_of_partials_lands_whole(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let fence = db.fence(session.pk).await;
    let mut ids = Vec::new();
    for seq in 2..1204 {
        let message =
            NewMessage { status: MessageStatus::Streaming, ..text(seq, 1, Role::Assistant, "") };
        ids.push(store.append_message(fence, &message).await.unwrap());
    }
    let partials: Vec<_> = ids
        .iter()
        .map(|&id| PartialText {
            fence,
            message_id: id,
            content: format!("part {id}"),
            reasoning: None,
        })
        .collect();
    store.update_partials(&partials).await.unwrap();
    let stored = store.messages(session.pk, None, None, 2000).await.unwrap();
    assert_eq!(stored.len(), ids.len());
    for message in &stored {
        assert_eq!(message.content, format!("part {}", message.id));
    }
}

/// Turn 1 (user seq 1) is answered at seq 3 and 4, after turn 2's user message was queued
/// at seq 2; turn 2 is answered at seq 5. Conversation order: 1, 3, 4, 2, 5.
async fn interleaved_turns(db: &Db) -> i64 {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    store
        .create_turn(
            db.fence(session.pk).await,
            "turn-1",
            "m",
            &text(1, 1, Role::User, "one"),
            false,
        )
        .await
        .unwrap();
    store
        .create_turn(
            db.fence(session.pk).await,
            "turn-2",
            "m",
            &text(2, 2, Role::User, "two"),
            false,
        )
        .await
        .unwrap();
    store
        .append_message(db.fence(session.pk).await, &text(3, 1, Role::Assistant, "a1"))
        .await
        .unwrap();
    store
        .append_message(db.fence(session.pk).await, &text(4, 1, Role::Assistant, "a1b"))
        .await
        .unwrap();
    store
        .append_message(db.fence(session.pk).await, &text(5, 2, Role::Assistant, "a2"))
        .await
        .unwrap();
    session.pk
}

pub async fn pages_go_backwards_in_conversation_order(db: &Db) {
    let store = &db.store;
    let pk = interleaved_turns(db).await;
    assert_eq!(seqs(&store.messages(pk, None, None, 100).await.unwrap()), [1, 3, 4, 2, 5]);
    assert_eq!(seqs(&store.messages(pk, None, None, u64::MAX).await.unwrap()), [1, 3, 4, 2, 5]);
    assert_eq!(seqs(&store.all_messages(pk).await.unwrap()), [1, 3, 4, 2, 5]);
    // The newest page, then the ones before it, by the seq of the oldest message seen.
    assert_eq!(seqs(&store.messages(pk, None, None, 2).await.unwrap()), [2, 5]);
    assert_eq!(seqs(&store.messages(pk, None, Some(2), 2).await.unwrap()), [3, 4]);
    assert_eq!(seqs(&store.messages(pk, None, Some(3), 2).await.unwrap()), [1]);
    assert!(store.messages(pk, None, Some(1), 2).await.unwrap().is_empty());
    assert!(store.messages(pk, None, None, 0).await.unwrap().is_empty());
    // Another session's messages never show.
    let (other, _) = store.open_session("alice", "other", None).await.unwrap();
    assert!(store.messages(other.pk, None, None, 100).await.unwrap().is_empty());
}

pub async fn history_stops_at_the_turn_in_conversation_order(db: &Db) {
    let store = &db.store;
    let pk = interleaved_turns(db).await;
    let contents = |messages: Vec<parley::store::Message>| {
        messages.into_iter().map(|m| m.content).collect::<Vec<_>>()
    };
    assert_eq!(contents(store.history(pk, 1).await.unwrap()), ["one", "a1", "a1b"]);
    assert_eq!(contents(store.history(pk, 2).await.unwrap()), ["one", "a1", "a1b", "two", "a2"]);
    assert!(store.history(pk, 0).await.unwrap().is_empty());
}

pub async fn any_text_round_trips_nul_characters_included(db: &Db) {
    // What reaches the store is not always printable: a tool printing a binary file, a
    // message holding "\u0000", an id typed into a URL. PostgreSQL's TEXT cannot hold NUL.
    let odd = "nul \0 here, \u{10FFFF}0 and \u{10FFFF}\u{10FFFF}, emoji \u{1F600}, é";
    let store = &db.store;
    let (session, created) = store.open_session("alice", odd, Some(odd)).await.unwrap();
    assert!(created);
    assert_eq!((session.id.as_str(), session.name.as_deref()), (odd, Some(odd)));
    assert_eq!(store.session("alice", odd).await.unwrap().unwrap().pk, session.pk);
    assert!(store.session("alice", "nul \0 here").await.unwrap().is_none());
    let message = NewMessage {
        reasoning: Some(odd.into()),
        turn_id: Some(odd.into()),
        tool_calls: vec![parley::conversation::ToolCall {
            id: odd.into(),
            name: "shell".into(),
            arguments: odd.into(),
        }],
        ..text(1, 1, Role::Assistant, odd)
    };
    store.create_turn(db.fence(session.pk).await, odd, "m", &message, false).await.unwrap();
    let stored = &store.history(session.pk, 1).await.unwrap()[0];
    assert_eq!((stored.content.as_str(), stored.reasoning.as_deref()), (odd, Some(odd)));
    assert_eq!(stored.turn_id.as_deref(), Some(odd));
    assert_eq!(stored.tool_calls, message.tool_calls);
    let pk =
        store.start_tool_call(db.fence(session.pk).await, odd, &call("c1", "shell")).await.unwrap();
    store.finish_tool_call(db.fence(session.pk).await, pk, odd, false, "done", 1).await.unwrap();
    let calls = store.tool_calls(session.pk).await.unwrap();
    assert_eq!((calls[0].turn_id.as_str(), calls[0].output.as_deref()), (odd, Some(odd)));
    store
        .update_partials(&[PartialText {
            fence: db.fence(session.pk).await,
            message_id: 1,
            content: odd.into(),
            reasoning: None,
        }])
        .await
        .unwrap();
    let renamed = store.rename_session("alice", odd, &format!("{odd}!")).await.unwrap();
    assert_eq!(renamed.name.unwrap(), format!("{odd}!"));
    assert_eq!(store.list_sessions("alice", false, 0, 1).await.unwrap().0[0].id, odd);
    let pruned = store.prune(Some("alice"), 0, 0).await.unwrap();
    assert!(pruned.is_empty());
    store.delete_session("alice", odd).await.unwrap();

    // Identity: lookups of such strings find nothing, and stored ones come back whole.
    assert!(matches!(store.revoke_token("a\0b").await, Err(StoreError::NotFound)));
    assert!(store.token_by_hash("a\0b").await.unwrap().is_none());
    assert_eq!(store.pairing_code("a\0b").await.unwrap(), None);
    let mut token = parley::auth::tokens::new_token("alice", false, Some(odd)).0;
    token.id = format!("tok_{odd}");
    store.create_token(&token).await.unwrap();
    assert_eq!(
        store.token_by_hash(&token.hash).await.unwrap().unwrap().label.as_deref(),
        Some(odd)
    );
    assert_eq!(store.revoke_token(&token.id).await.unwrap().id, token.id);
    assert_eq!(store.revoked_since(0).await.unwrap(), [token.id.clone()]);
    let entry = parley::store::AuditEntry {
        at: 1,
        kind: "odd".into(),
        user: Some("alice".into()),
        ip: Some(odd.into()),
        detail: Some(odd.into()),
    };
    store.audit(&entry).await.unwrap();
    let logged = &store.audit_log(1).await.unwrap()[0];
    assert_eq!((logged.ip.as_deref(), logged.detail.as_deref()), (Some(odd), Some(odd)));
}

pub async fn edits_and_regenerations_branch_and_each_branch_reads_alone(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "tree", None).await.unwrap();
    let pk = session.pk;
    // Each turn: its user message (following `parent`, or the newest turn), then an answer.
    let turn = async |seq: i64, parent: Option<i64>, asked: &str, answer: &str| {
        let message = NewMessage { parent, ..text(seq, seq, Role::User, asked) };
        let turn_id = format!("turn-{seq}");
        store.create_turn(db.fence(pk).await, &turn_id, "m", &message, false).await.unwrap();
        let answer = text(seq + 1, seq, Role::Assistant, answer);
        store.append_message(db.fence(pk).await, &answer).await.unwrap();
    };
    turn(1, None, "one", "a1").await;
    turn(3, None, "two", "a2").await;
    turn(5, Some(1), "two, edited", "a2 to the edit").await; // edits turn 3
    turn(7, Some(0), "one", "a1 again").await; // regenerates turn 1
    turn(9, Some(3), "three", "a3").await; // goes on from the first turn 3

    let page = |branch: Option<i64>, before: Option<i64>| async move {
        seqs(&store.messages(pk, branch, before, 100).await.unwrap())
    };
    // The current branch ends at the newest turn.
    assert_eq!(page(None, None).await, [1, 2, 3, 4, 9, 10]);
    // Every branch at once, in seq order, each user message naming the turn it follows.
    let all = store.all_messages(pk).await.unwrap();
    assert_eq!(seqs(&all), (1..=10).collect::<Vec<i64>>());
    let parents: Vec<Option<i64>> =
        all.iter().filter(|m| m.role == Role::User).map(|m| m.parent).collect();
    assert_eq!(parents, [Some(0), Some(1), Some(1), Some(0), Some(3)]);
    // A branch through a message goes down to its newest turn.
    assert_eq!(page(Some(7), None).await, [7, 8]);
    assert_eq!(page(Some(5), None).await, [1, 2, 5, 6]);
    assert_eq!(page(Some(6), None).await, [1, 2, 5, 6]);
    assert_eq!(page(Some(1), None).await, [1, 2, 3, 4, 9, 10]);
    assert_eq!(page(Some(4), None).await, [1, 2, 3, 4, 9, 10]);
    // Pages go backwards within the branch.
    assert_eq!(page(Some(5), Some(5)).await, [1, 2]);
    assert_eq!(page(None, Some(9)).await, [1, 2, 3, 4]);
    assert!(page(Some(99), None).await.is_empty());

    // User messages name their parent turn and, where there are several, their siblings.
    let current = store.messages(pk, None, None, 100).await.unwrap();
    let tree: Vec<(i64, Option<i64>, Vec<i64>)> =
        current.iter().map(|m| (m.seq, m.parent, m.siblings.clone())).collect();
    assert_eq!(
        tree,
        [
            (1, Some(0), vec![1, 7]),
            (2, None, vec![]),
            (3, Some(1), vec![3, 5]),
            (4, None, vec![]),
            (9, Some(3), vec![]),
            (10, None, vec![]),
        ]
    );

    // The model sees a turn's own branch only.
    let contents = |messages: Vec<parley::store::Message>| {
        messages.into_iter().map(|m| m.content).collect::<Vec<_>>()
    };
    assert_eq!(
        contents(store.history(pk, 5).await.unwrap()),
        ["one", "a1", "two, edited", "a2 to the edit"]
    );
    assert_eq!(contents(store.history(pk, 7).await.unwrap()), ["one", "a1 again"]);
    assert_eq!(
        contents(store.history(pk, 9).await.unwrap()),
        ["one", "a1", "two", "a2", "three", "a3"]
    );
    assert_eq!(store.turn_of(pk, 4).await.unwrap(), Some(3));
    assert_eq!(store.turn_of(pk, 99).await.unwrap(), None);
    // Every message is kept and counted.
    assert_eq!(store.session("alice", "tree").await.unwrap().unwrap().message_count, 10);
}
