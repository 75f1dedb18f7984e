//! The call's state (small and of fixed size: counters, status, seen sequence numbers) and how
//! each event changes it (`impl Aggregate`).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::*;
use crate::common::{wire_enum, E164};

/// A set of Twilio `SequenceNumber`s: a bitmap for 0..64 (all a normal call uses), a sorted
/// set beyond. Serialised as a sorted list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    low: u64,
    high: BTreeSet<u32>,
}

impl SeqSet {
    pub fn contains(&self, n: u32) -> bool {
        if n < 64 {
            self.low & (1 << n) != 0
        } else {
            self.high.contains(&n)
        }
    }

    pub fn insert(&mut self, n: u32) {
        if n < 64 {
            self.low |= 1 << n;
        } else {
            self.high.insert(n);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..64u32)
            .filter(|n| self.low & (1 << n) != 0)
            .chain(self.high.iter().copied())
    }

    pub fn len(&self) -> usize {
        self.low.count_ones() as usize + self.high.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Serialize for SeqSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for SeqSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut set = SeqSet::default();
        for n in Vec::<u32>::deserialize(d)? {
            set.insert(n);
        }
        Ok(set)
    }
}

wire_enum!(
    /// Where the REST placement of an outbound call stands.
    #[derive(Default)]
    Placement, "placement" {
        #[default]
        NotRequested => "not_requested",
        Requested => "requested",
        Placed => "placed",
        Failed => "failed",
    }
);

/// Where a user-requested handoff stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Handoff {
    #[default]
    None,
    Requested {
        to: E164,
    },
    Started {
        to: E164,
    },
    Failed,
}

/// What Twilio's status callbacks told us so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwilioProgress {
    /// `SequenceNumber`s already recorded.
    pub seen: SeqSet,
    /// Statuses received in callbacks without a `SequenceNumber` (bit = `TwilioCallStatus`).
    pub statuses_without_sequence: u16,
    pub callbacks: u32,
}

/// Counters of the runtime's events (never their payloads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeProgress {
    pub started: bool,
    pub connected: bool,
    pub ended: bool,
    pub segments: u64,
    /// `call_ended.segment_count`, when the runtime said it.
    pub expected_segments: Option<u64>,
    pub tool_calls: u32,
    pub tool_results: u32,
    /// Unanswered tool invocations, oldest first (at most [`MAX_PENDING_TOOL_CALLS`]).
    pub pending_tools: Vec<(String, u32)>,
    pub recordings: u32,
    pub errors: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub id: String,
    pub establishment_id: String,
    pub direction: Option<Direction>,
    pub call_sid: Option<CallSid>,
    pub agent_id: Option<String>,
    pub agent_version_id: Option<String>,
    pub status: CallStatus,
    pub opened_at: Option<DateTime<Utc>>,
    pub routing: Option<RoutingDecision>,
    pub placement: Placement,
    pub handoff: Handoff,
    pub twilio: TwilioProgress,
    pub answered_by: Option<AnsweredBy>,
    /// The async AMD callback's answer wins over `AnsweredBy` in status callbacks.
    pub answered_by_final: bool,
    /// Twilio's `CallDuration` when known, else the runtime's `duration_seconds`.
    pub duration_seconds: Option<u32>,
    pub duration_from_twilio: bool,
    pub runtime: RuntimeProgress,
    pub sentiment_segments: Option<u64>,
    pub summary_segments: Option<u64>,
    pub reaped: bool,
    #[serde(default, skip_serializing_if = "ToolProxyProgress::is_empty")]
    pub tool_proxy: ToolProxyProgress,
}

impl Call {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// Whether Twilio may still have the call up (the reaper then asks Twilio to complete it).
    pub fn may_be_live_at_provider(&self) -> bool {
        self.call_sid.is_some() && !self.is_terminal()
    }

    /// No more transcript will come: the runtime reported the end of the call and every
    /// segment it announced has arrived, or the call ended without the runtime ever starting.
    pub fn transcript_complete(&self) -> bool {
        let runtime_done = self.runtime.ended
            && self
                .runtime
                .expected_segments
                .is_none_or(|n| self.runtime.segments >= n);
        runtime_done || (self.is_terminal() && !self.runtime.started && self.runtime.segments == 0)
    }
}

impl Aggregate for Call {
    const TYPE: &'static str = "Call";
    type Command = CallCommand;
    type Event = CallEvent;
    type Error = CallError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: CallEvent) {
        use CallEvent as E;
        match event {
            E::CallOpened {
                call_id,
                establishment_id,
                direction,
                call_sid,
                agent_id,
                agent_version_id,
                status,
                at,
                ..
            } => {
                self.id = call_id;
                self.establishment_id = establishment_id;
                self.direction = Some(direction);
                self.call_sid = call_sid;
                self.agent_id = agent_id;
                self.agent_version_id = agent_version_id;
                self.status = status;
                self.opened_at = Some(at);
            }
            E::CallSidBound { call_sid, .. } => self.call_sid = Some(call_sid),
            E::CallPlaced { call_sid, .. } => {
                self.call_sid = Some(call_sid);
                self.placement = Placement::Placed;
            }
            E::InboundCallRouted { decision, .. } => {
                if let RoutingDecision::Accepted {
                    agent_id,
                    agent_version_id,
                    ..
                } = &decision
                {
                    self.agent_id = Some(agent_id.clone());
                    self.agent_version_id = Some(agent_version_id.clone());
                }
                self.routing = Some(decision);
            }
            E::OutboundCallQueued { agent_id, .. } => self.agent_id = Some(agent_id),
            E::PlacementRequested { .. } => self.placement = Placement::Requested,
            E::PlacementFailed { .. } => self.placement = Placement::Failed,
            E::TwilioStatusReceived { callback } => {
                match callback.sequence_number {
                    Some(n) => self.twilio.seen.insert(n),
                    None => self.twilio.statuses_without_sequence |= callback.status.bit(),
                }
                self.twilio.callbacks += 1;
                if self.answered_by.is_none() {
                    self.answered_by = callback.answered_by;
                }
                if let Some(d) = callback.call_duration {
                    self.duration_seconds = Some(d);
                    self.duration_from_twilio = true;
                }
            }
            E::AnsweredByDetected { answered_by, .. } => {
                self.answered_by = Some(answered_by);
                self.answered_by_final = true;
            }
            E::CallStatusChanged { to, .. } => self.status = to,
            E::HandoffRequested { to, .. } => self.handoff = Handoff::Requested { to },
            E::HandoffStarted { to, .. } => self.handoff = Handoff::Started { to },
            E::HandoffFailed { .. } => self.handoff = Handoff::Failed,
            E::CallReaped { .. } => self.reaped = true,
            E::RuntimeCallStarted {
                agent_id,
                agent_version_id,
                ..
            } => {
                self.runtime.started = true;
                if self.agent_id.is_none() {
                    self.agent_id = agent_id;
                }
                if self.agent_version_id.is_none() {
                    self.agent_version_id = agent_version_id;
                }
            }
            E::RuntimeCallConnected { .. } => self.runtime.connected = true,
            E::RuntimeCallEnded {
                duration_seconds,
                segment_count,
                ..
            } => {
                self.runtime.ended = true;
                self.runtime.expected_segments = segment_count;
                if !self.duration_from_twilio && duration_seconds.is_some() {
                    self.duration_seconds = duration_seconds;
                }
            }
            E::TranscriptSegmentAdded { ordinal, .. } => {
                self.runtime.segments = self.runtime.segments.max(ordinal)
            }
            E::ToolCalled {
                invocation,
                tool_name,
                ..
            } => {
                self.runtime.tool_calls = self.runtime.tool_calls.max(invocation);
                let pending = &mut self.runtime.pending_tools;
                if pending.len() >= MAX_PENDING_TOOL_CALLS {
                    pending.remove(0);
                }
                pending.push((tool_name, invocation));
            }
            E::ToolResultReceived { invocation, .. } => {
                self.runtime.tool_results += 1;
                if let Some(n) = invocation {
                    self.runtime.pending_tools.retain(|(_, i)| *i != n);
                }
            }
            E::RecordingAvailable { .. } => self.runtime.recordings += 1,
            E::RuntimeErrorReported { .. } => self.runtime.errors += 1,
            E::SentimentComputed {
                segments_considered,
                ..
            } => self.sentiment_segments = Some(segments_considered),
            E::SummaryGenerated {
                segments_covered, ..
            } => self.summary_segments = Some(segments_covered),
            E::ToolProxyRequested { .. } => self.tool_proxy.requested += 1,
            E::ToolProxySucceeded { .. } => self.tool_proxy.succeeded += 1,
            E::ToolProxyFailed { .. } => self.tool_proxy.failed += 1,
        }
    }
}
