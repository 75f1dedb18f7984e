//! Typed reads of the report rollups. A range `[start, end)` (local midnights, so on the
//! 15-minute grid) is read as the whole UTC days inside it (grain 1) plus the 15-minute
//! buckets of its two partial days (grain 0): at most 30 + 2·96 rows per agent and version
//! for a 30-day range, whatever the number of calls.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::{day_bucket, histogram_bounds, Figures};

const SUMS: [&str; 20] = [
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

/// The parts of `[start, end)`: whole UTC days `[days.0, days.1)` and the fine spans around
/// them (empty spans have start = end).
struct Parts {
    days: (DateTime<Utc>, DateTime<Utc>),
    head: (DateTime<Utc>, DateTime<Utc>),
    tail: (DateTime<Utc>, DateTime<Utc>),
}

fn parts(start: DateTime<Utc>, end: DateTime<Utc>) -> Parts {
    let first_day = if day_bucket(start) == start {
        start
    } else {
        day_bucket(start) + chrono::TimeDelta::days(1)
    };
    let last_day = day_bucket(end);
    if first_day >= last_day {
        return Parts {
            days: (start, start),
            head: (start, end),
            tail: (end, end),
        };
    }
    Parts {
        days: (first_day, last_day),
        head: (start, first_day),
        tail: (last_day, end),
    }
}

/// Rows of `[start, end)` of an establishment: $1 establishment, $2..$7 the parts.
const RANGE_WHERE: &str = "establishment_id = $1 AND (
       (grain = 1 AND bucket_start >= $2 AND bucket_start < $3)
    OR (grain = 0 AND ((bucket_start >= $4 AND bucket_start < $5)
                    OR (bucket_start >= $6 AND bucket_start < $7))))";

fn bind_range<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    establishment_id: &'q str,
    p: &Parts,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    q.bind(establishment_id)
        .bind(p.days.0)
        .bind(p.days.1)
        .bind(p.head.0)
        .bind(p.head.1)
        .bind(p.tail.0)
        .bind(p.tail.1)
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
    let p = parts(start, end);
    let sql = format!(
        "SELECT {} FROM rm_report_rollups WHERE {RANGE_WHERE}",
        sums_sql()
    );
    let row: FiguresRow = bind_range(sqlx::query_as(&sql), establishment_id, &p)
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
    let p = parts(start, end);
    // The rows themselves (not grouped: their histograms are summed here).
    let sql = format!(
        "SELECT agent_id, agent_version_id, histogram, {} FROM rm_report_rollups
         WHERE {RANGE_WHERE}",
        SUMS.join(", ")
    );
    let rows: Vec<AgentRow> = bind_range(sqlx::query_as(&sql), establishment_id, &p)
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

/// The establishment's figures per 15-minute bucket of `[start, end)` (only buckets with
/// calls), oldest first.
pub async fn series(
    pool: &PgPool,
    establishment_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> sqlx::Result<Vec<(DateTime<Utc>, Figures)>> {
    let sql = format!(
        "SELECT bucket_start, {} FROM rm_report_rollups
         WHERE establishment_id = $1 AND grain = 0 AND bucket_start >= $2 AND bucket_start < $3
         GROUP BY bucket_start ORDER BY bucket_start",
        sums_sql()
    );
    let rows = sqlx::query(&sql)
        .bind(establishment_id)
        .bind(start)
        .bind(end)
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
