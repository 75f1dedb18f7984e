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
//! - An outbound call is decided on [`OutboundFacts`] gathered before the command from the
//!   agent and the establishment's telephony policy; the call refuses on them
//!   ([`CallError::OutboundRefused`]) and records the version it is made with.
//!
//! docs/calls.md describes the state machine with its table of transitions.

/// Claim scope mapping a Twilio `CallSid` to the call that owns it
/// (`store.claim_owner(CALL_SID_CLAIM, sid)` finds the call).
pub const CALL_SID_CLAIM: &str = "call_sid";
/// Open tool invocations remembered for pairing results; older ones are forgotten.
pub const MAX_PENDING_TOOL_CALLS: usize = 32;

mod commands;
mod decide;
mod errors;
mod events;
mod outbound;
mod runtime_events;
mod state;
mod tool_proxy;
mod twilio;
mod values;

pub use commands::*;
pub use errors::*;
pub use events::*;
pub use outbound::*;
pub use runtime_events::*;
pub use state::*;
pub use tool_proxy::*;
pub use twilio::*;
pub use values::*;

#[cfg(test)]
mod tests;
