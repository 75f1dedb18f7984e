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

    async fn apply(&self, tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
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
}
