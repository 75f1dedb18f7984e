//! How the call decides: the rules of every command, as a pure function of the state.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::Aggregate;

use super::*;

/// Events decided so far, applied to a scratch copy of the state so later rules of the same
/// command see their effect.
struct Decision {
    state: Call,
    events: Vec<CallEvent>,
}

impl Decision {
    fn emit(&mut self, e: CallEvent) {
        self.state.apply(e.clone());
        self.events.push(e);
    }

    /// Moves the status forward (Twilio, runtime, routing): never out of a terminal status,
    /// never to a lower or equal rank.
    fn advance(&mut self, to: CallStatus, cause: StatusCause, at: DateTime<Utc>) {
        let from = self.state.status;
        if !from.is_terminal() && to.rank() > from.rank() {
            self.emit(CallEvent::CallStatusChanged {
                from,
                to,
                cause,
                at,
            });
        }
    }

    /// An explicit transition (handoff, placement failure, reaper).
    fn set_status(&mut self, to: CallStatus, cause: StatusCause, at: DateTime<Utc>) {
        let from = self.state.status;
        if from != to {
            self.emit(CallEvent::CallStatusChanged {
                from,
                to,
                cause,
                at,
            });
        }
    }

    fn bind_sid(&mut self, sid: &CallSid, at: DateTime<Utc>) -> Result<(), CallError> {
        match &self.state.call_sid {
            None => {
                self.emit(CallEvent::CallSidBound {
                    call_sid: sid.clone(),
                    at,
                });
                Ok(())
            }
            Some(bound) if bound == sid => Ok(()),
            Some(bound) => Err(CallError::CallSidMismatch {
                bound: bound.to_string(),
                given: sid.to_string(),
            }),
        }
    }

    /// Opens the call from `open` when the stream is empty, else checks it belongs here.
    fn open_or_merge(&mut self, open: &CallOpening) -> Result<(), CallError> {
        if !self.state.exists() {
            let status = match open.direction {
                Direction::Inbound => CallStatus::Ringing,
                Direction::Outbound => CallStatus::Queued,
            };
            self.emit(CallEvent::CallOpened {
                call_id: open.call_id.clone(),
                establishment_id: open.establishment_id.clone(),
                direction: open.direction,
                provider: "twilio".into(),
                call_sid: open.call_sid.clone(),
                from: open.from.clone(),
                to: open.to.clone(),
                agent_id: open.agent_id.clone(),
                agent_version_id: open.agent_version_id.clone(),
                status,
                opened_by: open.opened_by,
                at: open.at,
            });
            return Ok(());
        }
        if self.state.establishment_id != open.establishment_id {
            return Err(CallError::EstablishmentMismatch);
        }
        if let Some(sid) = &open.call_sid {
            self.bind_sid(sid, open.at)?;
        }
        Ok(())
    }
}

impl Call {
    pub fn decide(&self, command: CallCommand) -> Result<Vec<CallEvent>, CallError> {
        use CallCommand as C;
        use CallEvent as E;
        let mut d = Decision {
            state: self.clone(),
            events: Vec::new(),
        };
        let creates = matches!(
            command,
            C::ReceiveInbound { .. }
                | C::RecordTwilioStatus { open: Some(_), .. }
                | C::QueueOutbound { .. }
                | C::IngestRuntimeEvent { .. }
        );
        if !self.exists() && !creates {
            return Err(CallError::NotFound);
        }
        match command {
            C::ReceiveInbound { open, decision } => {
                d.open_or_merge(&open)?;
                if d.state.routing.is_none() {
                    let effect = decision.status_effect();
                    d.emit(E::InboundCallRouted {
                        decision,
                        at: open.at,
                    });
                    if let Some(to) = effect {
                        d.advance(to, StatusCause::Routing, open.at);
                    }
                }
            }
            C::RecordTwilioStatus { open, callback } => {
                if let Some(open) = &open {
                    d.open_or_merge(open)?;
                }
                d.bind_sid(&callback.call_sid, callback.at())?;
                let seen = match callback.sequence_number {
                    Some(n) => d.state.twilio.seen.contains(n),
                    None => d.state.twilio.statuses_without_sequence & callback.status.bit() != 0,
                };
                if !seen {
                    let (to, at) = (callback.status.to_call_status(), callback.at());
                    let cause = StatusCause::TwilioCallback {
                        sequence_number: callback.sequence_number,
                    };
                    d.emit(E::TwilioStatusReceived { callback });
                    d.advance(to, cause, at);
                }
            }
            C::RecordAnsweredBy {
                call_sid,
                answered_by,
                detection_duration_ms,
                at,
            } => {
                d.bind_sid(&call_sid, at)?;
                if !(d.state.answered_by_final && d.state.answered_by == Some(answered_by)) {
                    d.emit(E::AnsweredByDetected {
                        answered_by,
                        detection_duration_ms,
                        at,
                    });
                }
            }
            C::BindCallSid { call_sid, at } => d.bind_sid(&call_sid, at)?,
            C::QueueOutbound {
                call_id,
                establishment_id,
                agent_id,
                to,
                facts,
                requested_by,
                metadata,
                machine_detection,
                time_limit_seconds,
                at,
            } => {
                if self.exists() {
                    return Err(CallError::AlreadyExists);
                }
                // In the order the API has always answered them: the agent, then the numbers.
                let version = facts.agent_version.map_err(CallError::OutboundRefused)?;
                let from = facts.caller_id.map_err(CallError::OutboundRefused)?;
                d.open_or_merge(&CallOpening {
                    call_id,
                    establishment_id,
                    direction: Direction::Outbound,
                    call_sid: None,
                    from: from.into(),
                    to: to.into(),
                    agent_id: Some(agent_id.clone()),
                    agent_version_id: Some(version),
                    opened_by: OpenedBy::OutboundRequest,
                    at,
                })?;
                d.emit(E::OutboundCallQueued {
                    agent_id,
                    requested_by,
                    metadata,
                    machine_detection,
                    time_limit_seconds,
                    at,
                });
            }
            C::RequestPlacement { at } => {
                self.require_outbound()?;
                if self.placement != Placement::NotRequested {
                    return Err(CallError::PlacementAlreadyRequested);
                }
                if self.is_terminal() {
                    return Err(CallError::CallEnded);
                }
                d.emit(E::PlacementRequested { at });
            }
            C::RecordPlacement { call_sid, at } => {
                self.require_outbound()?;
                match self.placement {
                    Placement::Requested => {}
                    Placement::Placed if self.call_sid.as_ref() == Some(&call_sid) => {
                        return Ok(vec![])
                    }
                    Placement::Placed => return Err(CallError::AlreadyPlaced),
                    Placement::NotRequested | Placement::Failed => {
                        return Err(CallError::PlacementNotRequested)
                    }
                }
                if let Some(bound) = &self.call_sid {
                    if *bound != call_sid {
                        return Err(CallError::CallSidMismatch {
                            bound: bound.to_string(),
                            given: call_sid.to_string(),
                        });
                    }
                }
                d.emit(E::CallPlaced { call_sid, at });
            }
            C::RecordPlacementFailure {
                http_status,
                code,
                message,
                at,
            } => {
                self.require_outbound()?;
                match self.placement {
                    Placement::Requested => {}
                    Placement::Failed => return Ok(vec![]),
                    Placement::Placed => return Err(CallError::AlreadyPlaced),
                    Placement::NotRequested => return Err(CallError::PlacementNotRequested),
                }
                d.emit(E::PlacementFailed {
                    http_status,
                    code,
                    message,
                    at,
                });
                if !d.state.is_terminal() {
                    d.set_status(CallStatus::Failed, StatusCause::PlacementFailed, at);
                }
            }
            C::RequestHandoff {
                reason,
                to,
                requested_by,
                at,
            } => {
                match self.status {
                    CallStatus::InProgress => {}
                    s if s.is_terminal() => return Err(CallError::CallEnded),
                    s if s.is_handoff() => return Err(CallError::HandoffAlreadyInProgress),
                    status => return Err(CallError::NotInProgress { status }),
                }
                if self.call_sid.is_none() {
                    return Err(CallError::NoProviderCallSid);
                }
                d.emit(E::HandoffRequested {
                    reason,
                    to,
                    requested_by,
                    at,
                });
                d.set_status(CallStatus::HandoffInitiated, StatusCause::Handoff, at);
            }
            C::RecordHandoffStarted { at } => match &self.handoff {
                Handoff::Requested { to } => {
                    d.emit(E::HandoffStarted { to: to.clone(), at });
                    if d.state.status == CallStatus::HandoffInitiated {
                        d.set_status(CallStatus::HandoffCompleted, StatusCause::Handoff, at);
                    }
                }
                Handoff::Started { .. } => {}
                Handoff::None | Handoff::Failed => return Err(CallError::NoHandoffRequested),
            },
            C::RecordHandoffFailure { code, message, at } => match &self.handoff {
                Handoff::Requested { .. } => {
                    d.emit(E::HandoffFailed { code, message, at });
                    if d.state.status == CallStatus::HandoffInitiated {
                        d.set_status(CallStatus::InProgress, StatusCause::Handoff, at);
                    }
                }
                Handoff::Failed => {}
                Handoff::None | Handoff::Started { .. } => {
                    return Err(CallError::NoHandoffRequested)
                }
            },
            C::Reap {
                now,
                max_duration_seconds,
                grace_seconds,
                reason,
            } => {
                if self.is_terminal() {
                    return Ok(vec![]);
                }
                let opened = self.opened_at.unwrap_or(now);
                // Checked: the opening time came from outside; an unrepresentable deadline
                // means the call can never be overdue.
                let deadline = opened.checked_add_signed(Duration::seconds(
                    i64::from(max_duration_seconds) + i64::from(grace_seconds),
                ));
                match deadline {
                    Some(deadline) if now >= deadline => {}
                    Some(deadline) => return Err(CallError::NotOverdue { deadline }),
                    None => {
                        return Err(CallError::NotOverdue {
                            deadline: DateTime::<Utc>::MAX_UTC,
                        })
                    }
                }
                let previous_status = self.status;
                d.emit(E::CallReaped {
                    reason,
                    previous_status,
                    at: now,
                });
                let end = if previous_status.is_answered() {
                    CallStatus::Completed
                } else {
                    CallStatus::Failed
                };
                d.set_status(end, StatusCause::Reaper, now);
            }
            C::IngestRuntimeEvent {
                open,
                origin,
                event,
            } => {
                d.open_or_merge(&open)?;
                self.ingest(&mut d, open, origin, event);
            }
            C::RecordProviderRecording {
                recording_sid,
                recording,
                at,
            } => {
                d.emit(E::RecordingAvailable {
                    origin: RuntimeOrigin {
                        runtime_id: "twilio".into(),
                        event_id: recording_sid,
                        occurred_at: at,
                    },
                    recording,
                });
            }
            C::RecordSentiment {
                label,
                score,
                windows,
                segments_considered,
                computed_at,
            } => {
                if self
                    .sentiment_segments
                    .is_none_or(|n| segments_considered > n)
                {
                    d.emit(E::SentimentComputed {
                        label,
                        score,
                        windows,
                        segments_considered,
                        computed_at,
                    });
                }
            }
            C::RequestToolProxy {
                establishment_id,
                request,
            } => return self.request_tool_proxy(&establishment_id, request),
            C::RecordToolProxyOutcome { outcome } => return self.record_tool_proxy(outcome),
            C::RecordSummary {
                summary,
                generator,
                segments_covered,
                generated_at,
            } => {
                if self.summary_segments.is_none_or(|n| segments_covered > n) {
                    d.emit(E::SummaryGenerated {
                        summary,
                        generator,
                        segments_covered,
                        generated_at,
                    });
                }
            }
        }
        Ok(d.events)
    }

    fn require_outbound(&self) -> Result<(), CallError> {
        if self.direction == Some(Direction::Outbound) {
            Ok(())
        } else {
            Err(CallError::NotOutbound)
        }
    }

    fn ingest(
        &self,
        d: &mut Decision,
        open: CallOpening,
        origin: RuntimeOrigin,
        event: RuntimeEvent,
    ) {
        use CallEvent as E;
        match event {
            RuntimeEvent::CallStarted { started_at } => {
                d.emit(E::RuntimeCallStarted {
                    origin,
                    agent_id: open.agent_id,
                    agent_version_id: open.agent_version_id,
                    started_at,
                });
                d.advance(CallStatus::InProgress, StatusCause::Runtime, started_at);
            }
            RuntimeEvent::CallConnected { connected_at } => {
                let at = connected_at.unwrap_or(origin.occurred_at);
                d.emit(E::RuntimeCallConnected {
                    origin,
                    connected_at,
                });
                d.advance(CallStatus::InProgress, StatusCause::Runtime, at);
            }
            RuntimeEvent::CallEnded {
                ended_at,
                duration_seconds,
                final_status,
                hangup_by,
                segment_count,
            } => {
                if d.state.runtime.ended {
                    return;
                }
                d.emit(E::RuntimeCallEnded {
                    origin,
                    ended_at,
                    duration_seconds,
                    final_status,
                    hangup_by,
                    segment_count,
                });
                // After a handoff the media stream closes while the caller talks to a human:
                // the call goes on until Twilio (or the reaper) ends it.
                if !d.state.status.is_handoff() {
                    d.advance(final_status.into(), StatusCause::Runtime, ended_at);
                }
            }
            RuntimeEvent::TranscriptSegment(segment) => {
                let ordinal = d.state.runtime.segments + 1;
                d.emit(E::TranscriptSegmentAdded {
                    origin,
                    ordinal,
                    segment,
                });
            }
            RuntimeEvent::ToolCalled {
                tool_name,
                arguments,
            } => {
                let invocation = d.state.runtime.tool_calls + 1;
                d.emit(E::ToolCalled {
                    origin,
                    invocation,
                    tool_name,
                    arguments,
                });
            }
            RuntimeEvent::ToolResult {
                tool_name,
                result,
                error,
            } => {
                let invocation = d
                    .state
                    .runtime
                    .pending_tools
                    .iter()
                    .find(|(name, _)| *name == tool_name)
                    .map(|(_, n)| *n);
                d.emit(E::ToolResultReceived {
                    origin,
                    invocation,
                    tool_name,
                    result,
                    error,
                });
            }
            RuntimeEvent::RecordingAvailable(recording) => {
                d.emit(E::RecordingAvailable { origin, recording });
            }
            RuntimeEvent::RuntimeError {
                component,
                message,
                fatal,
            } => d.emit(E::RuntimeErrorReported {
                origin,
                component,
                message,
                fatal,
            }),
        }
    }
}
