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
}
