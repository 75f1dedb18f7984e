//! The sentiment and summary workers (Appendix D.4): results recorded as events once the call
//! ends, from the embedded models or from an OpenAI-compatible endpoint with the extractive
//! summary as the fallback.

use std::sync::Arc;

use aggregates::call::*;
use axum::routing::post;
use axum::{Json, Router};
use control_plane::store::{CommandContext, ExecOptions};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tests::fixtures::Tenant;
use tests::TestApp;

/// Plays a short call through the command bus (as ingestion would) and returns its id.
async fn play_call(app: &TestApp, est: &str, lines: &[(Speaker, &str)]) -> String {
    let call_id = control_plane::ids::new_id("call");
    let sid: CallSid = format!("CA{:032x}", ulid::Ulid::new().0).parse().unwrap();
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(60);
    let open = CallOpening {
        call_id: call_id.clone(),
        establishment_id: est.to_string(),
        direction: Direction::Inbound,
        call_sid: Some(sid),
        from: "+14155550100".parse().unwrap(),
        to: "+14158675309".parse().unwrap(),
        agent_id: None,
        agent_version_id: None,
        opened_by: OpenedBy::Runtime,
        at: t0,
    };
    let origin = |n: usize| RuntimeOrigin {
        runtime_id: "rt_test".into(),
        event_id: format!("evt_{n}"),
        occurred_at: t0 + chrono::Duration::seconds(n as i64),
    };
    let mut events = vec![RuntimeEvent::CallStarted { started_at: t0 }];
    for (n, (speaker, text)) in lines.iter().enumerate() {
        events.push(RuntimeEvent::TranscriptSegment(TranscriptSegment {
            segment_id: format!("seg_{n}"),
            speaker: *speaker,
            text: text.to_string(),
            started_at: t0 + chrono::Duration::seconds(n as i64 * 3),
            ended_at: t0 + chrono::Duration::seconds(n as i64 * 3 + 2),
            confidence: None,
        }));
    }
    events.push(RuntimeEvent::CallEnded {
        ended_at: t0 + chrono::Duration::seconds(50),
        duration_seconds: Some(50),
        final_status: TerminalStatus::Completed,
        hangup_by: Some(HangupBy::Customer),
        segment_count: Some(lines.len() as u64),
    });
    let ctx = CommandContext::system("test").in_establishment(est);
    for (n, event) in events.into_iter().enumerate() {
        app.state()
            .bus
            .execute::<Call>(
                &call_id,
                CallCommand::IngestRuntimeEvent {
                    open: open.clone(),
                    origin: origin(n),
                    event,
                },
                &ctx,
                ExecOptions::default(),
            )
            .await
            .unwrap();
    }
    call_id
}

/// The call once the system is quiet: the analysis worker has written its summary and
/// sentiment.
async fn analysed(app: &TestApp, token: &str, call_id: &str) -> Value {
    app.settle().await;
    let d = app.get(&format!("/calls/{call_id}"), token).await.body;
    assert!(
        d["summary"]["text"].is_string() && d["sentiment"]["label"].is_string(),
        "no summary or sentiment: {d}"
    );
    d
}

const ANGRY: &[(Speaker, &str)] = &[
    (
        Speaker::Agent,
        "Hello, thanks for calling Helios Energy, how can I help?",
    ),
    (
        Speaker::Customer,
        "My internet has been down for three days and nobody fixed it. This is ridiculous.",
    ),
    (
        Speaker::Agent,
        "I am sorry about that. I can book a technician for tomorrow morning.",
    ),
    (
        Speaker::Customer,
        "I want to cancel my contract, I am really fed up with this terrible service.",
    ),
];

#[tokio::test]
async fn the_embedded_models_summarise_and_score_a_call_once_it_ends() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let call_id = play_call(&app, &est, ANGRY).await;
    let d = analysed(&app, &root, &call_id).await;
    assert_eq!(d["summary"]["generator"], "extractive-v1");
    assert!(
        d["summary"]["text"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("cancel"),
        "{d}"
    );
    assert_eq!(d["sentiment"]["label"], "negative", "{d}");
    assert!(d["sentiment"]["score"].as_f64().unwrap() < 0.4);
    assert!(!d["sentiment_windows"].as_array().unwrap().is_empty());
    // Recorded once, as events (a rebuild replays them, it does not recompute).
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'SummaryGenerated'",
    )
    .bind(&call_id)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(n, 1);
}

/// A stand-in for an OpenAI-compatible chat-completions endpoint.
async fn llm_stub(fail: bool) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let s = seen.clone();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |headers: axum::http::HeaderMap, Json(body): Json<Value>| {
            let s = s.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                s.lock().push(json!({"body": body, "authorization": auth}));
                if fail {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": {"message": "overloaded"}})));
                }
                (axum::http::StatusCode::OK, Json(json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "The customer wants to cancel after a three-day outage; a technician was offered."}}]
                })))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), seen)
}

#[tokio::test]
async fn an_llm_endpoint_writes_the_summary_and_the_extractive_one_covers_its_failures() {
    for fail in [false, true] {
        let (base, seen) = llm_stub(fail).await;
        let app = TestApp::builder()
            .config(move |c| {
                c.summary_llm_base_url = Some(base);
                c.summary_llm_model = "test-model".into();
                c.summary_llm_api_key = Some("sk-test".into());
            })
            .spawn()
            .await;
        let root = app.root_token().await;
        let est = app.create_establishment(&root, "Helios").await;
        let call_id = play_call(&app, &est, ANGRY).await;
        let d = analysed(&app, &root, &call_id).await;
        let requests = seen.lock().clone();
        assert_eq!(requests.len(), 1, "one completion request per call");
        assert_eq!(requests[0]["authorization"], "Bearer sk-test");
        assert_eq!(requests[0]["body"]["model"], "test-model");
        let prompt = requests[0]["body"]["messages"][1]["content"]
            .as_str()
            .unwrap();
        assert!(
            prompt.contains("Customer: I want to cancel my contract"),
            "{prompt}"
        );
        if fail {
            assert_eq!(d["summary"]["generator"], "extractive-v1");
        } else {
            assert_eq!(d["summary"]["generator"], "llm:test-model");
            assert!(d["summary"]["text"]
                .as_str()
                .unwrap()
                .starts_with("The customer wants to cancel"));
        }
    }
}
