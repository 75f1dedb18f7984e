//! Group commit: appends that arrive while another is being written are gathered and written
//! by one statement in one transaction (one commit, one WAL flush), each keeping its own
//! idempotency key, claims and answer (docs/adr/0014-group-commit-and-hot-reads.md).
//!
//! Only the common append takes this path: events, new claims, no snapshot due, no release
//! (the same appends that are one statement on their own). Nothing waits for a timer: a
//! flusher takes every append queued when it becomes free, so a lone append is written at once
//! and a busy server writes in groups as large as its queue. A group is written only when
//! every part of it can be (all statements or none): when the statement fails (a version
//! conflict with another process, a claim someone holds) each append is written again on its
//! own, so an append's answer is the one it would have had alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aggregates::ClaimOp;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{
    landing, no_landing, Append, AppendResult, EventStore, IdempotencyClaim, IdempotencyRecord,
    NewEvent, StoreError,
};

/// At most this many appends in one statement.
const MAX_GROUP: usize = 256;
/// Appends waiting for a flusher; past it, a writer waits to queue (back-pressure).
const QUEUE: usize = 4096;

/// An append that outlives its caller's borrow while it waits for a flusher.
struct Owned {
    aggregate_type: &'static str,
    aggregate_id: String,
    expected_sequence: u64,
    events: Vec<NewEvent>,
    metadata: HashMap<String, String>,
    idempotency: Option<IdempotencyClaim>,
    claims: Vec<ClaimOp>,
}

impl Owned {
    fn of(req: &Append<'_>) -> Self {
        Self {
            aggregate_type: req.aggregate_type,
            aggregate_id: req.aggregate_id.to_string(),
            expected_sequence: req.expected_sequence,
            events: req.events.clone(),
            metadata: req.metadata.clone(),
            idempotency: req.idempotency.cloned(),
            claims: req.claims.clone(),
        }
    }
}

struct Pending {
    append: Owned,
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// The queue the writers put their appends on; the flushers write them.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts `flushers` tasks writing for `store` (a store without group commit: the path an
    /// append takes alone). They end when the last `GroupCommit` is dropped.
    pub fn start(store: EventStore, flushers: usize) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..flushers.max(1) {
            tokio::spawn(flusher(store.clone(), rx.clone()));
        }
        Self { queue }
    }

    /// Writes `req` with whatever else is waiting; the answer is this append's own.
    pub async fn append(
        &self,
        store: &EventStore,
        req: &Append<'_>,
    ) -> Result<AppendResult, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            append: Owned::of(req),
            reply,
        };
        if self.queue.send(pending).await.is_err() {
            // No flusher left (shutting down): write it alone.
            return store.append_single_statement(req).await;
        }
        match answer.await {
            Ok(result) => result,
            // The flusher was dropped mid-write (runtime shutting down): the outcome is not
            // known, which is what a lost connection says too.
            Err(_) => Err(StoreError::Database(sqlx::Error::PoolClosed)),
        }
    }
}

async fn flusher(store: EventStore, rx: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(p) => batch.push(p),
                None => return,
            }
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        write(&store, batch).await;
    }
}

/// Writes one gathered batch and answers each writer.
async fn write(store: &EventStore, batch: Vec<Pending>) {
    metrics::histogram!("append_group_size").record(batch.len() as f64);
    // A stream or an idempotency key twice in one statement would make the parts depend on
    // each other: those appends go alone (one process serialises a stream's commands, so this
    // is a replayed request racing itself, or two processes' work).
    let mut streams = HashSet::new();
    let mut keys = HashSet::new();
    let (group, alone): (Vec<Pending>, Vec<Pending>) = batch.into_iter().partition(|p| {
        let a = &p.append;
        let stream_new = streams.insert((a.aggregate_type, a.aggregate_id.clone()));
        let key_new = a
            .idempotency
            .as_ref()
            .is_none_or(|k| keys.insert(k.key.clone()));
        stream_new && key_new
    });
    let alone_done = futures::future::join_all(alone.into_iter().map(|p| one(store, p)));
    let group_done = async {
        if group.len() == 1 {
            for p in group {
                one(store, p).await;
            }
            return;
        }
        match write_group(store, &group).await {
            Ok(results) => {
                for (p, r) in group.into_iter().zip(results) {
                    let _ = p.reply.send(r);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, size = group.len(), "group append failed; writing each alone");
                metrics::counter!("append_group_fallbacks_total").increment(1);
                futures::future::join_all(group.into_iter().map(|p| one(store, p))).await;
            }
        }
    };
    tokio::join!(alone_done, group_done);
}

async fn one(store: &EventStore, p: Pending) {
    let Pending { append: a, reply } = p;
    let req = Append {
        aggregate_type: a.aggregate_type,
        aggregate_id: &a.aggregate_id,
        expected_sequence: a.expected_sequence,
        events: a.events,
        metadata: &a.metadata,
        idempotency: a.idempotency.as_ref(),
        claims: a.claims,
        snapshot: None,
    };
    let _ = reply.send(store.append_single_statement(&req).await);
}

/// One statement for the whole group: the idempotency keys (a key already taken keeps its
/// append's events and claims out, and only its), the claims and the events. Any error fails
/// the whole statement; the caller then writes each append alone.
async fn write_group(
    store: &EventStore,
    group: &[Pending],
) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
    let n = group.len();
    let mut idx = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut responses = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let (mut c_item, mut c_scope, mut c_value) = (Vec::new(), Vec::new(), Vec::new());
    let (mut e_item, mut e_seq, mut e_type, mut e_version, mut e_payload) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let null = Value::Null;
    for (i, p) in group.iter().enumerate() {
        let a = &p.append;
        let i = i as i32;
        idx.push(i);
        types.push(a.aggregate_type);
        ids.push(a.aggregate_id.as_str());
        keys.push(a.idempotency.as_ref().map(|k| k.key.as_str()));
        hashes.push(a.idempotency.as_ref().map(|k| k.request_hash.as_str()));
        responses.push(a.idempotency.as_ref().map_or(&null, |k| &k.response));
        metadata.push(serde_json::to_value(&a.metadata)?);
        for c in &a.claims {
            if let ClaimOp::Claim { scope, value } = c {
                c_item.push(i);
                c_scope.push(*scope);
                c_value.push(value.as_str());
            }
        }
        for (k, e) in a.events.iter().enumerate() {
            e_item.push(i);
            e_seq.push(a.expected_sequence as i64 + 1 + k as i64);
            e_type.push(e.event_type.as_str());
            e_version.push(e.event_version.as_str());
            e_payload.push(&e.payload);
        }
    }
    let rows: Vec<(i32, i64, String)> = sqlx::query_as(
        "WITH it AS (
             SELECT * FROM UNNEST($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
                 AS u(i, at, aid, k, rh, resp, md)
         ), k AS (
             INSERT INTO idempotency_keys (key, request_hash, aggregate_type, aggregate_id, response)
             SELECT k, rh, at, aid, resp FROM it WHERE k IS NOT NULL
             ON CONFLICT (key) DO NOTHING RETURNING key
         ), ok AS (
             SELECT i, at, aid, md FROM it WHERE k IS NULL OR k IN (SELECT key FROM k)
         ), c AS (
             INSERT INTO unique_claims (scope, value, owner_type, owner_id)
             SELECT cs, cv, ok.at, ok.aid
             FROM UNNEST($8::int[], $9::text[], $10::text[]) AS c(ci, cs, cv) JOIN ok ON ok.i = c.ci
         ), e AS (
             INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT ok.at, ok.aid, ev.s, ev.t, ev.v, ev.p, ok.md
             FROM UNNEST($11::int[], $12::bigint[], $13::text[], $14::text[], $15::jsonb[])
                 WITH ORDINALITY AS ev(ei, s, t, v, p, n)
             JOIN ok ON ok.i = ev.ei
             ORDER BY ev.n
             RETURNING aggregate_type, aggregate_id, position, transaction_id::text AS txid
         )
         SELECT ok.i, e.position, e.txid
         FROM e JOIN ok ON ok.at = e.aggregate_type AND ok.aid = e.aggregate_id",
    )
    .bind(&idx)
    .bind(&types)
    .bind(&ids)
    .bind(&keys)
    .bind(&hashes)
    .bind(&responses)
    .bind(&metadata)
    .bind(&c_item)
    .bind(&c_scope)
    .bind(&c_value)
    .bind(&e_item)
    .bind(&e_seq)
    .bind(&e_type)
    .bind(&e_version)
    .bind(&e_payload)
    .fetch_all(store.pool())
    .await?;
    let mut landed: Vec<Vec<(i64, String)>> = vec![Vec::new(); n];
    for (i, position, txid) in rows {
        if let Some(l) = landed.get_mut(i as usize) {
            l.push((position, txid));
        }
    }
    // The appends whose key was already taken: their records, in one query.
    let taken: Vec<&str> = group
        .iter()
        .zip(&landed)
        .filter(|(_, rows)| rows.is_empty())
        .filter_map(|(p, _)| p.append.idempotency.as_ref().map(|k| k.key.as_str()))
        .collect();
    let mut records: HashMap<String, IdempotencyRecord> = if taken.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, IdempotencyRecord>(
            "SELECT key, request_hash, aggregate_type, aggregate_id, response
             FROM idempotency_keys WHERE key = ANY($1)",
        )
        .bind(&taken)
        .fetch_all(store.pool())
        .await?
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect()
    };
    let mut results = Vec::with_capacity(n);
    for (p, rows) in group.iter().zip(landed) {
        let a = &p.append;
        results.push(if rows.is_empty() {
            // Only an idempotency key already taken keeps an append's events out.
            match &a.idempotency {
                Some(idem) => match records.remove(&idem.key) {
                    Some(r) if r.request_hash == idem.request_hash => {
                        Ok(AppendResult::Duplicate(r))
                    }
                    Some(r) => Err(StoreError::IdempotencyMismatch(Box::new(r))),
                    None => Err(StoreError::VersionConflict),
                },
                None => Err(StoreError::Decode("the append inserted nothing".into())),
            }
        } else {
            landing(a.expected_sequence, a.events.len(), &rows)
                .ok_or_else(no_landing)
                .map(|c| AppendResult::Committed(Some(c)))
        });
    }
    Ok(results)
}
