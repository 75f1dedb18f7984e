//! Typed reads of the call read models (`rm_calls`, `rm_call_timeline`,
//! `rm_transcript_segments`, `rm_tool_log`): the only place outside the projector that names
//! these tables. The API and the workers ask these functions; rows come back as `FromRow`
//! structs, so a renamed column fails here, at compile-checked decode, not in a handler.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgPool};

/// A call as listed (history, active calls).
#[derive(Debug, Clone, FromRow)]
pub struct CallRow {
    pub id: String,
    pub provider: String,
    pub provider_call_sid: Option<String>,
    pub establishment_id: String,
    pub agent_id: Option<String>,
    pub agent_version_id: Option<String>,
    pub status: String,
    pub direction: String,
    pub from_party: String,
    pub to_party: String,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<i32>,
    pub sentiment: Option<Value>,
    pub summary: Option<Value>,
}

impl CallRow {
    /// Seconds of the call: final when it is over, computed as of `now` while it runs (talk
    /// time once answered, else time since it started).
    pub fn duration_at(&self, now: DateTime<Utc>) -> i64 {
        if let (Some(d), Some(_)) = (self.duration_seconds, self.ended_at) {
            return d as i64;
        }
        let from = self.answered_at.unwrap_or(self.started_at);
        let until = self.ended_at.unwrap_or(now);
        (until - from).num_seconds().max(0)
    }
}

pub(crate) const CALL_COLUMNS: &str =
    "id, provider, provider_call_sid, establishment_id, agent_id, agent_version_id,
    status, direction, from_party, to_party, started_at, answered_at, ended_at, duration_seconds,
    sentiment, summary";

/// Everything `GET /calls/{id}` shows.
#[derive(Debug, Clone, FromRow)]
pub struct CallDetailRow {
    #[sqlx(flatten)]
    pub call: CallRow,
    pub routing: Option<Value>,
    pub answered_by: Option<String>,
    pub placement: Option<Value>,
    pub handoff: Option<Value>,
    pub requested_by: Option<Value>,
    pub metadata: Option<Value>,
    pub recording: Option<Value>,
    pub segments: i64,
    pub tool_calls: i32,
    pub runtime_errors: i32,
    pub reaped_reason: Option<String>,
    /// Some event of this call was set aside by a projector and not resolved (dead letter):
    /// the read models may miss part of it.
    pub degraded: bool,
}

/// Which establishments a read may see: `None` = all (platform admins).
pub type Scope<'a> = Option<&'a [String]>;

/// Calls in progress, newest first.
pub async fn active(pool: &PgPool, scope: Scope<'_>, limit: i64) -> sqlx::Result<Vec<CallRow>> {
    sqlx::query_as(&format!(
        "SELECT {CALL_COLUMNS} FROM rm_calls
         WHERE active AND ($1::text[] IS NULL OR establishment_id = ANY($1))
         ORDER BY started_at DESC, id DESC LIMIT $2"
    ))
    .bind(scope)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Filters of the call history; every `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub agent_id: Option<String>,
    pub status: Option<String>,
    pub direction: Option<String>,
    pub from_e164: Option<String>,
    pub to_e164: Option<String>,
    pub started_after: Option<DateTime<Utc>>,
    pub started_before: Option<DateTime<Utc>>,
    /// Only calls strictly older than this (started_at, id): the page cursor.
    pub before: Option<(DateTime<Utc>, String)>,
    /// Only calls a campaign placed.
    pub campaign_id: Option<String>,
    /// Only calls to a lead (placed by a campaign).
    pub lead_id: Option<String>,
}

/// Call history, newest first: at most `limit` rows.
pub async fn history(
    pool: &PgPool,
    scope: Scope<'_>,
    f: &HistoryFilter,
    limit: i64,
) -> sqlx::Result<Vec<CallRow>> {
    history_of(pool, scope, f, limit, CALL_COLUMNS).await
}

/// A call as exported (`GET /calls/export`): the listed columns and whether it was handed
/// off to a human (as reports count it: docs/reports.md).
#[derive(Debug, Clone, FromRow)]
pub struct ExportRow {
    #[sqlx(flatten)]
    pub call: CallRow,
    pub handoff: bool,
    /// The campaign that placed the call, if one did.
    pub campaign_id: Option<String>,
}

/// A page of the export, newest first (the history's filters).
pub async fn export_page(
    pool: &PgPool,
    scope: Scope<'_>,
    f: &HistoryFilter,
    limit: i64,
) -> sqlx::Result<Vec<ExportRow>> {
    let columns = format!(
        "{}, campaign_id, coalesce((SELECT r.handoff FROM rm_report_calls r WHERE r.call_id = rm_calls.id),
                      false) AS handoff",
        CALL_COLUMNS
    );
    history_of(pool, scope, f, limit, &columns).await
}

async fn history_of<T>(
    pool: &PgPool,
    scope: Scope<'_>,
    f: &HistoryFilter,
    limit: i64,
    columns: &str,
) -> sqlx::Result<Vec<T>>
where
    T: for<'r> FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(&format!(
        "SELECT {columns} FROM rm_calls
         WHERE ($1::text[] IS NULL OR establishment_id = ANY($1))
           AND ($2::text IS NULL OR agent_id = $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::text IS NULL OR direction = $4)
           AND ($5::text IS NULL OR from_party = $5)
           AND ($6::text IS NULL OR to_party = $6)
           AND ($7::timestamptz IS NULL OR started_at >= $7)
           AND ($8::timestamptz IS NULL OR started_at < $8)
           AND ($9::timestamptz IS NULL OR (started_at, id) < ($9, $10))
           AND ($12::text IS NULL OR campaign_id = $12)
           AND ($13::text IS NULL OR lead_id = $13)
         ORDER BY started_at DESC, id DESC LIMIT $11"
    ))
    .bind(scope)
    .bind(&f.agent_id)
    .bind(&f.status)
    .bind(&f.direction)
    .bind(&f.from_e164)
    .bind(&f.to_e164)
    .bind(f.started_after)
    .bind(f.started_before)
    .bind(f.before.as_ref().map(|b| b.0))
    .bind(f.before.as_ref().map(|b| b.1.clone()))
    .bind(limit)
    .bind(&f.campaign_id)
    .bind(&f.lead_id)
    .fetch_all(pool)
    .await
}

/// One call with its details.
pub async fn details(pool: &PgPool, call_id: &str) -> sqlx::Result<Option<CallDetailRow>> {
    sqlx::query_as(&format!(
        "SELECT {CALL_COLUMNS}, routing, answered_by, placement, handoff, requested_by, metadata,
                recording, segments, tool_calls, runtime_errors, reaped_reason,
                EXISTS (SELECT 1 FROM projector_dead_letters d
                        WHERE d.aggregate_type = 'Call' AND d.aggregate_id = rm_calls.id
                          AND NOT d.resolved) AS degraded
         FROM rm_calls WHERE id = $1"
    ))
    .bind(call_id)
    .fetch_optional(pool)
    .await
}

/// The establishment a call belongs to.
pub async fn establishment_of(pool: &PgPool, call_id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT establishment_id FROM rm_calls WHERE id = $1")
        .bind(call_id)
        .fetch_optional(pool)
        .await
}

#[derive(Debug, Clone, FromRow)]
pub struct TimelineRow {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub detail: Value,
}

/// A call's lifecycle, in event order.
pub async fn timeline(pool: &PgPool, call_id: &str) -> sqlx::Result<Vec<TimelineRow>> {
    sqlx::query_as(
        "SELECT at, kind, detail FROM rm_call_timeline WHERE call_id = $1 ORDER BY sequence",
    )
    .bind(call_id)
    .fetch_all(pool)
    .await
}

/// The call's side of a transcript poll.
#[derive(Debug, Clone, FromRow)]
pub struct TranscriptCall {
    pub establishment_id: String,
    pub segments: i64,
    pub expected_segments: Option<i64>,
    pub runtime_ended: bool,
    pub runtime_started: bool,
    pub active: bool,
    /// The ordinal the page starts after (`None`: `since_segment_id` is not a segment here).
    pub after: Option<i64>,
}

impl TranscriptCall {
    /// The call is over and every segment the runtime announced is in, up to `last`.
    pub fn is_complete(&self, last: i64) -> bool {
        let ended =
            self.runtime_ended || (!self.active && !self.runtime_started && self.segments == 0);
        let all_in = self.expected_segments.is_none_or(|n| self.segments >= n);
        ended && all_in && last >= self.segments
    }
}

/// A stored transcript segment (`ordinal` is its arrival order in the call: the cursor).
#[derive(Debug, Clone, FromRow)]
pub struct SegmentRow {
    pub ordinal: i64,
    pub segment_id: String,
    pub speaker: String,
    pub text: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub confidence: Option<f64>,
}

/// One transcript poll: the call and the segments that arrived after the cursor.
#[derive(Debug, Clone)]
pub struct TranscriptPage {
    pub call: TranscriptCall,
    /// In arrival order.
    pub segments: Vec<SegmentRow>,
}

#[derive(FromRow)]
struct TranscriptJoin {
    #[sqlx(flatten)]
    call: TranscriptCall,
    ordinal: Option<i64>,
    segment_id: Option<String>,
    speaker: Option<String>,
    text: Option<String>,
    seg_started_at: Option<DateTime<Utc>>,
    seg_ended_at: Option<DateTime<Utc>>,
    confidence: Option<f64>,
}

/// The call and a page of its segments after ordinal `after` (or after the segment
/// `since_segment_id` when `after` is `None`), in one statement: one round trip, one snapshot,
/// so the counters and the rows agree. `None` when the call does not exist.
pub async fn transcript_page(
    pool: &PgPool,
    call_id: &str,
    after: Option<i64>,
    since_segment_id: Option<&str>,
    limit: i64,
) -> sqlx::Result<Option<TranscriptPage>> {
    let rows: Vec<TranscriptJoin> = sqlx::query_as(
        "WITH c AS (
             SELECT id, establishment_id, segments, expected_segments, runtime_ended, active, runtime_started,
                    coalesce($2, (SELECT min(ordinal) FROM rm_transcript_segments
                                  WHERE call_id = $1 AND segment_id = $4)) AS after
             FROM rm_calls WHERE id = $1
         )
         SELECT c.establishment_id, c.segments, c.expected_segments, c.runtime_ended, c.active,
                c.runtime_started, c.after, s.ordinal, s.segment_id, s.speaker, s.text,
                s.started_at AS seg_started_at, s.ended_at AS seg_ended_at, s.confidence
         FROM c LEFT JOIN LATERAL (
             SELECT ordinal, segment_id, speaker, text, started_at, ended_at, confidence
             FROM rm_transcript_segments WHERE call_id = c.id AND ordinal > c.after
             ORDER BY ordinal LIMIT $3
         ) s ON true",
    )
    .bind(call_id)
    .bind(after)
    .bind(limit)
    .bind(since_segment_id)
    .fetch_all(pool)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let call = first.call.clone();
    let segments = rows
        .into_iter()
        .filter_map(|r| {
            Some(SegmentRow {
                ordinal: r.ordinal?,
                segment_id: r.segment_id?,
                speaker: r.speaker?,
                text: r.text?,
                started_at: r.seg_started_at?,
                ended_at: r.seg_ended_at?,
                confidence: r.confidence,
            })
        })
        .collect();
    Ok(Some(TranscriptPage { call, segments }))
}

/// Every segment of a call, in arrival order (the analysis worker reads a transcript back
/// after a restart).
pub async fn all_segments(pool: &PgPool, call_id: &str) -> sqlx::Result<Vec<SegmentRow>> {
    sqlx::query_as(
        "SELECT ordinal, segment_id, speaker, text, started_at, ended_at, confidence
         FROM rm_transcript_segments WHERE call_id = $1 ORDER BY ordinal",
    )
    .bind(call_id)
    .fetch_all(pool)
    .await
}

/// Where a call's recording is stored, if it has one.
pub async fn recording_url(pool: &PgPool, call_id: &str) -> sqlx::Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT recording->>'recording_url' FROM rm_calls WHERE id = $1")
            .bind(call_id)
            .fetch_optional(pool)
            .await?
            .flatten(),
    )
}

#[derive(Debug, Clone, FromRow)]
pub struct ToolLogRow {
    pub invocation: Option<i32>,
    pub tool_name: String,
    pub arguments: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub called_at: Option<DateTime<Utc>>,
    pub result_at: Option<DateTime<Utc>>,
    pub latency_ms: Option<i64>,
    /// `runtime` (reported by the runtime) or `proxy` (executed by the tool proxy).
    pub source: String,
    pub tool_call_id: Option<String>,
    pub integration_id: Option<String>,
    pub credential_version: Option<i32>,
    pub provider_status: Option<i32>,
}

/// A call's tool invocations paired with their results, in order.
pub async fn tool_log(pool: &PgPool, call_id: &str) -> sqlx::Result<Vec<ToolLogRow>> {
    sqlx::query_as(
        "SELECT invocation, tool_name, arguments, result, error, called_at, result_at, latency_ms,
                source, tool_call_id, integration_id, credential_version, provider_status
         FROM rm_tool_log WHERE call_id = $1 ORDER BY sequence",
    )
    .bind(call_id)
    .fetch_all(pool)
    .await
}

/// What the placement worker needs to dial a queued outbound call: the call, the
/// establishment's call-duration limit, its runtime's media-stream URL and the agent's active
/// version (for calls queued before the version was recorded on the call).
#[derive(Debug, Clone, FromRow)]
pub struct PlacementFacts {
    pub establishment_id: String,
    pub from_party: String,
    pub to_party: String,
    pub agent_id: Option<String>,
    pub agent_version_id: Option<String>,
    pub placement: Option<Value>,
    pub max_call_duration_seconds: Option<i32>,
    pub media_stream_url: Option<String>,
    pub runtime_id: Option<String>,
    pub active_version_id: Option<String>,
}

pub async fn placement_facts(pool: &PgPool, call_id: &str) -> sqlx::Result<Option<PlacementFacts>> {
    sqlx::query_as(
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
    .fetch_optional(pool)
    .await
}

/// Outbound calls still queued for placement whose row has not changed for `quiet_seconds`
/// (what a crash or a lost wake-up left behind), oldest first.
pub async fn queued_for_placement(
    pool: &PgPool,
    quiet_seconds: f64,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT id FROM rm_calls WHERE direction = 'outbound' AND active
           AND placement->>'status' = 'queued' AND updated_at < now() - make_interval(secs => $1)
         ORDER BY started_at LIMIT $2",
    )
    .bind(quiet_seconds)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Calls whose handoff was requested but has neither started nor failed, oldest first.
pub async fn handoffs_pending(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT id FROM rm_calls WHERE active AND handoff->>'status' = 'requested'
         ORDER BY updated_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A call open past its establishment's duration limit plus a grace period.
#[derive(Debug, Clone, FromRow)]
pub struct OverdueCall {
    pub id: String,
    pub max_seconds: i32,
}

pub async fn overdue(
    pool: &PgPool,
    grace_seconds: u32,
    now: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<OverdueCall>> {
    sqlx::query_as(
        "SELECT c.id, coalesce(t.max_call_duration_seconds, 3600) AS max_seconds
         FROM rm_calls c LEFT JOIN rm_telephony t ON t.establishment_id = c.establishment_id
         WHERE c.active
           AND c.started_at < $2 - make_interval(secs => coalesce(t.max_call_duration_seconds, 3600) + $1)
         ORDER BY c.started_at LIMIT $3",
    )
    .bind(grace_seconds as f64)
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The recorded outcome of a tool-proxy invocation (`None` while it is still running, or
/// before the projector caught up).
#[derive(Debug, Clone, FromRow)]
pub struct ProxyOutcomeRow {
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub provider_status: Option<i32>,
}

pub async fn proxy_outcome(
    pool: &PgPool,
    call_id: &str,
    tool_call_id: &str,
) -> sqlx::Result<Option<ProxyOutcomeRow>> {
    sqlx::query_as(
        "SELECT result, error, provider_status FROM rm_tool_log
         WHERE call_id = $1 AND tool_call_id = $2 AND result_at IS NOT NULL",
    )
    .bind(call_id)
    .bind(tool_call_id)
    .fetch_optional(pool)
    .await
}

/// An ended call whose analysis is incomplete: no summary, or a sentiment that does not cover
/// all its segments (what a stop between the call's end and its analysis leaves behind).
#[derive(Debug, Clone, FromRow)]
pub struct UnanalysedCall {
    pub id: String,
    pub segments: i64,
    pub expected_segments: Option<i64>,
    /// Segments the recorded sentiment covered (`None`: no sentiment yet).
    pub sentiment_considered: Option<i64>,
    pub summarized: bool,
}

/// Ended calls updated since `since` whose analysis is incomplete, and whose every event the
/// consumer `consumer` (a projector name) has already passed, so it will not see them again:
/// newest first, at most `limit`. Cheap: the partial index `rm_calls_unanalysed` holds only
/// such calls (and live ones).
pub async fn ended_without_analysis(
    pool: &PgPool,
    consumer: &str,
    since: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<UnanalysedCall>> {
    sqlx::query_as(
        "SELECT c.id, c.segments, c.expected_segments,
                (c.sentiment->>'segments_considered')::bigint AS sentiment_considered,
                c.summary IS NOT NULL AS summarized
         FROM rm_calls c
         CROSS JOIN LATERAL (
             SELECT e.transaction_id, e.position FROM events e
             WHERE e.aggregate_type = 'Call' AND e.aggregate_id = c.id
             ORDER BY e.sequence DESC LIMIT 1
         ) last
         JOIN projector_checkpoints p ON p.name = $1
         WHERE (c.summary IS NULL
                OR c.segments > coalesce((c.sentiment->>'segments_considered')::bigint, 0))
           AND c.updated_at >= $2
           AND (NOT c.active OR c.runtime_ended)
           AND (last.transaction_id, last.position) <= (p.last_txid, p.last_position)
         ORDER BY c.updated_at DESC LIMIT $3",
    )
    .bind(consumer)
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}
