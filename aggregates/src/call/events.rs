//! Events of the call aggregate (what is stored, never rewritten) and the `CallSid` claims
//! they make.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::*;
use crate::common::{ClaimOp, UniqueClaims, E164};

/// Why a status changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatusCause {
    TwilioCallback {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<u32>,
    },
    Routing,
    Runtime,
    PlacementFailed,
    Handoff,
    Reaper,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallEvent {
    /// First event of every call stream.
    CallOpened {
        call_id: String,
        establishment_id: String,
        direction: Direction,
        provider: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_sid: Option<CallSid>,
        from: Party,
        to: Party,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_version_id: Option<String>,
        /// Initial status: `queued` for outbound, `ringing` for inbound calls.
        status: CallStatus,
        opened_by: OpenedBy,
        at: DateTime<Utc>,
    },
    CallSidBound {
        call_sid: CallSid,
        at: DateTime<Utc>,
    },
    InboundCallRouted {
        decision: RoutingDecision,
        at: DateTime<Utc>,
    },
    OutboundCallQueued {
        agent_id: String,
        requested_by: Requester,
        metadata: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        machine_detection: Option<MachineDetection>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_limit_seconds: Option<u32>,
        at: DateTime<Utc>,
    },
    PlacementRequested {
        at: DateTime<Utc>,
    },
    CallPlaced {
        call_sid: CallSid,
        at: DateTime<Utc>,
    },
    PlacementFailed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        http_status: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u32>,
        message: String,
        at: DateTime<Utc>,
    },
    /// A new (not yet seen) Twilio status callback, whether or not it moved the status.
    TwilioStatusReceived {
        callback: StatusCallback,
    },
    AnsweredByDetected {
        answered_by: AnsweredBy,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detection_duration_ms: Option<u32>,
        at: DateTime<Utc>,
    },
    /// The only event that changes `status`.
    CallStatusChanged {
        from: CallStatus,
        to: CallStatus,
        cause: StatusCause,
        at: DateTime<Utc>,
    },
    HandoffRequested {
        reason: String,
        to: E164,
        requested_by: Requester,
        at: DateTime<Utc>,
    },
    HandoffStarted {
        to: E164,
        at: DateTime<Utc>,
    },
    HandoffFailed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u32>,
        message: String,
        at: DateTime<Utc>,
    },
    CallReaped {
        reason: String,
        previous_status: CallStatus,
        at: DateTime<Utc>,
    },
    RuntimeCallStarted {
        origin: RuntimeOrigin,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_version_id: Option<String>,
        started_at: DateTime<Utc>,
    },
    RuntimeCallConnected {
        origin: RuntimeOrigin,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connected_at: Option<DateTime<Utc>>,
    },
    RuntimeCallEnded {
        origin: RuntimeOrigin,
        ended_at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_seconds: Option<u32>,
        final_status: TerminalStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hangup_by: Option<HangupBy>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        segment_count: Option<u64>,
    },
    TranscriptSegmentAdded {
        origin: RuntimeOrigin,
        /// 1-based arrival order within the call.
        ordinal: u64,
        segment: TranscriptSegment,
    },
    ToolCalled {
        origin: RuntimeOrigin,
        /// 1-based order of tool calls within the call.
        invocation: u32,
        tool_name: String,
        arguments: Value,
    },
    ToolResultReceived {
        origin: RuntimeOrigin,
        /// The oldest unanswered `ToolCalled` of the same tool, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invocation: Option<u32>,
        tool_name: String,
        result: Value,
        error: Value,
    },
    RecordingAvailable {
        origin: RuntimeOrigin,
        recording: RecordingRef,
    },
    RuntimeErrorReported {
        origin: RuntimeOrigin,
        component: RuntimeComponent,
        message: String,
        fatal: bool,
    },
    SentimentComputed {
        label: SentimentLabel,
        score: SentimentScore,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        windows: Vec<SentimentWindow>,
        segments_considered: u64,
        computed_at: DateTime<Utc>,
    },
    SummaryGenerated {
        summary: String,
        generator: String,
        segments_covered: u64,
        generated_at: DateTime<Utc>,
    },
    ToolProxyRequested {
        request: ToolProxyRequest,
    },
    ToolProxySucceeded {
        outcome: ToolProxyOutcome,
    },
    ToolProxyFailed {
        outcome: ToolProxyOutcome,
    },
}
crate::domain_event!(CallEvent {
    CallOpened,
    CallSidBound,
    InboundCallRouted,
    OutboundCallQueued,
    PlacementRequested,
    CallPlaced,
    PlacementFailed,
    TwilioStatusReceived,
    AnsweredByDetected,
    CallStatusChanged,
    HandoffRequested,
    HandoffStarted,
    HandoffFailed,
    CallReaped,
    RuntimeCallStarted,
    RuntimeCallConnected,
    RuntimeCallEnded,
    TranscriptSegmentAdded,
    ToolCalled,
    ToolResultReceived,
    RecordingAvailable,
    RuntimeErrorReported,
    SentimentComputed,
    SummaryGenerated,
    ToolProxyRequested,
    ToolProxySucceeded,
    ToolProxyFailed,
});

impl UniqueClaims for CallEvent {
    fn unique_claims(&self) -> Vec<ClaimOp> {
        let sid = match self {
            CallEvent::CallOpened {
                call_sid: Some(s), ..
            }
            | CallEvent::CallSidBound { call_sid: s, .. }
            | CallEvent::CallPlaced { call_sid: s, .. } => s,
            _ => return Vec::new(),
        };
        vec![ClaimOp::Claim {
            scope: CALL_SID_CLAIM,
            value: sid.as_str().to_string(),
        }]
    }
}
