//! `/establishments`: tenants. Members read; establishment admins change; platform admins
//! and admins of some establishment create.

use aggregates::common::{bounded_text, Locale, Role, Timezone};
use aggregates::establishment::{Establishment, EstablishmentCommand};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, RequestId as ReqId};
use crate::http::principal::Principal;
use crate::state::AppState;
use crate::store::{Actor, CommandContext, ExecOptions};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_establishments, create_establishment))
        .routes(routes!(get_establishment, update_establishment))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEstablishment {
    pub name: String,
    /// IANA time zone, e.g. `America/Sao_Paulo`.
    pub timezone: String,
    /// BCP 47 language tag, e.g. `pt-BR`.
    pub locale: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEstablishment {
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EstablishmentView {
    pub id: String,
    pub name: String,
    pub timezone: String,
    pub locale: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct EstablishmentItem {
    pub id: String,
    pub name: String,
    pub timezone: String,
    pub locale: String,
}

#[derive(Serialize, ToSchema)]
pub struct EstablishmentList {
    pub items: Vec<EstablishmentItem>,
}

/// Establishments the caller belongs to (all of them for platform admins).
#[utoipa::path(get, path = "/establishments", tag = "establishments", security(("bearer" = [])),
    responses((status = 200, body = EstablishmentList)))]
async fn list_establishments(
    State(state): State<AppState>,
    me: Principal,
) -> ApiResult<Json<EstablishmentList>> {
    let rows = sqlx::query(
        "SELECT id, name, timezone, locale FROM rm_establishments
         WHERE $1::text[] IS NULL OR id = ANY($1) ORDER BY created_at, id",
    )
    .bind(me.readable_establishments())
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(EstablishmentList {
        items: rows
            .iter()
            .map(|r| EstablishmentItem {
                id: r.get("id"),
                name: r.get("name"),
                timezone: r.get("timezone"),
                locale: r.get("locale"),
            })
            .collect(),
    }))
}

/// Creates an establishment; its creator becomes its admin.
#[utoipa::path(post, path = "/establishments", tag = "establishments", security(("bearer" = [])),
    request_body = CreateEstablishment,
    responses((status = 201, body = EstablishmentView), (status = 403, description = "only platform admins and establishment admins create establishments"),
              (status = 422, description = "invalid name, time zone or locale")))]
async fn create_establishment(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    ApiJson(req): ApiJson<CreateEstablishment>,
) -> ApiResult<(StatusCode, Json<EstablishmentView>)> {
    if !me.platform_admin && me.admin_of().is_empty() {
        return Err(ApiError::forbidden(
            "only platform admins and establishment admins can create establishments",
        ));
    }
    let name = bounded_text("name", &req.name, 200)?;
    let timezone: Timezone = req.timezone.parse()?;
    let locale: Locale = req.locale.parse()?;
    let id = crate::ids::new_id("est");
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&id);
    let outcome = state
        .bus
        .execute::<Establishment>(
            &id,
            EstablishmentCommand::Create {
                establishment_id: id.clone(),
                name,
                timezone,
                locale,
                created_by: me.user_id.clone(),
            },
            &ctx,
            ExecOptions::default().fresh(),
        )
        .await?;
    state.bus.visible(&outcome).await;
    Ok((StatusCode::CREATED, Json(load(&state, &id).await?)))
}

async fn load(state: &AppState, id: &str) -> ApiResult<EstablishmentView> {
    let r = sqlx::query(
        "SELECT id, name, timezone, locale, created_at FROM rm_establishments WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| ApiError::not_found("establishment"))?;
    Ok(EstablishmentView {
        id: r.get("id"),
        name: r.get("name"),
        timezone: r.get("timezone"),
        locale: r.get("locale"),
        created_at: r.get("created_at"),
    })
}

/// One establishment.
#[utoipa::path(get, path = "/establishments/{id}", tag = "establishments", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = EstablishmentView), (status = 404)))]
async fn get_establishment(
    State(state): State<AppState>,
    me: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<EstablishmentView>> {
    me.member_of(&id)?;
    Ok(Json(load(&state, &id).await?))
}

/// Changes name, time zone or locale (establishment admins).
#[utoipa::path(patch, path = "/establishments/{id}", tag = "establishments", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = UpdateEstablishment,
    responses((status = 200, body = EstablishmentView), (status = 403), (status = 404), (status = 422)))]
async fn update_establishment(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateEstablishment>,
) -> ApiResult<Json<EstablishmentView>> {
    me.require(&id, Role::Admin)?;
    let name = req
        .name
        .as_deref()
        .map(|n| bounded_text("name", n, 200))
        .transpose()?;
    let timezone = req
        .timezone
        .as_deref()
        .map(str::parse::<Timezone>)
        .transpose()?;
    let locale = req
        .locale
        .as_deref()
        .map(str::parse::<Locale>)
        .transpose()?;
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&id);
    let outcome = state
        .bus
        .execute::<Establishment>(
            &id,
            EstablishmentCommand::Update {
                name,
                timezone,
                locale,
            },
            &ctx,
            ExecOptions::default(),
        )
        .await?;
    state.bus.visible(&outcome).await;
    Ok(Json(load(&state, &id).await?))
}
