//! Leads (prd §7.6, A.6): `POST /leads/import` (multipart: `establishment_id` and a CSV
//! `file`), `GET /leads/imports/{jobId}`, `GET /leads`, `PATCH /leads/{leadId}` and
//! `POST /establishments/{id}/do-not-call`. Operators import and edit; viewers read; a foreign
//! or unknown id answers 404.

use std::sync::Arc;

use aggregates::common::{Role, E164};
use aggregates::lead::{DoNotCallError, DoNotCallSource, LeadChanges, LeadError, LeadImportError};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use chrono::{DateTime, Utc};
use projections::leads::{LeadFilter, LeadRow};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::establishments::establishment_scope;
use crate::application::leads::{LeadProgress, LeadQuery, Leads, LeadsError};
use crate::config::Config;
use crate::http::error::{ApiError, ApiResult, DomainError};
use crate::http::extract::{ApiJson, ApiQuery, RequestId};
use crate::http::principal::Principal;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(import_leads))
        // The import streams its own bounded body (LEAD_IMPORT_MAX_BYTES).
        .layer(DefaultBodyLimit::disable())
        .merge(
            OpenApiRouter::new()
                .routes(routes!(import_status))
                .routes(routes!(list_leads))
                .routes(routes!(update_lead))
                .routes(routes!(add_do_not_call)),
        )
}

impl DomainError for LeadError {
    fn status(&self) -> StatusCode {
        match self {
            LeadError::NothingToChange => StatusCode::UNPROCESSABLE_ENTITY,
            LeadError::ForeignLead => StatusCode::NOT_FOUND,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            LeadError::NothingToChange => "validation_failed",
            LeadError::ForeignLead => "not_found",
        }
    }
}

impl DomainError for LeadImportError {
    fn status(&self) -> StatusCode {
        StatusCode::CONFLICT
    }
    fn code(&self) -> &'static str {
        "import_finished"
    }
}

impl DomainError for DoNotCallError {
    fn status(&self) -> StatusCode {
        StatusCode::UNPROCESSABLE_ENTITY
    }
    fn code(&self) -> &'static str {
        "validation_failed"
    }
}

impl From<LeadsError> for ApiError {
    fn from(e: LeadsError) -> Self {
        match e {
            LeadsError::NotFound => ApiError::not_found("lead"),
            LeadsError::Invalid(i) => i.into(),
            LeadsError::Lead(c) => c.into(),
            LeadsError::DoNotCall(c) => c.into(),
            LeadsError::Import(c) => c.into(),
            LeadsError::Unexpected(u) => u.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ImportAccepted {
    #[schema(example = "job_01J…")]
    pub job_id: String,
    /// `accepted`.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct ImportErrorView {
    /// Row number, 1 for the first row after the header.
    pub row: u64,
    pub column: String,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct ImportStatus {
    pub job_id: String,
    /// `queued`, `running`, `completed` or `failed`.
    pub status: String,
    pub rows_total: i64,
    pub rows_imported: i64,
    pub rows_duplicate: i64,
    pub rows_rejected: i64,
    /// The first 100 refused rows.
    pub errors: Vec<ImportErrorView>,
    /// Why a failed import failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The multipart body of `POST /leads/import` (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImportForm {
    establishment_id: String,
    /// The CSV: a `phone` (or `phone_e164`) column; `name`, `first_name`, `last_name`,
    /// `email`, `timezone` recognised; other columns kept in `fields`. UTF-8 (BOM allowed),
    /// `,` or `;`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::bad_request(
        "invalid_multipart",
        format!("cannot read the multipart body: {e}"),
    )
}

/// Imports leads from a CSV (operators): answers at once; the import runs in the background.
#[utoipa::path(post, path = "/leads/import", tag = "leads", security(("bearer" = [])),
    request_body(content = ImportForm, content_type = "multipart/form-data"),
    responses((status = 202, body = ImportAccepted),
              (status = 400, description = "not a multipart body, or a malformed one"),
              (status = 415, description = "not multipart/form-data"),
              (status = 403), (status = 404),
              (status = 413, description = "the file is larger than LEAD_IMPORT_MAX_BYTES"),
              (status = 422, description = "establishment_id or file missing, or no phone column")))]
async fn import_leads(
    State(pool): State<PgPool>,
    State(config): State<Arc<Config>>,
    State(leads): State<Arc<Leads>>,
    RequestId(request_id): RequestId,
    me: Principal,
    form: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<ImportAccepted>)> {
    // The extractor's own rejections are plain text: answer them in the contract's shape.
    let mut form = form.map_err(|e| {
        ApiError::new(
            e.status(),
            "invalid_multipart",
            format!("expected a multipart/form-data body: {}", e.body_text()),
        )
    })?;
    let max = config.dialer.lead_import_max_bytes;
    let mut establishment_id: Option<String> = None;
    let mut file: Option<(String, bytes::BytesMut)> = None;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("establishment_id") => {
                let v = field.text().await.map_err(multipart_error)?;
                if v.len() > 100 {
                    return Err(ApiError::validation("establishment_id", "is too long"));
                }
                establishment_id = Some(v.trim().to_string());
            }
            Some("file") => {
                let name = field.file_name().unwrap_or("leads.csv").to_string();
                let mut buf = bytes::BytesMut::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if buf.len() + chunk.len() > max {
                        return Err(ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "payload_too_large",
                            format!("the file is larger than {max} bytes"),
                        ));
                    }
                    buf.extend_from_slice(&chunk);
                }
                file = Some((name, buf));
            }
            _ => {}
        }
    }
    let establishment_id = establishment_id
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::validation("establishment_id", "is required"))?;
    establishment_scope(&pool, &me, &establishment_id, Role::Operator).await?;
    let (name, bytes) = file.ok_or_else(|| ApiError::validation("file", "is required"))?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::validation("file", "is empty"));
    }
    let job_id = leads
        .import(
            &me.user_id,
            &request_id,
            &establishment_id,
            &name,
            bytes.freeze(),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ImportAccepted {
            job_id,
            status: "accepted".into(),
        }),
    ))
}

/// Where an import stands, with its counts and first errors (any member).
#[utoipa::path(get, path = "/leads/imports/{jobId}", tag = "leads", security(("bearer" = [])),
    params(("jobId" = String, Path)),
    responses((status = 200, body = ImportStatus), (status = 404)))]
async fn import_status(
    State(leads): State<Arc<Leads>>,
    me: Principal,
    Path(job_id): Path<String>,
) -> ApiResult<Json<ImportStatus>> {
    let row = leads
        .import_status(&job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("import"))?;
    me.member_of(&row.establishment_id)
        .map_err(|_| ApiError::not_found("import"))?;
    let errors: Vec<aggregates::lead::RowError> =
        serde_json::from_value(row.errors).unwrap_or_default();
    Ok(Json(ImportStatus {
        job_id: row.job_id,
        status: row.status,
        rows_total: row.rows_total,
        rows_imported: row.rows_imported,
        rows_duplicate: row.rows_duplicate,
        rows_rejected: row.rows_rejected,
        errors: errors
            .into_iter()
            .map(|e| ImportErrorView {
                row: e.row,
                column: e.column,
                reason: e.reason,
            })
            .collect(),
        failure: row.failure,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct LeadView {
    pub id: String,
    pub establishment_id: String,
    pub phone_e164: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// IANA zone given for the lead (else derived from the number when dialling).
    pub timezone: Option<String>,
    /// `new`, `contacted`, `qualified`, `converted`, `lost` or `archived`.
    pub status: String,
    /// Campaign calls placed to the lead.
    pub attempts: u32,
    /// `in_flight`, `human`, `machine`, `busy`, `no_answer`, `failed`, `canceled`, `opt_out`.
    pub last_outcome: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The lead flag, or the number on the establishment's do-not-call list.
    pub do_not_call: bool,
    #[schema(value_type = Object)]
    pub fields: Value,
    pub created_at: DateTime<Utc>,
}

fn view(r: LeadRow, p: Option<&LeadProgress>) -> LeadView {
    LeadView {
        id: r.id,
        establishment_id: r.establishment_id,
        phone_e164: r.phone_e164,
        name: r.name,
        email: r.email,
        timezone: r.timezone,
        status: r.status,
        attempts: p.map_or(0, |p| p.attempts),
        last_outcome: p.and_then(|p| p.last_outcome.clone()),
        next_attempt_at: p.and_then(|p| p.next_attempt_at),
        do_not_call: r.do_not_call,
        fields: r.fields,
        created_at: r.created_at,
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LeadListQuery {
    pub establishment_id: String,
    pub status: Option<String>,
    /// Leads a campaign has called.
    pub campaign_id: Option<String>,
    /// Part of the name, e-mail or number.
    pub q: Option<String>,
    pub cursor: Option<String>,
    /// 1–200, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct LeadPage {
    pub items: Vec<LeadView>,
    pub next_cursor: Option<String>,
}

fn encode_cursor(at: DateTime<Utc>, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{id}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    ))
}

fn decode_cursor(c: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    let (at, id) = std::str::from_utf8(&raw).ok()?.split_once('|')?;
    Some((at.parse().ok()?, id.to_string()))
}

/// An establishment's leads, newest first, with filters and a cursor (any member).
#[utoipa::path(get, path = "/leads", tag = "leads", security(("bearer" = [])),
    params(LeadListQuery),
    responses((status = 200, body = LeadPage), (status = 404), (status = 422)))]
async fn list_leads(
    State(pool): State<PgPool>,
    State(leads): State<Arc<Leads>>,
    me: Principal,
    ApiQuery(q): ApiQuery<LeadListQuery>,
) -> ApiResult<Json<LeadPage>> {
    establishment_scope(&pool, &me, &q.establishment_id, Role::Viewer).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 200"));
    }
    if let Some(s) = &q.status {
        s.parse::<aggregates::lead::LeadStatus>()?;
    }
    if q.q.as_ref().is_some_and(|s| s.len() > 200) {
        return Err(ApiError::validation("q", "must be at most 200 characters"));
    }
    let before = match &q.cursor {
        Some(c) => Some(
            decode_cursor(c)
                .ok_or_else(|| ApiError::validation("cursor", "is not a cursor from this API"))?,
        ),
        None => None,
    };
    let rows = leads
        .list(&LeadQuery {
            establishment_id: q.establishment_id,
            filter: LeadFilter {
                status: q.status,
                campaign_id: q.campaign_id,
                q: q.q,
                before,
            },
            limit: limit + 1,
        })
        .await?;
    let more = rows.len() as i64 > limit;
    let rows: Vec<LeadRow> = rows.into_iter().take(limit as usize).collect();
    let progress = leads.progress(&rows).await?;
    let items: Vec<LeadView> = rows
        .into_iter()
        .map(|r| {
            let p = progress.get(&r.id);
            view(r, p)
        })
        .collect();
    let next_cursor = more
        .then(|| items.last().map(|i| encode_cursor(i.created_at, &i.id)))
        .flatten();
    Ok(Json(LeadPage { items, next_cursor }))
}

/// `PATCH /leads/{leadId}`: omitted fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadPatch {
    pub status: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    /// Replaces the lead's extra fields.
    #[schema(value_type = Option<Object>)]
    pub fields: Option<Map<String, Value>>,
    pub do_not_call: Option<bool>,
}

/// Changes a lead (operators). Setting `do_not_call` also puts the number on the
/// establishment's do-not-call list.
#[utoipa::path(patch, path = "/leads/{leadId}", tag = "leads", security(("bearer" = [])),
    params(("leadId" = String, Path)), request_body = LeadPatch,
    responses((status = 200, body = LeadView), (status = 403), (status = 404), (status = 422)))]
async fn update_lead(
    State(leads): State<Arc<Leads>>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(lead_id): Path<String>,
    ApiJson(body): ApiJson<LeadPatch>,
) -> ApiResult<Json<LeadView>> {
    let lead = leads
        .get(&lead_id)
        .await?
        .ok_or_else(|| ApiError::not_found("lead"))?;
    me.member_of(&lead.establishment_id)
        .map_err(|_| ApiError::not_found("lead"))?;
    me.require(&lead.establishment_id, Role::Operator)?;
    let status = body.status.as_deref().map(str::parse).transpose()?;
    let name = body
        .name
        .as_deref()
        .map(|n| aggregates::common::bounded_text("name", n, 200))
        .transpose()?;
    let email = body
        .email
        .as_deref()
        .map(|e| {
            e.parse::<aggregates::common::Email>()
                .map(|e| e.as_str().to_string())
        })
        .transpose()?;
    if let Some(f) = &body.fields {
        if f.len() > 50 || serde_json::to_vec(f).map_or(0, |v| v.len()) > 16 * 1024 {
            return Err(ApiError::validation(
                "fields",
                "at most 50 fields and 16 KB of JSON",
            ));
        }
    }
    let changes = LeadChanges {
        status,
        name,
        email,
        fields: body.fields,
        do_not_call: body.do_not_call,
    };
    let row = leads
        .update(&me.user_id, &request_id, &lead, changes)
        .await?;
    let progress = leads.progress(std::slice::from_ref(&row)).await?;
    let p = progress.get(&row.id).cloned();
    Ok(Json(view(row, p.as_ref())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DoNotCallBody {
    /// E.164 numbers (1–1000).
    pub numbers: Vec<String>,
    #[schema(example = "asked not to be called")]
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct DoNotCallAnswer {
    /// Numbers new on the list.
    pub added: usize,
}

/// Adds numbers to the establishment's do-not-call list (operators): no campaign dials them.
#[utoipa::path(post, path = "/establishments/{id}/do-not-call", tag = "leads",
    security(("bearer" = [])), params(("id" = String, Path)), request_body = DoNotCallBody,
    responses((status = 200, body = DoNotCallAnswer), (status = 403), (status = 404), (status = 422)))]
async fn add_do_not_call(
    State(pool): State<PgPool>,
    State(leads): State<Arc<Leads>>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(establishment_id): Path<String>,
    ApiJson(body): ApiJson<DoNotCallBody>,
) -> ApiResult<Json<DoNotCallAnswer>> {
    establishment_scope(&pool, &me, &establishment_id, Role::Operator).await?;
    if body.numbers.is_empty() || body.numbers.len() > aggregates::lead::MAX_DNC_NUMBERS {
        return Err(ApiError::validation(
            "numbers",
            "must hold 1 to 1000 numbers",
        ));
    }
    let numbers = body
        .numbers
        .iter()
        .map(|n| n.parse::<E164>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::validation("numbers", e.message))?;
    let reason = aggregates::common::bounded_text("reason", &body.reason, 500)?;
    let added = leads
        .add_do_not_call(
            &me.user_id,
            &request_id,
            &establishment_id,
            numbers,
            reason,
            DoNotCallSource::Manual,
        )
        .await?;
    Ok(Json(DoNotCallAnswer { added }))
}
