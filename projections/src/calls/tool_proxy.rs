//! Tool-proxy invocations in `rm_tool_log`, beside what the runtime reported: one row per
//! (call, `tool_call_id`), `source = 'proxy'`, with the integration and credential version
//! used, the provider's status and the latency measured by the proxy.

use aggregates::call::{ToolProxyOutcome, ToolProxyRequest};
use sqlx::PgConnection;

use crate::event::StoredEvent;

pub(super) async fn requested(
    tx: &mut PgConnection,
    e: &StoredEvent,
    r: &ToolProxyRequest,
) -> anyhow::Result<()> {
    let inserted = sqlx::query(
        "INSERT INTO rm_tool_log (call_id, sequence, establishment_id, invocation, tool_name,
             arguments, called_at, source, tool_call_id, operation, integration_id,
             credential_version)
         SELECT $1, $2, establishment_id, NULL, $3, $4, $5, 'proxy', $6, $7, $8, $9
         FROM rm_calls WHERE id = $1
         ON CONFLICT DO NOTHING",
    )
    .bind(&e.aggregate_id)
    .bind(e.sequence)
    .bind(format!("{}.{}", r.tool, r.operation))
    .bind(&r.arguments)
    .bind(r.at)
    .bind(&r.tool_call_id)
    .bind(&r.operation)
    .bind(&r.integration_id)
    .bind(r.credential_version as i32)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted > 0 {
        sqlx::query(
            "UPDATE rm_calls SET tool_calls = tool_calls + 1, updated_at = $2 WHERE id = $1",
        )
        .bind(&e.aggregate_id)
        .bind(e.recorded_at)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

pub(super) async fn completed(
    tx: &mut PgConnection,
    e: &StoredEvent,
    o: &ToolProxyOutcome,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE rm_tool_log SET result = $3, error = $4, result_at = $5, latency_ms = $6,
             provider_status = $7
         WHERE call_id = $1 AND tool_call_id = $2",
    )
    .bind(&e.aggregate_id)
    .bind(&o.tool_call_id)
    .bind(&o.result)
    .bind(&o.error)
    .bind(o.at)
    .bind(o.latency_ms as i64)
    .bind(o.provider_status.map(i32::from))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
