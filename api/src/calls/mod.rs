//! Calls: finding a call's stream (by id or by Twilio `CallSid`), routing inbound calls, and the
//! workers that talk to Twilio (placement, handoff, reaper). Webhooks, the REST API and runtime
//! ingestion all go through here, so every source of a call meets in one stream.

pub mod analysis;
pub mod workers;

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::call::{
    Call, CallCommand, CallError, CallSid, Fallback, RoutingDecision, RuntimeUnavailableReason,
    CALL_SID_CLAIM,
};
use aggregates::common::E164;
use aggregates::telephony::{Rejection, RouteDecision, RoutingEntry};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use sqlx::{PgPool, Row};

use crate::app::AppState;
use crate::store::{CommandContext, ExecError, ExecOptions, Outcome, StoreError};

const DIRECTORY_CAPACITY: usize = 200_000;

/// CallSid → call id. A binding never changes once claimed, so it is cached forever (bounded).
#[derive(Default)]
pub struct CallDirectory {
    cache: Mutex<HashMap<String, String>>,
}

impl CallDirectory {
    pub async fn lookup(&self, pool: &PgPool, sid: &str) -> Result<Option<String>, StoreError> {
        if let Some(id) = self.cache.lock().get(sid) {
            return Ok(Some(id.clone()));
        }
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT owner_id FROM unique_claims WHERE scope = $1 AND value = $2",
        )
        .bind(CALL_SID_CLAIM)
        .bind(sid)
        .fetch_optional(pool)
        .await?;
        if let Some(id) = &owner {
            self.remember(sid, id);
        }
        Ok(owner)
    }

    /// The call of `sid` if this process has seen it, without asking the database.
    pub fn cached(&self, sid: &str) -> Option<String> {
        self.cache.lock().get(sid).cloned()
    }

    pub fn remember(&self, sid: &str, call_id: &str) {
        let mut cache = self.cache.lock();
        if cache.len() >= DIRECTORY_CAPACITY {
            cache.clear();
        }
        cache.insert(sid.to_string(), call_id.to_string());
    }
}

/// Runs a command on the call that owns `sid`, opening a new call (id from `new_call_id`) when
/// none does. When another source opens the call for the same `CallSid` at the same moment, the
/// store refuses the second claim and the command is re-sent to the winner.
pub async fn execute_for_sid(
    state: &AppState,
    sid: &CallSid,
    command: impl FnMut(&str) -> CallCommand,
    ctx: &CommandContext,
    options: ExecOptions,
) -> Result<(String, Outcome<Call>), ExecError<CallError>> {
    execute_for_sid_with(state, sid, command, ctx, options, false).await
}

/// [`execute_for_sid`] for a `CallSid` that is almost certainly new (Twilio's incoming-call
/// webhook): the first attempt opens a call without asking the database who owns the sid. When
/// it was not new after all, the append says so (the idempotency key of a replayed webhook, or
/// the CallSid claim of a call opened by an earlier callback) and the next attempt looks it up.
pub async fn execute_for_new_sid(
    state: &AppState,
    sid: &CallSid,
    command: impl FnMut(&str) -> CallCommand,
    ctx: &CommandContext,
    options: ExecOptions,
) -> Result<(String, Outcome<Call>), ExecError<CallError>> {
    execute_for_sid_with(state, sid, command, ctx, options, true).await
}

async fn execute_for_sid_with(
    state: &AppState,
    sid: &CallSid,
    mut command: impl FnMut(&str) -> CallCommand,
    ctx: &CommandContext,
    options: ExecOptions,
    likely_new: bool,
) -> Result<(String, Outcome<Call>), ExecError<CallError>> {
    for attempt in 0..4 {
        let existing = if likely_new && attempt == 0 {
            state.calls.cached(sid.as_str())
        } else {
            state
                .calls
                .lookup(&state.pool, sid.as_str())
                .await
                .map_err(ExecError::Store)?
        };
        let fresh = existing.is_none();
        let call_id = existing.unwrap_or_else(|| crate::ids::new_id("call"));
        let mut options = options.clone();
        options.fresh_stream = fresh;
        match state
            .bus
            .execute::<Call>(&call_id, command(&call_id), ctx, options)
            .await
        {
            Err(ExecError::ClaimTaken { scope, .. }) if scope == CALL_SID_CLAIM => continue,
            Ok(outcome) => {
                if let Outcome::Duplicate(record) = &outcome {
                    return Ok((record.aggregate_id.clone(), outcome));
                }
                state.calls.remember(sid.as_str(), &call_id);
                return Ok((call_id, outcome));
            }
            Err(e) => return Err(e),
        }
    }
    Err(ExecError::Conflict)
}

/// What the runtime of an establishment looks like to the router.
#[derive(Debug, Clone)]
pub struct RuntimeView {
    pub id: String,
    pub status: String,
    pub ready: bool,
    pub draining: bool,
    pub media_stream_url: Option<String>,
}

pub async fn runtime_of(
    pool: &PgPool,
    establishment_id: &str,
) -> Result<Option<RuntimeView>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, status, ready, draining, media_stream_url FROM rm_runtimes WHERE establishment_id = $1",
    )
    .bind(establishment_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| RuntimeView {
        id: r.get("id"),
        status: r.get("status"),
        ready: r.get("ready"),
        draining: r.get("draining"),
        media_stream_url: r.get("media_stream_url"),
    }))
}

impl RuntimeView {
    /// Why this runtime cannot take a call now, if it cannot.
    pub fn unavailable(&self) -> Option<RuntimeUnavailableReason> {
        if self.draining {
            Some(RuntimeUnavailableReason::Draining)
        } else if self.status != "running" || !self.ready || self.media_stream_url.is_none() {
            Some(RuntimeUnavailableReason::NotReady)
        } else {
            None
        }
    }
}

/// The routing decision for an inbound call, as recorded on the call: the pure routing model
/// (number, blacklist, version, hours), then the establishment's runtime.
pub struct Routed {
    pub decision: RoutingDecision,
    pub entry: Option<Arc<RoutingEntry>>,
    pub runtime: Option<RuntimeView>,
}

pub async fn route_inbound(
    state: &AppState,
    to: &str,
    from: &str,
    now: DateTime<Utc>,
) -> Result<Routed, sqlx::Error> {
    let entry = state.routing.lookup(to);
    let fallback = || match entry.as_ref().and_then(|e| e.handoff_e164.as_deref()) {
        Some(n) => match n.parse::<E164>() {
            Ok(to) => Fallback::DialHandoff { to },
            Err(_) => Fallback::Hangup,
        },
        None => Fallback::Hangup,
    };
    let mut runtime = None;
    let decision = match aggregates::telephony::route(entry.as_deref(), from, now) {
        RouteDecision::Reject(Rejection::UnknownNumber) => RoutingDecision::RejectedUnknownNumber,
        RouteDecision::Reject(Rejection::BlacklistedCaller { .. }) => {
            RoutingDecision::RejectedBlacklisted
        }
        RouteDecision::Reject(Rejection::OutsideBusinessHours { .. }) => {
            RoutingDecision::OutsideBusinessHours {
                fallback: fallback(),
            }
        }
        RouteDecision::Reject(Rejection::NoPublishedVersion { agent_id, .. }) => {
            RoutingDecision::NoPublishedVersion {
                agent_id: Some(agent_id),
                fallback: fallback(),
            }
        }
        RouteDecision::Accept(target) => {
            runtime = runtime_of(&state.pool, &target.establishment_id).await?;
            match &runtime {
                None => RoutingDecision::RuntimeUnavailable {
                    reason: RuntimeUnavailableReason::Missing,
                    runtime_id: None,
                    fallback: fallback(),
                },
                Some(rt) => match rt.unavailable() {
                    Some(reason) => RoutingDecision::RuntimeUnavailable {
                        reason,
                        runtime_id: Some(rt.id.clone()),
                        fallback: fallback(),
                    },
                    None => RoutingDecision::Accepted {
                        agent_id: target.agent_id,
                        agent_version_id: target.version_id,
                        runtime_id: rt.id.clone(),
                    },
                },
            }
        }
    };
    Ok(Routed {
        decision,
        entry,
        runtime,
    })
}

/// The spoken line before a fallback (`<Say>`), by decision.
pub fn fallback_message(decision: &RoutingDecision) -> &'static str {
    match decision {
        RoutingDecision::OutsideBusinessHours { .. } => {
            "Thank you for calling. We are closed right now."
        }
        _ => "Thank you for calling. Our assistant is not available right now.",
    }
}
