//! Poison events cannot stall anyone: ingestion refuses what a projector could not store, and
//! an event that still cannot be projected is set aside as a dead letter (its call marked
//! degraded) while every other call keeps updating; platform admins list and retry dead
//! letters, and a rebuild reproduces live.

use std::time::Duration;

use aggregates::call::*;
use control_plane::store::{CommandContext, ExecOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::runtimes::{container_env, RuntimeEnv, IMAGE};
use tests::wait::{eventually, secs};
use tests::TestApp;

struct Runtime {
    id: String,
    est: String,
    token: String,
}

/// A running runtime for a new establishment, and the token its container was given.
async fn runtime(app: &TestApp, root: &str, name: &str) -> Runtime {
    let est = app.create_establishment(root, name).await;
    let r = app
        .post(
            &format!("/establishments/{est}/runtime"),
            root,
            json!({"image": IMAGE}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let container = r.body["container_name"].as_str().unwrap().to_string();
    let r = app
        .post(&format!("/runtimes/{id}/start"), root, json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let token = eventually(
        "the runtime running, with its token",
        secs(30),
        async || {
            let s = app.get(&format!("/runtimes/{id}/status"), root).await;
            if s.body["status"] != "running" {
                return Err(s.text);
            }
            container_env(&container, "CONTROL_PLANE_TOKEN").ok_or_else(|| "no token yet".into())
        },
    )
    .await;
    Runtime { id, est, token }
}

async fn setup() -> Option<(RuntimeEnv, TestApp, String)> {
    let env = RuntimeEnv::acquire().await?;
    let app = env.configure(TestApp::builder()).spawn().await;
    env.track(&app.state().runtimes.instance_id);
    let root = app.root_token().await;
    Some((env, app, root))
}

fn new_sid() -> String {
    format!("CA{:032x}", ulid::Ulid::new().0)
}

fn at(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339()
}

fn envelope(rt: &Runtime, call_sid: &str, key: &str, kind: &str, payload: Value) -> Value {
    json!({
        "runtime_id": rt.id,
        "establishment_id": rt.est,
        "call": {"provider": "twilio", "provider_call_sid": call_sid, "direction": "inbound",
                 "from_e164": "+14155550100", "to_e164": "+14158675309"},
        "event": {"id": format!("evt_{}", ulid::Ulid::new()), "type": kind, "occurred_at": at(-1),
                  "idempotency_key": format!("{}:{call_sid}:{key}", rt.id), "payload": payload},
    })
}

fn segment(n: u32, text: &str) -> Value {
    json!({"segment_id": format!("seg_{n:06}"), "speaker": if n.is_multiple_of(2) { "agent" } else { "customer" },
           "text": text, "started_at": at(-30 + n as i64), "ended_at": at(-29 + n as i64),
           "confidence": 0.9})
}

async fn ingest(app: &TestApp, rt: &Runtime, body: Value) -> tests::app::Resp {
    app.post("/ingest/call-events", &rt.token, body).await
}

async fn ingest_ok(app: &TestApp, rt: &Runtime, body: Value) {
    let r = ingest(app, rt, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
}

/// Starts a call and sends `texts` as its segments.
async fn call_with_segments(app: &TestApp, rt: &Runtime, sid: &str, texts: &[&str]) {
    ingest_ok(
        app,
        rt,
        envelope(
            rt,
            sid,
            "started",
            "call_started",
            json!({"started_at": at(-40)}),
        ),
    )
    .await;
    for (n, text) in texts.iter().enumerate() {
        let n = n as u32 + 1;
        ingest_ok(
            app,
            rt,
            envelope(
                rt,
                sid,
                &format!("seg:{n:06}"),
                "transcript_segment",
                segment(n, text),
            ),
        )
        .await;
    }
}

async fn call_id_of(app: &TestApp, sid: &str) -> String {
    sqlx::query_scalar("SELECT id FROM rm_calls WHERE provider_call_sid = $1")
        .bind(sid)
        .fetch_one(app.pool())
        .await
        .expect("the call is projected")
}

async fn transcript_texts(app: &TestApp, token: &str, call_id: &str) -> Vec<String> {
    let r = app
        .get(&format!("/calls/{call_id}/transcript"), token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["text"].as_str().unwrap().to_string())
        .collect()
}

async fn call_count(app: &TestApp, token: &str, est: &str) -> usize {
    let r = app
        .get(&format!("/calls?establishment_id={est}"), token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["items"].as_array().unwrap().len()
}

/// Every row of the tables, in a stable order (to compare live and rebuilt read models).
async fn dump(app: &TestApp, tables: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for table in tables {
        let rows: Value = sqlx::query_scalar(&format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]'::jsonb) FROM {table} t"
        ))
        .fetch_one(app.pool())
        .await
        .unwrap();
        out.insert(table.to_string(), rows);
    }
    Value::Object(out)
}

#[tokio::test]
async fn ingestion_refuses_payloads_a_projector_could_not_store_naming_the_field() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let rt = runtime(&app, &root, "Strict").await;
    let sid = new_sid();
    let ancient = "1999-12-31T23:00:00Z";
    let future = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let mut cases: Vec<(Value, &str)> = vec![
        (
            envelope(
                &rt,
                &sid,
                "s1",
                "transcript_segment",
                segment(1, "a NUL \u{0} inside"),
            ),
            "event.payload.text",
        ),
        (
            envelope(
                &rt,
                &sid,
                "s2",
                "transcript_segment",
                segment(1, "a bell \u{7}"),
            ),
            "event.payload.text",
        ),
        (
            envelope(
                &rt,
                &sid,
                "s3",
                "call_started",
                json!({"started_at": ancient}),
            ),
            "event.payload.started_at",
        ),
        (
            envelope(
                &rt,
                &sid,
                "s4",
                "call_ended",
                json!({"ended_at": future, "final_status": "completed"}),
            ),
            "event.payload.ended_at",
        ),
        (
            envelope(
                &rt,
                &sid,
                "s5",
                "tool_called",
                json!({"tool_name": "lookup", "arguments": {"q": ["x\u{0}"]}}),
            ),
            "event.payload.arguments",
        ),
        (
            envelope(
                &rt,
                &sid,
                "s6",
                "tool_result",
                json!({"tool_name": "lookup", "result": {"k\u{0}": 1}, "error": null}),
            ),
            "event.payload.result",
        ),
        (
            envelope(
                &rt,
                &sid,
                "s7",
                "recording_available",
                json!({"recording_url": "javascript:alert(1)", "storage_provider": "s3", "content_type": "audio/wav"}),
            ),
            "event.payload.recording_url",
        ),
        (
            envelope(
                &rt,
                &sid,
                "s8",
                "runtime_error",
                json!({"component": "llm", "message": "boom\u{0}", "fatal": false}),
            ),
            "event.payload.message",
        ),
    ];
    let mut segment_from_the_future = segment(1, "fine");
    segment_from_the_future["started_at"] = json!(future);
    segment_from_the_future["ended_at"] = json!(future);
    cases.push((
        envelope(
            &rt,
            &sid,
            "s9",
            "transcript_segment",
            segment_from_the_future,
        ),
        "event.payload.started_at",
    ));
    let mut old_event = envelope(
        &rt,
        &sid,
        "s10",
        "call_started",
        json!({"started_at": at(0)}),
    );
    old_event["event"]["occurred_at"] = json!(ancient);
    cases.push((old_event, "event.occurred_at"));
    let mut bad_key = envelope(
        &rt,
        &sid,
        "s11",
        "call_started",
        json!({"started_at": at(0)}),
    );
    bad_key["event"]["idempotency_key"] = json!("key\u{1}with-a-control");
    cases.push((bad_key, "event.idempotency_key"));
    let mut bad_agent = envelope(
        &rt,
        &sid,
        "s12",
        "call_started",
        json!({"started_at": at(0)}),
    );
    bad_agent["agent_id"] = json!("agt\n1");
    cases.push((bad_agent, "agent_id"));

    for (body, field) in &cases {
        let r = ingest(&app, &rt, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {}",
            r.text
        );
        assert_eq!(r.body["error"]["details"]["field"], *field, "{}", r.text);
    }
    // In a batch, each such item is rejected on its own, naming its field.
    let batch: Vec<Value> = cases.iter().map(|(b, _)| b.clone()).collect();
    let r = ingest(&app, &rt, Value::Array(batch)).await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS, "{}", r.text);
    assert!(r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["status"] == "rejected"));

    let appended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'Call' AND establishment_id = $1",
    )
    .bind(&rt.est)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(appended, 0, "nothing refused was appended");
}

#[tokio::test]
async fn a_poison_event_is_set_aside_while_every_other_call_keeps_updating() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let a = runtime(&app, &root, "Poisoned").await;
    let b = runtime(&app, &root, "Healthy").await;
    let b_admin = app.seed_member(&b.est, "admin@healthy.test", "admin").await;

    let (sid_a, sid_b) = (new_sid(), new_sid());
    call_with_segments(&app, &a, &sid_a, &["hello from A"]).await;
    call_with_segments(&app, &b, &sid_b, &["hello from B"]).await;
    app.state().projectors.catch_up().await.unwrap();
    let (call_a, call_b) = (
        call_id_of(&app, &sid_a).await,
        call_id_of(&app, &sid_b).await,
    );

    // A projector bug, as a deploy could bring: the calls projection now fails on any segment
    // containing POISON (a constraint stands in for the bug, so the test can fix it later).
    sqlx::query(
        "ALTER TABLE rm_transcript_segments ADD CONSTRAINT poison_probe
             CHECK (position('POISON' in text) = 0)",
    )
    .execute(app.pool())
    .await
    .unwrap();
    // A's runtime sends a segment that passes ingestion but cannot be projected…
    ingest_ok(
        &app,
        &a,
        envelope(
            &a,
            &sid_a,
            "seg:000002",
            "transcript_segment",
            segment(2, "POISON pill"),
        ),
    )
    .await;
    // …and an event reaches A's stream that no projector can ever store (an instant
    // PostgreSQL cannot represent: ingestion refuses it, so it comes through the bus).
    let ancient = chrono::NaiveDate::from_ymd_opt(-10_000, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let open = CallOpening {
        call_id: call_a.clone(),
        establishment_id: a.est.clone(),
        direction: Direction::Inbound,
        call_sid: Some(sid_a.parse().unwrap()),
        from: "+14155550100".parse().unwrap(),
        to: "+14158675309".parse().unwrap(),
        agent_id: None,
        agent_version_id: None,
        opened_by: OpenedBy::Runtime,
        at: chrono::Utc::now(),
    };
    app.state()
        .bus
        .execute::<Call>(
            &call_a,
            CallCommand::IngestRuntimeEvent {
                open,
                origin: RuntimeOrigin {
                    runtime_id: a.id.clone(),
                    event_id: "evt_ancient".into(),
                    occurred_at: chrono::Utc::now(),
                },
                event: RuntimeEvent::TranscriptSegment(TranscriptSegment {
                    segment_id: "seg_ancient".into(),
                    speaker: Speaker::Customer,
                    text: "from another age".into(),
                    started_at: ancient,
                    ended_at: ancient,
                    confidence: None,
                }),
            },
            &CommandContext::system("test").in_establishment(&a.est),
            ExecOptions::default(),
        )
        .await
        .expect("the aggregate accepts it");

    // Everyone else goes on: B's call grows, B opens a new call, A's call gets more segments.
    for (n, text) in [(2, "B keeps talking"), (3, "and talking")] {
        ingest_ok(
            &app,
            &b,
            envelope(
                &b,
                &sid_b,
                &format!("seg:{n:06}"),
                "transcript_segment",
                segment(n, text),
            ),
        )
        .await;
    }
    let sid_b2 = new_sid();
    call_with_segments(&app, &b, &sid_b2, &["a second call of B"]).await;
    ingest_ok(
        &app,
        &a,
        envelope(
            &a,
            &sid_a,
            "seg:000004",
            "transcript_segment",
            segment(4, "A goes on"),
        ),
    )
    .await;
    app.state()
        .projectors
        .catch_up()
        .await
        .expect("no projector stalls on the poison events");

    assert_eq!(
        transcript_texts(&app, &b_admin, &call_b).await,
        ["hello from B", "B keeps talking", "and talking"]
    );
    assert_eq!(call_count(&app, &b_admin, &b.est).await, 2);
    // B's reports keep counting its calls too.
    let kpis = app
        .get(
            &format!("/dashboard/kpis?establishment_id={}&range=7d", b.est),
            &b_admin,
        )
        .await;
    assert_eq!(kpis.status, StatusCode::OK, "{}", kpis.text);
    assert_eq!(kpis.body["calls"]["total"], 2, "{}", kpis.text);
    let call_b2 = call_id_of(&app, &sid_b2).await;
    assert_eq!(
        transcript_texts(&app, &b_admin, &call_b2).await,
        ["a second call of B"]
    );
    assert_eq!(
        transcript_texts(&app, &root, &call_a).await,
        ["hello from A", "A goes on"]
    );
    let details = app.get(&format!("/calls/{call_a}"), &root).await.body;
    assert_eq!(details["degraded"], true, "{details}");
    assert_eq!(details["transcript_segments"], 2);
    let details_b = app.get(&format!("/calls/{call_b}"), &b_admin).await.body;
    assert_eq!(details_b["degraded"], false);

    // Platform admins see what was set aside, newest first, with the error.
    let list = app.get("/admin/dead-letters?projector=calls", &root).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let items = list.body["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{}", list.text);
    let failed_at = |i: &Value| {
        i["last_failed_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    assert!(failed_at(&items[0]) >= failed_at(&items[1]), "newest first");
    let poison = items
        .iter()
        .find(|i| i["error"].as_str().unwrap().contains("poison_probe"))
        .unwrap_or_else(|| panic!("the constraint's failure is listed: {}", list.text));
    let unstorable = items
        .iter()
        .find(|i| !i["error"].as_str().unwrap().contains("poison_probe"))
        .unwrap();
    for item in [poison, unstorable] {
        assert_eq!(item["aggregate_type"], "Call");
        assert_eq!(item["aggregate_id"], call_a.as_str());
        assert_eq!(item["establishment_id"], a.est.as_str());
        assert_eq!(item["event_type"], "TranscriptSegmentAdded");
        assert_eq!(item["resolved"], false);
        assert!(item["attempts"].as_i64().unwrap() >= 2, "{item}");
    }
    let metrics = app
        .request(reqwest::Method::GET, "/metrics", None, None)
        .await
        .text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("projector_dead_letters_total{projector=\"calls\"} ")),
        "{metrics}"
    );

    // Nobody else may look or retry.
    let r = app.get("/admin/dead-letters", &b_admin).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = app
        .request(reqwest::Method::GET, "/admin/dead-letters", None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let retry_path = |i: &Value| format!("/admin/dead-letters/{}/retry", i["id"]);
    let r = app.post(&retry_path(poison), &b_admin, json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post("/admin/dead-letters/999999/retry", &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // A retry before the fix fails again: 409 with the error, the attempt counted.
    let r = app.post(&retry_path(poison), &root, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "retry_failed");
    assert!(
        r.body["error"]["details"]["error"]
            .as_str()
            .unwrap()
            .contains("poison_probe"),
        "{}",
        r.text
    );
    assert_eq!(
        r.body["error"]["details"]["dead_letter"]["attempts"],
        poison["attempts"].as_i64().unwrap() + 1
    );
    // The unstorable one can never be applied.
    let r = app.post(&retry_path(unstorable), &root, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "retry_failed");

    // The fix is deployed; a retry applies the segment and resolves the dead letter.
    sqlx::query("ALTER TABLE rm_transcript_segments DROP CONSTRAINT poison_probe")
        .execute(app.pool())
        .await
        .unwrap();
    let r = app.post(&retry_path(poison), &root, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["resolved"], true);
    assert!(r.body["resolved_at"].is_string());
    let r = app.post(&retry_path(poison), &root, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "already_resolved");
    assert_eq!(
        transcript_texts(&app, &root, &call_a).await,
        ["hello from A", "POISON pill", "A goes on"]
    );
    let details = app.get(&format!("/calls/{call_a}"), &root).await.body;
    assert_eq!(details["transcript_segments"], 3);
    assert_eq!(
        details["degraded"], true,
        "the unstorable event is still set aside"
    );
    let open: Vec<Value> = app
        .get("/admin/dead-letters?resolved=false", &root)
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        open.iter()
            .all(|i| i["id"] == unstorable["id"] || i["projector"] != "calls"),
        "{open:?}"
    );

    // A rebuild reproduces live: the resolved event in its place, the unresolved one skipped
    // (and not set aside a second time).
    let projection = projections::calls::CallsProjection::default();
    let tables = projections::Projection::tables(&projection);
    // Quiet first: the analysis worker may still record a sentiment (an event) for A or B.
    assert!(app.state().background.idle(Duration::from_secs(30)).await);
    app.state().projectors.catch_up().await.unwrap();
    let live = dump(&app, tables).await;
    let dead_before: i64 = sqlx::query_scalar("SELECT count(*) FROM projector_dead_letters")
        .fetch_one(app.pool())
        .await
        .unwrap();
    projections::runner::rebuild(app.pool(), &projection, 3, |_, _| {})
        .await
        .unwrap();
    assert_eq!(dump(&app, tables).await, live, "rebuilt = live");
    let dead_after: i64 = sqlx::query_scalar("SELECT count(*) FROM projector_dead_letters")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(dead_before, dead_after);
}
