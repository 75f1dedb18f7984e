//! `/establishments`: tenants. Members read; establishment admins change; platform admins
//! and admins of some establishment create.

use std::sync::Arc;

use aggregates::common::{bounded_text, ParseError, Role};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use projections::identity::{self, EstablishmentRow};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::application::establishments::{
    EstablishmentChanges, Establishments, EstablishmentsError, NewEstablishment,
};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, RequestId as ReqId};
use crate::http::principal::Principal;
use crate::state::AppState;
use crate::store::{Actor, CommandContext};

/// Longest establishment name, in characters.
const MAX_NAME: usize = 200;

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

impl CreateEstablishment {
    fn parse(&self) -> Result<NewEstablishment, ParseError> {
        Ok(NewEstablishment {
            name: bounded_text("name", &self.name, MAX_NAME)?,
            timezone: self.timezone.parse()?,
            locale: self.locale.parse()?,
        })
    }
}

impl UpdateEstablishment {
    fn parse(&self) -> Result<EstablishmentChanges, ParseError> {
        Ok(EstablishmentChanges {
            name: self
                .name
                .as_deref()
                .map(|n| bounded_text("name", n, MAX_NAME))
                .transpose()?,
            timezone: self.timezone.as_deref().map(str::parse).transpose()?,
            locale: self.locale.as_deref().map(str::parse).transpose()?,
        })
    }
}

impl From<EstablishmentRow> for EstablishmentView {
    fn from(r: EstablishmentRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            timezone: r.timezone,
            locale: r.locale,
            created_at: r.created_at,
        }
    }
}

impl From<EstablishmentRow> for EstablishmentItem {
    fn from(r: EstablishmentRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            timezone: r.timezone,
            locale: r.locale,
        }
    }
}

impl From<EstablishmentsError> for ApiError {
    fn from(e: EstablishmentsError) -> Self {
        match e {
            EstablishmentsError::NotFound => ApiError::not_found("establishment"),
            EstablishmentsError::Command(e) => e.into(),
            EstablishmentsError::Unexpected(e) => e.into(),
        }
    }
}

/// 404 for outsiders and unknown establishments, 403 below `needed`.
pub(crate) async fn establishment_scope(
    pool: &PgPool,
    me: &Principal,
    establishment_id: &str,
    needed: Role,
) -> ApiResult<()> {
    me.require(establishment_id, needed)?;
    // Platform admins pass `require` for any id: the establishment must also exist.
    if !identity::establishment_exists(pool, establishment_id).await? {
        return Err(ApiError::not_found("establishment"));
    }
    Ok(())
}

/// Establishments the caller belongs to (all of them for platform admins).
#[utoipa::path(get, path = "/establishments", tag = "establishments", security(("bearer" = [])),
    responses((status = 200, body = EstablishmentList)))]
async fn list_establishments(
    State(pool): State<PgPool>,
    me: Principal,
) -> ApiResult<Json<EstablishmentList>> {
    let rows = identity::establishments(&pool, me.readable_establishments().as_deref()).await?;
    Ok(Json(EstablishmentList {
        items: rows.into_iter().map(Into::into).collect(),
    }))
}

/// Creates an establishment (platform admins); its creator becomes its admin. Tenants are
/// onboarded by the platform: an establishment's admin cannot create another one.
#[utoipa::path(post, path = "/establishments", tag = "establishments", security(("bearer" = [])),
    request_body = CreateEstablishment,
    responses((status = 201, body = EstablishmentView), (status = 403, description = "only platform admins create establishments"),
              (status = 422, description = "invalid name, time zone or locale")))]
async fn create_establishment(
    State(establishments): State<Arc<Establishments>>,
    ReqId(request_id): ReqId,
    me: Principal,
    ApiJson(req): ApiJson<CreateEstablishment>,
) -> ApiResult<(StatusCode, Json<EstablishmentView>)> {
    if !me.platform_admin {
        return Err(ApiError::forbidden(
            "only platform admins can create establishments",
        ));
    }
    let new = req.parse()?;
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id);
    let created = establishments.create(&ctx, new).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// One establishment.
#[utoipa::path(get, path = "/establishments/{id}", tag = "establishments", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = EstablishmentView), (status = 404)))]
async fn get_establishment(
    State(pool): State<PgPool>,
    me: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<EstablishmentView>> {
    me.member_of(&id)?;
    let row = identity::establishment(&pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("establishment"))?;
    Ok(Json(row.into()))
}

/// Changes name, time zone or locale (establishment admins).
#[utoipa::path(patch, path = "/establishments/{id}", tag = "establishments", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = UpdateEstablishment,
    responses((status = 200, body = EstablishmentView), (status = 403), (status = 404), (status = 422)))]
async fn update_establishment(
    State(establishments): State<Arc<Establishments>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateEstablishment>,
) -> ApiResult<Json<EstablishmentView>> {
    me.require(&id, Role::Admin)?;
    let changes = req.parse()?;
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&id);
    Ok(Json(
        establishments.update(&ctx, &id, changes).await?.into(),
    ))
}
