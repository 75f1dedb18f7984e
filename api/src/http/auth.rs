//! `/auth/*` and `/me`: login, logout, password reset, invitation acceptance.

use std::net::SocketAddr;
use std::sync::Arc;

use aggregates::common::Role;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::application::accounts::{
    Accounts, ForgotError, LoggedIn, LoginError, ResetError, Throttled,
};
use crate::application::invitations::{AcceptError, Acceptance, Accepted, Invitations};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, RequestId as ReqId};
use crate::http::principal::Principal;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
        .routes(routes!(accept_invite))
        .routes(routes!(me))
}

/// The client's socket address (for the login throttle).
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_else(|| "unknown".into()),
        ))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginUser {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub default_establishment_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub user: LoginUser,
}

/// Exchanges e-mail and password for an access token. Repeated failures for one account or
/// one client answer 429 with Retry-After.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, description = "wrong e-mail or password"),
              (status = 429, description = "too many failed attempts")))]
async fn login(
    State(accounts): State<Arc<Accounts>>,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let session = accounts.login(&req.email, &req.password, &client).await?;
    Ok(Json(session.into()))
}

impl From<LoggedIn> for LoginResponse {
    fn from(s: LoggedIn) -> Self {
        Self {
            access_token: s.access_token,
            token_type: "bearer",
            expires_in: s.expires_in,
            user: LoginUser {
                id: s.user_id,
                email: s.email,
                display_name: s.display_name,
                default_establishment_id: s.default_establishment_id,
            },
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Invalid(i) => i.into(),
            LoginError::Throttled(wait) => ApiError::too_many_requests(wait),
            e @ LoginError::InvalidCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                e.to_string(),
            ),
            LoginError::Unexpected(e) => e.into(),
        }
    }
}

/// Ends the session: the token stops working at once.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "logged out"), (status = 401)))]
async fn logout(State(accounts): State<Arc<Accounts>>, me: Principal) -> ApiResult<StatusCode> {
    accounts.logout(&me.session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotPasswordRequest {
    pub email: String,
}

#[derive(Serialize, ToSchema)]
pub struct StatusResponse {
    pub status: &'static str,
}

/// Mails a single-use reset token (valid one hour) when the account exists. Always 202: the
/// answer does not reveal whether an account exists.
#[utoipa::path(post, path = "/auth/forgot-password", tag = "auth", request_body = ForgotPasswordRequest,
    responses((status = 202, body = StatusResponse)))]
async fn forgot_password(
    State(accounts): State<Arc<Accounts>>,
    ReqId(request_id): ReqId,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<ForgotPasswordRequest>,
) -> ApiResult<(StatusCode, Json<StatusResponse>)> {
    accounts
        .forgot_password(req.email, &client, request_id)
        .await
        .map_err(|e| match e {
            ForgotError::Throttled(Throttled(wait)) => ApiError::too_many_requests(wait),
            ForgotError::Unexpected(e) => e.into(),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StatusResponse { status: "accepted" }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    pub token: String,
    pub password: String,
}

/// Sets a new password with a mailed reset token (single use). Every session of the account
/// ends.
#[utoipa::path(post, path = "/auth/reset-password", tag = "auth", request_body = ResetPasswordRequest,
    responses((status = 200, body = StatusResponse), (status = 400, description = "invalid, used or expired token"),
              (status = 422, description = "password too short or too long")))]
async fn reset_password(
    State(accounts): State<Arc<Accounts>>,
    ReqId(request_id): ReqId,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<ResetPasswordRequest>,
) -> ApiResult<Json<StatusResponse>> {
    accounts
        .reset_password(&req.token, &req.password, &client, &request_id)
        .await?;
    Ok(Json(StatusResponse {
        status: "password_reset",
    }))
}

impl From<ResetError> for ApiError {
    fn from(e: ResetError) -> Self {
        match e {
            ResetError::Invalid(i) => i.into(),
            ResetError::Throttled(Throttled(wait)) => ApiError::too_many_requests(wait),
            e @ ResetError::Expired => ApiError::bad_request("token_expired", e.to_string()),
            e @ ResetError::InvalidToken => ApiError::bad_request("invalid_token", e.to_string()),
            ResetError::Command(e) => e.into(),
            ResetError::Unexpected(e) => e.into(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInviteRequest {
    pub token: String,
    /// Required when the invited e-mail has no account yet.
    pub password: Option<String>,
    /// Required when the invited e-mail has no account yet.
    pub display_name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AcceptInviteResponse {
    pub user_id: String,
    pub establishment_id: String,
    #[schema(value_type = String, example = "operator")]
    pub role: Role,
    pub status: &'static str,
    /// Whether the invitation created a new account (else it added a membership).
    pub account_created: bool,
}

/// Accepts an invitation: creates the account, or adds the membership when the e-mail
/// already has one (no password needed then).
#[utoipa::path(post, path = "/auth/accept-invite", tag = "auth", request_body = AcceptInviteRequest,
    responses((status = 200, body = AcceptInviteResponse), (status = 400, description = "invalid, used, revoked or expired token"),
              (status = 422, description = "password or display name missing or invalid")))]
async fn accept_invite(
    State(invitations): State<Arc<Invitations>>,
    ReqId(request_id): ReqId,
    ApiJson(req): ApiJson<AcceptInviteRequest>,
) -> ApiResult<Json<AcceptInviteResponse>> {
    let accepted = invitations
        .accept(Acceptance {
            request_id,
            token: req.token,
            password: req.password,
            display_name: req.display_name,
        })
        .await?;
    Ok(Json(accepted.into()))
}

impl From<Accepted> for AcceptInviteResponse {
    fn from(a: Accepted) -> Self {
        Self {
            user_id: a.user_id,
            establishment_id: a.establishment_id,
            role: a.role,
            status: "accepted",
            account_created: a.account_created,
        }
    }
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> Self {
        match e {
            e @ AcceptError::InvalidToken => ApiError::bad_request("invalid_token", e.to_string()),
            AcceptError::Invalid(i) => i.into(),
            AcceptError::Invitation(e) => e.into(),
            AcceptError::Registration(e) => e.into(),
            AcceptError::Membership(e) => e.into(),
            AcceptError::Concurrent => ApiError::conflict("concurrent_modification", "retry"),
            AcceptError::Unexpected(e) => e.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MeUser {
    pub id: String,
    pub email: String,
    pub display_name: String,
}

#[derive(Serialize, ToSchema)]
pub struct Membership {
    pub establishment_id: String,
    #[schema(value_type = String, example = "admin")]
    pub role: Role,
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    pub user: MeUser,
    pub memberships: Vec<Membership>,
}

/// The caller and their memberships.
#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = MeResponse), (status = 401)))]
async fn me(me: Principal) -> Json<MeResponse> {
    Json(MeResponse {
        memberships: me
            .memberships
            .iter()
            .map(|(e, r)| Membership {
                establishment_id: e.clone(),
                role: *r,
            })
            .collect(),
        user: MeUser {
            id: me.user_id,
            email: me.email,
            display_name: me.display_name,
        },
    })
}
