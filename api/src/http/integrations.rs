//! Integrations (prd §7.8, A.7): `POST/GET /establishments/{id}/integrations`,
//! `PATCH/DELETE /integrations/{integrationId}` and the OAuth callback
//! `GET /integrations/oauth/callback`. Admins write; operators and viewers read; a foreign or
//! unknown id answers 404. No answer carries a credential, except a generated CRM signing
//! secret in the answer that created it.

use std::sync::Arc;

use aggregates::common::Role;
use aggregates::integration::IntegrationError;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use projections::integrations::IntegrationRow;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::establishments::establishment_scope;
use crate::application::integrations::{
    AuthInput, ConnectRequest, IntegrationChanges, Integrations, IntegrationsError,
};
use crate::http::error::{ApiError, ApiResult, DomainError};
use crate::http::extract::{ApiJson, ApiQuery, RequestId};
use crate::http::principal::Principal;
use crate::state::AppState;
use crate::store::{Actor, CommandContext};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(connect, list))
        .routes(routes!(update, revoke))
        .routes(routes!(oauth_callback))
}

/// How the connection authenticates.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthRequest {
    /// `oauth` (google_calendar) or `api_key` (whatsapp, email, crm_webhook).
    #[schema(example = "oauth")]
    pub mode: String,
    /// `oauth`: where the browser returns after the authorisation.
    #[schema(example = "https://app.example.com/settings/integrations")]
    pub redirect_url: Option<String>,
    /// `api_key`: whatsapp `{access_token, phone_number_id}`; email `{}` (the platform's SMTP)
    /// or `{smtp_url, from}`; crm_webhook `{endpoint_url}`.
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Map<String, Value>>,
}

/// `POST /establishments/{id}/integrations` (A.7).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectBody {
    /// `google_calendar`, `whatsapp`, `email` or `crm_webhook`.
    #[serde(rename = "type")]
    #[schema(example = "google_calendar")]
    pub integration_type: String,
    #[schema(example = "Main calendar")]
    pub display_name: String,
    pub auth: AuthRequest,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectAnswer {
    pub integration_id: String,
    #[serde(rename = "type")]
    pub integration_type: String,
    /// `pending_auth` (OAuth) or `connected`.
    pub status: String,
    /// OAuth: where to send the browser.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// crm_webhook: the HMAC signing secret, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

/// An integration as listed (never a secret).
#[derive(Serialize, ToSchema)]
pub struct IntegrationView {
    pub id: String,
    pub establishment_id: String,
    #[serde(rename = "type")]
    pub integration_type: String,
    pub display_name: String,
    /// `pending_auth`, `connected`, `needs_reauth` or `revoked`.
    pub status: String,
    pub enabled: bool,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// crm_webhook after a rotation: the new signing secret, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

impl From<IntegrationRow> for IntegrationView {
    fn from(r: IntegrationRow) -> Self {
        Self {
            id: r.id,
            establishment_id: r.establishment_id,
            integration_type: r.integration_type,
            display_name: r.display_name,
            status: r.status,
            enabled: r.enabled,
            scopes: serde_json::from_value(r.scopes).unwrap_or_default(),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            last_error: r.last_error,
            signing_secret: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct IntegrationList {
    pub items: Vec<IntegrationView>,
}

/// `PATCH /integrations/{integrationId}`: omitted fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    pub enabled: Option<bool>,
    pub display_name: Option<String>,
    /// New credentials (rotation; key-based types only), same shape as at connect.
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The state given in `auth_url`.
    pub state: Option<String>,
    /// The authorisation code.
    pub code: Option<String>,
    /// Set by the provider when the user denied access.
    pub error: Option<String>,
    /// Granted scopes (informational).
    pub scope: Option<String>,
}

impl DomainError for IntegrationError {
    fn status(&self) -> StatusCode {
        use IntegrationError as E;
        match self {
            E::NotFound => StatusCode::NOT_FOUND,
            E::InvalidDisplayName | E::WrongAuthMode { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::InvalidState | E::StateExpired | E::StateUsed | E::NotAuthorizing => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::CONFLICT,
        }
    }
    fn code(&self) -> &'static str {
        use IntegrationError as E;
        match self {
            E::AlreadyExists => "already_exists",
            E::NotFound => "not_found",
            E::Revoked => "integration_revoked",
            E::InvalidDisplayName | E::WrongAuthMode { .. } => "validation_failed",
            E::InvalidState | E::NotAuthorizing => "invalid_state",
            E::StateExpired => "state_expired",
            E::StateUsed => "state_used",
            E::NotRotatable => "not_rotatable",
            E::NotConnected => "not_connected",
        }
    }
}

impl From<IntegrationsError> for ApiError {
    fn from(e: IntegrationsError) -> Self {
        match e {
            IntegrationsError::NotFound => ApiError::not_found("integration"),
            IntegrationsError::Invalid(i) => i.into(),
            e @ IntegrationsError::AlreadyConnected(_) => {
                ApiError::conflict("integration_exists", e.to_string())
            }
            e @ IntegrationsError::OAuthNotConfigured => {
                ApiError::unavailable("oauth_not_configured", e.to_string())
            }
            e @ IntegrationsError::BadState => {
                ApiError::bad_request("invalid_state", e.to_string())
            }
            IntegrationsError::Command(c) => match c {
                crate::store::ExecError::Domain(IntegrationError::InvalidDisplayName) => {
                    ApiError::validation(
                        "display_name",
                        IntegrationError::InvalidDisplayName.to_string(),
                    )
                }
                c => c.into(),
            },
            IntegrationsError::Unexpected(u) => u.into(),
        }
    }
}

fn ctx(me: &Principal, request_id: &str) -> CommandContext {
    CommandContext::from_request(Actor::User(me.user_id.clone()), request_id)
}

/// Connects an integration (A.7). OAuth types answer `pending_auth` with the `auth_url` to
/// send the browser to; key-based types answer `connected`.
#[utoipa::path(post, path = "/establishments/{id}/integrations", tag = "integrations",
    security(("bearer" = [])), params(("id" = String, Path)), request_body = ConnectBody,
    responses((status = 201, body = ConnectAnswer), (status = 403), (status = 404),
              (status = 409, description = "the establishment already has this type connected"),
              (status = 422, description = "unknown type, wrong auth mode, bad credentials or a refused endpoint"),
              (status = 503, description = "OAuth is not configured on this server")))]
async fn connect(
    State(pool): State<PgPool>,
    State(integrations): State<Arc<Integrations>>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(establishment_id): Path<String>,
    ApiJson(body): ApiJson<ConnectBody>,
) -> ApiResult<(StatusCode, Json<ConnectAnswer>)> {
    establishment_scope(&pool, &me, &establishment_id, Role::Admin).await?;
    let integration_type = body.integration_type.parse()?;
    let auth = match body.auth.mode.as_str() {
        "oauth" => {
            if body.auth.credentials.is_some() {
                return Err(ApiError::validation(
                    "auth.credentials",
                    "oauth takes no credentials",
                ));
            }
            let raw = body.auth.redirect_url.ok_or_else(|| {
                ApiError::validation("auth.redirect_url", "is required for oauth")
            })?;
            let url = url::Url::parse(&raw)
                .ok()
                .filter(|u| {
                    matches!(u.scheme(), "https" | "http")
                        && u.host_str().is_some()
                        && raw.len() <= 2048
                })
                .ok_or_else(|| {
                    ApiError::validation("auth.redirect_url", "must be an absolute http(s) URL")
                })?;
            AuthInput::OAuth { redirect_url: url }
        }
        "api_key" => AuthInput::ApiKey {
            credentials: body.auth.credentials.unwrap_or_default(),
        },
        _ => {
            return Err(ApiError::validation(
                "auth.mode",
                "must be oauth or api_key",
            ))
        }
    };
    let done = integrations
        .connect(
            &ctx(&me, &request_id),
            ConnectRequest {
                establishment_id,
                integration_type,
                display_name: body.display_name,
                auth,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ConnectAnswer {
            integration_id: done.integration_id,
            integration_type: done.integration_type.as_str().to_string(),
            status: done.status.as_str().to_string(),
            auth_url: done.auth_url,
            signing_secret: done.signing_secret,
        }),
    ))
}

/// The establishment's integrations (any member).
#[utoipa::path(get, path = "/establishments/{id}/integrations", tag = "integrations",
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = IntegrationList), (status = 404)))]
async fn list(
    State(pool): State<PgPool>,
    State(integrations): State<Arc<Integrations>>,
    me: Principal,
    Path(establishment_id): Path<String>,
) -> ApiResult<Json<IntegrationList>> {
    establishment_scope(&pool, &me, &establishment_id, Role::Viewer).await?;
    let rows = integrations.list(&establishment_id).await?;
    Ok(Json(IntegrationList {
        items: rows.into_iter().map(Into::into).collect(),
    }))
}

/// 404 unless the caller may see the integration; 403 below `needed`.
async fn authorise(
    integrations: &Integrations,
    me: &Principal,
    integration_id: &str,
    needed: Role,
) -> ApiResult<()> {
    let owner = integrations
        .owner(integration_id)
        .await?
        .ok_or_else(|| ApiError::not_found("integration"))?;
    me.member_of(&owner)
        .map_err(|_| ApiError::not_found("integration"))?;
    me.require(&owner, needed)?;
    Ok(())
}

/// Enables, disables, renames, or rotates the credentials of an integration (admins).
#[utoipa::path(patch, path = "/integrations/{integrationId}", tag = "integrations",
    security(("bearer" = [])), params(("integrationId" = String, Path)), request_body = UpdateBody,
    responses((status = 200, body = IntegrationView), (status = 403), (status = 404),
              (status = 409, description = "revoked, or OAuth credentials (re-authorise instead)"),
              (status = 422)))]
async fn update(
    State(integrations): State<Arc<Integrations>>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(integration_id): Path<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> ApiResult<Json<IntegrationView>> {
    authorise(&integrations, &me, &integration_id, Role::Admin).await?;
    let (row, secret) = integrations
        .update(
            &ctx(&me, &request_id),
            &integration_id,
            IntegrationChanges {
                enabled: body.enabled,
                display_name: body.display_name,
                credentials: body.credentials,
            },
        )
        .await?;
    let mut view = IntegrationView::from(row);
    view.signing_secret = secret;
    Ok(Json(view))
}

/// Revokes an integration (admins): the tool proxy stops using it at once.
#[utoipa::path(delete, path = "/integrations/{integrationId}", tag = "integrations",
    security(("bearer" = [])), params(("integrationId" = String, Path)),
    responses((status = 204), (status = 403), (status = 404)))]
async fn revoke(
    State(integrations): State<Arc<Integrations>>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(integration_id): Path<String>,
) -> ApiResult<StatusCode> {
    authorise(&integrations, &me, &integration_id, Role::Admin).await?;
    integrations
        .revoke(&ctx(&me, &request_id), &integration_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The OAuth redirect target: exchanges the code and sends the browser back to the
/// integration's `redirect_url` with `integration_id` and `status` (and `error` when the
/// authorisation failed). A state that names no pending authorisation answers 400.
#[utoipa::path(get, path = "/integrations/oauth/callback", tag = "integrations",
    params(CallbackQuery),
    responses((status = 302, description = "to the integration's redirect_url"),
              (status = 400, description = "missing, unknown or tampered state")))]
async fn oauth_callback(
    State(integrations): State<Arc<Integrations>>,
    RequestId(request_id): RequestId,
    ApiQuery(q): ApiQuery<CallbackQuery>,
) -> ApiResult<Response> {
    let state = q
        .state
        .ok_or_else(|| ApiError::bad_request("invalid_state", "the state parameter is missing"))?;
    let ctx = CommandContext::from_request(Actor::System("oauth-callback".into()), &request_id);
    let redirect = integrations
        .oauth_callback(&ctx, &state, q.code.as_deref(), q.error.as_deref())
        .await?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, redirect.location),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response())
}
