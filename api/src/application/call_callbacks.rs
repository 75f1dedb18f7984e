//! Use case: Twilio's callbacks about a call (progress, answering-machine detection, a
//! finished provider recording). Each lands on the call's stream, found by the `call_id` the
//! control plane put in the callback URL (outbound calls) or by `CallSid`; callbacks are
//! deduplicated by their idempotency key (`CallSid` + `SequenceNumber` for progress), arrive in
//! any order, and a progress callback for a call nobody knows yet opens it when the number on
//! our side belongs to an establishment. Callbacks about calls we cannot match are dropped with
//! a log line and a metric, never an error Twilio would retry forever.

use std::sync::Arc;

use aggregates::call::{
    AnsweredBy, CallCommand, CallError, CallOpening, CallSid, Direction, OpenedBy, RecordingRef,
    StatusCallback,
};
use chrono::{DateTime, Utc};
use projections::routing::RoutingIndex;

use super::call_streams::CallStreams;
use crate::adapters::twilio::webhook::CallParams;
use crate::store::{Actor, CommandContext, ExecError, ExecOptions, IdempotencyClaim};

/// Which call a callback is about.
#[derive(Debug, Clone)]
pub struct CallbackTarget {
    /// `call_id` from the callback URL, when the control plane set one (outbound calls).
    pub call_id: Option<String>,
    pub call_sid: CallSid,
}

/// The callbacks use case.
pub struct CallCallbacks {
    pub routing: Arc<RoutingIndex>,
    pub streams: Arc<CallStreams>,
}

/// Context of a command caused by a Twilio request about `sid`.
pub fn twilio_ctx(sid: &str, request_id: &str, establishment_id: Option<&str>) -> CommandContext {
    let mut ctx = CommandContext::from_request(Actor::Twilio(sid.to_string()), request_id);
    ctx.correlation_id = sid.to_string();
    if let Some(e) = establishment_id {
        ctx = ctx.in_establishment(e);
    }
    ctx
}

impl CallCallbacks {
    /// A call-progress callback.
    pub async fn status(
        &self,
        target: CallbackTarget,
        params: &CallParams,
        callback: StatusCallback,
        request_id: &str,
    ) -> Result<(), ExecError<CallError>> {
        let owner = self.owner_of_number(params);
        let open = owner.as_ref().map(|(est, agent)| CallOpening {
            call_id: String::new(),
            establishment_id: est.clone(),
            direction: params.direction,
            call_sid: Some(params.call_sid.clone()),
            from: params.from.clone(),
            to: params.to.clone(),
            agent_id: agent.clone(),
            agent_version_id: None,
            opened_by: OpenedBy::StatusCallback,
            at: callback.at(),
        });
        let key = match callback.sequence_number {
            Some(n) => format!("twilio:{}:seq:{n}", params.call_sid),
            None => format!("twilio:{}:status:{}", params.call_sid, callback.status),
        };
        let ctx = twilio_ctx(
            params.call_sid.as_str(),
            request_id,
            owner.as_ref().map(|o| o.0.as_str()),
        );
        self.on_call(
            &target,
            open,
            |open| CallCommand::RecordTwilioStatus {
                open,
                callback: callback.clone(),
            },
            &ctx,
            key,
        )
        .await
    }

    /// The asynchronous answering-machine-detection result.
    pub async fn answered_by(
        &self,
        target: CallbackTarget,
        answered_by: AnsweredBy,
        detection_duration_ms: Option<u32>,
        request_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), ExecError<CallError>> {
        let sid = target.call_sid.clone();
        let ctx = twilio_ctx(sid.as_str(), request_id, None);
        self.on_call(
            &target,
            None,
            |_| CallCommand::RecordAnsweredBy {
                call_sid: sid.clone(),
                answered_by,
                detection_duration_ms,
                at,
            },
            &ctx,
            format!("twilio:{sid}:amd"),
        )
        .await
    }

    /// A provider-side recording finished.
    pub async fn recording(
        &self,
        target: CallbackTarget,
        recording_sid: String,
        recording: RecordingRef,
        request_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), ExecError<CallError>> {
        let ctx = twilio_ctx(target.call_sid.as_str(), request_id, None);
        let key = format!("twilio:{recording_sid}:recording");
        self.on_call(
            &target,
            None,
            |_| CallCommand::RecordProviderRecording {
                recording_sid: recording_sid.clone(),
                recording: recording.clone(),
                at,
            },
            &ctx,
            key,
        )
        .await
    }

    /// The establishment owning the number we hold on a call we have not seen (inbound: `To`,
    /// outbound: `From`), with the agent it routes to.
    fn owner_of_number(&self, p: &CallParams) -> Option<(String, Option<String>)> {
        let ours = match p.direction {
            Direction::Inbound => p.to.as_str(),
            Direction::Outbound => p.from.as_str(),
        };
        self.routing
            .lookup(ours)
            .map(|e| (e.establishment_id.clone(), Some(e.agent_id.clone())))
    }

    /// Runs `command` on the call a callback is about: by `call_id` (outbound calls), else by
    /// CallSid. Calls nobody knows, and callbacks that do not match their call, are dropped.
    async fn on_call(
        &self,
        target: &CallbackTarget,
        open: Option<CallOpening>,
        command: impl Fn(Option<CallOpening>) -> CallCommand,
        ctx: &CommandContext,
        key: String,
    ) -> Result<(), ExecError<CallError>> {
        let options = ExecOptions::idempotent(IdempotencyClaim::keyed(key));
        let sid = &target.call_sid;
        let result = match target
            .call_id
            .as_deref()
            .filter(|id| crate::ids::is_id("call", id))
        {
            Some(call_id) => self
                .streams
                .bus()
                .execute::<aggregates::call::Call>(call_id, command(None), ctx, options)
                .await
                .map(|_| ()),
            None => {
                let known = self
                    .streams
                    .lookup(sid.as_str())
                    .await
                    .map_err(ExecError::Store)?;
                if known.is_none() && open.is_none() {
                    tracing::warn!(call_sid = %sid, "callback for an unknown call on a number we do not hold: dropped");
                    metrics::counter!("twilio_callbacks_dropped_total").increment(1);
                    return Ok(());
                }
                self.streams
                    .execute_for_sid(
                        sid,
                        |call_id| {
                            command(open.clone().map(|mut o| {
                                o.call_id = call_id.to_string();
                                o
                            }))
                        },
                        ctx,
                        options,
                    )
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Err(ExecError::Domain(
                e @ (CallError::NotFound
                | CallError::EstablishmentMismatch
                | CallError::CallSidMismatch { .. }),
            )) => {
                tracing::warn!(call_sid = %sid, error = %e, "callback does not match a call: dropped");
                metrics::counter!("twilio_callbacks_dropped_total").increment(1);
                Ok(())
            }
            other => other,
        }
    }
}
