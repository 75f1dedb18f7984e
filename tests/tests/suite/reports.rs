//! Reports (issue 13): a scripted set of calls over three days across the spring DST change
//! of Europe/Paris, every figure of the dashboard, agent performance and calls-over-time
//! reports (and the billing stub) compared with values worked out by hand; rebuild equals
//! live; late events move the figures they should; ranges, roles and tenancy; CSV export.
//! Campaign calls (a person answering with the agent connected, a machine, an abandoned call,
//! no answer) fill the campaign figures of the previous period.

use std::collections::HashMap;

use aggregates::call::{
    AnsweredBy, CallEvent, CallStatus, Direction, OpenedBy, Requester, RuntimeOrigin,
    SentimentLabel, SentimentScore, StatusCause, TerminalStatus,
};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use control_plane::store::{Append, NewEvent};
use cqrs_es::DomainEvent;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::fixtures::{brain, create_agent, draft};
use tests::TestApp;

/// No dashboard cache (figures are read right after late events), and no reaper pass
/// during the test (the scripted calls are months old: the ringing one would be reaped).
async fn quiet_app() -> TestApp {
    TestApp::builder()
        .config(|c| {
            c.dashboard_cache_ms = 0;
            c.call_reaper_interval_seconds = 3600;
        })
        .spawn()
        .await
}

const PARIS: chrono_tz::Tz = chrono_tz::Europe::Paris;

/// Paris wall-clock time → UTC.
fn paris(day: u32, h: u32, m: u32) -> DateTime<Utc> {
    PARIS
        .from_local_datetime(
            &NaiveDate::from_ymd_opt(2026, 3, day)
                .unwrap()
                .and_hms_opt(h, m, 0)
                .unwrap(),
        )
        .single()
        .expect("an unambiguous local time")
        .with_timezone(&Utc)
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Answered,
    NoAnswer,
    Busy,
    Failed,
    Ringing,
}

struct Script {
    at: DateTime<Utc>,
    inbound: bool,
    agent: usize,
    /// Index into the agent's versions; `None`: learnt from the runtime's `call_started`.
    version: usize,
    version_late: bool,
    outcome: Outcome,
    duration: u32,
    handoff: bool,
    sentiment: Option<(SentimentLabel, f64)>,
    tools: (u32, u32),
    summary: Option<&'static str>,
    /// Placed by the campaign `CAMPAIGN`: AMD's answer, and whether the agent connected
    /// (the runtime's `call_started`).
    campaign: Option<(Option<AnsweredBy>, bool)>,
}

const CAMPAIGN: &str = "cmp_reports";

fn origin(at: DateTime<Utc>, n: u32) -> RuntimeOrigin {
    RuntimeOrigin {
        runtime_id: "rt_test".into(),
        event_id: format!("evt_{}_{n}", at.timestamp()),
        occurred_at: at,
    }
}

/// Appends events to a call's stream (after whatever it holds: the summary worker writes too).
async fn append(app: &TestApp, est: &str, call_id: &str, events: Vec<CallEvent>) {
    let after: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(sequence), 0)::int8 FROM events WHERE aggregate_id = $1",
    )
    .bind(call_id)
    .fetch_one(app.pool())
    .await
    .unwrap();
    let metadata: HashMap<String, String> =
        [("establishment_id".to_string(), est.to_string())].into();
    app.state()
        .bus
        .store()
        .append(Append {
            aggregate_type: "Call",
            aggregate_id: call_id,
            expected_sequence: after as u64,
            events: events
                .iter()
                .map(|e| NewEvent {
                    event_type: e.event_type(),
                    event_version: e.event_version(),
                    payload: serde_json::to_value(e).unwrap(),
                })
                .collect(),
            metadata: &metadata,
            idempotency: None,
            claims: Vec::new(),
            snapshot: None,
        })
        .await
        .expect("append");
}

fn sentiment(label: SentimentLabel, polarity: f64, at: DateTime<Utc>) -> CallEvent {
    CallEvent::SentimentComputed {
        label,
        score: SentimentScore::try_from(polarity).unwrap(),
        windows: Vec::new(),
        segments_considered: 4,
        computed_at: at,
    }
}

fn answered_events(start: DateTime<Utc>, initial: CallStatus, s: &Script) -> Vec<CallEvent> {
    let talk = start + chrono::TimeDelta::seconds(5);
    let end = talk + chrono::TimeDelta::seconds(s.duration as i64);
    let mut ev = vec![CallEvent::CallStatusChanged {
        from: initial,
        to: CallStatus::InProgress,
        cause: StatusCause::Runtime,
        at: talk,
    }];
    for i in 1..=s.tools.0 {
        ev.push(CallEvent::ToolCalled {
            origin: origin(talk, i),
            invocation: i,
            tool_name: "calendar".into(),
            arguments: json!({}),
        });
        ev.push(CallEvent::ToolResultReceived {
            origin: origin(talk, 100 + i),
            invocation: Some(i),
            tool_name: "calendar".into(),
            result: json!({"ok": i > s.tools.1}),
            error: if i <= s.tools.1 {
                json!({"message": "calendar unavailable"})
            } else {
                Value::Null
            },
        });
    }
    let mut status = CallStatus::InProgress;
    if s.handoff {
        ev.push(CallEvent::CallStatusChanged {
            from: status,
            to: CallStatus::HandoffCompleted,
            cause: StatusCause::Handoff,
            at: talk,
        });
        status = CallStatus::HandoffCompleted;
    }
    ev.push(CallEvent::RuntimeCallEnded {
        origin: origin(end, 999),
        ended_at: end,
        duration_seconds: Some(s.duration),
        final_status: TerminalStatus::Completed,
        hangup_by: None,
        segment_count: None,
    });
    ev.push(CallEvent::CallStatusChanged {
        from: status,
        to: CallStatus::Completed,
        cause: StatusCause::Runtime,
        at: end,
    });
    ev
}

/// Appends a scripted call; returns its id.
async fn play(app: &TestApp, est: &str, agents: &[(String, Vec<String>)], s: &Script) -> String {
    let id = control_plane::ids::new_id("call");
    let initial = if s.inbound {
        CallStatus::Ringing
    } else {
        CallStatus::Queued
    };
    let (agent, versions) = &agents[s.agent];
    let version = versions[s.version].clone();
    let mut ev = vec![CallEvent::CallOpened {
        call_id: id.clone(),
        establishment_id: est.to_string(),
        direction: if s.inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        },
        provider: "twilio".into(),
        call_sid: None,
        from: "+14155550100".parse().unwrap(),
        to: "+14155550199".parse().unwrap(),
        agent_id: Some(agent.clone()),
        agent_version_id: (!s.version_late).then(|| version.clone()),
        status: initial,
        opened_by: if s.inbound {
            OpenedBy::Runtime
        } else {
            OpenedBy::OutboundRequest
        },
        at: s.at,
    }];
    if let Some((answered_by, connected)) = s.campaign {
        ev.push(CallEvent::OutboundCallQueued {
            agent_id: agent.clone(),
            requested_by: Requester::Campaign {
                campaign_id: CAMPAIGN.into(),
                lead_id: None,
                attempt: None,
            },
            metadata: Default::default(),
            machine_detection: None,
            time_limit_seconds: None,
            at: s.at,
        });
        if let Some(a) = answered_by {
            ev.push(CallEvent::AnsweredByDetected {
                answered_by: a,
                detection_duration_ms: Some(1800),
                at: s.at,
            });
        }
        if connected && !s.version_late {
            ev.push(CallEvent::RuntimeCallStarted {
                origin: origin(s.at, 0),
                agent_id: Some(agent.clone()),
                agent_version_id: Some(version.clone()),
                started_at: s.at,
            });
        }
    }
    if s.version_late {
        ev.push(CallEvent::RuntimeCallStarted {
            origin: origin(s.at, 0),
            agent_id: Some(agent.clone()),
            agent_version_id: Some(version),
            started_at: s.at,
        });
    }
    let ended = s.at + chrono::TimeDelta::seconds(30);
    match s.outcome {
        Outcome::Answered => ev.extend(answered_events(s.at, initial, s)),
        Outcome::Ringing => {}
        o => ev.push(CallEvent::CallStatusChanged {
            from: initial,
            to: match o {
                Outcome::NoAnswer => CallStatus::NoAnswer,
                Outcome::Busy => CallStatus::Busy,
                _ => CallStatus::Failed,
            },
            cause: StatusCause::Runtime,
            at: ended,
        }),
    }
    if let Some((label, p)) = s.sentiment {
        ev.push(sentiment(label, p, ended));
    }
    if let Some(text) = s.summary {
        ev.push(CallEvent::SummaryGenerated {
            summary: text.into(),
            generator: "extractive".into(),
            segments_covered: 4,
            generated_at: ended,
        });
    }
    append(app, est, &id, ev).await;
    id
}

struct World {
    app: TestApp,
    token: String,
    est: String,
    agents: Vec<(String, Vec<String>)>,
    /// The call left ringing.
    ringing: String,
}

fn call(
    at: DateTime<Utc>,
    inbound: bool,
    agent: usize,
    version: usize,
    outcome: Outcome,
) -> Script {
    Script {
        at,
        inbound,
        agent,
        version,
        version_late: false,
        outcome,
        duration: 0,
        handoff: false,
        sentiment: None,
        tools: (0, 0),
        summary: None,
        campaign: None,
    }
}

/// The script (Paris time; 29 March 2026 has 23 hours: 02:00 +01 → 03:00 +02).
async fn world() -> World {
    use Outcome::*;
    use SentimentLabel::*;
    let app = quiet_app().await;
    let token = app.root_token().await;
    let r = app
        .post(
            "/establishments",
            &token,
            json!({"name": "Reports Bistro", "timezone": "Europe/Paris", "locale": "fr-FR"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let est = r.body["id"].as_str().unwrap().to_string();
    let alpha = create_agent(&app, &token, &est, "Alpha").await;
    let a1 = draft(&app, &token, &alpha, brain("a1")).await;
    let a2 = draft(&app, &token, &alpha, brain("a2")).await;
    let beta = create_agent(&app, &token, &est, "Beta").await;
    let b1 = draft(&app, &token, &beta, brain("b1")).await;
    let agents = vec![(alpha, vec![a1, a2]), (beta, vec![b1])];

    let scripts = vec![
        // c1: 28th 09:10 +01, inbound, Alpha a1, 30 s, positive, 2 tools (1 error), summary.
        Script {
            duration: 30,
            sentiment: Some((Positive, 0.6)),
            tools: (2, 1),
            summary: Some("=Booked a table for two"),
            ..call(paris(28, 9, 10), true, 0, 0, Answered)
        },
        // c2: 28th 09:50, inbound, Alpha a1, no answer.
        call(paris(28, 9, 50), true, 0, 0, NoAnswer),
        // c3: 28th 23:30, outbound, Beta b1, 124 s, handed off, negative, summary.
        Script {
            duration: 124,
            handoff: true,
            sentiment: Some((Negative, -0.4)),
            summary: Some("Complaint about a bill"),
            ..call(paris(28, 23, 30), false, 1, 0, Answered)
        },
        // c4: 29th 01:30 +01, inbound, Alpha a2 (version learnt from the runtime), 60 s,
        // neutral, 1 tool, summary.
        Script {
            duration: 60,
            version_late: true,
            sentiment: Some((Neutral, 0.0)),
            tools: (1, 0),
            summary: Some("Asked for the opening hours"),
            ..call(paris(29, 1, 30), true, 0, 1, Answered)
        },
        // c5: 29th 03:15 +02, inbound, Alpha a2, failed.
        call(paris(29, 3, 15), true, 0, 1, Failed),
        // c6: 29th 12:00, outbound, Beta b1, busy.
        call(paris(29, 12, 0), false, 1, 0, Busy),
        // c7: 29th 23:45, inbound, Beta b1, 236 s, handed off, positive, 3 tools (2 errors).
        Script {
            duration: 236,
            handoff: true,
            sentiment: Some((Positive, 0.8)),
            tools: (3, 2),
            summary: Some("Group booking, handed to the manager"),
            ..call(paris(29, 23, 45), true, 1, 0, Answered)
        },
        // c8: 30th 00:15 +02 (29th 22:15 UTC), inbound, Alpha a1, 500 s, negative.
        Script {
            duration: 500,
            sentiment: Some((Negative, -0.6)),
            ..call(paris(30, 0, 15), true, 0, 0, Answered)
        },
        // c9: 27th 23:50: the previous period only. 30 s.
        Script {
            duration: 30,
            ..call(paris(27, 23, 50), true, 0, 0, Answered)
        },
        // c10: 31st 00:05: after the range.
        Script {
            duration: 60,
            ..call(paris(31, 0, 5), false, 1, 0, Answered)
        },
        // Campaign calls of the previous period, Beta b1, outbound.
        // k1: 26th 10:00, a person answered (AMD `human`), the agent connected, 40 s.
        Script {
            duration: 40,
            campaign: Some((Some(AnsweredBy::Human), true)),
            ..call(paris(26, 10, 0), false, 1, 0, Answered)
        },
        // k2: 26th 11:00, an answering machine (AMD `machine_end_beep`), 20 s.
        Script {
            duration: 20,
            campaign: Some((Some(AnsweredBy::MachineEndBeep), false)),
            ..call(paris(26, 11, 0), false, 1, 0, Answered)
        },
        // k3: 26th 12:00, a person answered (no AMD answer), the agent never connected:
        // abandoned. 10 s.
        Script {
            duration: 10,
            campaign: Some((None, false)),
            ..call(paris(26, 12, 0), false, 1, 0, Answered)
        },
        // k4: 26th 13:00, nobody answered.
        Script {
            campaign: Some((None, false)),
            ..call(paris(26, 13, 0), false, 1, 0, NoAnswer)
        },
    ];
    for s in &scripts {
        play(&app, &est, &agents, s).await;
    }
    // c12: 30th 10:00, inbound, Alpha a1, still ringing (its outcome arrives late).
    let ringing = play(
        &app,
        &est,
        &agents,
        &call(paris(30, 10, 0), true, 0, 0, Ringing),
    )
    .await;
    app.settle().await;
    World {
        app,
        token,
        est,
        agents,
        ringing,
    }
}

const RANGE: &str = "from=2026-03-28&to=2026-03-30";

async fn get(w: &World, path: &str) -> Value {
    let r = w.app.get(path, &w.token).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    r.body
}

fn expected_kpis() -> Value {
    json!({
        "range": {"from": "2026-03-28", "to": "2026-03-30", "timezone": "Europe/Paris"},
        "calls": {"total": 9, "inbound": 7, "outbound": 2, "answered": 5, "missed": 2,
                  "failed": 1, "active_now": 1},
        "answer_rate": 0.5556,
        "avg_handle_seconds": 190.0,
        "handoff_rate": 0.2222,
        "sentiment": {"positive": 2, "neutral": 1, "negative": 2, "avg_score": 0.54},
        "tools": {"calls": 6, "errors": 3},
        "campaigns": {"dialled": 0, "human_answered": 0, "machine_answered": 0,
                      "abandon_rate": null},
        // c9, k1..k4.
        "previous": {
            "range": {"from": "2026-03-25", "to": "2026-03-27", "timezone": "Europe/Paris"},
            "calls": {"total": 5, "inbound": 1, "outbound": 4, "answered": 4, "missed": 1,
                      "failed": 0, "active_now": null},
            "answer_rate": 0.8,
            // (30 + 40 + 20 + 10) / 4
            "avg_handle_seconds": 25.0,
            "handoff_rate": 0.0,
            "sentiment": {"positive": 0, "neutral": 0, "negative": 0, "avg_score": null},
            "tools": {"calls": 0, "errors": 0},
            // k1 human, k2 machine, k3 human and abandoned: 1 of 2.
            "campaigns": {"dialled": 4, "human_answered": 2, "machine_answered": 1,
                          "abandon_rate": 0.5},
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn agent_item(
    agent: &str,
    name: &str,
    version: Option<&str>,
    calls: i64,
    answered: i64,
    answer_rate: f64,
    avg_handle: f64,
    p50: u32,
    p90: u32,
    handoff_rate: f64,
    sentiment_avg: f64,
    positive_share: f64,
    negative_share: f64,
    tool_calls: i64,
    tool_error_rate: Value,
    summary_coverage: f64,
) -> Value {
    let mut v = json!({
        "agent_id": agent, "agent_name": name, "calls": calls, "answered": answered,
        "answer_rate": answer_rate, "avg_handle_seconds": avg_handle,
        "p50_duration_seconds": p50, "p90_duration_seconds": p90,
        "handoff_rate": handoff_rate, "sentiment_avg": sentiment_avg,
        "positive_share": positive_share, "negative_share": negative_share,
        "tool_calls": tool_calls, "tool_error_rate": tool_error_rate,
        "summary_coverage": summary_coverage,
    });
    if let Some(ver) = version {
        v["agent_version_id"] = json!(ver);
    }
    v
}

fn range_json() -> Value {
    json!({"from": "2026-03-28", "to": "2026-03-30", "timezone": "Europe/Paris"})
}

fn expected_by_agent(w: &World) -> Value {
    let (alpha, beta) = (&w.agents[0].0, &w.agents[1].0);
    json!({
        "range": range_json(),
        "group_by": "agent",
        "items": [
            // Alpha: c1 c2 c4 c5 c8 c12; handled 30, 60, 500.
            agent_item(alpha, "Alpha", None, 6, 3, 0.5, 196.67, 60, 500, 0.0, 0.5,
                       0.3333, 0.3333, 3, json!(0.3333), 0.8333),
            // Beta: c3 c6 c7; handled 124, 236.
            agent_item(beta, "Beta", None, 3, 2, 0.6667, 180.0, 124, 236, 0.6667, 0.6,
                       0.5, 0.5, 3, json!(0.6667), 1.0),
        ]
    })
}

fn expected_by_version(w: &World) -> Vec<Value> {
    let (alpha, beta) = (&w.agents[0].0, &w.agents[1].0);
    let (a1, a2, b1) = (&w.agents[0].1[0], &w.agents[0].1[1], &w.agents[1].1[0]);
    vec![
        // a1: c1 c2 c8 c12; handled 30, 500.
        agent_item(
            alpha,
            "Alpha",
            Some(a1),
            4,
            2,
            0.5,
            265.0,
            30,
            500,
            0.0,
            0.5,
            0.5,
            0.5,
            2,
            json!(0.5),
            0.75,
        ),
        // a2: c4 c5; handled 60.
        agent_item(
            alpha,
            "Alpha",
            Some(a2),
            2,
            1,
            0.5,
            60.0,
            60,
            60,
            0.0,
            0.5,
            0.0,
            0.0,
            1,
            json!(0.0),
            1.0,
        ),
        agent_item(
            beta,
            "Beta",
            Some(b1),
            3,
            2,
            0.6667,
            180.0,
            124,
            236,
            0.6667,
            0.6,
            0.5,
            0.5,
            3,
            json!(0.6667),
            1.0,
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
fn bucket(
    start: &str,
    calls: i64,
    inbound: i64,
    answered: i64,
    missed: i64,
    avg: Option<f64>,
    handoffs: i64,
    sentiment: Option<f64>,
) -> Value {
    json!({"bucket_start": start, "calls": calls, "inbound": inbound,
           "outbound": calls - inbound, "answered": answered, "missed": missed,
           "avg_duration_seconds": avg, "handoffs": handoffs, "sentiment_avg": sentiment})
}

fn expected_days() -> Value {
    json!({
        "range": range_json(),
        "interval": "day",
        "items": [
            // c1 c2 c3
            bucket("2026-03-28T00:00:00+01:00", 3, 2, 2, 1, Some(77.0), 1, Some(0.55)),
            // c4 c5 c6 c7 (a 23-hour day)
            bucket("2026-03-29T00:00:00+01:00", 4, 3, 2, 1, Some(148.0), 1, Some(0.7)),
            // c8 c12
            bucket("2026-03-30T00:00:00+02:00", 2, 2, 1, 0, Some(500.0), 0, Some(0.2)),
        ]
    })
}

/// Every hour of the three days (24 + 23 + 24), zeros but for the calls' hours.
fn expected_hours() -> Value {
    let mut items = Vec::new();
    let mut t = paris(28, 0, 0);
    while t < paris(31, 0, 0) {
        let local = t.with_timezone(&PARIS).to_rfc3339();
        let b = match local.as_str() {
            "2026-03-28T09:00:00+01:00" => bucket(&local, 2, 2, 1, 1, Some(30.0), 0, Some(0.8)),
            "2026-03-28T23:00:00+01:00" => bucket(&local, 1, 0, 1, 0, Some(124.0), 1, Some(0.3)),
            "2026-03-29T01:00:00+01:00" => bucket(&local, 1, 1, 1, 0, Some(60.0), 0, Some(0.5)),
            "2026-03-29T03:00:00+02:00" => bucket(&local, 1, 1, 0, 0, None, 0, None),
            "2026-03-29T12:00:00+02:00" => bucket(&local, 1, 0, 0, 1, None, 0, None),
            "2026-03-29T23:00:00+02:00" => bucket(&local, 1, 1, 1, 0, Some(236.0), 1, Some(0.9)),
            "2026-03-30T00:00:00+02:00" => bucket(&local, 1, 1, 1, 0, Some(500.0), 0, Some(0.2)),
            "2026-03-30T10:00:00+02:00" => bucket(&local, 1, 1, 0, 0, None, 0, None),
            _ => bucket(&local, 0, 0, 0, 0, None, 0, None),
        };
        items.push(b);
        t += chrono::TimeDelta::hours(1);
    }
    assert_eq!(items.len(), 71);
    json!({"range": range_json(), "interval": "hour", "items": items})
}

#[tokio::test]
async fn every_figure_of_the_reports_matches_the_script_across_a_dst_change() {
    let w = world().await;
    let est = &w.est;
    assert_eq!(
        get(
            &w,
            &format!("/dashboard/kpis?establishment_id={est}&{RANGE}")
        )
        .await,
        expected_kpis()
    );
    assert_eq!(
        get(
            &w,
            &format!("/reports/agent-performance?establishment_id={est}&{RANGE}")
        )
        .await,
        expected_by_agent(&w)
    );
    let by_version = get(
        &w,
        &format!("/reports/agent-performance?establishment_id={est}&{RANGE}&group_by=version"),
    )
    .await;
    assert_eq!(by_version["group_by"], "version");
    let mut items = by_version["items"].as_array().unwrap().clone();
    items.sort_by_key(|i| i["agent_version_id"].as_str().unwrap().to_string());
    let mut expected = expected_by_version(&w);
    expected.sort_by_key(|i| i["agent_version_id"].as_str().unwrap().to_string());
    assert_eq!(items, expected);
    assert_eq!(
        get(
            &w,
            &format!("/reports/calls?establishment_id={est}&{RANGE}")
        )
        .await,
        expected_days()
    );
    assert_eq!(
        get(
            &w,
            &format!("/reports/calls?establishment_id={est}&{RANGE}&interval=hour")
        )
        .await,
        expected_hours()
    );
    // Billing: minutes per call rounded up: inbound 30 s, 60 s, 236 s, 500 s → 1 + 1 + 4 + 9;
    // outbound 124 s → 3.
    assert_eq!(
        get(&w, &format!("/establishments/{est}/billing?{RANGE}")).await,
        json!({"plan": "stub", "period": {"start": "2026-03-28", "end": "2026-03-30"},
               "usage": {"calls": 9, "call_minutes": 18, "inbound_minutes": 15,
                         "outbound_minutes": 3},
               "billing_enabled": false})
    );
}

#[tokio::test]
async fn a_rebuild_of_the_rollups_equals_live_and_late_events_move_their_figures() {
    let w = world().await;
    let est = &w.est;
    let pool = w.app.pool();
    let live = projections::reports::queries::dump(pool).await.unwrap();
    assert!(live.len() > 20, "rollups exist: {}", live.len());
    // A tiny batch: calls' events straddle batches.
    projections::runner::rebuild(pool, &projections::reports::ReportsProjection, 3, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        projections::reports::queries::dump(pool).await.unwrap(),
        live
    );

    // The ringing call of the 30th 10:00 is answered and ends: the status callbacks arrive
    // long after its hour closed, then its sentiment.
    let call_id = w.ringing.clone();
    let s = Script {
        duration: 66,
        ..call(paris(30, 10, 0), true, 0, 0, Outcome::Answered)
    };
    append(
        &w.app,
        est,
        &call_id,
        answered_events(s.at, CallStatus::Ringing, &s),
    )
    .await;
    w.app.settle().await;
    let k = get(
        &w,
        &format!("/dashboard/kpis?establishment_id={est}&{RANGE}"),
    )
    .await;
    assert_eq!(k["calls"]["answered"], 6);
    assert_eq!(k["calls"]["active_now"], 0);
    assert_eq!(k["calls"]["total"], 9);
    // (30 + 124 + 60 + 236 + 500 + 66) / 6
    assert_eq!(k["avg_handle_seconds"], 169.33);
    let days = get(
        &w,
        &format!("/reports/calls?establishment_id={est}&{RANGE}"),
    )
    .await;
    assert_eq!(days["items"][2]["answered"], 2);
    assert_eq!(days["items"][2]["avg_duration_seconds"], 283.0);
    let hours = get(
        &w,
        &format!("/reports/calls?establishment_id={est}&{RANGE}&interval=hour"),
    )
    .await;
    let ten = hours["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["bucket_start"] == "2026-03-30T10:00:00+02:00")
        .unwrap();
    assert_eq!(ten["answered"], 1);
    assert_eq!(ten["avg_duration_seconds"], 66.0);

    append(
        &w.app,
        est,
        &call_id,
        vec![sentiment(SentimentLabel::Positive, 1.0, paris(30, 18, 0))],
    )
    .await;
    w.app.settle().await;
    let k = get(
        &w,
        &format!("/dashboard/kpis?establishment_id={est}&{RANGE}"),
    )
    .await;
    assert_eq!(k["sentiment"]["positive"], 3);
    // polarities 0.6 0.8 0 -0.4 -0.6 1.0 → mean 0.2333 → 0.6167 → 0.62
    assert_eq!(k["sentiment"]["avg_score"], 0.62);

    // And the rebuild still equals live.
    let live = projections::reports::queries::dump(pool).await.unwrap();
    projections::runner::rebuild(
        pool,
        &projections::reports::ReportsProjection,
        500,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(
        projections::reports::queries::dump(pool).await.unwrap(),
        live
    );
}

#[tokio::test]
async fn ranges_roles_and_tenancy() {
    let app = TestApp::spawn().await;
    let root = app.root_token().await;
    let est = app.create_establishment(&root, "Ranges").await;
    let other = app.create_establishment(&root, "Other").await;
    let viewer = app.seed_member(&est, "viewer@reports.test", "viewer").await;
    // A viewer of exactly one establishment needs no establishment_id.
    for path in [
        "/dashboard/kpis".to_string(),
        "/reports/agent-performance?range=30d".to_string(),
        "/reports/calls?range=mtd&interval=hour".to_string(),
        format!("/establishments/{est}/billing"),
        "/dashboard/kpis?range=yesterday".to_string(),
    ] {
        let r = app.get(&path, &viewer).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    }
    let r = app.get("/dashboard/kpis?range=7d", &viewer).await;
    assert_eq!(r.body["range"]["timezone"], "America/Sao_Paulo");
    let from: NaiveDate = r.body["range"]["from"].as_str().unwrap().parse().unwrap();
    let to: NaiveDate = r.body["range"]["to"].as_str().unwrap().parse().unwrap();
    assert_eq!((to - from).num_days(), 6);
    let prev_to: NaiveDate = r.body["previous"]["range"]["to"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!((from - prev_to).num_days(), 1);
    // Foreign establishments are not found.
    for path in [
        format!("/dashboard/kpis?establishment_id={other}"),
        format!("/reports/agent-performance?establishment_id={other}"),
        format!("/reports/calls?establishment_id={other}"),
        format!("/establishments/{other}/billing"),
        format!("/calls/export?establishment_id={other}"),
    ] {
        let r = app.get(&path, &viewer).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "not_found");
    }
    // The platform admin belongs to two: the establishment must be named.
    let r = app.get("/dashboard/kpis", &root).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // Bad ranges are 422 naming the parameter.
    for (q, field) in [
        ("from=2025-01-01&to=2026-02-05", "to"),
        ("from=2026-02-05&to=2026-02-01", "to"),
        ("from=2026-02-05", "from"),
        ("range=week", "range"),
        ("range=7d&from=2026-01-01&to=2026-01-02", "range"),
        ("from=2026-13-01&to=2026-13-02", "from"),
        ("interval=minute", "interval"),
    ] {
        let r = app
            .get(&format!("/reports/calls?establishment_id={est}&{q}"), &root)
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{q}: {}",
            r.text
        );
        assert_eq!(
            r.body["error"]["details"]["field"], field,
            "{q}: {}",
            r.text
        );
    }
    let r = app
        .get(
            &format!("/reports/agent-performance?establishment_id={est}&group_by=team"),
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // 400 days is the most.
    let r = app
        .get(
            &format!("/reports/calls?establishment_id={est}&from=2025-01-01&to=2026-02-04"),
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 400);
}

#[tokio::test]
async fn a_local_day_of_a_half_hour_zone_starts_at_its_own_midnight() {
    let app = quiet_app().await;
    let token = app.root_token().await;
    let r = app
        .post(
            "/establishments",
            &token,
            json!({"name": "Kolkata", "timezone": "Asia/Kolkata", "locale": "en-IN"}),
        )
        .await;
    let est = r.body["id"].as_str().unwrap().to_string();
    let agent = create_agent(&app, &token, &est, "Desk").await;
    let v = draft(&app, &token, &agent, brain("v1")).await;
    let agents = vec![(agent, vec![v])];
    // 18:20 and 18:40 UTC on the 9th: 23:50 on the 9th and 00:10 on the 10th in Kolkata.
    for minute in [20, 40] {
        let at = Utc.with_ymd_and_hms(2026, 3, 9, 18, minute, 0).unwrap();
        play(
            &app,
            &est,
            &agents,
            &call(at, true, 0, 0, Outcome::NoAnswer),
        )
        .await;
    }
    app.settle().await;
    let r = app
        .get(
            &format!("/reports/calls?establishment_id={est}&from=2026-03-09&to=2026-03-10"),
            &token,
        )
        .await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items[0]["bucket_start"], "2026-03-09T00:00:00+05:30");
    assert_eq!(items[0]["calls"], 1);
    assert_eq!(items[1]["bucket_start"], "2026-03-10T00:00:00+05:30");
    assert_eq!(items[1]["calls"], 1);
    let r = app
        .get(
            &format!("/dashboard/kpis?establishment_id={est}&from=2026-03-10&to=2026-03-10"),
            &token,
        )
        .await;
    assert_eq!(r.body["calls"]["missed"], 1);
    assert_eq!(r.body["previous"]["calls"]["missed"], 1);
}

#[tokio::test]
async fn the_call_history_exports_as_csv() {
    let w = world().await;
    let res = reqwest::Client::new()
        .get(
            w.app
                .url(&format!("/calls/export?establishment_id={}", w.est)),
        )
        .bearer_auth(&w.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = res.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("call_id,provider_call_sid,establishment_id,direction"));
    assert_eq!(lines.len(), 1 + 15, "{text}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with(&format!(",{CAMPAIGN}")))
            .count(),
        4,
        "{text}"
    );
    // Newest first: the call after the range, then the ringing one.
    assert!(lines[1].contains(",outbound,"), "{}", lines[1]);
    // A summary that looks like a formula is defused; a handoff is marked.
    let c1 = lines.iter().find(|l| l.contains("Booked a table")).unwrap();
    assert!(c1.contains(",'=Booked a table for two,false,"), "{c1}");
    let c3 = lines.iter().find(|l| l.contains("Complaint")).unwrap();
    assert!(c3.contains(",Complaint about a bill,true,"), "{c3}");
    assert!(c3.contains(",negative,0.3,"), "{c3}");
    // Filters as in GET /calls.
    let r = w
        .app
        .get(
            &format!(
                "/calls/export?establishment_id={}&direction=sideways",
                w.est
            ),
            &w.token,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let res = reqwest::Client::new()
        .get(w.app.url(&format!(
            "/calls/export?establishment_id={}&status=busy",
            w.est
        )))
        .bearer_auth(&w.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap().lines().count(), 2);
}

#[tokio::test]
async fn dashboard_answers_are_served_from_the_cache_within_its_ttl() {
    let app = TestApp::builder()
        .config(|c| {
            c.dashboard_cache_ms = 600_000;
            c.call_reaper_interval_seconds = 3600;
        })
        .spawn()
        .await;
    let token = app.root_token().await;
    let est = app.create_establishment(&token, "Cached").await;
    let agent = create_agent(&app, &token, &est, "Desk").await;
    let v = draft(&app, &token, &agent, brain("v1")).await;
    let agents = vec![(agent, vec![v])];
    let path = format!("/dashboard/kpis?establishment_id={est}&from=2026-03-09&to=2026-03-09");
    let before = app.get(&path, &token).await;
    assert_eq!(before.body["calls"]["total"], 0);
    let at = Utc.with_ymd_and_hms(2026, 3, 9, 15, 0, 0).unwrap();
    play(
        &app,
        &est,
        &agents,
        &call(at, true, 0, 0, Outcome::NoAnswer),
    )
    .await;
    app.settle().await;
    // Within the TTL the same question gets the cached answer; the other reports are live.
    assert_eq!(app.get(&path, &token).await.body, before.body);
    let days = app
        .get(
            &format!("/reports/calls?establishment_id={est}&from=2026-03-09&to=2026-03-09"),
            &token,
        )
        .await;
    assert_eq!(days.body["items"][0]["calls"], 1);
    let wider = app
        .get(
            &format!("/dashboard/kpis?establishment_id={est}&from=2026-03-08&to=2026-03-09"),
            &token,
        )
        .await;
    assert_eq!(wider.body["calls"]["total"], 1);
}
