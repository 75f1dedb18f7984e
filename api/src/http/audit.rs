//! `/audit/events`: the event log as auditors read it, in commit order, with secrets redacted.
//! Establishment admins see their establishments' events, platform admins everything.

use aggregates::common::Role;
use axum::extract::State;
use axum::Json;
use base64::Engine;
use chrono::{DateTime, Utc};
use projections::event::{self, Checkpoint, LogFilter, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::ApiQuery;
use crate::http::principal::Principal;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_events))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// e.g. `Establishment`, `User`, `Agent`, `Call`.
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub establishment_id: Option<String>,
    /// Recorded at or after (ISO 8601).
    pub from: Option<DateTime<Utc>>,
    /// Recorded before (ISO 8601).
    pub to: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1–500, default 100.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEvent {
    pub position: i64,
    pub event_id: String,
    pub recorded_at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    /// Pass as `cursor` to continue after this page (also to poll for newer events).
    pub next_cursor: Option<String>,
    /// Whether more events matched than this page holds.
    pub has_more: bool,
}

fn encode_cursor(cp: Checkpoint) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{}", cp.txid, cp.position))
}

fn decode_cursor(s: &str) -> Option<Checkpoint> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    let (t, p) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
    Some(Checkpoint {
        txid: t.parse().ok()?,
        position: p.parse().ok()?,
    })
}

/// Replaces secrets (hashes, tokens, encrypted values) in a payload.
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                if k.contains("hash")
                    || k.contains("secret")
                    || k.contains("token")
                    || k.contains("password")
                    || k.contains("encrypted")
                {
                    if !val.is_null() {
                        *val = Value::String("[redacted]".into());
                    }
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

impl From<StoredEvent> for AuditEvent {
    fn from(e: StoredEvent) -> Self {
        let mut payload = e.payload;
        redact(&mut payload);
        Self {
            position: e.position,
            event_id: e.event_id,
            recorded_at: e.recorded_at,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            payload,
            metadata: e.metadata,
        }
    }
}

/// The establishments whose events the caller may read: the one asked for (admins of it), else
/// every one they administer (`None`: all, for platform admins). 403 for admins of nothing.
fn audit_scope(
    me: &Principal,
    establishment_id: Option<&String>,
) -> ApiResult<Option<Vec<String>>> {
    if me.platform_admin {
        return Ok(establishment_id.map(|e| vec![e.clone()]));
    }
    if let Some(e) = establishment_id {
        me.require(e, Role::Admin)?;
        return Ok(Some(vec![e.clone()]));
    }
    let admin_of = me.admin_of();
    if admin_of.is_empty() {
        return Err(ApiError::forbidden("the audit log is for admins"));
    }
    Ok(Some(admin_of))
}

/// Events in commit order, filtered and paginated with a cursor.
#[utoipa::path(get, path = "/audit/events", tag = "audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 403, description = "not an admin anywhere"), (status = 404)))]
async fn list_events(
    State(pool): State<PgPool>,
    me: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let scope = audit_scope(&me, q.establishment_id.as_ref())?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 500"));
    }
    let after = match &q.cursor {
        Some(c) => decode_cursor(c)
            .ok_or_else(|| ApiError::validation("cursor", "is not a cursor from this API"))?,
        None => Checkpoint::START,
    };
    let filter = LogFilter {
        aggregate_type: q.aggregate_type.as_deref(),
        aggregate_id: q.aggregate_id.as_deref(),
        from: q.from,
        to: q.to,
        establishments: scope.as_deref(),
    };
    let events = event::committed_after(&pool, after, &filter, limit).await?;
    let has_more = events.len() as i64 == limit;
    let next_cursor = events
        .last()
        .map(|e| encode_cursor(e.checkpoint()))
        .or(q.cursor);
    Ok(Json(AuditPage {
        items: events.into_iter().map(Into::into).collect(),
        next_cursor,
        has_more,
    }))
}
