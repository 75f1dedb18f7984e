//! What an outbound call needs to know from other streams, gathered before the command: the
//! agent's version to dial with and the number to call from, each as decided by the aggregate
//! that holds the facts (or why not). The call refuses on them; rules stay pure.

use crate::agent::Agent;
use crate::common::E164;
use crate::telephony::Telephony;

use super::OutboundRefusal;

/// The facts an outbound call is decided on. Build them with [`OutboundFacts::gather`] from the
/// loaded states of the agent and of the establishment's telephony policy.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundFacts {
    /// The agent version the call is made with, or why the agent cannot take it.
    pub agent_version: Result<String, OutboundRefusal>,
    /// The number the call is made from, or why there is none (the blacklist included).
    pub caller_id: Result<E164, OutboundRefusal>,
}

impl OutboundFacts {
    /// Asks the agent for a version it can be dialled with (`pinned_version`, else its active
    /// one) and the establishment's telephony for a caller id to call `to` from
    /// (`requested_from`, else its first number). Pure.
    pub fn gather(
        telephony: &Telephony,
        agent: &Agent,
        establishment_id: &str,
        requested_from: Option<&E164>,
        to: &E164,
        pinned_version: Option<&str>,
    ) -> Self {
        OutboundFacts {
            agent_version: agent.dialable_version(establishment_id, pinned_version),
            caller_id: telephony.outbound_caller_id(requested_from, to),
        }
    }
}
