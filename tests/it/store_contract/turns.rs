//! Turns and tool calls.

use parley::conversation::{Role, Usage};
use parley::store::{NewMessage, TurnEnd, TurnStatus};

use super::{Db, call, text};

pub(super) fn end(status: TurnStatus) -> TurnEnd {
    TurnEnd {
        status,
        error_code: None,
        error_message: None,
        model: Some("m".into()),
        usage: Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            total_tokens: 7,
            ..Usage::default()
        },
        duration_ms: 12,
        answer: None,
        ledger: None,
        idle: false,
    }
}

fn usage(prompt: u64, completion: u64, cached: u64, cost: Option<f64>) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cached_tokens: cached,
        cost,
    }
}

pub async fn usage_is_ledgered_per_model_and_outlives_the_session(db: &Db) {
    let store = &db.store;
    let now = parley::clock::now_ms();
    let (alice, _) = store.open_session("alice", "a", None).await.unwrap();
    let (bob, _) = store.open_session("bob", "b", None).await.unwrap();
    let (fa, fb) = (db.fence(alice.pk).await, db.fence(bob.pk).await);
    store.create_turn(fa, "t1", "big", &text(1, 1, Role::User, "one"), false).await.unwrap();
    store.create_turn(fa, "t2", "big", &text(2, 2, Role::User, "two"), false).await.unwrap();
    store.create_turn(fb, "t3", "small", &text(1, 1, Role::User, "three"), false).await.unwrap();
    // A turn that fell back from `big` to `small` after its first step used both.
    store.record_usage("alice", "t1", 3, "big", &usage(100, 10, 0, Some(0.125))).await.unwrap();
    store.record_usage("alice", "t1", 5, "small", &usage(200, 20, 100, Some(0.125))).await.unwrap();
    // The same step again does not count twice.
    store.record_usage("alice", "t1", 5, "small", &usage(200, 20, 100, Some(0.125))).await.unwrap();
    let fell_back = TurnEnd {
        model: Some("small".into()),
        usage: usage(300, 30, 100, Some(0.25)),
        ..end(TurnStatus::Done)
    };
    store.finish_turn(fa, "t1", &fell_back).await.unwrap();
    store.record_usage("alice", "t2", 4, "big", &usage(5, 5, 0, None)).await.unwrap();
    let unpriced = TurnEnd { usage: usage(5, 5, 0, None), ..end(TurnStatus::Error) };
    store.finish_turn(fa, "t2", &unpriced).await.unwrap();
    // Counted as the call ends, whether or not the turn ever does (its node crashed).
    store.record_usage("bob", "t3", 2, "small", &usage(1000, 0, 0, Some(1.5))).await.unwrap();

    let record = store.turn("alice", "t1").await.unwrap().unwrap();
    assert_eq!((record.usage.cached_tokens, record.usage.cost), (100, Some(0.25)));
    assert_eq!(store.turn("alice", "t2").await.unwrap().unwrap().usage.cost, None);

    let report = |group_by, user: Option<&str>| {
        let query = parley::store::UsageQuery {
            from: now - 60_000,
            to: now + 60_000,
            user: user.map(str::to_owned),
            group_by,
        };
        async move { store.usage_report(&query).await.unwrap() }
    };
    use parley::store::UsageGroup;
    let by_user = report(UsageGroup::User, None).await;
    let lines: Vec<_> = by_user
        .iter()
        .map(|l| (l.key.as_str(), l.turns, l.usage.prompt_tokens, l.usage.cost))
        .collect();
    assert_eq!(lines, [("alice", 2, 305, Some(0.25)), ("bob", 1, 1000, Some(1.5))]);
    let mut by_model = report(UsageGroup::Model, Some("alice")).await;
    by_model.sort_by(|a, b| a.key.cmp(&b.key));
    let lines: Vec<_> = by_model
        .iter()
        .map(|l| (l.key.as_str(), l.turns, l.usage.completion_tokens, l.usage.cached_tokens))
        .collect();
    assert_eq!(lines, [("big", 2, 15, 0), ("small", 1, 20, 100)]);
    let by_day = report(UsageGroup::Day, None).await;
    assert!(!by_day.is_empty() && by_day.len() <= 2, "{by_day:?}");
    assert_eq!(by_day.iter().map(|l| l.usage.prompt_tokens).sum::<u64>(), 1305);
    assert!(by_day.iter().all(|l| l.key.len() == 10 && l.key.starts_with("20")), "{by_day:?}");
    let later = parley::store::UsageQuery {
        from: now + 60_000,
        to: now + 120_000,
        user: None,
        group_by: UsageGroup::User,
    };
    assert!(store.usage_report(&later).await.unwrap().is_empty());

    assert_eq!(store.spent_since("alice", now - 60_000).await.unwrap(), 0.25);
    assert_eq!(store.spent_since("alice", now + 60_000).await.unwrap(), 0.0);
    assert_eq!(store.spent_since("nobody", 0).await.unwrap(), 0.0);
    // Deleting the session does not give the spending back.
    store.delete_session("alice", "a").await.unwrap();
    assert_eq!(store.spent_since("alice", now - 60_000).await.unwrap(), 0.25);
}

pub async fn create_turn_stores_the_turn_and_its_message_together(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    store
        .create_turn(
            db.fence(session.pk).await,
            "turn-1",
            "m",
            &text(1, 1, Role::User, "hello"),
            false,
        )
        .await
        .unwrap();
    let stored = store.messages(session.pk, None, None, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].role, stored[0].content.as_str()), (Role::User, "hello"));
    assert_eq!(stored[0].turn_id.as_deref(), Some("turn-1"));
    let session = store.session("alice", "s").await.unwrap().unwrap();
    assert_eq!((session.message_count, session.reserved_seq), (1, 1));
    // A turn id is used once; the refused turn leaves no message behind.
    let again = store
        .create_turn(
            db.fence(session.pk).await,
            "turn-1",
            "m",
            &text(2, 2, Role::User, "again"),
            false,
        )
        .await;
    assert!(matches!(again, Err(parley::store::StoreError::Conflict(_))), "{again:?}");
    assert_eq!(store.messages(session.pk, None, None, 10).await.unwrap().len(), 1);
}

pub async fn start_and_finish_turn_are_recorded(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let fence = db.fence(session.pk).await;
    store.create_turn(fence, "turn-1", "m", &text(1, 1, Role::User, "a"), false).await.unwrap();
    store.create_turn(fence, "turn-2", "m", &text(2, 2, Role::User, "b"), false).await.unwrap();
    store.create_turn(fence, "turn-3", "m", &text(3, 3, Role::User, "c"), false).await.unwrap();
    store.start_turn(fence, "turn-1").await.unwrap();
    assert_eq!(store.session("alice", "s").await.unwrap().unwrap().state, "running");
    store.finish_turn(fence, "turn-1", &end(TurnStatus::Done)).await.unwrap();
    let failed = TurnEnd {
        error_code: Some("PROVIDER_ERROR".into()),
        error_message: Some("boom".into()),
        ..end(TurnStatus::Error)
    };
    store.start_turn(fence, "turn-2").await.unwrap();
    store.finish_turn(fence, "turn-2", &failed).await.unwrap();
    store.set_session_state(fence, "idle").await.unwrap();
    // Finished turns are left alone when the lease changes hands; the queued one is handed
    // over to run.
    store.release_lease(fence).await.unwrap();
    let lease = store.acquire_lease(session.pk, "other", i64::MAX, false).await.unwrap().unwrap();
    assert!(lease.interrupted.is_empty(), "{lease:?}");
    let queued: Vec<_> = lease.queued.iter().map(|t| (t.turn_id.as_str(), t.user_seq)).collect();
    assert_eq!(queued, [("turn-3", 3)]);
}

pub async fn tool_calls_form_a_timeline(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    store
        .create_turn(
            db.fence(session.pk).await,
            "turn-1",
            "m",
            &text(1, 1, Role::User, "go"),
            false,
        )
        .await
        .unwrap();
    let first = store
        .start_tool_call(db.fence(session.pk).await, "turn-1", &call("c1", "list_dir"))
        .await
        .unwrap();
    let second = store
        .start_tool_call(db.fence(session.pk).await, "turn-1", &call("c2", "shell"))
        .await
        .unwrap();
    assert_ne!(first, second);
    store
        .finish_tool_call(db.fence(session.pk).await, second, "exit 1", true, "done", 40)
        .await
        .unwrap();

    let calls = store.tool_calls(session.pk).await.unwrap();
    assert_eq!(calls.len(), 2);
    let (c1, c2) = (&calls[0], &calls[1]);
    assert_eq!(
        (c1.id.as_str(), c1.turn_id.as_str(), c1.name.as_str()),
        ("c1", "turn-1", "list_dir")
    );
    assert_eq!(c1.args, "{\"call\":\"c1\"}");
    assert_eq!((c1.output.as_deref(), c1.is_error, c1.status.as_str()), (None, false, "running"));
    assert_eq!(c1.duration_ms, None);
    assert!(c1.started_at > 0);
    assert_eq!((c2.id.as_str(), c2.output.as_deref(), c2.is_error), ("c2", Some("exit 1"), true));
    assert_eq!((c2.status.as_str(), c2.duration_ms), ("done", Some(40)));
    store
        .finish_tool_call(db.fence(session.pk).await, first, "a b", false, "done", 1)
        .await
        .unwrap();
    let calls = store.tool_calls(session.pk).await.unwrap();
    assert_eq!((calls[0].output.as_deref(), calls[0].is_error), (Some("a b"), false));
    // The provider's history knows which answers are failures from the calls' records,
    // not from their text.
    let fence = db.fence(session.pk).await;
    let answer = |seq: i64, id: &str, output: &str| parley::store::NewMessage {
        tool_call_id: Some(id.into()),
        ..text(seq, 1, Role::Tool, output)
    };
    store.append_message(fence, &answer(2, "c1", "error: in the listing")).await.unwrap();
    store.append_message(fence, &answer(3, "c2", "exit 1")).await.unwrap();
    let history = store.history(session.pk, 1).await.unwrap();
    let failed: Vec<(&str, bool)> =
        history.iter().skip(1).map(|m| (m.content.as_str(), m.tool_error)).collect();
    assert_eq!(failed, [("error: in the listing", false), ("exit 1", true)]);
}

pub async fn unfinished_turns_are_counted_per_user_and_running_ones_listed(db: &Db) {
    let store = &db.store;
    let (mine, _) = store.open_session("alice", "a", None).await.unwrap();
    let (also_mine, _) = store.open_session("alice", "b", None).await.unwrap();
    let (theirs, _) = store.open_session("bob", "a", None).await.unwrap();
    let fence = db.fence(mine.pk).await;
    store.create_turn(fence, "t1", "m", &text(1, 1, Role::User, "x"), false).await.unwrap();
    store.create_turn(fence, "t2", "m", &text(2, 2, Role::User, "x"), false).await.unwrap();
    store.start_turn(fence, "t1").await.unwrap();
    let other = db.fence(also_mine.pk).await;
    store.create_turn(other, "t3", "m", &text(1, 1, Role::User, "x"), false).await.unwrap();
    store.finish_turn(other, "t3", &end(TurnStatus::Done)).await.unwrap();
    let bobs = db.fence(theirs.pk).await;
    store.create_turn(bobs, "t4", "m", &text(1, 1, Role::User, "x"), false).await.unwrap();
    assert_eq!(store.unfinished_turns("alice").await.unwrap(), 2);
    assert_eq!(store.unfinished_turns("bob").await.unwrap(), 1);
    assert_eq!(store.unfinished_turns("carol").await.unwrap(), 0);

    // Running (not queued, not finished) turns are listed over every user, each with its
    // session, the node holding the lease and the turns waiting behind it; a dead node's
    // (its lease expired) are left out until another node adopts them.
    let (dead, _) = store.open_session("dave", "d", None).await.unwrap();
    let lease = store.acquire_lease(dead.pk, "gone", 1, false).await.unwrap().unwrap();
    store.create_turn(lease.fence, "t5", "m", &text(1, 1, Role::User, "x"), true).await.unwrap();
    let now = parley::clock::now_ms();
    let running = store.running_turns(None, now).await.unwrap();
    assert_eq!(running.len(), 1, "{running:?}");
    let t1 = &running[0];
    assert_eq!(
        (t1.turn_id.as_str(), t1.user.as_str(), t1.session_id.as_str()),
        ("t1", "alice", "a")
    );
    assert_eq!((t1.node.as_deref(), t1.queued), (Some("test"), 1));
    assert!(t1.started_at > 0);
    store.start_turn(bobs, "t4").await.unwrap();
    let running: Vec<(String, String)> = store
        .running_turns(None, now)
        .await
        .unwrap()
        .into_iter()
        .map(|turn| (turn.turn_id, turn.user))
        .collect();
    assert_eq!(running, [("t1".into(), "alice".into()), ("t4".into(), "bob".into())]);
    let bobs: Vec<String> = store
        .running_turns(Some("bob"), now)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.turn_id)
        .collect();
    assert_eq!(bobs, ["t4"]);
    assert!(store.running_turns(Some("dave"), now).await.unwrap().is_empty());
}

pub async fn a_turn_is_found_by_its_id_with_its_own_messages(db: &Db) {
    let store = &db.store;
    let (session, _) = store.open_session("alice", "s", None).await.unwrap();
    let fence = db.fence(session.pk).await;
    store.create_turn(fence, "turn-1", "m", &text(1, 1, Role::User, "first"), false).await.unwrap();
    store.append_message(fence, &text(2, 1, Role::Assistant, "one")).await.unwrap();
    store.finish_turn(fence, "turn-1", &end(TurnStatus::Done)).await.unwrap();
    // Another turn queued before the first answered: its message comes between by seq.
    store
        .create_turn(fence, "turn-3", "m", &text(3, 3, Role::User, "second \u{0}"), false)
        .await
        .unwrap();
    let failed = TurnEnd {
        error_code: Some("PROVIDER_ERROR".into()),
        error_message: Some("the model \u{0} failed".into()),
        ..end(TurnStatus::Error)
    };
    store.finish_turn(fence, "turn-3", &failed).await.unwrap();

    let found = store.turn("alice", "turn-1").await.unwrap().unwrap();
    assert_eq!((found.id.as_str(), found.session_id.as_str()), ("turn-1", "s"));
    assert_eq!((found.session_pk, found.user_seq), (session.pk, 1));
    assert_eq!(found.status, TurnStatus::Done);
    assert_eq!(found.usage.total_tokens, 7);
    assert_eq!(found.model.as_deref(), Some("m"));
    assert!(found.finished_at.is_some());
    let messages = store.turn_messages(session.pk, found.user_seq).await.unwrap();
    let said: Vec<_> = messages.iter().map(|m| (m.role, m.content.as_str())).collect();
    assert_eq!(said, [(Role::User, "first"), (Role::Assistant, "one")]);

    let third = store.turn("alice", "turn-3").await.unwrap().unwrap();
    assert_eq!((third.status, third.user_seq), (TurnStatus::Error, 3));
    assert_eq!(third.error_code.as_deref(), Some("PROVIDER_ERROR"));
    assert_eq!(third.error_message.as_deref(), Some("the model \u{0} failed"));
    let messages = store.turn_messages(session.pk, 3).await.unwrap();
    assert_eq!(messages[0].content, "second \u{0}");
    // Each turn's own tool calls.
    store.start_tool_call(fence, "turn-1", &call("c1", "list_dir")).await.unwrap();
    store.start_tool_call(fence, "turn-3", &call("c2", "shell")).await.unwrap();
    store.start_tool_call(fence, "turn-1", &call("c3", "read_file")).await.unwrap();
    let calls = store.turn_tool_calls(session.pk, "turn-1").await.unwrap();
    let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c1", "c3"]);
    assert_eq!(store.turn_tool_calls(session.pk, "turn-3").await.unwrap().len(), 1);
    assert_eq!(store.tool_calls(session.pk).await.unwrap().len(), 3);
    // Only the owner's, and only turns that exist.
    assert!(store.turn("bob", "turn-1").await.unwrap().is_none());
    assert!(store.turn("alice", "turn-9").await.unwrap().is_none());
}

/// A turn admitted with nothing ahead of it is stored running; its end writes the answer,
/// the ledger entry and the session's return to idle in one go, and a fenced end still
/// counts the model call.
pub async fn a_turn_can_start_as_it_is_stored_and_end_in_one_write(db: &Db) {
    use parley::store::{AnswerWrite, LedgerEntry, MessageStatus};
    let store = &db.store;
    let (session, _) = store.open_session("alice", "one-go", None).await.unwrap();
    let fence = db.fence(session.pk).await;
    store.create_turn(fence, "turn-1", "m", &text(1, 1, Role::User, "hi"), true).await.unwrap();
    assert_eq!(store.session("alice", "one-go").await.unwrap().unwrap().state, "running");
    assert_eq!(store.turn("alice", "turn-1").await.unwrap().unwrap().status, TurnStatus::Running);

    let call = |turn: &str, step| LedgerEntry {
        user: "alice".into(),
        turn_id: turn.into(),
        step,
        model: "m".into(),
        usage: usage(10, 5, 0, Some(0.5)),
    };
    let answer =
        NewMessage { reasoning: Some("thought".into()), ..text(2, 1, Role::Assistant, "hello") };
    let done = TurnEnd {
        answer: Some(AnswerWrite::Insert(answer)),
        ledger: Some(call("turn-1", 2)),
        idle: true,
        ..end(TurnStatus::Done)
    };
    store.finish_turn(fence, "turn-1", &done).await.unwrap();
    let stored = store.session("alice", "one-go").await.unwrap().unwrap();
    assert_eq!((stored.state.as_str(), stored.message_count), ("idle", 2));
    let messages = store.messages(session.pk, None, None, 10).await.unwrap();
    let last = messages.last().unwrap();
    assert_eq!((last.content.as_str(), last.reasoning.as_deref()), ("hello", Some("thought")));
    assert_eq!(last.status, MessageStatus::Complete);
    assert_eq!(store.turn("alice", "turn-1").await.unwrap().unwrap().status, TurnStatus::Done);

    // A partial flush's row is completed by the end, which leaves the session running when
    // another turn waits.
    store.create_turn(fence, "turn-3", "m", &text(3, 3, Role::User, "again"), true).await.unwrap();
    let partial =
        NewMessage { status: MessageStatus::Streaming, ..text(4, 3, Role::Assistant, "hal") };
    let id = store.append_message(fence, &partial).await.unwrap();
    let update = AnswerWrite::Update { id, content: "halfway there".into(), reasoning: None };
    let done =
        TurnEnd { answer: Some(update), ledger: Some(call("turn-3", 4)), ..end(TurnStatus::Done) };
    store.finish_turn(fence, "turn-3", &done).await.unwrap();
    assert_eq!(store.session("alice", "one-go").await.unwrap().unwrap().state, "running");
    let messages = store.messages(session.pk, None, None, 10).await.unwrap();
    let last = messages.last().unwrap();
    assert_eq!((last.content.as_str(), last.status), ("halfway there", MessageStatus::Complete));

    // An end with no answer to write (an error, a cancel) returns the session to idle too.
    store.create_turn(fence, "turn-4", "m", &text(5, 5, Role::User, "fails"), false).await.unwrap();
    store.start_turn(fence, "turn-4").await.unwrap();
    let failed = TurnEnd { idle: true, ..end(TurnStatus::Error) };
    store.finish_turn(fence, "turn-4", &failed).await.unwrap();
    assert_eq!(store.session("alice", "one-go").await.unwrap().unwrap().state, "idle");

    // Fenced: nothing of the end is written, but the call is counted.
    store.create_turn(fence, "turn-5", "m", &text(6, 6, Role::User, "more"), true).await.unwrap();
    store.create_turn(fence, "turn-6", "m", &text(7, 7, Role::User, "most"), false).await.unwrap();
    let counted = store.session("alice", "one-go").await.unwrap().unwrap().message_count;
    store.release_lease(fence).await.unwrap();
    store.acquire_lease(session.pk, "other", i64::MAX, false).await.unwrap().unwrap();
    let answer = text(8, 6, Role::Assistant, "never stored");
    let refused = TurnEnd {
        answer: Some(AnswerWrite::Insert(answer)),
        ledger: Some(call("turn-5", 8)),
        idle: true,
        ..end(TurnStatus::Done)
    };
    let err = store.finish_turn(fence, "turn-5", &refused).await.unwrap_err();
    assert!(matches!(err, parley::store::StoreError::Fenced), "{err:?}");
    // Without an answer to write, the fence is checked on its own: the call still counts.
    let refused = TurnEnd { ledger: Some(call("turn-6", 9)), ..end(TurnStatus::Cancelled) };
    let err = store.finish_turn(fence, "turn-6", &refused).await.unwrap_err();
    assert!(matches!(err, parley::store::StoreError::Fenced), "{err:?}");
    let messages = store.messages(session.pk, None, None, 20).await.unwrap();
    assert!(messages.iter().all(|m| m.content != "never stored"));
    let stored = store.session("alice", "one-go").await.unwrap().unwrap();
    assert_eq!(stored.message_count, counted, "a fenced end counts no message");
    let now = parley::clock::now_ms();
    let query = parley::store::UsageQuery {
        from: now - 60_000,
        to: now + 60_000,
        user: Some("alice".into()),
        group_by: parley::store::UsageGroup::User,
    };
    let report = store.usage_report(&query).await.unwrap();
    assert_eq!(report.len(), 1, "{report:?}");
    // Four turns' calls, the fenced ones' among them.
    assert_eq!((report[0].turns, report[0].usage.prompt_tokens), (4, 40), "{report:?}");
}
