//! Campaigns (prd §7.6, A.6): `POST /campaigns` (A.6's body verbatim, plus
//! `max_concurrent_calls`, `retry`, `callee_window`), `GET /campaigns?establishment_id=`,
//! `GET /campaigns/{campaignId}` with live counters, `POST /campaigns/{campaignId}/start|pause|
//! resume|cancel`, and `GET /campaigns/{campaignId}/preview`. Operators act; viewers read; a
//! foreign or unknown id answers 404.

use std::collections::BTreeMap;
use std::sync::Arc;

use aggregates::campaign::{
    CampaignError, CampaignSpec, LeadFilter, RetryPolicy, Schedule, TimeOfDay, Window,
};
use aggregates::common::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use projections::campaigns::CampaignRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::establishments::establishment_scope;
use crate::application::campaigns::{Action, Campaigns, CampaignsError, Counters, Preview};
use crate::http::error::{ApiError, ApiResult, DomainError};
use crate::http::extract::{ApiJson, ApiQuery, RequestId};
use crate::http::principal::Principal;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign, list_campaigns))
        .routes(routes!(get_campaign))
        .routes(routes!(start_campaign))
        .routes(routes!(pause_campaign))
        .routes(routes!(resume_campaign))
        .routes(routes!(cancel_campaign))
        .routes(routes!(preview_campaign))
}

impl DomainError for CampaignError {
    fn status(&self) -> StatusCode {
        match self {
            CampaignError::NotFound => StatusCode::NOT_FOUND,
            CampaignError::InvalidSpec(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::CONFLICT,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            CampaignError::NotFound => "not_found",
            CampaignError::InvalidSpec(_) => "validation_failed",
            CampaignError::AlreadyExists => "already_exists",
            CampaignError::WrongStatus { .. } => "wrong_status",
        }
    }
}

impl From<CampaignsError> for ApiError {
    fn from(e: CampaignsError) -> Self {
        match e {
            CampaignsError::NotFound => ApiError::not_found("campaign"),
            CampaignsError::AgentNotFound => ApiError::not_found("agent"),
            CampaignsError::Invalid(i) => i.into(),
            CampaignsError::Command(c) => c.into(),
            CampaignsError::Unexpected(u) => u.into(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaceBody {
    #[schema(example = 6)]
    pub calls_per_minute: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    #[schema(example = "America/Sao_Paulo")]
    pub timezone: String,
    /// `mon` … `sun`.
    #[schema(example = json!(["mon","tue","wed","thu","fri"]))]
    pub days: Vec<String>,
    #[schema(example = "09:00")]
    pub start: String,
    #[schema(example = "18:00")]
    pub end: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Attempts per lead, the first included (1–10; default 3).
    pub max_attempts: Option<u32>,
    /// Minutes before attempt n+1, counted from attempt n (the last value repeats).
    pub backoff_minutes: Option<Vec<u32>>,
    /// Outcomes retried: `busy`, `no-answer`, `failed`, `machine`.
    pub on: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowBody {
    #[schema(example = "08:00")]
    pub start: String,
    #[schema(example = "21:00")]
    pub end: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadFilterBody {
    /// Only leads with this status.
    #[schema(example = "new")]
    pub status: Option<String>,
}

/// `POST /campaigns` (A.6).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCampaignBody {
    pub establishment_id: String,
    #[schema(example = "January winback")]
    pub name: String,
    pub agent_id: String,
    /// The version every call of the campaign uses (not the agent's active one).
    pub agent_version_id: String,
    pub lead_filter: Option<LeadFilterBody>,
    pub pace: PaceBody,
    pub schedule: ScheduleBody,
    /// Simultaneous calls of the campaign (1–200; default 5).
    pub max_concurrent_calls: Option<u32>,
    pub retry: Option<RetryBody>,
    /// The callee's local hours (default 08:00–21:00).
    pub callee_window: Option<WindowBody>,
}

#[derive(Serialize, ToSchema)]
pub struct CampaignCreated {
    #[schema(example = "cmp_01J…")]
    pub id: String,
    /// `created`.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct CampaignView {
    pub id: String,
    pub establishment_id: String,
    pub name: String,
    /// `created`, `running`, `paused`, `cancelled` or `completed`.
    pub status: String,
    /// Why it is paused (a user, the circuit breaker, the abandonment ceiling, …).
    pub pause_reason: Option<String>,
    /// The campaign as created (agent, version, pace, schedule, retry, windows).
    #[schema(value_type = Object)]
    pub definition: Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<CountersView>,
}

#[derive(Serialize, ToSchema)]
pub struct CountersView {
    pub leads_total: u64,
    /// Leads that would be dialled now.
    pub eligible: u64,
    pub queued: u64,
    pub dialling: u64,
    pub in_progress: u64,
    pub answered_human: u64,
    pub answered_machine: u64,
    /// Leads done (a person answered).
    pub completed: u64,
    pub failed: u64,
    pub retry_scheduled: u64,
    pub calls_total: u64,
    /// Leads not dialled now or ever, by reason.
    pub excluded: BTreeMap<String, u64>,
}

impl From<Counters> for CountersView {
    fn from(c: Counters) -> Self {
        CountersView {
            leads_total: c.leads_total,
            eligible: c.eligible,
            queued: c.queued,
            dialling: c.dialling,
            in_progress: c.in_progress,
            answered_human: c.answered_human,
            answered_machine: c.answered_machine,
            completed: c.completed,
            failed: c.failed,
            retry_scheduled: c.retry_scheduled,
            calls_total: c.calls_total,
            excluded: c.excluded,
        }
    }
}

fn view(r: CampaignRow, counters: Option<Counters>) -> CampaignView {
    CampaignView {
        id: r.id,
        establishment_id: r.establishment_id,
        name: r.name,
        status: r.status,
        pause_reason: r.pause_reason,
        definition: r.spec,
        created_at: r.created_at,
        started_at: r.started_at,
        counters: counters.map(Into::into),
    }
}

#[derive(Serialize, ToSchema)]
pub struct CampaignList {
    pub items: Vec<CampaignView>,
}

#[derive(Serialize, ToSchema)]
pub struct PreviewView {
    /// The instant judged.
    pub at: Option<DateTime<Utc>>,
    pub leads_total: u64,
    /// Would be dialled now (pace and concurrency permitting).
    pub now: u64,
    /// Not now, maybe later.
    pub later: u64,
    /// Never, in this campaign.
    pub never: u64,
    pub later_reasons: BTreeMap<String, u64>,
    pub never_reasons: BTreeMap<String, u64>,
}

impl From<Preview> for PreviewView {
    fn from(p: Preview) -> Self {
        PreviewView {
            at: p.at,
            leads_total: p.leads_total,
            now: p.now,
            later: p.later,
            never: p.never,
            later_reasons: p.later_reasons,
            never_reasons: p.never_reasons,
        }
    }
}

fn time(field: &str, s: &str) -> ApiResult<TimeOfDay> {
    s.parse()
        .map_err(|_| ApiError::validation(field, format!("{s:?} is not a time HH:MM")))
}

fn spec(body: CreateCampaignBody) -> ApiResult<CampaignSpec> {
    let status = body
        .lead_filter
        .and_then(|f| f.status)
        .map(|s| s.parse())
        .transpose()
        .map_err(|e: aggregates::common::ParseError| {
            ApiError::validation("lead_filter.status", e.message)
        })?;
    let timezone =
        body.schedule
            .timezone
            .parse()
            .map_err(|e: aggregates::common::ParseError| {
                ApiError::validation("schedule.timezone", e.message)
            })?;
    let defaults = RetryPolicy::default();
    let retry = match body.retry {
        None => defaults,
        Some(r) => RetryPolicy {
            max_attempts: r.max_attempts.unwrap_or(defaults.max_attempts),
            backoff_minutes: r.backoff_minutes.unwrap_or(defaults.backoff_minutes),
            on: match r.on {
                None => defaults.on,
                Some(on) => on
                    .iter()
                    .map(|o| o.parse())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e: aggregates::common::ParseError| {
                        ApiError::validation("retry.on", e.message)
                    })?,
            },
        },
    };
    let callee_window = match body.callee_window {
        None => Window::default_callee(),
        Some(w) => Window::new(
            time("callee_window.start", &w.start)?,
            time("callee_window.end", &w.end)?,
        )
        .map_err(|_| ApiError::validation("callee_window", "start must be before end"))?,
    };
    let s = CampaignSpec {
        name: body.name.trim().to_string(),
        agent_id: body.agent_id,
        agent_version_id: body.agent_version_id,
        lead_filter: LeadFilter { status },
        calls_per_minute: body.pace.calls_per_minute,
        schedule: Schedule {
            timezone,
            days: body.schedule.days,
            start: time("schedule.start", &body.schedule.start)?,
            end: time("schedule.end", &body.schedule.end)?,
        },
        max_concurrent_calls: body.max_concurrent_calls.unwrap_or(5),
        retry,
        callee_window,
    };
    s.validate()
        .map_err(|e| ApiError::validation(e.field, e.message))?;
    Ok(s)
}

/// Creates a campaign (operators); it dials nothing until started.
#[utoipa::path(post, path = "/campaigns", tag = "campaigns", security(("bearer" = [])),
    request_body = CreateCampaignBody,
    responses((status = 201, body = CampaignCreated), (status = 403),
              (status = 404, description = "unknown establishment or agent")))]
async fn create_campaign(
    State(pool): State<PgPool>,
    State(campaigns): State<Arc<Campaigns>>,
    RequestId(request_id): RequestId,
    me: Principal,
    ApiJson(body): ApiJson<CreateCampaignBody>,
) -> ApiResult<(StatusCode, Json<CampaignCreated>)> {
    if body.establishment_id.len() > 100 {
        return Err(ApiError::not_found("establishment"));
    }
    let establishment_id = body.establishment_id.clone();
    establishment_scope(&pool, &me, &establishment_id, Role::Operator).await?;
    let spec = spec(body)?;
    let id = campaigns
        .create(&me.user_id, &request_id, &establishment_id, spec)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CampaignCreated {
            id,
            status: "created".into(),
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CampaignListQuery {
    pub establishment_id: String,
}

/// An establishment's campaigns, newest first (any member).
#[utoipa::path(get, path = "/campaigns", tag = "campaigns", security(("bearer" = [])),
    params(CampaignListQuery),
    responses((status = 200, body = CampaignList), (status = 404)))]
async fn list_campaigns(
    State(pool): State<PgPool>,
    State(campaigns): State<Arc<Campaigns>>,
    me: Principal,
    ApiQuery(q): ApiQuery<CampaignListQuery>,
) -> ApiResult<Json<CampaignList>> {
    establishment_scope(&pool, &me, &q.establishment_id, Role::Viewer).await?;
    let rows = campaigns.list(&q.establishment_id).await?;
    Ok(Json(CampaignList {
        items: rows.into_iter().map(|r| view(r, None)).collect(),
    }))
}

async fn authorised(
    campaigns: &Campaigns,
    me: &Principal,
    id: &str,
    needed: Role,
) -> ApiResult<CampaignRow> {
    let row = campaigns
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found("campaign"))?;
    me.member_of(&row.establishment_id)
        .map_err(|_| ApiError::not_found("campaign"))?;
    me.require(&row.establishment_id, needed)?;
    Ok(row)
}

/// One campaign with its live counters (any member).
#[utoipa::path(get, path = "/campaigns/{campaignId}", tag = "campaigns", security(("bearer" = [])),
    params(("campaignId" = String, Path)),
    responses((status = 200, body = CampaignView), (status = 404)))]
async fn get_campaign(
    State(campaigns): State<Arc<Campaigns>>,
    me: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignView>> {
    let row = authorised(&campaigns, &me, &id, Role::Viewer).await?;
    let counters = campaigns.evaluation(&row, Utc::now()).await?.counters();
    Ok(Json(view(row, Some(counters))))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// The instant to judge (ISO 8601; default now).
    pub at: Option<DateTime<Utc>>,
}

/// What the dialer would do at an instant (default now): how many leads it would dial now,
/// later and never, and why (any member).
#[utoipa::path(get, path = "/campaigns/{campaignId}/preview", tag = "campaigns",
    security(("bearer" = [])), params(("campaignId" = String, Path), PreviewQuery),
    responses((status = 200, body = PreviewView), (status = 404)))]
async fn preview_campaign(
    State(campaigns): State<Arc<Campaigns>>,
    me: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> ApiResult<Json<PreviewView>> {
    let row = authorised(&campaigns, &me, &id, Role::Viewer).await?;
    let now = q.at.unwrap_or_else(Utc::now);
    Ok(Json(
        campaigns.evaluation(&row, now).await?.preview(now).into(),
    ))
}

async fn act(
    campaigns: &Campaigns,
    me: &Principal,
    request_id: &str,
    id: &str,
    action: Action,
) -> ApiResult<Json<CampaignView>> {
    let row = authorised(campaigns, me, id, Role::Operator).await?;
    let row = campaigns.act(&me.user_id, request_id, &row, action).await?;
    Ok(Json(view(row, None)))
}

/// Starts dialling (operators).
#[utoipa::path(post, path = "/campaigns/{campaignId}/start", tag = "campaigns",
    security(("bearer" = [])), params(("campaignId" = String, Path)),
    responses((status = 200, body = CampaignView), (status = 403), (status = 404),
              (status = 409, description = "the campaign cannot start from its status")))]
async fn start_campaign(
    State(campaigns): State<Arc<Campaigns>>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignView>> {
    act(&campaigns, &me, &request_id, &id, Action::Start).await
}

/// Pauses dialling (operators); calls in progress go on.
#[utoipa::path(post, path = "/campaigns/{campaignId}/pause", tag = "campaigns",
    security(("bearer" = [])), params(("campaignId" = String, Path)),
    responses((status = 200, body = CampaignView), (status = 403), (status = 404), (status = 409)))]
async fn pause_campaign(
    State(campaigns): State<Arc<Campaigns>>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignView>> {
    act(&campaigns, &me, &request_id, &id, Action::Pause).await
}

/// Resumes a paused campaign (operators).
#[utoipa::path(post, path = "/campaigns/{campaignId}/resume", tag = "campaigns",
    security(("bearer" = [])), params(("campaignId" = String, Path)),
    responses((status = 200, body = CampaignView), (status = 403), (status = 404), (status = 409)))]
async fn resume_campaign(
    State(campaigns): State<Arc<Campaigns>>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignView>> {
    act(&campaigns, &me, &request_id, &id, Action::Resume).await
}

/// Cancels a campaign for good (operators).
#[utoipa::path(post, path = "/campaigns/{campaignId}/cancel", tag = "campaigns",
    security(("bearer" = [])), params(("campaignId" = String, Path)),
    responses((status = 200, body = CampaignView), (status = 403), (status = 404), (status = 409)))]
async fn cancel_campaign(
    State(campaigns): State<Arc<Campaigns>>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignView>> {
    act(&campaigns, &me, &request_id, &id, Action::Cancel).await
}
