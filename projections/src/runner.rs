//! The projector runtime.
//!
//! Reading order: positions are handed out at insert time but become visible at commit, so a
//! reader paging on `position > last` would skip an event whose transaction commits late. A
//! projector therefore only reads rows whose `transaction_id` is below the oldest transaction
//! still running (`pg_snapshot_xmin(pg_current_snapshot())`), in `(transaction_id, position)`
//! order, and keeps that pair as its checkpoint. Every row below that horizon is final.
//!
//! Exactly once: a batch's read-model writes and the checkpoint update commit together; a
//! transaction-scoped advisory lock keeps two processes from running one projector at once.
//!
//! Freshness: the store bumps the `Hub` after each local commit, which wakes the projectors
//! at once; a poll interval covers writes from other processes.
//!
//! Poison events: a batch that fails is attempted again (`batch_attempts` times in all); if it
//! keeps failing, it is applied event by event, each in a SAVEPOINT, and an event that fails on
//! its own is set aside as a dead letter (`dead_letters`), its stream marked degraded, the
//! `projector_dead_letters_total` metric bumped, and the checkpoint moves past it: every other
//! event goes on. Failures that say nothing about the event (the connection, a serialization
//! conflict, a broken statement of the projector itself: SQLSTATE classes 08, 40, 42, 53, 55,
//! 57, 58, XX) are never dead-lettered: the batch is retried with backoff instead.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;

use crate::event::{Checkpoint, StoredEvent, EVENT_COLUMNS};

/// A read model built from the log.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the checkpoint key and the name `projections rebuild` takes.
    fn name(&self) -> &'static str;
    /// Aggregate types whose events this projection reads.
    fn aggregate_types(&self) -> &'static [&'static str];
    /// Tables this projection owns; a rebuild empties them first.
    fn tables(&self) -> &'static [&'static str];
    /// Applies a batch of events, in commit order, inside the batch transaction (the one entry
    /// point: a projection that writes event by event loops here, one that writes in bulk
    /// groups them).
    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()>;
    /// Runs after a batch committed (e.g. to refresh an in-memory index).
    async fn after_commit(&self, _pool: &PgPool, _events: &[StoredEvent]) {}
    /// Another process holds this projection's lock and applies its events (e.g. to stop
    /// serving an in-memory copy that this process no longer keeps current).
    fn lock_held_elsewhere(&self) {}
}

/// Shared between the writers and the projectors of one process: commit notifications in one
/// direction, projector progress in the other (so a request can wait to read its own write).
#[derive(Clone)]
pub struct Hub {
    commits: Arc<watch::Sender<u64>>,
    /// The latest local commit of each aggregate type: a projector only goes to the database
    /// when one of its types has a commit past its checkpoint (or when it polls).
    latest: Arc<Mutex<BTreeMap<String, Checkpoint>>>,
    progress: Arc<watch::Sender<BTreeMap<&'static str, Checkpoint>>>,
    interests: Arc<Mutex<BTreeMap<&'static str, &'static [&'static str]>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            commits: Arc::new(watch::channel(0).0),
            latest: Arc::new(Mutex::new(BTreeMap::new())),
            progress: Arc::new(watch::channel(BTreeMap::new()).0),
            interests: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }
}

impl Hub {
    /// Called after a local append committed events of `aggregate_type` up to `cp`.
    pub fn committed(&self, aggregate_type: &str, cp: Checkpoint) {
        {
            let mut latest = self.latest.lock();
            let e = latest.entry(aggregate_type.to_string()).or_default();
            if cp > *e {
                *e = cp;
            }
        }
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The latest local commit of any of `types`.
    pub fn latest_of(&self, types: &[&str]) -> Checkpoint {
        let latest = self.latest.lock();
        types
            .iter()
            .filter_map(|t| latest.get(*t))
            .copied()
            .max()
            .unwrap_or(Checkpoint::START)
    }

    /// How many local commits there have been (a counter that only grows).
    pub fn commits(&self) -> u64 {
        *self.commits.borrow()
    }

    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    fn publish(&self, name: &'static str, cp: Checkpoint) {
        self.progress.send_modify(|m| {
            let e = m.entry(name).or_default();
            if cp > *e {
                *e = cp;
            }
        });
    }

    /// The in-memory checkpoint of each running projector.
    pub fn progress(&self) -> BTreeMap<&'static str, Checkpoint> {
        self.progress.borrow().clone()
    }

    /// Waits until every running projector that reads `aggregate_type` has passed `cp`, or
    /// until `timeout`. Returns whether they caught up.
    pub async fn wait_for(&self, aggregate_type: &str, cp: Checkpoint, timeout: Duration) -> bool {
        let names: Vec<&'static str> = self
            .interests
            .lock()
            .iter()
            .filter(|(_, types)| types.contains(&aggregate_type))
            .map(|(n, _)| *n)
            .collect();
        if names.is_empty() {
            return true;
        }
        let mut rx = self.progress.subscribe();
        let done = |m: &BTreeMap<&'static str, Checkpoint>| {
            names
                .iter()
                .all(|n| m.get(n).is_some_and(|seen| *seen >= cp))
        };
        tokio::time::timeout(timeout, rx.wait_for(done))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Fallback poll interval, for writes made by other processes.
    pub poll_interval: Duration,
    /// Maximum events per batch transaction.
    pub batch_size: i64,
    /// Shortest time between two batches of one projector: under a stream of commits, events
    /// gather into larger batches instead of one transaction each (an idle projector still
    /// starts at once).
    pub min_batch_interval: Duration,
    /// How many times a failing batch is attempted whole before it is applied event by event
    /// and the events that fail on their own are set aside (dead letters).
    pub batch_attempts: u32,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            batch_size: 500,
            min_batch_interval: Duration::from_millis(10),
            batch_attempts: 3,
        }
    }
}

/// The outcome of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// This many events were applied and committed.
    Applied(usize),
    /// Nothing new below the horizon.
    Idle,
    /// Another process holds this projector right now.
    Busy,
}

/// One projection bound to the database.
pub struct Projector {
    projection: Arc<dyn Projection>,
    pool: PgPool,
    hub: Hub,
    config: ProjectorConfig,
    /// In-memory checkpoint; may be ahead of the stored one (horizon advances are not stored).
    memory: Mutex<Checkpoint>,
    /// The batch that keeps failing: where it starts and how often it failed.
    failing: Mutex<Option<(Checkpoint, u32)>>,
    /// One batch at a time in this process (the running loop, a catch-up, a dead letter's
    /// retry), so that a busy lock always means another process.
    turn: tokio::sync::Mutex<()>,
}

/// Whether a failure says nothing about the events being applied: the connection or the pool,
/// a conflict with another transaction, resources, an operator intervention, or a statement of
/// the projector that cannot work at all (SQLSTATE class 42: a schema or code bug that would
/// fail every event). Such failures are retried, never dead-lettered.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                matches!(
                    code.get(..2),
                    Some("08" | "40" | "42" | "53" | "55" | "57" | "58" | "XX")
                )
            }),
            Some(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            _ => false,
        })
}

/// Undoes everything since the savepoint `name` and drops it.
async fn rollback_to(tx: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    sqlx::query(&format!("ROLLBACK TO SAVEPOINT {name}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("RELEASE SAVEPOINT {name}"))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// What applying events one by one did.
struct Isolated {
    /// The events that were applied (in order).
    applied: Vec<StoredEvent>,
    /// How many were set aside.
    dead: usize,
}

/// Applies `events` one by one, each in a SAVEPOINT, skipping `skip` (positions); an event that
/// fails on its own is rolled back and set aside as a dead letter of `projection`. A transient
/// failure aborts the whole (the caller's transaction is then rolled back).
async fn apply_isolated(
    projection: &dyn Projection,
    tx: &mut PgConnection,
    events: &[StoredEvent],
    attempts: u32,
    skip: &HashSet<i64>,
) -> anyhow::Result<Isolated> {
    let mut out = Isolated {
        applied: Vec::with_capacity(events.len()),
        dead: 0,
    };
    for e in events.iter().filter(|e| !skip.contains(&e.position)) {
        sqlx::query("SAVEPOINT projector_event")
            .execute(&mut *tx)
            .await?;
        match projection.apply(tx, std::slice::from_ref(e)).await {
            Ok(()) => {
                sqlx::query("RELEASE SAVEPOINT projector_event")
                    .execute(&mut *tx)
                    .await?;
                out.applied.push(e.clone());
            }
            Err(err) if is_transient(&err) => return Err(err),
            Err(err) => {
                rollback_to(tx, "projector_event").await?;
                let error = format!("{err:#}");
                tracing::error!(projector = projection.name(), position = e.position,
                    aggregate_type = %e.aggregate_type, aggregate_id = %e.aggregate_id,
                    event_type = %e.event_type, error = %error,
                    "event set aside as a dead letter; its stream is degraded");
                crate::dead_letters::set_aside(tx, projection.name(), e, &error, attempts).await?;
                out.dead += 1;
            }
        }
    }
    Ok(out)
}

fn lock_key(name: &str) -> String {
    format!("projector:{name}")
}

impl Projector {
    pub fn new(
        projection: Arc<dyn Projection>,
        pool: PgPool,
        hub: Hub,
        config: ProjectorConfig,
    ) -> Self {
        hub.interests
            .lock()
            .insert(projection.name(), projection.aggregate_types());
        Self {
            projection,
            pool,
            hub,
            config,
            memory: Mutex::new(Checkpoint::START),
            failing: Mutex::new(None),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// Reads, applies and commits at most one batch. A batch that failed `batch_attempts`
    /// times is applied event by event instead, and the events that fail on their own are set
    /// aside (dead letters), so the projector always gets past a poison event.
    pub async fn run_batch(&self) -> anyhow::Result<Batch> {
        let _turn = self.turn.lock().await;
        let isolate = self
            .failing
            .lock()
            .is_some_and(|(_, n)| n >= self.config.batch_attempts.max(1));
        match self.batch(isolate).await {
            Ok(b) => {
                if !matches!(b, Batch::Busy) {
                    *self.failing.lock() = None;
                }
                Ok(b)
            }
            Err((from, e)) => {
                if let Some(from) = from.filter(|_| !is_transient(&e)) {
                    let mut failing = self.failing.lock();
                    let n = match *failing {
                        Some((at, n)) if at == from => n + 1,
                        _ => 1,
                    };
                    *failing = Some((from, n));
                    metrics::counter!("projector_batch_failures_total", "projector" => self.name())
                        .increment(1);
                }
                Err(e)
            }
        }
    }

    /// One batch; a failure says where the batch started when applying it failed (`None`:
    /// reading or writing the checkpoint failed, which says nothing about its events).
    async fn batch(&self, isolate: bool) -> Result<Batch, (Option<Checkpoint>, anyhow::Error)> {
        let started = Instant::now();
        let infra = |e: anyhow::Error| (None, e);
        let mut tx = self.pool.begin().await.map_err(|e| infra(e.into()))?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1))")
            .bind(lock_key(self.name()))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| infra(e.into()))?;
        if !locked {
            self.projection.lock_held_elsewhere();
            return Ok(Batch::Busy);
        }
        let (stored, horizon) = read_checkpoint_and_horizon(&mut tx, self.name())
            .await
            .map_err(infra)?;
        let from = stored.max(*self.memory.lock());
        let events = read_batch(
            &mut tx,
            from,
            self.projection.aggregate_types(),
            self.config.batch_size,
        )
        .await
        .map_err(infra)?;
        let full = events.len() as i64 >= self.config.batch_size;
        let horizon_cp = Checkpoint {
            txid: horizon,
            position: 0,
        };
        let Some(last) = events.last().map(StoredEvent::checkpoint) else {
            tx.rollback().await.map_err(|e| infra(e.into()))?;
            let cp = from.max(horizon_cp);
            *self.memory.lock() = cp;
            self.hub.publish(self.name(), cp);
            return Ok(Batch::Idle);
        };
        let (applied, dead) = if isolate {
            let attempts = self.config.batch_attempts.max(1) + 1;
            let done = apply_isolated(
                self.projection.as_ref(),
                &mut tx,
                &events,
                attempts,
                &HashSet::new(),
            )
            .await
            .map_err(|e| (Some(from), e))?;
            (done.applied, done.dead)
        } else {
            self.projection
                .apply(&mut tx, &events)
                .await
                .map_err(|e| (Some(from), e))?;
            (events, 0)
        };
        write_checkpoint(&mut tx, self.name(), last, applied.len())
            .await
            .map_err(infra)?;
        tx.commit().await.map_err(|e| infra(e.into()))?;
        if dead > 0 {
            metrics::counter!("projector_dead_letters_total", "projector" => self.name())
                .increment(dead as u64);
        }
        // Before reporting progress, so a writer waiting to read its own write also sees
        // what `after_commit` refreshes (e.g. the in-memory routing index).
        self.projection.after_commit(&self.pool, &applied).await;
        let cp = if full { last } else { last.max(horizon_cp) };
        *self.memory.lock() = cp;
        self.hub.publish(self.name(), cp);
        metrics::counter!("projector_events_applied_total", "projector" => self.name())
            .increment(applied.len() as u64);
        metrics::histogram!("projector_batch_seconds", "projector" => self.name())
            .record(started.elapsed().as_secs_f64());
        if let Some(e) = applied.last() {
            let lag = (chrono::Utc::now() - e.recorded_at)
                .num_microseconds()
                .unwrap_or(0);
            metrics::gauge!("projector_lag_seconds", "projector" => self.name())
                .set(lag as f64 / 1e6);
        }
        Ok(Batch::Applied(applied.len() + dead))
    }

    /// Applies one event again (a dead letter's retry), under the projector's lock so it never
    /// interleaves with a batch, and resolves the dead letter `id` in the same transaction.
    pub async fn reapply(&self, event: &StoredEvent, dead_letter_id: i64) -> anyhow::Result<()> {
        let _turn = self.turn.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(lock_key(self.name()))
            .execute(&mut *tx)
            .await?;
        self.projection
            .apply(&mut tx, std::slice::from_ref(event))
            .await?;
        crate::dead_letters::resolve(&mut tx, dead_letter_id).await?;
        tx.commit().await?;
        self.projection
            .after_commit(&self.pool, std::slice::from_ref(event))
            .await;
        Ok(())
    }

    /// Applies batches until this projector has passed every event committed before the
    /// call (a transaction still open elsewhere in the cluster can hold it back a while).
    pub async fn catch_up(&self, timeout: Duration) -> anyhow::Result<()> {
        let types: Vec<String> = self
            .projection
            .aggregate_types()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let head: Option<(String, i64)> = sqlx::query_as(
            "SELECT transaction_id::text, position FROM events WHERE aggregate_type = ANY($1)
             ORDER BY transaction_id DESC, position DESC LIMIT 1",
        )
        .bind(&types)
        .fetch_optional(&self.pool)
        .await?;
        let Some((txid, position)) = head else {
            return Ok(());
        };
        let head = Checkpoint {
            txid: txid.parse()?,
            position,
        };
        let deadline = Instant::now() + timeout;
        loop {
            // A failing batch is attempted again (and, after `batch_attempts`, isolated), as
            // the running projector does; only a failure that outlasts the timeout is returned.
            match self.run_batch().await {
                Ok(Batch::Applied(_)) => continue,
                Ok(Batch::Idle | Batch::Busy) => {}
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(e) => {
                    tracing::warn!(projector = self.name(), error = %format!("{e:#}"), "batch failed while catching up; trying again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            // The in-memory checkpoint moves only after a batch's `after_commit` ran (e.g. the
            // routing index refresh), so a caller that waits for it also sees what that
            // refreshes; a batch applied by another process is seen as the horizon moving past
            // it on this projector's next (idle) batch.
            if *self.memory.lock() >= head {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "projector {} did not catch up within {timeout:?}",
                    self.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs until the task is dropped. A local commit of one of its types past its checkpoint
    /// wakes it at once; while such a commit is not visible yet (a transaction that took an
    /// earlier id is still open) it looks again with a short, growing delay; otherwise it only
    /// polls, every `poll_interval`, for writes of other processes. Commits of other types never
    /// cost it a query.
    pub async fn run(self: Arc<Self>) {
        let mut commits = self.hub.subscribe_commits();
        let types = self.projection.aggregate_types();
        let mut failures = 0u32;
        let mut blocked = 0u32;
        let mut poll_due = true;
        let mut last_batch = Instant::now()
            .checked_sub(self.config.min_batch_interval)
            .unwrap_or_else(Instant::now);
        loop {
            let pending = self.hub.latest_of(types) > *self.memory.lock();
            if pending || poll_due {
                poll_due = false;
                let since = last_batch.elapsed();
                if since < self.config.min_batch_interval {
                    tokio::time::sleep(self.config.min_batch_interval - since).await;
                }
                last_batch = Instant::now();
                match self.run_batch().await {
                    Ok(Batch::Applied(_)) => {
                        failures = 0;
                        blocked = 0;
                        continue;
                    }
                    Ok(Batch::Idle) | Ok(Batch::Busy) => {
                        failures = 0;
                        if self.hub.latest_of(types) > *self.memory.lock() {
                            // Committed here but hidden behind an open transaction.
                            blocked += 1;
                            let delay = Duration::from_millis((1u64 << blocked.min(6)).min(50));
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                        blocked = 0;
                    }
                    Err(e) => {
                        failures += 1;
                        let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                        tracing::error!(projector = self.name(), error = %format!("{e:#}"), ?backoff, "projector batch failed");
                        tokio::time::sleep(backoff).await;
                        poll_due = true;
                        continue;
                    }
                }
            }
            commits.borrow_and_update();
            if self.hub.latest_of(types) > *self.memory.lock() {
                continue;
            }
            if tokio::time::timeout(self.config.poll_interval, commits.changed())
                .await
                .is_err()
            {
                poll_due = true;
            }
        }
    }
}

/// The stored checkpoint and the read horizon, in one round trip (after the lock is held).
async fn read_checkpoint_and_horizon(
    conn: &mut PgConnection,
    name: &str,
) -> anyhow::Result<(Checkpoint, u64)> {
    let row = sqlx::query(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon,
                (SELECT last_txid::text FROM projector_checkpoints WHERE name = $1) AS txid,
                (SELECT last_position FROM projector_checkpoints WHERE name = $1) AS position",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    let cp = match row.get::<Option<String>, _>("txid") {
        Some(txid) => Checkpoint {
            txid: txid.parse()?,
            position: row.get::<Option<i64>, _>("position").unwrap_or(0),
        },
        None => Checkpoint::START,
    };
    Ok((cp, row.get::<String, _>("horizon").parse()?))
}

async fn write_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    cp: Checkpoint,
    applied: usize,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO projector_checkpoints (name, last_txid, last_position, events_applied, updated_at)
         VALUES ($1, $2::text::xid8, $3, $4, now())
         ON CONFLICT (name) DO UPDATE SET last_txid = EXCLUDED.last_txid,
             last_position = EXCLUDED.last_position,
             events_applied = projector_checkpoints.events_applied + EXCLUDED.events_applied,
             updated_at = now()",
    )
    .bind(name)
    .bind(cp.txid.to_string())
    .bind(cp.position)
    .bind(applied as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn read_batch(
    conn: &mut PgConnection,
    after: Checkpoint,
    types: &[&str],
    limit: i64,
) -> anyhow::Result<Vec<StoredEvent>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE (transaction_id, position) > ($1::text::xid8, $2)
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
           AND aggregate_type = ANY($3)
         ORDER BY transaction_id, position
         LIMIT $4"
    );
    let types: Vec<String> = types.iter().map(|s| s.to_string()).collect();
    let rows = sqlx::query(&sql)
        .bind(after.txid.to_string())
        .bind(after.position)
        .bind(&types)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| StoredEvent::from_row(r).map_err(Into::into))
        .collect()
}

/// The set of projectors of a process.
pub struct Projectors {
    projectors: Vec<Arc<Projector>>,
}

impl Projectors {
    pub fn new(
        projections: Vec<Arc<dyn Projection>>,
        pool: PgPool,
        hub: Hub,
        config: ProjectorConfig,
    ) -> Self {
        Self {
            projectors: projections
                .into_iter()
                .map(|p| Arc::new(Projector::new(p, pool.clone(), hub.clone(), config.clone())))
                .collect(),
        }
    }

    /// Starts one task per projector; dropping the handles does not stop them.
    pub fn spawn(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.projectors
            .iter()
            .map(|p| tokio::spawn(p.clone().run()))
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Projector>> {
        self.projectors.iter().find(|p| p.name() == name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.projectors.iter().map(|p| p.name()).collect()
    }

    /// Brings every projector up to the events committed before the call.
    pub async fn catch_up(&self) -> anyhow::Result<()> {
        for p in &self.projectors {
            p.catch_up(Duration::from_secs(30)).await?;
        }
        Ok(())
    }
}

/// Rebuilds one projection from the start of the log in a single transaction: its tables are
/// emptied and refilled with the same code the live projector runs. Readers keep seeing the
/// old rows until the commit; the live projector skips its batches meanwhile.
///
/// Dead letters: the events of the projection's unresolved dead letters are skipped, as the
/// live projector skipped them; resolved ones are applied in their place in the log. A batch
/// that fails is applied event by event like the live projector's, so an event that fails now
/// is set aside too (and the rebuild still equals what live would have).
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
    batch_size: i64,
    mut progress: impl FnMut(u64, u64) + Send,
) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(lock_key(projection.name()))
        .execute(&mut *tx)
        .await?;
    for table in projection.tables() {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await?;
    }
    let types: Vec<String> = projection
        .aggregate_types()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = ANY($1)
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())",
    )
    .bind(&types)
    .fetch_one(&mut *tx)
    .await?;
    let skip = crate::dead_letters::unresolved_positions(&mut tx, projection.name()).await?;
    let mut cp = Checkpoint::START;
    let mut done = 0u64;
    let mut applied = 0u64;
    let mut dead = 0usize;
    progress(0, total as u64);
    loop {
        let events = read_batch(&mut tx, cp, projection.aggregate_types(), batch_size).await?;
        let Some(last) = events.last().map(StoredEvent::checkpoint) else {
            break;
        };
        let todo: Vec<StoredEvent> = if skip.is_empty() {
            events.clone()
        } else {
            events
                .iter()
                .filter(|e| !skip.contains(&e.position))
                .cloned()
                .collect()
        };
        sqlx::query("SAVEPOINT projector_batch")
            .execute(&mut *tx)
            .await?;
        match projection.apply(&mut tx, &todo).await {
            Ok(()) => {
                sqlx::query("RELEASE SAVEPOINT projector_batch")
                    .execute(&mut *tx)
                    .await?;
                applied += todo.len() as u64;
            }
            Err(e) if is_transient(&e) => return Err(e),
            Err(_) => {
                rollback_to(&mut tx, "projector_batch").await?;
                let r = apply_isolated(projection, &mut tx, &todo, 1, &HashSet::new()).await?;
                applied += r.applied.len() as u64;
                dead += r.dead;
            }
        }
        cp = last;
        done += events.len() as u64;
        progress(done, total.max(done as i64) as u64);
    }
    if dead > 0 {
        metrics::counter!("projector_dead_letters_total", "projector" => projection.name())
            .increment(dead as u64);
    }
    sqlx::query(
        "INSERT INTO projector_checkpoints (name, last_txid, last_position, events_applied, updated_at)
         VALUES ($1, $2::text::xid8, $3, $4, now())
         ON CONFLICT (name) DO UPDATE SET last_txid = EXCLUDED.last_txid,
             last_position = EXCLUDED.last_position, events_applied = EXCLUDED.events_applied,
             updated_at = now()",
    )
    .bind(projection.name())
    .bind(cp.txid.to_string())
    .bind(cp.position)
    .bind(applied as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    projection.after_commit(pool, &[]).await;
    Ok(done)
}
