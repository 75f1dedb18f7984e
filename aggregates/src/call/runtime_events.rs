//! The runtime's events for a call (Appendix B.2): payload types as the envelope carries them,
//! their value enums, and the size and consistency checks of untrusted payloads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CallStatus;
use crate::common::{check_text, plausible_instant, wire_enum, ParseError, TextKind};

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
    /// The runtime's id of the segment; B.1's example leaves it out, and the ingestion
    /// boundary then uses the event's id (unique and stable across retries).
    #[serde(default)]
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
    /// Nesting of tool arguments, results and errors.
    pub const TOOL_JSON_DEPTH: usize = 32;
    /// `call_ended.duration_seconds`.
    pub const DURATION_SECONDS: u32 = 7 * 24 * 3600;
    /// `call_ended.segment_count`.
    pub const SEGMENT_COUNT: u64 = 1_000_000;
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

    /// Checks sizes, ranges and text of an untrusted payload (what a projector or worker will
    /// need: no NUL or control characters in text PostgreSQL stores, bounded sizes, ordered
    /// times, finite numbers); the error names the field. See also [`Self::validate_times`].
    pub fn validate(&self) -> Result<(), ParseError> {
        fn text(
            field: &'static str,
            s: &str,
            min: usize,
            max: usize,
            kind: TextKind,
        ) -> Result<(), ParseError> {
            let n = s.chars().count();
            if n < min || n > max {
                return Err(ParseError::new(
                    field,
                    format!("must be {min} to {max} characters"),
                ));
            }
            check_text(field, s, kind)
        }
        fn json(field: &'static str, v: &Value) -> Result<(), ParseError> {
            if v.to_string().len() > limits::TOOL_JSON_BYTES {
                return Err(ParseError::new(
                    field,
                    format!("must be at most {} bytes of JSON", limits::TOOL_JSON_BYTES),
                ));
            }
            json_content(field, v, 0)
        }
        /// Strings and keys PostgreSQL's jsonb can store (no NUL), bounded nesting.
        fn json_content(field: &'static str, v: &Value, depth: usize) -> Result<(), ParseError> {
            if depth > limits::TOOL_JSON_DEPTH {
                return Err(ParseError::new(
                    field,
                    format!("must be nested at most {} levels", limits::TOOL_JSON_DEPTH),
                ));
            }
            let nul = || ParseError::new(field, "must not contain NUL characters");
            match v {
                Value::String(s) if s.contains('\0') => Err(nul()),
                Value::Array(a) => a.iter().try_for_each(|i| json_content(field, i, depth + 1)),
                Value::Object(o) => o.iter().try_for_each(|(k, i)| {
                    if k.contains('\0') {
                        return Err(nul());
                    }
                    json_content(field, i, depth + 1)
                }),
                Value::Number(n) if n.as_f64().is_some_and(|f| !f.is_finite()) => {
                    Err(ParseError::new(field, "numbers must be finite"))
                }
                _ => Ok(()),
            }
        }
        match self {
            RuntimeEvent::CallStarted { .. } | RuntimeEvent::CallConnected { .. } => Ok(()),
            RuntimeEvent::CallEnded {
                duration_seconds,
                segment_count,
                ..
            } => {
                if duration_seconds.is_some_and(|d| d > limits::DURATION_SECONDS) {
                    return Err(ParseError::new("duration_seconds", "is implausibly long"));
                }
                if segment_count.is_some_and(|n| n > limits::SEGMENT_COUNT) {
                    return Err(ParseError::new(
                        "segment_count",
                        format!("must be at most {}", limits::SEGMENT_COUNT),
                    ));
                }
                Ok(())
            }
            RuntimeEvent::TranscriptSegment(s) => {
                text(
                    "segment_id",
                    &s.segment_id,
                    1,
                    limits::SEGMENT_ID,
                    TextKind::Token,
                )?;
                text("text", &s.text, 0, limits::SEGMENT_TEXT, TextKind::Prose)?;
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
                text(
                    "tool_name",
                    tool_name,
                    1,
                    limits::TOOL_NAME,
                    TextKind::Token,
                )?;
                json("arguments", arguments)
            }
            RuntimeEvent::ToolResult {
                tool_name,
                result,
                error,
            } => {
                text(
                    "tool_name",
                    tool_name,
                    1,
                    limits::TOOL_NAME,
                    TextKind::Token,
                )?;
                json("result", result)?;
                json("error", error)
            }
            RuntimeEvent::RecordingAvailable(r) => {
                text(
                    "recording_url",
                    &r.recording_url,
                    1,
                    limits::URL,
                    TextKind::Token,
                )?;
                let lower = r.recording_url.to_ascii_lowercase();
                if !(lower.starts_with("https://") || lower.starts_with("http://")) {
                    return Err(ParseError::new(
                        "recording_url",
                        "must be an http:// or https:// URL",
                    ));
                }
                text(
                    "storage_provider",
                    &r.storage_provider,
                    1,
                    limits::SHORT_TEXT,
                    TextKind::Line,
                )?;
                text(
                    "content_type",
                    &r.content_type,
                    1,
                    limits::SHORT_TEXT,
                    TextKind::Line,
                )
            }
            RuntimeEvent::RuntimeError { message, .. } => {
                text("message", message, 0, limits::MESSAGE, TextKind::Prose)
            }
        }
    }

    /// Checks that the payload's instants lie in a sane window around `now` (not before 2000,
    /// at most a day ahead) and are ordered; the error names the field.
    pub fn validate_times(&self, now: DateTime<Utc>) -> Result<(), ParseError> {
        match self {
            RuntimeEvent::CallStarted { started_at } => {
                plausible_instant("started_at", *started_at, now)
            }
            RuntimeEvent::CallConnected {
                connected_at: Some(t),
            } => plausible_instant("connected_at", *t, now),
            RuntimeEvent::CallEnded { ended_at, .. } => {
                plausible_instant("ended_at", *ended_at, now)
            }
            RuntimeEvent::TranscriptSegment(s) => {
                plausible_instant("started_at", s.started_at, now)?;
                plausible_instant("ended_at", s.ended_at, now)?;
                if s.ended_at < s.started_at {
                    return Err(ParseError::new("ended_at", "must not be before started_at"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
