//! `/auth/*` and `/me`: login, logout, password reset, invitation acceptance.

use std::net::SocketAddr;

use aggregates::common::{bounded_text, Role};
use aggregates::establishment::{Establishment, EstablishmentCommand};
use aggregates::invitation::{Invitation, InvitationCommand, InvitationStatus};
use aggregates::user::{User, UserCommand, EMAIL_CLAIM};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::password;
use crate::auth::tokens::{one_time_token, parse_one_time_token};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, RequestId as ReqId};
use crate::http::principal::Principal;
use crate::state::AppState;
use crate::store::exec::ExecError;
use crate::store::{Actor, CommandContext, ExecOptions};

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
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let account = req.email.trim().to_ascii_lowercase();
    if account.len() > 254 || req.password.len() > 1024 {
        return Err(ApiError::validation("email", "too long"));
    }
    if let Some(wait) = state.throttle.check(&account, &client) {
        metrics::counter!("logins_throttled_total").increment(1);
        return Err(ApiError::too_many_requests(wait));
    }
    let row =
        sqlx::query("SELECT id, email, display_name, password_hash FROM rm_users WHERE email = $1")
            .bind(&account)
            .fetch_optional(&state.pool)
            .await?;
    let hash = row
        .as_ref()
        .and_then(|r| r.get::<Option<String>, _>("password_hash"));
    let ok = password::verify(&req.password, hash).await;
    let Some(row) = row.filter(|_| ok) else {
        state.throttle.record_failure(&account, &client);
        metrics::counter!("logins_failed_total").increment(1);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the e-mail or the password is wrong",
        ));
    };
    state.throttle.record_success(&account);
    let user_id: String = row.get("id");
    let ttl = state.config.access_token_ttl_seconds;
    let session_id = crate::ids::new_id("ses");
    let expires_at = Utc::now() + Duration::seconds(ttl as i64);
    sqlx::query("INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(&session_id)
        .bind(&user_id)
        .bind(expires_at)
        .execute(&state.pool)
        .await?;
    let access_token = state.jwt.sign(&user_id, &session_id, expires_at)?;
    let default_establishment_id: Option<String> = sqlx::query_scalar(
        "SELECT establishment_id FROM rm_memberships WHERE user_id = $1
         ORDER BY created_at, establishment_id LIMIT 1",
    )
    .bind(&user_id)
    .fetch_optional(&state.pool)
    .await?;
    Ok(Json(LoginResponse {
        access_token,
        token_type: "bearer",
        expires_in: ttl,
        user: LoginUser {
            id: user_id,
            email: row.get("email"),
            display_name: row.get("display_name"),
            default_establishment_id,
        },
    }))
}

/// Ends the session: the token stops working at once.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "logged out"), (status = 401)))]
async fn logout(State(state): State<AppState>, me: Principal) -> ApiResult<StatusCode> {
    sqlx::query("UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(&me.session_id)
        .execute(&state.pool)
        .await?;
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
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    ApiJson(req): ApiJson<ForgotPasswordRequest>,
) -> (StatusCode, Json<StatusResponse>) {
    // The work happens after the answer, so timing reveals nothing either.
    tokio::spawn(async move {
        if let Err(e) = send_reset(&state, &req.email, &request_id).await {
            tracing::error!(error = %format!("{e:#}"), "password reset request failed");
        }
    });
    (
        StatusCode::ACCEPTED,
        Json(StatusResponse { status: "accepted" }),
    )
}

async fn send_reset(state: &AppState, email: &str, request_id: &str) -> anyhow::Result<()> {
    let Ok(email) = email.parse::<aggregates::common::Email>() else {
        return Ok(());
    };
    let Some(user_id) = state
        .bus
        .store()
        .claim_owner(EMAIL_CLAIM, email.as_str())
        .await?
    else {
        return Ok(());
    };
    let reset_id = crate::ids::new_id("rst");
    let (token, token_hash) = one_time_token(&format!("{user_id}:{reset_id}"));
    let ctx = CommandContext::from_request(Actor::System("password-reset".into()), request_id);
    state
        .bus
        .execute::<User>(
            &user_id,
            UserCommand::RequestPasswordReset {
                reset_id,
                token_hash,
                expires_at: Utc::now() + Duration::hours(1),
            },
            &ctx,
            ExecOptions::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    state
        .mailer
        .enqueue(crate::application::messages::password_reset(
            email.as_str(),
            &state.config.frontend_base_url(),
            &token,
        ));
    Ok(())
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
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    ApiJson(req): ApiJson<ResetPasswordRequest>,
) -> ApiResult<Json<StatusResponse>> {
    password::check_policy(&req.password)?;
    let invalid = || {
        ApiError::bad_request(
            "invalid_token",
            "the reset token is invalid or has already been used",
        )
    };
    let (id, token_hash) = parse_one_time_token(&req.token).ok_or_else(invalid)?;
    let (user_id, reset_id) = id.split_once(':').ok_or_else(invalid)?;
    if !crate::ids::is_id("usr", user_id) {
        return Err(invalid());
    }
    let ctx = CommandContext::from_request(Actor::User(user_id.to_string()), &request_id);
    let outcome = state
        .bus
        .execute::<User>(
            user_id,
            UserCommand::ResetPassword {
                reset_id: reset_id.to_string(),
                token_hash,
                password_hash: password::hash(&req.password).await?,
                now: Utc::now(),
            },
            &ctx,
            ExecOptions::default(),
        )
        .await
        .map_err(|e| match e {
            ExecError::Domain(aggregates::user::UserError::NotRegistered) => invalid(),
            e => e.into(),
        })?;
    sqlx::query("UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .execute(&state.pool)
        .await?;
    state.bus.visible(&outcome).await;
    Ok(Json(StatusResponse {
        status: "password_reset",
    }))
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
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    ApiJson(req): ApiJson<AcceptInviteRequest>,
) -> ApiResult<Json<AcceptInviteResponse>> {
    let invalid = || ApiError::bad_request("invalid_token", "the invitation token is invalid");
    let (invitation_id, token_hash) = parse_one_time_token(&req.token).ok_or_else(invalid)?;
    if !crate::ids::is_id("inv", &invitation_id) {
        return Err(invalid());
    }
    let (invitation, _) = state.bus.load::<Invitation>(&invitation_id).await?;
    if invitation.status == InvitationStatus::None {
        return Err(invalid());
    }
    let now = Utc::now();
    // Check the token before creating anything (the Accept below re-checks atomically).
    invitation
        .decide(InvitationCommand::Accept {
            token_hash: token_hash.clone(),
            user_id: String::new(),
            now,
        })
        .map_err(|e| ApiError::from(ExecError::Domain(e)))?;
    let (Some(email), Some(role)) = (invitation.email.clone(), invitation.role) else {
        return Err(invalid());
    };
    let establishment_id = invitation.establishment_id.clone();
    let store = state.bus.store();
    let mut account_created = false;
    let user_id = match store.claim_owner(EMAIL_CLAIM, email.as_str()).await? {
        Some(id) => id,
        None => {
            let pw = req.password.as_deref().ok_or_else(|| {
                ApiError::validation("password", "is required to create the account")
            })?;
            password::check_policy(pw)?;
            let display_name = bounded_text(
                "display_name",
                req.display_name.as_deref().ok_or_else(|| {
                    ApiError::validation("display_name", "is required to create the account")
                })?,
                100,
            )?;
            let user_id = crate::ids::new_id("usr");
            let ctx = CommandContext::from_request(Actor::User(user_id.clone()), &request_id);
            match state
                .bus
                .execute::<User>(
                    &user_id,
                    UserCommand::Register {
                        user_id: user_id.clone(),
                        email: email.clone(),
                        display_name,
                        password_hash: Some(password::hash(pw).await?),
                        platform_admin: false,
                    },
                    &ctx,
                    ExecOptions::default(),
                )
                .await
            {
                Ok(outcome) => {
                    state.bus.visible(&outcome).await;
                    account_created = true;
                    user_id
                }
                // Someone registered this e-mail meanwhile: join with that account.
                Err(ExecError::ClaimTaken { .. }) => store
                    .claim_owner(EMAIL_CLAIM, email.as_str())
                    .await?
                    .ok_or_else(|| ApiError::conflict("concurrent_modification", "retry"))?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let ctx = CommandContext::from_request(Actor::User(user_id.clone()), &request_id)
        .in_establishment(&establishment_id);
    let joined = state
        .bus
        .execute::<Establishment>(
            &establishment_id,
            EstablishmentCommand::AddMember {
                user_id: user_id.clone(),
                role,
            },
            &ctx,
            ExecOptions::default(),
        )
        .await?;
    let accepted = state
        .bus
        .execute::<Invitation>(
            &invitation_id,
            InvitationCommand::Accept {
                token_hash,
                user_id: user_id.clone(),
                now,
            },
            &ctx,
            ExecOptions::default(),
        )
        .await?;
    state.bus.visible(&joined).await;
    state.bus.visible(&accepted).await;
    Ok(Json(AcceptInviteResponse {
        user_id,
        establishment_id,
        role,
        status: "accepted",
        account_created,
    }))
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
