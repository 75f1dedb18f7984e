//! Use cases of an establishment's members: changing a member's role and removing a member.
//! The Establishment aggregate holds the rule that spans all members (the last admin can be
//! neither demoted nor removed).

use std::sync::Arc;

use aggregates::common::Role;
use aggregates::establishment::{Establishment, EstablishmentCommand, EstablishmentError};

use crate::store::{CommandBus, CommandContext, ExecError, ExecOptions};

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error(transparent)]
    Command(#[from] ExecError<EstablishmentError>),
}

/// The membership use cases (the caller checked the acting user is an admin of the
/// establishment).
pub struct Members {
    pub bus: Arc<CommandBus>,
}

impl Members {
    /// Gives a member another role.
    pub async fn change_role(
        &self,
        ctx: &CommandContext,
        establishment_id: &str,
        user_id: &str,
        role: Role,
    ) -> Result<(), MemberError> {
        self.run(
            ctx,
            establishment_id,
            EstablishmentCommand::ChangeMemberRole {
                user_id: user_id.to_string(),
                role,
            },
        )
        .await
    }

    /// Removes a member from the establishment.
    pub async fn remove(
        &self,
        ctx: &CommandContext,
        establishment_id: &str,
        user_id: &str,
    ) -> Result<(), MemberError> {
        self.run(
            ctx,
            establishment_id,
            EstablishmentCommand::RemoveMember {
                user_id: user_id.to_string(),
            },
        )
        .await
    }

    async fn run(
        &self,
        ctx: &CommandContext,
        establishment_id: &str,
        command: EstablishmentCommand,
    ) -> Result<(), MemberError> {
        let outcome = self
            .bus
            .execute::<Establishment>(establishment_id, command, ctx, ExecOptions::default())
            .await?;
        self.bus.visible(&outcome).await;
        Ok(())
    }
}
