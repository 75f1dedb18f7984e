//! The projector runtime: commit-safe order, exactly-once across kills, rebuild = live.

use std::sync::Arc;
use std::time::Duration;

use aggregates::user::{User, UserCommand};
use async_trait::async_trait;
use control_plane::store::{CommandBus, CommandContext, EventStore, ExecOptions};
use projections::runner::{Batch, Projector};
use projections::{Checkpoint, Hub, Projection, ProjectorConfig, StoredEvent};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tests::fixtures::{brain, create_agent, draft, publish};
use tests::{eventually, secs, TestApp};

/// Records every event it applies; applying one twice violates the primary key.
struct Recorder;

#[async_trait]
impl Projection for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn aggregate_types(&self) -> &'static [&'static str] {
        &["User"]
    }
    fn tables(&self) -> &'static [&'static str] {
        &["test_applied"]
    }
    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for e in events {
            sqlx::query("INSERT INTO test_applied (position) VALUES ($1)")
                .bind(e.position)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

async fn setup() -> (PgPool, Hub, CommandBus) {
    let (_, pool) = tests::db::fresh_pool().await;
    sqlx::query("CREATE TABLE test_applied (position bigint PRIMARY KEY, n bigserial)")
        .execute(&pool)
        .await
        .unwrap();
    let hub = Hub::default();
    let bus = CommandBus::new(EventStore::new(pool.clone(), hub.clone()));
    (pool, hub, bus)
}

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

fn projector(pool: &PgPool, hub: &Hub, batch_size: i64) -> Arc<Projector> {
    Arc::new(Projector::new(
        Arc::new(Recorder),
        pool.clone(),
        hub.clone(),
        ProjectorConfig {
            poll_interval: Duration::from_millis(50),
            batch_size,
            ..ProjectorConfig::default()
        },
    ))
}

async fn drain(p: &Projector) {
    while let Batch::Applied(_) | Batch::Busy = p.run_batch().await.unwrap() {}
}

async fn applied(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM test_applied ORDER BY n")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn user_positions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM events WHERE aggregate_type = 'User' ORDER BY transaction_id, position")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_transaction_that_commits_late_is_neither_skipped_nor_applied_twice() {
    let (pool, hub, bus) = setup().await;
    // A writer takes a position, then holds its transaction open.
    let mut slow = pool.begin().await.unwrap();
    let slow_position: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('User', 'usr_slow', 1, 'DisplayNameChanged', '1.0', $1, '{}') RETURNING position",
    )
    .bind(json!({"DisplayNameChanged": {"display_name": "late"}}))
    .fetch_one(&mut *slow)
    .await
    .unwrap();
    // Others commit events with later positions meanwhile.
    for i in 0..20 {
        register(&bus, &format!("u{i}@example.com")).await;
    }
    let committed = user_positions(&pool).await;
    assert_eq!(committed.len(), 20);
    assert!(
        committed.iter().all(|p| *p > slow_position),
        "a reader paging on position would skip {slow_position}"
    );

    let p = projector(&pool, &hub, 7);
    drain(&p).await;
    assert!(
        applied(&pool).await.is_empty(),
        "nothing past the open transaction may be applied yet"
    );

    slow.commit().await.unwrap();
    p.catch_up(Duration::from_secs(10)).await.unwrap();
    let all = user_positions(&pool).await;
    assert_eq!(all.len(), 21);
    assert_eq!(
        applied(&pool).await,
        all,
        "every event once, in commit order"
    );
    assert_eq!(applied(&pool).await[0], slow_position);
}

#[tokio::test]
async fn the_running_projector_picks_up_a_late_commit_from_another_process_by_polling() {
    let (pool, hub, bus) = setup().await;
    let projectors = projections::Projectors::new(
        vec![Arc::new(Recorder)],
        pool.clone(),
        hub.clone(),
        ProjectorConfig {
            poll_interval: Duration::from_millis(50),
            batch_size: 100,
            ..ProjectorConfig::default()
        },
    );
    let tasks = projectors.spawn();
    let recorder = projectors.get("recorder").unwrap().clone();
    let mut slow = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('User', 'usr_slow', 1, 'DisplayNameChanged', '1.0', '{}', '{}')",
    )
    .execute(&mut *slow)
    .await
    .unwrap();
    for i in 0..5 {
        register(&bus, &format!("w{i}@example.com")).await;
    }
    // The projector looks (a batch of its own, once the running task lets go of the lock):
    // nothing past the open transaction is applied.
    let batch = eventually("a batch of the recorder", secs(10), async || match recorder
        .run_batch()
        .await
        .unwrap()
    {
        Batch::Busy => Err("busy".to_string()),
        b => Ok(b),
    })
    .await;
    assert_eq!(batch, Batch::Idle);
    assert!(applied(&pool).await.is_empty());
    slow.commit().await.unwrap(); // no local notification: only polling can find it
                                  // Polling (every 50 ms) is the subject: real time.
    eventually(
        "the running projector finds the late commit",
        secs(10),
        async || match applied(&pool).await.len() {
            6 => Ok(()),
            n => Err(format!("{n} applied")),
        },
    )
    .await;
    assert_eq!(applied(&pool).await, user_positions(&pool).await);
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn a_projector_killed_between_or_during_batches_resumes_with_nothing_skipped_or_doubled() {
    let (pool, hub, bus) = setup().await;
    let id = register(&bus, "long@example.com").await;
    for i in 0..599 {
        bus.execute::<User>(
            &id,
            UserCommand::ChangeDisplayName {
                display_name: format!("n{i}"),
            },
            &CommandContext::system("t"),
            ExecOptions::default(),
        )
        .await
        .unwrap();
    }
    // Killed between batches: three batches, then the process is gone.
    let first = projector(&pool, &hub, 50);
    for _ in 0..3 {
        assert_eq!(first.run_batch().await.unwrap(), Batch::Applied(50));
    }
    drop(first);
    assert_eq!(applied(&pool).await.len(), 150);

    // Killed at an arbitrary moment, possibly mid-batch: once it reports having passed the
    // 300th event.
    let (txid, position): (String, i64) = sqlx::query_as(
        "SELECT transaction_id::text, position FROM events WHERE aggregate_type = 'User'
         ORDER BY transaction_id, position OFFSET 299 LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let three_hundredth = Checkpoint {
        txid: txid.parse().unwrap(),
        position,
    };
    let second = projector(&pool, &hub, 50);
    let task = tokio::spawn(second.clone().run());
    assert!(
        hub.wait_for("User", three_hundredth, Duration::from_secs(20))
            .await,
        "the second projector never passed the 300th event"
    );
    assert!(applied(&pool).await.len() >= 300);
    task.abort();
    let _ = task.await;
    drop(second);

    let third = projector(&pool, &hub, 50);
    third.catch_up(Duration::from_secs(10)).await.unwrap();
    assert_eq!(applied(&pool).await, user_positions(&pool).await);
    let counted: i64 = sqlx::query_scalar(
        "SELECT events_applied FROM projector_checkpoints WHERE name = 'recorder'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counted, 600);
}

async fn dump(pool: &PgPool, tables: &[&str]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for t in tables {
        let rows: serde_json::Value = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]'::jsonb) FROM {t} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.insert(t.to_string(), rows);
    }
    serde_json::Value::Object(out)
}

#[tokio::test]
async fn rebuilt_read_models_equal_the_live_ones() {
    let app = TestApp::spawn().await;
    let root = app.root_token().await;
    let mut ests = Vec::new();
    for i in 0..3 {
        ests.push(app.create_establishment(&root, &format!("Est {i}")).await);
    }
    let admin = app.seed_member(&ests[0], "boss@example.com", "admin").await;
    app.seed_member(&ests[0], "op@example.com", "operator")
        .await;
    app.seed_member(&ests[1], "op@example.com", "viewer").await;
    app.post(
        &format!("/establishments/{}/users", ests[0]),
        &admin,
        json!({"email": "new@example.com", "role": "viewer"}),
    )
    .await;
    seed_agents_and_telephony(&app, &admin, &root, &ests[0]).await;
    app.patch(
        &format!("/establishments/{}", ests[0]),
        &admin,
        json!({"name": "Renamed", "timezone": "Europe/Paris"}),
    )
    .await;
    let op: String = sqlx::query_scalar("SELECT id FROM rm_users WHERE email = 'op@example.com'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    app.patch(
        &format!("/users/{op}"),
        &admin,
        json!({"establishment_id": ests[0], "role": "admin"}),
    )
    .await;
    app.delete(&format!("/establishments/{}/users/{op}", ests[1]), &root)
        .await;

    for (i, est) in ests.iter().enumerate() {
        seed_runtime(&app, est, 1 + i as u16).await;
    }
    seed_call(&app, &ests[0]).await;
    seed_call(&app, &ests[1]).await;
    // An integration, renamed (the integrations projection folds its events).
    let r = app
        .post(
            &format!("/establishments/{}/integrations", ests[0]),
            &root,
            serde_json::json!({"type": "email", "display_name": "Mail",
                               "auth": {"mode": "api_key", "credentials": {}}}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let integration = r.body["integration_id"].as_str().unwrap().to_string();
    app.patch(
        &format!("/integrations/{integration}"),
        &root,
        serde_json::json!({"display_name": "Front desk mail", "enabled": false}),
    )
    .await;

    // Leads (an import, an edit, the do-not-call list) and campaigns.
    let s = super::leads::imported(
        &app,
        &root,
        &ests[0],
        b"phone,name,plan\n(11) 91234-5678,Ana,gold\n(11) 91234-0000,Bia,\n",
    )
    .await;
    assert_eq!(s["rows_imported"], 2, "{s}");
    let leads = app
        .get(&format!("/leads?establishment_id={}", ests[0]), &root)
        .await;
    let lead = leads.body["items"][0]["id"].as_str().unwrap().to_string();
    app.patch(
        &format!("/leads/{lead}"),
        &root,
        json!({"status": "contacted", "do_not_call": true}),
    )
    .await;
    let agent = tests::fixtures::published_agent(&app, &root, &ests[0], "Dialer").await;
    for i in 0..6 {
        let r = app
            .post(
                "/campaigns",
                &root,
                json!({"establishment_id": ests[0], "name": format!("Campaign {i}"),
                       "agent_id": agent.id, "agent_version_id": agent.version,
                       "pace": {"calls_per_minute": 6},
                       "schedule": {"timezone": "UTC", "days": ["mon"], "start": "09:00", "end": "18:00"}}),
            )
            .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
        let id = r.body["id"].as_str().unwrap();
        app.post(&format!("/campaigns/{id}/cancel"), &root, json!({}))
            .await;
    }

    app.settle().await;
    for projection in control_plane::state::projections() {
        let live = dump(app.pool(), projection.tables()).await;
        assert!(live
            .as_object()
            .unwrap()
            .values()
            .any(|v| !v.as_array().unwrap().is_empty()));
        let n = projections::runner::rebuild(app.pool(), projection.as_ref(), 4, |_, _| {})
            .await
            .unwrap();
        assert!(n > 10);
        let rebuilt = dump(app.pool(), projection.tables()).await;
        assert_eq!(
            live,
            rebuilt,
            "projection {} differs after rebuild",
            projection.name()
        );
    }
}

/// Agents with a version history and a telephony policy (numbers assigned by the platform), for
/// the agents and routing projections.
async fn seed_agents_and_telephony(app: &TestApp, admin: &str, platform: &str, est: &str) {
    let agent = create_agent(app, admin, est, "Nova").await;
    let second = create_agent(app, admin, est, "Second").await;
    let mut v = Vec::new();
    for name in ["v1", "v2", "v3"] {
        v.push(draft(app, admin, &agent, brain(name)).await);
    }
    let ok = |r: tests::app::Resp| assert!(r.status.is_success(), "{}", r.text);
    ok(app
        .patch(
            &format!("/agents/{agent}/versions/{}", v[2]),
            admin,
            json!({"prompt": "Edited."}),
        )
        .await);
    ok(publish(app, admin, &agent, &v[0]).await);
    ok(publish(app, admin, &agent, &v[1]).await);
    ok(app
        .post(
            &format!("/agents/{agent}/versions/{}/rollback", v[0]),
            admin,
            json!({}),
        )
        .await);
    ok(app
        .post(
            &format!("/agents/{agent}/versions/{}/archive", v[1]),
            admin,
            json!({}),
        )
        .await);
    ok(app
        .patch(
            &format!("/agents/{second}"),
            admin,
            json!({"description": "Backup"}),
        )
        .await);
    let s1 = draft(app, admin, &second, brain("s1")).await;
    ok(publish(app, admin, &second, &s1).await);
    ok(app
        .patch(
            &format!("/establishments/{est}/telephony"),
            platform,
            json!({
                "inbound_numbers": [
                    {"e164": "+14158675309", "routing_agent_id": agent},
                    {"e164": "+14158675310", "routing_agent_id": second},
                ],
                "handoff_e164": "+14158671234",
                "business_hours": [{"days": ["mon"], "start": "22:00", "end": "02:00"}],
                "blacklist_e164": ["+14158671111"],
                "max_call_duration_seconds": 600,
            }),
        )
        .await);
}

/// A runtime whose image does not exist: the worker's create fails, which records more events
/// without starting any container. Returns once the worker is done with it.
async fn seed_runtime(app: &TestApp, est: &str, host_port: u16) {
    use aggregates::runtime::{Runtime, RuntimeCommand, RuntimeSpec};
    use control_plane::store::{CommandContext, ExecOptions};
    let id = control_plane::ids::new_id("rt");
    let ctx = CommandContext::system("test-seed").in_establishment(est);
    let spec = RuntimeSpec {
        runtime_id: id.clone(),
        establishment_id: est.to_string(),
        image: "rebuild-test/never-built:none".into(),
        container_name: format!("agent_rt_{est}"),
        host_port,
        base_url: format!("http://127.0.0.1:{host_port}"),
        media_stream_url: None,
        env_keys: vec![],
        env_encrypted: None,
    };
    for command in [
        RuntimeCommand::Provision(Box::new(spec)),
        RuntimeCommand::Drain,
        RuntimeCommand::Resume,
    ] {
        let outcome = app
            .state()
            .bus
            .execute::<Runtime>(&id, command, &ctx, ExecOptions::default())
            .await
            .unwrap();
        app.state().bus.visible(&outcome).await;
    }
    app.state().runtimes.ops_wake.notify_one();
    // The runtime worker asks Docker for the image (outside the process): real time.
    eventually("the runtime worker answers", secs(20), async || {
        match app
            .state()
            .bus
            .load::<Runtime>(&id)
            .await
            .unwrap()
            .0
            .pending
        {
            None => Ok(()),
            Some(op) => Err(format!("pending {op:?}")),
        }
    })
    .await;
}

/// A call with routing, Twilio callbacks, transcript, tools, recording, sentiment and summary.
async fn seed_call(app: &TestApp, est: &str) {
    use aggregates::call::*;
    use control_plane::store::{CommandContext, ExecOptions};
    let call_id = control_plane::ids::new_id("call");
    let sid: CallSid = format!(
        "CA{}",
        &ulid::Ulid::new()
            .to_string()
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_hexdigit(), "a")[..26]
    )
    .chars()
    .chain("000000".chars())
    .take(34)
    .collect::<String>()
    .parse()
    .unwrap();
    let t0 = chrono::Utc::now();
    let open = CallOpening {
        call_id: call_id.clone(),
        establishment_id: est.to_string(),
        direction: Direction::Inbound,
        call_sid: Some(sid.clone()),
        from: "+14155550100".parse().unwrap(),
        to: "+14158675309".parse().unwrap(),
        agent_id: Some("agt_x".into()),
        agent_version_id: Some("agv_x".into()),
        opened_by: OpenedBy::IncomingWebhook,
        at: t0,
    };
    let origin = |n: u32| RuntimeOrigin {
        runtime_id: "rt_x".into(),
        event_id: format!("evt_{n}"),
        occurred_at: t0 + chrono::Duration::seconds(n as i64),
    };
    let status = |seq: u32, status: TwilioCallStatus, duration: Option<u32>| {
        CallCommand::RecordTwilioStatus {
            open: None,
            callback: StatusCallback {
                call_sid: sid.clone(),
                sequence_number: Some(seq),
                status,
                timestamp: Some(t0 + chrono::Duration::seconds(seq as i64)),
                call_duration: duration,
                answered_by: None,
                machine_detection_duration_ms: None,
                sip_response_code: None,
                received_at: t0,
            },
        }
    };
    let runtime = |n: u32, event: RuntimeEvent| CallCommand::IngestRuntimeEvent {
        open: open.clone(),
        origin: origin(n),
        event,
    };
    let segment = |n: u32, speaker: Speaker, text: &str| {
        runtime(
            n,
            RuntimeEvent::TranscriptSegment(TranscriptSegment {
                segment_id: format!("seg_{n}"),
                speaker,
                text: text.into(),
                started_at: t0 + chrono::Duration::seconds(n as i64),
                ended_at: t0 + chrono::Duration::seconds(n as i64 + 1),
                confidence: Some(0.9),
            }),
        )
    };
    let commands = vec![
        CallCommand::ReceiveInbound {
            open: open.clone(),
            decision: RoutingDecision::Accepted {
                agent_id: "agt_x".into(),
                agent_version_id: "agv_x".into(),
                runtime_id: "rt_x".into(),
            },
        },
        status(0, TwilioCallStatus::Ringing, None),
        status(1, TwilioCallStatus::InProgress, None),
        runtime(2, RuntimeEvent::CallStarted { started_at: t0 }),
        segment(3, Speaker::Agent, "Hello, how can I help?"),
        segment(
            4,
            Speaker::Customer,
            "I need to update my service plan, thanks.",
        ),
        runtime(
            5,
            RuntimeEvent::ToolCalled {
                tool_name: "send_email".into(),
                arguments: json!({"to": "a@b.c"}),
            },
        ),
        runtime(
            6,
            RuntimeEvent::ToolResult {
                tool_name: "send_email".into(),
                result: json!({"ok": true}),
                error: json!(null),
            },
        ),
        segment(7, Speaker::Customer, "Great, that was quick!"),
        runtime(
            8,
            RuntimeEvent::RecordingAvailable(RecordingRef {
                recording_url: "https://media.example.com/r.wav".into(),
                storage_provider: "s3".into(),
                content_type: "audio/wav".into(),
            }),
        ),
        runtime(
            9,
            RuntimeEvent::CallEnded {
                ended_at: t0 + chrono::Duration::seconds(9),
                duration_seconds: Some(9),
                final_status: TerminalStatus::Completed,
                hangup_by: Some(HangupBy::Customer),
                segment_count: Some(3),
            },
        ),
        status(2, TwilioCallStatus::Completed, Some(10)),
    ];
    let ctx = CommandContext::system("test-seed").in_establishment(est);
    for command in commands {
        let outcome = app
            .state()
            .bus
            .execute::<Call>(&call_id, command, &ctx, ExecOptions::default())
            .await
            .unwrap();
        app.state().bus.visible(&outcome).await;
    }
    // The analysis worker adds sentiment and the summary after the call ended.
    app.settle().await;
    let done: bool = sqlx::query_scalar(
        "SELECT summary IS NOT NULL AND sentiment IS NOT NULL FROM rm_calls WHERE id = $1",
    )
    .bind(&call_id)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(done, "no summary for the seeded call");
}
