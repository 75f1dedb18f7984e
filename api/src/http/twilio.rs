//! Twilio webhooks: incoming call (answered with TwiML), status callbacks, async AMD, recording
//! status and the `<Connect action>` callback. No user auth: every request must carry a valid
//! `X-Twilio-Signature` for `PUBLIC_BASE_URL` + path + query, else 403 and nothing is recorded.

use std::collections::HashMap;

use aggregates::call::{
    Call, CallCommand, CallError, CallOpening, Direction, Fallback, OpenedBy, RecordingRef,
    RoutingDecision,
};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::calls::{
    execute_for_new_sid, execute_for_sid, fallback_message, route_inbound, runtime_of,
};
use crate::error::{ApiError, ApiResult};
use crate::http::ReqId;
use crate::store::{Actor, CommandContext, ExecError, ExecOptions, IdempotencyClaim, Outcome};
use crate::twilio::twiml::{self, Connect, Dial};
use crate::twilio::{signature, webhook};

/// Largest webhook body accepted (Twilio's forms are a few KB).
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(incoming_call))
        .routes(routes!(call_status))
        .routes(routes!(amd_callback))
        .routes(routes!(recording_status))
        .routes(routes!(connect_action))
}

/// A Twilio webhook whose signature checked out: its form parameters and query.
pub struct TwilioForm {
    pub params: Vec<(String, String)>,
    pub query: HashMap<String, String>,
}

impl FromRequest<AppState> for TwilioForm {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = state.config.twilio_auth_token.clone() else {
            return Err(ApiError::forbidden(
                "Twilio webhooks are refused: TWILIO_AUTH_TOKEN is not configured",
            ));
        };
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| req.uri().path().to_string());
        let query: HashMap<String, String> =
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let sig = req
            .headers()
            .get(signature::HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = axum::body::to_bytes(req.into_body(), MAX_WEBHOOK_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("webhook bodies are limited to {MAX_WEBHOOK_BYTES} bytes"),
                )
            })?;
        if let Err(e) = signature::verify_request(
            &token,
            &state.config.public_base_url(),
            &path_and_query,
            sig.as_deref(),
            content_type.as_deref(),
            &body,
        ) {
            metrics::counter!("twilio_webhooks_rejected_total").increment(1);
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_signature",
                e.to_string(),
            ));
        }
        let params = url::form_urlencoded::parse(&body).into_owned().collect();
        Ok(TwilioForm { params, query })
    }
}

fn twiml_response(xml: String) -> Response {
    ([(header::CONTENT_TYPE, twiml::CONTENT_TYPE)], xml).into_response()
}

fn twilio_ctx(sid: &str, request_id: &str, establishment_id: Option<&str>) -> CommandContext {
    let mut ctx = CommandContext::from_request(Actor::Twilio(sid.to_string()), request_id);
    ctx.correlation_id = sid.to_string();
    if let Some(e) = establishment_id {
        ctx = ctx.in_establishment(e);
    }
    ctx
}

fn key(key: String) -> ExecOptions {
    ExecOptions::idempotent(IdempotencyClaim {
        request_hash: key.clone(),
        key,
        response: serde_json::Value::Null,
    })
}

/// The TwiML of a recorded routing decision.
fn render_decision(
    state: &AppState,
    decision: &RoutingDecision,
    call_id: &str,
    establishment_id: &str,
    media_stream_url: Option<&str>,
    caller: &str,
    called: &str,
) -> String {
    match decision {
        RoutingDecision::Accepted {
            agent_id,
            agent_version_id,
            runtime_id,
        } => match media_stream_url {
            Some(url) => twiml::stream(Connect {
                action: Some(format!(
                    "{}/webhooks/twilio/connect-action?call_id={call_id}",
                    state.config.public_base_url()
                )),
                stream_url: url.to_string(),
                stream_name: None,
                status_callback: None,
                parameters: vec![
                    ("call_id".into(), call_id.into()),
                    ("establishment_id".into(), establishment_id.into()),
                    ("agent_id".into(), agent_id.clone()),
                    ("agent_version_id".into(), agent_version_id.clone()),
                    ("runtime_id".into(), runtime_id.clone()),
                    ("direction".into(), "inbound".into()),
                    ("from".into(), caller.into()),
                    ("to".into(), called.into()),
                ],
            }),
            None => twiml::say_then_hangup(fallback_message(decision)),
        },
        RoutingDecision::RejectedUnknownNumber => twiml::reject(),
        RoutingDecision::RejectedBlacklisted => twiml::reject_rejected(),
        other => match other.fallback() {
            Some(Fallback::DialHandoff { to }) => {
                let mut dial = Dial::number(to.as_str());
                dial.caller_id = Some(called.to_string());
                twiml::say_then_dial(fallback_message(other), dial)
            }
            _ => twiml::say_then_hangup(fallback_message(other)),
        },
    }
}

/// Routes an incoming call by the called number and answers with TwiML: a media stream to the
/// establishment's runtime with the active agent version, or a rejection / fallback.
#[utoipa::path(post, path = "/webhooks/twilio/incoming-call", tag = "twilio",
    request_body(content_type = "application/x-www-form-urlencoded", description = "Twilio voice webhook form"),
    responses((status = 200, content_type = "text/xml", description = "TwiML"), (status = 403, description = "missing or invalid X-Twilio-Signature"),
              (status = 422, description = "malformed webhook")))]
async fn incoming_call(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    form: TwilioForm,
) -> ApiResult<Response> {
    let p = webhook::call_params(&form.params)?;
    let now = Utc::now();
    let routed = route_inbound(&state, p.to.as_str(), p.from.as_str(), now).await?;
    let Some(entry) = routed
        .entry
        .clone()
        .filter(|_| !matches!(routed.decision, RoutingDecision::RejectedUnknownNumber))
    else {
        metrics::counter!("calls_rejected_unknown_number_total").increment(1);
        tracing::info!(to = %p.to, call_sid = %p.call_sid, "incoming call to a number nobody owns: rejected");
        return Ok(twiml_response(twiml::reject()));
    };
    let establishment_id = entry.establishment_id.clone();
    let (agent_id, agent_version_id) = match &routed.decision {
        RoutingDecision::Accepted {
            agent_id,
            agent_version_id,
            ..
        } => (Some(agent_id.clone()), Some(agent_version_id.clone())),
        _ => (
            Some(entry.agent_id.clone()),
            entry.active_version_id.clone(),
        ),
    };
    let ctx = twilio_ctx(p.call_sid.as_str(), &request_id, Some(&establishment_id));
    let decision = routed.decision.clone();
    let (call_id, outcome) = execute_for_new_sid(
        &state,
        &p.call_sid,
        |call_id| CallCommand::ReceiveInbound {
            open: CallOpening {
                call_id: call_id.to_string(),
                establishment_id: establishment_id.clone(),
                direction: Direction::Inbound,
                call_sid: Some(p.call_sid.clone()),
                from: p.from.clone(),
                to: p.to.clone(),
                agent_id: agent_id.clone(),
                agent_version_id: agent_version_id.clone(),
                opened_by: OpenedBy::IncomingWebhook,
                at: now,
            },
            decision: decision.clone(),
        },
        &ctx,
        key(format!("twilio:{}:incoming", p.call_sid)),
    )
    .await?;
    // A repeated webhook (or a call opened first by a callback) answers with the decision on
    // record, not a new one.
    let recorded = match outcome {
        Outcome::Applied { state: call, .. } | Outcome::Unchanged { state: call } => call.routing,
        Outcome::Duplicate(_) => state.bus.load::<Call>(&call_id).await?.0.routing,
    }
    .unwrap_or(routed.decision);
    let stream_url = match (&recorded, &routed.runtime) {
        (RoutingDecision::Accepted { .. }, Some(rt)) => rt.media_stream_url.clone(),
        (RoutingDecision::Accepted { .. }, None) => runtime_of(&state.pool, &establishment_id)
            .await?
            .and_then(|r| r.media_stream_url),
        _ => None,
    };
    metrics::counter!("calls_routed_total", "outcome" => recorded.outcome()).increment(1);
    Ok(twiml_response(render_decision(
        &state,
        &recorded,
        &call_id,
        &establishment_id,
        stream_url.as_deref(),
        p.from.as_str(),
        p.to.as_str(),
    )))
}

/// The establishment owning the number we hold on a call we have not seen (inbound: `To`,
/// outbound: `From`).
fn owner_of_number(state: &AppState, p: &webhook::CallParams) -> Option<(String, Option<String>)> {
    let ours = match p.direction {
        Direction::Inbound => p.to.as_str(),
        Direction::Outbound => p.from.as_str(),
    };
    state
        .routing
        .lookup(ours)
        .map(|e| (e.establishment_id.clone(), Some(e.agent_id.clone())))
}

/// Runs `command` on the call a Twilio callback is about: by `call_id` in the callback URL
/// (outbound calls), else by CallSid. Calls nobody knows are dropped with a log line.
async fn on_call(
    state: &AppState,
    form: &TwilioForm,
    sid: &aggregates::call::CallSid,
    open: Option<CallOpening>,
    command: impl Fn(Option<CallOpening>) -> CallCommand,
    ctx: &CommandContext,
    options: ExecOptions,
) -> ApiResult<()> {
    let result = match form
        .query
        .get("call_id")
        .filter(|id| crate::ids::is_id("call", id))
    {
        Some(call_id) => state
            .bus
            .execute::<Call>(call_id, command(None), ctx, options)
            .await
            .map(|_| ()),
        None => {
            let known = state.calls.lookup(&state.pool, sid.as_str()).await?;
            if known.is_none() && open.is_none() {
                tracing::warn!(call_sid = %sid, "callback for an unknown call on a number we do not hold: dropped");
                metrics::counter!("twilio_callbacks_dropped_total").increment(1);
                return Ok(());
            }
            execute_for_sid(
                state,
                sid,
                |call_id| {
                    command(open.clone().map(|mut o| {
                        o.call_id = call_id.to_string();
                        o
                    }))
                },
                ctx,
                options,
            )
            .await
            .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(ExecError::Domain(
            e @ (CallError::NotFound
            | CallError::EstablishmentMismatch
            | CallError::CallSidMismatch { .. }),
        )) => {
            tracing::warn!(call_sid = %sid, error = %e, "callback does not match a call: dropped");
            metrics::counter!("twilio_callbacks_dropped_total").increment(1);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Call progress: deduplicated on (CallSid, SequenceNumber), any order; a terminal status is
/// final and a late `ringing` never reopens a call. An unknown CallSid on a number we own opens
/// the call.
#[utoipa::path(post, path = "/webhooks/twilio/call-status", tag = "twilio",
    request_body(content_type = "application/x-www-form-urlencoded", description = "Twilio status callback form"),
    params(("call_id" = Option<String>, Query, description = "set by the control plane on outbound calls")),
    responses((status = 204, description = "recorded (or a duplicate)"), (status = 403), (status = 422)))]
async fn call_status(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    form: TwilioForm,
) -> ApiResult<StatusCode> {
    let now = Utc::now();
    let p = webhook::call_params(&form.params)?;
    let callback = webhook::status_callback(&form.params, now)?;
    let owner = owner_of_number(&state, &p);
    let open = owner.as_ref().map(|(est, agent)| CallOpening {
        call_id: String::new(),
        establishment_id: est.clone(),
        direction: p.direction,
        call_sid: Some(p.call_sid.clone()),
        from: p.from.clone(),
        to: p.to.clone(),
        agent_id: agent.clone(),
        agent_version_id: None,
        opened_by: OpenedBy::StatusCallback,
        at: callback.at(),
    });
    let idem = match callback.sequence_number {
        Some(n) => format!("twilio:{}:seq:{n}", p.call_sid),
        None => format!("twilio:{}:status:{}", p.call_sid, callback.status),
    };
    let ctx = twilio_ctx(
        p.call_sid.as_str(),
        &request_id,
        owner.as_ref().map(|o| o.0.as_str()),
    );
    on_call(
        &state,
        &form,
        &p.call_sid,
        open,
        |open| CallCommand::RecordTwilioStatus {
            open,
            callback: callback.clone(),
        },
        &ctx,
        key(idem),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Asynchronous answering-machine detection result.
#[utoipa::path(post, path = "/webhooks/twilio/amd-callback", tag = "twilio",
    request_body(content_type = "application/x-www-form-urlencoded", description = "Twilio AMD callback form"),
    params(("call_id" = Option<String>, Query)),
    responses((status = 204), (status = 403), (status = 422)))]
async fn amd_callback(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    form: TwilioForm,
) -> ApiResult<StatusCode> {
    let amd = webhook::amd_result(&form.params)?;
    let ctx = twilio_ctx(amd.call_sid.as_str(), &request_id, None);
    let at = Utc::now();
    on_call(
        &state,
        &form,
        &amd.call_sid,
        None,
        |_| CallCommand::RecordAnsweredBy {
            call_sid: amd.call_sid.clone(),
            answered_by: amd.answered_by,
            detection_duration_ms: amd.detection_duration_ms,
            at,
        },
        &ctx,
        key(format!("twilio:{}:amd", amd.call_sid)),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A provider-side recording finished (`RecordingStatus=completed`): its reference is attached
/// to the call.
#[utoipa::path(post, path = "/webhooks/twilio/recording-status", tag = "twilio",
    request_body(content_type = "application/x-www-form-urlencoded", description = "Twilio recording status callback form"),
    params(("call_id" = Option<String>, Query)),
    responses((status = 204), (status = 403), (status = 422)))]
async fn recording_status(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    form: TwilioForm,
) -> ApiResult<StatusCode> {
    let get = |k: &str| {
        form.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let sid: aggregates::call::CallSid = get("CallSid")
        .ok_or_else(|| ApiError::validation("CallSid", "is required"))?
        .parse()?;
    if get("RecordingStatus") != Some("completed") {
        return Ok(StatusCode::NO_CONTENT);
    }
    let recording_sid = get("RecordingSid")
        .filter(|s| s.len() <= 64 && s.starts_with("RE"))
        .ok_or_else(|| ApiError::validation("RecordingSid", "must be a Twilio recording SID"))?
        .to_string();
    let url = get("RecordingUrl")
        .filter(|u| u.starts_with("https://") && u.len() <= 2048)
        .ok_or_else(|| ApiError::validation("RecordingUrl", "must be an https URL"))?;
    let recording = RecordingRef {
        recording_url: format!("{url}.wav"),
        storage_provider: "twilio".into(),
        content_type: "audio/wav".into(),
    };
    let ctx = twilio_ctx(sid.as_str(), &request_id, None);
    let at = Utc::now();
    on_call(
        &state,
        &form,
        &sid,
        None,
        |_| CallCommand::RecordProviderRecording {
            recording_sid: recording_sid.clone(),
            recording: recording.clone(),
            at,
        },
        &ctx,
        key(format!("twilio:{recording_sid}:recording")),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Twilio asks what to do once the media stream to the runtime has closed: hang up (a handoff
/// replaces the call's TwiML through the REST API instead).
#[utoipa::path(post, path = "/webhooks/twilio/connect-action", tag = "twilio",
    request_body(content_type = "application/x-www-form-urlencoded", description = "Twilio <Connect> action form"),
    params(("call_id" = Option<String>, Query)),
    responses((status = 200, content_type = "text/xml", description = "TwiML"), (status = 403)))]
async fn connect_action(_form: TwilioForm) -> Response {
    twiml_response(twiml::hangup())
}
