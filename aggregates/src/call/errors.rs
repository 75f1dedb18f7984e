//! Errors of the call aggregate; each names the rule a command broke.

use chrono::{DateTime, Utc};

use super::CallStatus;

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
    #[error("the outbound call is refused: {0}")]
    OutboundRefused(OutboundRefusal),
}

/// Why an outbound call may not be made; each variant names the broken rule. Decided by the
/// aggregates that hold the facts ([`Agent::dialable_version`](crate::agent::Agent::dialable_version),
/// [`Telephony::outbound_caller_id`](crate::telephony::Telephony::outbound_caller_id)) and
/// refused by the call ([`CallError::OutboundRefused`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundRefusal {
    /// The agent does not exist, or belongs to another establishment.
    #[error("the agent is not an agent of this establishment")]
    AgentNotInEstablishment,
    /// The agent has no active version.
    #[error("the agent has no published version to call with")]
    NoPublishedVersion,
    /// The pinned version is not one of the agent's published versions (a draft, archived, or
    /// unknown).
    #[error("version {version_id} is not a published version of the agent")]
    VersionNotCallable { version_id: String },
    /// The number called is on the establishment's blacklist.
    #[error("the number called is on the establishment's blacklist")]
    Blacklisted,
    /// The number asked to call from is not one of the establishment's inbound numbers.
    #[error("the number to call from is not one of the establishment's numbers")]
    CallerIdNotOwned,
    /// No number was asked for and the establishment has none to call from.
    #[error("the establishment has no number to call from")]
    NoCallerId,
}
