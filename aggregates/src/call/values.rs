//! Value types of a call: its ids and parties, statuses and direction, who asked for it, how
//! the incoming-call webhook routed it, sentiment results. Parsed once at the boundary.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::common::{string_newtype_serde, wire_enum, ParseError, E164};

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

string_newtype_serde!(CallSid);
string_newtype_serde!(Party);

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
    /// Direction of a call as shown in the API (Appendix A.5).
    Direction, "direction" {
        Inbound => "inbound",
        Outbound => "outbound",
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
    User {
        user_id: String,
    },
    Campaign {
        campaign_id: String,
        /// The lead dialled (absent on calls recorded before campaigns dialled leads).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lead_id: Option<String>,
        /// The attempt number on that lead (1 for the first).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
    },
    System {
        name: String,
    },
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

/// Sentiment of one time window of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentimentWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub label: SentimentLabel,
    pub score: SentimentScore,
}
