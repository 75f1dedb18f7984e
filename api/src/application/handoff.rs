//! Use case: an operator hands a live call to a human (Appendix A.5). The Call aggregate
//! decides whether the call can be handed off now; the request is recorded on the call and the
//! handoff worker carries the transfer out at Twilio (it also rescans on start, so a crash
//! between the request and the transfer never strands the call in `handoff_initiated`).

use std::sync::Arc;

use aggregates::call::{Call, CallCommand, CallError, Requester};
use aggregates::common::E164;
use chrono::Utc;
use sqlx::PgPool;

use super::{Invalid, Unexpected};
use crate::background::WorkQueue;
use crate::store::{Actor, CommandBus, CommandContext, ExecError, ExecOptions};

/// Longest `reason` kept.
pub const MAX_REASON: usize = 200;

#[derive(Debug, Clone)]
pub struct HandoffRequest {
    pub user_id: String,
    pub request_id: String,
    pub call_id: String,
    /// The call's establishment (the caller checked the user may act there).
    pub establishment_id: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the establishment has no handoff number configured")]
    NoHandoffNumber,
    #[error(transparent)]
    Command(#[from] ExecError<CallError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

/// The handoff use case.
pub struct Handoffs {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
    pub queue: WorkQueue<String>,
}

impl Handoffs {
    /// Records the handoff request and queues the transfer; answers the number it goes to.
    pub async fn request(&self, req: HandoffRequest) -> Result<E164, HandoffError> {
        let reason = aggregates::common::bounded_text("reason", &req.reason, MAX_REASON)
            .map_err(Invalid::from)?;
        let to = projections::routing::handoff_number(&self.pool, &req.establishment_id)
            .await
            .map_err(Unexpected::from)?
            .and_then(|h| h.parse::<E164>().ok())
            .ok_or(HandoffError::NoHandoffNumber)?;
        let ctx = CommandContext::from_request(Actor::User(req.user_id.clone()), &req.request_id)
            .in_establishment(&req.establishment_id);
        let outcome = self
            .bus
            .execute::<Call>(
                &req.call_id,
                CallCommand::RequestHandoff {
                    reason,
                    to: to.clone(),
                    requested_by: Requester::User {
                        user_id: req.user_id.clone(),
                    },
                    at: Utc::now(),
                },
                &ctx,
                ExecOptions::default(),
            )
            .await?;
        self.bus.visible(&outcome).await;
        if outcome.commit().is_some() {
            self.queue.enqueue(req.call_id.clone());
        }
        Ok(to)
    }
}
