//! Dead letters (`projector_dead_letters`): events a projector could not apply, set aside so
//! that one poison event stalls nobody (the runner's isolation, `runner.rs`). This module owns
//! the table: the runner writes rows through it, the admin use case reads and resolves them.
//!
//! Semantics (docs/architecture.md, "Poison events"):
//! - a row that is not `resolved` marks its stream (`aggregate_type`, `aggregate_id`) as
//!   *degraded*: some of its events are missing from a read model or a worker's view;
//! - a retry applies the event again through its projector; on success the row is resolved (the
//!   event was applied late, out of log order);
//! - a rebuild skips the events of unresolved rows, as the live projector did, and applies
//!   resolved ones in their place in the log.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};

use crate::event::{StoredEvent, EVENT_COLUMNS};

/// Longest error text kept per row.
const MAX_ERROR_CHARS: usize = 2_000;

/// A dead letter as listed.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct DeadLetterRow {
    pub id: i64,
    pub projector: String,
    pub event_position: i64,
    pub event_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub establishment_id: Option<String>,
    pub event_type: String,
    pub error: String,
    pub attempts: i32,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    pub resolved: bool,
    pub resolved_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, projector, event_position, event_id, aggregate_type, aggregate_id,
    establishment_id, event_type, error, attempts, first_failed_at, last_failed_at, resolved,
    resolved_at";

fn truncate(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

/// Sets an event aside for `projector` (in the transaction that moves its checkpoint past it).
/// Setting the same event aside again (a rebuild meeting it) counts one more attempt and
/// reopens the row.
pub async fn set_aside(
    conn: &mut PgConnection,
    projector: &str,
    event: &StoredEvent,
    error: &str,
    attempts: u32,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO projector_dead_letters (projector, event_position, event_txid, event_id,
             aggregate_type, aggregate_id, establishment_id, event_type, error, attempts,
             first_failed_at, last_failed_at)
         VALUES ($1, $2, $3::text::xid8, $4, $5, $6, $7, $8, $9, $10, now(), now())
         ON CONFLICT (projector, event_position) DO UPDATE SET error = EXCLUDED.error,
             attempts = projector_dead_letters.attempts + 1, last_failed_at = now(),
             resolved = false, resolved_at = NULL",
    )
    .bind(projector)
    .bind(event.position)
    .bind(event.txid.to_string())
    .bind(&event.event_id)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event.meta("establishment_id"))
    .bind(&event.event_type)
    .bind(truncate(error))
    .bind(attempts.min(i32::MAX as u32) as i32)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks a dead letter resolved (in the transaction that applied its event again).
pub async fn resolve(conn: &mut PgConnection, id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE projector_dead_letters SET resolved = true, resolved_at = now(),
             attempts = attempts + 1 WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records one more failed attempt of a dead letter.
pub async fn failed_again(pool: &PgPool, id: i64, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE projector_dead_letters SET attempts = attempts + 1, last_failed_at = now(),
             error = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(truncate(error))
    .execute(pool)
    .await?;
    Ok(())
}

/// Positions of the events a projector set aside and nobody resolved (a rebuild skips them).
pub async fn unresolved_positions(
    conn: &mut PgConnection,
    projector: &str,
) -> sqlx::Result<HashSet<i64>> {
    let rows: Vec<i64> = sqlx::query_scalar(
        "SELECT event_position FROM projector_dead_letters WHERE projector = $1 AND NOT resolved",
    )
    .bind(projector)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Which dead letters a list shows; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub resolved: Option<bool>,
    pub projector: Option<String>,
    pub aggregate_id: Option<String>,
}

/// Dead letters, newest failure first: at most `limit`.
pub async fn list(pool: &PgPool, f: &Filter, limit: i64) -> sqlx::Result<Vec<DeadLetterRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM projector_dead_letters
         WHERE ($1::boolean IS NULL OR resolved = $1)
           AND ($2::text IS NULL OR projector = $2)
           AND ($3::text IS NULL OR aggregate_id = $3)
         ORDER BY last_failed_at DESC, id DESC LIMIT $4"
    ))
    .bind(f.resolved)
    .bind(&f.projector)
    .bind(&f.aggregate_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn by_id(pool: &PgPool, id: i64) -> sqlx::Result<Option<DeadLetterRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM projector_dead_letters WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The event a dead letter names, read back from the log.
pub async fn event(pool: &PgPool, position: i64) -> anyhow::Result<Option<StoredEvent>> {
    let row = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE position = $1"
    ))
    .bind(position)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| StoredEvent::from_row(&r)).transpose()?)
}

/// Whether a stream has events some projector set aside and nobody resolved.
pub async fn is_degraded(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM projector_dead_letters
                        WHERE aggregate_type = $1 AND aggregate_id = $2 AND NOT resolved)",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_one(pool)
    .await
}
