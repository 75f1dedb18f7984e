//! Read model of integrations (`rm_integrations`): each row keeps the aggregate state it was
//! derived from and folds the next event with the aggregate's own `apply`. It never holds a
//! credential (events carry none); `last_used_at` comes from the tool-proxy invocations on
//! call streams.

use aggregates::call::CallEvent;
use aggregates::integration::{Integration, IntegrationEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};

use crate::event::StoredEvent;
use crate::runner::Projection;

pub struct IntegrationsProjection;

#[async_trait]
impl Projection for IntegrationsProjection {
    fn name(&self) -> &'static str {
        "integrations"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[Integration::TYPE, "Call"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_integrations"]
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for e in events {
            if e.aggregate_type == Integration::TYPE {
                apply_integration(tx, e).await?;
            } else if e.event_type == "ToolProxyRequested" {
                if let CallEvent::ToolProxyRequested { request } = e.decode::<CallEvent>()? {
                    sqlx::query(
                        "UPDATE rm_integrations SET last_used_at = greatest(last_used_at, $2)
                         WHERE id = $1",
                    )
                    .bind(&request.integration_id)
                    .bind(request.at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        Ok(())
    }
}

async fn apply_integration(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let event: IntegrationEvent = e.decode()?;
    let previous: Option<(Value,)> =
        sqlx::query_as("SELECT state FROM rm_integrations WHERE id = $1")
            .bind(&e.aggregate_id)
            .fetch_optional(&mut *tx)
            .await?;
    let mut i = match previous {
        Some((state,)) => serde_json::from_value::<Integration>(state)?,
        None => Integration::default(),
    };
    i.apply(event);
    let Some(t) = i.integration_type else {
        anyhow::bail!(
            "integration {} has events before it was connected",
            e.aggregate_id
        );
    };
    sqlx::query(
        "INSERT INTO rm_integrations (id, establishment_id, type, display_name, status, enabled,
             scopes, redirect_url, last_error, created_at, updated_at, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO UPDATE SET display_name = EXCLUDED.display_name,
             status = EXCLUDED.status, enabled = EXCLUDED.enabled, scopes = EXCLUDED.scopes,
             redirect_url = EXCLUDED.redirect_url, last_error = EXCLUDED.last_error,
             updated_at = EXCLUDED.updated_at, state = EXCLUDED.state",
    )
    .bind(&e.aggregate_id)
    .bind(&i.establishment_id)
    .bind(t.as_str())
    .bind(&i.display_name)
    .bind(i.status.as_str())
    .bind(i.enabled)
    .bind(serde_json::to_value(&i.scopes)?)
    .bind(&i.redirect_url)
    .bind(&i.last_error)
    .bind(i.created_at.unwrap_or(e.recorded_at))
    .bind(i.updated_at.unwrap_or(e.recorded_at))
    .bind(serde_json::to_value(&i)?)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads of `rm_integrations`
// ---------------------------------------------------------------------------------------------

/// An integration as the API lists it (never a secret: the read model holds none).
#[derive(Debug, Clone, FromRow)]
pub struct IntegrationRow {
    pub id: String,
    pub establishment_id: String,
    #[sqlx(rename = "type")]
    pub integration_type: String,
    pub display_name: String,
    pub status: String,
    pub enabled: bool,
    pub scopes: Value,
    pub last_error: Option<String>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, establishment_id, type, display_name, status, enabled, scopes, \
                       last_error, last_used_at, created_at";

/// An establishment's integrations (revoked ones included), oldest first.
pub async fn of_establishment(
    pool: &PgPool,
    establishment_id: &str,
) -> sqlx::Result<Vec<IntegrationRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_integrations WHERE establishment_id = $1
         ORDER BY created_at, id"
    ))
    .bind(establishment_id)
    .fetch_all(pool)
    .await
}

/// One integration.
pub async fn by_id(pool: &PgPool, id: &str) -> sqlx::Result<Option<IntegrationRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_integrations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Ids of every integration (for the master-key rotation's report).
pub async fn all_ids(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT id FROM rm_integrations ORDER BY id")
        .fetch_all(pool)
        .await
}
