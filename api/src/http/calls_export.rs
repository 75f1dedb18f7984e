//! `GET /calls/export`: the call history with the `GET /calls` filters as CSV, streamed page
//! by page (one row per call), so an operator can open it in a spreadsheet.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use projections::calls::queries::{self as calls, ExportRow, HistoryFilter};
use serde::Deserialize;
use sqlx::PgPool;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use aggregates::call::{CallStatus, Direction};

use crate::http::calls::scope;
use crate::http::error::ApiResult;
use crate::http::extract::ApiQuery;
use crate::http::principal::Principal;
use crate::state::AppState;

/// Rows read per page of the stream.
const PAGE: i64 = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export_calls))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    pub establishment_id: Option<String>,
    pub agent_id: Option<String>,
    /// e.g. `completed`, `in_progress`, `no_answer`.
    pub status: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    pub from_e164: Option<String>,
    pub to_e164: Option<String>,
    /// Started at or after (ISO 8601).
    pub started_after: Option<DateTime<Utc>>,
    /// Started before (ISO 8601).
    pub started_before: Option<DateTime<Utc>>,
    /// Only calls placed by this campaign.
    pub campaign_id: Option<String>,
    /// Only calls placed to this lead (by a campaign).
    pub lead_id: Option<String>,
}

const HEADER: [&str; 17] = [
    "call_id",
    "provider_call_sid",
    "establishment_id",
    "direction",
    "from_e164",
    "to_e164",
    "agent_id",
    "agent_version_id",
    "status",
    "started_at",
    "ended_at",
    "duration_seconds",
    "sentiment_label",
    "sentiment_score",
    "summary",
    "handoff",
    "campaign_id",
];

/// A text cell a spreadsheet would run as a formula gets a leading apostrophe.
fn text_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

fn record(e: &ExportRow) -> Vec<String> {
    let r = &e.call;
    let str_at = |v: &Option<serde_json::Value>, k: &str| {
        v.as_ref()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let score = r
        .sentiment
        .as_ref()
        .and_then(|v| v.get("score"))
        .and_then(|v| v.as_f64())
        .map(|p| (((p + 1.0) / 2.0) * 100.0).round() / 100.0);
    let ts = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    vec![
        r.id.clone(),
        r.provider_call_sid.clone().unwrap_or_default(),
        r.establishment_id.clone(),
        r.direction.clone(),
        r.from_party.clone(),
        r.to_party.clone(),
        r.agent_id.clone().unwrap_or_default(),
        r.agent_version_id.clone().unwrap_or_default(),
        r.status.clone(),
        ts(Some(r.started_at)),
        ts(r.ended_at),
        r.duration_seconds
            .map(|d| d.to_string())
            .unwrap_or_default(),
        str_at(&r.sentiment, "label").unwrap_or_default(),
        score.map(|s| s.to_string()).unwrap_or_default(),
        text_cell(&str_at(&r.summary, "text").unwrap_or_default()),
        e.handoff.to_string(),
        e.campaign_id.clone().unwrap_or_default(),
    ]
}

fn csv_chunk(rows: &[ExportRow], header: bool) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if header {
        w.write_record(HEADER)?;
    }
    for r in rows {
        w.write_record(record(r))?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

struct Cursor {
    pool: PgPool,
    scope: Option<Vec<String>>,
    filter: HistoryFilter,
    first: bool,
    done: bool,
}

/// The filtered call history as CSV (`text/csv`, streamed), newest first.
#[utoipa::path(get, path = "/calls/export", tag = "calls", security(("bearer" = [])),
    params(ExportQuery),
    responses((status = 200, content_type = "text/csv", body = String), (status = 404), (status = 422)))]
async fn export_calls(
    State(pool): State<PgPool>,
    me: Principal,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    let scope = scope(&me, q.establishment_id.as_ref())?;
    if let Some(s) = &q.status {
        s.parse::<CallStatus>()?;
    }
    if let Some(d) = &q.direction {
        d.parse::<Direction>()?;
    }
    let filter = HistoryFilter {
        agent_id: q.agent_id,
        status: q.status,
        direction: q.direction,
        from_e164: q.from_e164,
        to_e164: q.to_e164,
        started_after: q.started_after,
        started_before: q.started_before,
        campaign_id: q.campaign_id,
        lead_id: q.lead_id,
        before: None,
    };
    // The first page is read before answering, so a failing query is still a clean error.
    let first = calls::export_page(&pool, scope.as_deref(), &filter, PAGE).await?;
    let cursor = Cursor {
        pool,
        scope,
        filter,
        first: true,
        done: false,
    };
    let stream = futures::stream::unfold((cursor, Some(first)), |(mut c, pending)| async move {
        if c.done {
            return None;
        }
        let rows = match pending {
            Some(rows) => rows,
            None => match calls::export_page(&c.pool, c.scope.as_deref(), &c.filter, PAGE).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "call export: a page failed");
                    c.done = true;
                    return Some((Err(std::io::Error::other("export failed")), (c, None)));
                }
            },
        };
        if (rows.len() as i64) < PAGE {
            c.done = true;
        }
        if let Some(last) = rows.last() {
            c.filter.before = Some((last.call.started_at, last.call.id.clone()));
        }
        let chunk = csv_chunk(&rows, c.first).map_err(std::io::Error::other);
        c.first = false;
        Some((chunk, (c, None)))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"calls.csv\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused() {
        assert_eq!(text_cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(text_cell("Booked a cleaning"), "Booked a cleaning");
    }
}
