//! The event store: idempotent appends, version conflicts, uniqueness claims, snapshots.

use std::sync::Arc;

use aggregates::user::{User, UserCommand};
use control_plane::store::{
    CommandBus, CommandContext, EventStore, ExecError, ExecOptions, IdempotencyClaim, Outcome,
};
use projections::Hub;
use serde_json::json;

async fn register(bus: &CommandBus, email: &str) -> String {
    let id = control_plane::ids::new_id("usr");
    bus.execute::<User>(
        &id,
        UserCommand::Register {
            user_id: id.clone(),
            email: email.parse().unwrap(),
            display_name: "u".into(),
            password_hash: None,
            platform_admin: false,
        },
        &CommandContext::system("test"),
        ExecOptions::default(),
    )
    .await
    .unwrap();
    id
}

fn rename(name: &str) -> UserCommand {
    UserCommand::ChangeDisplayName {
        display_name: name.into(),
    }
}

#[tokio::test]
async fn thirty_two_concurrent_submissions_of_one_key_append_exactly_one_event() {
    let (_, pool) = tests::db::fresh_pool().await;
    let hub = Hub::default();
    let setup = CommandBus::new(EventStore::new(pool.clone(), hub.clone()));
    let id = register(&setup, "race@example.com").await;

    // 32 buses: as if 32 processes raced, so only the database can arbitrate.
    let buses: Vec<Arc<CommandBus>> = (0..32)
        .map(|_| Arc::new(CommandBus::new(EventStore::new(pool.clone(), hub.clone()))))
        .collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = Vec::new();
    for bus in buses {
        let (id, barrier) = (id.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            bus.execute::<User>(
                &id,
                rename("once"),
                &CommandContext::system("test"),
                ExecOptions::idempotent(IdempotencyClaim {
                    key: "rename-once".into(),
                    request_hash: "h1".into(),
                    response: json!({"answer": 42}),
                }),
            )
            .await
        }));
    }
    let (mut applied, mut duplicates) = (0, 0);
    for t in tasks {
        match t.await.unwrap().expect("every caller succeeds") {
            Outcome::Applied { .. } => applied += 1,
            Outcome::Duplicate(record) => {
                assert_eq!(
                    record.response,
                    json!({"answer": 42}),
                    "duplicates get the first answer"
                );
                assert_eq!(record.aggregate_id, id);
                duplicates += 1;
            }
            Outcome::Unchanged { .. } => panic!("a duplicate must be reported as such"),
        }
    }
    assert_eq!((applied, duplicates), (1, 31));
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND metadata->>'idempotency_key' = 'rename-once'",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_reused_key_with_a_different_request_is_refused() {
    let (_, pool) = tests::db::fresh_pool().await;
    let bus = CommandBus::new(EventStore::new(pool.clone(), Hub::default()));
    let id = register(&bus, "reuse@example.com").await;
    let claim = |hash: &str| {
        ExecOptions::idempotent(IdempotencyClaim {
            key: "k".into(),
            request_hash: hash.into(),
            response: json!(null),
        })
    };
    bus.execute::<User>(&id, rename("a"), &CommandContext::system("t"), claim("one"))
        .await
        .unwrap();
    let err = bus
        .execute::<User>(&id, rename("b"), &CommandContext::system("t"), claim("two"))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::IdempotencyMismatch(_)), "{err:?}");
}

#[tokio::test]
async fn version_conflicts_between_processes_are_retried_and_never_surface() {
    let (_, pool) = tests::db::fresh_pool().await;
    let hub = Hub::default();
    let setup = CommandBus::new(EventStore::new(pool.clone(), hub.clone()));
    let id = register(&setup, "busy@example.com").await;
    let mut tasks = Vec::new();
    for p in 0..4 {
        let bus = Arc::new(CommandBus::new(EventStore::new(pool.clone(), hub.clone())));
        for i in 0..10 {
            let (bus, id) = (bus.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                bus.execute::<User>(
                    &id,
                    rename(&format!("p{p}-{i}")),
                    &CommandContext::system("t"),
                    ExecOptions::default(),
                )
                .await
            }));
        }
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Ok(Outcome::Applied { .. })));
    }
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT sequence FROM events WHERE aggregate_id = $1 ORDER BY sequence")
            .bind(&id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        seqs,
        (1..=41).collect::<Vec<i64>>(),
        "no gaps, no duplicates"
    );
}

#[tokio::test]
async fn two_users_claiming_one_email_at_once_yield_exactly_one_account() {
    let (_, pool) = tests::db::fresh_pool().await;
    let hub = Hub::default();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let bus = CommandBus::new(EventStore::new(pool.clone(), hub.clone()));
        tasks.push(tokio::spawn(async move {
            let id = control_plane::ids::new_id("usr");
            bus.execute::<User>(
                &id,
                UserCommand::Register {
                    user_id: id.clone(),
                    email: "same@example.com".parse().unwrap(),
                    display_name: "x".into(),
                    password_hash: None,
                    platform_admin: false,
                },
                &CommandContext::system("t"),
                ExecOptions::default(),
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ExecError::ClaimTaken { scope, value }) => {
                assert_eq!(
                    (scope.as_str(), value.as_str()),
                    ("user_email", "same@example.com")
                )
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(n, 1);
}

/// The one-statement append takes the idempotency key, the claims and the events together: a
/// claim someone else holds leaves nothing behind (no key, no claim, no event), so the same key
/// can later succeed for the right request.
#[tokio::test]
async fn a_refused_claim_leaves_neither_its_idempotency_key_nor_any_event() {
    let (_, pool) = tests::db::fresh_pool().await;
    let bus = CommandBus::new(EventStore::new(pool.clone(), Hub::default()));
    let first = register(&bus, "taken@example.com").await;
    let register_with_key = |email: &str| {
        let id = control_plane::ids::new_id("usr");
        (
            id.clone(),
            UserCommand::Register {
                user_id: id,
                email: email.parse().unwrap(),
                display_name: "y".into(),
                password_hash: None,
                platform_admin: false,
            },
        )
    };
    let key = || {
        ExecOptions::idempotent(IdempotencyClaim {
            key: "signup-1".into(),
            request_hash: "h".into(),
            response: json!({}),
        })
    };
    let (loser, cmd) = register_with_key("taken@example.com");
    let r = bus
        .execute::<User>(&loser, cmd, &CommandContext::system("t"), key())
        .await;
    assert!(
        matches!(r, Err(ExecError::ClaimTaken { .. })),
        "{:?}",
        r.err()
    );
    let left: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM idempotency_keys WHERE key = 'signup-1'),
                (SELECT count(*) FROM unique_claims WHERE owner_id = $1),
                (SELECT count(*) FROM events WHERE aggregate_id = $1)",
    )
    .bind(&loser)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, (0, 0, 0));
    // The same key now succeeds for a free address, and its replay is a duplicate.
    let (winner, cmd) = register_with_key("free@example.com");
    let r = bus
        .execute::<User>(&winner, cmd.clone(), &CommandContext::system("t"), key())
        .await
        .unwrap();
    assert!(matches!(r, Outcome::Applied { .. }));
    let again = bus
        .execute::<User>(&winner, cmd, &CommandContext::system("t"), key())
        .await
        .unwrap();
    assert!(matches!(again, Outcome::Duplicate(_)));
    let owner: String = sqlx::query_scalar(
        "SELECT owner_id FROM unique_claims WHERE scope = 'user_email' AND value = 'taken@example.com'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(owner, first, "the first holder keeps its claim");
}

#[tokio::test]
async fn an_aggregate_loaded_from_snapshot_and_tail_equals_a_full_replay() {
    let (_, pool) = tests::db::fresh_pool().await;
    let store = EventStore::new(pool.clone(), Hub::default());
    let bus = CommandBus::without_cache(store.clone());
    let id = register(&bus, "long@example.com").await;
    for i in 0..250 {
        bus.execute::<User>(
            &id,
            rename(&format!("n{i}")),
            &CommandContext::system("t"),
            ExecOptions::default(),
        )
        .await
        .unwrap();
    }
    let snap: i64 =
        sqlx::query_scalar("SELECT last_sequence FROM snapshots WHERE aggregate_id = $1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(snap, 200, "a snapshot every 100 events");
    let (loaded, seq) = store.load::<User>(&id).await.unwrap();
    assert_eq!(seq, 251);
    sqlx::query("DELETE FROM snapshots")
        .execute(&pool)
        .await
        .unwrap();
    let (replayed, seq2) = store.load::<User>(&id).await.unwrap();
    assert_eq!((loaded, seq), (replayed, seq2));
}

#[tokio::test]
async fn the_log_is_append_only() {
    let (_, pool) = tests::db::fresh_pool().await;
    let bus = CommandBus::new(EventStore::new(pool.clone(), Hub::default()));
    register(&bus, "a@example.com").await;
    for sql in [
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

#[tokio::test]
async fn every_event_carries_actor_correlation_causation_and_idempotency_key() {
    let (_, pool) = tests::db::fresh_pool().await;
    let bus = CommandBus::new(EventStore::new(pool.clone(), Hub::default()));
    let id = register(&bus, "meta@example.com").await;
    let ctx = CommandContext::from_request(
        control_plane::store::Actor::User("usr_actor".into()),
        "req_1",
    );
    bus.execute::<User>(
        &id,
        rename("m"),
        &ctx,
        ExecOptions::idempotent(IdempotencyClaim {
            key: "idem-1".into(),
            request_hash: "h".into(),
            response: json!(null),
        }),
    )
    .await
    .unwrap();
    let (meta, event_id, txid): (serde_json::Value, String, String) = sqlx::query_as(
        "SELECT metadata, event_id, transaction_id::text FROM events WHERE aggregate_id = $1 AND sequence = 2",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        meta,
        json!({"actor_type": "user", "actor_id": "usr_actor", "correlation_id": "req_1", "causation_id": "req_1",
               "request_id": "req_1", "idempotency_key": "idem-1"})
    );
    assert!(event_id.starts_with("evt_"));
    assert!(txid.parse::<u64>().unwrap() > 0);
}

#[tokio::test]
async fn a_command_marked_fresh_on_a_stream_that_exists_runs_on_the_real_state() {
    let (_, pool) = tests::db::fresh_pool().await;
    let bus = CommandBus::new(EventStore::new(pool.clone(), Hub::default()));
    let id = register(&bus, "fresh@example.com").await;
    let other = CommandBus::new(EventStore::new(pool.clone(), Hub::default()));
    let err = other
        .execute::<User>(
            &id,
            UserCommand::Register {
                user_id: id.clone(),
                email: "fresh2@example.com".parse().unwrap(),
                display_name: "x".into(),
                password_hash: None,
                platform_admin: false,
            },
            &CommandContext::system("t"),
            ExecOptions::default().fresh(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::Domain(aggregates::user::UserError::AlreadyRegistered)
        ),
        "{err:?}"
    );
    let renamed = other
        .execute::<User>(
            &id,
            rename("after"),
            &CommandContext::system("t"),
            ExecOptions::default().fresh(),
        )
        .await
        .unwrap();
    assert!(matches!(renamed, Outcome::Applied { .. }));
}

/// Group commit (docs/adr/0014-group-commit-and-hot-reads.md): concurrent appends share one statement and
/// one commit, and each still gets the answer it would have had alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_committed_together_and_each_keeps_its_own_answer() {
    let (_, pool) = tests::db::fresh_pool().await;
    let bus = Arc::new(CommandBus::new(
        EventStore::new(pool.clone(), Hub::default()).with_group_commit(1),
    ));
    let x = register(&bus, "x@example.com").await;
    let keyed = |key: &str, hash: &str| {
        ExecOptions::idempotent(IdempotencyClaim {
            key: key.into(),
            request_hash: hash.into(),
            response: json!({"first": true}),
        })
        .without_precheck()
    };
    let first = bus
        .execute::<User>(
            &x,
            rename("a"),
            &CommandContext::system("t"),
            keyed("k-dup", "h"),
        )
        .await
        .unwrap();
    assert!(matches!(first, Outcome::Applied { .. }));

    #[derive(Debug, PartialEq)]
    enum Seen {
        Applied,
        Duplicate,
        Mismatch,
        ClaimTaken,
    }
    let seen = |r: Result<Outcome<User>, ExecError<_>>| match r {
        Ok(Outcome::Applied { .. }) => Seen::Applied,
        Ok(Outcome::Duplicate(rec)) => {
            assert_eq!(rec.response, json!({"first": true}));
            Seen::Duplicate
        }
        Err(ExecError::IdempotencyMismatch(_)) => Seen::Mismatch,
        Err(ExecError::ClaimTaken { .. }) => Seen::ClaimTaken,
        other => panic!("unexpected {other:?}"),
    };
    let signup = |email: String, key: String| {
        let bus = bus.clone();
        async move {
            let id = control_plane::ids::new_id("usr");
            let r = bus
                .execute::<User>(
                    &id,
                    UserCommand::Register {
                        user_id: id.clone(),
                        email: email.parse().unwrap(),
                        display_name: "g".into(),
                        password_hash: None,
                        platform_admin: false,
                    },
                    &CommandContext::system("t"),
                    ExecOptions::idempotent(IdempotencyClaim {
                        key,
                        request_hash: "h".into(),
                        response: json!({"first": true}),
                    })
                    .fresh(),
                )
                .await;
            (id, r)
        }
    };

    // 40 sign-ups, replays and reused keys at once.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let f = signup(format!("g{i}@example.com"), format!("signup-{i}"));
        tasks.spawn(async move { ("new", f.await) });
    }
    for (i, hash) in ["h", "h", "h", "other", "other"].into_iter().enumerate() {
        let (bus, x) = (bus.clone(), x.clone());
        tasks.spawn(async move {
            let r = bus
                .execute::<User>(
                    &x,
                    rename(&format!("again {i}")),
                    &CommandContext::system("t"),
                    keyed("k-dup", hash),
                )
                .await;
            (if hash == "h" { "replay" } else { "reused" }, (x, r))
        });
    }
    let mut new_ids = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (kind, (id, r)) = done.unwrap();
        let s = seen(r);
        match kind {
            "new" => {
                assert_eq!(s, Seen::Applied);
                new_ids.push(id);
            }
            "replay" => assert_eq!(s, Seen::Duplicate),
            _ => assert_eq!(s, Seen::Mismatch),
        }
        *counts.entry(kind).or_insert(0) += 1;
    }
    assert_eq!(new_ids.len(), 40);
    let (events, commits): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT transaction_id::text) FROM events WHERE aggregate_id = ANY($1)",
    )
    .bind(&new_ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(events, 40, "one event per sign-up");
    assert!(
        commits < 40,
        "the sign-ups shared commits: {commits} for 40"
    );
    let renames: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(&x)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        renames, 2,
        "registered and renamed once: replays and reused keys add nothing"
    );

    // Claims taken (by an earlier account, or by a sign-up in the same group): the group is
    // written again one by one, and only the losers are refused.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let email = match i % 4 {
            0 => "g0@example.com".to_string(),
            1 => "contested@example.com".to_string(),
            _ => format!("late{i}@example.com"),
        };
        let f = signup(email.clone(), format!("late-{i}"));
        tasks.spawn(async move { (email, f.await) });
    }
    let mut by_email: std::collections::BTreeMap<String, Vec<Seen>> = Default::default();
    while let Some(done) = tasks.join_next().await {
        let (email, (_, r)) = done.unwrap();
        by_email.entry(email).or_default().push(seen(r));
    }
    assert!(by_email["g0@example.com"]
        .iter()
        .all(|s| *s == Seen::ClaimTaken));
    let contested = &by_email["contested@example.com"];
    assert_eq!(
        contested.iter().filter(|s| **s == Seen::Applied).count(),
        1,
        "{contested:?}"
    );
    assert_eq!(
        contested.iter().filter(|s| **s == Seen::ClaimTaken).count(),
        4
    );
    for (email, seen) in &by_email {
        if email.starts_with("late") {
            assert_eq!(seen, &[Seen::Applied], "{email}");
        }
    }
    let refused_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key LIKE 'late-%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        refused_left,
        10 + 1,
        "only the accepted sign-ups keep their keys"
    );
}
