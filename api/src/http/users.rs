//! Members of an establishment: invitations, the member list, role changes and removal.
//! Only establishment admins manage users.

use std::sync::Arc;

use aggregates::common::{Email, Role};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use projections::identity::{self, InvitationRow, MemberRow};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::application::invitations::{Invitations, InviteError};
use crate::application::members::{MemberError, Members};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, RequestId as ReqId};
use crate::http::principal::Principal;
use crate::state::AppState;
use crate::store::{Actor, CommandContext};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, invite_user))
        .routes(routes!(change_role))
        .routes(routes!(remove_member))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    pub email: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
}

#[derive(Serialize, ToSchema)]
pub struct InviteResponse {
    pub invitation_id: String,
    pub status: &'static str,
}

/// Invites someone by e-mail with a role; the mail carries a single-use token (7 days).
#[utoipa::path(post, path = "/establishments/{id}/users", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = InviteRequest,
    responses((status = 201, body = InviteResponse), (status = 403), (status = 404),
              (status = 409, description = "already a member"), (status = 422)))]
async fn invite_user(
    State(invitations): State<Arc<Invitations>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(establishment_id): Path<String>,
    ApiJson(req): ApiJson<InviteRequest>,
) -> ApiResult<(StatusCode, Json<InviteResponse>)> {
    me.require(&establishment_id, Role::Admin)?;
    let email: Email = req.email.parse()?;
    let role: Role = req.role.parse()?;
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&establishment_id);
    let invitation_id = invitations
        .invite(&ctx, &establishment_id, email, role)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(InviteResponse {
            invitation_id,
            status: "sent",
        }),
    ))
}

impl From<InviteError> for ApiError {
    fn from(e: InviteError) -> Self {
        match e {
            e @ InviteError::AlreadyMember => ApiError::conflict("already_member", e.to_string()),
            InviteError::EstablishmentNotFound => ApiError::not_found("establishment"),
            InviteError::Command(e) => e.into(),
            InviteError::Unexpected(e) => e.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    #[schema(value_type = String, example = "operator")]
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct InvitationView {
    pub invitation_id: String,
    pub email: String,
    pub role: String,
    pub status: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<MemberView>,
    /// Invitations not yet accepted.
    pub pending_invitations: Vec<InvitationView>,
}

/// Members of the establishment, with pending invitations.
#[utoipa::path(get, path = "/establishments/{id}/users", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = UserList), (status = 404)))]
async fn list_users(
    State(pool): State<PgPool>,
    me: Principal,
    Path(establishment_id): Path<String>,
) -> ApiResult<Json<UserList>> {
    me.member_of(&establishment_id)?;
    let members = identity::members(&pool, &establishment_id).await?;
    let invitations = identity::pending_invitations(&pool, &establishment_id).await?;
    Ok(Json(UserList {
        items: members.into_iter().map(Into::into).collect(),
        pending_invitations: invitations.into_iter().map(Into::into).collect(),
    }))
}

impl From<MemberRow> for MemberView {
    fn from(r: MemberRow) -> Self {
        Self {
            role: r.role.parse().unwrap_or(Role::Viewer),
            user_id: r.user_id,
            email: r.email,
            display_name: r.display_name,
            joined_at: r.joined_at,
        }
    }
}

impl From<InvitationRow> for InvitationView {
    fn from(r: InvitationRow) -> Self {
        Self {
            invitation_id: r.id,
            email: r.email,
            role: r.role,
            status: r.status,
            expires_at: r.expires_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleRequest {
    pub establishment_id: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
}

#[derive(Serialize, ToSchema)]
pub struct MembershipView {
    pub user_id: String,
    pub establishment_id: String,
    #[schema(value_type = String, example = "viewer")]
    pub role: Role,
}

/// Changes a member's role (establishment admins; the last admin cannot be demoted).
#[utoipa::path(patch, path = "/users/{userId}", tag = "users", security(("bearer" = [])),
    params(("userId" = String, Path)), request_body = ChangeRoleRequest,
    responses((status = 200, body = MembershipView), (status = 403), (status = 404),
              (status = 409, description = "the last admin cannot be demoted"), (status = 422)))]
async fn change_role(
    State(members): State<Arc<Members>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(user_id): Path<String>,
    ApiJson(req): ApiJson<ChangeRoleRequest>,
) -> ApiResult<Json<MembershipView>> {
    me.require(&req.establishment_id, Role::Admin)?;
    let role: Role = req.role.parse()?;
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&req.establishment_id);
    members
        .change_role(&ctx, &req.establishment_id, &user_id, role)
        .await?;
    Ok(Json(MembershipView {
        user_id,
        establishment_id: req.establishment_id,
        role,
    }))
}

/// Removes a member (establishment admins; the last admin cannot be removed).
#[utoipa::path(delete, path = "/establishments/{id}/users/{userId}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path), ("userId" = String, Path)),
    responses((status = 204), (status = 403), (status = 404), (status = 409, description = "the last admin cannot be removed")))]
async fn remove_member(
    State(members): State<Arc<Members>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path((establishment_id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    me.require(&establishment_id, Role::Admin)?;
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&establishment_id);
    members.remove(&ctx, &establishment_id, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl From<MemberError> for ApiError {
    fn from(e: MemberError) -> Self {
        match e {
            MemberError::Command(e) => e.into(),
        }
    }
}
