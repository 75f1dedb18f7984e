//! `/establishments/{id}/telephony`: an establishment's telephony policy (Appendix A.2):
//! inbound numbers and their agents, handoff number, call-duration cap, business hours,
//! blacklist. Establishment admins change it; every member reads it.

use std::sync::Arc;

use aggregates::common::{Role, E164};
use aggregates::telephony::{
    BusinessHours, InboundNumber, MaxCallDuration, NumberAuthority, TelephonyPatch,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use projections::routing::TelephonyRow;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::establishments::establishment_scope;
use crate::application::telephony::{PolicyError, TelephonyPolicies};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, RequestId as ReqId};
use crate::http::principal::Principal;
use crate::state::AppState;
use crate::store::{Actor, CommandContext};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_telephony, update_telephony))
}

/// An inbound number (documentation of the shape).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InboundNumberDoc {
    /// `twilio` (the default).
    #[schema(example = "twilio")]
    provider: Option<String>,
    /// E.164; other spellings are normalised.
    #[schema(example = "+14158675309")]
    e164: String,
    /// An agent of the same establishment.
    #[schema(example = "agt_01J...")]
    routing_agent_id: String,
}

/// Business hours (documentation of the shape).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BusinessHoursDoc {
    /// `mon` … `sun`.
    #[schema(example = json!(["mon", "tue", "wed", "thu", "fri"]))]
    days: Vec<String>,
    /// `HH:MM` in the establishment's time zone.
    #[schema(example = "08:00")]
    start: String,
    /// `HH:MM` (up to `24:00`); before `start` = the window crosses midnight.
    #[schema(example = "22:00")]
    end: String,
}

#[derive(Serialize, ToSchema)]
pub struct TelephonyView {
    pub establishment_id: String,
    #[schema(value_type = Vec<InboundNumberDoc>)]
    pub inbound_numbers: Value,
    pub handoff_e164: Option<String>,
    pub max_call_duration_seconds: i32,
    #[schema(value_type = Vec<BusinessHoursDoc>)]
    pub business_hours: Value,
    #[schema(value_type = Vec<String>)]
    pub blacklist_e164: Value,
}

/// A partial update: omitted fields stay; `inbound_numbers` replaces the whole list;
/// `"handoff_e164": null` clears the handoff number.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTelephony {
    #[schema(value_type = Option<Vec<InboundNumberDoc>>)]
    pub inbound_numbers: Option<Vec<InboundNumber>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "+14158671234")]
    pub handoff_e164: Option<Option<E164>>,
    /// 30 to 14,400 (default 3,600).
    #[schema(value_type = Option<u32>, minimum = 30, maximum = 14400, example = 900)]
    pub max_call_duration_seconds: Option<MaxCallDuration>,
    /// Empty: open around the clock.
    #[schema(value_type = Option<Vec<BusinessHoursDoc>>)]
    pub business_hours: Option<Vec<BusinessHours>>,
    #[schema(value_type = Option<Vec<String>>)]
    pub blacklist_e164: Option<Vec<E164>>,
}

/// Tells a field that is present (even as `null`) from one that is absent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl From<TelephonyRow> for TelephonyView {
    fn from(r: TelephonyRow) -> Self {
        Self {
            establishment_id: r.establishment_id,
            inbound_numbers: r.inbound_numbers,
            handoff_e164: r.handoff_e164,
            max_call_duration_seconds: r.max_call_duration_seconds,
            business_hours: r.business_hours,
            blacklist_e164: r.blacklist_e164,
        }
    }
}

impl From<UpdateTelephony> for TelephonyPatch {
    fn from(req: UpdateTelephony) -> Self {
        Self {
            inbound_numbers: req.inbound_numbers,
            handoff_e164: req.handoff_e164,
            max_call_duration_seconds: req.max_call_duration_seconds,
            business_hours: req.business_hours,
            blacklist_e164: req.blacklist_e164,
        }
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Invalid(i) => i.into(),
            PolicyError::NotAssigned(e) => {
                ApiError::new(StatusCode::FORBIDDEN, "number_not_assigned", e.to_string())
                    .with_details(json!({"field": "inbound_numbers"}))
            }
            PolicyError::Command(e) => e.into(),
            PolicyError::Unexpected(e) => e.into(),
        }
    }
}

/// The establishment's telephony policy.
#[utoipa::path(get, path = "/establishments/{id}/telephony", tag = "telephony", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = TelephonyView), (status = 404)))]
async fn get_telephony(
    State(pool): State<PgPool>,
    me: Principal,
    Path(establishment_id): Path<String>,
) -> ApiResult<Json<TelephonyView>> {
    establishment_scope(&pool, &me, &establishment_id, Role::Viewer).await?;
    let policy = projections::routing::telephony(&pool, &establishment_id).await?;
    Ok(Json(policy.into()))
}

/// Changes the telephony policy (establishment admins). A number already routed by another
/// establishment answers 409; a `routing_agent_id` that is not an agent of this establishment
/// answers 422.
#[utoipa::path(patch, path = "/establishments/{id}/telephony", tag = "telephony", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = UpdateTelephony,
    responses((status = 200, body = TelephonyView), (status = 403), (status = 404),
              (status = 409, description = "a number belongs to another establishment"),
              (status = 422)))]
async fn update_telephony(
    State(pool): State<PgPool>,
    State(telephony): State<Arc<TelephonyPolicies>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(establishment_id): Path<String>,
    ApiJson(req): ApiJson<UpdateTelephony>,
) -> ApiResult<Json<TelephonyView>> {
    establishment_scope(&pool, &me, &establishment_id, Role::Admin).await?;
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&establishment_id);
    let policy = telephony
        .update(
            &ctx,
            &establishment_id,
            req.into(),
            if me.platform_admin {
                NumberAuthority::Platform
            } else {
                NumberAuthority::Establishment
            },
        )
        .await?;
    Ok(Json(policy.into()))
}
