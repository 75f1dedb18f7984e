//! Calls without Twilio, for tests and load: `POST /sim/calls` starts a simulated call that
//! reports to the control plane exactly like a media-stream call; `GET /sim/calls`,
//! `GET /sim/calls/{call_sid}` show what the runtime sent; `POST /sim/calls/{call_sid}/hangup`
//! ends one early. A test fixture like `/admin/*`: a real runtime has no such endpoints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::calls::{self, CallMeta, CallPlan, StartError};
use crate::config::{MAX_PACE, MAX_SEGMENTS};
use crate::state::SimState;

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/sim/calls", post(create).get(list))
        .route("/sim/calls/{call_sid}", get(show))
        .route("/sim/calls/{call_sid}/hangup", post(hangup))
        .with_state(state)
}

type Answer = (StatusCode, Json<Value>);

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into(), "details": null}})),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCall {
    /// Default: a fresh one.
    call_sid: Option<String>,
    /// Default `+15550100000`.
    from: Option<String>,
    /// Default `+15550100001`.
    to: Option<String>,
    /// `inbound` (default) or `outbound`.
    direction: Option<String>,
    /// Default `SIM_SEGMENTS`.
    segments: Option<usize>,
    /// Default `SIM_PACE_MS`.
    pace_ms: Option<u64>,
    agent_id: Option<String>,
    agent_version_id: Option<String>,
    /// The control plane's call id, if known (shown in `/sim/calls` only).
    call_id: Option<String>,
    /// Stay on the line after the script until `POST /sim/calls/{sid}/hangup` (default false:
    /// the agent hangs up when the script ends).
    wait_for_hangup: Option<bool>,
    /// Make the script's tool call through the control plane's tool proxy (see
    /// docs/runtimes.md).
    tool_proxy: Option<crate::tool_proxy::ProxyPlan>,
}

fn party(field: &str, v: Option<String>, default: &str) -> Result<String, Answer> {
    let v = v.unwrap_or_else(|| default.to_string());
    if v.is_empty() || v.len() > 64 || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("{field} must be 1 to 64 characters without spaces"),
        ));
    }
    Ok(v)
}

fn id(field: &str, v: Option<String>) -> Result<Option<String>, Answer> {
    match v {
        Some(s) if s.is_empty() || s.len() > 64 => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("{field} must be 1 to 64 characters"),
        )),
        v => Ok(v),
    }
}

/// A CallSid nobody used: CA + 32 hex digits from the clock and a counter.
fn fresh_call_sid() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "CA{nanos:016x}{:016x}",
        N.fetch_add(1, Ordering::Relaxed) ^ 0x5151_0000_0000_0000
    )
}

/// Starts a simulated call: 202 with the call as `GET /sim/calls/{sid}` shows it; 409 when the
/// CallSid ran here already; 503 while draining; 422 for bad input.
async fn create(
    State(state): State<Arc<SimState>>,
    body: Result<Json<NewCall>, JsonRejection>,
) -> Answer {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                e.body_text(),
            )
        }
    };
    let d = &state.config.calls;
    let segments = req.segments.unwrap_or(d.segments);
    if segments > MAX_SEGMENTS {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("segments must be at most {MAX_SEGMENTS}"),
        );
    }
    let pace = req.pace_ms.map(Duration::from_millis).unwrap_or(d.pace);
    if pace > MAX_PACE {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("pace_ms must be at most {}", MAX_PACE.as_millis()),
        );
    }
    let direction = req.direction.unwrap_or_else(|| "inbound".into());
    if direction != "inbound" && direction != "outbound" {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "direction must be inbound or outbound",
        );
    }
    let meta = (|| {
        Ok::<_, Answer>(CallMeta {
            call_sid: req.call_sid.unwrap_or_else(fresh_call_sid),
            call_id: id("call_id", req.call_id)?,
            stream_sid: None,
            agent_id: id("agent_id", req.agent_id)?,
            agent_version_id: id("agent_version_id", req.agent_version_id)?,
            direction,
            from: party("from", req.from, "+15550100000")?,
            to: party("to", req.to, "+15550100001")?,
        })
    })();
    let meta = match meta {
        Ok(m) => m,
        Err(e) => return e,
    };
    if let Some(Err(e)) = req.tool_proxy.as_ref().map(|p| p.valid()) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", e);
    }
    let plan = CallPlan {
        segments,
        pace,
        end_with_script: !req.wait_for_hangup.unwrap_or(false),
        tool_proxy: req.tool_proxy,
    };
    match calls::start(&state, meta, plan, None) {
        Ok(call) => (StatusCode::ACCEPTED, Json(call.info(&state))),
        Err(e @ StartError::BadCallSid) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            e.to_string(),
        ),
        Err(e @ StartError::Exists) => error(StatusCode::CONFLICT, "call_exists", e.to_string()),
        Err(e @ StartError::Draining) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "draining", e.to_string())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// 1–1000, default 100.
    limit: Option<usize>,
}

/// Active calls first, then the most recently ended; with the outbox counters.
async fn list(State(state): State<Arc<SimState>>, Query(q): Query<ListQuery>) -> Json<Value> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let items: Vec<Value> = state
        .calls
        .list(limit)
        .iter()
        .map(|c| c.info(&state))
        .collect();
    Json(json!({ "items": items, "outbox": state.outbox.stats_json() }))
}

async fn show(State(state): State<Arc<SimState>>, Path(call_sid): Path<String>) -> Answer {
    match state.calls.get(&call_sid) {
        Some(c) => (StatusCode::OK, Json(c.info(&state))),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such call here"),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Hangup {
    /// `customer` (default), `agent` or `system`.
    hangup_by: Option<String>,
}

/// Ends a call early (the turn being spoken is cut off). Idempotent.
async fn hangup(
    State(state): State<Arc<SimState>>,
    Path(call_sid): Path<String>,
    body: Option<Json<Hangup>>,
) -> Answer {
    let Some(call) = state.calls.get(&call_sid) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such call here");
    };
    let by = match body.and_then(|Json(h)| h.hangup_by).as_deref() {
        None | Some("customer") => "customer",
        Some("agent") => "agent",
        Some("system") => "system",
        Some(_) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "hangup_by must be customer, agent or system",
            )
        }
    };
    call.hang_up(by);
    (StatusCode::ACCEPTED, Json(call.info(&state)))
}
