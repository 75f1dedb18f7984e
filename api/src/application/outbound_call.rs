//! Use case: an outbound call requested by a user (or, next, by a campaign). Gathers the facts
//! the rules need from the aggregates that hold them (the agent, the establishment's telephony
//! policy) and the runtime's availability, queues the call on a new stream (idempotent on the
//! caller's key: the same key answers the same call and never dials twice) and wakes the
//! placement worker, which dials Twilio outside any transaction.

use std::sync::Arc;

use aggregates::agent::Agent;
use aggregates::call::{
    Call, CallCommand, CallError, MachineDetection, Requester, RuntimeUnavailableReason,
};
use aggregates::common::E164;
use aggregates::telephony::Telephony;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::inbound_call::unavailable;
use super::{Invalid, Unexpected};
use crate::background::WorkQueue;
use crate::store::{
    Actor, CommandBus, CommandContext, ExecError, ExecOptions, IdempotencyClaim, Outcome,
    StoreError,
};

/// Largest `metadata` object kept with a call.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// A request for an outbound call, parsed at the boundary.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub user_id: String,
    pub request_id: String,
    pub establishment_id: String,
    pub agent_id: String,
    pub to: E164,
    pub from: Option<E164>,
    pub metadata: Map<String, Value>,
    pub machine_detection: Option<MachineDetection>,
    /// The caller's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

/// The queued call, as first answered (a replay gets the very same answer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueuedCall {
    pub call_id: String,
    pub status: String,
    pub establishment_id: String,
    pub agent_id: String,
    pub direction: String,
    pub from_e164: String,
    pub to_e164: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("agent not found")]
    AgentNotFound,
    #[error("the agent has no published version to call with")]
    NoPublishedVersion,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("outbound calls need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")]
    TwilioNotConfigured,
    #[error("the establishment's runtime cannot take calls ({0})")]
    RuntimeUnavailable(RuntimeUnavailableReason),
    #[error(transparent)]
    Command(#[from] ExecError<CallError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

impl From<StoreError> for OutboundError {
    fn from(e: StoreError) -> Self {
        OutboundError::Unexpected(e.into())
    }
}

impl From<sqlx::Error> for OutboundError {
    fn from(e: sqlx::Error) -> Self {
        OutboundError::Unexpected(e.into())
    }
}

/// The outbound-call use case.
pub struct OutboundCalls {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
    pub placer: WorkQueue<String>,
    /// Whether a Twilio account is configured (else nothing could be dialled).
    pub twilio_configured: bool,
}

impl OutboundCalls {
    /// Queues the call; `Ok((call, true))` when the key was seen before (nothing new queued).
    pub async fn request(&self, req: OutboundRequest) -> Result<(QueuedCall, bool), OutboundError> {
        if serde_json::to_vec(&req.metadata).map_or(0, |v| v.len()) > MAX_METADATA_BYTES {
            return Err(Invalid::new("metadata", "must be at most 16 KB of JSON").into());
        }
        let (agent, _) = self.bus.load::<Agent>(&req.agent_id).await?;
        if !agent.exists() || agent.establishment_id != req.establishment_id {
            return Err(OutboundError::AgentNotFound);
        }
        if agent.active_version_id.is_none() {
            return Err(OutboundError::NoPublishedVersion);
        }
        let (telephony, _) = self.bus.load::<Telephony>(&req.establishment_id).await?;
        if telephony.blacklist_e164.contains(&req.to) {
            return Err(Invalid::new("to_e164", "is on the establishment's blacklist").into());
        }
        let owned: Vec<&E164> = telephony.inbound_numbers.iter().map(|n| &n.e164).collect();
        let from = match &req.from {
            Some(f) if owned.contains(&f) => f.clone(),
            Some(_) => {
                return Err(
                    Invalid::new("from_e164", "must be one of the establishment's numbers").into(),
                )
            }
            None => owned.first().map(|n| (*n).clone()).ok_or_else(|| {
                Invalid::new("from_e164", "the establishment has no number to call from")
            })?,
        };
        if !self.twilio_configured {
            return Err(OutboundError::TwilioNotConfigured);
        }
        let runtime =
            projections::runtimes::availability(&self.pool, &req.establishment_id).await?;
        if let Some(reason) = runtime
            .as_ref()
            .map_or(Some(RuntimeUnavailableReason::Missing), unavailable)
        {
            return Err(OutboundError::RuntimeUnavailable(reason));
        }
        let call_id = crate::ids::new_id("call");
        let queued = QueuedCall {
            call_id: call_id.clone(),
            status: "queued".into(),
            establishment_id: req.establishment_id.clone(),
            agent_id: req.agent_id.clone(),
            direction: "outbound".into(),
            from_e164: from.as_str().into(),
            to_e164: req.to.as_str().into(),
        };
        let options = match &req.idempotency_key {
            Some(k) => {
                let body = json!({"establishment_id": req.establishment_id, "agent_id": req.agent_id,
                    "to_e164": req.to, "from_e164": req.from, "metadata": req.metadata,
                    "machine_detection": req.machine_detection.map(|m| m.as_str())});
                ExecOptions::idempotent(IdempotencyClaim {
                    key: format!("outbound:{}:{}:{k}", req.establishment_id, req.user_id),
                    request_hash: hex::encode(Sha256::digest(body.to_string().as_bytes())),
                    response: serde_json::to_value(&queued)
                        .map_err(|e| Unexpected::Other(e.to_string()))?,
                })
            }
            None => ExecOptions::default(),
        }
        .fresh();
        let ctx = CommandContext::from_request(Actor::User(req.user_id.clone()), &req.request_id)
            .in_establishment(&req.establishment_id);
        let outcome = self
            .bus
            .execute::<Call>(
                &call_id,
                CallCommand::QueueOutbound {
                    call_id: call_id.clone(),
                    establishment_id: req.establishment_id.clone(),
                    agent_id: req.agent_id.clone(),
                    from,
                    to: req.to.clone(),
                    requested_by: Requester::User {
                        user_id: req.user_id.clone(),
                    },
                    metadata: req.metadata,
                    machine_detection: req.machine_detection,
                    time_limit_seconds: None,
                    at: Utc::now(),
                },
                &ctx,
                options,
            )
            .await?;
        if let Outcome::Duplicate(record) = &outcome {
            let first: QueuedCall = serde_json::from_value(record.response.clone())
                .map_err(|e| Unexpected::Other(e.to_string()))?;
            return Ok((first, true));
        }
        self.bus.visible(&outcome).await;
        self.placer.enqueue(call_id.clone());
        Ok((queued, false))
    }
}
