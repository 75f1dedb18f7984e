//! `POST /ingest/call-events`: runtime events (Appendix B) with the runtime's token. One
//! envelope (B.1) or an array of them (batch). Idempotent per B.3, enforced at append: a
//! replayed `idempotency_key` adds nothing and answers 202; the same key with another payload
//! is a 409. Events for a call the control plane has not seen yet open it.

use std::sync::Arc;

use aggregates::call::{CallSid, Direction, Party, RuntimeEvent};
use aggregates::common::{check_text, plausible_instant, ParseError, TextKind};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::application::ingestion::{IncomingEvent, IngestError, Ingested, Ingestion};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{body_error, parse_json, RequestId};
use crate::http::runtime_principal::RuntimePrincipal;
use crate::state::AppState;

/// Largest request (a batch); one envelope is limited separately.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
pub const MAX_BATCH_ITEMS: usize = 500;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ingest))
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeCall {
    /// `twilio`.
    pub provider: String,
    pub provider_call_sid: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub from_e164: String,
    pub to_e164: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeEvent {
    /// The runtime's event id (`evt_...`).
    pub id: String,
    /// One of `call_started`, `call_connected`, `call_ended`, `transcript_segment`,
    /// `tool_called`, `tool_result`, `recording_available`, `runtime_error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    /// Unique per event (B.3); deterministic, so retries are recognised.
    pub idempotency_key: String,
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// The Appendix B.1 envelope.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub runtime_id: String,
    pub establishment_id: String,
    pub agent_id: Option<String>,
    pub agent_version_id: Option<String>,
    pub call: EnvelopeCall,
    pub event: EnvelopeEvent,
}

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct ItemResult {
    pub index: usize,
    /// `accepted`, `duplicate` or `rejected`.
    pub status: &'static str,
    /// The contract error of a rejected item.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    /// `accepted` when every item was accepted (or a duplicate), else `partial`.
    pub status: &'static str,
    pub results: Vec<ItemResult>,
}

/// The body: one envelope or an array of them.
pub enum Body {
    One(Value),
    Many(Vec<Value>),
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        match parse_json::<Value>(&bytes)? {
            Value::Array(items) => {
                if items.len() > MAX_BATCH_ITEMS {
                    return Err(ApiError::validation(
                        "items",
                        format!("a batch holds at most {MAX_BATCH_ITEMS} envelopes"),
                    ));
                }
                Ok(Body::Many(items))
            }
            v @ Value::Object(_) => {
                if bytes.len() > MAX_ENVELOPE_BYTES {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("one envelope is limited to {MAX_ENVELOPE_BYTES} bytes"),
                    ));
                }
                Ok(Body::One(v))
            }
            _ => Err(ApiError::validation(
                "body",
                "must be an envelope object or an array of envelopes",
            )),
        }
    }
}

/// Ingests call events from a runtime (Appendix B). One envelope answers 202
/// `{"status":"accepted"}` (replays too); an array answers per item.
#[utoipa::path(post, path = "/ingest/call-events", tag = "ingest", security(("runtime" = [])),
    request_body(content = Envelope, description = "one envelope, or an array of envelopes (batch)"),
    responses((status = 202, body = Accepted, description = "accepted (or a replay of an accepted event)"),
              (status = 207, body = BatchResult, description = "batch with some items rejected"),
              (status = 401, description = "no or unknown runtime token"),
              (status = 403, description = "runtime or establishment in the body do not match the token"),
              (status = 409, description = "idempotency_key reused with a different event"),
              (status = 413), (status = 422, description = "unknown event type or bad payload")))]
async fn ingest(
    State(ingestion): State<Arc<Ingestion>>,
    RequestId(request_id): RequestId,
    runtime: RuntimePrincipal,
    body: Body,
) -> ApiResult<Response> {
    match body {
        Body::One(v) => {
            let ingested = ingest_one(&ingestion, &runtime, &request_id, v).await?;
            let mut res =
                (StatusCode::ACCEPTED, Json(Accepted { status: "accepted" })).into_response();
            if matches!(ingested, Ingested::Duplicate) {
                res.headers_mut()
                    .insert("idempotent-replayed", "true".parse().expect("static"));
            }
            Ok(res)
        }
        Body::Many(items) => {
            // Parse every item first; the valid ones are ingested together (calls side by
            // side, each call's events in order), the rest answer with their error.
            let mut parsed = Vec::with_capacity(items.len());
            let mut rejected = Vec::new();
            for (index, v) in items.into_iter().enumerate() {
                match parse_one(&runtime, v) {
                    Ok(e) => parsed.push((index, e)),
                    Err(e) => rejected.push((index, e)),
                }
            }
            let (indices, events): (Vec<usize>, Vec<IncomingEvent>) = parsed.into_iter().unzip();
            let outcomes = ingestion.ingest_batch(&runtime, &request_id, events).await;
            let mut results: Vec<(usize, ApiResult<Ingested>)> = indices
                .into_iter()
                .zip(outcomes.into_iter().map(|r| r.map_err(ingest_error)))
                .chain(rejected.into_iter().map(|(i, e)| (i, Err(e))))
                .collect();
            results.sort_by_key(|(i, _)| *i);
            let mut all_ok = true;
            let results: Vec<ItemResult> = results
                .into_iter()
                .map(|(index, r)| match r {
                    Ok(Ingested::New) => ItemResult {
                        index,
                        status: "accepted",
                        error: None,
                    },
                    Ok(Ingested::Duplicate) => ItemResult {
                        index,
                        status: "duplicate",
                        error: None,
                    },
                    Err(e) => {
                        all_ok = false;
                        ItemResult {
                            index,
                            status: "rejected",
                            error: Some(
                                json!({"code": e.code(), "message": e.message(), "status": e.status().as_u16()}),
                            ),
                        }
                    }
                })
                .collect();
            let status = if all_ok {
                StatusCode::ACCEPTED
            } else {
                StatusCode::MULTI_STATUS
            };
            Ok((
                status,
                Json(BatchResult {
                    status: if all_ok { "accepted" } else { "partial" },
                    results,
                }),
            )
                .into_response())
        }
    }
}

fn field(prefix: &str, e: ParseError) -> ApiError {
    ApiError::validation(&format!("{prefix}{}", e.field), e.message)
}

async fn ingest_one(
    ingestion: &Ingestion,
    runtime: &RuntimePrincipal,
    request_id: &str,
    value: Value,
) -> ApiResult<Ingested> {
    let event = parse_one(runtime, value)?;
    ingestion
        .ingest(runtime, request_id, event)
        .await
        .map_err(ingest_error)
}

fn ingest_error(e: IngestError) -> ApiError {
    match e {
        IngestError::CallNotFound => ApiError::not_found("call"),
        IngestError::Command(e) => e.into(),
    }
}

/// Checks one envelope against the runtime's token and parses it into the event to ingest.
fn parse_one(runtime: &RuntimePrincipal, value: Value) -> ApiResult<IncomingEvent> {
    let raw = serde_json::to_vec(&value).map_err(ApiError::internal)?;
    if raw.len() > MAX_ENVELOPE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("one envelope is limited to {MAX_ENVELOPE_BYTES} bytes"),
        ));
    }
    let env: Envelope = parse_json(&raw)?;
    if env.runtime_id != runtime.runtime_id || env.establishment_id != runtime.establishment_id {
        return Err(ApiError::forbidden(
            "runtime_id and establishment_id must be those of the runtime token",
        ));
    }
    let key = env.event.idempotency_key.trim().to_string();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::validation(
            "event.idempotency_key",
            "must be 1 to 255 characters",
        ));
    }
    check_text("event.idempotency_key", &key, TextKind::Token)?;
    if env.event.id.is_empty() || env.event.id.len() > 128 {
        return Err(ApiError::validation(
            "event.id",
            "must be 1 to 128 characters",
        ));
    }
    check_text("event.id", &env.event.id, TextKind::Token)?;
    let now = Utc::now();
    plausible_instant("event.occurred_at", env.event.occurred_at, now)?;
    if env.call.provider != "twilio" {
        return Err(ApiError::validation("call.provider", "must be \"twilio\""));
    }
    let call_sid: CallSid = env
        .call
        .provider_call_sid
        .parse()
        .map_err(|e| field("call.", e))?;
    let direction: Direction = env.call.direction.parse().map_err(|e| field("call.", e))?;
    let from: Party = env
        .call
        .from_e164
        .parse()
        .map_err(|e: ParseError| ApiError::validation("call.from_e164", e.message))?;
    let to: Party = env
        .call
        .to_e164
        .parse()
        .map_err(|e: ParseError| ApiError::validation("call.to_e164", e.message))?;
    for (name, v) in [
        ("agent_id", &env.agent_id),
        ("agent_version_id", &env.agent_version_id),
    ] {
        if v.as_ref().is_some_and(|s| s.is_empty() || s.len() > 64) {
            return Err(ApiError::validation(name, "must be 1 to 64 characters"));
        }
        if let Some(v) = v {
            check_text(name, v, TextKind::Token)?;
        }
    }
    let mut event = parse_event(&env.event.kind, env.event.payload.clone())?;
    if let RuntimeEvent::TranscriptSegment(segment) = &mut event {
        if segment.segment_id.is_empty() {
            segment.segment_id = env.event.id.clone();
        }
    }
    event.validate().map_err(|e| field("event.payload.", e))?;
    event
        .validate_times(now)
        .map_err(|e| field("event.payload.", e))?;

    Ok(IncomingEvent {
        call_sid,
        direction,
        from,
        to,
        agent_id: env.agent_id,
        agent_version_id: env.agent_version_id,
        event_id: env.event.id,
        occurred_at: env.event.occurred_at,
        idempotency_key: key,
        event,
        kind: env.event.kind,
        payload: env.event.payload,
    })
}

/// Parses `{type, payload}` into a runtime event: 422 for an unknown type or a bad payload,
/// naming the field.
pub fn parse_event(kind: &str, payload: Value) -> ApiResult<RuntimeEvent> {
    const TYPES: [&str; 8] = [
        "call_started",
        "call_connected",
        "call_ended",
        "transcript_segment",
        "tool_called",
        "tool_result",
        "recording_available",
        "runtime_error",
    ];
    if !TYPES.contains(&kind) {
        return Err(ApiError::validation(
            "event.type",
            format!("{kind:?} is not one of {}", TYPES.join(", ")),
        )
        .with_details(
            json!({"field": "event.type", "reason": "unknown event type", "allowed": TYPES}),
        ));
    }
    let doc = json!({"type": kind, "payload": payload});
    let bytes = serde_json::to_vec(&doc).map_err(ApiError::internal)?;
    parse_json::<RuntimeEvent>(&bytes).map_err(|e| {
        ApiError::validation("event.payload", e.message().to_string())
            .with_details(json!({"field": "event.payload", "reason": e.message(), "type": kind}))
    })
}
