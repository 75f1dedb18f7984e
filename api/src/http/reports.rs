//! Reports (prd §6, §7.7): `GET /dashboard/kpis`, `GET /reports/agent-performance`,
//! `GET /reports/calls` and the billing stub `GET /establishments/{id}/billing`. Viewers and
//! up; a foreign or unknown establishment answers 404; ranges are local days of the
//! establishment (docs/reports.md).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::application::reports::{Interval, RangeQuery, Reports, ReportsError};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::ApiQuery;
use crate::http::principal::Principal;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dashboard_kpis))
        .routes(routes!(agent_performance))
        .routes(routes!(call_report))
        .routes(routes!(billing))
}

impl From<ReportsError> for ApiError {
    fn from(e: ReportsError) -> Self {
        match e {
            ReportsError::NotFound => ApiError::not_found("establishment"),
            ReportsError::Invalid(i) => i.into(),
            ReportsError::Unexpected(u) => u.into(),
        }
    }
}

/// The establishment a report is about: the one asked for (404 when the caller is not a
/// member), else the caller's only one.
fn establishment(me: &Principal, given: Option<&String>) -> ApiResult<String> {
    match given {
        Some(e) => {
            me.member_of(e)?;
            Ok(e.clone())
        }
        None => match me.memberships.as_slice() {
            [(e, _)] => Ok(e.clone()),
            _ => Err(ApiError::validation(
                "establishment_id",
                "is required unless you belong to exactly one establishment",
            )),
        },
    }
}

fn range(range: &Option<String>, from: &Option<String>, to: &Option<String>) -> RangeQuery {
    RangeQuery {
        range: range.clone(),
        from: from.clone(),
        to: to.clone(),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KpiQuery {
    /// Required unless the caller belongs to exactly one establishment.
    pub establishment_id: Option<String>,
    /// `today` (default), `yesterday`, `7d`, `30d` or `mtd`; or give `from` and `to`.
    pub range: Option<String>,
    /// First day (YYYY-MM-DD, the establishment's time zone), with `to`.
    pub from: Option<String>,
    /// Last day, inclusive (at most 400 days after `from`).
    pub to: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RangeDoc {
    #[schema(value_type = String, format = Date)]
    from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    to: NaiveDate,
    /// IANA time zone of the establishment.
    timezone: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CallCountsDoc {
    total: i64,
    inbound: i64,
    outbound: i64,
    answered: i64,
    missed: i64,
    failed: i64,
    /// Calls in progress now (`null` in `previous`).
    active_now: Option<i64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SentimentDoc {
    positive: i64,
    neutral: i64,
    negative: i64,
    /// Mean of the calls' scores, 0 (negative) to 1 (positive).
    avg_score: Option<f64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ToolsDoc {
    calls: i64,
    errors: i64,
}

/// Calls campaigns placed in the range: dialled, finished and answered by a person or a
/// machine (AMD), and the share of person-answered calls no agent connected to
/// (docs/reports.md).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CampaignsDoc {
    dialled: i64,
    human_answered: i64,
    machine_answered: i64,
    abandon_rate: Option<f64>,
}

/// The figures of one period (definitions: docs/reports.md).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct KpiFiguresDoc {
    range: RangeDoc,
    calls: CallCountsDoc,
    answer_rate: Option<f64>,
    avg_handle_seconds: Option<f64>,
    handoff_rate: Option<f64>,
    sentiment: SentimentDoc,
    tools: ToolsDoc,
    campaigns: CampaignsDoc,
}

/// The period's figures, and `previous`: the period of equal length just before it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct KpisDoc {
    range: RangeDoc,
    calls: CallCountsDoc,
    answer_rate: Option<f64>,
    avg_handle_seconds: Option<f64>,
    handoff_rate: Option<f64>,
    sentiment: SentimentDoc,
    tools: ToolsDoc,
    campaigns: CampaignsDoc,
    previous: KpiFiguresDoc,
}

/// Dashboard KPIs of a range, with the previous period (cached a few seconds per replica).
#[utoipa::path(get, path = "/dashboard/kpis", tag = "reports", security(("bearer" = [])),
    params(KpiQuery),
    responses((status = 200, body = KpisDoc), (status = 404), (status = 422)))]
async fn dashboard_kpis(
    State(reports): State<Arc<Reports>>,
    me: Principal,
    ApiQuery(q): ApiQuery<KpiQuery>,
) -> ApiResult<Json<Value>> {
    let est = establishment(&me, q.establishment_id.as_ref())?;
    let k = reports
        .kpis(&est, &range(&q.range, &q.from, &q.to), Utc::now())
        .await?;
    Ok(Json(serde_json::to_value(k).map_err(ApiError::internal)?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AgentPerformanceQuery {
    pub establishment_id: Option<String>,
    /// `today`, `yesterday`, `7d` (default), `30d` or `mtd`; or give `from` and `to`.
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `agent` (default) or `version`.
    pub group_by: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AgentItemDoc {
    /// `null`: calls that reached no agent.
    agent_id: Option<String>,
    agent_name: Option<String>,
    /// With `group_by=version`.
    agent_version_id: Option<String>,
    calls: i64,
    answered: i64,
    answer_rate: Option<f64>,
    avg_handle_seconds: Option<f64>,
    /// Handle time percentiles from a histogram: exact below 20 s, at most 10 % low above.
    p50_duration_seconds: Option<u32>,
    p90_duration_seconds: Option<u32>,
    handoff_rate: Option<f64>,
    sentiment_avg: Option<f64>,
    positive_share: Option<f64>,
    negative_share: Option<f64>,
    tool_calls: i64,
    tool_error_rate: Option<f64>,
    summary_coverage: Option<f64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AgentPerformanceDoc {
    range: RangeDoc,
    /// `agent` or `version`.
    group_by: String,
    items: Vec<AgentItemDoc>,
}

/// Figures per agent (or per agent version) over a range.
#[utoipa::path(get, path = "/reports/agent-performance", tag = "reports", security(("bearer" = [])),
    params(AgentPerformanceQuery),
    responses((status = 200, body = AgentPerformanceDoc), (status = 404), (status = 422)))]
async fn agent_performance(
    State(reports): State<Arc<Reports>>,
    me: Principal,
    ApiQuery(q): ApiQuery<AgentPerformanceQuery>,
) -> ApiResult<Json<Value>> {
    let est = establishment(&me, q.establishment_id.as_ref())?;
    let by_version = match q.group_by.as_deref() {
        None | Some("agent") => false,
        Some("version") => true,
        Some(_) => return Err(ApiError::validation("group_by", "must be agent or version")),
    };
    let r = reports
        .agent_performance(
            &est,
            &range(&q.range, &q.from, &q.to),
            by_version,
            Utc::now(),
        )
        .await?;
    Ok(Json(serde_json::to_value(r).map_err(ApiError::internal)?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CallReportQuery {
    pub establishment_id: Option<String>,
    /// `today`, `yesterday`, `7d` (default), `30d` or `mtd`; or give `from` and `to`.
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `day` (default) or `hour`.
    pub interval: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SeriesItemDoc {
    /// Local start of the bucket with its UTC offset (a DST day has 23 or 25 hours).
    #[schema(example = "2026-03-29T00:00:00+01:00")]
    bucket_start: String,
    calls: i64,
    inbound: i64,
    outbound: i64,
    answered: i64,
    missed: i64,
    avg_duration_seconds: Option<f64>,
    handoffs: i64,
    sentiment_avg: Option<f64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CallReportDoc {
    range: RangeDoc,
    /// `hour` or `day`.
    interval: String,
    /// Every bucket of the range, empty ones as zeros.
    items: Vec<SeriesItemDoc>,
}

/// Calls over time, per local hour or day, empty buckets included.
#[utoipa::path(get, path = "/reports/calls", tag = "reports", security(("bearer" = [])),
    params(CallReportQuery),
    responses((status = 200, body = CallReportDoc), (status = 404), (status = 422)))]
async fn call_report(
    State(reports): State<Arc<Reports>>,
    me: Principal,
    ApiQuery(q): ApiQuery<CallReportQuery>,
) -> ApiResult<Json<Value>> {
    let est = establishment(&me, q.establishment_id.as_ref())?;
    let interval = match q.interval.as_deref() {
        None | Some("day") => Interval::Day,
        Some("hour") => Interval::Hour,
        Some(_) => return Err(ApiError::validation("interval", "must be hour or day")),
    };
    let r = reports
        .calls(&est, &range(&q.range, &q.from, &q.to), interval, Utc::now())
        .await?;
    Ok(Json(serde_json::to_value(r).map_err(ApiError::internal)?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BillingQuery {
    /// `mtd` (default), `today`, `yesterday`, `7d` or `30d`; or give `from` and `to`.
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BillingPeriodDoc {
    #[schema(value_type = String, format = Date)]
    start: NaiveDate,
    #[schema(value_type = String, format = Date)]
    end: NaiveDate,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UsageDoc {
    calls: i64,
    /// Each call's duration rounded up to the minute, summed.
    call_minutes: i64,
    inbound_minutes: i64,
    outbound_minutes: i64,
}

/// A stub (prd §6): usage from the report rollups, no billing logic.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BillingDoc {
    /// Always `stub`.
    plan: String,
    period: BillingPeriodDoc,
    usage: UsageDoc,
    /// Always `false`.
    billing_enabled: bool,
}

/// Usage of an establishment (billing stub).
#[utoipa::path(get, path = "/establishments/{id}/billing", tag = "reports", security(("bearer" = [])),
    params(("id" = String, Path, description = "Establishment id"), BillingQuery),
    responses((status = 200, body = BillingDoc), (status = 404), (status = 422)))]
async fn billing(
    State(reports): State<Arc<Reports>>,
    me: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<BillingQuery>,
) -> ApiResult<Json<Value>> {
    me.member_of(&id)?;
    let b = reports
        .billing(&id, &range(&q.range, &q.from, &q.to), Utc::now())
        .await?;
    Ok(Json(serde_json::to_value(b).map_err(ApiError::internal)?))
}
