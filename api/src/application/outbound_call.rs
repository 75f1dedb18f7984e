//! Use case: an outbound call requested by a user (or, next, by a campaign). Gathers the facts
//! the rules need from the aggregates that hold them (the agent decides the version to dial
//! with, the establishment's telephony policy the caller id and the blacklist: `OutboundFacts`),
//! checks the runtime can take the call, queues it on a new stream, where the Call aggregate
//! refuses on those facts (idempotent on the caller's key: the same key answers the same call
//! and never dials twice), and wakes the placement worker, which dials Twilio outside any
//! transaction.

use std::sync::Arc;

use aggregates::agent::Agent;
use aggregates::call::{
    Call, CallCommand, CallError, MachineDetection, OutboundFacts, OutboundRefusal, Requester,
    RuntimeUnavailableReason,
};
use aggregates::common::E164;
use aggregates::telephony::Telephony;
use chrono::{DateTime, Utc};
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
    /// A campaign's pinned agent version (default: the agent's active version).
    pub pinned_version: Option<String>,
    pub metadata: Map<String, Value>,
    pub machine_detection: Option<MachineDetection>,
    /// The caller's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// Set when a campaign dials a lead (the call carries them; the key is theirs).
    pub campaign: Option<CampaignDial>,
    /// When the call is asked for (default: now; the dialer passes its clock).
    pub at: Option<DateTime<Utc>>,
}

/// A campaign's attempt on a lead: the call's requester and its idempotency key
/// `campaign:{campaign}:{lead}:{attempt}`, so one attempt is at most one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignDial {
    pub campaign_id: String,
    pub lead_id: String,
    pub attempt: u32,
}

impl CampaignDial {
    pub fn idempotency_key(&self) -> String {
        format!(
            "campaign:{}:{}:{}",
            self.campaign_id, self.lead_id, self.attempt
        )
    }
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
    /// The domain refused the call (agent, version, caller id, blacklist).
    #[error(transparent)]
    Refused(OutboundRefusal),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("outbound calls need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")]
    TwilioNotConfigured,
    #[error("the establishment's runtime cannot take calls ({0})")]
    RuntimeUnavailable(RuntimeUnavailableReason),
    #[error(transparent)]
    Command(ExecError<CallError>),
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
        let (telephony, _) = self.bus.load::<Telephony>(&req.establishment_id).await?;
        let facts = OutboundFacts::gather(
            &telephony,
            &agent,
            &req.establishment_id,
            req.from.as_ref(),
            &req.to,
            req.pinned_version.as_deref(),
        );
        // The aggregates' answers come first (the call itself refuses on them again below):
        // a refused call is never told about Twilio or the runtime.
        let from = match (&facts.agent_version, &facts.caller_id) {
            (Err(r), _) | (_, Err(r)) => return Err(OutboundError::Refused(r.clone())),
            (Ok(_), Ok(from)) => from.clone(),
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
        let mut metadata = req.metadata;
        let options = match (&req.campaign, &req.idempotency_key) {
            (Some(dial), _) => {
                let key = dial.idempotency_key();
                metadata.insert("idempotency_key".into(), Value::String(key.clone()));
                ExecOptions::idempotent(IdempotencyClaim {
                    request_hash: hex::encode(Sha256::digest(key.as_bytes())),
                    key,
                    response: serde_json::to_value(&queued)
                        .map_err(|e| Unexpected::Other(e.to_string()))?,
                })
            }
            (None, Some(k)) => {
                let body = json!({"establishment_id": req.establishment_id, "agent_id": req.agent_id,
                    "to_e164": req.to, "from_e164": req.from, "metadata": metadata,
                    "machine_detection": req.machine_detection.map(|m| m.as_str())});
                ExecOptions::idempotent(IdempotencyClaim {
                    key: format!("outbound:{}:{}:{k}", req.establishment_id, req.user_id),
                    request_hash: hex::encode(Sha256::digest(body.to_string().as_bytes())),
                    response: serde_json::to_value(&queued)
                        .map_err(|e| Unexpected::Other(e.to_string()))?,
                })
            }
            (None, None) => ExecOptions::default(),
        }
        .fresh();
        let actor = match &req.campaign {
            Some(_) => Actor::System("dialer".into()),
            None => Actor::User(req.user_id.clone()),
        };
        let ctx = CommandContext::from_request(actor, &req.request_id)
            .in_establishment(&req.establishment_id);
        let requested_by = match &req.campaign {
            Some(d) => Requester::Campaign {
                campaign_id: d.campaign_id.clone(),
                lead_id: Some(d.lead_id.clone()),
                attempt: Some(d.attempt),
            },
            None => Requester::User {
                user_id: req.user_id.clone(),
            },
        };
        let outcome = self
            .bus
            .execute::<Call>(
                &call_id,
                CallCommand::QueueOutbound {
                    call_id: call_id.clone(),
                    establishment_id: req.establishment_id.clone(),
                    agent_id: req.agent_id.clone(),
                    to: req.to.clone(),
                    facts,
                    requested_by,
                    metadata,
                    machine_detection: req.machine_detection,
                    time_limit_seconds: None,
                    at: req.at.unwrap_or_else(Utc::now),
                },
                &ctx,
                options,
            )
            .await
            .map_err(|e| match e {
                ExecError::Domain(CallError::OutboundRefused(r)) => OutboundError::Refused(r),
                e => OutboundError::Command(e),
            })?;
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
