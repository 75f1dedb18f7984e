//! The campaign dialer: a worker driven by a tick (`DIALER_TICK_MS`) and by wake-ups, with an
//! injectable clock ([`DialerClock`]) so tests move time. Only one process dials at a time
//! (the `dialer` PostgreSQL lease). Each tick judges every lead of every running campaign
//! with the pure rules (`application::campaigns::evaluate`), then dials the eligible ones
//! through the outbound-call use case, which queues each attempt on a call stream under the
//! idempotency key `campaign:{campaign}:{lead}:{attempt}`; the placement worker dials Twilio.
//!
//! - Pacing is smooth: dials are `60/calls_per_minute` seconds apart on the campaign clock
//!   (never a burst after idling), and every campaign shares the account's `TWILIO_MAX_CPS`.
//! - Concurrency is read from call state (active calls of the campaign and of the
//!   establishment), never counted in memory, so a crash leaks no slot.
//! - Safety: a campaign whose recent attempts mostly fail, whose runtime is down or whose
//!   abandonment rate over 30 days passes the ceiling is paused with the reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aggregates::call::MachineDetection;
use aggregates::campaign::rules::{self, AttemptOutcome, Verdict};
use aggregates::campaign::{Campaign, CampaignCommand};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use projections::campaigns::CampaignRow;
use serde_json::{json, Map};
use sqlx::PgPool;

use crate::application::campaigns::{evaluate, outcome_of, spec_of};
use crate::application::outbound_call::{
    CampaignDial, OutboundCalls, OutboundError, OutboundRequest,
};
use crate::application::Unexpected;
use crate::background::{Background, Lease, WorkQueue, WorkReceiver};
use crate::config::dialer::DialerConfig;
use crate::store::{CommandBus, CommandContext, ExecOptions};

/// The dialer's clock: the system clock unless a test set it.
#[derive(Default)]
pub struct DialerClock {
    set: Mutex<Option<DateTime<Utc>>>,
}

impl DialerClock {
    pub fn now(&self) -> DateTime<Utc> {
        self.set.lock().unwrap_or_else(Utc::now)
    }
    /// Freezes the clock at `t` (tests).
    pub fn set(&self, t: DateTime<Utc>) {
        *self.set.lock() = Some(t);
    }
}

pub struct Dialer {
    pub pool: PgPool,
    pub bus: Arc<CommandBus>,
    pub outbound: Arc<OutboundCalls>,
    pub config: DialerConfig,
    pub clock: DialerClock,
    pub background: Background,
    pub wake: WorkQueue<()>,
    /// The instant of each campaign's last dial (seeded from its calls after a restart).
    last_dial: Mutex<HashMap<String, DateTime<Utc>>>,
    /// The instant of the account's last dial (TWILIO_MAX_CPS).
    account_last: Mutex<Option<DateTime<Utc>>>,
    ticking: tokio::sync::Mutex<()>,
}

const THIRTY_DAYS: chrono::TimeDelta = chrono::TimeDelta::days(30);

impl Dialer {
    pub fn new(
        pool: PgPool,
        bus: Arc<CommandBus>,
        outbound: Arc<OutboundCalls>,
        config: DialerConfig,
        background: Background,
        wake: WorkQueue<()>,
    ) -> Dialer {
        Dialer {
            pool,
            bus,
            outbound,
            config,
            clock: DialerClock::default(),
            background,
            wake,
            last_dial: Default::default(),
            account_last: Default::default(),
            ticking: Default::default(),
        }
    }

    /// Sets the clock and runs a tick (counted as background work, so `settle` waits for it).
    pub fn advance_to(&self, t: DateTime<Utc>) {
        self.clock.set(t);
        self.wake.enqueue(());
    }

    /// Leads (when it holds the lease) and ticks until the lease is lost.
    pub async fn run(self: Arc<Self>, queue: WorkReceiver<()>) {
        let mut lease = Lease::acquire(&self.pool, "dialer").await;
        let mut queue = queue.lock().await;
        let mut every =
            tokio::time::interval(Duration::from_millis(self.config.dialer_tick_ms.max(10)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = lease.lost();
        tokio::pin!(lost);
        loop {
            tokio::select! {
                _ = &mut lost => return,
                Some(((), job)) = queue.recv() => {
                    self.tick().await;
                    drop(job);
                }
                _ = every.tick() => {
                    let _job = self.background.job();
                    self.tick().await;
                }
            }
        }
    }

    /// One pass over every running campaign at the clock's instant.
    pub async fn tick(&self) {
        let _one = self.ticking.lock().await;
        let now = self.clock.now();
        let running = match projections::campaigns::running(&self.pool).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "dialer cannot list campaigns");
                return;
            }
        };
        for row in running {
            if let Err(e) = self.campaign(&row, now).await {
                tracing::warn!(campaign_id = row.id, error = %e, "dialer pass failed");
            }
        }
    }

    async fn pause(&self, row: &CampaignRow, reason: String, now: DateTime<Utc>) {
        tracing::warn!(campaign_id = row.id, reason, "pausing campaign");
        metrics::counter!("campaigns_auto_paused_total").increment(1);
        let ctx = CommandContext::system("dialer").in_establishment(&row.establishment_id);
        let r = self
            .bus
            .execute::<Campaign>(
                &row.id,
                CampaignCommand::Pause {
                    reason,
                    by: "dialer".into(),
                    at: now,
                },
                &ctx,
                ExecOptions::default(),
            )
            .await;
        match r {
            Ok(o) => self.bus.visible(&o).await,
            Err(e) => tracing::warn!(campaign_id = row.id, error = %e, "cannot pause"),
        }
    }

    async fn campaign(&self, row: &CampaignRow, now: DateTime<Utc>) -> Result<(), Unexpected> {
        let spec = spec_of(row)?;
        let eval = evaluate(&self.pool, &self.bus, row, &spec, now).await?;
        let c = &self.config;

        // Safety first: the circuit breaker and the abandonment ceiling.
        let recent: Vec<AttemptOutcome> = eval
            .calls
            .iter()
            .rev()
            .map(outcome_of)
            .filter(|o| *o != AttemptOutcome::InFlight)
            .take(c.campaign_breaker_window)
            .collect();
        if rules::breaker_trips(
            &recent,
            c.campaign_breaker_min_calls,
            c.campaign_breaker_threshold,
        ) {
            let failed = recent
                .iter()
                .filter(|o| **o == AttemptOutcome::Failed)
                .count();
            self.pause(
                row,
                format!(
                    "circuit_breaker: {failed} of the last {} attempts failed",
                    recent.len()
                ),
                now,
            )
            .await;
            return Ok(());
        }
        let month: Vec<_> = eval
            .calls
            .iter()
            .filter(|c| c.started_at >= now - THIRTY_DAYS && outcome_of(c) == AttemptOutcome::Human)
            .collect();
        let abandoned = month.iter().filter(|c| !c.runtime_started).count() as u64;
        let rate = rules::abandonment_rate(month.len() as u64, abandoned);
        if rate > c.campaign_abandonment_ceiling {
            self.pause(
                row,
                format!(
                    "abandonment_rate: {abandoned} of {} answered calls abandoned ({:.1}% > {:.1}%)",
                    month.len(),
                    rate * 100.0,
                    c.campaign_abandonment_ceiling * 100.0
                ),
                now,
            )
            .await;
            return Ok(());
        }

        let eligible: Vec<(&str, &str, u32)> = eval
            .judged
            .iter()
            .filter_map(|j| match j.verdict {
                Verdict::Now { attempt } => {
                    Some((j.lead.id.as_str(), j.lead.phone_e164.as_str(), attempt))
                }
                _ => None,
            })
            .collect();
        let pending = eval
            .judged
            .iter()
            .any(|j| !matches!(j.verdict, Verdict::Never { .. }));
        if !pending {
            let ctx = CommandContext::system("dialer").in_establishment(&row.establishment_id);
            if let Ok(o) = self
                .bus
                .execute::<Campaign>(
                    &row.id,
                    CampaignCommand::Complete { at: now },
                    &ctx,
                    ExecOptions::default(),
                )
                .await
            {
                self.bus.visible(&o).await;
            }
            return Ok(());
        }
        if eligible.is_empty() {
            return Ok(());
        }

        // Capacity, from call state.
        let in_flight = eval.calls.iter().filter(|c| c.active).count() as i64;
        let est_active =
            projections::campaigns::active_calls_of(&self.pool, &row.establishment_id).await?;
        let est_room = i64::from(c.establishment_max_concurrent_calls)
            - i64::from(c.dialer_inbound_reserve)
            - est_active;
        let room = (i64::from(spec.max_concurrent_calls) - in_flight).min(est_room);
        if room <= 0 {
            return Ok(());
        }

        // Pacing: evenly spaced instants on the campaign clock.
        let last = {
            let seeded = eval.calls.iter().map(|c| c.started_at).max();
            let mut map = self.last_dial.lock();
            let l = map.get(&row.id).copied().max(seeded);
            if let Some(l) = l {
                map.insert(row.id.clone(), l);
            }
            l
        };
        // At most one second's worth of calls at once (a tick is about a second).
        let per_tick = spec.calls_per_minute.div_ceil(60).max(1) as usize;
        let due = rules::due_dials(last, now, spec.calls_per_minute, per_tick);
        let account_gap =
            chrono::TimeDelta::microseconds((1_000_000.0 / c.twilio_max_cps.max(0.001)) as i64);
        for (instant, (lead_id, phone, attempt)) in
            due.into_iter().zip(eligible).take(room as usize)
        {
            let slot = match *self.account_last.lock() {
                Some(a) if a + account_gap > instant => a + account_gap,
                _ => instant,
            };
            if slot > now {
                break;
            }
            let Ok(to) = phone.parse() else { continue };
            let dial = CampaignDial {
                campaign_id: row.id.clone(),
                lead_id: lead_id.to_string(),
                attempt,
            };
            let mut metadata = Map::new();
            metadata.insert("campaign_id".into(), json!(row.id));
            metadata.insert("lead_id".into(), json!(lead_id));
            metadata.insert("attempt".into(), json!(attempt));
            let r = self
                .outbound
                .request(OutboundRequest {
                    user_id: "dialer".into(),
                    request_id: crate::ids::new_id("req"),
                    establishment_id: row.establishment_id.clone(),
                    agent_id: spec.agent_id.clone(),
                    to,
                    from: None,
                    pinned_version: Some(spec.agent_version_id.clone()),
                    metadata,
                    machine_detection: Some(MachineDetection::Enable),
                    idempotency_key: None,
                    campaign: Some(dial),
                    at: Some(slot),
                })
                .await;
            match r {
                Ok((_, replayed)) => {
                    if !replayed {
                        metrics::counter!("campaign_calls_dialled_total").increment(1);
                    }
                    self.last_dial.lock().insert(row.id.clone(), slot);
                    *self.account_last.lock() = Some(slot);
                }
                Err(
                    e @ (OutboundError::Refused(_)
                    | OutboundError::RuntimeUnavailable(_)
                    | OutboundError::TwilioNotConfigured),
                ) => {
                    self.pause(row, format!("cannot dial: {e}"), now).await;
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(campaign_id = row.id, lead_id, error = %e, "dial failed");
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
