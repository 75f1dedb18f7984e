//! Use cases of integrations (prd §7.8, A.7): connect (OAuth or credentials), the OAuth
//! callback, list, enable/disable/rename/rotate, revoke. Credentials are sealed in the vault
//! *before* the event that references them is appended (docs/adr/0009-integration-secrets.md);
//! no answer after connect carries a credential, except a generated webhook signing secret,
//! shown once.

use std::sync::Arc;
use std::time::Duration;

use aggregates::integration::{
    ConnectAuth, Integration, IntegrationCommand, IntegrationError, IntegrationStatus,
    IntegrationType,
};
use chrono::Utc;
use projections::integrations::{self, IntegrationRow};
use serde_json::{json, Map, Value};
use sqlx::PgPool;

use super::integration_credentials::{self, Parsed};
use super::{unexpected_from, Invalid, Unexpected};
use crate::adapters::integrations::crm::CrmWebhooks;
use crate::adapters::integrations::google::GoogleOAuth;
use crate::auth::tokens::{hash_secret, one_time_token};
use crate::secrets::{Vault, VaultError};
use crate::store::{CommandBus, CommandContext, ExecError, ExecOptions};

/// How a connection authenticates, parsed at the boundary.
#[derive(Debug, Clone)]
pub enum AuthInput {
    OAuth { redirect_url: url::Url },
    ApiKey { credentials: Map<String, Value> },
}

#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub establishment_id: String,
    pub integration_type: IntegrationType,
    pub display_name: String,
    pub auth: AuthInput,
}

/// The answer to a connect (A.7).
#[derive(Debug, Clone)]
pub struct Connected {
    pub integration_id: String,
    pub integration_type: IntegrationType,
    pub status: IntegrationStatus,
    pub auth_url: Option<String>,
    /// A generated webhook signing secret: in this answer and nowhere else, ever.
    pub signing_secret: Option<String>,
}

/// What to change (`None`: keep).
#[derive(Debug, Clone, Default)]
pub struct IntegrationChanges {
    pub enabled: Option<bool>,
    pub display_name: Option<String>,
    pub credentials: Option<Map<String, Value>>,
}

/// Where the OAuth callback sends the browser.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackRedirect {
    pub location: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IntegrationsError {
    #[error("integration not found")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the establishment already has a {0} integration; revoke it first")]
    AlreadyConnected(IntegrationType),
    #[error(
        "Google OAuth is not configured on this server (GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET)"
    )]
    OAuthNotConfigured,
    #[error("the authorisation state is unknown or malformed")]
    BadState,
    #[error(transparent)]
    Command(#[from] ExecError<IntegrationError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

unexpected_from!(IntegrationsError);

impl From<VaultError> for IntegrationsError {
    fn from(e: VaultError) -> Self {
        Self::Unexpected(Unexpected::Other(e.to_string()))
    }
}

pub struct Integrations {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
    pub vault: Arc<Vault>,
    pub oauth: Arc<dyn GoogleOAuth>,
    pub crm: Arc<dyn CrmWebhooks>,
    pub state_ttl: Duration,
}

impl Integrations {
    /// Connects an integration of `req.establishment_id` (the caller checked the actor is an
    /// admin there).
    pub async fn connect(
        &self,
        ctx: &CommandContext,
        req: ConnectRequest,
    ) -> Result<Connected, IntegrationsError> {
        let t = req.integration_type;
        let id = crate::ids::new_id("int");
        let now = Utc::now();
        let (auth, auth_url, shown_once) = match (&req.auth, t.uses_oauth()) {
            (AuthInput::OAuth { redirect_url }, true) => {
                if !self.oauth.configured() {
                    return Err(IntegrationsError::OAuthNotConfigured);
                }
                let (state, state_hash) = one_time_token(&id);
                let ttl = chrono::Duration::from_std(self.state_ttl)
                    .unwrap_or(chrono::Duration::minutes(15));
                (
                    ConnectAuth::OAuth {
                        redirect_url: redirect_url.to_string(),
                        state_hash,
                        state_expires_at: now + ttl,
                    },
                    Some(self.oauth.authorization_url(&state)),
                    None,
                )
            }
            (AuthInput::ApiKey { credentials }, false) => {
                let Parsed { sealed, shown_once } =
                    integration_credentials::parse(t, credentials, self.crm.as_ref()).await?;
                let secret_id = self.vault.seal(&id, &sealed).await?;
                (ConnectAuth::Credentials { secret_id }, None, shown_once)
            }
            (_, true) => {
                return Err(
                    Invalid::new("auth.mode", format!("{t} connects with \"oauth\"")).into(),
                )
            }
            (_, false) => {
                return Err(
                    Invalid::new("auth.mode", format!("{t} connects with \"api_key\"")).into(),
                )
            }
        };
        let ctx = ctx.clone().in_establishment(&req.establishment_id);
        let outcome = self
            .bus
            .execute::<Integration>(
                &id,
                IntegrationCommand::Connect {
                    integration_id: id.clone(),
                    establishment_id: req.establishment_id.clone(),
                    integration_type: t,
                    display_name: req.display_name,
                    auth,
                    connected_by: ctx.actor.id().to_string(),
                    at: now,
                },
                &ctx,
                ExecOptions::default().fresh(),
            )
            .await
            .map_err(|e| match e {
                ExecError::ClaimTaken { .. } => IntegrationsError::AlreadyConnected(t),
                e => e.into(),
            })?;
        self.bus.visible(&outcome).await;
        let status = outcome
            .state()
            .map(|s| s.status)
            .unwrap_or(IntegrationStatus::PendingAuth);
        Ok(Connected {
            integration_id: id,
            integration_type: t,
            status,
            auth_url,
            signing_secret: shown_once,
        })
    }

    /// The establishment an integration belongs to (`None`: no such integration), for the
    /// caller's authorisation.
    pub async fn owner(&self, integration_id: &str) -> Result<Option<String>, IntegrationsError> {
        let (i, _) = self.bus.load::<Integration>(integration_id).await?;
        Ok(i.exists().then_some(i.establishment_id))
    }

    pub async fn list(
        &self,
        establishment_id: &str,
    ) -> Result<Vec<IntegrationRow>, IntegrationsError> {
        Ok(integrations::of_establishment(&self.pool, establishment_id).await?)
    }

    /// Enables, disables, renames or rotates credentials; answers the integration as read
    /// back and a new webhook signing secret when a CRM endpoint was rotated.
    pub async fn update(
        &self,
        ctx: &CommandContext,
        integration_id: &str,
        changes: IntegrationChanges,
    ) -> Result<(IntegrationRow, Option<String>), IntegrationsError> {
        let (current, _) = self.bus.load::<Integration>(integration_id).await?;
        let t = current
            .integration_type
            .ok_or(IntegrationsError::NotFound)?;
        let ctx = ctx.clone().in_establishment(&current.establishment_id);
        let now = Utc::now();
        let by = ctx.actor.id().to_string();
        let mut shown_once = None;
        let mut commands = Vec::new();
        if let Some(c) = &changes.credentials {
            if t.uses_oauth() {
                return Err(Invalid::new(
                    "credentials",
                    format!("{t} credentials come from OAuth; connect again to re-authorise"),
                )
                .into());
            }
            if current.status == IntegrationStatus::Revoked {
                return Err(ExecError::Domain(IntegrationError::Revoked).into());
            }
            let parsed = integration_credentials::parse(t, c, self.crm.as_ref())
                .await
                .map_err(|e| Invalid::new(e.field.replacen("auth.", "", 1), e.reason))?;
            shown_once = parsed.shown_once;
            let secret_id = self.vault.seal(integration_id, &parsed.sealed).await?;
            commands.push(IntegrationCommand::RotateCredentials {
                secret_id,
                rotated_by: by.clone(),
                at: now,
            });
        }
        if let Some(name) = changes.display_name {
            commands.push(IntegrationCommand::Rename {
                display_name: name,
                at: now,
            });
        }
        if let Some(enabled) = changes.enabled {
            commands.push(IntegrationCommand::SetEnabled {
                enabled,
                by: by.clone(),
                at: now,
            });
        }
        for command in commands {
            let outcome = self
                .bus
                .execute::<Integration>(integration_id, command, &ctx, ExecOptions::default())
                .await?;
            self.bus.visible(&outcome).await;
        }
        let row = integrations::by_id(&self.pool, integration_id)
            .await?
            .ok_or(IntegrationsError::NotFound)?;
        Ok((row, shown_once))
    }

    /// Revokes an integration: the tool proxy stops using it at once and its type may be
    /// connected again.
    pub async fn revoke(
        &self,
        ctx: &CommandContext,
        integration_id: &str,
    ) -> Result<(), IntegrationsError> {
        let (current, _) = self.bus.load::<Integration>(integration_id).await?;
        if !current.exists() {
            return Err(IntegrationsError::NotFound);
        }
        if current.status == IntegrationStatus::Revoked {
            return Ok(());
        }
        let ctx = ctx.clone().in_establishment(&current.establishment_id);
        let outcome = self
            .bus
            .execute::<Integration>(
                integration_id,
                IntegrationCommand::Revoke {
                    revoked_by: ctx.actor.id().to_string(),
                    at: Utc::now(),
                },
                &ctx,
                ExecOptions::default(),
            )
            .await?;
        self.bus.visible(&outcome).await;
        Ok(())
    }

    /// The OAuth callback: consumes the single-use state, exchanges the code, seals the
    /// tokens, and tells where to send the browser (the integration's `redirect_url` with
    /// `integration_id`, `status` and, on failure, `error`). A state that names no pending
    /// authorisation is `BadState` (answered 400: there is nowhere safe to redirect).
    pub async fn oauth_callback(
        &self,
        ctx: &CommandContext,
        state: &str,
        code: Option<&str>,
        provider_error: Option<&str>,
    ) -> Result<CallbackRedirect, IntegrationsError> {
        let (integration_id, _) = state.split_once('.').ok_or(IntegrationsError::BadState)?;
        if integration_id.len() > 64 || state.len() > 256 {
            return Err(IntegrationsError::BadState);
        }
        let (current, _) = self.bus.load::<Integration>(integration_id).await?;
        let Some(pending) = current.pending_auth.clone().filter(|_| current.exists()) else {
            return Err(IntegrationsError::BadState);
        };
        let ctx = ctx.clone().in_establishment(&current.establishment_id);
        let redirect = |status: &str, error: Option<&str>| {
            let mut url = url::Url::parse(&pending.redirect_url).expect("stored as a URL");
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("integration_id", integration_id)
                    .append_pair("status", status);
                if let Some(e) = error {
                    q.append_pair("error", e);
                }
            }
            CallbackRedirect {
                location: url.to_string(),
            }
        };
        let consumed = self
            .bus
            .execute::<Integration>(
                integration_id,
                IntegrationCommand::ConsumeAuthState {
                    state_hash: hash_secret(state.split_once('.').map_or("", |(_, s)| s)),
                    now: Utc::now(),
                },
                &ctx,
                ExecOptions::default(),
            )
            .await;
        match consumed {
            Ok(_) => {}
            Err(ExecError::Domain(IntegrationError::InvalidState)) => {
                return Err(IntegrationsError::BadState)
            }
            Err(ExecError::Domain(IntegrationError::StateExpired)) => {
                return Ok(redirect("pending_auth", Some("state_expired")))
            }
            Err(ExecError::Domain(IntegrationError::StateUsed)) => {
                return Ok(redirect(current.status.as_str(), Some("state_used")))
            }
            Err(e) => return Err(e.into()),
        }
        let fail = |reason: &str| IntegrationCommand::FailAuthorization {
            reason: reason.to_string(),
            at: Utc::now(),
        };
        let code = match (provider_error, code) {
            (Some(e), _) => {
                let e: String = e
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect();
                self.record(integration_id, fail(&e), &ctx).await?;
                return Ok(redirect("pending_auth", Some(&e)));
            }
            (None, Some(c)) if !c.is_empty() && c.len() <= 2048 => c,
            _ => {
                self.record(integration_id, fail("missing_code"), &ctx)
                    .await?;
                return Ok(redirect("pending_auth", Some("missing_code")));
            }
        };
        let tokens = match self.oauth.exchange_code(code).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(integration_id, error = %e.code, "OAuth code exchange failed");
                self.record(
                    integration_id,
                    fail(&format!("token exchange failed: {}", e.code)),
                    &ctx,
                )
                .await?;
                return Ok(redirect("pending_auth", Some("token_exchange_failed")));
            }
        };
        let secret_id = self
            .vault
            .seal(
                integration_id,
                &json!({"access_token": tokens.access_token, "refresh_token": tokens.refresh_token}),
            )
            .await?;
        let outcome = self
            .bus
            .execute::<Integration>(
                integration_id,
                IntegrationCommand::Authorize {
                    secret_id,
                    scopes: tokens.scopes,
                    access_expires_at: tokens.expires_at,
                    at: Utc::now(),
                },
                &ctx,
                ExecOptions::default(),
            )
            .await?;
        self.bus.visible(&outcome).await;
        Ok(redirect("connected", None))
    }

    async fn record(
        &self,
        integration_id: &str,
        command: IntegrationCommand,
        ctx: &CommandContext,
    ) -> Result<(), IntegrationsError> {
        let outcome = self
            .bus
            .execute::<Integration>(integration_id, command, ctx, ExecOptions::default())
            .await?;
        self.bus.visible(&outcome).await;
        Ok(())
    }
}
