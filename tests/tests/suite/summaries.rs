//! Summaries cannot be lost: a call that ended while the control plane stopped before its
//! summary was recorded gets it from the next control plane on the same database.

use std::time::Duration;

use aggregates::call::*;
use axum::routing::post;
use axum::Router;
use control_plane::store::{CommandContext, ExecOptions};
use serde_json::Value;
use tests::wait::{eventually, secs};
use tests::TestApp;
use tokio::sync::mpsc;

/// An OpenAI-compatible endpoint that takes the request and never answers: the summary of a
/// call is stuck in flight for as long as the test wants. Reports each request it takes.
async fn hanging_llm() -> (String, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                std::future::pending::<()>().await;
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), rx)
}

/// Plays a short, ended call through the command bus (as ingestion would); returns its id.
async fn play_call(app: &TestApp, est: &str) -> String {
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
    let lines = [
        (Speaker::Agent, "Hello, thanks for calling Helios Energy."),
        (
            Speaker::Customer,
            "I would like to move my appointment to Friday morning, please.",
        ),
        (Speaker::Agent, "Done: Friday at nine. Anything else?"),
        (
            Speaker::Customer,
            "No, that is perfect, thank you very much.",
        ),
    ];
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
        ended_at: t0 + chrono::Duration::seconds(30),
        duration_seconds: Some(30),
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
                    origin: RuntimeOrigin {
                        runtime_id: "rt_test".into(),
                        event_id: format!("evt_{n}"),
                        occurred_at: t0 + chrono::Duration::seconds(n as i64),
                    },
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

async fn count(app: &TestApp, call_id: &str, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = $2")
        .bind(call_id)
        .bind(event_type)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_summary_a_stop_interrupted_is_recorded_by_the_next_control_plane() {
    let (llm, mut asked) = hanging_llm().await;
    let first = TestApp::builder()
        .config(move |c| {
            c.summary_llm_base_url = Some(llm);
            c.summary_llm_model = "stuck-model".into();
            c.summary_llm_timeout_ms = 600_000;
        })
        .spawn()
        .await;
    let root = first.root_token().await;
    let est = first.create_establishment(&root, "Helios").await;
    let call_id = play_call(&first, &est).await;

    // The worker has seen the call end (its consumer's checkpoint is past it) and is stuck
    // asking the LLM for the summary.
    tokio::time::timeout(Duration::from_secs(30), asked.recv())
        .await
        .expect("the worker asks for the summary")
        .expect("request seen");
    first.state().projectors.catch_up().await.unwrap();
    let d = first.get(&format!("/calls/{call_id}"), &root).await.body;
    assert_eq!(d["status"], "completed", "{d}");
    assert!(d["summary"].is_null(), "{d}");
    assert_eq!(count(&first, &call_id, "SummaryGenerated").await, 0);

    // The control plane stops before the summary exists.
    let db = first.stop().await;

    // The next one, on the same database, finds the call by its rescan and summarises it.
    let second = TestApp::builder()
        .database(&db)
        .config(|c| c.analysis_rescan_interval_seconds = 1)
        .spawn()
        .await;
    let root = second.root_token().await;
    // The rescan runs every second; each look waits for the worker's queue to empty first.
    let d: Value = eventually("the summary after the restart", secs(30), async || {
        second
            .state()
            .background
            .idle(Duration::from_millis(500))
            .await;
        second.state().projectors.catch_up().await.unwrap();
        let d = second.get(&format!("/calls/{call_id}"), &root).await.body;
        if d["summary"]["text"].is_string() {
            Ok(d)
        } else {
            Err(d.to_string())
        }
    })
    .await;
    assert_eq!(d["summary"]["generator"], "extractive-v1", "{d}");
    assert!(
        d["summary"]["text"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("friday"),
        "{d}"
    );
    assert!(d["sentiment"]["label"].is_string(), "{d}");
    assert_eq!(count(&second, &call_id, "SummaryGenerated").await, 1);
}
