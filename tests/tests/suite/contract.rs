//! The spec's own examples are contracts (PRD Appendix A and B): each request example is sent
//! verbatim, ids substituted (and, for live calls, timestamps moved to now), and each response
//! must have the example's shape: every key the example shows, with a value of the same kind.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::fixtures::{running_and_ready, runtime_until, Tenant, RUNTIME_BUDGET};
use tests::runtimes::{container_env, docker, RuntimeEnv, IMAGE};
use tests::twilio::TwilioStandIn;
use tests::TestApp;

/// Every key of `example` is in `actual` with a value of the same JSON kind (a `null` in the
/// example accepts anything; the first item of an example array describes every actual item).
fn assert_shape(actual: &Value, example: &Value, path: &str) {
    match (example, actual) {
        (Value::Null, _) => {}
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let av = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} is missing in {actual}"));
                assert_shape(av, ev, &format!("{path}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let Some(first) = e.first() {
                for (i, av) in a.iter().enumerate() {
                    assert_shape(av, first, &format!("{path}[{i}]"));
                }
            }
        }
        (Value::String(_), Value::String(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        (e, a) => panic!("{path}: expected a value like {e}, got {a}"),
    }
}

#[tokio::test]
async fn a1_login_me_and_invite_examples_work_verbatim() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin } = app.tenant("Helios").await;
    let r = app
        .post(
            "/auth/login",
            "",
            json!({"email": tests::app::ADMIN_EMAIL, "password": tests::app::ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_shape(
        &r.body,
        &json!({"access_token": "...", "token_type": "bearer", "expires_in": 3600,
                "user": {"id": "usr_...", "email": "admin@example.com", "display_name": "Admin",
                         "default_establishment_id": "est_..."}}),
        "login",
    );
    assert_eq!(r.body["token_type"], "bearer");
    let r = app.get("/me", &admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_shape(
        &r.body,
        &json!({"user": {"id": "usr_...", "email": "admin@example.com", "display_name": "Admin"},
                "memberships": [{"establishment_id": "est_...", "role": "admin"}]}),
        "me",
    );
    let r = app
        .post(
            &format!("/establishments/{est}/users"),
            &admin,
            json!({"email": "operator@example.com", "role": "operator"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_shape(
        &r.body,
        &json!({"invitation_id": "inv_...", "status": "sent"}),
        "invite",
    );
    assert_eq!(r.body["status"], "sent");
}

#[tokio::test]
async fn a2_establishment_and_telephony_examples_work_verbatim() {
    let app = TestApp::spawn().await;
    let root = app.root_token().await;
    let r = app
        .post(
            "/establishments",
            &root,
            json!({"name": "Helios Energy HQ", "timezone": "America/Sao_Paulo", "locale": "pt-BR"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_shape(
        &r.body,
        &json!({"id": "est_...", "name": "Helios Energy HQ", "timezone": "America/Sao_Paulo",
                "locale": "pt-BR", "created_at": "2026-01-10T00:00:00Z"}),
        "create establishment",
    );
    let est = r.body["id"].as_str().unwrap().to_string();
    let r = app.get("/establishments", &root).await;
    assert_shape(
        &r.body,
        &json!({"items": [{"id": "est_...", "name": "Helios Energy HQ",
                           "timezone": "America/Sao_Paulo", "locale": "pt-BR"}]}),
        "list establishments",
    );
    let agent = app
        .post(
            &format!("/establishments/{est}/agents"),
            &root,
            json!({"name": "Nova GPT", "description": "Concierge and support agent"}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The GET example's policy, set in one PATCH (the spec's fictional 555 numbers included).
    let policy = json!({
        "inbound_numbers": [{"provider": "twilio", "e164": "+15553012211", "routing_agent_id": agent}],
        "handoff_e164": "+15551234567",
        "max_call_duration_seconds": 900,
        "business_hours": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "22:00"}],
        "blacklist_e164": ["+15550001111"]
    });
    let r = app
        .patch(
            &format!("/establishments/{est}/telephony"),
            &root,
            policy.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut expected = policy;
    expected["establishment_id"] = json!(est);
    assert_eq!(r.body, expected, "the GET example's exact shape and values");
    // The PATCH example, verbatim.
    let r = app
        .patch(
            &format!("/establishments/{est}/telephony"),
            &root,
            json!({"handoff_e164": "+15551234567", "max_call_duration_seconds": 900}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, expected);
    let r = app
        .get(&format!("/establishments/{est}/telephony"), &root)
        .await;
    assert_eq!(r.body, expected);
}

#[tokio::test]
async fn a3_agent_version_and_publish_examples_work_verbatim() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin } = app.tenant("Helios").await;
    let r = app
        .post(
            &format!("/establishments/{est}/agents"),
            &admin,
            json!({"name": "Nova GPT", "description": "Concierge and support agent"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_shape(
        &r.body,
        &json!({"id": "agt_...", "establishment_id": "est_...", "name": "Nova GPT",
                "description": "Concierge and support agent", "active_version_id": null,
                "created_at": "2026-01-10T00:00:00Z"}),
        "create agent",
    );
    assert_eq!(r.body["active_version_id"], Value::Null);
    let agent = r.body["id"].as_str().unwrap().to_string();
    let r = app
        .post(
            &format!("/agents/{agent}/versions"),
            &admin,
            json!({
                "name": "v1",
                "prompt": "You are a helpful assistant...",
                "model": {"provider": "openai", "model": "gpt-4.1-mini", "temperature": 0.7, "max_tokens": 1024},
                "tools": {"email": {"enabled": true}, "calendar": {"enabled": true},
                          "whatsapp_messaging": {"enabled": false}}
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_shape(
        &r.body,
        &json!({"id": "agv_...", "agent_id": "agt_...", "status": "draft", "name": "v1"}),
        "draft",
    );
    assert_eq!(r.body["status"], "draft");
    let version = r.body["id"].as_str().unwrap().to_string();
    let r = app
        .post(
            &format!("/agents/{agent}/versions/{version}/publish"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_shape(
        &r.body,
        &json!({"agent_id": "agt_...", "active_version_id": "agv_...",
                "previous_version_id": null}),
        "publish",
    );
    assert_eq!(r.body["active_version_id"], json!(version));
    assert!(r
        .body
        .as_object()
        .unwrap()
        .contains_key("previous_version_id"));
}

/// A.4 with its own image name: the reference runtime tagged as `voice-agent-runtime:latest`,
/// then A.5 and every Appendix B event through that runtime.
#[tokio::test]
async fn a4_a5_and_b_runtime_call_and_event_examples_work_verbatim() {
    let Some(env) = RuntimeEnv::acquire().await else {
        return;
    };
    let (tagged, out) = docker(&["tag", IMAGE, "voice-agent-runtime:latest"]);
    assert!(tagged, "docker tag: {out}");
    let twilio = TwilioStandIn::start().await;
    let app = env.spawn(TestApp::builder().twilio(&twilio)).await;
    let Tenant { est, admin } = app.tenant("Helios Energy HQ").await;
    let r = app
        .post(
            &format!("/establishments/{est}/runtime"),
            &admin,
            json!({
                "image": "voice-agent-runtime:latest",
                "env": {
                    "APP_PUBLIC_DOMAIN": "agent-heliose-hq.example.com",
                    "SUPABASE_URL": "...",
                    "SUPABASE_SERVICE_ROLE_KEY": "..."
                }
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_shape(
        &r.body,
        &json!({"id": "rt_...", "establishment_id": "est_...", "status": "created",
                "container_name": "agent_rt_est_...", "base_url": "http://127.0.0.1:18080"}),
        "provision",
    );
    assert_eq!(r.body["status"], "created");
    let rt = r.body["id"].as_str().unwrap().to_string();
    let container = r.body["container_name"].as_str().unwrap().to_string();
    let r = app
        .post(&format!("/runtimes/{rt}/start"), &admin, json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let status = runtime_until(
        &app,
        &admin,
        &rt,
        "running and ready",
        RUNTIME_BUDGET,
        running_and_ready,
    )
    .await;
    assert_shape(
        &status,
        &json!({"id": "rt_...", "status": "running", "ready": true, "ready_issues": [],
                "last_checked_at": "2026-01-10T00:00:00Z",
                "agent_info": {"active_calls": 1, "total_calls_handled": 42}}),
        "runtime status",
    );
    let token = container_env(&container, "CONTROL_PLANE_TOKEN").expect("the runtime's token");

    // B.1, the example envelope (ids substituted; times near now so the call is live).
    let now = chrono::Utc::now();
    let t = |secs: i64| (now + chrono::Duration::seconds(secs)).to_rfc3339();
    let sid = "CA0123456789abcdef0123456789abcdef";
    let envelope = |id: &str, kind: &str, key: &str, payload: Value| {
        json!({
            "runtime_id": rt,
            "establishment_id": est,
            "agent_id": "agt_...",
            "agent_version_id": "agv_...",
            "call": {"provider": "twilio", "provider_call_sid": sid, "direction": "inbound",
                     "from_e164": "+15550102244", "to_e164": "+15553012211"},
            "event": {"id": id, "type": kind, "occurred_at": t(5), "idempotency_key": key,
                      "payload": payload}
        })
    };
    let events = [
        ("call_started", json!({"started_at": t(0)})),
        (
            "transcript_segment",
            json!({"speaker": "customer", "text": "Hello", "started_at": t(3),
                   "ended_at": t(5), "confidence": 0.91}),
        ),
        (
            "transcript_segment",
            json!({"segment_id": "seg_2", "speaker": "agent", "text": "Hi! How can I help?",
                   "started_at": t(6), "ended_at": t(8), "confidence": 0.0}),
        ),
        (
            "tool_called",
            json!({"tool_name": "send_email", "arguments": {"to": "customer@example.com"}}),
        ),
        (
            "tool_result",
            json!({"tool_name": "send_email", "result": {"ok": true, "correlation_id": "c-1"},
                   "error": null}),
        ),
        (
            "runtime_error",
            json!({"component": "tts", "message": "slow voice synthesis", "fatal": false}),
        ),
    ];
    for (i, (kind, payload)) in events.iter().enumerate() {
        let body = envelope(
            &format!("evt_{i}"),
            kind,
            &format!("{rt}:{sid}:{i:06}"),
            payload.clone(),
        );
        let r = app.post("/ingest/call-events", &token, body).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{kind}: {}", r.text);
        assert_eq!(r.body, json!({"status": "accepted"}));
    }
    app.settle().await;

    // A.5: the live call, its transcript, the handoff (to A.2's handoff number).
    let r = app
        .patch(
            &format!("/establishments/{est}/telephony"),
            &admin,
            json!({"handoff_e164": "+15551234567", "max_call_duration_seconds": 900}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.get("/calls/active", &admin).await;
    assert_shape(
        &r.body,
        &json!({"items": [{
            "call_id": "call_...", "provider": "twilio", "provider_call_sid": "CA...",
            "establishment_id": "est_...", "agent_id": "agt_...", "status": "in_progress",
            "direction": "inbound", "from_e164": "+15550102244", "to_e164": "+15553012211",
            "started_at": "2026-01-10T00:00:00Z", "duration_seconds": 202,
            "sentiment": null
        }]}),
        "active calls",
    );
    let call = &r.body["items"][0];
    assert_eq!(call["provider_call_sid"], sid);
    let call_id = call["call_id"].as_str().unwrap().to_string();
    let r = app
        .get(&format!("/calls/{call_id}/transcript"), &admin)
        .await;
    assert_shape(
        &r.body,
        &json!({"call_id": "call_...", "items": [{"segment_id": "seg_...", "speaker": "customer",
                "text": "I need to update my service plan.", "started_at": "2026-01-10T00:00:03Z",
                "ended_at": "2026-01-10T00:00:05Z", "confidence": 0.91}], "cursor": "..."}),
        "transcript",
    );
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", r.text);
    assert_eq!(
        items[0]["segment_id"], "evt_1",
        "B.1 without segment_id: the event's id"
    );
    let r = app
        .post(
            &format!("/calls/{call_id}/handoff"),
            &admin,
            json!({"reason": "customer_requested_human"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"call_id": call_id, "status": "handoff_initiated", "handoff_e164": "+15551234567"})
    );
    assert_shape(
        &r.body,
        &json!({"call_id": "call_...", "status": "handoff_initiated", "handoff_e164": "+15551234567"}),
        "handoff",
    );

    // The rest of B.2: the recording and the end of the call.
    for (i, (kind, payload)) in [
        (
            "recording_available",
            json!({"recording_url": "https://recordings.example.com/r1.wav",
                   "storage_provider": "s3", "content_type": "audio/wav"}),
        ),
        (
            "call_ended",
            json!({"ended_at": t(600), "duration_seconds": 600, "final_status": "completed",
                   "hangup_by": "customer"}),
        ),
    ]
    .iter()
    .enumerate()
    {
        let body = envelope(
            &format!("evt_end_{i}"),
            kind,
            &format!("{rt}:{sid}:end:{i}"),
            payload.clone(),
        );
        let r = app.post("/ingest/call-events", &token, body).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{kind}: {}", r.text);
    }
    app.settle().await;
    let r = app
        .get(&format!("/calls/{call_id}/recording"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let _ = docker(&["rmi", "voice-agent-runtime:latest"]);
}
