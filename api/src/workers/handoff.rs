//! The handoff worker: transfers a call whose handoff was requested to the establishment's
//! handoff number (a live-call update with `<Dial>`), outside any transaction, and records the
//! outcome. Fed by the handoff use case after the request commits; it also rescans the calls
//! whose handoff is still `requested` on start and every few seconds, so a crash between the
//! request and the transfer completes the handoff on restart. Repeating the same update is
//! harmless at Twilio.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aggregates::call::{Call, CallCommand, Direction, Handoff};
use chrono::Utc;
use parking_lot::Mutex;
use sqlx::PgPool;

use super::placer::ctx;
use crate::adapters::twilio::client::{CallUpdate, TwilioCalls};
use crate::adapters::twilio::twiml::{self, Dial};
use crate::background::{Background, WorkQueue, WorkReceiver};
use crate::store::{CommandBus, ExecOptions};

pub type HandoffQueue = WorkQueue<String>;

const SCAN_EVERY: Duration = Duration::from_secs(5);

pub struct HandoffWorker {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
    pub twilio: Option<Arc<dyn TwilioCalls>>,
    pub background: Background,
    pub running: Mutex<HashSet<String>>,
    /// Held until the first scan after start is done, so waiting for quiet (`App::settle`)
    /// includes the handoffs a crash left requested.
    pub startup: Mutex<Option<crate::background::Job>>,
}

impl HandoffWorker {
    pub async fn run(self: Arc<Self>, queue: WorkReceiver<String>) {
        let mut queue = queue.lock().await;
        // Work in flight belongs to this loop: when the worker stops (or the process dies),
        // it stops too, and the rescan of the next start picks it up.
        let mut tasks = tokio::task::JoinSet::new();
        // The first tick fires at once: the rescan on start.
        let mut scan = tokio::time::interval(SCAN_EVERY);
        loop {
            tokio::select! {
                Some((call_id, job)) = queue.recv() => {
                    let me = self.clone();
                    tasks.spawn(async move {
                        me.hand_off(&call_id).await;
                        drop(job);
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = scan.tick() => {
                    let pending = match projections::calls::queries::handoffs_pending(&self.pool, 100).await {
                        Ok(ids) => ids,
                        Err(e) => { tracing::warn!(error = %e, "handoff scan failed"); continue; }
                    };
                    for id in pending {
                        let _job = self.background.job();
                        self.hand_off(&id).await;
                    }
                    self.startup.lock().take();
                }
            }
        }
    }

    /// Carries out the call's requested handoff, if it still is requested.
    pub async fn hand_off(&self, call_id: &str) {
        if !self.running.lock().insert(call_id.to_string()) {
            return;
        }
        if let Err(e) = self.transfer(call_id).await {
            tracing::warn!(call_id, error = %format!("{e:#}"), "handoff not carried out; the next scan retries");
        }
        self.running.lock().remove(call_id);
    }

    async fn transfer(&self, call_id: &str) -> anyhow::Result<()> {
        let (call, _) = self.bus.load::<Call>(call_id).await?;
        let Handoff::Requested { to } = &call.handoff else {
            return Ok(());
        };
        let Some(sid) = call.call_sid.clone() else {
            return Ok(());
        };
        let Some(client) = self.twilio.clone() else {
            return self
                .record(
                    call_id,
                    CallCommand::RecordHandoffFailure {
                        code: None,
                        message: "Twilio is not configured".into(),
                        at: Utc::now(),
                    },
                )
                .await;
        };
        // Caller id: the number on our side of the call.
        let parties = projections::calls::queries::details(&self.pool, call_id).await?;
        let mut dial = Dial::number(to.as_str());
        dial.caller_id = parties.map(|p| match call.direction {
            Some(Direction::Outbound) => p.call.from_party,
            _ => p.call.to_party,
        });
        let command = match client
            .update_call(sid.as_str(), &CallUpdate::Twiml(twiml::handoff(dial)))
            .await
        {
            Ok(_) => CallCommand::RecordHandoffStarted { at: Utc::now() },
            Err(e) => CallCommand::RecordHandoffFailure {
                code: e.code(),
                message: e.message().chars().take(1000).collect(),
                at: Utc::now(),
            },
        };
        self.record(call_id, command).await
    }

    async fn record(&self, call_id: &str, command: CallCommand) -> anyhow::Result<()> {
        self.bus
            .execute::<Call>(
                call_id,
                command,
                &ctx("handoff", call_id),
                ExecOptions::default(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("handoff outcome not recorded: {e}"))?;
        Ok(())
    }
}
