//! The event store: appends with idempotency keys and cross-aggregate uniqueness claims taken
//! in the same transaction, and aggregate loads from snapshot plus tail.
//!
//! Why not `postgres-es`'s own `persist`: it reports every unique violation as an optimistic
//! lock conflict and has no place for an idempotency key or a claim in its transaction
//! (docs/adr/0002-event-store.md). Loads go through `postgres_es::PostgresEventRepository`,
//! which reads the same `events`/`snapshots` tables.

pub mod context;
pub mod exec;
pub mod group;

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::ClaimOp;
use cqrs_es::persist::PersistedEventRepository;
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use projections::event::upcast;
use projections::{Checkpoint, Hub};
use serde_json::Value;
use sqlx::PgPool;

pub use context::{Actor, CommandContext};
pub use exec::{CommandBus, ExecError, ExecOptions, Outcome};
pub use group::GroupCommit;

/// An idempotency key to claim with an append, with the answer repeated to later callers.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyClaim {
    pub key: String,
    /// Hash of the request that carried the key: the same key with another request is refused.
    pub request_hash: String,
    /// What the first caller was told; duplicates get the same answer.
    pub response: Value,
}

impl IdempotencyClaim {
    /// A key that is its own request hash, with no stored answer (webhooks, runtime events,
    /// worker outcomes: the key alone identifies the request).
    pub fn keyed(key: impl Into<String>) -> Self {
        let key = key.into();
        Self {
            request_hash: key.clone(),
            key,
            response: Value::Null,
        }
    }
}

/// The stored record of a claimed idempotency key.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct IdempotencyRecord {
    pub key: String,
    pub request_hash: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub response: Value,
}

/// Where a successful append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub txid: u64,
    pub first_position: i64,
    pub last_position: i64,
    pub last_sequence: u64,
}

impl Committed {
    /// The checkpoint a projector has passed once it has seen this append.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            txid: self.txid,
            position: self.last_position,
        }
    }
}

#[derive(Debug)]
pub enum AppendResult {
    Committed(Option<Committed>),
    Duplicate(IdempotencyRecord),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the stream moved on since it was loaded")]
    VersionConflict,
    #[error("{scope} {value} is already taken")]
    ClaimTaken { scope: String, value: String },
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch(Box<IdempotencyRecord>),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored data does not decode: {0}")]
    Decode(String),
}

impl From<cqrs_es::persist::PersistenceError> for StoreError {
    fn from(e: cqrs_es::persist::PersistenceError) -> Self {
        StoreError::Decode(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Decode(e.to_string())
    }
}

/// One event to append, already serialised.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
}

/// Everything one append transaction writes.
#[derive(Debug)]
pub struct Append<'a> {
    pub aggregate_type: &'static str,
    pub aggregate_id: &'a str,
    /// The stream's last sequence when it was loaded; the events get the ones after it.
    pub expected_sequence: u64,
    pub events: Vec<NewEvent>,
    pub metadata: &'a HashMap<String, String>,
    pub idempotency: Option<&'a IdempotencyClaim>,
    pub claims: Vec<ClaimOp>,
    /// Aggregate state after the events, when a snapshot is due.
    pub snapshot: Option<Value>,
}

#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    repo: Arc<PostgresEventRepository>,
    hub: Hub,
    /// Concurrent one-statement appends written together (`None`: each on its own).
    group: Option<GroupCommit>,
}

impl EventStore {
    pub fn new(pool: PgPool, hub: Hub) -> Self {
        Self {
            repo: Arc::new(PostgresEventRepository::new(pool.clone())),
            pool,
            hub,
            group: None,
        }
    }

    /// The same store with group commit: concurrent appends that can each be one statement
    /// are written by `flushers` tasks, together (see [`group`]).
    pub fn with_group_commit(mut self, flushers: usize) -> Self {
        let alone = Self {
            group: None,
            ..self.clone()
        };
        self.group = Some(GroupCommit::start(alone, flushers));
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Appends in one transaction: idempotency key, claims, events, snapshot.
    pub async fn append(&self, req: Append<'_>) -> Result<AppendResult, StoreError> {
        let result = self.append_inner(&req).await;
        match &result {
            Ok(AppendResult::Committed(Some(commit))) => {
                // Wake the projectors that read this type.
                self.hub.committed(req.aggregate_type, commit.checkpoint());
                metrics::counter!("events_appended_total", "aggregate" => req.aggregate_type)
                    .increment(req.events.len() as u64)
            }
            Ok(AppendResult::Duplicate(_)) => {
                metrics::counter!("append_duplicates_total", "aggregate" => req.aggregate_type)
                    .increment(1)
            }
            Err(StoreError::VersionConflict) => {
                metrics::counter!("append_conflicts_total", "aggregate" => req.aggregate_type)
                    .increment(1)
            }
            _ => {}
        }
        result
    }

    async fn append_inner(&self, req: &Append<'_>) -> Result<AppendResult, StoreError> {
        let only_new_claims = req
            .claims
            .iter()
            .all(|c| matches!(c, ClaimOp::Claim { .. }));
        if req.snapshot.is_none() && !req.events.is_empty() && only_new_claims {
            let written = match &self.group {
                Some(group) => group.append(self, req).await,
                None => self.append_single_statement(req).await,
            };
            match written {
                // A claim already held (by another aggregate, or by this one: a re-claim) aborts
                // the whole statement; the transaction below tells which and answers accordingly.
                Err(StoreError::Database(e)) if constraint_of(&e) == Some("unique_claims_pkey") => {
                }
                other => return other,
            }
        }
        self.append_in_transaction(req).await
    }

    /// The general append: one transaction, one statement per part (key, each claim or
    /// release, events, snapshot).
    async fn append_in_transaction(&self, req: &Append<'_>) -> Result<AppendResult, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(idem) = req.idempotency {
            let claimed: Option<String> = sqlx::query_scalar(
                "INSERT INTO idempotency_keys (key, request_hash, aggregate_type, aggregate_id, response)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING RETURNING key",
            )
            .bind(&idem.key)
            .bind(&idem.request_hash)
            .bind(req.aggregate_type)
            .bind(req.aggregate_id)
            .bind(&idem.response)
            .fetch_optional(&mut *tx)
            .await?;
            if claimed.is_none() {
                tx.rollback().await?;
                return self.duplicate_of(idem).await;
            }
        }
        for claim in &req.claims {
            match claim {
                ClaimOp::Claim { scope, value } => {
                    let held: Option<String> = sqlx::query_scalar(
                        "INSERT INTO unique_claims (scope, value, owner_type, owner_id)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (scope, value) DO UPDATE SET claimed_at = unique_claims.claimed_at
                         WHERE unique_claims.owner_type = EXCLUDED.owner_type
                           AND unique_claims.owner_id = EXCLUDED.owner_id
                         RETURNING owner_id",
                    )
                    .bind(scope)
                    .bind(value)
                    .bind(req.aggregate_type)
                    .bind(req.aggregate_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if held.is_none() {
                        tx.rollback().await?;
                        return Err(StoreError::ClaimTaken {
                            scope: scope.to_string(),
                            value: value.clone(),
                        });
                    }
                }
                ClaimOp::Release { scope, value } => {
                    sqlx::query(
                        "DELETE FROM unique_claims
                         WHERE scope = $1 AND value = $2 AND owner_type = $3 AND owner_id = $4",
                    )
                    .bind(scope)
                    .bind(value)
                    .bind(req.aggregate_type)
                    .bind(req.aggregate_id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        let mut committed = None;
        if !req.events.is_empty() {
            let cols = EventColumns::of(req)?;
            let insert = sqlx::query_as(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 SELECT $1, $2, s, t, v, p, $7
                 FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::jsonb[]) AS u(s, t, v, p)
                 ORDER BY s
                 RETURNING position, transaction_id::text AS txid",
            );
            let rows = cols
                .bind(req, insert)
                .fetch_all(&mut *tx)
                .await
                .map_err(events_error)?;
            committed = Some(
                landing(req.expected_sequence, req.events.len(), &rows).ok_or_else(no_landing)?,
            );
            if let Some(snapshot) = &req.snapshot {
                sqlx::query(
                    "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload)
                     VALUES ($1, $2, $3, 1, $4)
                     ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
                     SET last_sequence = EXCLUDED.last_sequence, payload = EXCLUDED.payload,
                         current_snapshot = snapshots.current_snapshot + 1
                     WHERE snapshots.last_sequence < EXCLUDED.last_sequence",
                )
                .bind(req.aggregate_type)
                .bind(req.aggregate_id)
                .bind((req.expected_sequence + req.events.len() as u64) as i64)
                .bind(snapshot)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(AppendResult::Committed(committed))
    }

    /// The common case (no release, no snapshot due) as one statement in its own transaction:
    /// the idempotency key, the new claims and the events are inserted by one query, so an
    /// append is one round trip instead of four or more. Same guarantees: the key and the claims
    /// are taken atomically with the events (a concurrent duplicate waits for the first and then
    /// inserts nothing; a claim someone holds fails the whole statement on
    /// `unique_claims_pkey`, and the caller retries in a transaction), and a clash on
    /// `events_pkey` is a version conflict.
    pub(crate) async fn append_single_statement(
        &self,
        req: &Append<'_>,
    ) -> Result<AppendResult, StoreError> {
        let cols = EventColumns::of(req)?;
        let idem = req.idempotency;
        let (claim_scopes, claim_values): (Vec<&str>, Vec<&str>) = req
            .claims
            .iter()
            .filter_map(|c| match c {
                ClaimOp::Claim { scope, value } => Some((*scope, value.as_str())),
                ClaimOp::Release { .. } => None,
            })
            .unzip();
        let append = sqlx::query_as(
            "WITH k AS (
                 INSERT INTO idempotency_keys (key, request_hash, aggregate_type, aggregate_id, response)
                 SELECT $8, $9, $1, $2, $10 WHERE $8::text IS NOT NULL
                 ON CONFLICT (key) DO NOTHING RETURNING key
             ), c AS (
                 INSERT INTO unique_claims (scope, value, owner_type, owner_id)
                 SELECT cs, cv, $1, $2 FROM UNNEST($11::text[], $12::text[]) AS u(cs, cv)
                 WHERE $8::text IS NULL OR EXISTS (SELECT 1 FROM k)
             ), e AS (
                 INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 SELECT $1, $2, s, t, v, p, $7
                 FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::jsonb[]) AS u(s, t, v, p)
                 WHERE $8::text IS NULL OR EXISTS (SELECT 1 FROM k)
                 ORDER BY s
                 RETURNING position, transaction_id::text AS txid
             )
             SELECT position, txid FROM e",
        );
        let rows = cols
            .bind(req, append)
            .bind(idem.map(|i| i.key.as_str()))
            .bind(idem.map(|i| i.request_hash.as_str()))
            .bind(idem.map(|i| &i.response))
            .bind(&claim_scopes)
            .bind(&claim_values)
            .fetch_all(&self.pool)
            .await
            .map_err(events_error)?;
        if rows.is_empty() {
            // Only an idempotency key already taken keeps the events out.
            let Some(idem) = idem else {
                return Err(StoreError::Decode("the append inserted nothing".into()));
            };
            return self.duplicate_of(idem).await;
        }
        Ok(AppendResult::Committed(Some(
            landing(req.expected_sequence, req.events.len(), &rows).ok_or_else(no_landing)?,
        )))
    }

    /// The answer to an append whose idempotency key was already taken: a duplicate of the
    /// same request, or a refusal when the key came with another request.
    pub(crate) async fn duplicate_of(
        &self,
        idem: &IdempotencyClaim,
    ) -> Result<AppendResult, StoreError> {
        let record = self
            .idempotency_record(&idem.key)
            .await?
            .ok_or(StoreError::VersionConflict)?;
        if record.request_hash == idem.request_hash {
            Ok(AppendResult::Duplicate(record))
        } else {
            Err(StoreError::IdempotencyMismatch(Box::new(record)))
        }
    }

    pub async fn idempotency_record(
        &self,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT key, request_hash, aggregate_type, aggregate_id, response FROM idempotency_keys WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Who holds `value` in `scope`, if anyone.
    pub async fn claim_owner(
        &self,
        scope: &str,
        value: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar(
                "SELECT owner_id FROM unique_claims WHERE scope = $1 AND value = $2",
            )
            .bind(scope)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// Every value held in a claim scope (e.g. the host ports taken).
    pub async fn claimed_values(&self, scope: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM unique_claims WHERE scope = $1")
                .bind(scope)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Whether anything holds a claim in `scope` (e.g. whether any user exists yet).
    pub async fn any_claim(&self, scope: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM unique_claims WHERE scope = $1)")
                .bind(scope)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Loads an aggregate from its latest snapshot plus the events after it.
    pub async fn load<A: Aggregate>(&self, id: &str) -> Result<(A, u64), StoreError> {
        let (mut state, mut sequence) = match self.repo.get_snapshot::<A>(id).await? {
            Some(s) => (
                serde_json::from_value::<A>(s.aggregate)?,
                s.current_sequence as u64,
            ),
            None => (A::default(), 0),
        };
        let events = if sequence == 0 {
            self.repo.get_events::<A>(id).await?
        } else {
            self.repo
                .get_last_events::<A>(id, sequence as usize)
                .await?
        };
        let upcasters = aggregates::upcast::all();
        for e in events {
            let e = upcast(e, &upcasters);
            sequence = e.sequence as u64;
            state.apply(serde_json::from_value(e.payload)?);
        }
        Ok((state, sequence))
    }
}

/// The events of an append as the arrays the `UNNEST` insert takes.
struct EventColumns<'a> {
    sequences: Vec<i64>,
    types: Vec<&'a str>,
    versions: Vec<&'a str>,
    payloads: Vec<&'a Value>,
    metadata: Value,
}

/// An events insert answering where each event landed: `(position, transaction id)`.
type Landing<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, (i64, String), sqlx::postgres::PgArguments>;

impl<'a> EventColumns<'a> {
    /// Binds `$1`–`$7` of an events insert: aggregate type and id, then the columns.
    fn bind<'q>(&'q self, req: &'q Append<'_>, query: Landing<'q>) -> Landing<'q> {
        query
            .bind(req.aggregate_type)
            .bind(req.aggregate_id)
            .bind(&self.sequences)
            .bind(&self.types)
            .bind(&self.versions)
            .bind(&self.payloads)
            .bind(&self.metadata)
    }

    fn of(req: &'a Append<'_>) -> Result<Self, serde_json::Error> {
        let first = req.expected_sequence as i64 + 1;
        Ok(Self {
            sequences: (first..first + req.events.len() as i64).collect(),
            types: req.events.iter().map(|e| e.event_type.as_str()).collect(),
            versions: req
                .events
                .iter()
                .map(|e| e.event_version.as_str())
                .collect(),
            payloads: req.events.iter().map(|e| &e.payload).collect(),
            metadata: serde_json::to_value(req.metadata)?,
        })
    }
}

/// Where the `count` inserted events of a stream loaded at `expected_sequence` (`RETURNING
/// position, txid`) landed; `None` when the rows do not say (no row, or a transaction id that
/// is not a number).
pub(crate) fn landing(
    expected_sequence: u64,
    count: usize,
    rows: &[(i64, String)],
) -> Option<Committed> {
    let positions: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let txid = &rows.first()?.1;
    Some(Committed {
        txid: txid.parse().ok()?,
        first_position: positions.iter().copied().min()?,
        last_position: positions.iter().copied().max()?,
        last_sequence: expected_sequence + count as u64,
    })
}

pub(crate) fn no_landing() -> StoreError {
    StoreError::Decode("the events insert did not return its positions".into())
}

/// An error of the events insert: a clash on `events_pkey` (the sequence is taken) is the only
/// version conflict.
fn events_error(e: sqlx::Error) -> StoreError {
    if constraint_of(&e) == Some("events_pkey") {
        StoreError::VersionConflict
    } else {
        StoreError::Database(e)
    }
}

/// The name of the constraint a database error violated, if any.
pub fn constraint_of(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(d) => d.constraint(),
        _ => None,
    }
}
