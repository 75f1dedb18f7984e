//! Poison events cannot stall anyone: ingestion refuses what a projector could not store.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::runtimes::{container_env, RuntimeEnv, IMAGE};
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
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let s = app.get(&format!("/runtimes/{id}/status"), root).await;
        if s.body["status"] == "running" {
            if let Some(t) = container_env(&container, "CONTROL_PLANE_TOKEN") {
                break t;
            }
        }
        assert!(Instant::now() < deadline, "runtime never ran: {}", s.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
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
