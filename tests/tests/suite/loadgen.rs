//! The load generator end to end, at a tiny size, against a real server with real runtime
//! containers: its envelopes are accepted, its pollers see every transcript complete, its
//! signed webhooks are routed, and its report agrees with the server's read models.

use loadgen::calls::{self, CallsArgs};
use loadgen::webhooks::{self, WebhooksArgs};
use loadgen::Target;
use tests::app::{ADMIN_EMAIL, ADMIN_PASSWORD};
use tests::runtimes::{RuntimeEnv, IMAGE};
use tests::TestApp;

const TWILIO_TOKEN: &str = "loadgen-test-auth-token";

fn target(app: &TestApp, report: Option<std::path::PathBuf>) -> Target {
    Target {
        image: IMAGE.into(),
        report,
        ..Target::new(&app.base, ADMIN_EMAIL, ADMIN_PASSWORD)
    }
}

/// Webhooks signed like Twilio's for the server's public URL, with its auth token.
fn webhooks_args(
    app: &TestApp,
    concurrency: usize,
    rate: f64,
    requests: u64,
    warmup: u64,
) -> WebhooksArgs {
    WebhooksArgs {
        target: target(app, None),
        concurrency,
        rate,
        requests,
        warmup,
        twilio_auth_token: Some(TWILIO_TOKEN.into()),
        twilio_account_sid: None,
        public_base_url: Some(app.state().config.public_base_url()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simulated_calls_are_ingested_and_every_transcript_is_seen_complete_with_zero_errors() {
    let Some(env) = RuntimeEnv::acquire().await else {
        return;
    };
    let app = env.spawn(TestApp::builder()).await;
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}", ulid::Ulid::new()));
    let report_path = dir.join("calls.json");
    let args = CallsArgs {
        target: target(&app, Some(report_path.clone())),
        calls: 4,
        segments: 6,
        pace_ms: 30,
        duration: 0,
        ramp_up: 0,
        establishments: 2,
        ui_clients: 2,
        active_interval_ms: 100,
        pollers: None,
        poll_interval_ms: 60,
        lag_probes: 2,
        probe_interval_ms: 2,
        batch: 1,
    };
    let report = calls::run(args).await.expect("the run completes");

    assert_eq!(report["error_total"], 0, "{report:#}");
    assert_eq!(report["calls"]["played"], 4);
    assert_eq!(report["calls"]["transcripts_checked_complete"], 4);
    // Each call: started, connected, 6 segments, tool call + result, recording, ended.
    assert_eq!(report["ingest"]["events_accepted"], 4 * 12);
    assert_eq!(report["ingest"]["replayed"], 0);
    assert_eq!(report["append_to_visible_lag"]["count"], 2 * 6);
    assert!(report["transcript_poll"]["count"].as_u64().unwrap() >= 4);
    assert!(report["active_calls_poll"]["count"].as_u64().unwrap() >= 1);
    // The server process is this test process: its memory was read from /proc.
    assert!(report["usage"]["server_peak_memory_kb"].as_u64().unwrap() > 0);
    assert!(
        report["server_stages"]["http"]["POST /ingest/call-events"]["count"]
            .as_f64()
            .is_some_and(|n| n >= 48.0)
    );

    // The server agrees: two establishments, four ended calls, six segments each.
    app.settle().await;
    let (calls, ended, segments): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE NOT active),
                (SELECT count(*) FROM rm_transcript_segments)
         FROM rm_calls",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((calls, ended, segments), (4, 4, 24));
    let establishments: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT establishment_id) FROM rm_calls")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(establishments, 2);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report file")).unwrap();
    assert_eq!(written["ingest"]["events_accepted"], 48);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_events_of_several_calls_are_all_ingested() {
    let Some(env) = RuntimeEnv::acquire().await else {
        return;
    };
    let app = env.spawn(TestApp::builder()).await;
    let args = CallsArgs {
        target: target(&app, None),
        calls: 2,
        segments: 6,
        pace_ms: 0,
        duration: 0,
        ramp_up: 0,
        establishments: 1,
        ui_clients: 0,
        active_interval_ms: 100,
        pollers: Some(0),
        poll_interval_ms: 60,
        lag_probes: 0,
        probe_interval_ms: 2,
        batch: 3,
    };
    let report = calls::run(args).await.expect("the run completes");
    assert_eq!(report["error_total"], 0, "{report:#}");
    // Two slots of three calls each, twelve events per call, one request per step of a slot.
    assert_eq!(report["ingest"]["events_accepted"], 6 * 12);
    assert_eq!(report["ingest"]["events_per_request"], 3);
    assert_eq!(report["ingest"]["post_latency"]["count"], 2 * 12);

    app.settle().await;
    let (calls, ended, segments): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE NOT active),
                (SELECT count(*) FROM rm_transcript_segments)
         FROM rm_calls",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((calls, ended, segments), (6, 6, 36));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_incoming_call_webhooks_are_all_routed_to_the_runtime() {
    let Some(env) = RuntimeEnv::acquire().await else {
        return;
    };
    let app = env
        .spawn(TestApp::builder().config(|c| c.twilio_auth_token = Some(TWILIO_TOKEN.into())))
        .await;
    let report = webhooks::run(webhooks_args(&app, 4, 0.0, 40, 4))
        .await
        .expect("the run completes");
    assert_eq!(report["error_total"], 0, "{report:#}");
    assert_eq!(report["requests_ok"], 40);
    assert!(report["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    // Every request was a distinct call, routed to the runtime (at least 40 + 4 warm-up).
    // Webhooks answer before the read models show the calls.
    app.settle().await;
    let accepted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rm_calls WHERE direction = 'inbound' AND routing->>'outcome' = 'accepted'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert!(accepted >= 44, "{accepted} calls routed to the runtime");

    // Open loop: requests start on a schedule, whatever the answers take.
    let report = webhooks::run(webhooks_args(&app, 4, 100.0, 30, 0))
        .await
        .expect("the open-loop run completes");
    assert_eq!(report["error_total"], 0, "{report:#}");
    assert_eq!(report["requests_ok"], 30);
    // 30 requests scheduled 10 ms apart take at least 290 ms.
    assert!(report["seconds"].as_f64().unwrap() >= 0.29, "{report:#}");
}
