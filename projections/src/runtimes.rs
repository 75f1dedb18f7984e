//! Read model of runtimes (`rm_runtimes`). Each row keeps the aggregate state it was derived
//! from and folds the next event onto it with the aggregate's own `apply`, so status, pending
//! operation and readiness here can never drift from the domain's rules.

use aggregates::runtime::{OpKind, Runtime, RuntimeEvent};
use anyhow::Context;
use async_trait::async_trait;
use cqrs_es::Aggregate;
use serde_json::json;
use sqlx::PgConnection;

use crate::event::StoredEvent;
use crate::runner::Projection;

pub struct RuntimesProjection;

#[async_trait]
impl Projection for RuntimesProjection {
    fn name(&self) -> &'static str {
        "runtimes"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[Runtime::TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_runtimes"]
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for e in events {
            apply_event(tx, e).await?;
        }
        Ok(())
    }
}

async fn apply_event(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let event: RuntimeEvent = e.decode()?;
    let previous: Option<(serde_json::Value, String)> =
        sqlx::query_as("SELECT state, status FROM rm_runtimes WHERE id = $1")
            .bind(&e.aggregate_id)
            .fetch_optional(&mut *tx)
            .await?;
    let (mut rt, before) = match previous {
        Some((state, status)) => (serde_json::from_value::<Runtime>(state)?, Some(status)),
        None => (Runtime::default(), None),
    };
    rt.apply(event);
    let spec = rt.spec.as_ref().with_context(|| {
        format!(
            "runtime {} has events before it was provisioned",
            e.aggregate_id
        )
    })?;
    let status = rt.status().as_str();
    let pending = rt.pending.map(|p| match p.kind {
        OpKind::Create => "create",
        OpKind::Start => "start",
        OpKind::Stop => "stop",
        OpKind::Restart => "restart",
    });
    let status_changed = before.as_deref() != Some(status);
    sqlx::query(
        "INSERT INTO rm_runtimes (id, establishment_id, image, container_name, container_id,
             host_port, base_url, media_stream_url, env_keys, token_hash, status, pending_op,
             draining, ready, ready_issues, last_error, state, created_at, updated_at,
             status_changed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
             $18, $18, $18)
         ON CONFLICT (id) DO UPDATE SET container_id = EXCLUDED.container_id,
             token_hash = EXCLUDED.token_hash, status = EXCLUDED.status,
             pending_op = EXCLUDED.pending_op, draining = EXCLUDED.draining,
             ready = EXCLUDED.ready, ready_issues = EXCLUDED.ready_issues,
             last_error = EXCLUDED.last_error, state = EXCLUDED.state,
             updated_at = EXCLUDED.updated_at,
             status_changed_at = CASE WHEN $19 THEN EXCLUDED.updated_at
                                      ELSE rm_runtimes.status_changed_at END",
    )
    .bind(&e.aggregate_id)
    .bind(&spec.establishment_id)
    .bind(&spec.image)
    .bind(&spec.container_name)
    .bind(&rt.container_id)
    .bind(spec.host_port as i32)
    .bind(&spec.base_url)
    .bind(&spec.media_stream_url)
    .bind(json!(spec.env_keys))
    .bind(&rt.token_hash)
    .bind(status)
    .bind(pending)
    .bind(rt.draining)
    .bind(rt.ready)
    .bind(json!(rt.ready_issues))
    .bind(&rt.last_error)
    .bind(serde_json::to_value(&rt)?)
    .bind(e.recorded_at)
    .bind(status_changed)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads of `rm_runtimes` (with the latest health poll from `runtime_health`)
// ---------------------------------------------------------------------------------------------

/// A runtime as the API shows it (never its env values or token).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuntimeRow {
    pub id: String,
    pub establishment_id: String,
    pub status: String,
    pub ready: bool,
    pub ready_issues: serde_json::Value,
    pub draining: bool,
    pub image: String,
    pub container_name: String,
    pub container_id: Option<String>,
    pub host_port: i32,
    pub base_url: String,
    pub media_stream_url: Option<String>,
    pub env_keys: serde_json::Value,
    pub pending_op: Option<String>,
    pub last_error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub status_changed_at: chrono::DateTime<chrono::Utc>,
    /// Last health poll (from `runtime_health`).
    pub checked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub active_calls: Option<i64>,
    pub total_calls_handled: Option<i64>,
    pub version: Option<String>,
}

impl RuntimeRow {
    /// A JSON array of strings as a list (empty when it is not one).
    pub fn strings(v: &serde_json::Value) -> Vec<String> {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }
}

const RUNTIME_SELECT: &str =
    "SELECT r.id, r.establishment_id, r.status, r.ready, r.ready_issues, r.draining,
        r.image, r.container_name, r.container_id, r.host_port, r.base_url, r.media_stream_url,
        r.env_keys, r.pending_op, r.last_error, r.created_at, r.updated_at, r.status_changed_at,
        h.checked_at, h.active_calls, h.total_calls_handled, h.version
     FROM rm_runtimes r LEFT JOIN runtime_health h ON h.runtime_id = r.id";

pub async fn by_id(pool: &sqlx::PgPool, runtime_id: &str) -> sqlx::Result<Option<RuntimeRow>> {
    sqlx::query_as(&format!("{RUNTIME_SELECT} WHERE r.id = $1"))
        .bind(runtime_id)
        .fetch_optional(pool)
        .await
}

pub async fn of_establishment(
    pool: &sqlx::PgPool,
    establishment_id: &str,
) -> sqlx::Result<Option<RuntimeRow>> {
    sqlx::query_as(&format!("{RUNTIME_SELECT} WHERE r.establishment_id = $1"))
        .bind(establishment_id)
        .fetch_optional(pool)
        .await
}

/// What routing needs to know about an establishment's runtime.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuntimeAvailability {
    pub id: String,
    pub status: String,
    pub ready: bool,
    pub draining: bool,
    pub media_stream_url: Option<String>,
}

pub async fn availability(
    pool: &sqlx::PgPool,
    establishment_id: &str,
) -> sqlx::Result<Option<RuntimeAvailability>> {
    sqlx::query_as(
        "SELECT id, status, ready, draining, media_stream_url FROM rm_runtimes WHERE establishment_id = $1",
    )
    .bind(establishment_id)
    .fetch_optional(pool)
    .await
}

/// The runtime holding a token (by its SHA-256 hash): `(runtime id, establishment id)`.
pub async fn by_token_hash(
    pool: &sqlx::PgPool,
    token_hash: &str,
) -> sqlx::Result<Option<(String, String)>> {
    sqlx::query_as("SELECT id, establishment_id FROM rm_runtimes WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(pool)
        .await
}

/// Runtimes with a Docker operation to carry out.
pub async fn with_pending_ops(pool: &sqlx::PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT id FROM rm_runtimes WHERE pending_op IS NOT NULL ORDER BY id")
        .fetch_all(pool)
        .await
}

/// A runtime as the health monitor needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MonitorTarget {
    pub id: String,
    pub establishment_id: String,
    pub base_url: String,
    pub container_id: Option<String>,
    pub pending: bool,
}

pub async fn monitor_targets(pool: &sqlx::PgPool) -> sqlx::Result<Vec<MonitorTarget>> {
    sqlx::query_as(
        "SELECT id, establishment_id, base_url, container_id, pending_op IS NOT NULL AS pending
         FROM rm_runtimes ORDER BY id",
    )
    .fetch_all(pool)
    .await
}
