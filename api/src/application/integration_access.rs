//! Opening an integration's credentials for the tool proxy, and refreshing OAuth access tokens
//! one at a time per connection: an in-process lock per integration (concurrent tool calls of
//! one process wait for one refresh) around a PostgreSQL transaction-scoped advisory lock
//! (processes sharing the database wait for each other). Inside both, the integration is
//! reloaded from the store: if someone refreshed meanwhile, their token is used. A refresh
//! token the provider refuses (`invalid_grant`) marks the integration `needs_reauth`.

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::integration::{
    CredentialRef, Integration, IntegrationCommand, IntegrationType, Unusable,
};
use chrono::Utc;
use parking_lot::Mutex;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::adapters::integrations::google::GoogleOAuth;
use crate::adapters::integrations::ProviderError;
use crate::secrets::Vault;
use crate::store::{CommandBus, CommandContext, ExecOptions};

/// Why no credentials could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccessError {
    #[error("the integration cannot be used: {0:?}")]
    Unusable(Unusable),
    #[error("the provider refused the refresh token; the integration needs re-authorisation")]
    NeedsReauth,
    #[error("refreshing the access token failed: {0}")]
    Refresh(ProviderError),
    #[error("{0}")]
    Unexpected(String),
}

/// Opened credentials (never logged) and which version they are.
pub struct Opened {
    pub credential: CredentialRef,
    pub value: Value,
}

pub struct IntegrationAccess {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
    pub vault: Arc<Vault>,
    pub oauth: Arc<dyn GoogleOAuth>,
    pub refresh_margin_seconds: i64,
    pub refreshing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn unexpected(e: impl std::fmt::Display) -> AccessError {
    AccessError::Unexpected(e.to_string())
}

impl IntegrationAccess {
    /// The current credentials of a usable integration, refreshing an OAuth access token that
    /// is about to expire.
    pub async fn open(&self, integration: &Integration) -> Result<Opened, AccessError> {
        let credential = integration.usable().map_err(AccessError::Unusable)?.clone();
        if integration.needs_refresh(Utc::now(), self.refresh_margin_seconds) {
            return self.refresh(&integration.id, credential.version).await;
        }
        let value = self
            .vault
            .open(&integration.id, &credential.secret_id)
            .await
            .map_err(unexpected)?;
        Ok(Opened { credential, value })
    }

    /// Refreshes the access token unless a newer version than `stale_version` exists already
    /// (another caller refreshed it). One refresh at a time per integration, across processes.
    pub async fn refresh(
        &self,
        integration_id: &str,
        stale_version: u32,
    ) -> Result<Opened, AccessError> {
        let local = self
            .refreshing
            .lock()
            .entry(integration_id.to_string())
            .or_default()
            .clone();
        let _local = local.lock().await;
        let mut tx = self.pool.begin().await.map_err(unexpected)?;
        // Read-only transaction: takes no transaction id, so it holds no projector back.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("integration-token-refresh:{integration_id}"))
            .execute(&mut *tx)
            .await
            .map_err(unexpected)?;
        let (fresh, _) = self
            .bus
            .store()
            .load::<Integration>(integration_id)
            .await
            .map_err(unexpected)?;
        let credential = fresh.usable().map_err(|u| match u {
            Unusable::NeedsReauth => AccessError::NeedsReauth,
            u => AccessError::Unusable(u),
        })?;
        let opened = self
            .vault
            .open(integration_id, &credential.secret_id)
            .await
            .map_err(unexpected)?;
        if credential.version > stale_version
            && !fresh.needs_refresh(Utc::now(), self.refresh_margin_seconds)
        {
            return Ok(Opened {
                credential: credential.clone(),
                value: opened,
            });
        }
        if fresh.integration_type != Some(IntegrationType::GoogleCalendar) {
            return Err(AccessError::Unusable(Unusable::NeedsReauth));
        }
        let ctx = CommandContext::system("token-refresh").in_establishment(&fresh.establishment_id);
        let refresh_token = opened
            .get("refresh_token")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        metrics::counter!("integration_token_refreshes_total").increment(1);
        let tokens = match self.oauth.refresh(&refresh_token).await {
            Ok(t) => t,
            Err(e) if e.code == "invalid_grant" || refresh_token.is_empty() => {
                tracing::warn!(
                    integration_id,
                    "refresh token refused: needs re-authorisation"
                );
                let outcome = self
                    .bus
                    .execute::<Integration>(
                        integration_id,
                        IntegrationCommand::MarkNeedsReauth {
                            reason: "invalid_grant: the refresh token was refused".into(),
                            at: Utc::now(),
                        },
                        &ctx,
                        ExecOptions::default(),
                    )
                    .await
                    .map_err(unexpected)?;
                self.bus.visible(&outcome).await;
                return Err(AccessError::NeedsReauth);
            }
            Err(e) => return Err(AccessError::Refresh(e)),
        };
        let value = json!({
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token.unwrap_or(refresh_token),
        });
        let secret_id = self
            .vault
            .seal(integration_id, &value)
            .await
            .map_err(unexpected)?;
        let outcome = self
            .bus
            .execute::<Integration>(
                integration_id,
                IntegrationCommand::RecordTokenRefresh {
                    secret_id,
                    access_expires_at: tokens.expires_at,
                    at: Utc::now(),
                },
                &ctx,
                ExecOptions::default(),
            )
            .await
            .map_err(unexpected)?;
        tx.commit().await.map_err(unexpected)?;
        let credential = outcome
            .state()
            .and_then(|s| s.credential.clone())
            .ok_or_else(|| unexpected("the refresh recorded no credential"))?;
        Ok(Opened { credential, value })
    }
}
