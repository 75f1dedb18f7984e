//! Use case: an incoming call (Twilio's incoming-call webhook). Routes it by the called number
//! with the in-memory routing model (number, blacklist, active version, business hours), then
//! the establishment's runtime, records the decision on the call's stream (opening it) and
//! answers with the decision on record: a repeated webhook gets the first answer, never a new
//! one.

use std::sync::Arc;

use aggregates::call::{
    Call, CallCommand, CallOpening, Direction, Fallback, OpenedBy, Party, RoutingDecision,
    RuntimeUnavailableReason,
};
use aggregates::common::E164;
use aggregates::telephony::{Rejection, RouteDecision, RoutingEntry};
use chrono::{DateTime, Utc};
use projections::routing::RoutingIndex;
use projections::runtimes::RuntimeAvailability;
use sqlx::PgPool;

use super::call_streams::CallStreams;
use super::Unexpected;
use crate::store::{CommandContext, ExecError, ExecOptions, IdempotencyClaim, Outcome};

/// Why an incoming call could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error(transparent)]
    Command(#[from] ExecError<aggregates::call::CallError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

impl From<sqlx::Error> for InboundError {
    fn from(e: sqlx::Error) -> Self {
        InboundError::Unexpected(e.into())
    }
}

impl From<crate::store::StoreError> for InboundError {
    fn from(e: crate::store::StoreError) -> Self {
        InboundError::Unexpected(e.into())
    }
}

/// Why a runtime cannot take a call now, if it cannot.
pub fn unavailable(rt: &RuntimeAvailability) -> Option<RuntimeUnavailableReason> {
    if rt.draining {
        Some(RuntimeUnavailableReason::Draining)
    } else if rt.status != "running" || !rt.ready || rt.media_stream_url.is_none() {
        Some(RuntimeUnavailableReason::NotReady)
    } else {
        None
    }
}

/// The routing decision for an inbound call (the pure routing model, then the runtime).
pub struct Routed {
    pub decision: RoutingDecision,
    pub entry: Option<Arc<RoutingEntry>>,
    pub runtime: Option<RuntimeAvailability>,
}

/// Routes a call to `to` from `from` as of `now`.
pub async fn route(
    routing: &RoutingIndex,
    pool: &PgPool,
    to: &str,
    from: &str,
    now: DateTime<Utc>,
) -> Result<Routed, sqlx::Error> {
    let entry = routing.lookup(to);
    let fallback = || match entry.as_ref().and_then(|e| e.handoff_e164.as_deref()) {
        Some(n) => match n.parse::<E164>() {
            Ok(to) => Fallback::DialHandoff { to },
            Err(_) => Fallback::Hangup,
        },
        None => Fallback::Hangup,
    };
    let mut runtime = None;
    let decision = match aggregates::telephony::route(entry.as_deref(), from, now) {
        RouteDecision::Reject(Rejection::UnknownNumber) => RoutingDecision::RejectedUnknownNumber,
        RouteDecision::Reject(Rejection::BlacklistedCaller { .. }) => {
            RoutingDecision::RejectedBlacklisted
        }
        RouteDecision::Reject(Rejection::OutsideBusinessHours { .. }) => {
            RoutingDecision::OutsideBusinessHours {
                fallback: fallback(),
            }
        }
        RouteDecision::Reject(Rejection::NoPublishedVersion { agent_id, .. }) => {
            RoutingDecision::NoPublishedVersion {
                agent_id: Some(agent_id),
                fallback: fallback(),
            }
        }
        RouteDecision::Accept(target) => {
            runtime = projections::runtimes::availability(pool, &target.establishment_id).await?;
            match &runtime {
                None => RoutingDecision::RuntimeUnavailable {
                    reason: RuntimeUnavailableReason::Missing,
                    runtime_id: None,
                    fallback: fallback(),
                },
                Some(rt) => match unavailable(rt) {
                    Some(reason) => RoutingDecision::RuntimeUnavailable {
                        reason,
                        runtime_id: Some(rt.id.clone()),
                        fallback: fallback(),
                    },
                    None => RoutingDecision::Accepted {
                        agent_id: target.agent_id,
                        agent_version_id: target.version_id,
                        runtime_id: rt.id.clone(),
                    },
                },
            }
        }
    };
    Ok(Routed {
        decision,
        entry,
        runtime,
    })
}

/// An incoming call as Twilio describes it (signature already checked).
#[derive(Debug, Clone)]
pub struct IncomingCall {
    pub call_sid: aggregates::call::CallSid,
    pub from: Party,
    pub to: Party,
}

/// What to answer Twilio.
#[derive(Debug, Clone)]
pub enum InboundAnswer {
    /// Nobody holds the called number: reject (nothing is recorded).
    UnknownNumber,
    /// The decision recorded on the call.
    Routed {
        call_id: String,
        establishment_id: String,
        decision: RoutingDecision,
        /// Where the runtime takes the media stream, when the call was accepted.
        media_stream_url: Option<String>,
    },
}

/// The incoming-call use case.
pub struct InboundCalls {
    pub routing: Arc<RoutingIndex>,
    pub pool: PgPool,
    pub streams: Arc<CallStreams>,
}

impl InboundCalls {
    pub async fn receive(
        &self,
        call: IncomingCall,
        ctx: CommandContext,
        now: DateTime<Utc>,
    ) -> Result<InboundAnswer, InboundError> {
        let routed = route(
            &self.routing,
            &self.pool,
            call.to.as_str(),
            call.from.as_str(),
            now,
        )
        .await?;
        let Some(entry) = routed
            .entry
            .clone()
            .filter(|_| !matches!(routed.decision, RoutingDecision::RejectedUnknownNumber))
        else {
            metrics::counter!("calls_rejected_unknown_number_total").increment(1);
            tracing::info!(to = %call.to, call_sid = %call.call_sid, "incoming call to a number nobody owns: rejected");
            return Ok(InboundAnswer::UnknownNumber);
        };
        let establishment_id = entry.establishment_id.clone();
        let (agent_id, agent_version_id) = match &routed.decision {
            RoutingDecision::Accepted {
                agent_id,
                agent_version_id,
                ..
            } => (Some(agent_id.clone()), Some(agent_version_id.clone())),
            _ => (
                Some(entry.agent_id.clone()),
                entry.active_version_id.clone(),
            ),
        };
        let ctx = ctx.in_establishment(&establishment_id);
        let decision = routed.decision.clone();
        let key = format!("twilio:{}:incoming", call.call_sid);
        let (call_id, outcome) = self
            .streams
            .execute_for_new_sid(
                &call.call_sid,
                |call_id| CallCommand::ReceiveInbound {
                    open: CallOpening {
                        call_id: call_id.to_string(),
                        establishment_id: establishment_id.clone(),
                        direction: Direction::Inbound,
                        call_sid: Some(call.call_sid.clone()),
                        from: call.from.clone(),
                        to: call.to.clone(),
                        agent_id: agent_id.clone(),
                        agent_version_id: agent_version_id.clone(),
                        opened_by: OpenedBy::IncomingWebhook,
                        at: now,
                    },
                    decision: decision.clone(),
                },
                &ctx,
                ExecOptions::idempotent(IdempotencyClaim::keyed(key)),
            )
            .await?;
        // A repeated webhook (or a call opened first by a callback) answers with the decision
        // on record, not a new one.
        let recorded = match outcome {
            Outcome::Applied { state: call, .. } | Outcome::Unchanged { state: call } => {
                call.routing
            }
            Outcome::Duplicate(_) => self.streams.bus().load::<Call>(&call_id).await?.0.routing,
        }
        .unwrap_or(routed.decision);
        let media_stream_url = match (&recorded, &routed.runtime) {
            (RoutingDecision::Accepted { .. }, Some(rt)) => rt.media_stream_url.clone(),
            (RoutingDecision::Accepted { .. }, None) => {
                projections::runtimes::availability(&self.pool, &establishment_id)
                    .await?
                    .and_then(|r| r.media_stream_url)
            }
            _ => None,
        };
        metrics::counter!("calls_routed_total", "outcome" => recorded.outcome()).increment(1);
        Ok(InboundAnswer::Routed {
            call_id,
            establishment_id,
            decision: recorded,
            media_stream_url,
        })
    }
}

/// The spoken line before a fallback (`<Say>`), by decision.
pub fn fallback_message(decision: &RoutingDecision) -> &'static str {
    match decision {
        RoutingDecision::OutsideBusinessHours { .. } => {
            "Thank you for calling. We are closed right now."
        }
        _ => "Thank you for calling. Our assistant is not available right now.",
    }
}
