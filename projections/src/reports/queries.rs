//! Typed reads of the report rollups. A range `[start, end)` (local midnights, so on the
//! 15-minute grid) is read as the whole UTC days inside it (grain 1), the whole UTC hours of
//! its two partial days (grain 2), and the 15-minute buckets of its partial hours (grain 0,
//! only for zones whose offset is not a whole number of hours): at most 30 + 2·24 + 2·4 rows
//! per agent and version for a 30-day range, whatever the number of calls.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::{
    day_bucket, histogram_bounds, hour_bucket, Figures, FIGURES, GRAIN_DAY, GRAIN_FINE, GRAIN_HOUR,
};

const SUMS: [&str; FIGURES] = [
    "calls",
    "inbound",
    "outbound",
    "answered",
    "missed",
    "failed",
    "handoffs",
    "handled",
    "handle_seconds",
    "timed",
    "duration_seconds",
    "positive",
    "neutral",
    "negative",
    "sentiment_micro",
    "tool_calls",
    "tool_errors",
    "summarised",
    "inbound_minutes",
    "outbound_minutes",
    "dialled",
    "human_answered",
    "machine_answered",
    "abandoned",
];

fn sums_sql() -> String {
    SUMS.iter()
        .map(|c| format!("coalesce(sum({c}), 0)::int8 AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn figures(row: &PgRow) -> sqlx::Result<Figures> {
    let mut f = Figures::default();
    for (name, field) in SUMS.iter().zip(f.fields()) {
        *field = row.try_get::<i64, _>(*name)?;
    }
    Ok(f)
}

/// `[start, end)` cut into five spans of one grain each (an empty span has start = end):
/// 15-minute buckets up to the first UTC hour, UTC hours up to the first UTC day, UTC days,
/// UTC hours, 15-minute buckets. Each bucket of the range is in exactly one span.
type Span = (i16, DateTime<Utc>, DateTime<Utc>);

fn ceil_to(
    t: DateTime<Utc>,
    floor: fn(DateTime<Utc>) -> DateTime<Utc>,
    unit: TimeDelta,
) -> DateTime<Utc> {
    let f = floor(t);
    if f == t {
        t
    } else {
        f + unit
    }
}

fn spans(start: DateTime<Utc>, end: DateTime<Utc>) -> [Span; 5] {
    let end = end.max(start);
    let h0 = ceil_to(start, hour_bucket, TimeDelta::hours(1)).min(end);
    let h1 = hour_bucket(end).max(h0);
    let d0 = ceil_to(h0, day_bucket, TimeDelta::days(1)).min(h1);
    let d1 = day_bucket(h1).max(d0);
    [
        (GRAIN_FINE, start, h0),
        (GRAIN_HOUR, h0, d0),
        (GRAIN_DAY, d0, d1),
        (GRAIN_HOUR, d1, h1),
        (GRAIN_FINE, h1, end),
    ]
}

/// Rows of `[start, end)` of an establishment: $1 establishment, then per span its grain,
/// start and end ($2..$16).
const RANGE_WHERE: &str = "establishment_id = $1 AND (
       (grain = $2 AND bucket_start >= $3 AND bucket_start < $4)
    OR (grain = $5 AND bucket_start >= $6 AND bucket_start < $7)
    OR (grain = $8 AND bucket_start >= $9 AND bucket_start < $10)
    OR (grain = $11 AND bucket_start >= $12 AND bucket_start < $13)
    OR (grain = $14 AND bucket_start >= $15 AND bucket_start < $16))";

fn bind_range<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    establishment_id: &'q str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    let mut q = q.bind(establishment_id);
    for (grain, from, to) in spans(start, end) {
        q = q.bind(grain).bind(from).bind(to);
    }
    q
}

struct FiguresRow(Figures);

impl<'r> sqlx::FromRow<'r, PgRow> for FiguresRow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        figures(row).map(FiguresRow)
    }
}

/// The establishment's figures over `[start, end)`, every agent together.
pub async fn totals(
    pool: &PgPool,
    establishment_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> sqlx::Result<Figures> {
    let sql = format!(
        "SELECT {} FROM rm_report_rollups WHERE {RANGE_WHERE}",
        sums_sql()
    );
    let row: FiguresRow = bind_range(sqlx::query_as(&sql), establishment_id, start, end)
        .fetch_one(pool)
        .await?;
    Ok(row.0)
}

/// The figures of one agent (and version, when grouped by version) over a range, with its
/// summed handle-time histogram.
#[derive(Debug, Clone)]
pub struct AgentFigures {
    pub agent_id: String,
    pub agent_name: Option<String>,
    pub agent_version_id: Option<String>,
    pub figures: Figures,
    pub histogram: Vec<i64>,
}

struct AgentRow {
    agent_id: String,
    agent_version_id: String,
    figures: Figures,
    histogram: Vec<i32>,
}

impl<'r> sqlx::FromRow<'r, PgRow> for AgentRow {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(AgentRow {
            agent_id: row.try_get("agent_id")?,
            agent_version_id: row.try_get("agent_version_id")?,
            figures: figures(row)?,
            histogram: row.try_get("histogram")?,
        })
    }
}

/// Figures per agent (or per agent and version) over `[start, end)`, ordered by agent name.
/// Calls not (yet) routed to an agent are under agent id `""`.
pub async fn by_agent(
    pool: &PgPool,
    establishment_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    by_version: bool,
) -> sqlx::Result<Vec<AgentFigures>> {
    // The rows themselves (not grouped: their histograms are summed here).
    let sql = format!(
        "SELECT agent_id, agent_version_id, histogram, {} FROM rm_report_rollups
         WHERE {RANGE_WHERE}",
        SUMS.join(", ")
    );
    let rows: Vec<AgentRow> = bind_range(sqlx::query_as(&sql), establishment_id, start, end)
        .fetch_all(pool)
        .await?;
    let bins = histogram_bounds().len();
    let mut groups: std::collections::BTreeMap<(String, Option<String>), (Figures, Vec<i64>)> =
        Default::default();
    for r in rows {
        let version = by_version.then_some(r.agent_version_id);
        let g = groups
            .entry((r.agent_id, version))
            .or_insert_with(|| (Figures::default(), vec![0; bins]));
        g.0.add(&r.figures, 1);
        for (a, b) in g.1.iter_mut().zip(r.histogram) {
            *a += b as i64;
        }
    }
    let ids: Vec<String> = groups.keys().map(|(a, _)| a.clone()).collect();
    let names: std::collections::HashMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT id, name FROM rm_agents WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let mut out: Vec<AgentFigures> = groups
        .into_iter()
        .map(|((agent_id, version), (figures, histogram))| AgentFigures {
            agent_name: names.get(&agent_id).cloned(),
            agent_id,
            agent_version_id: version,
            figures,
            histogram,
        })
        .collect();
    out.sort_by(|a, b| {
        (a.agent_name.as_deref(), &a.agent_id, &a.agent_version_id).cmp(&(
            b.agent_name.as_deref(),
            &b.agent_id,
            &b.agent_version_id,
        ))
    });
    Ok(out)
}

/// The establishment's figures per UTC hour (`hourly`) or 15-minute bucket of `[start, end)`
/// (only buckets with calls), oldest first. Hours serve a caller whose own buckets all start
/// on a UTC hour (each hour then lies inside one of them); 15-minute buckets serve any zone.
pub async fn series(
    pool: &PgPool,
    establishment_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    hourly: bool,
) -> sqlx::Result<Vec<(DateTime<Utc>, Figures)>> {
    let sql = format!(
        "SELECT bucket_start, {} FROM rm_report_rollups
         WHERE establishment_id = $1 AND grain = $4 AND bucket_start >= $2 AND bucket_start < $3
         GROUP BY bucket_start ORDER BY bucket_start",
        sums_sql()
    );
    let rows = sqlx::query(&sql)
        .bind(establishment_id)
        .bind(start)
        .bind(end)
        .bind(if hourly { GRAIN_HOUR } else { GRAIN_FINE })
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("bucket_start")?, figures(r)?)))
        .collect()
}

/// Calls of the establishment in progress now.
pub async fn active_now(pool: &PgPool, establishment_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM rm_calls WHERE establishment_id = $1 AND active")
        .bind(establishment_id)
        .fetch_one(pool)
        .await
}

/// The establishment's time zone name (`None`: no such establishment).
pub async fn timezone(pool: &PgPool, establishment_id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT timezone FROM rm_establishments WHERE id = $1")
        .bind(establishment_id)
        .fetch_optional(pool)
        .await
}

/// Refreshes the planner's statistics of the report tables (after a bulk load).
pub async fn analyze(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("ANALYZE rm_report_rollups, rm_report_calls")
        .execute(pool)
        .await?;
    Ok(())
}

/// How many rollup rows and per-call rows there are (benchmarks).
pub async fn sizes(pool: &PgPool) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM rm_report_rollups), (SELECT count(*) FROM rm_report_calls)",
    )
    .fetch_one(pool)
    .await
}

/// A dump of both rollup tables in a fixed order (tests compare a rebuild with live).
pub async fn dump(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    let mut out: Vec<String> = sqlx::query_scalar(
        "SELECT r::text FROM rm_report_rollups r
         ORDER BY establishment_id, grain, bucket_start, agent_id, agent_version_id",
    )
    .fetch_all(pool)
    .await?;
    out.extend(
        sqlx::query_scalar::<_, String>("SELECT c::text FROM rm_report_calls c ORDER BY call_id")
            .fetch_all(pool)
            .await?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 15-minute bucket of a range is in exactly one span, whatever the range's ends.
    #[test]
    fn spans_cover_every_bucket_once() {
        let base: DateTime<Utc> = "2026-03-27T00:00:00Z".parse().unwrap();
        let q = TimeDelta::minutes(15);
        for s in [0i32, 1, 2, 4, 22, 92, 95, 96, 97, 190] {
            for len in [0i32, 1, 3, 4, 5, 92, 96, 100, 190, 192, 300, 2880] {
                let start = base + q * s;
                let end = start + q * len;
                let sp = spans(start, end);
                let mut t = start;
                while t < end {
                    let covering: Vec<_> =
                        sp.iter().filter(|(_, f, e)| *f <= t && t < *e).collect();
                    assert_eq!(covering.len(), 1, "{t} in {sp:?}");
                    let (g, f, e) = *covering[0];
                    let unit = match g {
                        GRAIN_DAY => TimeDelta::days(1),
                        GRAIN_HOUR => TimeDelta::hours(1),
                        _ => q,
                    };
                    // The span is made of whole buckets of its grain.
                    assert_eq!((e - f).num_seconds() % unit.num_seconds(), 0, "{sp:?}");
                    t += q;
                }
                assert!(sp
                    .iter()
                    .all(|(_, f, e)| f <= e && *f >= start && *e <= end));
            }
        }
    }
}
