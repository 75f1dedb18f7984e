//! Twilio webhooks: incoming call (answered with TwiML), status callbacks, async AMD, recording
//! status and the `<Connect action>` callback. No user auth: every request must carry a valid
//! `X-Twilio-Signature` for `PUBLIC_BASE_URL` + path + query, else 403 and nothing is recorded.

use std::sync::Arc;

use aggregates::call::{Fallback, RecordingRef, RoutingDecision};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::adapters::twilio::twiml::{self, Connect, Dial};
use crate::adapters::twilio::webhook;
use crate::application::call_callbacks::{twilio_ctx, CallCallbacks};
use crate::application::inbound_call::{
    fallback_message, InboundAnswer, InboundCalls, InboundError, IncomingCall,
};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::RequestId;
use crate::http::twilio_form::{TwilioForm, TwilioWebhooks};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(incoming_call))
        .routes(routes!(call_status))
        .routes(routes!(amd_callback))
        .routes(routes!(recording_status))
        .routes(routes!(connect_action))
}

/// Twilio's voice webhook form (incoming call; status callbacks add the fields below).
#[allow(non_snake_case, dead_code)]
#[derive(utoipa::ToSchema)]
struct VoiceWebhookForm {
    /// `CA` + 32 hex digits.
    CallSid: String,
    AccountSid: Option<String>,
    /// E.164, or `client:…` / a SIP URI.
    From: String,
    To: String,
    Caller: Option<String>,
    Called: Option<String>,
    /// `queued ringing in-progress completed busy failed no-answer canceled`.
    CallStatus: String,
    /// `inbound outbound-api outbound-dial …`.
    Direction: String,
    ApiVersion: Option<String>,
    /// Status callbacks: per call, from 0.
    SequenceNumber: Option<String>,
    /// Status callbacks: RFC 2822.
    Timestamp: Option<String>,
    CallbackSource: Option<String>,
    /// Terminal status callbacks: seconds.
    CallDuration: Option<String>,
    SipResponseCode: Option<String>,
    AnsweredBy: Option<String>,
    MachineDetectionDuration: Option<String>,
}

/// Twilio's asynchronous answering-machine-detection callback form.
#[allow(non_snake_case, dead_code)]
#[derive(utoipa::ToSchema)]
struct AmdCallbackForm {
    CallSid: String,
    AccountSid: Option<String>,
    /// `human machine_start machine_end_beep machine_end_silence machine_end_other fax unknown`.
    AnsweredBy: String,
    MachineDetectionDuration: Option<String>,
}

/// Twilio's recording-status callback form.
#[allow(non_snake_case, dead_code)]
#[derive(utoipa::ToSchema)]
struct RecordingStatusForm {
    CallSid: String,
    AccountSid: Option<String>,
    RecordingSid: Option<String>,
    /// https URL without extension.
    RecordingUrl: Option<String>,
    /// `in-progress completed absent`.
    RecordingStatus: String,
    RecordingDuration: Option<String>,
    RecordingChannels: Option<String>,
}

fn twiml_response(xml: String) -> Response {
    ([(header::CONTENT_TYPE, twiml::CONTENT_TYPE)], xml).into_response()
}

impl From<InboundError> for ApiError {
    fn from(e: InboundError) -> Self {
        match e {
            InboundError::Command(e) => e.into(),
            InboundError::Unexpected(e) => e.into(),
        }
    }
}

/// The TwiML of a recorded routing decision.
fn render_decision(
    public_base_url: &str,
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
                    "{public_base_url}/webhooks/twilio/connect-action?call_id={call_id}"
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
    request_body(content = VoiceWebhookForm, content_type = "application/x-www-form-urlencoded", description = "Twilio voice webhook form"),
    responses((status = 200, content_type = "text/xml", description = "TwiML"), (status = 403, description = "missing or invalid X-Twilio-Signature"),
              (status = 422, description = "malformed webhook")))]
async fn incoming_call(
    State(inbound): State<Arc<InboundCalls>>,
    State(hooks): State<Arc<TwilioWebhooks>>,
    RequestId(request_id): RequestId,
    form: TwilioForm,
) -> ApiResult<Response> {
    let p = webhook::call_params(&form.params)?;
    let ctx = twilio_ctx(p.call_sid.as_str(), &request_id, None);
    let call = IncomingCall {
        call_sid: p.call_sid.clone(),
        from: p.from.clone(),
        to: p.to.clone(),
    };
    let xml = match inbound.receive(call, ctx, Utc::now()).await? {
        InboundAnswer::UnknownNumber => twiml::reject(),
        InboundAnswer::Routed {
            call_id,
            establishment_id,
            decision,
            media_stream_url,
        } => render_decision(
            &hooks.public_base_url,
            &decision,
            &call_id,
            &establishment_id,
            media_stream_url.as_deref(),
            p.from.as_str(),
            p.to.as_str(),
        ),
    };
    Ok(twiml_response(xml))
}

/// Call progress: deduplicated on (CallSid, SequenceNumber), any order; a terminal status is
/// final and a late `ringing` never reopens a call. An unknown CallSid on a number we own opens
/// the call.
#[utoipa::path(post, path = "/webhooks/twilio/call-status", tag = "twilio",
    request_body(content = VoiceWebhookForm, content_type = "application/x-www-form-urlencoded", description = "Twilio status callback form"),
    params(("call_id" = Option<String>, Query, description = "set by the control plane on outbound calls")),
    responses((status = 204, description = "recorded (or a duplicate)"), (status = 403), (status = 422)))]
async fn call_status(
    State(callbacks): State<Arc<CallCallbacks>>,
    RequestId(request_id): RequestId,
    form: TwilioForm,
) -> ApiResult<StatusCode> {
    let p = webhook::call_params(&form.params)?;
    let callback = webhook::status_callback(&form.params, Utc::now())?;
    callbacks
        .status(form.target(&p.call_sid), &p, callback, &request_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Asynchronous answering-machine detection result.
#[utoipa::path(post, path = "/webhooks/twilio/amd-callback", tag = "twilio",
    request_body(content = AmdCallbackForm, content_type = "application/x-www-form-urlencoded", description = "Twilio AMD callback form"),
    params(("call_id" = Option<String>, Query)),
    responses((status = 204), (status = 403), (status = 422)))]
async fn amd_callback(
    State(callbacks): State<Arc<CallCallbacks>>,
    RequestId(request_id): RequestId,
    form: TwilioForm,
) -> ApiResult<StatusCode> {
    let amd = webhook::amd_result(&form.params)?;
    callbacks
        .answered_by(
            form.target(&amd.call_sid),
            amd.answered_by,
            amd.detection_duration_ms,
            &request_id,
            Utc::now(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A provider-side recording finished (`RecordingStatus=completed`): its reference is attached
/// to the call.
#[utoipa::path(post, path = "/webhooks/twilio/recording-status", tag = "twilio",
    request_body(content = RecordingStatusForm, content_type = "application/x-www-form-urlencoded", description = "Twilio recording status callback form"),
    params(("call_id" = Option<String>, Query)),
    responses((status = 204), (status = 403), (status = 422)))]
async fn recording_status(
    State(callbacks): State<Arc<CallCallbacks>>,
    RequestId(request_id): RequestId,
    form: TwilioForm,
) -> ApiResult<StatusCode> {
    let Some(done) = webhook::recording_status(&form.params)? else {
        return Ok(StatusCode::NO_CONTENT);
    };
    let recording = RecordingRef {
        recording_url: format!("{}.wav", done.recording_url),
        storage_provider: "twilio".into(),
        content_type: "audio/wav".into(),
    };
    callbacks
        .recording(
            form.target(&done.call_sid),
            done.recording_sid,
            recording,
            &request_id,
            Utc::now(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Twilio asks what to do once the media stream to the runtime has closed: hang up (a handoff
/// replaces the call's TwiML through the REST API instead).
#[utoipa::path(post, path = "/webhooks/twilio/connect-action", tag = "twilio",
    request_body(content = VoiceWebhookForm, content_type = "application/x-www-form-urlencoded", description = "Twilio <Connect> action form"),
    params(("call_id" = Option<String>, Query)),
    responses((status = 200, content_type = "text/xml", description = "TwiML"), (status = 403)))]
async fn connect_action(_form: TwilioForm) -> Response {
    twiml_response(twiml::hangup())
}
