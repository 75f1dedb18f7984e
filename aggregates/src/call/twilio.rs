//! The Twilio side of a call: `CallStatus` and `Direction` as Twilio's webhooks spell them,
//! answering-machine detection (`AnsweredBy`, `MachineDetection`) and the parsed status callback.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CallSid, CallStatus, Direction};
use crate::common::{wire_enum, ParseError};

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

    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

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
