//! Commands of the call aggregate: what the webhooks, workers, users and the runtime ask of a call.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{
    AnsweredBy, CallOpening, CallSid, MachineDetection, OutboundFacts, RecordingRef, Requester,
    RoutingDecision, RuntimeEvent, RuntimeOrigin, SentimentLabel, SentimentScore, SentimentWindow,
    StatusCallback, ToolProxyOutcome, ToolProxyRequest,
};
use crate::common::E164;

#[derive(Debug, Clone, PartialEq)]
pub enum CallCommand {
    /// The incoming-call webhook routed a call (opens it, or merges into a call a status
    /// callback or the runtime opened first). A repeated webhook changes nothing: answer with
    /// the TwiML of the decision already recorded.
    ReceiveInbound {
        open: CallOpening,
        decision: RoutingDecision,
    },
    /// A Twilio status callback. `open` is needed only when the call may be unknown (the
    /// webhook found no owner of the `CallSid`); without it an unknown call is `NotFound`.
    RecordTwilioStatus {
        open: Option<CallOpening>,
        callback: StatusCallback,
    },
    /// The asynchronous answering-machine-detection callback.
    RecordAnsweredBy {
        call_sid: CallSid,
        answered_by: AnsweredBy,
        detection_duration_ms: Option<u32>,
        at: DateTime<Utc>,
    },
    /// Learn the `CallSid` of a call opened without one (e.g. Twilio fetched the outbound
    /// call's TwiML before the placement worker recorded its answer).
    BindCallSid {
        call_sid: CallSid,
        at: DateTime<Utc>,
    },
    /// A user or campaign asks for an outbound call; refused unless `facts` name a version to
    /// dial with and a number to call from.
    QueueOutbound {
        call_id: String,
        establishment_id: String,
        agent_id: String,
        to: E164,
        facts: OutboundFacts,
        requested_by: Requester,
        metadata: Map<String, Value>,
        machine_detection: Option<MachineDetection>,
        time_limit_seconds: Option<u32>,
        at: DateTime<Utc>,
    },
    /// The placement worker is about to call Twilio; refused the second time, so at most one
    /// worker ever dials a call.
    RequestPlacement { at: DateTime<Utc> },
    /// Twilio accepted the call (201 with its `sid`).
    RecordPlacement {
        call_sid: CallSid,
        at: DateTime<Utc>,
    },
    /// Twilio refused the call (or retries ran out).
    RecordPlacementFailure {
        http_status: Option<u16>,
        code: Option<u32>,
        message: String,
        at: DateTime<Utc>,
    },
    RequestHandoff {
        reason: String,
        to: E164,
        requested_by: Requester,
        at: DateTime<Utc>,
    },
    /// Twilio accepted the live-call update with the `<Dial>`.
    RecordHandoffStarted { at: DateTime<Utc> },
    RecordHandoffFailure {
        code: Option<u32>,
        message: String,
        at: DateTime<Utc>,
    },
    /// The reaper ends a call that is still not over `max_duration_seconds + grace_seconds`
    /// after it was opened.
    Reap {
        now: DateTime<Utc>,
        max_duration_seconds: u32,
        grace_seconds: u32,
        reason: String,
    },
    /// An event from the establishment's runtime (Appendix B); may open the call.
    IngestRuntimeEvent {
        open: CallOpening,
        origin: RuntimeOrigin,
        event: RuntimeEvent,
    },
    /// Twilio's recording-status callback: a provider-side recording finished.
    RecordProviderRecording {
        recording_sid: String,
        recording: RecordingRef,
        at: DateTime<Utc>,
    },
    /// The sentiment worker's result for the first `segments_considered` segments.
    RecordSentiment {
        label: SentimentLabel,
        score: SentimentScore,
        windows: Vec<SentimentWindow>,
        segments_considered: u64,
        computed_at: DateTime<Utc>,
    },
    /// The summary worker's result for the first `segments_covered` segments.
    RecordSummary {
        summary: String,
        generator: String,
        segments_covered: u64,
        generated_at: DateTime<Utc>,
    },
    /// The tool proxy is about to act for the call's runtime (refused for another
    /// establishment's call).
    RequestToolProxy {
        establishment_id: String,
        request: ToolProxyRequest,
    },
    /// What came of a tool-proxy invocation.
    RecordToolProxyOutcome { outcome: ToolProxyOutcome },
}
