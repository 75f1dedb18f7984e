//! Use case: changing an establishment's telephony policy (inbound numbers and the agents they
//! route to, handoff number, call-duration cap, business hours, blacklist). The Telephony
//! aggregate checks the policy itself and claims the numbers; this use case adds the fact it
//! cannot know alone: every routed agent is an agent of the same establishment.

use std::collections::HashSet;
use std::sync::Arc;

use aggregates::telephony::{
    InboundNumber, NumberAuthority, Telephony, TelephonyCommand, TelephonyError, TelephonyPatch,
};
use projections::routing::{self, TelephonyRow};
use sqlx::PgPool;

use super::{unexpected_from, Invalid, Unexpected};
use crate::store::{CommandBus, CommandContext, ExecError, ExecOptions};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A routed agent of another establishment, or a policy the aggregate refused.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A number the establishment does not hold, added by one of its own admins: numbers are
    /// assigned by the platform (so a tenant cannot take another's number while it is being
    /// onboarded).
    #[error(transparent)]
    NotAssigned(TelephonyError),
    #[error(transparent)]
    Command(ExecError<TelephonyError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

unexpected_from!(PolicyError);

impl From<ExecError<TelephonyError>> for PolicyError {
    fn from(e: ExecError<TelephonyError>) -> Self {
        match e {
            ExecError::Domain(d @ TelephonyError::NumberNotAssigned(_)) => {
                PolicyError::NotAssigned(d)
            }
            ExecError::Domain(d) => Invalid::new(d.field(), d.to_string()).into(),
            e => PolicyError::Command(e),
        }
    }
}

/// The telephony-policy use case.
pub struct TelephonyPolicies {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
}

impl TelephonyPolicies {
    /// Applies a partial update (the caller checked the acting user is an admin of the
    /// establishment, and says whether they act for the platform); answers the policy as read
    /// back.
    pub async fn update(
        &self,
        ctx: &CommandContext,
        establishment_id: &str,
        patch: TelephonyPatch,
        by: NumberAuthority,
    ) -> Result<TelephonyRow, PolicyError> {
        if let Some(numbers) = &patch.inbound_numbers {
            self.check_routing_agents(establishment_id, numbers).await?;
        }
        let outcome = self
            .bus
            .execute::<Telephony>(
                establishment_id,
                TelephonyCommand::Update { patch, by },
                ctx,
                ExecOptions::default(),
            )
            .await?;
        self.bus.visible(&outcome).await;
        Ok(routing::telephony(&self.pool, establishment_id).await?)
    }

    /// Every `routing_agent_id` must be an agent of this establishment (agents never move, so
    /// checking before the command is enough).
    async fn check_routing_agents(
        &self,
        establishment_id: &str,
        numbers: &[InboundNumber],
    ) -> Result<(), PolicyError> {
        let wanted: Vec<&str> = numbers
            .iter()
            .map(|n| n.routing_agent_id.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let found: HashSet<String> =
            projections::agents::agents_among(&self.pool, establishment_id, &wanted)
                .await?
                .into_iter()
                .collect();
        if let Some((i, n)) = numbers
            .iter()
            .enumerate()
            .find(|(_, n)| !found.contains(&n.routing_agent_id))
        {
            return Err(Invalid::new(
                format!("inbound_numbers[{i}].routing_agent_id"),
                format!(
                    "{:?} is not an agent of this establishment",
                    n.routing_agent_id
                ),
            )
            .into());
        }
        Ok(())
    }
}
