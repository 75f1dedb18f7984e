//! The command bus: load an aggregate, run its command handler, append the events.
//!
//! - Commands on one stream are serialised inside the process (striped locks), so version
//!   conflicts only arise between processes; they are retried a bounded number of times.
//! - Aggregate state is cached with its sequence, so a command costs the same on a stream of
//!   ten events as on one of ten thousand; a stale cache entry shows up as a version conflict
//!   and is reloaded from the snapshot plus tail.
//! - An idempotency key that was already claimed answers `Outcome::Duplicate` with the first
//!   caller's response; it is never mistaken for a version conflict.

use std::any::Any;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use aggregates::UniqueClaims;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use parking_lot::Mutex;

use super::{
    Append, AppendResult, CommandContext, Committed, EventStore, IdempotencyClaim,
    IdempotencyRecord, NewEvent, StoreError,
};

/// A snapshot is written every this many events of a stream.
pub const SNAPSHOT_EVERY: u64 = 100;
const MAX_ATTEMPTS: u32 = 16;
const LOCK_STRIPES: usize = 1024;
const CACHE_CAPACITY: usize = 100_000;
/// How long a write waits for the read models to show it before answering.
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone)]
pub struct ExecOptions {
    pub idempotency: Option<IdempotencyClaim>,
    /// The caller just minted the stream's id: skip loading it (if the stream exists after
    /// all, the append reports a version conflict and the command is re-run on the real state).
    pub fresh_stream: bool,
    /// Skip the idempotency look-up before running the command (for high-volume writes whose
    /// replays are rare: the key is still claimed in the append transaction, so a replay is
    /// still answered as a duplicate, only later).
    pub no_precheck: bool,
}

impl ExecOptions {
    pub fn idempotent(claim: IdempotencyClaim) -> Self {
        Self {
            idempotency: Some(claim),
            fresh_stream: false,
            no_precheck: false,
        }
    }

    /// See `no_precheck`.
    pub fn without_precheck(mut self) -> Self {
        self.no_precheck = true;
        self
    }

    /// For a stream whose id was just generated (see `fresh_stream`).
    pub fn fresh(mut self) -> Self {
        self.fresh_stream = true;
        self
    }
}

#[derive(Debug)]
pub enum Outcome<A: Aggregate> {
    /// Events were appended.
    Applied {
        state: A,
        events: Vec<A::Event>,
        commit: Committed,
    },
    /// The command was valid and changed nothing.
    Unchanged { state: A },
    /// The idempotency key was claimed before: nothing was appended.
    Duplicate(IdempotencyRecord),
}

impl<A: Aggregate> Outcome<A> {
    pub fn commit(&self) -> Option<Committed> {
        match self {
            Outcome::Applied { commit, .. } => Some(*commit),
            _ => None,
        }
    }

    pub fn state(&self) -> Option<&A> {
        match self {
            Outcome::Applied { state, .. } | Outcome::Unchanged { state } => Some(state),
            Outcome::Duplicate(_) => None,
        }
    }

    pub fn is_duplicate(&self) -> bool {
        matches!(self, Outcome::Duplicate(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError<E: std::error::Error> {
    #[error(transparent)]
    Domain(E),
    #[error("the stream kept changing; gave up after {MAX_ATTEMPTS} attempts")]
    Conflict,
    #[error("{scope} {value} is already taken")]
    ClaimTaken { scope: String, value: String },
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch(Box<IdempotencyRecord>),
    #[error(transparent)]
    Store(StoreError),
}

struct Cached {
    sequence: u64,
    state: Arc<dyn Any + Send + Sync>,
}

pub struct CommandBus {
    store: EventStore,
    cache: Option<Mutex<HashMap<String, Cached>>>,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl CommandBus {
    pub fn new(store: EventStore) -> Self {
        Self {
            store,
            cache: Some(Mutex::new(HashMap::new())),
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// A bus that loads every aggregate from the database (snapshot + tail) on each command.
    pub fn without_cache(store: EventStore) -> Self {
        Self {
            cache: None,
            ..Self::new(store)
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Waits (bounded) until the projectors reading `A`'s events have applied this outcome, so
    /// the caller's next read sees its own write (docs/adr/0005-read-your-writes.md).
    pub async fn visible<A: Aggregate>(&self, outcome: &Outcome<A>) {
        if let Some(commit) = outcome.commit() {
            if !self
                .store
                .hub()
                .wait_for(A::TYPE, commit.checkpoint(), READ_YOUR_WRITES)
                .await
            {
                tracing::warn!(aggregate = A::TYPE, "read models did not catch up in time");
            }
        }
    }

    fn key<A: Aggregate>(id: &str) -> String {
        format!("{}/{id}", A::TYPE)
    }

    fn stripe(key: &str) -> usize {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() as usize) % LOCK_STRIPES
    }

    fn cached<A: Aggregate + Clone + 'static>(&self, key: &str) -> Option<(A, u64)> {
        let cache = self.cache.as_ref()?.lock();
        let c = cache.get(key)?;
        let state = c.state.downcast_ref::<A>()?.clone();
        Some((state, c.sequence))
    }

    fn remember<A: Aggregate + Clone + 'static>(&self, key: String, state: A, sequence: u64) {
        if let Some(cache) = &self.cache {
            let mut cache = cache.lock();
            if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&key) {
                cache.clear();
            }
            cache.insert(
                key,
                Cached {
                    sequence,
                    state: Arc::new(state),
                },
            );
        }
    }

    fn forget(&self, key: &str) {
        if let Some(cache) = &self.cache {
            cache.lock().remove(key);
        }
    }

    /// The current state of an aggregate (from the cache when it is there).
    pub async fn load<A>(&self, id: &str) -> Result<(A, u64), StoreError>
    where
        A: Aggregate + Clone + 'static,
    {
        let key = Self::key::<A>(id);
        if let Some(hit) = self.cached::<A>(&key) {
            return Ok(hit);
        }
        let (state, sequence) = self.store.load::<A>(id).await?;
        self.remember(key, state.clone(), sequence);
        Ok((state, sequence))
    }

    /// Runs `command` against aggregate `id` and appends what it decides.
    pub async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        ctx: &CommandContext,
        options: ExecOptions,
    ) -> Result<Outcome<A>, ExecError<A::Error>>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
        A::Command: Clone,
        A::Event: UniqueClaims,
    {
        let idem = options.idempotency.as_ref();
        // Cheap early answer for replays; the append re-checks inside its transaction. A stream
        // the caller just created cannot have a replay yet.
        if let Some(claim) = idem.filter(|_| !options.fresh_stream && !options.no_precheck) {
            if let Some(record) = self
                .store
                .idempotency_record(&claim.key)
                .await
                .map_err(ExecError::Store)?
            {
                return if record.request_hash == claim.request_hash {
                    Ok(Outcome::Duplicate(record))
                } else {
                    Err(ExecError::IdempotencyMismatch(Box::new(record)))
                };
            }
        }
        let key = Self::key::<A>(id);
        let _guard = self.locks[Self::stripe(&key)].lock().await;
        let metadata = ctx.metadata(idem.map(|c| c.key.as_str()));
        for attempt in 0..MAX_ATTEMPTS {
            let (mut state, sequence) = if options.fresh_stream && attempt == 0 {
                (A::default(), 0)
            } else {
                self.load::<A>(id).await.map_err(ExecError::Store)?
            };
            let sink = EventSink::<A>::default();
            let assumed_fresh = options.fresh_stream && attempt == 0;
            if let Err(e) = state.handle(command.clone(), &(), &sink).await {
                if assumed_fresh {
                    // The stream may exist after all: decide on its real state.
                    continue;
                }
                return Err(ExecError::Domain(e));
            }
            let events = sink.collect().await;
            if assumed_fresh && events.is_empty() {
                continue;
            }
            if events.is_empty() && idem.is_none() {
                return Ok(Outcome::Unchanged { state });
            }
            let new_sequence = sequence + events.len() as u64;
            let snapshot = if new_sequence / SNAPSHOT_EVERY > sequence / SNAPSHOT_EVERY {
                Some(serde_json::to_value(&state).map_err(|e| ExecError::Store(e.into()))?)
            } else {
                None
            };
            let mut serialized = Vec::with_capacity(events.len());
            for e in &events {
                serialized.push(NewEvent {
                    event_type: e.event_type(),
                    event_version: e.event_version(),
                    payload: serde_json::to_value(e).map_err(|e| ExecError::Store(e.into()))?,
                });
            }
            let append = Append {
                aggregate_type: A::TYPE,
                aggregate_id: id,
                expected_sequence: sequence,
                events: serialized,
                metadata: &metadata,
                idempotency: idem,
                claims: events
                    .iter()
                    .flat_map(UniqueClaims::unique_claims)
                    .collect(),
                snapshot,
            };
            match self.store.append(append).await {
                Ok(AppendResult::Committed(Some(commit))) => {
                    self.remember(key, state.clone(), new_sequence);
                    return Ok(Outcome::Applied {
                        state,
                        events,
                        commit,
                    });
                }
                Ok(AppendResult::Committed(None)) => return Ok(Outcome::Unchanged { state }),
                Ok(AppendResult::Duplicate(record)) => return Ok(Outcome::Duplicate(record)),
                Err(StoreError::VersionConflict) => {
                    self.forget(&key);
                    let jitter = rand::random::<u64>() % (5 << attempt.min(5));
                    tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
                }
                Err(StoreError::ClaimTaken { scope, value }) => {
                    return Err(ExecError::ClaimTaken { scope, value })
                }
                Err(StoreError::IdempotencyMismatch(r)) => {
                    return Err(ExecError::IdempotencyMismatch(r))
                }
                Err(e) => {
                    self.forget(&key);
                    return Err(ExecError::Store(e));
                }
            }
        }
        Err(ExecError::Conflict)
    }
}
