//! `/establishments/{id}/telephony`: an establishment's telephony policy (Appendix A.2):
//! inbound numbers and their agents, handoff number, call-duration cap, business hours,
//! blacklist. Establishment admins change it; every member reads it.

use std::collections::HashSet;

use aggregates::common::{Role, E164};
use aggregates::telephony::{
    BusinessHours, InboundNumber, MaxCallDuration, Telephony, TelephonyCommand, TelephonyError,
    TelephonyPatch, DEFAULT_MAX_CALL_DURATION_SECONDS,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::establishment_scope;
use crate::http::error::{ApiError, ApiResult, DomainError};
use crate::http::extract::{ApiJson, RequestId as ReqId};
use crate::http::principal::Principal;
use crate::state::AppState;
use crate::store::{Actor, CommandContext, ExecError, ExecOptions};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_telephony, update_telephony))
}

impl DomainError for TelephonyError {
    fn status(&self) -> StatusCode {
        StatusCode::UNPROCESSABLE_ENTITY
    }
    fn code(&self) -> &'static str {
        "validation_failed"
    }
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

async fn load(state: &AppState, establishment_id: &str) -> ApiResult<TelephonyView> {
    let row = sqlx::query(
        "SELECT inbound_numbers, handoff_e164, max_call_duration_seconds, business_hours, blacklist_e164
         FROM rm_telephony WHERE establishment_id = $1",
    )
    .bind(establishment_id)
    .fetch_optional(&state.pool)
    .await?;
    Ok(match row {
        Some(r) => TelephonyView {
            establishment_id: establishment_id.to_string(),
            inbound_numbers: r.get("inbound_numbers"),
            handoff_e164: r.get("handoff_e164"),
            max_call_duration_seconds: r.get("max_call_duration_seconds"),
            business_hours: r.get("business_hours"),
            blacklist_e164: r.get("blacklist_e164"),
        },
        None => TelephonyView {
            establishment_id: establishment_id.to_string(),
            inbound_numbers: json!([]),
            handoff_e164: None,
            max_call_duration_seconds: DEFAULT_MAX_CALL_DURATION_SECONDS as i32,
            business_hours: json!([]),
            blacklist_e164: json!([]),
        },
    })
}

/// The establishment's telephony policy.
#[utoipa::path(get, path = "/establishments/{id}/telephony", tag = "telephony", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = TelephonyView), (status = 404)))]
async fn get_telephony(
    State(state): State<AppState>,
    me: Principal,
    Path(establishment_id): Path<String>,
) -> ApiResult<Json<TelephonyView>> {
    establishment_scope(&state, &me, &establishment_id, Role::Viewer).await?;
    Ok(Json(load(&state, &establishment_id).await?))
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
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(establishment_id): Path<String>,
    ApiJson(req): ApiJson<UpdateTelephony>,
) -> ApiResult<Json<TelephonyView>> {
    establishment_scope(&state, &me, &establishment_id, Role::Admin).await?;
    if let Some(numbers) = &req.inbound_numbers {
        check_routing_agents(&state, &establishment_id, numbers).await?;
    }
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&establishment_id);
    let outcome = state
        .bus
        .execute::<Telephony>(
            &establishment_id,
            TelephonyCommand::Update(TelephonyPatch {
                inbound_numbers: req.inbound_numbers,
                handoff_e164: req.handoff_e164,
                max_call_duration_seconds: req.max_call_duration_seconds,
                business_hours: req.business_hours,
                blacklist_e164: req.blacklist_e164,
            }),
            &ctx,
            ExecOptions::default(),
        )
        .await
        .map_err(|e| match e {
            ExecError::Domain(d) => ApiError::validation(d.field(), d.to_string()),
            e => e.into(),
        })?;
    state.bus.visible(&outcome).await;
    Ok(Json(load(&state, &establishment_id).await?))
}

/// Every `routing_agent_id` must be an agent of this establishment (agents never move, so
/// checking before the command is enough).
async fn check_routing_agents(
    state: &AppState,
    establishment_id: &str,
    numbers: &[InboundNumber],
) -> ApiResult<()> {
    let wanted: Vec<&str> = numbers
        .iter()
        .map(|n| n.routing_agent_id.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let found: HashSet<String> =
        sqlx::query_scalar("SELECT id FROM rm_agents WHERE id = ANY($1) AND establishment_id = $2")
            .bind(&wanted)
            .bind(establishment_id)
            .fetch_all(&state.pool)
            .await?
            .into_iter()
            .collect();
    if let Some((i, n)) = numbers
        .iter()
        .enumerate()
        .find(|(_, n)| !found.contains(&n.routing_agent_id))
    {
        return Err(ApiError::validation(
            &format!("inbound_numbers[{i}].routing_agent_id"),
            format!(
                "{:?} is not an agent of this establishment",
                n.routing_agent_id
            ),
        ));
    }
    Ok(())
}
