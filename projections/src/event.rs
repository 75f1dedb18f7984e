//! An event as read back from the log, and the commit-order checkpoint type.

use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;

/// A position in commit order: `(transaction id, global position)`. Projectors only move
/// forward in this order, which is safe against transactions that commit late.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checkpoint {
    pub txid: u64,
    pub position: i64,
}

impl Checkpoint {
    pub const START: Checkpoint = Checkpoint {
        txid: 0,
        position: 0,
    };
}

/// Columns to select for `StoredEvent::from_row`.
pub const EVENT_COLUMNS: &str =
    "position, transaction_id::text AS txid, aggregate_type, aggregate_id, \
     sequence, event_type, event_version, payload, metadata, event_id, recorded_at";

#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: i64,
    pub txid: u64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub event_id: String,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    pub fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let txid: String = row.try_get("txid")?;
        Ok(Self {
            position: row.try_get("position")?,
            txid: txid.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            event_id: row.try_get("event_id")?,
            recorded_at: row.try_get("recorded_at")?,
        })
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            txid: self.txid,
            position: self.position,
        }
    }

    /// The payload as today's event type, after upcasting older versions.
    pub fn decode<E: DeserializeOwned>(&self) -> anyhow::Result<E> {
        let upcasters = aggregates::upcast::all();
        let payload = if upcasters.is_empty() {
            self.payload.clone()
        } else {
            let serialized = SerializedEvent::new(
                self.aggregate_id.clone(),
                self.sequence as usize,
                self.aggregate_type.clone(),
                self.event_type.clone(),
                self.event_version.clone(),
                self.payload.clone(),
                self.metadata.clone(),
            );
            upcast(serialized, &upcasters).payload
        };
        serde_json::from_value(payload).map_err(|e| {
            anyhow::anyhow!(
                "event {} ({} {} v{}) does not decode: {e}",
                self.position,
                self.aggregate_type,
                self.event_type,
                self.event_version
            )
        })
    }

    /// A metadata field, if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }
}

/// Which committed events a reader of the log wants (`None`: any).
#[derive(Debug, Clone, Default)]
pub struct LogFilter<'a> {
    pub aggregate_type: Option<&'a str>,
    pub aggregate_id: Option<&'a str>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// Events of these establishments only.
    pub establishments: Option<&'a [String]>,
}

/// Up to `limit` committed events after `after` in commit order (only below the commit
/// horizon, so a page never skips a transaction that commits late): the audit log's read.
pub async fn committed_after(
    pool: &sqlx::PgPool,
    after: Checkpoint,
    filter: &LogFilter<'_>,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
           AND (transaction_id, position) > ($1::text::xid8, $2)
           AND ($3::text IS NULL OR aggregate_type = $3)
           AND ($4::text IS NULL OR aggregate_id = $4)
           AND ($5::timestamptz IS NULL OR recorded_at >= $5)
           AND ($6::timestamptz IS NULL OR recorded_at < $6)
           AND ($7::text[] IS NULL OR establishment_id = ANY($7))
         ORDER BY transaction_id, position
         LIMIT $8"
    ))
    .bind(after.txid.to_string())
    .bind(after.position)
    .bind(filter.aggregate_type)
    .bind(filter.aggregate_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.establishments)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(StoredEvent::from_row).collect()
}

/// Applies every upcaster that accepts the event, in order.
pub fn upcast(event: SerializedEvent, upcasters: &[Box<dyn EventUpcaster>]) -> SerializedEvent {
    upcasters.iter().fold(event, |e, u| {
        if u.can_upcast(&e.event_type, &e.event_version) {
            u.upcast(e)
        } else {
            e
        }
    })
}
