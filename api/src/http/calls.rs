//! Calls for the UI (polling): active calls, history with filters and a cursor, details with
//! the timeline, transcript (cursor protocol of Appendix D.2), recording (short-lived signed
//! link), tool log; and the two call actions: outbound calls and handoff to a human.

use std::sync::Arc;

use aggregates::call::{CallStatus, Direction, MachineDetection, OutboundRefusal};
use aggregates::common::{Role, E164};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use projections::calls::queries::{self as calls, CallRow, HistoryFilter};
use projections::calls::LiveCalls;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::application::handoff::{HandoffError, HandoffRequest, Handoffs};
use crate::application::outbound_call::{OutboundCalls, OutboundError, QueuedCall};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiQuery, RequestId};
use crate::http::principal::Principal;
use crate::http::recording_links::RecordingLinks;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(active_calls))
        .routes(routes!(list_calls))
        .routes(routes!(get_call))
        .routes(routes!(transcript))
        .routes(routes!(recording))
        .routes(routes!(tool_log))
        .routes(routes!(outbound_call))
        .routes(routes!(handoff))
        .routes(routes!(recording_media))
}

#[derive(Serialize, ToSchema)]
pub struct Sentiment {
    /// `positive`, `neutral` or `negative`.
    pub label: String,
    /// Positivity in [0, 1] (0.5 is neutral).
    pub score: f64,
    pub computed_at: DateTime<Utc>,
}

/// A call as listed (Appendix A.5 `GET /calls/active` item; history adds a few fields).
#[derive(Serialize, ToSchema)]
pub struct CallItem {
    pub call_id: String,
    pub provider: String,
    pub provider_call_sid: Option<String>,
    pub establishment_id: String,
    pub agent_id: Option<String>,
    pub status: String,
    pub direction: String,
    pub from_e164: String,
    pub to_e164: String,
    pub started_at: DateTime<Utc>,
    pub duration_seconds: i64,
    pub sentiment: Option<Sentiment>,
}

fn sentiment(v: Option<Value>) -> Option<Sentiment> {
    let v = v?;
    let polarity = v.get("score")?.as_f64()?;
    Some(Sentiment {
        label: v.get("label")?.as_str()?.to_string(),
        score: ((polarity + 1.0) / 2.0 * 100.0).round() / 100.0,
        computed_at: serde_json::from_value(v.get("computed_at")?.clone()).ok()?,
    })
}

fn item(r: &CallRow, now: DateTime<Utc>) -> CallItem {
    CallItem {
        call_id: r.id.clone(),
        provider: r.provider.clone(),
        provider_call_sid: r.provider_call_sid.clone(),
        establishment_id: r.establishment_id.clone(),
        agent_id: r.agent_id.clone(),
        status: r.status.clone(),
        direction: r.direction.clone(),
        from_e164: r.from_party.clone(),
        to_e164: r.to_party.clone(),
        started_at: r.started_at,
        duration_seconds: r.duration_at(now),
        sentiment: sentiment(r.sentiment.clone()),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ActiveQuery {
    /// Only this establishment (default: all of the caller's).
    pub establishment_id: Option<String>,
    /// 1–1000, default 500.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct ActiveCalls {
    pub items: Vec<CallItem>,
}

/// Which establishments a query may read: the one asked for (404 when not a member), else all
/// of the caller's (`None` = everything, for platform admins).
pub(crate) fn scope(
    me: &Principal,
    establishment_id: Option<&String>,
) -> ApiResult<Option<Vec<String>>> {
    match establishment_id {
        Some(e) => {
            me.member_of(e)?;
            Ok(Some(vec![e.clone()]))
        }
        None => Ok(me.readable_establishments()),
    }
}

/// Calls in progress (Appendix A.5), newest first; `duration_seconds` is computed at read time.
#[utoipa::path(get, path = "/calls/active", tag = "calls", security(("bearer" = [])), params(ActiveQuery),
    responses((status = 200, body = ActiveCalls), (status = 404)))]
async fn active_calls(
    State(pool): State<PgPool>,
    State(live): State<Arc<LiveCalls>>,
    me: Principal,
    ApiQuery(q): ApiQuery<ActiveQuery>,
) -> ApiResult<Json<ActiveCalls>> {
    let scope = scope(&me, q.establishment_id.as_ref())?;
    let limit = q.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 1000"));
    }
    let rows = live.active(&pool, scope.as_deref(), limit).await?;
    let now = Utc::now();
    Ok(Json(ActiveCalls {
        items: rows.iter().map(|r| item(r, now)).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub establishment_id: Option<String>,
    pub agent_id: Option<String>,
    /// e.g. `completed`, `in_progress`, `no_answer`.
    pub status: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    /// Caller number (exact).
    pub from_e164: Option<String>,
    /// Called number (exact).
    pub to_e164: Option<String>,
    /// Started at or after (ISO 8601).
    pub started_after: Option<DateTime<Utc>>,
    /// Started before (ISO 8601).
    pub started_before: Option<DateTime<Utc>>,
    /// Only calls placed by this campaign.
    pub campaign_id: Option<String>,
    /// Only calls placed to this lead (by a campaign).
    pub lead_id: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1–200, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct CallPage {
    pub items: Vec<CallItem>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn encode_cursor(at: DateTime<Utc>, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{id}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    ))
}

fn decode_cursor(c: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    let (at, id) = std::str::from_utf8(&raw).ok()?.split_once('|')?;
    Some((at.parse().ok()?, id.to_string()))
}

/// Call history, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/calls", tag = "calls", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = CallPage), (status = 404), (status = 422)))]
async fn list_calls(
    State(pool): State<PgPool>,
    me: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<CallPage>> {
    let scope = scope(&me, q.establishment_id.as_ref())?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 200"));
    }
    if let Some(s) = &q.status {
        s.parse::<CallStatus>()?;
    }
    if let Some(d) = &q.direction {
        d.parse::<Direction>()?;
    }
    let after = match &q.cursor {
        Some(c) => Some(
            decode_cursor(c)
                .ok_or_else(|| ApiError::validation("cursor", "is not a cursor from this API"))?,
        ),
        None => None,
    };
    let filter = HistoryFilter {
        agent_id: q.agent_id,
        status: q.status,
        direction: q.direction,
        from_e164: q.from_e164,
        to_e164: q.to_e164,
        started_after: q.started_after,
        started_before: q.started_before,
        before: after,
        campaign_id: q.campaign_id,
        lead_id: q.lead_id,
    };
    let rows = calls::history(&pool, scope.as_deref(), &filter, limit + 1).await?;
    let now = Utc::now();
    let more = rows.len() as i64 > limit;
    let items: Vec<CallItem> = rows
        .iter()
        .take(limit as usize)
        .map(|r| item(r, now))
        .collect();
    let next_cursor = more
        .then(|| {
            items
                .last()
                .map(|i| encode_cursor(i.started_at, &i.call_id))
        })
        .flatten();
    Ok(Json(CallPage { items, next_cursor }))
}

/// The call's establishment when the caller may see the call (404 otherwise).
async fn visible_call(pool: &PgPool, me: &Principal, call_id: &str) -> ApiResult<String> {
    let establishment = calls::establishment_of(pool, call_id)
        .await?
        .ok_or_else(|| ApiError::not_found("call"))?;
    me.member_of(&establishment)
        .map_err(|_| ApiError::not_found("call"))?;
    Ok(establishment)
}

#[derive(Serialize, ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub kind: String,
    #[schema(value_type = Object)]
    pub detail: Value,
}

#[derive(Serialize, ToSchema)]
pub struct CallDetails {
    #[serde(flatten)]
    pub call: CallItem,
    pub agent_version_id: Option<String>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// How the incoming-call webhook routed the call (`outcome` tag), for inbound calls.
    #[schema(value_type = Option<Object>)]
    pub routing_decision: Option<Value>,
    /// Answering-machine detection result (`human`, `machine_start`, ...).
    pub answered_by: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub placement: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub handoff: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub requested_by: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Call-level sentiment with per-window scores.
    #[schema(value_type = Option<Object>)]
    pub sentiment_windows: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub summary: Option<Value>,
    pub has_recording: bool,
    pub transcript_segments: i64,
    pub tool_calls: i32,
    pub runtime_errors: i32,
    pub reaped_reason: Option<String>,
    /// Some event of this call could not be applied and was set aside (a dead letter, see
    /// `GET /admin/dead-letters`): what is shown may be incomplete until it is retried.
    pub degraded: bool,
    pub timeline: Vec<TimelineEntry>,
}

/// One call with its routing decision, agent version, AMD result, handoff, sentiment, summary
/// and the timeline of its lifecycle events.
#[utoipa::path(get, path = "/calls/{callId}", tag = "calls", security(("bearer" = [])),
    params(("callId" = String, Path)), responses((status = 200, body = CallDetails), (status = 404)))]
async fn get_call(
    State(pool): State<PgPool>,
    me: Principal,
    Path(call_id): Path<String>,
) -> ApiResult<Json<CallDetails>> {
    let r = calls::details(&pool, &call_id)
        .await?
        .ok_or_else(|| ApiError::not_found("call"))?;
    me.member_of(&r.call.establishment_id)
        .map_err(|_| ApiError::not_found("call"))?;
    let timeline = calls::timeline(&pool, &call_id)
        .await?
        .into_iter()
        .map(|t| TimelineEntry {
            at: t.at,
            kind: t.kind,
            detail: t.detail,
        })
        .collect();
    let windows = r
        .call
        .sentiment
        .as_ref()
        .and_then(|s| s.get("windows"))
        .map(|w| {
            Value::Array(
                w.as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        let p = w.get("score").and_then(Value::as_f64).unwrap_or(0.0);
                        json!({"start": w.get("start"), "end": w.get("end"), "label": w.get("label"),
                               "score": ((p + 1.0) / 2.0 * 100.0).round() / 100.0})
                    })
                    .collect(),
            )
        });
    Ok(Json(CallDetails {
        call: item(&r.call, Utc::now()),
        agent_version_id: r.call.agent_version_id.clone(),
        answered_at: r.call.answered_at,
        ended_at: r.call.ended_at,
        routing_decision: r.routing,
        answered_by: r.answered_by,
        placement: r.placement,
        handoff: r.handoff,
        requested_by: r.requested_by,
        metadata: r.metadata,
        sentiment_windows: windows,
        summary: r.call.summary.clone(),
        has_recording: r.recording.is_some(),
        transcript_segments: r.segments,
        tool_calls: r.tool_calls,
        runtime_errors: r.runtime_errors,
        reaped_reason: r.reaped_reason,
        degraded: r.degraded,
        timeline,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TranscriptQuery {
    /// The `cursor` of the previous poll: only segments that arrived since are returned.
    pub cursor: Option<String>,
    /// Alternative to `cursor`: segments that arrived after this one.
    pub since_segment_id: Option<String>,
    /// 1–1000, default 500.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Segment {
    pub segment_id: String,
    pub speaker: String,
    pub text: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub confidence: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct Transcript {
    pub call_id: String,
    /// New segments, in speaker order (by `started_at`).
    pub items: Vec<Segment>,
    /// Pass back as `cursor` on the next poll.
    pub cursor: String,
    /// The call ended and every segment is in.
    pub is_complete: bool,
}

fn transcript_cursor(ordinal: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("seg:{ordinal}"))
}

fn decode_transcript_cursor(c: &str) -> Option<i64> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix("seg:")?
        .parse()
        .ok()
}

/// The live transcript with the cursor protocol of Appendix D.2: a poll with the last `cursor`
/// returns only segments that arrived since (late segments included), in speaker order.
#[utoipa::path(get, path = "/calls/{callId}/transcript", tag = "calls", security(("bearer" = [])),
    params(("callId" = String, Path), TranscriptQuery),
    responses((status = 200, body = Transcript), (status = 404), (status = 422)))]
async fn transcript(
    State(pool): State<PgPool>,
    State(live): State<Arc<LiveCalls>>,
    me: Principal,
    Path(call_id): Path<String>,
    ApiQuery(q): ApiQuery<TranscriptQuery>,
) -> ApiResult<Json<Transcript>> {
    let limit = q.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 1000"));
    }
    let after = match (&q.cursor, &q.since_segment_id) {
        (Some(c), _) => Some(
            decode_transcript_cursor(c)
                .ok_or_else(|| ApiError::validation("cursor", "is not a cursor from this API"))?,
        ),
        (None, Some(_)) => None,
        (None, None) => Some(0),
    };
    let page = live
        .transcript_page(&pool, &call_id, after, q.since_segment_id.as_deref(), limit)
        .await?
        .ok_or_else(|| ApiError::not_found("call"))?;
    me.member_of(&page.call.establishment_id)
        .map_err(|_| ApiError::not_found("call"))?;
    let after = page
        .call
        .after
        .ok_or_else(|| ApiError::validation("since_segment_id", "is not a segment of this call"))?;
    let last = page
        .segments
        .iter()
        .map(|s| s.ordinal)
        .max()
        .unwrap_or(after);
    let mut items = page.segments;
    items.sort_by(|a, b| {
        (a.started_at, &a.segment_id, a.ordinal).cmp(&(b.started_at, &b.segment_id, b.ordinal))
    });
    Ok(Json(Transcript {
        call_id,
        is_complete: page.call.is_complete(last),
        items: items
            .into_iter()
            .map(|s| Segment {
                segment_id: s.segment_id,
                speaker: s.speaker,
                text: s.text,
                started_at: s.started_at,
                ended_at: s.ended_at,
                confidence: s.confidence,
            })
            .collect(),
        cursor: transcript_cursor(last),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct RecordingLink {
    pub call_id: String,
    /// Short-lived signed link to the media (valid until `expires_at`).
    pub url: String,
    pub expires_at: DateTime<Utc>,
    pub storage_provider: String,
    pub content_type: String,
}

/// How long a recording link stays valid.
pub const RECORDING_LINK_TTL_SECONDS: i64 = 300;

/// The call's recording reference with a short-lived signed link (members only).
#[utoipa::path(get, path = "/calls/{callId}/recording", tag = "calls", security(("bearer" = [])),
    params(("callId" = String, Path)),
    responses((status = 200, body = RecordingLink), (status = 404, description = "no such call or no recording yet")))]
async fn recording(
    State(pool): State<PgPool>,
    State(links): State<Arc<RecordingLinks>>,
    me: Principal,
    Path(call_id): Path<String>,
) -> ApiResult<Json<RecordingLink>> {
    let call = calls::details(&pool, &call_id)
        .await?
        .ok_or_else(|| ApiError::not_found("call"))?;
    me.member_of(&call.call.establishment_id)
        .map_err(|_| ApiError::not_found("call"))?;
    let rec: Value = call
        .recording
        .ok_or_else(|| ApiError::not_found("recording"))?;
    let expires_at = Utc::now() + Duration::seconds(RECORDING_LINK_TTL_SECONDS);
    Ok(Json(RecordingLink {
        url: links.link(&call_id, expires_at.timestamp()),
        expires_at,
        storage_provider: rec["storage_provider"].as_str().unwrap_or("").to_string(),
        content_type: rec["content_type"].as_str().unwrap_or("").to_string(),
        call_id,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MediaQuery {
    pub expires: i64,
    pub signature: String,
}

/// The signed media link: checks signature and expiry, then redirects to the stored media.
/// Needs no bearer token (an `<audio>` element can load it), only the signature.
#[utoipa::path(get, path = "/media/recordings/{callId}", tag = "calls",
    params(("callId" = String, Path), MediaQuery),
    responses((status = 302, description = "redirect to the media"), (status = 403, description = "bad or expired signature")))]
async fn recording_media(
    State(pool): State<PgPool>,
    State(links): State<Arc<RecordingLinks>>,
    Path(call_id): Path<String>,
    ApiQuery(q): ApiQuery<MediaQuery>,
) -> ApiResult<(StatusCode, HeaderMap)> {
    if !links.verify(&call_id, q.expires, &q.signature) {
        return Err(ApiError::forbidden("the link is invalid or has expired"));
    }
    let url = calls::recording_url(&pool, &call_id)
        .await?
        .ok_or_else(|| ApiError::not_found("recording"))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::LOCATION,
        url.parse()
            .map_err(|_| ApiError::internal("stored recording URL is not a header value"))?,
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        "private, no-store".parse().expect("static"),
    );
    Ok((StatusCode::FOUND, headers))
}

#[derive(Serialize, ToSchema)]
pub struct ToolLogItem {
    pub invocation: Option<i32>,
    pub tool_name: String,
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    pub called_at: Option<DateTime<Utc>>,
    pub result_at: Option<DateTime<Utc>>,
    pub latency_ms: Option<i64>,
    /// `ok`, `error`, or `pending` (no result yet).
    pub status: &'static str,
    /// `runtime` (reported by the runtime) or `proxy` (executed by the tool proxy).
    pub source: String,
    /// Tool-proxy invocations: the runtime's tool-call id, the integration and the version of
    /// its credentials used (never their value), and the provider's HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_version: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<i32>,
}

#[derive(Serialize, ToSchema)]
pub struct ToolLog {
    pub call_id: String,
    pub items: Vec<ToolLogItem>,
}

/// Tool calls paired with their results (arguments, result or error, latency).
#[utoipa::path(get, path = "/calls/{callId}/tool-log", tag = "calls", security(("bearer" = [])),
    params(("callId" = String, Path)), responses((status = 200, body = ToolLog), (status = 404)))]
async fn tool_log(
    State(pool): State<PgPool>,
    me: Principal,
    Path(call_id): Path<String>,
) -> ApiResult<Json<ToolLog>> {
    visible_call(&pool, &me, &call_id).await?;
    let rows = calls::tool_log(&pool, &call_id).await?;
    Ok(Json(ToolLog {
        call_id,
        items: rows
            .into_iter()
            .map(|r| {
                let error = r.error.filter(|e| !e.is_null());
                ToolLogItem {
                    invocation: r.invocation,
                    tool_name: r.tool_name,
                    arguments: r.arguments,
                    result: r.result.filter(|v| !v.is_null()),
                    status: match (&error, r.result_at) {
                        (Some(_), _) => "error",
                        (None, Some(_)) => "ok",
                        (None, None) => "pending",
                    },
                    error,
                    called_at: r.called_at,
                    result_at: r.result_at,
                    latency_ms: r.latency_ms,
                    source: r.source,
                    tool_call_id: r.tool_call_id,
                    integration_id: r.integration_id,
                    credential_version: r.credential_version,
                    provider_status: r.provider_status,
                }
            })
            .collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundRequest {
    pub establishment_id: String,
    pub agent_id: String,
    pub to_e164: String,
    /// One of the establishment's inbound numbers (default: its first).
    pub from_e164: Option<String>,
    /// Free JSON object kept with the call (at most 16 KB).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// `enable` or `detect_message_end`: answering-machine detection, reported asynchronously.
    pub machine_detection: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct OutboundResponse {
    pub call_id: String,
    pub status: String,
    pub establishment_id: String,
    pub agent_id: String,
    pub direction: String,
    pub from_e164: String,
    pub to_e164: String,
}

/// Places an outbound call (operators and admins). With an `Idempotency-Key` header the same
/// key answers the same call and never dials twice.
#[utoipa::path(post, path = "/calls/outbound", tag = "calls", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe: same key, same call")),
    request_body = OutboundRequest,
    responses((status = 201, body = OutboundResponse), (status = 200, body = OutboundResponse, description = "replay of an earlier request with the same Idempotency-Key"),
              (status = 403), (status = 404), (status = 409, description = "no published version, runtime unavailable, or key reused with another request"),
              (status = 422, description = "invalid or blacklisted number"), (status = 503, description = "Twilio is not configured")))]
async fn outbound_call(
    State(outbound): State<Arc<OutboundCalls>>,
    RequestId(request_id): RequestId,
    me: Principal,
    headers: HeaderMap,
    ApiJson(req): ApiJson<OutboundRequest>,
) -> ApiResult<(StatusCode, HeaderMap, Json<OutboundResponse>)> {
    me.require(&req.establishment_id, Role::Operator)?;
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::trim).map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::validation("Idempotency-Key", "must be visible ASCII"))?;
    if let Some(k) = &idempotency_key {
        if k.is_empty() || k.len() > 255 {
            return Err(ApiError::validation(
                "Idempotency-Key",
                "must be 1 to 255 characters",
            ));
        }
    }
    let to: E164 = req
        .to_e164
        .parse()
        .map_err(|e: aggregates::common::ParseError| ApiError::validation("to_e164", e.message))?;
    let from = req
        .from_e164
        .as_deref()
        .map(|f| {
            f.parse::<E164>()
                .map_err(|e: aggregates::common::ParseError| {
                    ApiError::validation("from_e164", e.message)
                })
        })
        .transpose()?;
    let machine_detection = req
        .machine_detection
        .as_deref()
        .map(str::parse::<MachineDetection>)
        .transpose()?;
    let (queued, replayed) = outbound
        .request(crate::application::outbound_call::OutboundRequest {
            user_id: me.user_id.clone(),
            request_id,
            establishment_id: req.establishment_id,
            agent_id: req.agent_id,
            to,
            from,
            pinned_version: None,
            metadata: req.metadata.unwrap_or_default(),
            machine_detection,
            idempotency_key,
            campaign: None,
            at: None,
        })
        .await?;
    let mut headers = HeaderMap::new();
    if replayed {
        headers.insert("idempotent-replayed", "true".parse().expect("static"));
        return Ok((StatusCode::OK, headers, Json(queued.into())));
    }
    Ok((StatusCode::CREATED, headers, Json(queued.into())))
}

impl From<QueuedCall> for OutboundResponse {
    fn from(q: QueuedCall) -> Self {
        Self {
            call_id: q.call_id,
            status: q.status,
            establishment_id: q.establishment_id,
            agent_id: q.agent_id,
            direction: q.direction,
            from_e164: q.from_e164,
            to_e164: q.to_e164,
        }
    }
}

/// The answer to an outbound call the domain refused.
fn outbound_refused(r: &OutboundRefusal) -> ApiError {
    match r {
        OutboundRefusal::AgentNotInEstablishment => ApiError::not_found("agent"),
        OutboundRefusal::NoPublishedVersion => {
            ApiError::conflict("no_published_version", r.to_string())
        }
        OutboundRefusal::VersionNotCallable { .. } => {
            ApiError::conflict("version_not_callable", r.to_string())
        }
        OutboundRefusal::Blacklisted => {
            ApiError::validation("to_e164", "is on the establishment's blacklist")
        }
        OutboundRefusal::CallerIdNotOwned => {
            ApiError::validation("from_e164", "must be one of the establishment's numbers")
        }
        OutboundRefusal::NoCallerId => {
            ApiError::validation("from_e164", "the establishment has no number to call from")
        }
    }
}

impl From<OutboundError> for ApiError {
    fn from(e: OutboundError) -> Self {
        match e {
            OutboundError::Refused(r) => outbound_refused(&r),
            OutboundError::Invalid(i) => i.into(),
            e @ OutboundError::TwilioNotConfigured => {
                ApiError::unavailable("twilio_not_configured", e.to_string())
            }
            e @ OutboundError::RuntimeUnavailable(_) => {
                ApiError::conflict("runtime_unavailable", e.to_string())
            }
            OutboundError::Command(e) => e.into(),
            OutboundError::Unexpected(e) => e.into(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffRequestBody {
    /// Why, e.g. `customer_requested_human` (1–200 characters).
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct HandoffResponse {
    pub call_id: String,
    pub status: &'static str,
    pub handoff_e164: String,
}

/// Transfers a live call to the establishment's handoff number (Appendix A.5). 409 when the
/// call is not in progress or no handoff number is configured.
#[utoipa::path(post, path = "/calls/{callId}/handoff", tag = "calls", security(("bearer" = [])),
    params(("callId" = String, Path)), request_body = HandoffRequestBody,
    responses((status = 200, body = HandoffResponse), (status = 403), (status = 404),
              (status = 409, description = "not in progress, handoff under way, or no handoff number"), (status = 422)))]
async fn handoff(
    State(pool): State<PgPool>,
    State(handoffs): State<Arc<Handoffs>>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(call_id): Path<String>,
    ApiJson(req): ApiJson<HandoffRequestBody>,
) -> ApiResult<Json<HandoffResponse>> {
    let establishment_id = visible_call(&pool, &me, &call_id).await?;
    me.require(&establishment_id, Role::Operator)?;
    let to = handoffs
        .request(HandoffRequest {
            user_id: me.user_id.clone(),
            request_id,
            call_id: call_id.clone(),
            establishment_id,
            reason: req.reason,
        })
        .await
        .map_err(|e| match e {
            HandoffError::Invalid(i) => i.into(),
            e @ HandoffError::NoHandoffNumber => {
                ApiError::conflict("no_handoff_number", e.to_string())
            }
            HandoffError::Command(e) => e.into(),
            HandoffError::Unexpected(e) => ApiError::from(e),
        })?;
    Ok(Json(HandoffResponse {
        call_id,
        status: "handoff_initiated",
        handoff_e164: to.as_str().to_string(),
    }))
}
