//! Read model of campaigns (`rm_campaigns`), and the campaign side of `rm_calls`: each
//! campaign call carries its campaign, lead and attempt (generated columns of `requested_by`),
//! so a lead's attempts, a campaign's busy slots and its counters are all derived from call
//! state, never counted in memory.

use aggregates::campaign::{Campaign, CampaignEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};

use crate::event::StoredEvent;
use crate::runner::Projection;

pub struct CampaignsProjection;

#[async_trait]
impl Projection for CampaignsProjection {
    fn name(&self) -> &'static str {
        "campaigns"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[Campaign::TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_campaigns"]
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for e in events {
            let event: CampaignEvent = e.decode()?;
            match event {
                CampaignEvent::CampaignCreated {
                    campaign_id,
                    establishment_id,
                    spec,
                    at,
                    ..
                } => {
                    sqlx::query(
                        "INSERT INTO rm_campaigns (id, establishment_id, name, status, spec,
                             created_at, updated_at)
                         VALUES ($1, $2, $3, 'created', $4, $5, $5) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(campaign_id)
                    .bind(establishment_id)
                    .bind(&spec.name)
                    .bind(serde_json::to_value(&spec)?)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
                CampaignEvent::CampaignStarted { at, .. } => {
                    set_status(tx, &e.aggregate_id, "running", None, at).await?;
                    sqlx::query("UPDATE rm_campaigns SET started_at = coalesce(started_at, $2) WHERE id = $1")
                        .bind(&e.aggregate_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                }
                CampaignEvent::CampaignPaused { reason, at, .. } => {
                    set_status(tx, &e.aggregate_id, "paused", Some(reason), at).await?
                }
                CampaignEvent::CampaignResumed { at, .. } => {
                    set_status(tx, &e.aggregate_id, "running", None, at).await?
                }
                CampaignEvent::CampaignCancelled { at, .. } => {
                    set_status(tx, &e.aggregate_id, "cancelled", None, at).await?
                }
                CampaignEvent::CampaignCompleted { at } => {
                    set_status(tx, &e.aggregate_id, "completed", None, at).await?
                }
            }
        }
        Ok(())
    }
}

async fn set_status(
    tx: &mut PgConnection,
    id: &str,
    status: &str,
    reason: Option<String>,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE rm_campaigns SET status = $2, pause_reason = $3, updated_at = greatest(updated_at, $4)
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(reason)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromRow)]
pub struct CampaignRow {
    pub id: String,
    pub establishment_id: String,
    pub name: String,
    pub status: String,
    pub pause_reason: Option<String>,
    pub spec: Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, establishment_id, name, status, pause_reason, spec, created_at, started_at";

pub async fn by_id(pool: &PgPool, id: &str) -> sqlx::Result<Option<CampaignRow>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM rm_campaigns WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn of_establishment(
    pool: &PgPool,
    establishment_id: &str,
) -> sqlx::Result<Vec<CampaignRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_campaigns WHERE establishment_id = $1
         ORDER BY created_at DESC, id DESC LIMIT 500"
    ))
    .bind(establishment_id)
    .fetch_all(pool)
    .await
}

/// Campaigns the dialer works on.
pub async fn running(pool: &PgPool) -> sqlx::Result<Vec<CampaignRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rm_campaigns WHERE status = 'running' ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await
}

/// One campaign call, as the dialer sees it.
#[derive(Debug, Clone, FromRow)]
pub struct AttemptRow {
    pub call_id: String,
    pub campaign_id: String,
    pub lead_id: String,
    pub attempt: i32,
    pub status: String,
    pub active: bool,
    pub answered_by: Option<String>,
    pub runtime_started: bool,
    /// When the dialer decided to dial (the campaign clock).
    pub started_at: DateTime<Utc>,
}

/// Every call of a campaign.
pub async fn attempts(pool: &PgPool, campaign_id: &str) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as(
        "SELECT id AS call_id, campaign_id, lead_id, coalesce(attempt, 1) AS attempt, status, active,
                answered_by, runtime_started, started_at
         FROM rm_calls WHERE campaign_id = $1 AND lead_id IS NOT NULL
         ORDER BY started_at, id",
    )
    .bind(campaign_id)
    .fetch_all(pool)
    .await
}

/// Calls of a lead, in every campaign (for `GET /leads`).
pub async fn attempts_of_leads(
    pool: &PgPool,
    lead_ids: &[String],
) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as(
        "SELECT id AS call_id, campaign_id, lead_id, coalesce(attempt, 1) AS attempt, status, active,
                answered_by, runtime_started, started_at
         FROM rm_calls WHERE lead_id = ANY($1) ORDER BY started_at, id",
    )
    .bind(lead_ids)
    .fetch_all(pool)
    .await
}

/// Calls of an establishment not over yet (the establishment's busy lines).
pub async fn active_calls_of(pool: &PgPool, establishment_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM rm_calls WHERE establishment_id = $1 AND active")
        .bind(establishment_id)
        .fetch_one(pool)
        .await
}
