//! The reaper: ends calls still open `max_call_duration_seconds + grace` after they started
//! (no terminal callback ever came): asks Twilio to complete them when they may still be live,
//! then records why on the call.

use std::sync::Arc;
use std::time::Duration;

use aggregates::call::{Call, CallCommand, CallError};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::placer::ctx;
use crate::adapters::twilio::client::{CallUpdate, TwilioCalls};
use crate::store::{CommandBus, ExecError, ExecOptions, Outcome};

pub struct Reaper {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
    pub twilio: Option<Arc<dyn TwilioCalls>>,
    pub every: Duration,
    pub grace_seconds: u32,
}

impl Reaper {
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tick.tick().await;
            if let Err(e) = self.reap_once(self.grace_seconds, Utc::now()).await {
                tracing::warn!(error = %format!("{e:#}"), "reaper pass failed");
            }
        }
    }

    /// One pass as of `now` with `grace` seconds past the limit; returns how many calls it
    /// ended.
    pub async fn reap_once(&self, grace: u32, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let overdue = projections::calls::queries::overdue(&self.pool, grace, now, 500).await?;
        let mut reaped = 0;
        for c in overdue {
            let call_id = c.id;
            let max = c.max_seconds;
            let (call, _) = self.bus.load::<Call>(&call_id).await?;
            if call.may_be_live_at_provider() {
                if let (Some(client), Some(sid)) = (self.twilio.clone(), call.call_sid.clone()) {
                    if let Err(e) = client
                        .update_call(sid.as_str(), &CallUpdate::Complete)
                        .await
                    {
                        tracing::info!(call_id, error = %e, "completing an overdue call at Twilio failed (it may be over already)");
                    }
                }
            }
            match self
                .bus
                .execute::<Call>(
                    &call_id,
                    CallCommand::Reap {
                        now,
                        max_duration_seconds: max.max(0) as u32,
                        grace_seconds: grace,
                        reason: format!(
                            "no terminal status {grace} s after the {max} s call-duration limit"
                        ),
                    },
                    &ctx("reaper", &call_id),
                    ExecOptions::default(),
                )
                .await
            {
                Ok(Outcome::Applied { .. }) => {
                    reaped += 1;
                    metrics::counter!("calls_reaped_total").increment(1);
                }
                Ok(_) | Err(ExecError::Domain(CallError::NotOverdue { .. })) => {}
                Err(e) => tracing::warn!(call_id, error = %e, "reap failed"),
            }
        }
        Ok(reaped)
    }
}
