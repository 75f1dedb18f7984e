//! Calls for the UI (polling): active calls, history with filters and a cursor, details with
//! the timeline, transcript (cursor protocol of Appendix D.2), recording (short-lived signed
//! link), tool log; and the two call actions: outbound calls and handoff to a human.

use aggregates::agent::Agent;
use aggregates::call::{
    Call, CallCommand, CallError, CallStatus, Direction, MachineDetection, OutboundFacts,
    OutboundRefusal, Requester,
};
use aggregates::common::{Role, E164};
use aggregates::telephony::Telephony;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::{ApiJson, ApiQuery, ReqId};
use crate::store::{Actor, CommandContext, ExecError, ExecOptions, IdempotencyClaim, Outcome};

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

const CALL_COLUMNS: &str = "id, provider, provider_call_sid, establishment_id, agent_id, agent_version_id, status,
    direction, from_party, to_party, started_at, answered_at, ended_at, duration_seconds, sentiment, summary";

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

/// Seconds of the call: final when it is over, computed at read time while it runs (talk time
/// once answered, else time since it started).
fn duration(r: &PgRow, now: DateTime<Utc>) -> i64 {
    if let Some(d) = r.get::<Option<i32>, _>("duration_seconds") {
        if r.get::<Option<DateTime<Utc>>, _>("ended_at").is_some() {
            return d as i64;
        }
    }
    let from = r
        .get::<Option<DateTime<Utc>>, _>("answered_at")
        .unwrap_or_else(|| r.get("started_at"));
    let until = r.get::<Option<DateTime<Utc>>, _>("ended_at").unwrap_or(now);
    (until - from).num_seconds().max(0)
}

fn item(r: &PgRow, now: DateTime<Utc>) -> CallItem {
    CallItem {
        call_id: r.get("id"),
        provider: r.get("provider"),
        provider_call_sid: r.get("provider_call_sid"),
        establishment_id: r.get("establishment_id"),
        agent_id: r.get("agent_id"),
        status: r.get("status"),
        direction: r.get("direction"),
        from_e164: r.get("from_party"),
        to_e164: r.get("to_party"),
        started_at: r.get("started_at"),
        duration_seconds: duration(r, now),
        sentiment: sentiment(r.get("sentiment")),
    }
}

#[derive(Deserialize, IntoParams)]
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
fn scope(me: &Principal, establishment_id: Option<&String>) -> ApiResult<Option<Vec<String>>> {
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
    State(state): State<AppState>,
    me: Principal,
    ApiQuery(q): ApiQuery<ActiveQuery>,
) -> ApiResult<Json<ActiveCalls>> {
    let scope = scope(&me, q.establishment_id.as_ref())?;
    let limit = q.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 1000"));
    }
    let rows = sqlx::query(&format!(
        "SELECT {CALL_COLUMNS} FROM rm_calls
         WHERE active AND ($1::text[] IS NULL OR establishment_id = ANY($1))
         ORDER BY started_at DESC, id DESC LIMIT $2"
    ))
    .bind(&scope)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    let now = Utc::now();
    Ok(Json(ActiveCalls {
        items: rows.iter().map(|r| item(r, now)).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
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
    State(state): State<AppState>,
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
    let rows = sqlx::query(&format!(
        "SELECT {CALL_COLUMNS} FROM rm_calls
         WHERE ($1::text[] IS NULL OR establishment_id = ANY($1))
           AND ($2::text IS NULL OR agent_id = $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::text IS NULL OR direction = $4)
           AND ($5::text IS NULL OR from_party = $5)
           AND ($6::text IS NULL OR to_party = $6)
           AND ($7::timestamptz IS NULL OR started_at >= $7)
           AND ($8::timestamptz IS NULL OR started_at < $8)
           AND ($9::timestamptz IS NULL OR (started_at, id) < ($9, $10))
         ORDER BY started_at DESC, id DESC LIMIT $11"
    ))
    .bind(&scope)
    .bind(&q.agent_id)
    .bind(&q.status)
    .bind(&q.direction)
    .bind(&q.from_e164)
    .bind(&q.to_e164)
    .bind(q.started_after)
    .bind(q.started_before)
    .bind(after.as_ref().map(|a| a.0))
    .bind(after.as_ref().map(|a| a.1.clone()))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
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

/// Loads a call row the caller may see (404 otherwise).
async fn visible_call(state: &AppState, me: &Principal, call_id: &str) -> ApiResult<PgRow> {
    let row = sqlx::query("SELECT * FROM rm_calls WHERE id = $1")
        .bind(call_id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("call"))?;
    me.member_of(row.get::<&str, _>("establishment_id"))
        .map_err(|_| ApiError::not_found("call"))?;
    Ok(row)
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
    pub timeline: Vec<TimelineEntry>,
}

/// One call with its routing decision, agent version, AMD result, handoff, sentiment, summary
/// and the timeline of its lifecycle events.
#[utoipa::path(get, path = "/calls/{callId}", tag = "calls", security(("bearer" = [])),
    params(("callId" = String, Path)), responses((status = 200, body = CallDetails), (status = 404)))]
async fn get_call(
    State(state): State<AppState>,
    me: Principal,
    Path(call_id): Path<String>,
) -> ApiResult<Json<CallDetails>> {
    let r = visible_call(&state, &me, &call_id).await?;
    let timeline = sqlx::query(
        "SELECT at, kind, detail FROM rm_call_timeline WHERE call_id = $1 ORDER BY sequence",
    )
    .bind(&call_id)
    .fetch_all(&state.pool)
    .await?
    .iter()
    .map(|t| TimelineEntry {
        at: t.get("at"),
        kind: t.get("kind"),
        detail: t.get("detail"),
    })
    .collect();
    let sentiment_raw: Option<Value> = r.get("sentiment");
    let windows = sentiment_raw
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
        call: item(&r, Utc::now()),
        agent_version_id: r.get("agent_version_id"),
        answered_at: r.get("answered_at"),
        ended_at: r.get("ended_at"),
        routing_decision: r.get("routing"),
        answered_by: r.get("answered_by"),
        placement: r.get("placement"),
        handoff: r.get("handoff"),
        requested_by: r.get("requested_by"),
        metadata: r.get("metadata"),
        sentiment_windows: windows,
        summary: r.get("summary"),
        has_recording: r.get::<Option<Value>, _>("recording").is_some(),
        transcript_segments: r.get("segments"),
        tool_calls: r.get("tool_calls"),
        runtime_errors: r.get("runtime_errors"),
        reaped_reason: r.get("reaped_reason"),
        timeline,
    }))
}

#[derive(Deserialize, IntoParams)]
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
    State(state): State<AppState>,
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
    // The call and the page of segments in one statement (one round trip, one snapshot: the
    // counters and the rows agree). `since_segment_id` is resolved inside it too.
    let rows = sqlx::query(
        "WITH c AS (
             SELECT id, establishment_id, segments, expected_segments, runtime_ended, active, runtime_started,
                    coalesce($2, (SELECT min(ordinal) FROM rm_transcript_segments
                                  WHERE call_id = $1 AND segment_id = $4)) AS after
             FROM rm_calls WHERE id = $1
         )
         SELECT c.establishment_id, c.segments, c.expected_segments, c.runtime_ended, c.active,
                c.runtime_started, c.after, s.ordinal, s.segment_id, s.speaker, s.text, s.started_at,
                s.ended_at, s.confidence
         FROM c LEFT JOIN LATERAL (
             SELECT ordinal, segment_id, speaker, text, started_at, ended_at, confidence
             FROM rm_transcript_segments WHERE call_id = c.id AND ordinal > c.after
             ORDER BY ordinal LIMIT $3
         ) s ON true",
    )
    .bind(&call_id)
    .bind(after)
    .bind(limit)
    .bind(q.since_segment_id.as_deref())
    .fetch_all(&state.pool)
    .await?;
    let call = rows.first().ok_or_else(|| ApiError::not_found("call"))?;
    me.member_of(call.get::<&str, _>("establishment_id"))
        .map_err(|_| ApiError::not_found("call"))?;
    let after: i64 = call
        .get::<Option<i64>, _>("after")
        .ok_or_else(|| ApiError::validation("since_segment_id", "is not a segment of this call"))?;
    let rows: Vec<&PgRow> = rows
        .iter()
        .filter(|r| r.get::<Option<i64>, _>("ordinal").is_some())
        .collect();
    let last = rows
        .iter()
        .map(|r| r.get::<i64, _>("ordinal"))
        .max()
        .unwrap_or(after);
    let mut items: Vec<(i64, Segment)> = rows
        .iter()
        .map(|r| {
            (
                r.get("ordinal"),
                Segment {
                    segment_id: r.get("segment_id"),
                    speaker: r.get("speaker"),
                    text: r.get("text"),
                    started_at: r.get("started_at"),
                    ended_at: r.get("ended_at"),
                    confidence: r.get("confidence"),
                },
            )
        })
        .collect();
    items.sort_by(|a, b| {
        (a.1.started_at, &a.1.segment_id, a.0).cmp(&(b.1.started_at, &b.1.segment_id, b.0))
    });
    let segments: i64 = call.get("segments");
    let expected: Option<i64> = call.get("expected_segments");
    let ended = call.get::<bool, _>("runtime_ended")
        || (!call.get::<bool, _>("active")
            && !call.get::<bool, _>("runtime_started")
            && segments == 0);
    let all_in = expected.is_none_or(|n| segments >= n);
    Ok(Json(Transcript {
        call_id,
        is_complete: ended && all_in && last >= segments,
        items: items.into_iter().map(|(_, s)| s).collect(),
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

fn recording_signature(state: &AppState, call_id: &str, expires: i64) -> String {
    let mut h = Sha256::new();
    h.update(state.link_key.as_slice());
    h.update(call_id.as_bytes());
    h.update(expires.to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// The call's recording reference with a short-lived signed link (members only).
#[utoipa::path(get, path = "/calls/{callId}/recording", tag = "calls", security(("bearer" = [])),
    params(("callId" = String, Path)),
    responses((status = 200, body = RecordingLink), (status = 404, description = "no such call or no recording yet")))]
async fn recording(
    State(state): State<AppState>,
    me: Principal,
    Path(call_id): Path<String>,
) -> ApiResult<Json<RecordingLink>> {
    let call = visible_call(&state, &me, &call_id).await?;
    let rec: Value = call
        .get::<Option<Value>, _>("recording")
        .ok_or_else(|| ApiError::not_found("recording"))?;
    let expires_at = Utc::now() + Duration::seconds(RECORDING_LINK_TTL_SECONDS);
    let expires = expires_at.timestamp();
    let sig = recording_signature(&state, &call_id, expires);
    Ok(Json(RecordingLink {
        url: format!(
            "{}/media/recordings/{call_id}?expires={expires}&signature={sig}",
            state.config.public_base_url()
        ),
        expires_at,
        storage_provider: rec["storage_provider"].as_str().unwrap_or("").to_string(),
        content_type: rec["content_type"].as_str().unwrap_or("").to_string(),
        call_id,
    }))
}

#[derive(Deserialize, IntoParams)]
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
    State(state): State<AppState>,
    Path(call_id): Path<String>,
    ApiQuery(q): ApiQuery<MediaQuery>,
) -> ApiResult<(StatusCode, HeaderMap)> {
    let expected = recording_signature(&state, &call_id, q.expires);
    let ok: bool =
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), q.signature.as_bytes()).into();
    if !ok || q.expires < Utc::now().timestamp() {
        return Err(ApiError::forbidden("the link is invalid or has expired"));
    }
    let url: Option<String> =
        sqlx::query_scalar("SELECT recording->>'recording_url' FROM rm_calls WHERE id = $1")
            .bind(&call_id)
            .fetch_optional(&state.pool)
            .await?
            .flatten();
    let url = url.ok_or_else(|| ApiError::not_found("recording"))?;
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
    State(state): State<AppState>,
    me: Principal,
    Path(call_id): Path<String>,
) -> ApiResult<Json<ToolLog>> {
    visible_call(&state, &me, &call_id).await?;
    let rows = sqlx::query(
        "SELECT invocation, tool_name, arguments, result, error, called_at, result_at, latency_ms
         FROM rm_tool_log WHERE call_id = $1 ORDER BY sequence",
    )
    .bind(&call_id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(ToolLog {
        call_id,
        items: rows
            .iter()
            .map(|r| {
                let error: Option<Value> =
                    r.get::<Option<Value>, _>("error").filter(|e| !e.is_null());
                let result_at: Option<DateTime<Utc>> = r.get("result_at");
                ToolLogItem {
                    invocation: r.get("invocation"),
                    tool_name: r.get("tool_name"),
                    arguments: r.get("arguments"),
                    result: r.get::<Option<Value>, _>("result").filter(|v| !v.is_null()),
                    status: match (&error, result_at) {
                        (Some(_), _) => "error",
                        (None, Some(_)) => "ok",
                        (None, None) => "pending",
                    },
                    error,
                    called_at: r.get("called_at"),
                    result_at,
                    latency_ms: r.get("latency_ms"),
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
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    headers: HeaderMap,
    ApiJson(req): ApiJson<OutboundRequest>,
) -> ApiResult<(StatusCode, HeaderMap, Json<OutboundResponse>)> {
    me.require(&req.establishment_id, Role::Operator)?;
    let idem_key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::trim).map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::validation("Idempotency-Key", "must be visible ASCII"))?;
    if let Some(k) = &idem_key {
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
    let machine_detection = req
        .machine_detection
        .as_deref()
        .map(str::parse::<MachineDetection>)
        .transpose()?;
    let metadata = req.metadata.clone().unwrap_or_default();
    if serde_json::to_vec(&metadata).map(|v| v.len()).unwrap_or(0) > 16 * 1024 {
        return Err(ApiError::validation(
            "metadata",
            "must be at most 16 KB of JSON",
        ));
    }
    let requested_from: Option<E164> = req
        .from_e164
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: aggregates::common::ParseError| {
            ApiError::validation("from_e164", e.message)
        })?;
    // The agent and the establishment's telephony decide whether the call may be made (the
    // version, the caller id, the blacklist); the call refuses on their answers.
    let (telephony, _) = state.bus.load::<Telephony>(&req.establishment_id).await?;
    let (agent, _) = state.bus.load::<Agent>(&req.agent_id).await?;
    let facts = OutboundFacts::gather(
        &telephony,
        &agent,
        &req.establishment_id,
        requested_from.as_ref(),
        &to,
        None,
    );
    // What the answer says if the call is queued (a refused call answers the refusal instead).
    let from_e164 = facts
        .caller_id
        .as_ref()
        .map(|f| f.as_str().to_string())
        .unwrap_or_default();
    if state.twilio.is_none() {
        return Err(ApiError::unavailable(
            "twilio_not_configured",
            "outbound calls need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        ));
    }
    let runtime = crate::calls::runtime_of(&state.pool, &req.establishment_id).await?;
    if let Some(reason) = runtime.as_ref().map_or(
        Some(aggregates::call::RuntimeUnavailableReason::Missing),
        |r| r.unavailable(),
    ) {
        return Err(ApiError::conflict(
            "runtime_unavailable",
            format!("the establishment's runtime cannot take calls ({reason})"),
        ));
    }
    let call_id = crate::ids::new_id("call");
    let response = OutboundResponse {
        call_id: call_id.clone(),
        status: "queued".into(),
        establishment_id: req.establishment_id.clone(),
        agent_id: req.agent_id.clone(),
        direction: "outbound".into(),
        from_e164,
        to_e164: to.as_str().into(),
    };
    let options = match &idem_key {
        Some(k) => {
            let body = json!({"establishment_id": req.establishment_id, "agent_id": req.agent_id,
                "to_e164": to, "from_e164": req.from_e164, "metadata": metadata, "machine_detection": req.machine_detection});
            ExecOptions::idempotent(IdempotencyClaim {
                key: format!("outbound:{}:{}:{k}", req.establishment_id, me.user_id),
                request_hash: hex::encode(Sha256::digest(body.to_string().as_bytes())),
                response: serde_json::to_value(&response).map_err(ApiError::internal)?,
            })
        }
        None => ExecOptions::default(),
    }
    .fresh();
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&req.establishment_id);
    let outcome = state
        .bus
        .execute::<Call>(
            &call_id,
            CallCommand::QueueOutbound {
                call_id: call_id.clone(),
                establishment_id: req.establishment_id.clone(),
                agent_id: req.agent_id.clone(),
                to,
                facts,
                requested_by: Requester::User {
                    user_id: me.user_id.clone(),
                },
                metadata,
                machine_detection,
                time_limit_seconds: None,
                at: Utc::now(),
            },
            &ctx,
            options,
        )
        .await
        .map_err(|e| match e {
            ExecError::Domain(CallError::OutboundRefused(r)) => outbound_refused(&r),
            e => e.into(),
        })?;
    let mut headers = HeaderMap::new();
    if let Outcome::Duplicate(record) = &outcome {
        headers.insert("idempotent-replayed", "true".parse().expect("static"));
        let first: OutboundResponse =
            serde_json::from_value(record.response.clone()).map_err(ApiError::internal)?;
        return Ok((StatusCode::OK, headers, Json(first)));
    }
    state.visible(&outcome).await;
    state.placer.enqueue(&call_id);
    Ok((StatusCode::CREATED, headers, Json(response)))
}

/// The answer to an outbound call the domain refused.
fn outbound_refused(r: &OutboundRefusal) -> ApiError {
    match r {
        OutboundRefusal::AgentNotInEstablishment => ApiError::not_found("agent"),
        OutboundRefusal::NoPublishedVersion => ApiError::conflict(
            "no_published_version",
            "the agent has no published version to call with",
        ),
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffRequest {
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
    params(("callId" = String, Path)), request_body = HandoffRequest,
    responses((status = 200, body = HandoffResponse), (status = 403), (status = 404),
              (status = 409, description = "not in progress, handoff under way, or no handoff number"), (status = 422)))]
async fn handoff(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(call_id): Path<String>,
    ApiJson(req): ApiJson<HandoffRequest>,
) -> ApiResult<Json<HandoffResponse>> {
    let row = visible_call(&state, &me, &call_id).await?;
    let establishment_id: String = row.get("establishment_id");
    me.require(&establishment_id, Role::Operator)?;
    let reason = aggregates::common::bounded_text("reason", &req.reason, 200)?;
    let handoff_e164: Option<String> =
        sqlx::query_scalar("SELECT handoff_e164 FROM rm_telephony WHERE establishment_id = $1")
            .bind(&establishment_id)
            .fetch_optional(&state.pool)
            .await?
            .flatten();
    let Some(to) = handoff_e164.and_then(|h| h.parse::<E164>().ok()) else {
        return Err(ApiError::conflict(
            "no_handoff_number",
            "the establishment has no handoff number configured",
        ));
    };
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&establishment_id);
    let outcome = state
        .bus
        .execute::<Call>(
            &call_id,
            CallCommand::RequestHandoff {
                reason,
                to: to.clone(),
                requested_by: Requester::User {
                    user_id: me.user_id.clone(),
                },
                at: Utc::now(),
            },
            &ctx,
            ExecOptions::default(),
        )
        .await?;
    let sid = outcome.state().and_then(|c| c.call_sid.clone());
    state.visible(&outcome).await;
    if let (Some(sid), Outcome::Applied { .. }) = (sid, &outcome) {
        let caller_id: Option<String> = row
            .get::<String, _>(if row.get::<&str, _>("direction") == "inbound" {
                "to_party"
            } else {
                "from_party"
            })
            .into();
        tokio::spawn(crate::calls::workers::hand_off(
            state.clone(),
            call_id.clone(),
            sid,
            to.as_str().to_string(),
            caller_id,
        ));
    }
    Ok(Json(HandoffResponse {
        call_id,
        status: "handoff_initiated",
        handoff_e164: to.as_str().to_string(),
    }))
}
