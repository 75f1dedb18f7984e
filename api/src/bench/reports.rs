//! `control-plane bench reports`: writes N calls over D days straight into the event store
//! (bulk `UNNEST` inserts of real `CallEvent`s, no command path), builds the report rollups
//! with the projector's rebuild path, then measures each report's latency through its use
//! case. Run it against a scratch database: the other projectors are not caught up.

use std::time::{Duration, Instant};

use aggregates::call::{
    CallEvent, CallStatus, Direction, OpenedBy, RuntimeOrigin, SentimentLabel, SentimentScore,
    StatusCause, TerminalStatus,
};
use aggregates::establishment::{Establishment, EstablishmentCommand};
use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::DomainEvent;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::application::reports::{Interval, RangeQuery, Reports};
use crate::config::Config;
use crate::state::AppState;
use crate::store::{CommandContext, ExecOptions};

const CHUNK: usize = 20_000;

struct Rows {
    ids: Vec<String>,
    seqs: Vec<i64>,
    types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<Value>,
}

impl Rows {
    fn new() -> Self {
        Rows {
            ids: Vec::with_capacity(CHUNK + 8),
            seqs: Vec::with_capacity(CHUNK + 8),
            types: Vec::with_capacity(CHUNK + 8),
            versions: Vec::with_capacity(CHUNK + 8),
            payloads: Vec::with_capacity(CHUNK + 8),
        }
    }

    fn push(&mut self, id: &str, seq: i64, e: CallEvent) -> anyhow::Result<()> {
        self.ids.push(id.to_string());
        self.seqs.push(seq);
        self.types.push(e.event_type());
        self.versions.push(e.event_version());
        self.payloads.push(serde_json::to_value(&e)?);
        Ok(())
    }

    async fn flush(&mut self, pool: &PgPool, metadata: &Value) -> anyhow::Result<usize> {
        let n = self.ids.len();
        if n == 0 {
            return Ok(0);
        }
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                 payload, metadata)
             SELECT 'Call', i, s, t, v, p, $6
             FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::jsonb[])
                  AS u(i, s, t, v, p)",
        )
        .bind(&self.ids)
        .bind(&self.seqs)
        .bind(&self.types)
        .bind(&self.versions)
        .bind(&self.payloads)
        .bind(metadata)
        .execute(pool)
        .await?;
        *self = Rows::new();
        Ok(n)
    }
}

/// A deterministic spread of outcomes, agents, versions, durations and sentiments.
fn call_events(
    est: &str,
    i: u64,
    calls: u64,
    first: DateTime<Utc>,
    days: i64,
) -> anyhow::Result<(String, Vec<CallEvent>)> {
    let id = format!("call_bench{i:08}");
    let span = days * 86_400;
    let at = first + TimeDelta::seconds((i as i64 * span) / calls as i64);
    let inbound = !i.is_multiple_of(3);
    let agent = i % 4;
    let version = (i / 4) % 2;
    let outcome = i % 10;
    let mut events = vec![CallEvent::CallOpened {
        call_id: id.clone(),
        establishment_id: est.to_string(),
        direction: if inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        },
        provider: "twilio".into(),
        call_sid: None,
        from: "+14155550100".parse()?,
        to: "+14155550199".parse()?,
        agent_id: Some(format!("agt_bench{agent}")),
        agent_version_id: Some(format!("ver_bench{agent}_{version}")),
        status: if inbound {
            CallStatus::Ringing
        } else {
            CallStatus::Queued
        },
        opened_by: if inbound {
            OpenedBy::IncomingWebhook
        } else {
            OpenedBy::OutboundRequest
        },
        at,
    }];
    let initial = if inbound {
        CallStatus::Ringing
    } else {
        CallStatus::Queued
    };
    let change = |from, to, at| CallEvent::CallStatusChanged {
        from,
        to,
        cause: StatusCause::Runtime,
        at,
    };
    match outcome {
        0..=6 => {
            let duration = 15 + (i * 7919 % 600) as u32;
            let end = at + TimeDelta::seconds(duration as i64 + 5);
            events.push(change(
                initial,
                CallStatus::InProgress,
                at + TimeDelta::seconds(5),
            ));
            events.push(CallEvent::RuntimeCallEnded {
                origin: RuntimeOrigin {
                    runtime_id: "rt_bench".into(),
                    event_id: format!("evt_bench{i}"),
                    occurred_at: end,
                },
                ended_at: end,
                duration_seconds: Some(duration),
                final_status: TerminalStatus::Completed,
                hangup_by: None,
                segment_count: None,
            });
            events.push(change(CallStatus::InProgress, CallStatus::Completed, end));
            let (label, score) = match i % 3 {
                0 => (SentimentLabel::Positive, 0.6),
                1 => (SentimentLabel::Neutral, 0.0),
                _ => (SentimentLabel::Negative, -0.5),
            };
            events.push(CallEvent::SentimentComputed {
                label,
                score: SentimentScore::try_from(score)?,
                windows: Vec::new(),
                segments_considered: 10,
                computed_at: end,
            });
        }
        7 | 8 => events.push(change(
            initial,
            CallStatus::NoAnswer,
            at + TimeDelta::seconds(30),
        )),
        _ => events.push(change(
            initial,
            CallStatus::Failed,
            at + TimeDelta::seconds(2),
        )),
    }
    Ok((id, events))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub async fn reports(
    config: Config,
    calls: u64,
    days: i64,
    runs: u32,
    establishment: Option<String>,
) -> anyhow::Result<()> {
    let state = AppState::build(config).await?;
    let pool = state.pool.clone();
    let last_day = Utc::now().date_naive() - TimeDelta::days(1);
    let first_day = last_day - TimeDelta::days(days - 1);
    let est = match establishment {
        Some(est) => est,
        None => generate(&state, calls, days).await?,
    };
    measure(&pool, &est, first_day, last_day, days, runs).await
}

/// Writes the calls and builds the rollups; returns the establishment.
async fn generate(state: &AppState, calls: u64, days: i64) -> anyhow::Result<String> {
    let pool = state.pool.clone();
    let est = crate::ids::new_id("est");
    let ctx = CommandContext::system("bench").in_establishment(&est);
    state
        .bus
        .execute::<Establishment>(
            &est,
            EstablishmentCommand::Create {
                establishment_id: est.clone(),
                name: "bench reports".into(),
                timezone: "Europe/Paris".parse()?,
                locale: "fr".parse()?,
                created_by: "usr_bench".into(),
            },
            &ctx,
            ExecOptions::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The establishment's row (its time zone) is what the reports read of it.
    let identity = projections::identity::IdentityProjection::default();
    projections::runner::rebuild(&pool, &identity, 5_000, |_, _| {}).await?;

    // The 30 days end with the last full day before today (Paris), covering a DST change
    // when run in late March or October.
    let last_day = Utc::now().date_naive() - TimeDelta::days(1);
    let first_day = last_day - TimeDelta::days(days - 1);
    let tz: chrono_tz::Tz = "Europe/Paris".parse()?;
    let first = crate::application::reports::local_midnight(tz, first_day);
    let metadata = json!({"establishment_id": est, "actor_type": "system", "actor_id": "bench"});

    println!("generating {calls} calls over {days} days ({first_day} .. {last_day}, Europe/Paris) into the event store");
    let t0 = Instant::now();
    let mut rows = Rows::new();
    let mut events = 0usize;
    for i in 0..calls {
        let (id, evs) = call_events(&est, i, calls, first, days)?;
        for (s, e) in evs.into_iter().enumerate() {
            rows.push(&id, s as i64 + 1, e)?;
        }
        if rows.ids.len() >= CHUNK {
            events += rows.flush(&pool, &metadata).await?;
        }
        if (i + 1).is_multiple_of(100_000) {
            println!("  {} calls, {events} events, {:.0?}", i + 1, t0.elapsed());
        }
    }
    events += rows.flush(&pool, &metadata).await?;
    let generated = t0.elapsed();
    println!("generated {calls} calls = {events} events in {generated:.1?}");

    let t1 = Instant::now();
    let mut last_print = Instant::now();
    let projection = projections::reports::ReportsProjection;
    projections::runner::rebuild(&pool, &projection, 5_000, |done, total| {
        if last_print.elapsed() > Duration::from_secs(15) {
            println!("  rollups: {done}/{total} events");
            last_print = Instant::now();
        }
    })
    .await?;
    let built = t1.elapsed();
    let (rollups, facts) = projections::reports::queries::sizes(&pool).await?;
    println!(
        "built the rollups (projector rebuild path) in {built:.1?}: {rollups} rollup rows, {facts} call rows"
    );
    projections::reports::queries::analyze(&pool).await?;
    println!("establishment {est}");
    Ok(est)
}

async fn measure(
    pool: &PgPool,
    est: &str,
    first_day: chrono::NaiveDate,
    last_day: chrono::NaiveDate,
    days: i64,
    runs: u32,
) -> anyhow::Result<()> {
    let est = est.to_string();

    // Every report over the whole range, through its use case (no cache).
    let reports = Reports::new(pool.clone(), Duration::ZERO);
    let q = RangeQuery {
        range: None,
        from: Some(first_day.to_string()),
        to: Some(last_day.to_string()),
    };
    let now = Utc::now();
    let k = reports.kpis(&est, &q, now).await?;
    println!(
        "check: dashboard total {} calls, answered {}, missed {}, failed {}",
        k.current.calls.total,
        k.current.calls.answered,
        k.current.calls.missed,
        k.current.calls.failed
    );
    let names = [
        "GET /dashboard/kpis",
        "GET /reports/agent-performance?group_by=agent",
        "GET /reports/agent-performance?group_by=version",
        "GET /reports/calls?interval=day",
        "GET /reports/calls?interval=hour",
        "GET /establishments/{id}/billing",
    ];
    println!("{runs} runs each, range {first_day} .. {last_day} ({days} days):");
    println!("| report | p50 | p99 | max |");
    println!("|---|---|---|---|");
    for (n, name) in names.iter().enumerate() {
        let mut times = Vec::with_capacity(runs as usize);
        for _ in 0..runs {
            let t = Instant::now();
            match n {
                0 => drop(reports.kpis(&est, &q, now).await?),
                1 => drop(reports.agent_performance(&est, &q, false, now).await?),
                2 => drop(reports.agent_performance(&est, &q, true, now).await?),
                3 => drop(reports.calls(&est, &q, Interval::Day, now).await?),
                4 => drop(reports.calls(&est, &q, Interval::Hour, now).await?),
                _ => drop(reports.billing(&est, &q, now).await?),
            }
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "| `{name}` | {:.1} ms | {:.1} ms | {:.1} ms |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
