//! Call aggregate: one stream per phone call, where the Twilio webhooks, the REST placement
//! worker, user actions (handoff), the reaper and the runtime's events for that call meet.
//!
//! - Any of the incoming-call webhook, a status callback, a runtime event or an outbound request
//!   may come first: each of them carries a [`CallOpening`] and opens the call when the stream is
//!   empty; the others merge into it. The first event of every stream is `CallOpened`.
//! - A Twilio `CallSid` belongs to exactly one call: the event that binds it takes the claim
//!   [`CALL_SID_CLAIM`] (the store refuses a second owner inside the append transaction).
//! - Status only moves forward (see [`CallStatus::rank`]); a terminal status is final; Twilio
//!   callbacks are deduplicated on their `SequenceNumber` inside the state.
//! - The state is small and of fixed size (counters, status, seen sequence numbers), never
//!   transcript text: appending segment 10,000 costs what segment 1 costs. Events carry payloads.
//!
//! docs/calls.md describes the state machine with its table of transitions.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::Aggregate;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::common::{ClaimOp, ParseError, UniqueClaims, E164};

/// Claim scope mapping a Twilio `CallSid` to the call that owns it
/// (`store.claim_owner(CALL_SID_CLAIM, sid)` finds the call).
pub const CALL_SID_CLAIM: &str = "call_sid";
/// Open tool invocations remembered for pairing results; older ones are forgotten.
pub const MAX_PENDING_TOOL_CALLS: usize = 32;

// ---------------------------------------------------------------------------------------------
// Value types
// ---------------------------------------------------------------------------------------------

/// A Twilio call SID: `CA` followed by 32 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallSid(String);

impl CallSid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CallSid {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok =
            s.len() == 34 && s.starts_with("CA") && s[2..].chars().all(|c| c.is_ascii_hexdigit());
        if ok {
            Ok(CallSid(s.to_string()))
        } else {
            Err(ParseError::new(
                "call_sid",
                "must be CA followed by 32 hexadecimal digits",
            ))
        }
    }
}

/// One end of a call as the provider names it: usually E.164, but Twilio also sends
/// `client:alice`, SIP URIs and `anonymous`. 1..=256 characters, no whitespace or controls.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Party(String);

impl Party {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The number in E.164 form, when it is one.
    pub fn e164(&self) -> Option<E164> {
        self.0.parse().ok()
    }
}

impl FromStr for Party {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() || t.chars().count() > 256 {
            return Err(ParseError::new("party", "must be 1 to 256 characters"));
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError::new(
                "party",
                "must not contain spaces or control characters",
            ));
        }
        Ok(Party(t.to_string()))
    }
}

impl From<E164> for Party {
    fn from(n: E164) -> Self {
        Party(n.as_str().to_string())
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
string_serde!(CallSid);
string_serde!(Party);

/// Defines a plain enum with its wire names, `as_str`, `FromStr` (also accepting aliases) and
/// string serde.
macro_rules! wire_enum {
    ($(#[$m:meta])* $t:ident, $field:literal {
        $($(#[$vm:meta])* $v:ident => $s:literal $(| $alias:literal)*),* $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $t { $($(#[$vm])* $v),* }
        impl $t {
            pub const ALL: &'static [$t] = &[$($t::$v),*];
            pub fn as_str(self) -> &'static str {
                match self { $($t::$v => $s),* }
            }
        }
        impl FromStr for $t {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s $(| $alias)* => Ok($t::$v),)*
                    _ => Err(ParseError::new(
                        $field,
                        format!("{s:?} is not one of {}", [$($s),*].join(", ")),
                    )),
                }
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Status of a call (Appendix A.5 plus the handoff states).
    #[derive(Default)]
    CallStatus, "status" {
        #[default]
        Queued => "queued",
        Ringing => "ringing",
        InProgress => "in_progress",
        /// A user asked for a handoff; Twilio has not confirmed the `<Dial>` yet.
        HandoffInitiated => "handoff_initiated",
        /// The caller is being connected to (or talks with) the establishment's handoff number.
        HandoffCompleted => "handoff_completed",
        Completed => "completed",
        Busy => "busy",
        Failed => "failed",
        NoAnswer => "no_answer",
        Canceled => "canceled",
    }
);

impl CallStatus {
    /// Progress order: a status coming from Twilio or the runtime only replaces a lower rank.
    /// queued 0 < ringing 1 < in_progress = handoff_* 2 < terminal 3.
    pub fn rank(self) -> u8 {
        use CallStatus as S;
        match self {
            S::Queued => 0,
            S::Ringing => 1,
            S::InProgress | S::HandoffInitiated | S::HandoffCompleted => 2,
            S::Completed | S::Busy | S::Failed | S::NoAnswer | S::Canceled => 3,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == 3
    }

    /// Answered and not over: someone is on the line.
    pub fn is_answered(self) -> bool {
        self.rank() == 2
    }

    pub fn is_handoff(self) -> bool {
        matches!(
            self,
            CallStatus::HandoffInitiated | CallStatus::HandoffCompleted
        )
    }
}

wire_enum!(
    /// A final status, as the runtime reports it in `call_ended.final_status`.
    TerminalStatus, "final_status" {
        Completed => "completed",
        Busy => "busy",
        Failed => "failed",
        NoAnswer => "no_answer" | "no-answer",
        Canceled => "canceled",
    }
);

impl From<TerminalStatus> for CallStatus {
    fn from(t: TerminalStatus) -> Self {
        match t {
            TerminalStatus::Completed => CallStatus::Completed,
            TerminalStatus::Busy => CallStatus::Busy,
            TerminalStatus::Failed => CallStatus::Failed,
            TerminalStatus::NoAnswer => CallStatus::NoAnswer,
            TerminalStatus::Canceled => CallStatus::Canceled,
        }
    }
}

wire_enum!(
    /// `CallStatus` as Twilio sends it in webhooks (`initiated` may appear too).
    TwilioCallStatus, "CallStatus" {
        Queued => "queued",
        Initiated => "initiated",
        Ringing => "ringing",
        InProgress => "in-progress",
        Completed => "completed",
        Busy => "busy",
        Failed => "failed",
        NoAnswer => "no-answer",
        Canceled => "canceled",
    }
);

impl TwilioCallStatus {
    pub fn to_call_status(self) -> CallStatus {
        use TwilioCallStatus as T;
        match self {
            T::Queued | T::Initiated => CallStatus::Queued,
            T::Ringing => CallStatus::Ringing,
            T::InProgress => CallStatus::InProgress,
            T::Completed => CallStatus::Completed,
            T::Busy => CallStatus::Busy,
            T::Failed => CallStatus::Failed,
            T::NoAnswer => CallStatus::NoAnswer,
            T::Canceled => CallStatus::Canceled,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

wire_enum!(
    /// Direction of a call as shown in the API (Appendix A.5).
    Direction, "direction" {
        Inbound => "inbound",
        Outbound => "outbound",
    }
);

impl Direction {
    /// Twilio's `Direction`: `inbound`, `outbound-api`, `outbound-dial`,
    /// `trunking-terminating` (into our numbers) and `trunking-originating`.
    pub fn from_twilio(s: &str) -> Result<Direction, ParseError> {
        match s {
            "inbound" | "trunking-terminating" => Ok(Direction::Inbound),
            "outbound" | "outbound-api" | "outbound-dial" | "trunking-originating" => {
                Ok(Direction::Outbound)
            }
            _ => Err(ParseError::new(
                "Direction",
                format!("{s:?} is not a Twilio call direction"),
            )),
        }
    }
}

wire_enum!(
    /// Answering machine detection result (`AnsweredBy`).
    AnsweredBy, "AnsweredBy" {
        Human => "human",
        MachineStart => "machine_start",
        MachineEndBeep => "machine_end_beep",
        MachineEndSilence => "machine_end_silence",
        MachineEndOther => "machine_end_other",
        Fax => "fax",
        Unknown => "unknown",
    }
);

wire_enum!(
    /// Machine detection requested for an outbound call.
    MachineDetection, "machine_detection" {
        Enable => "enable" | "Enable",
        DetectMessageEnd => "detect_message_end" | "DetectMessageEnd",
    }
);

impl MachineDetection {
    /// The value of Twilio's `MachineDetection` parameter.
    pub fn as_twilio(self) -> &'static str {
        match self {
            MachineDetection::Enable => "Enable",
            MachineDetection::DetectMessageEnd => "DetectMessageEnd",
        }
    }
}

wire_enum!(
    /// Who spoke a transcript segment.
    Speaker, "speaker" {
        Customer => "customer",
        Agent => "agent",
        System => "system",
    }
);

wire_enum!(
    /// Who hung up, as the runtime reports it.
    HangupBy, "hangup_by" {
        Customer => "customer",
        Agent => "agent",
        System => "system",
        Unknown => "unknown",
    }
);

wire_enum!(
    /// The runtime component that failed (`runtime_error.component`).
    RuntimeComponent, "component" {
        Stt => "stt",
        Tts => "tts",
        Llm => "llm",
        Transport => "transport",
    }
);

wire_enum!(
    SentimentLabel, "label" {
        Positive => "positive",
        Neutral => "neutral",
        Negative => "negative",
    }
);

wire_enum!(
    /// Which source opened the call stream (the first of them to reach the control plane).
    OpenedBy, "opened_by" {
        IncomingWebhook => "incoming_webhook",
        StatusCallback => "status_callback",
        Runtime => "runtime",
        OutboundRequest => "outbound_request",
    }
);

wire_enum!(
    /// Why the runtime could not take an inbound call.
    RuntimeUnavailableReason, "reason" {
        Missing => "missing",
        NotReady => "not_ready",
        Draining => "draining",
    }
);

/// A sentiment score in [-1, 1].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct SentimentScore(f64);

impl SentimentScore {
    pub fn value(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for SentimentScore {
    type Error = ParseError;
    fn try_from(v: f64) -> Result<Self, Self::Error> {
        if v.is_finite() && (-1.0..=1.0).contains(&v) {
            Ok(SentimentScore(v))
        } else {
            Err(ParseError::new(
                "score",
                "must be a number between -1 and 1",
            ))
        }
    }
}

impl From<SentimentScore> for f64 {
    fn from(s: SentimentScore) -> f64 {
        s.0
    }
}

/// Who asked for an outbound call or a handoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Requester {
    User { user_id: String },
    Campaign { campaign_id: String },
    System { name: String },
}

/// What the caller gets when the agent cannot take an inbound call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Fallback {
    /// A short `<Say>`, then `<Dial>` to the establishment's handoff number.
    DialHandoff { to: E164 },
    /// A short `<Say>`, then `<Hangup/>` (no handoff number configured).
    Hangup,
}

/// How the incoming-call webhook routed a call (recorded on the call; serialised with an
/// `outcome` tag, e.g. `{"outcome":"rejected_blacklisted"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RoutingDecision {
    /// `<Connect><Stream>` to the establishment's runtime with the active version.
    Accepted {
        agent_id: String,
        agent_version_id: String,
        runtime_id: String,
    },
    /// `To` is not a number of ours: `<Reject/>`. (No establishment owns such a call, so the
    /// webhook normally records no call for it; the variant keeps the decision type complete.)
    RejectedUnknownNumber,
    /// The caller is on the establishment's blacklist: `<Reject reason="rejected"/>`.
    RejectedBlacklisted,
    OutsideBusinessHours {
        fallback: Fallback,
    },
    RuntimeUnavailable {
        reason: RuntimeUnavailableReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runtime_id: Option<String>,
        fallback: Fallback,
    },
    NoPublishedVersion {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
        fallback: Fallback,
    },
}

impl RoutingDecision {
    pub fn outcome(&self) -> &'static str {
        match self {
            RoutingDecision::Accepted { .. } => "accepted",
            RoutingDecision::RejectedUnknownNumber => "rejected_unknown_number",
            RoutingDecision::RejectedBlacklisted => "rejected_blacklisted",
            RoutingDecision::OutsideBusinessHours { .. } => "outside_business_hours",
            RoutingDecision::RuntimeUnavailable { .. } => "runtime_unavailable",
            RoutingDecision::NoPublishedVersion { .. } => "no_published_version",
        }
    }

    pub fn fallback(&self) -> Option<&Fallback> {
        match self {
            RoutingDecision::OutsideBusinessHours { fallback }
            | RoutingDecision::RuntimeUnavailable { fallback, .. }
            | RoutingDecision::NoPublishedVersion { fallback, .. } => Some(fallback),
            _ => None,
        }
    }

    /// The status the decision's TwiML leads to, if it changes it:
    /// `<Reject>` ends the call as `no_answer` (Twilio's status for reason="rejected"),
    /// `<Say><Hangup/>` as `completed`, `<Say><Dial>` hands the caller to a human.
    pub fn status_effect(&self) -> Option<CallStatus> {
        match self {
            RoutingDecision::Accepted { .. } => None,
            RoutingDecision::RejectedUnknownNumber | RoutingDecision::RejectedBlacklisted => {
                Some(CallStatus::NoAnswer)
            }
            _ => match self.fallback() {
                Some(Fallback::DialHandoff { .. }) => Some(CallStatus::HandoffCompleted),
                Some(Fallback::Hangup) | None => Some(CallStatus::Completed),
            },
        }
    }
}

/// Facts about a call that every source knows; used to open the stream when it is empty, and
/// checked against the stream when it is not (same establishment, same `CallSid`).
#[derive(Debug, Clone, PartialEq)]
pub struct CallOpening {
    pub call_id: String,
    pub establishment_id: String,
    pub direction: Direction,
    pub call_sid: Option<CallSid>,
    pub from: Party,
    pub to: Party,
    pub agent_id: Option<String>,
    pub agent_version_id: Option<String>,
    pub opened_by: OpenedBy,
    pub at: DateTime<Utc>,
}

/// A Twilio status callback, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCallback {
    pub call_sid: CallSid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u32>,
    pub status: TwilioCallStatus,
    /// Twilio's `Timestamp` (RFC 2822 on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    /// `CallDuration` in seconds (terminal callbacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_duration: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_detection_duration_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_response_code: Option<u16>,
    /// When the control plane received it.
    pub received_at: DateTime<Utc>,
}

impl StatusCallback {
    /// When it happened: Twilio's timestamp, else when we got it.
    pub fn at(&self) -> DateTime<Utc> {
        self.timestamp.unwrap_or(self.received_at)
    }
}

/// Where a runtime event came from (Appendix B.1 envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeOrigin {
    pub runtime_id: String,
    /// The runtime's event id (`evt_...`).
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
}

/// A transcript segment (B.2 `transcript_segment` payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptSegment {
    pub segment_id: String,
    pub speaker: Speaker,
    pub text: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    #[serde(default)]
    pub confidence: Option<f64>,
}

/// Where a recording is (B.2 `recording_available` payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingRef {
    pub recording_url: String,
    pub storage_provider: String,
    pub content_type: String,
}

/// A runtime event (Appendix B.2), shaped as the envelope's `event` carries it:
/// `{"type": "...", "payload": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum RuntimeEvent {
    CallStarted {
        started_at: DateTime<Utc>,
    },
    CallConnected {
        #[serde(default)]
        connected_at: Option<DateTime<Utc>>,
    },
    CallEnded {
        ended_at: DateTime<Utc>,
        #[serde(default)]
        duration_seconds: Option<u32>,
        final_status: TerminalStatus,
        #[serde(default)]
        hangup_by: Option<HangupBy>,
        /// Extension to B.2: how many segments the runtime sent, so the transcript can tell
        /// when it is complete. Optional.
        #[serde(default)]
        segment_count: Option<u64>,
    },
    TranscriptSegment(TranscriptSegment),
    ToolCalled {
        tool_name: String,
        #[serde(default)]
        arguments: Value,
    },
    ToolResult {
        tool_name: String,
        #[serde(default)]
        result: Value,
        #[serde(default)]
        error: Value,
    },
    RecordingAvailable(RecordingRef),
    RuntimeError {
        component: RuntimeComponent,
        message: String,
        #[serde(default)]
        fatal: bool,
    },
}

/// Size limits of runtime event payloads (checked by [`RuntimeEvent::validate`]).
pub mod limits {
    pub const SEGMENT_ID: usize = 128;
    pub const SEGMENT_TEXT: usize = 10_000;
    pub const TOOL_NAME: usize = 128;
    /// Serialised JSON of tool arguments, results and errors.
    pub const TOOL_JSON_BYTES: usize = 65_536;
    pub const URL: usize = 2_048;
    pub const SHORT_TEXT: usize = 128;
    pub const MESSAGE: usize = 4_096;
}

impl RuntimeEvent {
    /// The B.2 type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            RuntimeEvent::CallStarted { .. } => "call_started",
            RuntimeEvent::CallConnected { .. } => "call_connected",
            RuntimeEvent::CallEnded { .. } => "call_ended",
            RuntimeEvent::TranscriptSegment(_) => "transcript_segment",
            RuntimeEvent::ToolCalled { .. } => "tool_called",
            RuntimeEvent::ToolResult { .. } => "tool_result",
            RuntimeEvent::RecordingAvailable(_) => "recording_available",
            RuntimeEvent::RuntimeError { .. } => "runtime_error",
        }
    }

    /// Checks sizes and ranges of an untrusted payload; the error names the field.
    pub fn validate(&self) -> Result<(), ParseError> {
        fn text(field: &'static str, s: &str, min: usize, max: usize) -> Result<(), ParseError> {
            let n = s.chars().count();
            if n < min || n > max {
                return Err(ParseError::new(
                    field,
                    format!("must be {min} to {max} characters"),
                ));
            }
            Ok(())
        }
        fn json(field: &'static str, v: &Value) -> Result<(), ParseError> {
            if v.to_string().len() > limits::TOOL_JSON_BYTES {
                return Err(ParseError::new(
                    field,
                    format!("must be at most {} bytes of JSON", limits::TOOL_JSON_BYTES),
                ));
            }
            Ok(())
        }
        match self {
            RuntimeEvent::CallStarted { .. } | RuntimeEvent::CallConnected { .. } => Ok(()),
            RuntimeEvent::CallEnded {
                duration_seconds, ..
            } => match duration_seconds {
                Some(d) if *d > 7 * 24 * 3600 => {
                    Err(ParseError::new("duration_seconds", "is implausibly long"))
                }
                _ => Ok(()),
            },
            RuntimeEvent::TranscriptSegment(s) => {
                text("segment_id", &s.segment_id, 1, limits::SEGMENT_ID)?;
                text("text", &s.text, 0, limits::SEGMENT_TEXT)?;
                if s.ended_at < s.started_at {
                    return Err(ParseError::new("ended_at", "must not be before started_at"));
                }
                if let Some(c) = s.confidence {
                    if !(c.is_finite() && (0.0..=1.0).contains(&c)) {
                        return Err(ParseError::new("confidence", "must be between 0 and 1"));
                    }
                }
                Ok(())
            }
            RuntimeEvent::ToolCalled {
                tool_name,
                arguments,
            } => {
                text("tool_name", tool_name, 1, limits::TOOL_NAME)?;
                json("arguments", arguments)
            }
            RuntimeEvent::ToolResult {
                tool_name,
                result,
                error,
            } => {
                text("tool_name", tool_name, 1, limits::TOOL_NAME)?;
                json("result", result)?;
                json("error", error)
            }
            RuntimeEvent::RecordingAvailable(r) => {
                text("recording_url", &r.recording_url, 1, limits::URL)?;
                text(
                    "storage_provider",
                    &r.storage_provider,
                    1,
                    limits::SHORT_TEXT,
                )?;
                text("content_type", &r.content_type, 1, limits::SHORT_TEXT)
            }
            RuntimeEvent::RuntimeError { message, .. } => {
                text("message", message, 0, limits::MESSAGE)
            }
        }
    }
}

/// Sentiment of one time window of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentimentWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub label: SentimentLabel,
    pub score: SentimentScore,
}

// ---------------------------------------------------------------------------------------------
// Commands, events, errors
// ---------------------------------------------------------------------------------------------

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
    /// A user or campaign asks for an outbound call.
    QueueOutbound {
        call_id: String,
        establishment_id: String,
        agent_id: String,
        from: E164,
        to: E164,
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
}

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the call does not exist")]
    NotFound,
    #[error("the call already exists")]
    AlreadyExists,
    #[error("the call belongs to another establishment")]
    EstablishmentMismatch,
    #[error("the call is bound to CallSid {bound}, not {given}")]
    CallSidMismatch { bound: String, given: String },
    #[error("only outbound calls are placed through the REST API")]
    NotOutbound,
    #[error("the call's placement was already requested")]
    PlacementAlreadyRequested,
    #[error("the call's placement was not requested or has already failed")]
    PlacementNotRequested,
    #[error("the call was already placed")]
    AlreadyPlaced,
    #[error("the call has ended")]
    CallEnded,
    #[error("the call is not in progress (status {status})")]
    NotInProgress { status: CallStatus },
    #[error("a handoff is already under way for this call")]
    HandoffAlreadyInProgress,
    #[error("no handoff was requested for this call")]
    NoHandoffRequested,
    #[error("the call has no provider CallSid yet")]
    NoProviderCallSid,
    #[error("the call may still run until {deadline}")]
    NotOverdue { deadline: DateTime<Utc> },
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

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

/// Where the REST placement of an outbound call stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    #[default]
    NotRequested,
    Requested,
    Placed,
    Failed,
}

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
}

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
                from,
                to,
                requested_by,
                metadata,
                machine_detection,
                time_limit_seconds,
                at,
            } => {
                if self.exists() {
                    return Err(CallError::AlreadyExists);
                }
                d.open_or_merge(&CallOpening {
                    call_id,
                    establishment_id,
                    direction: Direction::Outbound,
                    call_sid: None,
                    from: from.into(),
                    to: to.into(),
                    agent_id: Some(agent_id.clone()),
                    agent_version_id: None,
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
                let deadline = opened
                    + Duration::seconds(i64::from(max_duration_seconds) + i64::from(grace_seconds));
                if now < deadline {
                    return Err(CallError::NotOverdue { deadline });
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use serde_json::json;
    use CallCommand as C;
    use CallEvent as E;

    type F = TestFramework<Call>;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::seconds(s)
    }

    fn sid() -> CallSid {
        "CA0123456789abcdef0123456789abcdef".parse().unwrap()
    }

    fn other_sid() -> CallSid {
        "CAffffffffffffffffffffffffffffffff".parse().unwrap()
    }

    fn e164(s: &str) -> E164 {
        s.parse().unwrap()
    }

    fn party(s: &str) -> Party {
        s.parse().unwrap()
    }

    fn opening(by: OpenedBy, call_sid: Option<CallSid>) -> CallOpening {
        CallOpening {
            call_id: "call_1".into(),
            establishment_id: "est_1".into(),
            direction: Direction::Inbound,
            call_sid,
            from: party("+14158675309"),
            to: party("+18005551212"),
            agent_id: None,
            agent_version_id: None,
            opened_by: by,
            at: t(0),
        }
    }

    fn opened_inbound(by: OpenedBy) -> E {
        E::CallOpened {
            call_id: "call_1".into(),
            establishment_id: "est_1".into(),
            direction: Direction::Inbound,
            provider: "twilio".into(),
            call_sid: Some(sid()),
            from: party("+14158675309"),
            to: party("+18005551212"),
            agent_id: None,
            agent_version_id: None,
            status: CallStatus::Ringing,
            opened_by: by,
            at: t(0),
        }
    }

    fn accepted() -> RoutingDecision {
        RoutingDecision::Accepted {
            agent_id: "agt_1".into(),
            agent_version_id: "agv_3".into(),
            runtime_id: "rt_1".into(),
        }
    }

    fn routed_inbound() -> Vec<E> {
        vec![
            opened_inbound(OpenedBy::IncomingWebhook),
            E::InboundCallRouted {
                decision: accepted(),
                at: t(0),
            },
        ]
    }

    fn changed(from: CallStatus, to: CallStatus, cause: StatusCause, at: i64) -> E {
        E::CallStatusChanged {
            from,
            to,
            cause,
            at: t(at),
        }
    }

    fn cb(seq: u32, status: TwilioCallStatus) -> StatusCallback {
        StatusCallback {
            call_sid: sid(),
            sequence_number: Some(seq),
            status,
            timestamp: Some(t(seq as i64)),
            call_duration: None,
            answered_by: None,
            machine_detection_duration_ms: None,
            sip_response_code: None,
            received_at: t(100),
        }
    }

    fn status(seq: u32, status: TwilioCallStatus) -> C {
        C::RecordTwilioStatus {
            open: None,
            callback: cb(seq, status),
        }
    }

    fn by_callback(seq: u32) -> StatusCause {
        StatusCause::TwilioCallback {
            sequence_number: Some(seq),
        }
    }

    fn in_progress() -> Vec<E> {
        let mut e = routed_inbound();
        e.push(changed(
            CallStatus::Ringing,
            CallStatus::InProgress,
            by_callback(2),
            2,
        ));
        e
    }

    fn origin(n: u32) -> RuntimeOrigin {
        RuntimeOrigin {
            runtime_id: "rt_1".into(),
            event_id: format!("evt_{n}"),
            occurred_at: t(n as i64),
        }
    }

    fn runtime(n: u32, event: RuntimeEvent) -> C {
        let mut open = opening(OpenedBy::Runtime, Some(sid()));
        open.agent_id = Some("agt_1".into());
        open.agent_version_id = Some("agv_3".into());
        C::IngestRuntimeEvent {
            open,
            origin: origin(n),
            event,
        }
    }

    fn segment(n: u32) -> RuntimeEvent {
        RuntimeEvent::TranscriptSegment(TranscriptSegment {
            segment_id: format!("seg_{n}"),
            speaker: Speaker::Customer,
            text: "I need to update my service plan.".into(),
            started_at: t(n as i64),
            ended_at: t(n as i64 + 1),
            confidence: Some(0.91),
        })
    }

    /// Runs commands one after another (as the bus would), returning the final state.
    fn run(state: Call, commands: impl IntoIterator<Item = C>) -> Result<Call, CallError> {
        let mut state = state;
        for c in commands {
            for e in state.decide(c)? {
                state.apply(e);
            }
        }
        Ok(state)
    }

    fn replay(events: Vec<E>) -> Call {
        let mut s = Call::default();
        for e in events {
            s.apply(e);
        }
        s
    }

    fn queue_outbound() -> C {
        C::QueueOutbound {
            call_id: "call_2".into(),
            establishment_id: "est_1".into(),
            agent_id: "agt_1".into(),
            from: e164("+18005551212"),
            to: e164("+14158675309"),
            requested_by: Requester::User {
                user_id: "usr_op".into(),
            },
            metadata: json!({"lead_id": "lead_9"}).as_object().unwrap().clone(),
            machine_detection: Some(MachineDetection::Enable),
            time_limit_seconds: Some(1800),
            at: t(0),
        }
    }

    fn outbound_queued() -> Vec<E> {
        F::with(())
            .given_no_previous_events()
            .when(queue_outbound())
            .inspect_result()
            .unwrap()
    }

    fn outbound_requested() -> Vec<E> {
        let mut e = outbound_queued();
        e.push(E::PlacementRequested { at: t(1) });
        e
    }

    // --- outbound lifecycle ------------------------------------------------------------------

    #[test]
    fn an_outbound_request_opens_a_queued_call_with_its_request() {
        let events = outbound_queued();
        assert!(matches!(
            &events[0],
            E::CallOpened {
                direction: Direction::Outbound,
                status: CallStatus::Queued,
                call_sid: None,
                opened_by: OpenedBy::OutboundRequest,
                ..
            }
        ));
        assert!(matches!(
            &events[1],
            E::OutboundCallQueued { agent_id, time_limit_seconds: Some(1800), .. } if agent_id == "agt_1"
        ));
        let call = replay(events);
        assert_eq!(call.status, CallStatus::Queued);
        assert_eq!(call.agent_id.as_deref(), Some("agt_1"));
    }

    #[test]
    fn an_outbound_call_is_queued_only_once() {
        F::with(())
            .given(outbound_queued())
            .when(queue_outbound())
            .then_expect_error(CallError::AlreadyExists);
    }

    #[test]
    fn placement_is_requested_at_most_once_so_no_call_is_dialled_twice() {
        F::with(())
            .given(outbound_queued())
            .when(C::RequestPlacement { at: t(1) })
            .then_expect_events(vec![E::PlacementRequested { at: t(1) }]);
        F::with(())
            .given(outbound_requested())
            .when(C::RequestPlacement { at: t(2) })
            .then_expect_error(CallError::PlacementAlreadyRequested);
    }

    #[test]
    fn only_outbound_calls_are_placed() {
        F::with(())
            .given(routed_inbound())
            .when(C::RequestPlacement { at: t(1) })
            .then_expect_error(CallError::NotOutbound);
    }

    #[test]
    fn a_placed_call_records_and_claims_its_call_sid() {
        let events = F::with(())
            .given(outbound_requested())
            .when(C::RecordPlacement {
                call_sid: sid(),
                at: t(2),
            })
            .inspect_result()
            .unwrap();
        assert_eq!(
            events,
            vec![E::CallPlaced {
                call_sid: sid(),
                at: t(2)
            }]
        );
        assert_eq!(
            events[0].unique_claims(),
            vec![ClaimOp::Claim {
                scope: CALL_SID_CLAIM,
                value: sid().to_string()
            }]
        );
        let mut all = outbound_requested();
        all.extend(events);
        let call = replay(all);
        assert_eq!(call.placement, Placement::Placed);
        assert_eq!(call.status, CallStatus::Queued);
    }

    #[test]
    fn placement_needs_a_request_first() {
        F::with(())
            .given(outbound_queued())
            .when(C::RecordPlacement {
                call_sid: sid(),
                at: t(2),
            })
            .then_expect_error(CallError::PlacementNotRequested);
    }

    #[test]
    fn a_placement_failure_ends_the_call_as_failed() {
        F::with(())
            .given(outbound_requested())
            .when(C::RecordPlacementFailure {
                http_status: Some(400),
                code: Some(21211),
                message: "The 'To' number is not a valid phone number.".into(),
                at: t(2),
            })
            .then_expect_events(vec![
                E::PlacementFailed {
                    http_status: Some(400),
                    code: Some(21211),
                    message: "The 'To' number is not a valid phone number.".into(),
                    at: t(2),
                },
                changed(
                    CallStatus::Queued,
                    CallStatus::Failed,
                    StatusCause::PlacementFailed,
                    2,
                ),
            ]);
    }

    #[test]
    fn a_status_callback_before_the_placement_answer_binds_the_sid_and_placement_merges() {
        // Twilio's first callback can beat the REST answer to us: the webhook finds the call by
        // the call_id in its StatusCallback URL and binds the sid; CallPlaced then agrees.
        let call = run(
            replay(outbound_requested()),
            [
                status(0, TwilioCallStatus::Queued),
                status(1, TwilioCallStatus::Ringing),
                C::RecordPlacement {
                    call_sid: sid(),
                    at: t(2),
                },
            ],
        )
        .unwrap();
        assert_eq!(call.call_sid, Some(sid()));
        assert_eq!(call.placement, Placement::Placed);
        assert_eq!(call.status, CallStatus::Ringing);
        let err = run(
            call,
            [C::RecordPlacement {
                call_sid: other_sid(),
                at: t(3),
            }],
        )
        .unwrap_err();
        assert_eq!(err, CallError::AlreadyPlaced);
    }

    #[test]
    fn placing_with_another_sid_than_the_bound_one_is_refused() {
        let mut given = outbound_requested();
        given.push(E::CallSidBound {
            call_sid: sid(),
            at: t(1),
        });
        F::with(())
            .given(given)
            .when(C::RecordPlacement {
                call_sid: other_sid(),
                at: t(2),
            })
            .then_expect_error(CallError::CallSidMismatch {
                bound: sid().to_string(),
                given: other_sid().to_string(),
            });
    }

    // --- inbound routing ---------------------------------------------------------------------

    #[test]
    fn an_incoming_call_opens_a_ringing_call_with_its_routing_decision() {
        F::with(())
            .given_no_previous_events()
            .when(C::ReceiveInbound {
                open: opening(OpenedBy::IncomingWebhook, Some(sid())),
                decision: accepted(),
            })
            .then_expect_events(routed_inbound());
        let call = replay(routed_inbound());
        assert_eq!(call.agent_version_id.as_deref(), Some("agv_3"));
        assert_eq!(call.status, CallStatus::Ringing);
        assert_eq!(
            opened_inbound(OpenedBy::IncomingWebhook).unique_claims(),
            vec![ClaimOp::Claim {
                scope: CALL_SID_CLAIM,
                value: sid().to_string()
            }]
        );
    }

    #[test]
    fn a_repeated_incoming_webhook_keeps_the_first_decision() {
        F::with(())
            .given(routed_inbound())
            .when(C::ReceiveInbound {
                open: opening(OpenedBy::IncomingWebhook, Some(sid())),
                decision: RoutingDecision::RejectedBlacklisted,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn each_routing_decision_leads_to_the_status_its_twiml_produces() {
        let dial = Fallback::DialHandoff {
            to: e164("+14158675310"),
        };
        let cases = [
            (accepted(), CallStatus::Ringing),
            (RoutingDecision::RejectedUnknownNumber, CallStatus::NoAnswer),
            (RoutingDecision::RejectedBlacklisted, CallStatus::NoAnswer),
            (
                RoutingDecision::OutsideBusinessHours {
                    fallback: dial.clone(),
                },
                CallStatus::HandoffCompleted,
            ),
            (
                RoutingDecision::RuntimeUnavailable {
                    reason: RuntimeUnavailableReason::Draining,
                    runtime_id: Some("rt_1".into()),
                    fallback: Fallback::Hangup,
                },
                CallStatus::Completed,
            ),
            (
                RoutingDecision::NoPublishedVersion {
                    agent_id: Some("agt_1".into()),
                    fallback: dial,
                },
                CallStatus::HandoffCompleted,
            ),
        ];
        for (decision, expected) in cases {
            let call = run(
                Call::default(),
                [C::ReceiveInbound {
                    open: opening(OpenedBy::IncomingWebhook, Some(sid())),
                    decision: decision.clone(),
                }],
            )
            .unwrap();
            assert_eq!(call.status, expected, "{decision:?}");
            assert_eq!(call.routing.as_ref(), Some(&decision));
        }
    }

    #[test]
    fn routing_decisions_serialise_with_an_outcome_tag() {
        let d = RoutingDecision::RuntimeUnavailable {
            reason: RuntimeUnavailableReason::NotReady,
            runtime_id: None,
            fallback: Fallback::DialHandoff {
                to: e164("+14158675310"),
            },
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v,
            json!({"outcome": "runtime_unavailable", "reason": "not_ready",
                   "fallback": {"action": "dial_handoff", "to": "+14158675310"}})
        );
        assert_eq!(serde_json::from_value::<RoutingDecision>(v).unwrap(), d);
        assert_eq!(
            serde_json::to_value(RoutingDecision::RejectedBlacklisted).unwrap(),
            json!({"outcome": "rejected_blacklisted"})
        );
        assert_eq!(d.outcome(), "runtime_unavailable");
    }

    // --- Twilio status callbacks -------------------------------------------------------------

    #[test]
    fn a_callback_moves_the_status_forward_and_is_recorded() {
        F::with(())
            .given(routed_inbound())
            .when(status(2, TwilioCallStatus::InProgress))
            .then_expect_events(vec![
                E::TwilioStatusReceived {
                    callback: cb(2, TwilioCallStatus::InProgress),
                },
                changed(
                    CallStatus::Ringing,
                    CallStatus::InProgress,
                    by_callback(2),
                    2,
                ),
            ]);
    }

    #[test]
    fn a_callback_seen_before_is_ignored_by_its_sequence_number() {
        let mut given = in_progress();
        given.insert(
            2,
            E::TwilioStatusReceived {
                callback: cb(2, TwilioCallStatus::InProgress),
            },
        );
        F::with(())
            .given(given)
            .when(status(2, TwilioCallStatus::InProgress))
            .then_expect_events(vec![]);
    }

    #[test]
    fn callbacks_without_a_sequence_number_are_deduplicated_on_their_status() {
        let mut c = cb(0, TwilioCallStatus::Completed);
        c.sequence_number = None;
        c.call_duration = Some(42);
        let first = run(
            replay(in_progress()),
            [C::RecordTwilioStatus {
                open: None,
                callback: c.clone(),
            }],
        )
        .unwrap();
        assert_eq!(first.status, CallStatus::Completed);
        assert_eq!(
            first
                .decide(C::RecordTwilioStatus {
                    open: None,
                    callback: c
                })
                .unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_terminal_status_is_final() {
        let mut given = in_progress();
        given.push(changed(
            CallStatus::InProgress,
            CallStatus::Completed,
            by_callback(3),
            3,
        ));
        F::with(())
            .given(given)
            .when(status(4, TwilioCallStatus::Failed))
            .then_expect_events(vec![E::TwilioStatusReceived {
                callback: cb(4, TwilioCallStatus::Failed),
            }]);
    }

    #[test]
    fn a_late_ringing_never_reopens_a_call() {
        let call = run(
            replay(routed_inbound()),
            [
                status(3, TwilioCallStatus::Completed),
                status(1, TwilioCallStatus::Ringing),
                status(2, TwilioCallStatus::InProgress),
            ],
        )
        .unwrap();
        assert_eq!(call.status, CallStatus::Completed);
        assert_eq!(call.twilio.callbacks, 3);
    }

    #[test]
    fn a_late_callback_still_brings_its_answered_by_and_duration() {
        let mut answered = cb(2, TwilioCallStatus::InProgress);
        answered.answered_by = Some(AnsweredBy::MachineStart);
        let mut done = cb(3, TwilioCallStatus::Completed);
        done.call_duration = Some(202);
        let call = run(
            replay(routed_inbound()),
            [
                C::RecordTwilioStatus {
                    open: None,
                    callback: done,
                },
                C::RecordTwilioStatus {
                    open: None,
                    callback: answered,
                },
            ],
        )
        .unwrap();
        assert_eq!(call.status, CallStatus::Completed);
        assert_eq!(call.answered_by, Some(AnsweredBy::MachineStart));
        assert_eq!(call.duration_seconds, Some(202));
    }

    fn permutations(items: &[u32]) -> Vec<Vec<u32>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let head = rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, head);
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn callbacks_in_any_order_and_replayed_give_the_same_call() {
        let callback = |seq: u32| {
            let mut c = match seq {
                0 => cb(0, TwilioCallStatus::Queued),
                1 => cb(1, TwilioCallStatus::Ringing),
                2 => cb(2, TwilioCallStatus::InProgress),
                _ => cb(3, TwilioCallStatus::Completed),
            };
            if seq >= 2 {
                c.answered_by = Some(AnsweredBy::Human);
            }
            if seq == 3 {
                c.call_duration = Some(95);
            }
            C::RecordTwilioStatus {
                open: Some(opening(OpenedBy::StatusCallback, Some(sid()))),
                callback: c,
            }
        };
        let mut finals = Vec::new();
        for order in permutations(&[0, 1, 2, 3]) {
            // Every callback twice: once in this order, then all of them again reversed.
            let commands = order.iter().chain(order.iter().rev()).map(|s| callback(*s));
            let call = run(Call::default(), commands).unwrap();
            finals.push(call);
        }
        let first = &finals[0];
        assert_eq!(first.status, CallStatus::Completed);
        assert_eq!(first.duration_seconds, Some(95));
        assert_eq!(first.answered_by, Some(AnsweredBy::Human));
        assert_eq!(first.twilio.callbacks, 4);
        assert_eq!(
            first.twilio.seen.iter().collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        for f in &finals {
            assert_eq!(f, first);
        }
    }

    #[test]
    fn an_unknown_call_sid_opens_the_call_from_the_callback() {
        let events = F::with(())
            .given_no_previous_events()
            .when(C::RecordTwilioStatus {
                open: Some(opening(OpenedBy::StatusCallback, Some(sid()))),
                callback: cb(1, TwilioCallStatus::Ringing),
            })
            .inspect_result()
            .unwrap();
        assert_eq!(
            events,
            vec![
                opened_inbound(OpenedBy::StatusCallback),
                E::TwilioStatusReceived {
                    callback: cb(1, TwilioCallStatus::Ringing)
                },
            ]
        );
        F::with(())
            .given_no_previous_events()
            .when(status(1, TwilioCallStatus::Ringing))
            .then_expect_error(CallError::NotFound);
    }

    #[test]
    fn a_source_of_another_establishment_cannot_merge_into_a_call() {
        let mut open = opening(OpenedBy::StatusCallback, Some(sid()));
        open.establishment_id = "est_other".into();
        F::with(())
            .given(routed_inbound())
            .when(C::RecordTwilioStatus {
                open: Some(open),
                callback: cb(2, TwilioCallStatus::InProgress),
            })
            .then_expect_error(CallError::EstablishmentMismatch);
    }

    #[test]
    fn a_callback_for_another_call_sid_is_refused() {
        let mut c = cb(2, TwilioCallStatus::InProgress);
        c.call_sid = other_sid();
        F::with(())
            .given(routed_inbound())
            .when(C::RecordTwilioStatus {
                open: None,
                callback: c,
            })
            .then_expect_error(CallError::CallSidMismatch {
                bound: sid().to_string(),
                given: other_sid().to_string(),
            });
    }

    #[test]
    fn the_async_amd_result_is_recorded_and_wins_over_callbacks() {
        let mut answered = cb(2, TwilioCallStatus::InProgress);
        answered.answered_by = Some(AnsweredBy::Human);
        let amd = C::RecordAnsweredBy {
            call_sid: sid(),
            answered_by: AnsweredBy::MachineEndBeep,
            detection_duration_ms: Some(3100),
            at: t(5),
        };
        for order in [[0, 1], [1, 0]] {
            let cmds = order.map(|i| {
                if i == 0 {
                    amd.clone()
                } else {
                    C::RecordTwilioStatus {
                        open: None,
                        callback: answered.clone(),
                    }
                }
            });
            let call = run(replay(routed_inbound()), cmds).unwrap();
            assert_eq!(call.answered_by, Some(AnsweredBy::MachineEndBeep));
            // A replayed AMD callback adds nothing.
            assert_eq!(call.decide(amd.clone()).unwrap(), vec![]);
        }
    }

    // --- runtime first, Twilio later (and the other way round) ------------------------------

    #[test]
    fn a_runtime_event_for_an_unknown_call_opens_it() {
        let events = F::with(())
            .given_no_previous_events()
            .when(runtime(1, RuntimeEvent::CallStarted { started_at: t(1) }))
            .inspect_result()
            .unwrap();
        assert!(matches!(
            &events[0],
            E::CallOpened { opened_by: OpenedBy::Runtime, call_sid: Some(s), agent_version_id: Some(v), .. }
                if *s == sid() && v == "agv_3"
        ));
        assert!(matches!(&events[1], E::RuntimeCallStarted { .. }));
        assert_eq!(
            events[2],
            changed(
                CallStatus::Ringing,
                CallStatus::InProgress,
                StatusCause::Runtime,
                1
            )
        );
    }

    #[test]
    fn runtime_first_then_twilio_merges_into_one_call() {
        let call = run(
            Call::default(),
            [
                runtime(1, RuntimeEvent::CallStarted { started_at: t(1) }),
                runtime(2, segment(2)),
                C::ReceiveInbound {
                    open: opening(OpenedBy::IncomingWebhook, Some(sid())),
                    decision: accepted(),
                },
                C::RecordTwilioStatus {
                    open: Some(opening(OpenedBy::StatusCallback, Some(sid()))),
                    callback: cb(1, TwilioCallStatus::Ringing),
                },
                C::RecordTwilioStatus {
                    open: Some(opening(OpenedBy::StatusCallback, Some(sid()))),
                    callback: cb(3, TwilioCallStatus::Completed),
                },
            ],
        )
        .unwrap();
        assert_eq!(call.id, "call_1");
        assert_eq!(call.status, CallStatus::Completed);
        assert_eq!(call.runtime.segments, 1);
        assert!(call.routing.is_some());
    }

    #[test]
    fn twilio_first_then_runtime_merges_into_one_call() {
        let call = run(
            Call::default(),
            [
                C::RecordTwilioStatus {
                    open: Some(opening(OpenedBy::StatusCallback, Some(sid()))),
                    callback: cb(2, TwilioCallStatus::InProgress),
                },
                runtime(3, RuntimeEvent::CallStarted { started_at: t(3) }),
                runtime(4, segment(4)),
            ],
        )
        .unwrap();
        assert_eq!(call.status, CallStatus::InProgress);
        assert!(call.runtime.started);
        assert_eq!(call.agent_version_id.as_deref(), Some("agv_3"));
    }

    #[test]
    fn the_runtime_ending_the_call_sets_its_final_status_but_twilio_duration_wins() {
        let ended = RuntimeEvent::CallEnded {
            ended_at: t(600),
            duration_seconds: Some(598),
            final_status: TerminalStatus::Completed,
            hangup_by: Some(HangupBy::Customer),
            segment_count: Some(1),
        };
        let call = run(replay(in_progress()), [runtime(600, ended.clone())]).unwrap();
        assert_eq!(call.status, CallStatus::Completed);
        assert_eq!(call.duration_seconds, Some(598));
        let mut done = cb(3, TwilioCallStatus::Completed);
        done.call_duration = Some(600);
        let call = run(
            call,
            [
                C::RecordTwilioStatus {
                    open: None,
                    callback: done,
                },
                // A second call_ended (another key) changes nothing.
                runtime(601, ended),
            ],
        )
        .unwrap();
        assert_eq!(call.duration_seconds, Some(600));
        assert_eq!(call.status, CallStatus::Completed);
    }

    #[test]
    fn the_media_stream_ending_after_a_handoff_keeps_the_call_live() {
        let call = run(
            replay(in_progress()),
            [
                C::RequestHandoff {
                    reason: "customer_requested_human".into(),
                    to: e164("+14158675310"),
                    requested_by: Requester::User {
                        user_id: "usr_op".into(),
                    },
                    at: t(10),
                },
                C::RecordHandoffStarted { at: t(11) },
                runtime(
                    12,
                    RuntimeEvent::CallEnded {
                        ended_at: t(12),
                        duration_seconds: Some(12),
                        final_status: TerminalStatus::Completed,
                        hangup_by: Some(HangupBy::System),
                        segment_count: None,
                    },
                ),
            ],
        )
        .unwrap();
        assert_eq!(call.status, CallStatus::HandoffCompleted);
        let call = run(call, [status(3, TwilioCallStatus::Completed)]).unwrap();
        assert_eq!(call.status, CallStatus::Completed);
    }

    // --- handoff -----------------------------------------------------------------------------

    fn handoff() -> C {
        C::RequestHandoff {
            reason: "customer_requested_human".into(),
            to: e164("+14158675310"),
            requested_by: Requester::User {
                user_id: "usr_op".into(),
            },
            at: t(10),
        }
    }

    #[test]
    fn a_handoff_of_a_call_in_progress_is_initiated() {
        F::with(())
            .given(in_progress())
            .when(handoff())
            .then_expect_events(vec![
                E::HandoffRequested {
                    reason: "customer_requested_human".into(),
                    to: e164("+14158675310"),
                    requested_by: Requester::User {
                        user_id: "usr_op".into(),
                    },
                    at: t(10),
                },
                changed(
                    CallStatus::InProgress,
                    CallStatus::HandoffInitiated,
                    StatusCause::Handoff,
                    10,
                ),
            ]);
    }

    #[test]
    fn a_handoff_needs_a_call_in_progress() {
        F::with(())
            .given(routed_inbound())
            .when(handoff())
            .then_expect_error(CallError::NotInProgress {
                status: CallStatus::Ringing,
            });
        let mut ended = in_progress();
        ended.push(changed(
            CallStatus::InProgress,
            CallStatus::Completed,
            by_callback(3),
            3,
        ));
        F::with(())
            .given(ended)
            .when(handoff())
            .then_expect_error(CallError::CallEnded);
        let started = run(replay(in_progress()), [handoff()]).unwrap();
        assert_eq!(
            started.decide(handoff()).unwrap_err(),
            CallError::HandoffAlreadyInProgress
        );
    }

    #[test]
    fn a_handoff_needs_the_provider_call_sid() {
        let mut open = opening(OpenedBy::Runtime, None);
        open.call_sid = None;
        let call = run(
            Call::default(),
            [C::IngestRuntimeEvent {
                open,
                origin: origin(1),
                event: RuntimeEvent::CallStarted { started_at: t(1) },
            }],
        )
        .unwrap();
        assert_eq!(call.status, CallStatus::InProgress);
        assert_eq!(
            call.decide(handoff()).unwrap_err(),
            CallError::NoProviderCallSid
        );
    }

    #[test]
    fn a_started_handoff_completes_and_a_failed_one_returns_the_call_to_the_agent() {
        let requested = run(replay(in_progress()), [handoff()]).unwrap();
        let done = run(requested.clone(), [C::RecordHandoffStarted { at: t(11) }]).unwrap();
        assert_eq!(done.status, CallStatus::HandoffCompleted);
        assert_eq!(
            done.handoff,
            Handoff::Started {
                to: e164("+14158675310")
            }
        );
        let failed = run(
            requested,
            [C::RecordHandoffFailure {
                code: Some(21220),
                message: "call is not in progress".into(),
                at: t(11),
            }],
        )
        .unwrap();
        assert_eq!(failed.status, CallStatus::InProgress);
        assert_eq!(failed.handoff, Handoff::Failed);
        // ...and may be tried again.
        assert!(failed.decide(handoff()).is_ok());
        F::with(())
            .given(in_progress())
            .when(C::RecordHandoffStarted { at: t(11) })
            .then_expect_error(CallError::NoHandoffRequested);
    }

    #[test]
    fn a_late_in_progress_callback_does_not_undo_a_handoff() {
        let call = run(
            replay(routed_inbound()),
            [
                status(2, TwilioCallStatus::InProgress),
                handoff(),
                status(1, TwilioCallStatus::Ringing),
                C::RecordTwilioStatus {
                    open: None,
                    callback: {
                        let mut c = cb(2, TwilioCallStatus::InProgress);
                        c.sequence_number = None;
                        c
                    },
                },
            ],
        )
        .unwrap();
        assert_eq!(call.status, CallStatus::HandoffInitiated);
    }

    // --- reaper ------------------------------------------------------------------------------

    fn reap(now: i64) -> C {
        C::Reap {
            now: t(now),
            max_duration_seconds: 3600,
            grace_seconds: 300,
            reason: "no terminal callback".into(),
        }
    }

    #[test]
    fn the_reaper_ends_an_overdue_answered_call_as_completed() {
        F::with(())
            .given(in_progress())
            .when(reap(3900))
            .then_expect_events(vec![
                E::CallReaped {
                    reason: "no terminal callback".into(),
                    previous_status: CallStatus::InProgress,
                    at: t(3900),
                },
                changed(
                    CallStatus::InProgress,
                    CallStatus::Completed,
                    StatusCause::Reaper,
                    3900,
                ),
            ]);
    }

    #[test]
    fn the_reaper_ends_an_overdue_unanswered_call_as_failed() {
        let call = run(replay(outbound_requested()), [reap(4000)]).unwrap();
        assert_eq!(call.status, CallStatus::Failed);
        assert!(call.reaped);
    }

    #[test]
    fn the_reaper_leaves_calls_within_their_time_and_ended_calls_alone() {
        F::with(())
            .given(in_progress())
            .when(reap(3899))
            .then_expect_error(CallError::NotOverdue { deadline: t(3900) });
        let mut ended = in_progress();
        ended.push(changed(
            CallStatus::InProgress,
            CallStatus::Busy,
            by_callback(3),
            3,
        ));
        F::with(())
            .given(ended)
            .when(reap(9999))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_terminal_callback_after_the_reaper_keeps_the_status_and_adds_the_duration() {
        let mut done = cb(3, TwilioCallStatus::Busy);
        done.call_duration = Some(4000);
        let call = run(
            replay(in_progress()),
            [
                reap(3900),
                C::RecordTwilioStatus {
                    open: None,
                    callback: done,
                },
            ],
        )
        .unwrap();
        assert_eq!(call.status, CallStatus::Completed);
        assert_eq!(call.duration_seconds, Some(4000));
    }

    // --- runtime artefacts, small state ------------------------------------------------------

    #[test]
    fn segments_are_numbered_and_the_state_stays_small_however_many_arrive() {
        let mut call = replay(in_progress());
        let mut size_after_first = 0;
        for n in 1..=10_000u32 {
            let events = call.decide(runtime(n, segment(n))).unwrap();
            assert_eq!(events.len(), 1);
            assert!(
                matches!(&events[0], E::TranscriptSegmentAdded { ordinal, .. } if *ordinal == n as u64)
            );
            for e in events {
                call.apply(e);
            }
            if n == 1 {
                size_after_first = serde_json::to_string(&call).unwrap().len();
            }
        }
        let size = serde_json::to_string(&call).unwrap().len();
        assert_eq!(call.runtime.segments, 10_000);
        // Only the counter's digits grow (1 → 10000).
        assert!(size <= size_after_first + 4, "{size_after_first} → {size}");
        eprintln!("state after 1 segment: {size_after_first} bytes, after 10,000: {size} bytes");
        assert!(size < 2048, "state is {size} bytes");
    }

    #[test]
    fn segments_arriving_after_the_end_are_kept_and_complete_the_transcript() {
        let ended = RuntimeEvent::CallEnded {
            ended_at: t(60),
            duration_seconds: Some(58),
            final_status: TerminalStatus::Completed,
            hangup_by: Some(HangupBy::Agent),
            segment_count: Some(2),
        };
        let call = run(
            replay(in_progress()),
            [runtime(3, segment(3)), runtime(60, ended)],
        )
        .unwrap();
        assert!(call.is_terminal());
        assert!(!call.transcript_complete());
        let call = run(call, [runtime(4, segment(4))]).unwrap();
        assert_eq!(call.runtime.segments, 2);
        assert!(call.transcript_complete());
    }

    #[test]
    fn tool_results_pair_with_the_oldest_open_call_of_the_same_tool() {
        let called = |n: u32, name: &str| {
            runtime(
                n,
                RuntimeEvent::ToolCalled {
                    tool_name: name.into(),
                    arguments: json!({"n": n}),
                },
            )
        };
        let result = |n: u32, name: &str| {
            runtime(
                n,
                RuntimeEvent::ToolResult {
                    tool_name: name.into(),
                    result: json!({"ok": true}),
                    error: Value::Null,
                },
            )
        };
        let call = run(
            replay(in_progress()),
            [
                called(1, "send_email"),
                called(2, "lookup"),
                called(3, "send_email"),
            ],
        )
        .unwrap();
        let events = call.decide(result(4, "send_email")).unwrap();
        assert!(matches!(
            &events[0],
            E::ToolResultReceived {
                invocation: Some(1),
                ..
            }
        ));
        let call = run(call, [result(4, "send_email")]).unwrap();
        let events = call.decide(result(5, "send_email")).unwrap();
        assert!(matches!(
            &events[0],
            E::ToolResultReceived {
                invocation: Some(3),
                ..
            }
        ));
        let events = call.decide(result(5, "unknown_tool")).unwrap();
        assert!(matches!(
            &events[0],
            E::ToolResultReceived {
                invocation: None,
                ..
            }
        ));
    }

    #[test]
    fn sentiment_and_summary_are_recorded_only_for_new_segments() {
        let sentiment = |n: u64| C::RecordSentiment {
            label: SentimentLabel::Positive,
            score: SentimentScore::try_from(0.72).unwrap(),
            windows: vec![],
            segments_considered: n,
            computed_at: t(n as i64),
        };
        let summary = |n: u64| C::RecordSummary {
            summary: "Customer updated the service plan.".into(),
            generator: "extractive".into(),
            segments_covered: n,
            generated_at: t(n as i64),
        };
        let call = run(replay(in_progress()), [sentiment(3), summary(3)]).unwrap();
        assert_eq!(call.decide(sentiment(3)).unwrap(), vec![]);
        assert_eq!(call.decide(sentiment(2)).unwrap(), vec![]);
        assert_eq!(call.decide(sentiment(4)).unwrap().len(), 1);
        assert_eq!(call.decide(summary(3)).unwrap(), vec![]);
        assert_eq!(call.decide(summary(5)).unwrap().len(), 1);
        assert!(SentimentScore::try_from(1.5).is_err());
        assert!(SentimentScore::try_from(f64::NAN).is_err());
    }

    #[test]
    fn commands_other_than_openers_need_an_existing_call() {
        for c in [
            C::RequestPlacement { at: t(0) },
            handoff(),
            reap(0),
            C::BindCallSid {
                call_sid: sid(),
                at: t(0),
            },
        ] {
            assert_eq!(Call::default().decide(c).unwrap_err(), CallError::NotFound);
        }
    }

    #[test]
    fn the_state_survives_a_snapshot_round_trip() {
        let call = run(
            replay(in_progress()),
            [
                runtime(3, segment(3)),
                runtime(
                    4,
                    RuntimeEvent::ToolCalled {
                        tool_name: "lookup".into(),
                        arguments: json!({}),
                    },
                ),
                status(70, TwilioCallStatus::Ringing),
                handoff(),
            ],
        )
        .unwrap();
        let json = serde_json::to_value(&call).unwrap();
        assert_eq!(serde_json::from_value::<Call>(json.clone()).unwrap(), call);
        assert_eq!(json["twilio"]["seen"], json!([70]));
    }

    #[test]
    fn events_round_trip_through_json() {
        let mut all = in_progress();
        all.extend(replay(in_progress()).decide(handoff()).unwrap());
        all.extend(outbound_requested());
        all.push(E::TwilioStatusReceived {
            callback: cb(3, TwilioCallStatus::NoAnswer),
        });
        for e in all {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(serde_json::from_value::<E>(v).unwrap(), e);
        }
    }

    // --- value types and runtime payloads ----------------------------------------------------

    #[test]
    fn runtime_events_parse_from_the_appendix_b_envelope() {
        #[derive(Deserialize)]
        struct Envelope {
            #[allow(dead_code)]
            id: String,
            #[allow(dead_code)]
            idempotency_key: String,
            #[serde(flatten)]
            event: RuntimeEvent,
        }
        let e: Envelope = serde_json::from_value(json!({
            "id": "evt_1", "type": "transcript_segment", "occurred_at": "2026-01-10T00:00:05Z",
            "idempotency_key": "rt_1:CA1:seg:000123",
            "payload": {"segment_id": "seg_1", "speaker": "customer", "text": "Hello",
                        "started_at": "2026-01-10T00:00:03Z", "ended_at": "2026-01-10T00:00:05Z",
                        "confidence": 0.91}
        }))
        .unwrap();
        assert_eq!(e.event.type_name(), "transcript_segment");
        assert!(e.event.validate().is_ok());
        let ended: RuntimeEvent = serde_json::from_value(json!({"type": "call_ended", "payload":
            {"ended_at": "2026-01-10T00:10:00Z", "duration_seconds": 600,
             "final_status": "completed", "hangup_by": "customer"}}))
        .unwrap();
        assert!(matches!(
            ended,
            RuntimeEvent::CallEnded {
                final_status: TerminalStatus::Completed,
                ..
            }
        ));
        for bad in [
            json!({"type": "call_ended", "payload": {"ended_at": "2026-01-10T00:10:00Z", "final_status": "in_progress"}}),
            json!({"type": "teleport", "payload": {}}),
            json!({"type": "runtime_error", "payload": {"component": "gpu", "message": "x"}}),
        ] {
            assert!(
                serde_json::from_value::<RuntimeEvent>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn oversized_or_inconsistent_runtime_payloads_are_refused() {
        let mut s = TranscriptSegment {
            segment_id: "seg_1".into(),
            speaker: Speaker::Agent,
            text: "x".repeat(limits::SEGMENT_TEXT + 1),
            started_at: t(0),
            ended_at: t(1),
            confidence: None,
        };
        let err = RuntimeEvent::TranscriptSegment(s.clone())
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "text");
        s.text = "ok".into();
        s.ended_at = t(-1);
        let err = RuntimeEvent::TranscriptSegment(s.clone())
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "ended_at");
        s.ended_at = t(1);
        s.confidence = Some(1.2);
        assert_eq!(
            RuntimeEvent::TranscriptSegment(s)
                .validate()
                .unwrap_err()
                .field,
            "confidence"
        );
        let big = RuntimeEvent::ToolCalled {
            tool_name: "t".into(),
            arguments: json!({"blob": "y".repeat(limits::TOOL_JSON_BYTES)}),
        };
        assert_eq!(big.validate().unwrap_err().field, "arguments");
    }

    #[test]
    fn twilio_values_parse_into_domain_values() {
        assert!("CA0123456789abcdef0123456789ABCDEF"
            .parse::<CallSid>()
            .is_ok());
        for bad in [
            "CA123",
            "XX0123456789abcdef0123456789abcdef",
            "CA0123456789abcdef0123456789abcdeg",
        ] {
            assert!(bad.parse::<CallSid>().is_err(), "{bad}");
        }
        assert_eq!(
            Direction::from_twilio("outbound-api").unwrap(),
            Direction::Outbound
        );
        assert_eq!(
            Direction::from_twilio("trunking-terminating").unwrap(),
            Direction::Inbound
        );
        assert!(Direction::from_twilio("sideways").is_err());
        assert_eq!(
            "no-answer"
                .parse::<TwilioCallStatus>()
                .unwrap()
                .to_call_status(),
            CallStatus::NoAnswer
        );
        assert_eq!(
            "in-progress"
                .parse::<TwilioCallStatus>()
                .unwrap()
                .to_call_status(),
            CallStatus::InProgress
        );
        assert_eq!(
            "initiated"
                .parse::<TwilioCallStatus>()
                .unwrap()
                .to_call_status(),
            CallStatus::Queued
        );
        assert_eq!(
            "machine_end_beep".parse::<AnsweredBy>().unwrap(),
            AnsweredBy::MachineEndBeep
        );
        assert_eq!("client:alice".parse::<Party>().unwrap().e164(), None);
        assert!(
            "+1 415 867 5309".parse::<Party>().is_err(),
            "spaces are not part of a provider address"
        );
        assert_eq!(
            serde_json::to_value(CallStatus::NoAnswer).unwrap(),
            json!("no_answer")
        );
        assert!(CallStatus::ALL.iter().filter(|s| s.is_terminal()).count() == 5);
    }
}
