//! Use cases of establishments (the tenants): creating one (its creator becomes its admin)
//! and changing its name, time zone or locale. Both answer the establishment as read back
//! after the write.

use std::sync::Arc;

use aggregates::common::{Locale, Timezone};
use aggregates::establishment::{Establishment, EstablishmentCommand, EstablishmentError};
use projections::identity::{self, EstablishmentRow};
use sqlx::PgPool;

use super::{unexpected_from, Unexpected};
use crate::store::{CommandBus, CommandContext, ExecError, ExecOptions};

/// A new establishment, parsed at the boundary.
#[derive(Debug, Clone)]
pub struct NewEstablishment {
    pub name: String,
    pub timezone: Timezone,
    pub locale: Locale,
}

/// What to change (`None`: keep).
#[derive(Debug, Clone, Default)]
pub struct EstablishmentChanges {
    pub name: Option<String>,
    pub timezone: Option<Timezone>,
    pub locale: Option<Locale>,
}

#[derive(Debug, thiserror::Error)]
pub enum EstablishmentsError {
    #[error("establishment not found")]
    NotFound,
    #[error(transparent)]
    Command(#[from] ExecError<EstablishmentError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

unexpected_from!(EstablishmentsError);

/// The establishment use cases.
pub struct Establishments {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
}

impl Establishments {
    /// Creates an establishment whose admin is the acting user (the caller checked they may
    /// create one).
    pub async fn create(
        &self,
        ctx: &CommandContext,
        new: NewEstablishment,
    ) -> Result<EstablishmentRow, EstablishmentsError> {
        let id = crate::ids::new_id("est");
        let ctx = ctx.clone().in_establishment(&id);
        let outcome = self
            .bus
            .execute::<Establishment>(
                &id,
                EstablishmentCommand::Create {
                    establishment_id: id.clone(),
                    name: new.name,
                    timezone: new.timezone,
                    locale: new.locale,
                    created_by: ctx.actor.id().to_string(),
                },
                &ctx,
                ExecOptions::default().fresh(),
            )
            .await?;
        self.bus.visible(&outcome).await;
        self.read(&id).await
    }

    /// Changes an establishment (the caller checked the acting user is one of its admins).
    pub async fn update(
        &self,
        ctx: &CommandContext,
        id: &str,
        changes: EstablishmentChanges,
    ) -> Result<EstablishmentRow, EstablishmentsError> {
        let outcome = self
            .bus
            .execute::<Establishment>(
                id,
                EstablishmentCommand::Update {
                    name: changes.name,
                    timezone: changes.timezone,
                    locale: changes.locale,
                },
                ctx,
                ExecOptions::default(),
            )
            .await?;
        self.bus.visible(&outcome).await;
        self.read(id).await
    }

    async fn read(&self, id: &str) -> Result<EstablishmentRow, EstablishmentsError> {
        identity::establishment(&self.pool, id)
            .await?
            .ok_or(EstablishmentsError::NotFound)
    }
}
