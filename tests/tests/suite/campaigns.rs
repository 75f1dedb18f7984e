//! Campaigns and the dialer (prd §7.6, A.6, Appendix C M5) against the Twilio stand-in, with
//! the dialer's clock moved by the test: pace, retries, concurrency, do-not-call, the
//! schedule and the callee-local window in two time zones, a restart mid-campaign, and the
//! preview against what then happens.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value as Json};
use tests::app::TestApp;
use tests::fixtures::{published_agent, ready_runtime, set_telephony, Tenant, NUMBER};
use tests::runtimes::{free_port, RuntimeEnv};
use tests::twilio::{CallOutcome, TwilioStandIn};

use super::leads::imported;

struct World {
    app: TestApp,
    twilio: TwilioStandIn,
    env: RuntimeEnv,
    port: u16,
    root: String,
    est: String,
    agent: String,
    version: String,
    /// Stand-in calls already answered by the test.
    played: HashSet<String>,
    /// Stand-in calls the test has seen.
    seen: HashSet<String>,
    /// The establishment's runtime (None where the test does not need it).
    runtime: Option<tests::fixtures::ProvisionedRuntime>,
}

fn builder(twilio: &TwilioStandIn) -> tests::app::Builder {
    TestApp::builder().twilio(twilio).config(|c| {
        c.runtime.runtime_media_stream_url_template =
            Some("wss://rt-{host_port}.media.example.com/media-stream".into());
        // The test moves the dialer's clock and wakes it; no tick of its own interferes.
        c.dialer.dialer_tick_ms = 3_600_000;
        // The stand-in connects no media stream, so every answered call would count as
        // abandoned; the ceiling has its own test.
        c.dialer.campaign_abandonment_ceiling = 1.0;
        c.dialer.establishment_max_concurrent_calls = 50;
    })
}

async fn world() -> Option<World> {
    let twilio = TwilioStandIn::start().await;
    let env = RuntimeEnv::acquire().await?;
    let port = free_port();
    let app = env.spawn_on(builder(&twilio), port).await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = published_agent(&app, &root, &est, "Nova").await;
    set_telephony(
        &app,
        &root,
        &est,
        json!({
            "inbound_numbers": [{"provider": "twilio", "e164": NUMBER, "routing_agent_id": agent.id}],
            "max_call_duration_seconds": 600,
        }),
    )
    .await;
    let runtime = ready_runtime(&app, &root, &est, json!({})).await;
    Some(World {
        runtime: Some(runtime),
        app,
        twilio,
        env,
        port,
        root,
        est,
        agent: agent.id,
        version: agent.version,
        played: HashSet::new(),
        seen: HashSet::new(),
    })
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// The outcome the stand-in gives a number (by its last digit).
fn outcome_of(number: &str) -> &'static str {
    match number.as_bytes()[number.len() - 1] - b'0' {
        0 | 5 => "human",
        1 | 6 => "busy",
        2 | 7 => "no-answer",
        3 | 8 => "machine",
        _ => "failed",
    }
}

impl World {
    /// Moves the dialer's clock to `t`, lets it dial, and answers the new calls as the
    /// stand-in decides (unless `hold`). Answers the numbers dialled at this step.
    async fn step(&mut self, t: DateTime<Utc>, hold: bool) -> Vec<String> {
        self.app.state().workers.dialer.advance_to(t);
        self.app.settle().await;
        let new: Vec<_> = self
            .twilio
            .calls()
            .into_iter()
            .filter(|c| !self.seen.contains(&c.sid))
            .collect();
        let mut dialled = vec![];
        for c in new {
            self.seen.insert(c.sid.clone());
            dialled.push(c.to.clone());
            if hold {
                continue;
            }
            self.finish(&c.sid, &c.to).await;
        }
        self.app.settle().await;
        dialled
    }

    async fn finish(&mut self, sid: &str, to: &str) {
        self.played.insert(sid.to_string());
        let outcome = match outcome_of(to) {
            "human" | "machine" => {
                let who = if outcome_of(to) == "human" {
                    "human"
                } else {
                    "machine_start"
                };
                let amd = self
                    .twilio
                    .amd_callback(sid, who)
                    .expect("campaign calls use AMD");
                assert!(self.twilio.send(&amd).await.status().is_success());
                CallOutcome::Completed {
                    duration: 20,
                    answered_by: None,
                }
            }
            "busy" => CallOutcome::Busy,
            "no-answer" => CallOutcome::NoAnswer,
            _ => CallOutcome::Failed,
        };
        for s in self.twilio.play(sid, &outcome).await {
            assert!(s.is_success(), "callback answered {s}");
        }
    }

    /// Ends every call still held.
    async fn finish_all(&mut self) {
        for c in self.twilio.calls() {
            if !self.played.contains(&c.sid) {
                self.finish(&c.sid, &c.to).await;
            }
        }
        self.app.settle().await;
    }

    async fn campaign(&self, body: Json) -> String {
        let r = self.app.post("/campaigns", &self.root, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["status"], "created");
        r.body["id"].as_str().unwrap().to_string()
    }

    async fn active_calls(&self, campaign: &str) -> usize {
        let r = self
            .app
            .get(
                &format!(
                    "/calls?establishment_id={}&campaign_id={campaign}&limit=200",
                    self.est
                ),
                &self.root,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                ["queued", "ringing", "in_progress"].contains(&c["status"].as_str().unwrap())
            })
            .count()
    }
}

/// The campaign body: A.6's fields, plus the optional ones.
fn body(w: &World, extra: Json) -> Json {
    let mut b = json!({
        "establishment_id": w.est,
        "name": "January winback",
        "agent_id": w.agent,
        "agent_version_id": w.version,
        "lead_filter": {"status": "new"},
        "pace": {"calls_per_minute": 60},
        "schedule": {"timezone": "America/Sao_Paulo", "days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "08:00", "end": "22:00"},
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// São Paulo mobiles in local format (`n` of them, numbered from `from`).
fn sp(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("(11) 98{:03}-{:04}", i / 10000, i % 10000))
        .collect()
}

fn sp_e164(local: &str) -> String {
    let digits: String = local.chars().filter(|c| c.is_ascii_digit()).collect();
    format!("+55{digits}")
}

/// New York numbers (`n` of them).
fn ny(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("+1212555{:04}", 1000 + i)).collect()
}

// Monday 4 January 2027, 12:00 UTC: 09:00 in São Paulo, 07:00 in New York.
const T0: &str = "2027-01-04T12:00:00Z";

#[tokio::test]
async fn m5_a_campaign_dials_at_its_pace_retries_per_policy_within_concurrency_schedule_and_callee_window(
) {
    let Some(mut w) = world().await else { return };
    // The A.6 body, verbatim, is accepted.
    let a6 = json!({
        "establishment_id": w.est,
        "name": "January winback",
        "agent_id": w.agent,
        "agent_version_id": w.version,
        "lead_filter": {"status": "new"},
        "pace": {"calls_per_minute": 6},
        "schedule": {"timezone": "America/Sao_Paulo", "days": ["mon","tue","wed","thu","fri"], "start": "09:00", "end": "18:00"}
    });
    let a6_id = w.campaign(a6).await;
    assert!(a6_id.starts_with("cmp_"));
    let r = w
        .app
        .post(&format!("/campaigns/{a6_id}/cancel"), &w.root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // 70 São Paulo leads in local format, 30 in New York, with bad and duplicate rows.
    let sp_leads = sp(0, 70);
    let ny_leads = ny(30);
    let mut csv = String::from("phone,name\n");
    for (i, p) in sp_leads.iter().enumerate() {
        csv.push_str(&format!("{p},SP {i}\n"));
    }
    for (i, p) in ny_leads.iter().enumerate() {
        csv.push_str(&format!("{p},NY {i}\n"));
    }
    csv.push_str("not a number,Bad\n");
    csv.push_str(&format!("{},Twin\n", sp_leads[0]));
    let s = imported(&w.app, &w.root, &w.est, csv.as_bytes()).await;
    assert_eq!(
        (
            s["rows_imported"].as_i64(),
            s["rows_duplicate"].as_i64(),
            s["rows_rejected"].as_i64()
        ),
        (Some(100), Some(1), Some(1)),
        "{s}"
    );

    // Five São Paulo numbers on the do-not-call list, one flagged on its lead.
    let dnc: Vec<String> = sp_leads[60..64].iter().map(|l| sp_e164(l)).collect();
    let r = w
        .app
        .post(
            &format!("/establishments/{}/do-not-call", w.est),
            &w.root,
            json!({"numbers": dnc, "reason": "asked"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let flagged = sp_e164(&sp_leads[64]);
    let page = w
        .app
        .get(
            &format!("/leads?establishment_id={}&q=%2B{}", w.est, &flagged[1..]),
            &w.root,
        )
        .await;
    let lead_id = page.body["items"][0]["id"].as_str().unwrap().to_string();
    let r = w
        .app
        .patch(
            &format!("/leads/{lead_id}"),
            &w.root,
            json!({"do_not_call": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut never: HashSet<String> = dnc.iter().cloned().collect();
    never.insert(flagged);

    let id = w
        .campaign(body(&w, json!({
            "max_concurrent_calls": 5,
            "retry": {"max_attempts": 2, "backoff_minutes": [2], "on": ["busy", "no-answer", "machine"]},
        })))
        .await;

    // The preview at T0: São Paulo leads now, New York later (07:00 there), do-not-call never.
    let t0 = at(T0);
    let p = w
        .app
        .get(
            &format!("/campaigns/{id}/preview?at=2027-01-04T12:00:00Z"),
            &w.root,
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(p.body["now"], 65, "{}", p.text);
    assert_eq!(p.body["later"], 30);
    assert_eq!(p.body["later_reasons"]["outside_callee_window"], 30);
    assert_eq!(p.body["never"], 5);
    assert_eq!(p.body["never_reasons"]["do_not_call"], 5);

    let r = w
        .app
        .post(&format!("/campaigns/{id}/start"), &w.root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "running");

    // A minute of test-clock time at 60 calls/min, calls ending as they come.
    let mut per_number: HashMap<String, usize> = HashMap::new();
    let mut first_minute = 0;
    for i in 0..60 {
        let dialled = w.step(t0 + Duration::seconds(i), false).await;
        assert!(dialled.len() <= 1, "a burst at second {i}: {dialled:?}");
        first_minute += dialled.len();
        for d in dialled {
            *per_number.entry(d).or_default() += 1;
        }
    }
    let error = (first_minute as f64 - 60.0).abs() / 60.0;
    assert!(
        error <= 0.02,
        "{first_minute} calls in a minute at 60/min (error {error})"
    );
    assert!(
        per_number.keys().all(|n| n.starts_with("+5511")),
        "only São Paulo before 08:00 in New York: {per_number:?}"
    );

    // Concurrency: calls held open never exceed 5.
    let mut held = 0;
    for i in 60..70 {
        held += w.step(t0 + Duration::seconds(i), true).await.len();
        assert!(w.active_calls(&id).await <= 5);
    }
    assert_eq!(held, 5, "exactly the 5 slots were used");
    w.finish_all().await;
    for n in w
        .twilio
        .calls()
        .iter()
        .map(|c| c.to.clone())
        .skip(first_minute)
    {
        *per_number.entry(n).or_default() += 1;
    }

    // Retries: busy, no-answer and machine once more after 2 minutes; human and failed never.
    for i in 0..150 {
        for d in w.step(t0 + Duration::seconds(70 + i), false).await {
            *per_number.entry(d).or_default() += 1;
        }
    }
    for (n, count) in &per_number {
        if !n.starts_with("+5511") {
            continue;
        }
        let want = match outcome_of(n) {
            "busy" | "no-answer" | "machine" => 2,
            _ => 1,
        };
        assert_eq!(
            *count,
            want,
            "{n} ({}) dialled {count} times",
            outcome_of(n)
        );
    }
    let dialled_sp: HashSet<&String> = per_number
        .keys()
        .filter(|n| n.starts_with("+5511"))
        .collect();
    assert_eq!(
        dialled_sp.len(),
        65,
        "preview said 65 now; the dialler reached {}",
        dialled_sp.len()
    );
    assert!(
        never.iter().all(|n| !per_number.contains_key(n)),
        "a do-not-call number was dialled"
    );

    // 21:30 in São Paulo (campaign hours, but past the callee window there), 19:30 in New York:
    // only New York is dialled.
    let evening = at("2027-01-05T00:30:00Z");
    let mut ny_dialled = 0;
    for i in 0..10 {
        for d in w.step(evening + Duration::seconds(i), false).await {
            assert!(d.starts_with("+1212"), "{d} dialled in its evening");
            ny_dialled += 1;
        }
    }
    assert_eq!(ny_dialled, 10);
    // 22:30 in São Paulo: the campaign's schedule is closed (20:30 in New York is not enough).
    let closed = at("2027-01-05T01:30:00Z");
    for i in 0..10 {
        let d = w.step(closed + Duration::seconds(i), false).await;
        assert!(d.is_empty(), "dialled outside the schedule: {d:?}");
    }

    // Counters match the stand-in.
    let c = w.app.get(&format!("/campaigns/{id}"), &w.root).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    let counters = &c.body["counters"];
    assert_eq!(
        counters["calls_total"],
        w.twilio.calls().len() as u64,
        "{counters}"
    );
    assert_eq!(
        counters["queued"].as_u64().unwrap()
            + counters["dialling"].as_u64().unwrap()
            + counters["in_progress"].as_u64().unwrap(),
        0
    );
    assert_eq!(counters["excluded"]["do_not_call"], 5);
    // Campaign calls carry the campaign and the lead, and use the pinned version.
    let calls = w
        .app
        .get(
            &format!("/calls?establishment_id={}&campaign_id={id}&limit=5", w.est),
            &w.root,
        )
        .await;
    assert_eq!(calls.body["items"].as_array().unwrap().len(), 5);
    let call_id = calls.body["items"][0]["call_id"].as_str().unwrap();
    let d = w.app.get(&format!("/calls/{call_id}"), &w.root).await.body;
    assert_eq!(d["agent_version_id"], w.version.as_str(), "{d}");
    assert_eq!(d["requested_by"]["campaign_id"], id.as_str(), "{d}");
    assert!(d["requested_by"]["lead_id"]
        .as_str()
        .unwrap()
        .starts_with("led_"));
    drop(w.env);
}

#[tokio::test]
async fn a_control_plane_killed_mid_campaign_dials_each_lead_at_most_once_per_attempt_and_leaks_no_slot(
) {
    let Some(mut w) = world().await else { return };
    let leads = sp(100, 12);
    let csv = "phone\n".to_string() + &leads.join("\n") + "\n";
    imported(&w.app, &w.root, &w.est, csv.as_bytes()).await;
    let id = w
        .campaign(body(
            &w,
            json!({"max_concurrent_calls": 3, "retry": {"max_attempts": 1}}),
        ))
        .await;
    let r = w
        .app
        .post(&format!("/campaigns/{id}/start"), &w.root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t0 = at(T0);
    // Three calls up and held, then the control plane dies.
    for i in 0..5 {
        w.step(t0 + Duration::seconds(i), true).await;
    }
    assert_eq!(w.twilio.calls().len(), 3);
    let db = w.app.stop().await;
    w.app = w
        .env
        .spawn_on(builder(&w.twilio).database(&db), w.port)
        .await;
    // Still three busy slots after the restart: nothing more is dialled until they end.
    for i in 5..10 {
        let d = w.step(t0 + Duration::seconds(i), true).await;
        assert!(
            d.is_empty(),
            "dialled past the concurrency after a restart: {d:?}"
        );
    }
    w.finish_all().await;
    for i in 10..40 {
        w.step(t0 + Duration::seconds(i), false).await;
    }
    let mut per_number: HashMap<String, usize> = HashMap::new();
    for c in w.twilio.calls() {
        *per_number.entry(c.to).or_default() += 1;
    }
    assert_eq!(per_number.len(), 12, "every lead dialled: {per_number:?}");
    assert!(
        per_number.values().all(|n| *n == 1),
        "a lead dialled twice: {per_number:?}"
    );
    let c = w.app.get(&format!("/campaigns/{id}"), &w.root).await.body;
    assert_eq!(c["counters"]["calls_total"], 12, "{c}");
    assert_eq!(c["counters"]["in_progress"], 0);
    assert_eq!(c["status"], "completed", "{c}");

    // The person on a call asks not to be called again (the runtime's `opt_out` tool call):
    // the number goes on the establishment's do-not-call list and its lead shows it.
    let rt = w.runtime.as_ref().unwrap();
    let token = tests::runtimes::container_env(&rt.container_name, "CONTROL_PLANE_TOKEN")
        .expect("the container was given CONTROL_PLANE_TOKEN");
    let call = w.twilio.calls()[0].clone();
    let now = Utc::now().to_rfc3339();
    let r = w
        .app
        .post(
            "/ingest/call-events",
            &token,
            json!({
                "runtime_id": rt.id, "establishment_id": w.est, "agent_id": w.agent,
                "agent_version_id": w.version,
                "call": {"provider": "twilio", "provider_call_sid": call.sid, "direction": "outbound",
                         "from_e164": NUMBER, "to_e164": call.to},
                "event": {"id": "evt_optout_1", "type": "tool_called", "occurred_at": now,
                          "idempotency_key": "optout-1",
                          "payload": {"tool_name": "opt_out", "arguments": {}}},
            }),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    w.app.settle().await;
    let page = w
        .app
        .get(
            &format!("/leads?establishment_id={}&q=%2B{}", w.est, &call.to[1..]),
            &w.root,
        )
        .await;
    assert_eq!(page.body["items"][0]["do_not_call"], true, "{}", page.text);
    assert_eq!(page.body["items"][0]["attempts"], 1, "{}", page.text);
}

#[tokio::test]
async fn campaigns_are_validated_and_scoped_to_their_establishment() {
    let twilio = TwilioStandIn::start().await;
    let app = TestApp::builder().twilio(&twilio).spawn().await;
    let Tenant { est, admin } = app.tenant("Helios").await;
    let agent = published_agent(&app, &admin, &est, "Nova").await;
    let viewer = app.seed_member(&est, "viewer@example.com", "viewer").await;
    let other = app.create_establishment(&admin, "Other").await;
    let outsider = app
        .seed_member(&other, "outsider@example.com", "admin")
        .await;
    let good = json!({
        "establishment_id": est, "name": "January winback", "agent_id": agent.id,
        "agent_version_id": agent.version, "lead_filter": {"status": "new"},
        "pace": {"calls_per_minute": 6},
        "schedule": {"timezone": "America/Sao_Paulo", "days": ["mon","tue","wed","thu","fri"], "start": "09:00", "end": "18:00"}
    });
    let with = |k: &str, v: Json| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    for (bad, field) in [
        (
            with("pace", json!({"calls_per_minute": 0})),
            "pace.calls_per_minute",
        ),
        (
            with(
                "schedule",
                json!({"timezone": "Mars/Base", "days": ["mon"], "start": "09:00", "end": "18:00"}),
            ),
            "schedule.timezone",
        ),
        (
            with(
                "schedule",
                json!({"timezone": "UTC", "days": ["someday"], "start": "09:00", "end": "18:00"}),
            ),
            "schedule.days",
        ),
        (
            with(
                "schedule",
                json!({"timezone": "UTC", "days": ["mon"], "start": "18:00", "end": "09:00"}),
            ),
            "schedule",
        ),
        (with("retry", json!({"on": ["human"]})), "retry.on"),
        (
            with("callee_window", json!({"start": "7", "end": "21:00"})),
            "callee_window.start",
        ),
        (
            with("agent_version_id", json!("agv_nope")),
            "agent_version_id",
        ),
    ] {
        let r = app.post("/campaigns", &admin, bad).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.body["error"]["details"]["field"], field, "{}", r.text);
    }
    let r = app
        .post("/campaigns", &admin, with("agent_id", json!("agt_nope")))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = app.post("/campaigns", &viewer, good.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.post("/campaigns", &outsider, good.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.post("/campaigns", &admin, good.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap();
    let r = app.get(&format!("/campaigns/{id}"), &viewer).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "created");
    assert_eq!(
        r.body["definition"]["callee_window"],
        json!({"start": "08:00", "end": "21:00"})
    );
    let r = app.get(&format!("/campaigns/{id}"), &outsider).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .post(&format!("/campaigns/{id}/start"), &viewer, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post(&format!("/campaigns/{id}/resume"), &admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = app
        .get(&format!("/campaigns?establishment_id={est}"), &viewer)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = app
        .get(&format!("/campaigns?establishment_id={est}"), &outsider)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// The dialer at 600 calls/min (TWILIO_MAX_CPS 10), the clock moved a second at a time: the
/// figures of docs/benchmarks.md §6 (run with `--nocapture` to see them).
#[tokio::test]
async fn pacing_at_600_calls_per_minute_stays_within_2_percent() {
    let twilio = TwilioStandIn::start().await;
    let Some(env) = RuntimeEnv::acquire().await else {
        return;
    };
    let port = free_port();
    let app = env
        .spawn_on(
            builder(&twilio).config(|c| {
                c.dialer.twilio_max_cps = 10.0;
                c.dialer.establishment_max_concurrent_calls = 1000;
                // Pacing is the subject: on a loaded machine calls may end badly, and the
                // breaker (tested on its own) must not stop the dialling being measured.
                c.dialer.campaign_breaker_min_calls = usize::MAX;
                c.dialer.campaign_abandonment_ceiling = 1.0;
            }),
            port,
        )
        .await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = published_agent(&app, &root, &est, "Nova").await;
    set_telephony(&app, &root, &est, json!({
        "inbound_numbers": [{"provider": "twilio", "e164": NUMBER, "routing_agent_id": agent.id}],
    }))
    .await;
    ready_runtime(&app, &root, &est, json!({})).await;
    let mut w = World {
        app,
        twilio,
        env,
        port,
        root,
        est,
        agent: agent.id,
        version: agent.version,
        played: HashSet::new(),
        seen: HashSet::new(),
        runtime: None,
    };
    let leads = sp(1000, 700);
    let csv = "phone\n".to_string() + &leads.join("\n") + "\n";
    imported(&w.app, &w.root, &w.est, csv.as_bytes()).await;
    let id = w
        .campaign(body(
            &w,
            json!({"pace": {"calls_per_minute": 600}, "max_concurrent_calls": 200,
            "retry": {"max_attempts": 1}}),
        ))
        .await;
    let r = w
        .app
        .post(&format!("/campaigns/{id}/start"), &w.root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t0 = at(T0);
    let wall = std::time::Instant::now();
    let mut per_second = vec![];
    for i in 0..=60 {
        per_second.push(w.step(t0 + Duration::seconds(i), false).await.len());
    }
    let wall = wall.elapsed();
    // The dial instants the dialer chose, from the calls' start times.
    let mut instants: Vec<DateTime<Utc>> = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!(
                "/calls?establishment_id={}&campaign_id={id}&limit=200&cursor={c}",
                w.est
            ),
            None => format!(
                "/calls?establishment_id={}&campaign_id={id}&limit=200",
                w.est
            ),
        };
        let p = w.app.get(&path, &w.root).await.body;
        for c in p["items"].as_array().unwrap() {
            instants.push(c["started_at"].as_str().unwrap().parse().unwrap());
        }
        match p["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    instants.sort();
    let in_minute = instants
        .iter()
        .filter(|t| **t >= t0 && **t < t0 + Duration::seconds(60))
        .count();
    let gaps: Vec<i64> = instants
        .windows(2)
        .map(|p| (p[1] - p[0]).num_milliseconds())
        .collect();
    let error = (in_minute as f64 - 600.0).abs() / 600.0;
    println!(
        "pacing at 600/min: {in_minute} dials in the first minute of test-clock time (error {:.2}%), gaps {}–{} ms, most per clock second {}, {:.1} s of wall time for 61 clock seconds",
        error * 100.0,
        gaps.iter().min().unwrap(),
        gaps.iter().max().unwrap(),
        per_second.iter().max().unwrap(),
        wall.as_secs_f64()
    );
    assert!(error <= 0.02, "{in_minute} dials in a minute at 600/min");
    assert!(
        gaps.iter().all(|g| *g >= 100),
        "two dials closer than 100 ms: {gaps:?}"
    );
}

/// Runs a campaign over the given São Paulo lead numbers (indices into [`sp`]) until it stops
/// running, the clock moved a second at a time; answers the campaign.
async fn run_until_paused(w: &mut World, indices: &[usize]) -> Json {
    let csv = "phone\n".to_string()
        + &indices
            .iter()
            .map(|i| sp(*i, 1)[0].clone())
            .collect::<Vec<_>>()
            .join("\n")
        + "\n";
    imported(&w.app, &w.root, &w.est, csv.as_bytes()).await;
    let id = w
        .campaign(body(
            w,
            json!({"max_concurrent_calls": 1, "retry": {"max_attempts": 1}}),
        ))
        .await;
    let r = w
        .app
        .post(&format!("/campaigns/{id}/start"), &w.root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let t0 = at(T0);
    for i in 0..40 {
        w.step(t0 + Duration::seconds(i), false).await;
        let c = w.app.get(&format!("/campaigns/{id}"), &w.root).await.body;
        if c["status"] != "running" {
            return c;
        }
    }
    panic!("the campaign never paused");
}

#[tokio::test]
async fn a_campaign_whose_attempts_mostly_fail_is_paused_by_the_circuit_breaker() {
    let Some(mut w) = world().await else { return };
    // Numbers ending in 4 or 9 fail at the stand-in.
    let failing: Vec<usize> = (0..12).map(|k| 4 + 5 * k).collect();
    let c = run_until_paused(&mut w, &failing).await;
    assert_eq!(c["status"], "paused", "{c}");
    let reason = c["pause_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("circuit_breaker: 10 of the last 10"),
        "{reason}"
    );
    assert_eq!(
        w.twilio.calls().len(),
        10,
        "no dial after the breaker tripped"
    );
}

#[tokio::test]
async fn a_campaign_above_the_abandonment_ceiling_is_paused() {
    let twilio = TwilioStandIn::start().await;
    let Some(env) = RuntimeEnv::acquire().await else {
        return;
    };
    let port = free_port();
    // The default ceiling (3 %): a person answers and no agent ever joins the call.
    let app = env
        .spawn_on(
            builder(&twilio).config(|c| c.dialer.campaign_abandonment_ceiling = 0.03),
            port,
        )
        .await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = published_agent(&app, &root, &est, "Nova").await;
    set_telephony(&app, &root, &est, json!({
        "inbound_numbers": [{"provider": "twilio", "e164": NUMBER, "routing_agent_id": agent.id}],
    }))
    .await;
    ready_runtime(&app, &root, &est, json!({})).await;
    let mut w = World {
        app,
        twilio,
        env,
        port,
        root,
        est,
        agent: agent.id,
        version: agent.version,
        played: HashSet::new(),
        seen: HashSet::new(),
        runtime: None,
    };
    // Numbers ending in 0 or 5 are answered by a person.
    let c = run_until_paused(&mut w, &[0, 5, 10]).await;
    assert_eq!(c["status"], "paused", "{c}");
    let reason = c["pause_reason"].as_str().unwrap();
    assert!(reason.starts_with("abandonment_rate: 1 of 1"), "{reason}");
    assert_eq!(w.twilio.calls().len(), 1);
}
