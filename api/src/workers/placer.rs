//! The placement worker: dials queued outbound calls at Twilio, outside any transaction, and
//! records Twilio's answer on the call. Woken by the outbound use case after the call is
//! queued; a scan every few seconds picks up what a crash or a lost wake-up left queued.
//! `RequestPlacement` is refused the second time, so two workers (or a retry after a crash)
//! never dial one call twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aggregates::call::{Call, CallCommand, CallSid, MachineDetection};
use chrono::Utc;
use parking_lot::Mutex;
use sqlx::PgPool;

use crate::adapters::twilio::client::{Answer, CreateCall, TwilioCalls, TwilioError};
use crate::adapters::twilio::twiml::{self, Connect};
use crate::application::call_streams::CallStreams;
use crate::background::{Background, WorkQueue, WorkReceiver};
use crate::store::{CommandContext, ExecError, ExecOptions, Outcome};

/// The queue the outbound use case (and the campaign dialer) feed.
pub type PlacementQueue = WorkQueue<String>;

/// How long a queued call must sit unchanged before the scan takes it.
const QUIET_SECONDS: f64 = 3.0;
const SCAN_EVERY: Duration = Duration::from_secs(5);

pub struct Placer {
    pub streams: Arc<CallStreams>,
    pub pool: PgPool,
    pub twilio: Option<Arc<dyn TwilioCalls>>,
    pub public_base_url: String,
    pub background: Background,
    /// Calls being placed by this process right now.
    pub placing: Mutex<HashSet<String>>,
    /// Held until the first scan after start is done, so waiting for quiet (`App::settle`)
    /// includes what a crash left queued.
    pub startup: Mutex<Option<crate::background::Job>>,
}

pub(crate) fn ctx(worker: &str, call_id: &str) -> CommandContext {
    let mut c = CommandContext::system(worker);
    c.correlation_id = call_id.to_string();
    c
}

impl Placer {
    /// Places queued calls: on request, and every few seconds for calls still queued.
    pub async fn run(self: Arc<Self>, queue: WorkReceiver<String>) {
        let mut queue = queue.lock().await;
        // Work in flight belongs to this loop: when the worker stops (or the process dies),
        // it stops too, and the rescan of the next start picks it up.
        let mut tasks = tokio::task::JoinSet::new();
        let mut scan = tokio::time::interval(SCAN_EVERY);
        loop {
            tokio::select! {
                Some((call_id, job)) = queue.recv() => {
                    let me = self.clone();
                    tasks.spawn(async move {
                        me.place(&call_id).await;
                        drop(job);
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = scan.tick() => {
                    let stuck = match projections::calls::queries::queued_for_placement(&self.pool, QUIET_SECONDS, 100).await {
                        Ok(ids) => ids,
                        Err(e) => { tracing::warn!(error = %e, "placement scan failed"); continue; }
                    };
                    for id in stuck {
                        let _job = self.background.job();
                        self.place(&id).await;
                    }
                    self.startup.lock().take();
                }
            }
        }
    }

    /// Dials one queued call at most once.
    pub async fn place(&self, call_id: &str) {
        if !self.placing.lock().insert(call_id.to_string()) {
            return;
        }
        self.place_once(call_id).await;
        self.placing.lock().remove(call_id);
    }

    async fn place_once(&self, call_id: &str) {
        let Some(client) = self.twilio.clone() else {
            tracing::error!(call_id, "cannot place a call: Twilio is not configured");
            return;
        };
        let bus = self.streams.bus();
        let c = ctx("placer", call_id);
        let facts = match projections::calls::queries::placement_facts(&self.pool, call_id).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(call_id, error = %e, "cannot read the call to place");
                return;
            }
        };
        match bus
            .execute::<Call>(
                call_id,
                CallCommand::RequestPlacement { at: Utc::now() },
                &c,
                ExecOptions::default(),
            )
            .await
        {
            Ok(Outcome::Applied { .. }) => {}
            Ok(_) | Err(ExecError::Domain(_)) => return,
            Err(e) => {
                tracing::warn!(call_id, error = %e, "cannot request placement");
                return;
            }
        }
        let placement = facts.placement.as_ref();
        let machine_detection = placement
            .and_then(|p| p.get("machine_detection"))
            .and_then(|m| m.as_str())
            .and_then(|m| m.parse::<MachineDetection>().ok());
        let time_limit = placement
            .and_then(|p| p.get("time_limit_seconds"))
            .and_then(|t| t.as_u64())
            .map(|t| t as u32)
            .or_else(|| facts.max_call_duration_seconds.map(|t| t as u32));
        let Some(stream_url) = facts.media_stream_url.clone() else {
            self.record_failure(
                call_id,
                None,
                None,
                "the establishment's runtime has no media-stream URL",
            )
            .await;
            return;
        };
        let version = facts
            .agent_version_id
            .clone()
            .or_else(|| facts.active_version_id.clone());
        let base = &self.public_base_url;
        let stream = twiml::stream(Connect {
            action: Some(format!(
                "{base}/webhooks/twilio/connect-action?call_id={call_id}"
            )),
            stream_url,
            stream_name: None,
            status_callback: None,
            parameters: vec![
                ("call_id".into(), call_id.into()),
                ("establishment_id".into(), facts.establishment_id.clone()),
                (
                    "agent_id".into(),
                    facts.agent_id.clone().unwrap_or_default(),
                ),
                ("agent_version_id".into(), version.unwrap_or_default()),
                (
                    "runtime_id".into(),
                    facts.runtime_id.clone().unwrap_or_default(),
                ),
                ("direction".into(), "outbound".into()),
                ("from".into(), facts.from_party.clone()),
                ("to".into(), facts.to_party.clone()),
            ],
        });
        let mut request = CreateCall::new(
            facts.to_party.clone(),
            facts.from_party.clone(),
            Answer::Twiml(stream),
        );
        request.status_callback = Some(format!(
            "{base}/webhooks/twilio/call-status?call_id={call_id}"
        ));
        request.time_limit = time_limit;
        request.machine_detection = machine_detection;
        if machine_detection.is_some() {
            request.async_amd_status_callback = Some(format!(
                "{base}/webhooks/twilio/amd-callback?call_id={call_id}"
            ));
        }
        match client.create_call(&request).await {
            Ok(resource) => match resource.sid.parse::<CallSid>() {
                Ok(sid) => {
                    self.streams.remember(sid.as_str(), call_id);
                    let r = bus
                        .execute::<Call>(
                            call_id,
                            CallCommand::RecordPlacement {
                                call_sid: sid,
                                at: Utc::now(),
                            },
                            &c,
                            ExecOptions::default(),
                        )
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(call_id, error = %e, "placement answer not recorded");
                    }
                    metrics::counter!("calls_placed_total").increment(1);
                }
                Err(_) => {
                    self.record_failure(
                        call_id,
                        Some(201),
                        None,
                        &format!("Twilio answered an unexpected sid {:?}", resource.sid),
                    )
                    .await
                }
            },
            // The call may exist at Twilio: its callbacks (by call_id) or the reaper resolve it.
            Err(e @ TwilioError::Timeout) => {
                tracing::warn!(call_id, error = %e, "placement timed out; waiting for callbacks");
            }
            Err(e) => {
                metrics::counter!("calls_placement_failed_total").increment(1);
                self.record_failure(call_id, e.http_status(), e.code(), &e.message())
                    .await;
            }
        }
    }

    async fn record_failure(
        &self,
        call_id: &str,
        http_status: Option<u16>,
        code: Option<u32>,
        message: &str,
    ) {
        let r = self
            .streams
            .bus()
            .execute::<Call>(
                call_id,
                CallCommand::RecordPlacementFailure {
                    http_status,
                    code,
                    message: message.chars().take(1000).collect(),
                    at: Utc::now(),
                },
                &ctx("placer", call_id),
                ExecOptions::default(),
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(call_id, error = %e, "placement failure not recorded");
        }
    }
}
