//! Calls through Twilio (issue 5): signed webhooks, inbound routing TwiML for every decision,
//! status callbacks in any order, outbound calls through the Twilio stand-in, handoff, history
//! and the reaper. Spec §13 E2E tests 2 and 3, Appendix C M2.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::fixtures::{
    brain, create_agent, draft, publish, published_agent, ready_runtime, runtime_until,
    set_telephony, Tenant, CALLER, NUMBER, RUNTIME_BUDGET,
};
use tests::runtimes::RuntimeEnv;
use tests::twilio::{CallOutcome, Scripted, TwilioStandIn, Webhook};
use tests::wait::{eventually, secs};
use tests::TestApp;

const HANDOFF: &str = "+14158671234";

struct Setup {
    app: TestApp,
    twilio: TwilioStandIn,
    root: String,
    est: String,
    agent: String,
    version: String,
    runtime: Option<String>,
    _env: Option<RuntimeEnv>,
}

impl Setup {
    fn url(&self, path: &str) -> String {
        self.app.public_url(path)
    }

    fn incoming(&self, from: &str, to: &str) -> Webhook {
        self.app.incoming_call(&self.twilio, from, to)
    }

    async fn events_of_type(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(self.app.pool())
            .await
            .unwrap()
    }
}

/// A control plane wired to the Twilio stand-in, an establishment with an agent (published
/// version) routed from `NUMBER`, a handoff number and, with `runtime`, a ready runtime.
/// `None` only outside CI when Docker is missing.
async fn setup(runtime: bool) -> Option<Setup> {
    let twilio = TwilioStandIn::start().await;
    let env = if runtime {
        Some(RuntimeEnv::acquire().await?)
    } else {
        None
    };
    let builder = TestApp::builder().twilio(&twilio).config(|c| {
        c.runtime.runtime_media_stream_url_template =
            Some("wss://rt-{host_port}.media.example.com/media-stream".into());
    });
    let app = match &env {
        Some(env) => env.spawn(builder).await,
        None => builder.spawn().await,
    };
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = published_agent(&app, &root, &est, "Nova").await;
    set_telephony(
        &app,
        &root,
        &est,
        json!({
            "inbound_numbers": [{"provider": "twilio", "e164": NUMBER, "routing_agent_id": agent.id}],
            "handoff_e164": HANDOFF,
            "max_call_duration_seconds": 600,
        }),
    )
    .await;
    let runtime_id = match runtime {
        true => Some(ready_runtime(&app, &root, &est, json!({})).await.id),
        false => None,
    };
    Some(Setup {
        app,
        twilio,
        root,
        est,
        agent: agent.id,
        version: agent.version,
        runtime: runtime_id,
        _env: env,
    })
}

async fn twiml_of(res: reqwest::Response) -> (StatusCode, String, String) {
    let status = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, res.text().await.unwrap())
}

fn attr<'a>(xml: &'a str, element: &str, attribute: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{element}"))?;
    let rest = &xml[start..];
    let end = rest.find('>')?;
    let tag = &rest[..end];
    let key = format!("{attribute}=\"");
    let i = tag.find(&key)? + key.len();
    let j = tag[i..].find('"')? + i;
    Some(&tag[i..j])
}

fn parameter<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("<Parameter name=\"{name}\" value=\"");
    let i = xml.find(&key)? + key.len();
    let j = xml[i..].find('"')? + i;
    Some(&xml[i..j])
}

async fn call_by_sid(app: &TestApp, sid: &str) -> Option<Value> {
    let row: Option<Value> =
        sqlx::query_scalar("SELECT to_jsonb(c) FROM rm_calls c WHERE provider_call_sid = $1")
            .bind(sid)
            .fetch_optional(app.pool())
            .await
            .unwrap();
    row
}

/// The call of `sid` once the system has settled (webhooks answer before the read models
/// show what they recorded).
async fn settled_call(app: &TestApp, sid: &str) -> Value {
    app.settle().await;
    call_by_sid(app, sid)
        .await
        .unwrap_or_else(|| panic!("no call for {sid}"))
}

/// The call of `hook`'s CallSid once settled; it must carry a routing decision.
async fn routed_call(app: &TestApp, hook: &Webhook) -> Value {
    let call = settled_call(app, hook.param("CallSid").unwrap()).await;
    assert!(!call["routing"].is_null(), "not routed: {call}");
    call
}

#[tokio::test]
async fn webhooks_with_a_missing_or_wrong_signature_are_refused_and_record_nothing() {
    let Some(s) = setup(false).await else { return };
    let hook = s.incoming(CALLER, NUMBER);
    for sig in [None, Some("bm90LWEtc2lnbmF0dXJl"), Some("")] {
        let res = s.twilio.send_with_signature(&hook, sig).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "signature {sig:?}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_signature");
    }
    // A valid signature for other parameters does not carry over.
    let mut tampered = hook.clone();
    let sig = s.twilio.sign(&hook);
    tampered
        .params
        .iter_mut()
        .find(|(k, _)| k == "From")
        .unwrap()
        .1 = "+14155550199".into();
    let res = s.twilio.send_with_signature(&tampered, Some(&sig)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    for path in [
        "/webhooks/twilio/call-status",
        "/webhooks/twilio/amd-callback",
        "/webhooks/twilio/recording-status",
        "/webhooks/twilio/connect-action",
    ] {
        let other = Webhook {
            url: s.url(path),
            params: hook.params.clone(),
        };
        let res = s.twilio.send_with_signature(&other, Some(&sig)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(s.events_of_type("CallOpened").await, 0, "nothing recorded");
    // The same webhook, correctly signed, is accepted.
    let res = s.twilio.send(&hook).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(s.events_of_type("CallOpened").await, 1);
}

#[tokio::test]
async fn oversized_webhook_bodies_are_refused() {
    let Some(s) = setup(false).await else { return };
    let mut hook = s.incoming(CALLER, NUMBER);
    hook.params.push(("Junk".into(), "x".repeat(100_000)));
    let res = s.twilio.send(&hook).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.events_of_type("CallOpened").await, 0);
}

#[tokio::test]
async fn every_routing_decision_answers_its_twiml_and_is_recorded_on_the_call() {
    let Some(s) = setup(false).await else { return };
    // Unknown number: <Reject/>, nothing recorded (no establishment owns it).
    let (status, ct, xml) =
        twiml_of(s.twilio.send(&s.incoming(CALLER, "+14158670000")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/xml"), "{ct}");
    assert!(
        xml.contains("<Reject/>") && !xml.contains("reason"),
        "{xml}"
    );
    assert_eq!(s.events_of_type("CallOpened").await, 0);

    // No runtime: a short message, then the handoff number.
    let hook = s.incoming(CALLER, NUMBER);
    let (_, _, xml) = twiml_of(s.twilio.send(&hook).await).await;
    assert!(
        xml.contains("<Say")
            && xml.contains(&format!("<Dial callerId=\"{NUMBER}\">{HANDOFF}</Dial>"))
            || xml.contains(&format!(">{HANDOFF}</Dial>")),
        "{xml}"
    );
    let call = routed_call(&s.app, &hook).await;
    assert_eq!(call["routing"]["outcome"], "runtime_unavailable");
    assert_eq!(call["routing"]["reason"], "missing");
    assert_eq!(call["status"], "handoff_completed");

    // A repeated webhook answers with the recorded decision and records nothing new.
    let before = s.events_of_type("InboundCallRouted").await;
    let (_, _, again) = twiml_of(s.twilio.send(&hook).await).await;
    assert_eq!(again, xml);
    assert_eq!(s.events_of_type("InboundCallRouted").await, before);

    // Blacklisted caller: <Reject reason="rejected"/>.
    s.app
        .patch(
            &format!("/establishments/{}/telephony", s.est),
            &s.root,
            json!({"blacklist_e164": [CALLER]}),
        )
        .await;
    let hook = s.incoming(CALLER, NUMBER);
    let (_, _, xml) = twiml_of(s.twilio.send(&hook).await).await;
    assert!(xml.contains("<Reject reason=\"rejected\"/>"), "{xml}");
    let call = routed_call(&s.app, &hook).await;
    assert_eq!(call["routing"]["outcome"], "rejected_blacklisted");
    assert_eq!(call["status"], "no_answer");

    // Outside business hours, without a handoff number: <Say> then <Hangup/>.
    let r = s
        .app
        .patch(
            &format!("/establishments/{}/telephony", s.est),
            &s.root,
            json!({"blacklist_e164": [], "handoff_e164": null,
                   "business_hours": [{"days": ["mon"], "start": "00:00", "end": "00:01"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let hook = s.incoming(CALLER, NUMBER);
    let (_, _, xml) = twiml_of(s.twilio.send(&hook).await).await;
    assert!(
        xml.contains("<Say") && xml.contains("<Hangup/>") && !xml.contains("<Dial"),
        "{xml}"
    );
    let call = routed_call(&s.app, &hook).await;
    assert_eq!(call["routing"]["outcome"], "outside_business_hours");
    assert_eq!(call["status"], "completed");

    // No published version: a new agent without one takes the number.
    let bare = create_agent(&s.app, &s.root, &s.est, "Bare").await;
    s.app
        .patch(
            &format!("/establishments/{}/telephony", s.est),
            &s.root,
            json!({"business_hours": [], "handoff_e164": HANDOFF,
                   "inbound_numbers": [{"provider": "twilio", "e164": NUMBER, "routing_agent_id": bare}]}),
        )
        .await;
    let hook = s.incoming(CALLER, NUMBER);
    let (_, _, xml) = twiml_of(s.twilio.send(&hook).await).await;
    assert!(xml.contains("<Say") && xml.contains(HANDOFF), "{xml}");
    let call = routed_call(&s.app, &hook).await;
    assert_eq!(call["routing"]["outcome"], "no_published_version");

    // Malformed but signed: 422, nothing recorded.
    let mut broken = s.incoming(CALLER, NUMBER);
    broken.params.retain(|(k, _)| k != "CallSid");
    let res = s.twilio.send(&broken).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// Status callbacks for an inbound call on our number that the webhook never saw.
fn inbound_callbacks(s: &Setup, sid: &str, start: chrono::DateTime<chrono::Utc>) -> Vec<Webhook> {
    let common = [
        ("AccountSid", s.twilio.account_sid.as_str()),
        ("CallSid", sid),
        ("Direction", "inbound"),
        ("From", CALLER),
        ("To", NUMBER),
        ("CallbackSource", "call-progress-events"),
    ];
    let at = |secs: i64| (start + chrono::Duration::seconds(secs)).to_rfc2822();
    let steps = [
        ("0", "ringing", at(0), None),
        ("1", "in-progress", at(4), None),
        ("2", "completed", at(206), Some("202")),
    ];
    steps
        .iter()
        .map(|(seq, status, ts, duration)| {
            let mut params: Vec<(String, String)> = common
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            params.push(("SequenceNumber".into(), seq.to_string()));
            params.push(("CallStatus".into(), status.to_string()));
            params.push(("Timestamp".into(), ts.to_string()));
            if let Some(d) = duration {
                params.push(("CallDuration".into(), d.to_string()));
            }
            Webhook {
                url: s.url("/webhooks/twilio/call-status"),
                params,
            }
        })
        .collect()
}

fn summary(c: &Value) -> Value {
    json!({
        "status": c["status"], "active": c["active"], "duration_seconds": c["duration_seconds"],
        "answered_at": c["answered_at"], "ended_at": c["ended_at"], "direction": c["direction"],
        "opened_by": c["opened_by"], "establishment_id": c["establishment_id"],
    })
}

#[tokio::test]
async fn status_callbacks_replayed_twice_and_shuffled_give_the_same_final_call() {
    let Some(s) = setup(false).await else { return };
    let base = chrono::Utc::now() - chrono::Duration::minutes(10);
    let in_order = "CA0000000000000000000000000000a001";
    for cb in inbound_callbacks(&s, in_order, base) {
        assert_eq!(s.twilio.send(&cb).await.status(), StatusCode::NO_CONTENT);
    }
    let shuffled = "CA0000000000000000000000000000a002";
    let cbs = inbound_callbacks(&s, shuffled, base);
    // completed first, then duplicates, then the late ringing and in-progress, all twice.
    for i in [2, 2, 0, 1, 0, 2, 1] {
        assert_eq!(
            s.twilio.send(&cbs[i]).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    // Once every callback is projected, the late in-progress one has set `answered_at` on a
    // call that was already completed.
    let a = settled_call(&s.app, in_order).await;
    let b = settled_call(&s.app, shuffled).await;
    for c in [&a, &b] {
        assert!(
            c["status"] == "completed" && c["answered_at"].is_string(),
            "completed and answered: {c}"
        );
    }
    assert_eq!(summary(&a), summary(&b));
    assert_eq!(a["duration_seconds"], 202);
    assert_eq!(a["active"], false);
    assert_eq!(
        a["establishment_id"],
        s.est.as_str(),
        "opened for the owner of the number"
    );
    assert_eq!(a["opened_by"], "status_callback");
    // Each distinct callback recorded once; the late ringing never reopened the call.
    let received: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM events e JOIN rm_calls c ON c.id = e.aggregate_id
         WHERE e.event_type = 'TwilioStatusReceived' AND c.provider_call_sid = ANY($1)
         GROUP BY c.provider_call_sid ORDER BY 1",
    )
    .bind(vec![in_order, shuffled])
    .fetch_all(s.app.pool())
    .await
    .unwrap();
    assert_eq!(received, vec![3, 3]);

    // A callback for a number nobody holds is dropped, not an error.
    let mut stray = inbound_callbacks(&s, "CA0000000000000000000000000000a003", base).remove(0);
    stray.params.iter_mut().find(|(k, _)| k == "To").unwrap().1 = "+14158670000".into();
    assert_eq!(s.twilio.send(&stray).await.status(), StatusCode::NO_CONTENT);
    // Nothing was appended for it (the CallSid claim is taken with a call's first event).
    let claimed: Option<String> = sqlx::query_scalar(
        "SELECT owner_id FROM unique_claims WHERE scope = 'call_sid' AND value = $1",
    )
    .bind("CA0000000000000000000000000000a003")
    .fetch_optional(s.app.pool())
    .await
    .unwrap();
    assert_eq!(claimed, None);
}

#[tokio::test]
async fn e2e_a_signed_incoming_call_gets_twiml_aimed_at_the_runtime_with_the_active_version() {
    let Some(s) = setup(true).await else { return };
    let hook = s.incoming(CALLER, NUMBER);
    let (status, _, xml) = twiml_of(s.twilio.send(&hook).await).await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    let rt = s
        .app
        .get(&format!("/establishments/{}/runtime", s.est), &s.root)
        .await;
    let stream_url = rt.body["media_stream_url"].as_str().unwrap().to_string();
    assert!(
        stream_url.starts_with("wss://rt-")
            && stream_url.ends_with(".media.example.com/media-stream"),
        "{stream_url}"
    );
    assert_eq!(
        attr(&xml, "Stream", "url"),
        Some(stream_url.as_str()),
        "{xml}"
    );
    assert_eq!(parameter(&xml, "establishment_id"), Some(s.est.as_str()));
    assert_eq!(parameter(&xml, "agent_id"), Some(s.agent.as_str()));
    assert_eq!(
        parameter(&xml, "agent_version_id"),
        Some(s.version.as_str())
    );
    assert_eq!(parameter(&xml, "runtime_id"), s.runtime.as_deref());
    let call_id = parameter(&xml, "call_id").unwrap().to_string();
    assert!(attr(&xml, "Connect", "action").unwrap().ends_with(&format!(
        "/webhooks/twilio/connect-action?call_id={call_id}"
    )));

    // Publishing v2 re-aims new calls at v2.
    let v2 = draft(&s.app, &s.root, &s.agent, brain("v2")).await;
    assert!(publish(&s.app, &s.root, &s.agent, &v2)
        .await
        .status
        .is_success());
    let (_, _, xml2) = twiml_of(s.twilio.send(&s.incoming(CALLER, NUMBER)).await).await;
    assert_eq!(parameter(&xml2, "agent_version_id"), Some(v2.as_str()));

    // The call is recorded with its decision, visible to members in /calls/{id} once projected
    // (webhooks answer Twilio without waiting for the read models).
    s.app.settle().await;
    let details = s.app.get(&format!("/calls/{call_id}"), &s.root).await;
    assert_eq!(details.status, StatusCode::OK, "{}", details.text);
    assert_eq!(details.body["routing_decision"]["outcome"], "accepted");
    assert_eq!(details.body["agent_version_id"], s.version.as_str());
    assert_eq!(
        details.body["provider_call_sid"],
        hook.param("CallSid").unwrap()
    );

    // A draining runtime takes no new calls.
    let rt_id = s.runtime.clone().unwrap();
    let r = s
        .app
        .post(&format!("/runtimes/{rt_id}/drain"), &s.root, json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    s.app.settle().await;
    let hook = s.incoming(CALLER, NUMBER);
    let (_, _, xml) = twiml_of(s.twilio.send(&hook).await).await;
    assert!(
        xml.contains(HANDOFF) && !xml.contains("<Stream"),
        "draining runtime still routed: {xml}"
    );
    let call = routed_call(&s.app, &hook).await;
    assert_eq!(call["routing"]["reason"], "draining");

    // A stopped runtime is not ready: the caller goes to the handoff number.
    let r = s
        .app
        .post(&format!("/runtimes/{rt_id}/stop"), &s.root, json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    // The worker stops the container: Docker, real time.
    runtime_until(&s.app, &s.root, &rt_id, "stopped", RUNTIME_BUDGET, |st| {
        st["status"] == "stopped"
    })
    .await;
    let r = s
        .app
        .post(&format!("/runtimes/{rt_id}/resume"), &s.root, json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    s.app.settle().await;
    let hook = s.incoming(CALLER, NUMBER);
    let (_, _, xml) = twiml_of(s.twilio.send(&hook).await).await;
    let call = routed_call(&s.app, &hook).await;
    assert_eq!(
        call["routing"]["reason"], "not_ready",
        "stopped runtime: {call}"
    );
    assert!(xml.contains(HANDOFF) && !xml.contains("<Stream"), "{xml}");
}

async fn outbound(s: &Setup, key: Option<&str>, to: &str) -> tests::app::Resp {
    let mut req = s
        .app
        .client
        .post(s.app.url("/calls/outbound"))
        .bearer_auth(&s.root)
        .json(
            &json!({"establishment_id": s.est, "agent_id": s.agent, "to_e164": to,
                      "metadata": {"lead": "L-1"}}),
        );
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    TestApp::read(req.send().await.unwrap()).await
}

/// The calls Twilio got, once the system settled (the placer dials after the API answered);
/// there must be `n`.
async fn placed(s: &Setup, n: usize) -> Vec<tests::twilio::FakeCall> {
    s.app.settle().await;
    let calls = s.twilio.calls();
    assert_eq!(
        calls.len(),
        n,
        "Twilio got {} calls, expected {n}",
        calls.len()
    );
    calls
}

#[tokio::test]
async fn e2e_an_outbound_call_goes_queued_ringing_in_progress_completed_and_appears_in_history() {
    let Some(s) = setup(true).await else { return };
    let r = outbound(&s, Some("k-1"), "+14155550123").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["status"], "queued");
    let call_id = r.body["call_id"].as_str().unwrap().to_string();

    let placed = placed(&s, 1).await;
    let req = s
        .twilio
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/Calls.json"))
        .unwrap();
    assert_eq!(
        req.path,
        format!("/2010-04-01/Accounts/{}/Calls.json", s.twilio.account_sid)
    );
    assert_eq!(
        req.basic_auth(),
        Some((s.twilio.account_sid.clone(), s.twilio.auth_token.clone()))
    );
    assert_eq!(req.field("To"), Some("+14155550123"));
    assert_eq!(req.field("From"), Some(NUMBER));
    assert_eq!(req.field("TimeLimit"), Some("600"));
    assert_eq!(
        req.fields("StatusCallbackEvent"),
        vec!["initiated", "ringing", "answered", "completed"]
    );
    assert!(req
        .field("StatusCallback")
        .unwrap()
        .ends_with(&format!("/webhooks/twilio/call-status?call_id={call_id}")));
    let twiml = req.field("Twiml").unwrap();
    assert_eq!(parameter(twiml, "call_id"), Some(call_id.as_str()));
    assert!(twiml.contains("<Stream url=\"wss://rt-"), "{twiml}");

    let sid = placed[0].sid.clone();
    let path = format!("/calls/{call_id}");
    // Progress as Twilio reports it.
    let cbs = s.twilio.status_callbacks(
        &sid,
        &CallOutcome::Completed {
            duration: 42,
            answered_by: None,
        },
    );
    let mut seen = Vec::new();
    for cb in &cbs {
        assert_eq!(s.twilio.send(cb).await.status(), StatusCode::NO_CONTENT);
        let want = cb.param("CallStatus").unwrap().replace('-', "_");
        s.app.settle().await;
        let d = s.app.get(&path, &s.root).await.body;
        assert_eq!(d["status"], want.as_str(), "status {want} not shown: {d}");
        seen.push(want);
    }
    assert_eq!(seen, vec!["queued", "ringing", "in_progress", "completed"]);
    let d = s.app.get(&path, &s.root).await.body;
    assert_eq!(d["duration_seconds"], 42);
    assert_eq!(d["direction"], "outbound");
    assert_eq!(d["provider_call_sid"], sid.as_str());
    assert_eq!(d["metadata"], json!({"lead": "L-1"}));
    let kinds: Vec<&str> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    for k in [
        "opened",
        "outbound_queued",
        "placement_requested",
        "placed",
        "status_changed",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }

    let history = s
        .app
        .get(
            &format!("/calls?establishment_id={}&direction=outbound", s.est),
            &s.root,
        )
        .await;
    assert_eq!(history.status, StatusCode::OK);
    let item = &history.body["items"][0];
    assert_eq!(item["call_id"], call_id.as_str());
    assert_eq!(item["status"], "completed");
    let active = s.app.get("/calls/active", &s.root).await;
    assert!(active.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["call_id"] != call_id.as_str()));
}

#[tokio::test]
async fn the_same_idempotency_key_answers_the_same_call_and_dials_once() {
    let Some(s) = setup(true).await else { return };
    let mut tasks = Vec::new();
    let s = std::sync::Arc::new(s);
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            outbound(&s, Some("same-key"), "+14155550124").await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert!(
            r.status == StatusCode::CREATED || r.status == StatusCode::OK,
            "{}",
            r.text
        );
        created += (r.status == StatusCode::CREATED) as usize;
        ids.insert(r.body["call_id"].as_str().unwrap().to_string());
    }
    assert_eq!((ids.len(), created), (1, 1), "one call, created once");
    // Once the system is quiet, every placement the requests caused has been made.
    assert_eq!(placed(&s, 1).await.len(), 1, "dialled once");
    // The same key with another request is refused.
    let r = outbound(&s, Some("same-key"), "+14155550125").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "idempotency_key_reused");
    // Bad numbers and blacklisted ones never reach Twilio.
    let r = outbound(&s, None, "12345").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    s.app
        .patch(
            &format!("/establishments/{}/telephony", s.est),
            &s.root,
            json!({"blacklist_e164": ["+14155550126"]}),
        )
        .await;
    let r = outbound(&s, None, "+14155550126").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(s.twilio.calls().len(), 1);
}

#[tokio::test]
async fn twilio_errors_map_onto_the_call_and_rate_limits_are_retried() {
    let Some(s) = setup(true).await else { return };
    // 21211 (invalid To): the call fails with the reason.
    s.twilio.mark_invalid("+14155550127");
    let r = outbound(&s, None, "+14155550127").await;
    let call_id = r.body["call_id"].as_str().unwrap().to_string();
    s.app.settle().await;
    let d = s.app.get(&format!("/calls/{call_id}"), &s.root).await.body;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["placement"]["code"], 21211);
    assert_eq!(d["placement"]["status"], "failed");
    // 429 then 503, then success: placed once.
    s.twilio
        .script([Scripted::RateLimited, Scripted::ServerError(503)]);
    let r = outbound(&s, None, "+14155550128").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let calls = placed(&s, 1).await;
    assert_eq!(calls[0].to, "+14155550128");
    let attempts = s
        .twilio
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/Calls.json"))
        .count();
    assert!(
        attempts >= 4,
        "the invalid one, then 429, 503 and the success: {attempts}"
    );
}

#[tokio::test]
async fn handoff_transfers_a_live_call_and_is_refused_when_not_in_progress() {
    let Some(s) = setup(true).await else { return };
    let r = outbound(&s, None, "+14155550129").await;
    let call_id = r.body["call_id"].as_str().unwrap().to_string();
    let sid = placed(&s, 1).await[0].sid.clone();
    // Not answered yet: 409.
    let r = s
        .app
        .post(
            &format!("/calls/{call_id}/handoff"),
            &s.root,
            json!({"reason": "customer_requested_human"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let cbs = s.twilio.status_callbacks(
        &sid,
        &CallOutcome::Completed {
            duration: 30,
            answered_by: None,
        },
    );
    for cb in cbs
        .iter()
        .filter(|c| c.param("CallStatus") != Some("completed"))
    {
        s.twilio.send(cb).await;
    }
    s.app.settle().await;
    let d = s.app.get(&format!("/calls/{call_id}"), &s.root).await.body;
    assert_eq!(d["status"], "in_progress", "{d}");
    // A viewer may not; an operator may.
    let viewer = s
        .app
        .seed_member(&s.est, "viewer@example.com", "viewer")
        .await;
    let r = s
        .app
        .post(
            &format!("/calls/{call_id}/handoff"),
            &viewer,
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let op = s
        .app
        .seed_member(&s.est, "op@example.com", "operator")
        .await;
    let r = s
        .app
        .post(
            &format!("/calls/{call_id}/handoff"),
            &op,
            json!({"reason": "customer_requested_human"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"call_id": call_id, "status": "handoff_initiated", "handoff_e164": HANDOFF})
    );
    // Twilio is asked to <Dial> the handoff number on the live call (by the handoff worker).
    s.app.settle().await;
    let update = s
        .twilio
        .call(&sid)
        .and_then(|c| c.updates.first().cloned())
        .expect("a call update");
    let twiml = update.iter().find(|(k, _)| k == "Twiml").unwrap().1.clone();
    assert!(twiml.contains(&format!(">{HANDOFF}</Dial>")), "{twiml}");
    let d = s.app.get(&format!("/calls/{call_id}"), &s.root).await.body;
    assert_eq!(d["handoff"]["status"], "started", "{d}");
    assert_eq!(d["status"], "handoff_completed");
    // A second handoff while one runs: 409. Without a handoff number: 409.
    let r = s
        .app
        .post(
            &format!("/calls/{call_id}/handoff"),
            &s.root,
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    s.app
        .patch(
            &format!("/establishments/{}/telephony", s.est),
            &s.root,
            json!({"handoff_e164": null}),
        )
        .await;
    let r = s
        .app
        .post(
            &format!("/calls/{call_id}/handoff"),
            &s.root,
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "no_handoff_number");
}

#[tokio::test]
async fn calls_are_scoped_to_their_establishment_and_the_reaper_ends_stuck_calls() {
    let Some(s) = setup(false).await else { return };
    let sid = "CA0000000000000000000000000000b001";
    let cbs = inbound_callbacks(&s, sid, chrono::Utc::now());
    s.twilio.send(&cbs[0]).await;
    s.twilio.send(&cbs[1]).await;
    let call = settled_call(&s.app, sid).await;
    assert_eq!(call["status"], "in_progress", "{call}");
    let call_id = call["id"].as_str().unwrap().to_string();

    // Members see it; another establishment's admin gets 404 everywhere.
    let other = s.app.create_establishment(&s.root, "Other").await;
    let outsider = s
        .app
        .seed_member(&other, "outsider@example.com", "admin")
        .await;
    for path in [
        format!("/calls/{call_id}"),
        format!("/calls/{call_id}/transcript"),
        format!("/calls/{call_id}/tool-log"),
        format!("/calls/{call_id}/recording"),
    ] {
        let r = s.app.get(&path, &outsider).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    let r = s
        .app
        .post(
            &format!("/calls/{call_id}/handoff"),
            &outsider,
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s
        .app
        .get(
            &format!("/calls/active?establishment_id={}", s.est),
            &outsider,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let mine = s.app.get("/calls/active", &outsider).await;
    assert_eq!(mine.body["items"], json!([]));
    let active = s.app.get("/calls/active", &s.root).await;
    let item = active.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["call_id"] == call_id.as_str())
        .cloned()
        .unwrap();
    let mut keys: Vec<&String> = item.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "agent_id",
            "call_id",
            "direction",
            "duration_seconds",
            "establishment_id",
            "from_e164",
            "provider",
            "provider_call_sid",
            "sentiment",
            "started_at",
            "status",
            "to_e164"
        ]
    );

    // Not overdue yet: the reaper leaves it; past max duration + grace it ends it.
    let state = s.app.state();
    assert_eq!(
        state
            .workers
            .reaper
            .reap_once(60, chrono::Utc::now())
            .await
            .unwrap(),
        0
    );
    let later = chrono::Utc::now() + chrono::Duration::seconds(600 + 61 + 5);
    assert_eq!(state.workers.reaper.reap_once(60, later).await.unwrap(), 1);
    let reaped = settled_call(&s.app, sid).await;
    assert_eq!(reaped["active"], false, "{reaped}");
    assert_eq!(reaped["status"], "completed");
    assert!(reaped["reaped_reason"].as_str().unwrap().contains("600 s"));
}

#[tokio::test]
async fn a_handoff_cut_short_by_a_killed_server_is_completed_by_the_next_one() {
    let Some(s) = setup(true).await else { return };
    let r = outbound(&s, None, "+14155550131").await;
    let call_id = r.body["call_id"].as_str().unwrap().to_string();
    let sid = placed(&s, 1).await[0].sid.clone();
    for cb in s
        .twilio
        .status_callbacks(
            &sid,
            &CallOutcome::Completed {
                duration: 30,
                answered_by: None,
            },
        )
        .iter()
        .filter(|c| c.param("CallStatus") != Some("completed"))
    {
        s.twilio.send(cb).await;
    }
    s.app.settle().await;
    // Twilio takes the transfer request and holds it: the server dies while it waits.
    s.twilio
        .script([Scripted::Stall(std::time::Duration::from_secs(60))]);
    let before = s.twilio.received();
    let r = s
        .app
        .post(
            &format!("/calls/{call_id}/handoff"),
            &s.root,
            json!({"reason": "customer_requested_human"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    eventually("the transfer request reaches Twilio", secs(10), || async {
        (s.twilio.received() > before).then_some(())
    })
    .await;
    let Setup {
        app,
        twilio,
        root,
        _env: env,
        ..
    } = s;
    let database = app.stop().await;
    assert!(
        twilio.call(&sid).unwrap().updates.is_empty(),
        "the first server's transfer never completed"
    );
    let env = env.expect("a runtime environment");
    let app = env
        .spawn(TestApp::builder().twilio(&twilio).database(&database))
        .await;
    // The new server's handoff worker finds the request on start and carries it out.
    app.settle().await;
    let update = twilio
        .call(&sid)
        .and_then(|c| c.updates.first().cloned())
        .expect("the transfer was carried out by the new server");
    let twiml = update.iter().find(|(k, _)| k == "Twiml").unwrap().1.clone();
    assert!(twiml.contains(&format!(">{HANDOFF}</Dial>")), "{twiml}");
    let d = app.get(&format!("/calls/{call_id}"), &root).await.body;
    assert_eq!(d["handoff"]["status"], "started", "{d}");
    assert_eq!(d["status"], "handoff_completed", "{d}");
}
