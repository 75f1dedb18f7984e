//! Rollups for reports and the dashboard (`rm_report_calls`, `rm_report_rollups`).
//!
//! Each call keeps one row of facts (`rm_report_calls`): its key (establishment, agent,
//! version, start) and what its figures derive from (status, answered, duration, sentiment,
//! tools, summary). A batch loads the facts of the calls it touches, folds their events in
//! order, and applies to the buckets the difference between the old contribution and the new
//! one, in the batch's transaction. A status callback after the bucket closed, a sentiment
//! computed an hour later, a version learnt late: each moves exactly the figures it changes,
//! and a rebuild (the same code over the whole log) gives the same rows (docs/reports.md).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use aggregates::call::{CallEvent, CallStatus, Requester, TwilioCallStatus};
use aggregates::campaign::rules::AttemptOutcome;
use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::{FromRow, PgConnection};

use crate::event::StoredEvent;
use crate::runner::Projection;

pub mod queries;

/// Width of the fine buckets: every time zone's offset is a multiple of 15 minutes, so every
/// local midnight and local hour starts on one of them.
pub const FINE_MINUTES: i64 = 15;
/// `grain` of the 15-minute buckets.
pub const GRAIN_FINE: i16 = 0;
/// `grain` of the UTC-day buckets.
pub const GRAIN_DAY: i16 = 1;
/// `grain` of the UTC-hour buckets (the partial days of a range, and calls over time when
/// every bucket of the answer starts on a UTC hour).
pub const GRAIN_HOUR: i16 = 2;
/// How many summed figures a rollup row has (the columns of [`Figures`]).
pub const FIGURES: usize = 24;

/// Lower bounds (seconds) of the handle-time histogram's bins: one second wide up to 20 s,
/// then each bound 10 % above the previous one (rounded down), up to 12 hours; the last bin
/// is open. A percentile is reported as the lower bound of its bin, so it is exact below 20 s
/// and at most 10 % (and less than one bin) below the true value above.
pub fn histogram_bounds() -> &'static [u32] {
    static BOUNDS: OnceLock<Vec<u32>> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut b = vec![0u32];
        while *b.last().expect("non-empty") < 12 * 3600 {
            let last = *b.last().expect("non-empty");
            b.push((last + 1).max(last * 11 / 10));
        }
        b
    })
}

/// The bin of a duration.
pub fn histogram_bin(seconds: i64) -> usize {
    let s = seconds.max(0).min(u32::MAX as i64) as u32;
    histogram_bounds().partition_point(|&b| b <= s) - 1
}

/// Nearest-rank percentile (`p` in (0, 1]) of a histogram: the lower bound of the bin holding
/// the `ceil(p·n)`-th value; `None` when empty.
pub fn histogram_percentile(histogram: &[i64], p: f64) -> Option<u32> {
    let n: i64 = histogram.iter().sum();
    if n <= 0 {
        return None;
    }
    let rank = ((p * n as f64).ceil() as i64).clamp(1, n);
    let mut seen = 0;
    for (i, c) in histogram.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return histogram_bounds().get(i).copied();
        }
    }
    None
}

/// The facts of one call that its figures derive from (a row of `rm_report_calls`).
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct CallFacts {
    pub call_id: String,
    pub establishment_id: String,
    pub agent_id: String,
    pub agent_version_id: String,
    pub started_at: DateTime<Utc>,
    pub direction: String,
    pub status: String,
    pub answered: bool,
    pub handoff: bool,
    pub duration_seconds: Option<i32>,
    pub duration_from_twilio: bool,
    pub sentiment_label: Option<String>,
    pub sentiment_micro: Option<i64>,
    pub tool_calls: i32,
    pub tool_errors: i32,
    pub summarised: bool,
    /// A campaign placed the call.
    pub campaign: bool,
    /// AMD's answer: the async callback's, else the first status callback's.
    pub answered_by: Option<String>,
    /// The runtime reported `call_started` (the agent connected).
    pub runtime_started: bool,
}

/// The summed figures of a bucket (or of any set of buckets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub calls: i64,
    pub inbound: i64,
    pub outbound: i64,
    pub answered: i64,
    pub missed: i64,
    pub failed: i64,
    pub handoffs: i64,
    pub handled: i64,
    pub handle_seconds: i64,
    pub timed: i64,
    pub duration_seconds: i64,
    pub positive: i64,
    pub neutral: i64,
    pub negative: i64,
    pub sentiment_micro: i64,
    pub tool_calls: i64,
    pub tool_errors: i64,
    pub summarised: i64,
    pub inbound_minutes: i64,
    pub outbound_minutes: i64,
    pub dialled: i64,
    pub human_answered: i64,
    pub machine_answered: i64,
    pub abandoned: i64,
}

impl Figures {
    pub(crate) fn fields(&mut self) -> [&mut i64; FIGURES] {
        [
            &mut self.calls,
            &mut self.inbound,
            &mut self.outbound,
            &mut self.answered,
            &mut self.missed,
            &mut self.failed,
            &mut self.handoffs,
            &mut self.handled,
            &mut self.handle_seconds,
            &mut self.timed,
            &mut self.duration_seconds,
            &mut self.positive,
            &mut self.neutral,
            &mut self.negative,
            &mut self.sentiment_micro,
            &mut self.tool_calls,
            &mut self.tool_errors,
            &mut self.summarised,
            &mut self.inbound_minutes,
            &mut self.outbound_minutes,
            &mut self.dialled,
            &mut self.human_answered,
            &mut self.machine_answered,
            &mut self.abandoned,
        ]
    }

    /// `self += sign · other`.
    pub fn add(&mut self, other: &Figures, sign: i64) {
        let mut o = other.clone();
        for (a, b) in self.fields().into_iter().zip(o.fields()) {
            *a += sign * *b;
        }
    }

    /// Calls with a sentiment.
    pub fn scored(&self) -> i64 {
        self.positive + self.neutral + self.negative
    }
}

impl CallFacts {
    fn opened(call_id: &str, e: &CallEvent) -> Option<CallFacts> {
        let CallEvent::CallOpened {
            establishment_id,
            direction,
            agent_id,
            agent_version_id,
            status,
            at,
            ..
        } = e
        else {
            return None;
        };
        Some(CallFacts {
            call_id: call_id.to_string(),
            establishment_id: establishment_id.clone(),
            agent_id: agent_id.clone().unwrap_or_default(),
            agent_version_id: agent_version_id.clone().unwrap_or_default(),
            started_at: *at,
            direction: direction.as_str().to_string(),
            status: status.as_str().to_string(),
            answered: status.is_answered(),
            handoff: *status == CallStatus::HandoffCompleted,
            duration_seconds: None,
            duration_from_twilio: false,
            sentiment_label: None,
            sentiment_micro: None,
            tool_calls: 0,
            tool_errors: 0,
            summarised: false,
            campaign: false,
            answered_by: None,
            runtime_started: false,
        })
    }

    /// Folds one later event of the call into its facts.
    fn apply(&mut self, e: CallEvent) {
        use CallEvent as E;
        match e {
            E::InboundCallRouted {
                decision:
                    aggregates::call::RoutingDecision::Accepted {
                        agent_id,
                        agent_version_id,
                        ..
                    },
                ..
            } => {
                self.agent_id = agent_id;
                self.agent_version_id = agent_version_id;
            }
            E::OutboundCallQueued {
                agent_id,
                requested_by,
                ..
            } => {
                self.agent_id = agent_id;
                self.campaign = matches!(requested_by, Requester::Campaign { .. });
            }
            E::AnsweredByDetected { answered_by, .. } => {
                self.answered_by = Some(answered_by.as_str().to_string())
            }
            E::RuntimeCallStarted {
                agent_id,
                agent_version_id,
                ..
            } => {
                self.runtime_started = true;
                if self.agent_id.is_empty() {
                    self.agent_id = agent_id.unwrap_or_default();
                }
                if self.agent_version_id.is_empty() {
                    self.agent_version_id = agent_version_id.unwrap_or_default();
                }
            }
            E::CallStatusChanged { to, .. } => {
                self.status = to.as_str().to_string();
                self.answered |= to.is_answered();
                self.handoff |= to == CallStatus::HandoffCompleted;
            }
            E::TwilioStatusReceived { callback } => {
                if let Some(d) = callback.call_duration {
                    self.duration_seconds = Some(d.min(i32::MAX as u32) as i32);
                    self.duration_from_twilio = true;
                }
                // A late `in-progress` (after a terminal status) still says it was answered.
                self.answered |= callback.status == TwilioCallStatus::InProgress;
                // The async AMD callback's answer wins over the status callbacks' (as rm_calls).
                if self.answered_by.is_none() {
                    self.answered_by = callback.answered_by.map(|a| a.as_str().to_string());
                }
            }
            E::RuntimeCallEnded {
                duration_seconds: Some(d),
                ..
            } if !self.duration_from_twilio => {
                self.duration_seconds = Some(d.min(i32::MAX as u32) as i32)
            }
            E::SentimentComputed { label, score, .. } => {
                self.sentiment_label = Some(label.as_str().to_string());
                self.sentiment_micro = Some((score.value() * 1e6).round() as i64);
            }
            E::SummaryGenerated { .. } => self.summarised = true,
            E::ToolCalled { .. } => self.tool_calls += 1,
            E::ToolResultReceived { error, .. } if !error.is_null() => self.tool_errors += 1,
            _ => {}
        }
    }

    fn terminal(&self) -> bool {
        self.status
            .parse::<CallStatus>()
            .is_ok_and(|s| s.is_terminal())
    }

    /// What this call adds to its buckets (definitions: docs/reports.md), and the histogram
    /// bin of its handle time.
    pub fn contribution(&self) -> (Figures, Option<usize>) {
        let b = |x: bool| x as i64;
        let inbound = self.direction == "inbound";
        let ended_unanswered = self.terminal() && !self.answered;
        let failed = ended_unanswered && self.status == "failed";
        let duration = self.duration_seconds.map(|d| d as i64);
        let handled = self.answered && duration.is_some();
        let minutes = duration.map(|d| (d + 59) / 60).unwrap_or(0);
        let label = self.sentiment_label.as_deref();
        // The dialer's own classification of a finished attempt (docs/campaigns.md).
        let outcome =
            AttemptOutcome::of_call(&self.status, self.answered_by.as_deref(), !self.terminal());
        let human = self.campaign && outcome == AttemptOutcome::Human;
        let machine = self.campaign && outcome == AttemptOutcome::Machine;
        let f = Figures {
            calls: 1,
            inbound: b(inbound),
            outbound: b(!inbound),
            answered: b(self.answered),
            missed: b(ended_unanswered && !failed),
            failed: b(failed),
            handoffs: b(self.handoff),
            handled: b(handled),
            handle_seconds: if handled { duration.unwrap_or(0) } else { 0 },
            timed: b(duration.is_some()),
            duration_seconds: duration.unwrap_or(0),
            positive: b(label == Some("positive")),
            neutral: b(label == Some("neutral")),
            negative: b(label == Some("negative")),
            sentiment_micro: self.sentiment_micro.unwrap_or(0),
            tool_calls: self.tool_calls as i64,
            tool_errors: self.tool_errors as i64,
            summarised: b(self.summarised),
            inbound_minutes: if inbound { minutes } else { 0 },
            outbound_minutes: if inbound { 0 } else { minutes },
            dialled: b(self.campaign),
            human_answered: b(human),
            machine_answered: b(machine),
            abandoned: b(human && !self.runtime_started),
        };
        let bin = handled.then(|| histogram_bin(duration.unwrap_or(0)));
        (f, bin)
    }
}

/// Key of a rollup row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    establishment_id: String,
    grain: i16,
    bucket_start: DateTime<Utc>,
    agent_id: String,
    agent_version_id: String,
}

/// Start of the 15-minute bucket of an instant.
pub fn fine_bucket(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(FINE_MINUTES))
        .unwrap_or(at)
}

/// Start of the UTC hour of an instant.
pub fn hour_bucket(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

/// Start of the UTC day of an instant.
pub fn day_bucket(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::days(1)).unwrap_or(at)
}

fn keys(f: &CallFacts) -> [Key; 3] {
    let key = |grain, bucket_start| Key {
        establishment_id: f.establishment_id.clone(),
        grain,
        bucket_start,
        agent_id: f.agent_id.clone(),
        agent_version_id: f.agent_version_id.clone(),
    };
    [
        key(GRAIN_FINE, fine_bucket(f.started_at)),
        key(GRAIN_DAY, day_bucket(f.started_at)),
        key(GRAIN_HOUR, hour_bucket(f.started_at)),
    ]
}

#[derive(Default)]
struct Delta {
    figures: Figures,
    histogram: BTreeMap<usize, i32>,
}

/// Whether an event can change a call's facts (the others are skipped undecoded).
fn relevant(event_type: &str) -> bool {
    matches!(
        event_type,
        "CallOpened"
            | "InboundCallRouted"
            | "OutboundCallQueued"
            | "RuntimeCallStarted"
            | "AnsweredByDetected"
            | "CallStatusChanged"
            | "TwilioStatusReceived"
            | "RuntimeCallEnded"
            | "SentimentComputed"
            | "SummaryGenerated"
            | "ToolCalled"
            | "ToolResultReceived"
    )
}

pub struct ReportsProjection;

#[async_trait]
impl Projection for ReportsProjection {
    fn name(&self) -> &'static str {
        "reports"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Call"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_report_calls", "rm_report_rollups"]
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let events: Vec<&StoredEvent> = events.iter().filter(|e| relevant(&e.event_type)).collect();
        if events.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = events
            .iter()
            .map(|e| e.aggregate_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let before: BTreeMap<String, CallFacts> =
            sqlx::query_as::<_, CallFacts>("SELECT * FROM rm_report_calls WHERE call_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|f| (f.call_id.clone(), f))
                .collect();
        let mut after = before.clone();
        for e in events {
            let event: CallEvent = e.decode()?;
            match after.get_mut(&e.aggregate_id) {
                Some(facts) => facts.apply(event),
                // A call's first event opens its row; events of a call whose opening is
                // missing (set aside) are ignored, as every read model of it is degraded.
                None => {
                    if let Some(f) = CallFacts::opened(&e.aggregate_id, &event) {
                        after.insert(e.aggregate_id.clone(), f);
                    }
                }
            }
        }
        let mut deltas: BTreeMap<Key, Delta> = BTreeMap::new();
        let mut changed: Vec<&CallFacts> = Vec::new();
        for (id, new) in &after {
            let old = before.get(id);
            if old == Some(new) {
                continue;
            }
            changed.push(new);
            for (facts, sign) in old.map(|o| (o, -1)).into_iter().chain([(new, 1)]) {
                let (figures, bin) = facts.contribution();
                for key in keys(facts) {
                    let d = deltas.entry(key).or_default();
                    d.figures.add(&figures, sign);
                    if let Some(bin) = bin {
                        *d.histogram.entry(bin).or_default() += sign as i32;
                    }
                }
            }
        }
        write_facts(tx, &changed).await?;
        write_deltas(tx, deltas).await
    }
}

async fn write_facts(tx: &mut PgConnection, facts: &[&CallFacts]) -> anyhow::Result<()> {
    if facts.is_empty() {
        return Ok(());
    }
    macro_rules! col {
        ($f:ident) => {
            facts.iter().map(|x| x.$f.clone()).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO rm_report_calls AS c (call_id, establishment_id, agent_id, agent_version_id,
             started_at, direction, status, answered, handoff, duration_seconds,
             duration_from_twilio, sentiment_label, sentiment_micro, tool_calls, tool_errors,
             summarised, campaign, answered_by, runtime_started)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
             $6::text[], $7::text[], $8::bool[], $9::bool[], $10::int4[], $11::bool[], $12::text[],
             $13::int8[], $14::int4[], $15::int4[], $16::bool[], $17::bool[], $18::text[],
             $19::bool[])
         ON CONFLICT (call_id) DO UPDATE SET agent_id = EXCLUDED.agent_id,
             agent_version_id = EXCLUDED.agent_version_id, status = EXCLUDED.status,
             answered = EXCLUDED.answered, handoff = EXCLUDED.handoff,
             duration_seconds = EXCLUDED.duration_seconds,
             duration_from_twilio = EXCLUDED.duration_from_twilio,
             sentiment_label = EXCLUDED.sentiment_label, sentiment_micro = EXCLUDED.sentiment_micro,
             tool_calls = EXCLUDED.tool_calls, tool_errors = EXCLUDED.tool_errors,
             summarised = EXCLUDED.summarised, campaign = EXCLUDED.campaign,
             answered_by = EXCLUDED.answered_by, runtime_started = EXCLUDED.runtime_started",
    )
    .bind(col!(call_id))
    .bind(col!(establishment_id))
    .bind(col!(agent_id))
    .bind(col!(agent_version_id))
    .bind(col!(started_at))
    .bind(col!(direction))
    .bind(col!(status))
    .bind(col!(answered))
    .bind(col!(handoff))
    .bind(col!(duration_seconds))
    .bind(col!(duration_from_twilio))
    .bind(col!(sentiment_label))
    .bind(col!(sentiment_micro))
    .bind(col!(tool_calls))
    .bind(col!(tool_errors))
    .bind(col!(summarised))
    .bind(col!(campaign))
    .bind(col!(answered_by))
    .bind(col!(runtime_started))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn write_deltas(tx: &mut PgConnection, deltas: BTreeMap<Key, Delta>) -> anyhow::Result<()> {
    let deltas: Vec<(Key, Delta)> = deltas
        .into_iter()
        .filter(|(_, d)| d.figures != Figures::default() || d.histogram.values().any(|&c| c != 0))
        .collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let bins = histogram_bounds().len();
    let mut cols: Vec<Vec<i64>> = (0..FIGURES)
        .map(|_| Vec::with_capacity(deltas.len()))
        .collect();
    let mut histograms = Vec::with_capacity(deltas.len());
    for (_, d) in &deltas {
        let mut f = d.figures.clone();
        for (col, v) in cols.iter_mut().zip(f.fields()) {
            col.push(*v);
        }
        let mut h = vec![0i32; bins];
        for (&bin, &c) in &d.histogram {
            h[bin] += c;
        }
        histograms.push(format!(
            "{{{}}}",
            h.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    let est: Vec<&str> = deltas
        .iter()
        .map(|(k, _)| k.establishment_id.as_str())
        .collect();
    let grain: Vec<i16> = deltas.iter().map(|(k, _)| k.grain).collect();
    let start: Vec<DateTime<Utc>> = deltas.iter().map(|(k, _)| k.bucket_start).collect();
    let agent: Vec<&str> = deltas.iter().map(|(k, _)| k.agent_id.as_str()).collect();
    let version: Vec<&str> = deltas
        .iter()
        .map(|(k, _)| k.agent_version_id.as_str())
        .collect();
    const SUMS: &str = "calls, inbound, outbound, answered, missed, failed, handoffs, handled,
        handle_seconds, timed, duration_seconds, positive, neutral, negative, sentiment_micro,
        tool_calls, tool_errors, summarised, inbound_minutes, outbound_minutes, dialled,
        human_answered, machine_answered, abandoned";
    let add: String = SUMS
        .split(',')
        .map(|c| c.trim())
        .map(|c| format!("{c} = r.{c} + EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let arrays: String = (6..6 + FIGURES)
        .map(|i| format!("${i}::int8[]"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO rm_report_rollups AS r (establishment_id, grain, bucket_start, agent_id,
             agent_version_id, {SUMS}, histogram)
         SELECT e, g, s, a, v, {cols}, h::int4[]
         FROM UNNEST($1::text[], $2::int2[], $3::timestamptz[], $4::text[], $5::text[], {arrays},
                     ${h}::text[])
              AS u(e, g, s, a, v, {cols}, h)
         ON CONFLICT (establishment_id, grain, bucket_start, agent_id, agent_version_id)
         DO UPDATE SET {add}, histogram = rm_histogram_add(r.histogram, EXCLUDED.histogram)",
        h = 6 + FIGURES,
        cols = SUMS
            .split(',')
            .map(|c| format!("c_{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let mut q = sqlx::query(&sql)
        .bind(&est)
        .bind(&grain)
        .bind(&start)
        .bind(&agent)
        .bind(&version);
    for col in &cols {
        q = q.bind(col);
    }
    q.bind(&histograms).execute(&mut *tx).await?;
    // A bucket no call counts in any more (its calls moved to another agent or version) goes.
    sqlx::query(
        "DELETE FROM rm_report_rollups r
         USING UNNEST($1::text[], $2::int2[], $3::timestamptz[], $4::text[], $5::text[])
               AS u(e, g, s, a, v)
         WHERE r.establishment_id = u.e AND r.grain = u.g AND r.bucket_start = u.s
           AND r.agent_id = u.a AND r.agent_version_id = u.v AND r.calls = 0",
    )
    .bind(&est)
    .bind(&grain)
    .bind(&start)
    .bind(&agent)
    .bind(&version)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
