//! Workers that carry call decisions out at Twilio, outside any transaction, and record the
//! outcome as a command: placing queued outbound calls, handing live calls to a human, and
//! reaping calls that never got a terminal callback.

use std::time::Duration;

use aggregates::call::{Call, CallCommand, CallError, CallSid, MachineDetection};
use chrono::Utc;
use sqlx::Row;
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::store::{CommandContext, ExecError, ExecOptions, Outcome};
use crate::twilio::client::{Answer, CallUpdate, CreateCall, TwilioError};
use crate::twilio::twiml::{self, Connect, Dial};

/// Queue of outbound calls to place; a periodic scan picks up what a crash left behind.
#[derive(Clone)]
pub struct Placer {
    tx: mpsc::UnboundedSender<String>,
}

impl Placer {
    pub fn channel() -> (Placer, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Placer { tx }, rx)
    }

    pub fn enqueue(&self, call_id: &str) {
        let _ = self.tx.send(call_id.to_string());
    }
}

fn ctx(worker: &str, call_id: &str) -> CommandContext {
    let mut c = CommandContext::system(worker);
    c.correlation_id = call_id.to_string();
    c
}

/// Places queued outbound calls: on request, and every few seconds for calls still queued.
pub async fn run_placer(state: AppState, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut scan = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            Some(call_id) = rx.recv() => {
                let state = state.clone();
                tokio::spawn(async move { place(&state, &call_id).await });
            }
            _ = scan.tick() => {
                let stuck: Vec<String> = match sqlx::query_scalar(
                    "SELECT id FROM rm_calls WHERE direction = 'outbound' AND active
                       AND placement->>'status' = 'queued' AND updated_at < now() - interval '3 seconds'
                     ORDER BY started_at LIMIT 100",
                )
                .fetch_all(&state.pool)
                .await {
                    Ok(ids) => ids,
                    Err(e) => { tracing::warn!(error = %e, "placement scan failed"); continue; }
                };
                for id in stuck {
                    place(&state, &id).await;
                }
            }
        }
    }
}

/// Dials one queued call at most once: `RequestPlacement` is refused the second time, so two
/// workers (or a retry after a crash) never dial twice.
pub async fn place(state: &AppState, call_id: &str) {
    let Some(client) = state.twilio.clone() else {
        tracing::error!(call_id, "cannot place a call: Twilio is not configured");
        return;
    };
    let c = ctx("placer", call_id);
    let row = match sqlx::query(
        "SELECT c.establishment_id, c.from_party, c.to_party, c.agent_id, c.agent_version_id,
                c.placement, t.max_call_duration_seconds, r.media_stream_url, r.id AS runtime_id,
                a.active_version_id
         FROM rm_calls c
         LEFT JOIN rm_telephony t ON t.establishment_id = c.establishment_id
         LEFT JOIN rm_runtimes r ON r.establishment_id = c.establishment_id
         LEFT JOIN rm_agents a ON a.id = c.agent_id
         WHERE c.id = $1",
    )
    .bind(call_id)
    .fetch_optional(&state.pool)
    .await
    {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(call_id, error = %e, "cannot read the call to place");
            return;
        }
    };
    match state
        .bus
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
    let establishment_id: String = row.get("establishment_id");
    let placement: Option<serde_json::Value> = row.get("placement");
    let machine_detection = placement
        .as_ref()
        .and_then(|p| p.get("machine_detection"))
        .and_then(|m| m.as_str())
        .and_then(|m| m.parse::<MachineDetection>().ok());
    let time_limit = placement
        .as_ref()
        .and_then(|p| p.get("time_limit_seconds"))
        .and_then(|t| t.as_u64())
        .map(|t| t as u32)
        .or_else(|| {
            row.get::<Option<i32>, _>("max_call_duration_seconds")
                .map(|t| t as u32)
        });
    let Some(stream_url) = row.get::<Option<String>, _>("media_stream_url") else {
        record_failure(
            state,
            call_id,
            None,
            None,
            "the establishment's runtime has no media-stream URL",
        )
        .await;
        return;
    };
    let agent_id: Option<String> = row.get("agent_id");
    let version: Option<String> = row
        .get::<Option<String>, _>("agent_version_id")
        .or_else(|| row.get("active_version_id"));
    let base = state.config.public_base_url();
    let stream = twiml::stream(Connect {
        action: Some(format!(
            "{base}/webhooks/twilio/connect-action?call_id={call_id}"
        )),
        stream_url,
        stream_name: None,
        status_callback: None,
        parameters: vec![
            ("call_id".into(), call_id.into()),
            ("establishment_id".into(), establishment_id.clone()),
            ("agent_id".into(), agent_id.unwrap_or_default()),
            ("agent_version_id".into(), version.unwrap_or_default()),
            (
                "runtime_id".into(),
                row.get::<Option<String>, _>("runtime_id")
                    .unwrap_or_default(),
            ),
            ("direction".into(), "outbound".into()),
            ("from".into(), row.get::<String, _>("from_party")),
            ("to".into(), row.get::<String, _>("to_party")),
        ],
    });
    let mut request = CreateCall::new(
        row.get::<String, _>("to_party"),
        row.get::<String, _>("from_party"),
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
                state.calls.remember(sid.as_str(), call_id);
                let r = state
                    .bus
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
                record_failure(
                    state,
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
            record_failure(state, call_id, e.http_status(), e.code(), &e.message()).await;
        }
    }
}

async fn record_failure(
    state: &AppState,
    call_id: &str,
    http_status: Option<u16>,
    code: Option<u32>,
    message: &str,
) {
    let r = state
        .bus
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

/// Updates the live call with a `<Dial>` to the handoff number and records the outcome.
pub async fn hand_off(
    state: AppState,
    call_id: String,
    sid: CallSid,
    to: String,
    caller_id: Option<String>,
) {
    let c = ctx("handoff", &call_id);
    let Some(client) = state.twilio.clone() else {
        record_handoff_failure(&state, &call_id, None, "Twilio is not configured").await;
        return;
    };
    let mut dial = Dial::number(&to);
    dial.caller_id = caller_id;
    match client
        .update_call(sid.as_str(), &CallUpdate::Twiml(twiml::handoff(dial)))
        .await
    {
        Ok(_) => {
            let r = state
                .bus
                .execute::<Call>(
                    &call_id,
                    CallCommand::RecordHandoffStarted { at: Utc::now() },
                    &c,
                    ExecOptions::default(),
                )
                .await;
            if let Err(e) = r {
                tracing::warn!(call_id, error = %e, "handoff start not recorded");
            }
        }
        Err(e) => record_handoff_failure(&state, &call_id, e.code(), &e.message()).await,
    }
}

async fn record_handoff_failure(state: &AppState, call_id: &str, code: Option<u32>, message: &str) {
    let r = state
        .bus
        .execute::<Call>(
            call_id,
            CallCommand::RecordHandoffFailure {
                code,
                message: message.chars().take(1000).collect(),
                at: Utc::now(),
            },
            &ctx("handoff", call_id),
            ExecOptions::default(),
        )
        .await;
    if let Err(e) = r {
        tracing::warn!(call_id, error = %e, "handoff failure not recorded");
    }
}

/// Ends calls still open `max_call_duration_seconds + grace` after they started: asks Twilio to
/// complete them when they may still be live, then records why.
pub async fn run_reaper(state: AppState, every: Duration, grace_seconds: u32) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = reap_once(&state, grace_seconds, Utc::now()).await {
            tracing::warn!(error = %format!("{e:#}"), "reaper pass failed");
        }
    }
}

/// One reaper pass as of `now`; returns how many calls it ended.
pub async fn reap_once(
    state: &AppState,
    grace_seconds: u32,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<usize> {
    let rows = sqlx::query(
        "SELECT c.id, coalesce(t.max_call_duration_seconds, 3600) AS max_seconds
         FROM rm_calls c LEFT JOIN rm_telephony t ON t.establishment_id = c.establishment_id
         WHERE c.active
           AND c.started_at < $2 - make_interval(secs => coalesce(t.max_call_duration_seconds, 3600) + $1)
         ORDER BY c.started_at LIMIT 500",
    )
    .bind(grace_seconds as f64)
    .bind(now)
    .fetch_all(&state.pool)
    .await?;
    let mut reaped = 0;
    for r in rows {
        let call_id: String = r.get("id");
        let max: i32 = r.get("max_seconds");
        let (call, _) = state.bus.load::<Call>(&call_id).await?;
        if call.may_be_live_at_provider() {
            if let (Some(client), Some(sid)) = (state.twilio.clone(), call.call_sid.clone()) {
                if let Err(e) = client
                    .update_call(sid.as_str(), &CallUpdate::Complete)
                    .await
                {
                    tracing::info!(call_id, error = %e, "completing an overdue call at Twilio failed (it may be over already)");
                }
            }
        }
        match state
            .bus
            .execute::<Call>(
                &call_id,
                CallCommand::Reap {
                    now,
                    max_duration_seconds: max.max(0) as u32,
                    grace_seconds,
                    reason: format!(
                        "no terminal status {grace_seconds} s after the {max} s call-duration limit"
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
