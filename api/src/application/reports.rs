//! Use cases of reports (prd §6, §7.7, D.3): dashboard KPIs with the previous period, agent
//! performance, calls over time, and the billing stub. Ranges are days of the establishment's
//! time zone; every figure comes from the rollups of `projections::reports` (definitions:
//! docs/reports.md). Dashboard answers are cached in process for a few seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use projections::reports::queries;
use projections::reports::{histogram_percentile, hour_bucket, Figures};
use serde::Serialize;
use sqlx::PgPool;

use super::{Invalid, Unexpected};

/// Longest range a report covers, in days.
pub const MAX_RANGE_DAYS: i64 = 400;
/// Most dashboard answers kept in the cache.
const CACHE_ENTRIES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReportsError {
    #[error("no such establishment")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

impl From<sqlx::Error> for ReportsError {
    fn from(e: sqlx::Error) -> Self {
        ReportsError::Unexpected(e.into())
    }
}

/// The range as asked: a name (`today`, `yesterday`, `7d`, `30d`, `mtd`) or two dates.
#[derive(Debug, Clone, Default)]
pub struct RangeQuery {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Inclusive local days and the UTC instants `[start, end)` they span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub tz: Tz,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The first instant of a local day (a day that starts in a DST gap starts at its first
/// existing quarter hour).
pub fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let mut t = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    for _ in 0..16 {
        if let Some(d) = tz.from_local_datetime(&t).earliest() {
            return d.with_timezone(&Utc);
        }
        t += TimeDelta::minutes(15);
    }
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

impl Period {
    pub fn new(tz: Tz, from: NaiveDate, to: NaiveDate) -> Period {
        Period {
            from,
            to,
            tz,
            start: local_midnight(tz, from),
            end: local_midnight(tz, to + TimeDelta::days(1)),
        }
    }

    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days() + 1
    }

    /// The period of equal length just before this one.
    pub fn previous(&self) -> Period {
        let to = self.from - TimeDelta::days(1);
        Period::new(self.tz, to - TimeDelta::days(self.days() - 1), to)
    }
}

fn date(field: &str, s: &str) -> Result<NaiveDate, Invalid> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
        .ok_or_else(|| Invalid::new(field, "must be a date YYYY-MM-DD"))?;
    if !(2000..=2100).contains(&d.year()) {
        return Err(Invalid::new(field, "must be between 2000 and 2100"));
    }
    Ok(d)
}

/// Resolves the asked range in the establishment's zone as of `now` (`default` when none).
pub fn period(
    q: &RangeQuery,
    tz: Tz,
    now: DateTime<Utc>,
    default: &str,
) -> Result<Period, Invalid> {
    let today = now.with_timezone(&tz).date_naive();
    let named = |name: &str| -> Result<Period, Invalid> {
        let (from, to) = match name {
            "today" => (today, today),
            "yesterday" => (today - TimeDelta::days(1), today - TimeDelta::days(1)),
            "7d" => (today - TimeDelta::days(6), today),
            "30d" => (today - TimeDelta::days(29), today),
            "mtd" => (today.with_day(1).unwrap_or(today), today),
            _ => {
                return Err(Invalid::new(
                    "range",
                    "must be one of today, yesterday, 7d, 30d, mtd",
                ))
            }
        };
        Ok(Period::new(tz, from, to))
    };
    match (&q.range, &q.from, &q.to) {
        (Some(r), None, None) => named(r),
        (None, None, None) => named(default),
        (None, Some(f), Some(t)) => {
            let (from, to) = (date("from", f)?, date("to", t)?);
            if to < from {
                return Err(Invalid::new("to", "must not be before from"));
            }
            if (to - from).num_days() + 1 > MAX_RANGE_DAYS {
                return Err(Invalid::new(
                    "to",
                    format!("a range covers at most {MAX_RANGE_DAYS} days"),
                ));
            }
            Ok(Period::new(tz, from, to))
        }
        (None, _, _) => Err(Invalid::new("from", "from and to go together")),
        (Some(_), _, _) => Err(Invalid::new("range", "give either range, or from and to")),
    }
}

fn ratio(n: i64, d: i64) -> Option<f64> {
    (d > 0).then(|| (n as f64 / d as f64 * 10_000.0).round() / 10_000.0)
}

fn average(n: i64, d: i64) -> Option<f64> {
    (d > 0).then(|| (n as f64 / d as f64 * 100.0).round() / 100.0)
}

/// Mean sentiment on the API's scale: 0 (negative) to 1 (positive), 0.5 neutral.
fn sentiment_avg(f: &Figures) -> Option<f64> {
    let n = f.scored();
    (n > 0).then(|| {
        let polarity = f.sentiment_micro as f64 / 1e6 / n as f64;
        (((polarity + 1.0) / 2.0) * 100.0).round() / 100.0
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct RangeView {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub timezone: String,
}

impl From<&Period> for RangeView {
    fn from(p: &Period) -> Self {
        RangeView {
            from: p.from,
            to: p.to,
            timezone: p.tz.name().to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CallCounts {
    pub total: i64,
    pub inbound: i64,
    pub outbound: i64,
    pub answered: i64,
    pub missed: i64,
    pub failed: i64,
    /// Calls in progress now (the current period only).
    pub active_now: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SentimentCounts {
    pub positive: i64,
    pub neutral: i64,
    pub negative: i64,
    pub avg_score: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ToolCounts {
    pub calls: i64,
    pub errors: i64,
}

/// Campaign figures (docs/reports.md): calls a campaign placed, how the finished ones were
/// answered, and abandoned / human-answered.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignCounts {
    pub dialled: i64,
    pub human_answered: i64,
    pub machine_answered: i64,
    pub abandon_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KpiFigures {
    pub range: RangeView,
    pub calls: CallCounts,
    pub answer_rate: Option<f64>,
    pub avg_handle_seconds: Option<f64>,
    pub handoff_rate: Option<f64>,
    pub sentiment: SentimentCounts,
    pub tools: ToolCounts,
    pub campaigns: CampaignCounts,
}

#[derive(Debug, Clone, Serialize)]
pub struct Kpis {
    #[serde(flatten)]
    pub current: KpiFigures,
    pub previous: KpiFigures,
}

fn kpi_figures(p: &Period, f: &Figures, active_now: Option<i64>) -> KpiFigures {
    KpiFigures {
        range: p.into(),
        calls: CallCounts {
            total: f.calls,
            inbound: f.inbound,
            outbound: f.outbound,
            answered: f.answered,
            missed: f.missed,
            failed: f.failed,
            active_now,
        },
        answer_rate: ratio(f.answered, f.calls),
        avg_handle_seconds: average(f.handle_seconds, f.handled),
        handoff_rate: ratio(f.handoffs, f.calls),
        sentiment: SentimentCounts {
            positive: f.positive,
            neutral: f.neutral,
            negative: f.negative,
            avg_score: sentiment_avg(f),
        },
        tools: ToolCounts {
            calls: f.tool_calls,
            errors: f.tool_errors,
        },
        campaigns: CampaignCounts {
            dialled: f.dialled,
            human_answered: f.human_answered,
            machine_answered: f.machine_answered,
            abandon_rate: ratio(f.abandoned, f.human_answered),
        },
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentItem {
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_version_id: Option<String>,
    pub calls: i64,
    pub answered: i64,
    pub answer_rate: Option<f64>,
    pub avg_handle_seconds: Option<f64>,
    pub p50_duration_seconds: Option<u32>,
    pub p90_duration_seconds: Option<u32>,
    pub handoff_rate: Option<f64>,
    pub sentiment_avg: Option<f64>,
    pub positive_share: Option<f64>,
    pub negative_share: Option<f64>,
    pub tool_calls: i64,
    pub tool_error_rate: Option<f64>,
    pub summary_coverage: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentPerformance {
    pub range: RangeView,
    pub group_by: String,
    pub items: Vec<AgentItem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeriesItem {
    /// Local start of the bucket, with its UTC offset.
    pub bucket_start: String,
    pub calls: i64,
    pub inbound: i64,
    pub outbound: i64,
    pub answered: i64,
    pub missed: i64,
    pub avg_duration_seconds: Option<f64>,
    pub handoffs: i64,
    pub sentiment_avg: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallSeries {
    pub range: RangeView,
    pub interval: String,
    pub items: Vec<SeriesItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BillingPeriod {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub calls: i64,
    pub call_minutes: i64,
    pub inbound_minutes: i64,
    pub outbound_minutes: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Billing {
    pub plan: String,
    pub period: BillingPeriod,
    pub usage: Usage,
    pub billing_enabled: bool,
}

type CacheKey = (String, NaiveDate, NaiveDate);

pub struct Reports {
    pub pool: PgPool,
    /// How long a dashboard answer is served from the cache (zero: never cached).
    pub cache_ttl: Duration,
    cache: Mutex<HashMap<CacheKey, (Instant, Kpis)>>,
}

impl Reports {
    pub fn new(pool: PgPool, cache_ttl: Duration) -> Self {
        Self {
            pool,
            cache_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn zone(&self, establishment_id: &str) -> Result<Tz, ReportsError> {
        let name = queries::timezone(&self.pool, establishment_id)
            .await?
            .ok_or(ReportsError::NotFound)?;
        Ok(name.parse::<Tz>().unwrap_or(Tz::UTC))
    }

    /// `GET /dashboard/kpis`: the figures of the period and of the one before it.
    pub async fn kpis(
        &self,
        establishment_id: &str,
        q: &RangeQuery,
        now: DateTime<Utc>,
    ) -> Result<Kpis, ReportsError> {
        let tz = self.zone(establishment_id).await?;
        let p = period(q, tz, now, "today")?;
        let key = (establishment_id.to_string(), p.from, p.to);
        if !self.cache_ttl.is_zero() {
            let cache = self.cache.lock().expect("cache lock");
            if let Some((at, k)) = cache.get(&key) {
                if at.elapsed() < self.cache_ttl {
                    return Ok(k.clone());
                }
            }
        }
        let prev = p.previous();
        let (f, pf, active) = tokio::try_join!(
            queries::totals(&self.pool, establishment_id, p.start, p.end),
            queries::totals(&self.pool, establishment_id, prev.start, prev.end),
            queries::active_now(&self.pool, establishment_id),
        )?;
        let kpis = Kpis {
            current: kpi_figures(&p, &f, Some(active)),
            previous: kpi_figures(&prev, &pf, None),
        };
        if !self.cache_ttl.is_zero() {
            let mut cache = self.cache.lock().expect("cache lock");
            if cache.len() >= CACHE_ENTRIES {
                let ttl = self.cache_ttl;
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(key, (Instant::now(), kpis.clone()));
        }
        Ok(kpis)
    }

    /// `GET /reports/agent-performance`.
    pub async fn agent_performance(
        &self,
        establishment_id: &str,
        q: &RangeQuery,
        by_version: bool,
        now: DateTime<Utc>,
    ) -> Result<AgentPerformance, ReportsError> {
        let tz = self.zone(establishment_id).await?;
        let p = period(q, tz, now, "7d")?;
        let rows =
            queries::by_agent(&self.pool, establishment_id, p.start, p.end, by_version).await?;
        let items = rows
            .into_iter()
            .map(|r| {
                let f = &r.figures;
                AgentItem {
                    agent_id: Some(r.agent_id).filter(|a| !a.is_empty()),
                    agent_name: r.agent_name,
                    agent_version_id: r
                        .agent_version_id
                        .map(|v| Some(v).filter(|v| !v.is_empty()))
                        .unwrap_or(None),
                    calls: f.calls,
                    answered: f.answered,
                    answer_rate: ratio(f.answered, f.calls),
                    avg_handle_seconds: average(f.handle_seconds, f.handled),
                    p50_duration_seconds: histogram_percentile(&r.histogram, 0.5),
                    p90_duration_seconds: histogram_percentile(&r.histogram, 0.9),
                    handoff_rate: ratio(f.handoffs, f.calls),
                    sentiment_avg: sentiment_avg(f),
                    positive_share: ratio(f.positive, f.scored()),
                    negative_share: ratio(f.negative, f.scored()),
                    tool_calls: f.tool_calls,
                    tool_error_rate: ratio(f.tool_errors, f.tool_calls),
                    summary_coverage: ratio(f.summarised, f.calls),
                }
            })
            .collect();
        Ok(AgentPerformance {
            range: (&p).into(),
            group_by: if by_version { "version" } else { "agent" }.into(),
            items,
        })
    }

    /// `GET /reports/calls`: one item per local hour or day of the range, empty ones included.
    pub async fn calls(
        &self,
        establishment_id: &str,
        q: &RangeQuery,
        interval: Interval,
        now: DateTime<Utc>,
    ) -> Result<CallSeries, ReportsError> {
        let tz = self.zone(establishment_id).await?;
        let p = period(q, tz, now, "7d")?;
        let mut starts = Vec::new();
        match interval {
            Interval::Day => {
                let mut d = p.from;
                while d <= p.to {
                    starts.push(local_midnight(tz, d));
                    d += TimeDelta::days(1);
                }
            }
            Interval::Hour => {
                let mut t = p.start;
                while t < p.end {
                    starts.push(t);
                    t += TimeDelta::hours(1);
                }
            }
        }
        // UTC-hour rows fold exactly when every bucket of the answer starts on a UTC hour
        // (zones with whole-hour offsets); otherwise the 15-minute rows.
        let hourly = starts.iter().chain([&p.end]).all(|t| hour_bucket(*t) == *t);
        let fine = queries::series(&self.pool, establishment_id, p.start, p.end, hourly).await?;
        let mut sums = vec![Figures::default(); starts.len()];
        for (at, f) in &fine {
            let i = starts.partition_point(|s| s <= at);
            if i > 0 {
                sums[i - 1].add(f, 1);
            }
        }
        let items = starts
            .iter()
            .zip(sums)
            .map(|(s, f)| SeriesItem {
                bucket_start: s.with_timezone(&tz).to_rfc3339(),
                calls: f.calls,
                inbound: f.inbound,
                outbound: f.outbound,
                answered: f.answered,
                missed: f.missed,
                avg_duration_seconds: average(f.duration_seconds, f.timed),
                handoffs: f.handoffs,
                sentiment_avg: sentiment_avg(&f),
            })
            .collect();
        Ok(CallSeries {
            range: (&p).into(),
            interval: match interval {
                Interval::Hour => "hour",
                Interval::Day => "day",
            }
            .into(),
            items,
        })
    }

    /// `GET /establishments/{id}/billing`: usage of the period (default: month to date).
    pub async fn billing(
        &self,
        establishment_id: &str,
        q: &RangeQuery,
        now: DateTime<Utc>,
    ) -> Result<Billing, ReportsError> {
        let tz = self.zone(establishment_id).await?;
        let p = period(q, tz, now, "mtd")?;
        let f = queries::totals(&self.pool, establishment_id, p.start, p.end).await?;
        Ok(Billing {
            plan: "stub".into(),
            period: BillingPeriod {
                start: p.from,
                end: p.to,
            },
            usage: Usage {
                calls: f.calls,
                call_minutes: f.inbound_minutes + f.outbound_minutes,
                inbound_minutes: f.inbound_minutes,
                outbound_minutes: f.outbound_minutes,
            },
            billing_enabled: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_across_a_dst_change_has_23_or_25_hours() {
        let tz: Tz = "Europe/Paris".parse().unwrap();
        let spring = Period::new(
            tz,
            NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(),
            NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(),
        );
        assert_eq!((spring.end - spring.start).num_hours(), 23);
        let autumn = Period::new(
            tz,
            NaiveDate::from_ymd_opt(2026, 10, 25).unwrap(),
            NaiveDate::from_ymd_opt(2026, 10, 25).unwrap(),
        );
        assert_eq!((autumn.end - autumn.start).num_hours(), 25);
    }

    #[test]
    fn a_range_over_400_days_is_refused() {
        let q = RangeQuery {
            range: None,
            from: Some("2025-01-01".into()),
            to: Some("2026-02-05".into()),
        };
        assert_eq!(
            period(&q, Tz::UTC, Utc::now(), "7d").unwrap_err().field,
            "to"
        );
    }
}
