//! Members of an establishment: invitations, the member list, role changes and removal.
//! Only establishment admins manage users.

use aggregates::common::{Email, Role};
use aggregates::establishment::{Establishment, EstablishmentCommand};
use aggregates::invitation::{Invitation, InvitationCommand};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::tokens::one_time_token;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, RequestId as ReqId};
use crate::http::principal::Principal;
use crate::state::AppState;
use crate::store::{Actor, CommandContext, ExecOptions};

/// How long an invitation stays valid.
pub const INVITATION_TTL_DAYS: i64 = 7;

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
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(establishment_id): Path<String>,
    ApiJson(req): ApiJson<InviteRequest>,
) -> ApiResult<(StatusCode, Json<InviteResponse>)> {
    me.require(&establishment_id, Role::Admin)?;
    let email: Email = req.email.parse()?;
    let role: Role = req.role.parse()?;
    let already: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM rm_memberships m JOIN rm_users u ON u.id = m.user_id
                        WHERE m.establishment_id = $1 AND u.email = $2)",
    )
    .bind(&establishment_id)
    .bind(email.as_str())
    .fetch_one(&state.pool)
    .await?;
    if already {
        return Err(ApiError::conflict(
            "already_member",
            "this person is already a member",
        ));
    }
    let establishment_name: String =
        sqlx::query_scalar("SELECT name FROM rm_establishments WHERE id = $1")
            .bind(&establishment_id)
            .fetch_optional(&state.pool)
            .await?
            .ok_or_else(|| ApiError::not_found("establishment"))?;
    let invitation_id = crate::ids::new_id("inv");
    let (token, token_hash) = one_time_token(&invitation_id);
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&establishment_id);
    let outcome = state
        .bus
        .execute::<Invitation>(
            &invitation_id,
            InvitationCommand::Send {
                invitation_id: invitation_id.clone(),
                establishment_id: establishment_id.clone(),
                email: email.clone(),
                role,
                token_hash,
                expires_at: Utc::now() + Duration::days(INVITATION_TTL_DAYS),
                invited_by: me.user_id.clone(),
            },
            &ctx,
            ExecOptions::default().fresh(),
        )
        .await?;
    state
        .mailer
        .enqueue(crate::application::messages::invitation(
            email.as_str(),
            &establishment_name,
            role.as_str(),
            &state.config.frontend_base_url(),
            &token,
        ));
    state.bus.visible(&outcome).await;
    Ok((
        StatusCode::CREATED,
        Json(InviteResponse {
            invitation_id,
            status: "sent",
        }),
    ))
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
    State(state): State<AppState>,
    me: Principal,
    Path(establishment_id): Path<String>,
) -> ApiResult<Json<UserList>> {
    me.member_of(&establishment_id)?;
    let members = sqlx::query(
        "SELECT u.id, u.email, u.display_name, m.role, m.created_at
         FROM rm_memberships m JOIN rm_users u ON u.id = m.user_id
         WHERE m.establishment_id = $1 ORDER BY m.created_at, u.id",
    )
    .bind(&establishment_id)
    .fetch_all(&state.pool)
    .await?;
    let invitations = sqlx::query(
        "SELECT id, email, role, status, expires_at FROM rm_invitations
         WHERE establishment_id = $1 AND status = 'pending' AND expires_at > now() ORDER BY created_at",
    )
    .bind(&establishment_id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(UserList {
        items: members
            .iter()
            .map(|r| MemberView {
                user_id: r.get("id"),
                email: r.get("email"),
                display_name: r.get("display_name"),
                role: r.get::<String, _>("role").parse().unwrap_or(Role::Viewer),
                joined_at: r.get("created_at"),
            })
            .collect(),
        pending_invitations: invitations
            .iter()
            .map(|r| InvitationView {
                invitation_id: r.get("id"),
                email: r.get("email"),
                role: r.get("role"),
                status: r.get("status"),
                expires_at: r.get("expires_at"),
            })
            .collect(),
    }))
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
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(user_id): Path<String>,
    ApiJson(req): ApiJson<ChangeRoleRequest>,
) -> ApiResult<Json<MembershipView>> {
    me.require(&req.establishment_id, Role::Admin)?;
    let role: Role = req.role.parse()?;
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&req.establishment_id);
    let outcome = state
        .bus
        .execute::<Establishment>(
            &req.establishment_id,
            EstablishmentCommand::ChangeMemberRole {
                user_id: user_id.clone(),
                role,
            },
            &ctx,
            ExecOptions::default(),
        )
        .await?;
    state.bus.visible(&outcome).await;
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
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path((establishment_id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    me.require(&establishment_id, Role::Admin)?;
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&establishment_id);
    let outcome = state
        .bus
        .execute::<Establishment>(
            &establishment_id,
            EstablishmentCommand::RemoveMember { user_id },
            &ctx,
            ExecOptions::default(),
        )
        .await?;
    state.bus.visible(&outcome).await;
    Ok(StatusCode::NO_CONTENT)
}
