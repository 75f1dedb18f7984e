//! Platform administration: dead letters (events a projector set aside so it could go on;
//! docs/architecture.md, "Poison events"). Platform admins only: other users 403, no token 401.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use projections::dead_letters::{DeadLetterRow, Filter};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::application::dead_letters::{DeadLetters, RetryError};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::ApiQuery;
use crate::http::principal::Principal;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(retry_dead_letter))
}

fn platform_admin(me: &Principal) -> ApiResult<()> {
    if me.platform_admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("dead letters are for platform admins"))
    }
}

/// An event a projector could not apply and set aside.
#[derive(Serialize, ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    /// The projector (read model or worker) that set it aside.
    pub projector: String,
    /// The event's global position in the log.
    pub event_position: i64,
    pub event_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub establishment_id: Option<String>,
    pub event_type: String,
    /// The last failure.
    pub error: String,
    pub attempts: i32,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    /// A retry applied it; until then its stream's read model is degraded.
    pub resolved: bool,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl From<DeadLetterRow> for DeadLetter {
    fn from(r: DeadLetterRow) -> Self {
        Self {
            id: r.id,
            projector: r.projector,
            event_position: r.event_position,
            event_id: r.event_id,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            establishment_id: r.establishment_id,
            event_type: r.event_type,
            error: r.error,
            attempts: r.attempts,
            first_failed_at: r.first_failed_at,
            last_failed_at: r.last_failed_at,
            resolved: r.resolved,
            resolved_at: r.resolved_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    /// Newest failure first.
    pub items: Vec<DeadLetter>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// Only resolved (`true`) or unresolved (`false`) ones; default: both.
    pub resolved: Option<bool>,
    /// Only this projector's.
    pub projector: Option<String>,
    /// Only this stream's (e.g. a call id).
    pub aggregate_id: Option<String>,
    /// 1–500, default 100.
    pub limit: Option<i64>,
}

/// Dead letters: events a projector could not apply and set aside (newest first, with the
/// error). Platform admins only.
#[utoipa::path(get, path = "/admin/dead-letters", tag = "admin", security(("bearer" = [])),
    params(DeadLetterQuery),
    responses((status = 200, body = DeadLetterList), (status = 401), (status = 403, description = "not a platform admin")))]
async fn list_dead_letters(
    State(dead_letters): State<Arc<DeadLetters>>,
    me: Principal,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> ApiResult<Json<DeadLetterList>> {
    platform_admin(&me)?;
    let filter = Filter {
        resolved: q.resolved,
        projector: q.projector,
        aggregate_id: q.aggregate_id,
    };
    let rows = dead_letters.list(&filter, q.limit.unwrap_or(100)).await?;
    Ok(Json(DeadLetterList {
        items: rows.into_iter().map(DeadLetter::from).collect(),
    }))
}

/// Applies a dead letter's event again through its projector (e.g. after a fix was deployed):
/// 200 with the dead letter, now resolved; 409 `retry_failed` with the error when it still
/// cannot be applied (the attempt is counted). Platform admins only.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/retry", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = DeadLetter, description = "applied and resolved"),
              (status = 401), (status = 403, description = "not a platform admin"), (status = 404),
              (status = 409, description = "still failing (`retry_failed`, with the error), or already resolved")))]
async fn retry_dead_letter(
    State(dead_letters): State<Arc<DeadLetters>>,
    me: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<DeadLetter>)> {
    platform_admin(&me)?;
    let id: i64 = id.parse().map_err(|_| ApiError::not_found("dead letter"))?;
    let row = dead_letters.retry(id).await?;
    Ok((StatusCode::OK, Json(row.into())))
}

impl From<RetryError> for ApiError {
    fn from(e: RetryError) -> Self {
        let message = e.to_string();
        match e {
            RetryError::NotFound => ApiError::not_found("dead letter"),
            RetryError::AlreadyResolved(id) => ApiError::conflict("already_resolved", message)
                .with_details(json!({ "dead_letter_id": id })),
            RetryError::UnknownProjector(p) => ApiError::conflict("unknown_projector", message)
                .with_details(json!({ "projector": p })),
            RetryError::EventMissing(position) => ApiError::conflict("event_missing", message)
                .with_details(json!({ "event_position": position })),
            RetryError::StillFailing { error, dead_letter } => {
                ApiError::conflict("retry_failed", message).with_details(json!({
                    "error": error,
                    "dead_letter": serde_json::to_value(DeadLetter::from(*dead_letter))
                        .unwrap_or_default(),
                }))
            }
            RetryError::Unexpected(e) => e.into(),
        }
    }
}
