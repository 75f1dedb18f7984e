//! Use case: runtime events (Appendix B) land on their call's stream. Idempotent per B.3: the
//! event's idempotency key (scoped to the establishment) is claimed in the append's
//! transaction, so a replay adds nothing; the same key with another event is refused. An event
//! for a call the control plane has not seen yet opens it (runtime-first calls).

use std::sync::Arc;

use aggregates::call::{
    CallCommand, CallError, CallOpening, CallSid, Direction, OpenedBy, Party, RuntimeEvent,
    RuntimeOrigin,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::call_streams::CallStreams;
use crate::store::{Actor, CommandContext, ExecError, ExecOptions, IdempotencyClaim, Outcome};

/// The runtime that sent an event (from its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeIdentity {
    pub runtime_id: String,
    pub establishment_id: String,
}

/// One runtime event, parsed at the boundary.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub call_sid: CallSid,
    pub direction: Direction,
    pub from: Party,
    pub to: Party,
    pub agent_id: Option<String>,
    pub agent_version_id: Option<String>,
    /// The runtime's event id.
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    pub idempotency_key: String,
    pub event: RuntimeEvent,
    /// The event's type and payload as sent (what a replay must repeat exactly).
    pub kind: String,
    pub payload: Value,
}

/// Whether the event was new or a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    New,
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The CallSid belongs to another establishment's call: answered as if unknown.
    #[error("call not found")]
    CallNotFound,
    #[error(transparent)]
    Command(ExecError<CallError>),
}

pub struct Ingestion {
    pub streams: Arc<CallStreams>,
}

/// Calls of one batch ingested side by side.
const BATCH_CALLS_IN_FLIGHT: usize = 64;

impl Ingestion {
    /// Ingests a batch: the events of each call in the batch's order, different calls side by
    /// side (so their appends share commits). One answer per event, in the batch's order.
    pub async fn ingest_batch(
        &self,
        runtime: &RuntimeIdentity,
        request_id: &str,
        events: Vec<IncomingEvent>,
    ) -> Vec<Result<Ingested, IngestError>> {
        use futures::stream::{self, StreamExt};
        let mut calls: Vec<(CallSid, Vec<(usize, IncomingEvent)>)> = Vec::new();
        let mut of_sid: std::collections::HashMap<CallSid, usize> = Default::default();
        let total = events.len();
        for (i, e) in events.into_iter().enumerate() {
            let slot = *of_sid.entry(e.call_sid.clone()).or_insert_with(|| {
                calls.push((e.call_sid.clone(), Vec::new()));
                calls.len() - 1
            });
            calls[slot].1.push((i, e));
        }
        let answered: Vec<Vec<(usize, Result<Ingested, IngestError>)>> = stream::iter(calls)
            .map(|(_, events)| async move {
                let mut out = Vec::with_capacity(events.len());
                for (i, e) in events {
                    out.push((i, self.ingest(runtime, request_id, e).await));
                }
                out
            })
            .buffer_unordered(BATCH_CALLS_IN_FLIGHT)
            .collect()
            .await;
        let mut results: Vec<Option<Result<Ingested, IngestError>>> =
            (0..total).map(|_| None).collect();
        for (i, r) in answered.into_iter().flatten() {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.expect("every event of the batch is answered"))
            .collect()
    }

    pub async fn ingest(
        &self,
        runtime: &RuntimeIdentity,
        request_id: &str,
        e: IncomingEvent,
    ) -> Result<Ingested, IngestError> {
        let request_hash = {
            let mut h = Sha256::new();
            h.update(e.kind.as_bytes());
            h.update([0]);
            h.update(e.call_sid.as_str().as_bytes());
            h.update([0]);
            h.update(e.payload.to_string().as_bytes());
            hex::encode(h.finalize())
        };
        let options = ExecOptions::idempotent(IdempotencyClaim {
            key: format!("ingest:{}:{}", runtime.establishment_id, e.idempotency_key),
            request_hash,
            response: Value::Null,
        })
        .without_precheck();
        let mut ctx =
            CommandContext::from_request(Actor::Runtime(runtime.runtime_id.clone()), request_id)
                .in_establishment(&runtime.establishment_id);
        ctx.correlation_id = e.call_sid.as_str().to_string();
        ctx.causation_id = e.event_id.clone();
        let origin = RuntimeOrigin {
            runtime_id: runtime.runtime_id.clone(),
            event_id: e.event_id.clone(),
            occurred_at: e.occurred_at,
        };
        let result = self
            .streams
            .execute_for_sid(
                &e.call_sid,
                |call_id| CallCommand::IngestRuntimeEvent {
                    open: CallOpening {
                        call_id: call_id.to_string(),
                        establishment_id: runtime.establishment_id.clone(),
                        direction: e.direction,
                        call_sid: Some(e.call_sid.clone()),
                        from: e.from.clone(),
                        to: e.to.clone(),
                        agent_id: e.agent_id.clone(),
                        agent_version_id: e.agent_version_id.clone(),
                        opened_by: OpenedBy::Runtime,
                        at: e.occurred_at,
                    },
                    origin: origin.clone(),
                    event: e.event.clone(),
                },
                &ctx,
                options,
            )
            .await;
        match result {
            Ok((_, Outcome::Duplicate(_))) => {
                metrics::counter!("ingest_events_total", "result" => "duplicate").increment(1);
                Ok(Ingested::Duplicate)
            }
            Ok(_) => {
                metrics::counter!("ingest_events_total", "result" => "accepted", "type" => e.event.type_name()).increment(1);
                Ok(Ingested::New)
            }
            Err(ExecError::Domain(CallError::EstablishmentMismatch)) => {
                Err(IngestError::CallNotFound)
            }
            Err(e) => Err(IngestError::Command(e)),
        }
    }
}
