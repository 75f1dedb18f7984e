//! Read models of calls: `rm_calls` (list, active calls, details), `rm_call_timeline`
//! (lifecycle), `rm_transcript_segments` (the transcript poll) and `rm_tool_log`.
//!
//! Transcript segments are the bulk of the traffic: a batch inserts them with one statement
//! and bumps each call's counter once, the other events are applied one by one in order.

use std::collections::BTreeMap;

use aggregates::call::{CallEvent, StatusCause};
use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::PgConnection;

use crate::event::StoredEvent;
use crate::runner::Projection;

pub mod live;
pub mod queries;
mod tool_proxy;

use std::sync::Arc;

pub use live::LiveCalls;

/// The call read models, and the live calls in memory it keeps current.
#[derive(Default)]
pub struct CallsProjection {
    pub live: Arc<LiveCalls>,
}

impl CallsProjection {
    pub fn feeding(live: Arc<LiveCalls>) -> Self {
        Self { live }
    }
}

#[async_trait]
impl Projection for CallsProjection {
    fn name(&self) -> &'static str {
        "calls"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Call"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "rm_calls",
            "rm_call_timeline",
            "rm_transcript_segments",
            "rm_tool_log",
        ]
    }

    /// Transcript segments (the bulk of the traffic) are gathered and inserted with one
    /// statement per batch; every other event is applied in order.
    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut segments = Segments::default();
        for e in events {
            match e.decode::<CallEvent>()? {
                CallEvent::TranscriptSegmentAdded {
                    ordinal, segment, ..
                } => {
                    segments.call_ids.push(e.aggregate_id.clone());
                    segments.ordinals.push(ordinal as i64);
                    segments.segment_ids.push(segment.segment_id);
                    segments.speakers.push(segment.speaker.as_str().to_string());
                    segments.texts.push(segment.text);
                    segments.started.push(segment.started_at);
                    segments.ended.push(segment.ended_at);
                    segments.confidence.push(segment.confidence);
                    *segments.per_call.entry(e.aggregate_id.clone()).or_default() += 1;
                }
                other => apply_one(tx, e, other).await?,
            }
        }
        segments.write(tx, events).await
    }

    async fn after_commit(&self, pool: &sqlx::PgPool, events: &[StoredEvent]) {
        let mut ids: Vec<String> = events.iter().map(|e| e.aggregate_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        if let Err(e) = self.live.refresh(pool, &ids).await {
            // The model may have missed this batch: empty it, the database answers until the
            // next batch reloads it.
            tracing::warn!(error = %e, "live calls: refresh failed");
            self.live.stand_down();
        }
    }

    fn lock_held_elsewhere(&self) {
        self.live.stand_down();
    }
}

#[derive(Default)]
struct Segments {
    call_ids: Vec<String>,
    ordinals: Vec<i64>,
    segment_ids: Vec<String>,
    speakers: Vec<String>,
    texts: Vec<String>,
    started: Vec<chrono::DateTime<chrono::Utc>>,
    ended: Vec<chrono::DateTime<chrono::Utc>>,
    confidence: Vec<Option<f64>>,
    per_call: BTreeMap<String, i64>,
}

impl Segments {
    async fn write(self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        if self.call_ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO rm_transcript_segments
                 (call_id, ordinal, segment_id, speaker, text, started_at, ended_at, confidence)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                                  $6::timestamptz[], $7::timestamptz[], $8::float8[])",
        )
        .bind(&self.call_ids)
        .bind(&self.ordinals)
        .bind(&self.segment_ids)
        .bind(&self.speakers)
        .bind(&self.texts)
        .bind(&self.started)
        .bind(&self.ended)
        .bind(&self.confidence)
        .execute(&mut *tx)
        .await?;
        // The counter's update time is the last segment event of that call in the batch.
        let mut last_at = BTreeMap::new();
        for e in events {
            if e.event_type == "TranscriptSegmentAdded" {
                last_at.insert(e.aggregate_id.clone(), e.recorded_at);
            }
        }
        let ids: Vec<String> = self.per_call.keys().cloned().collect();
        let counts: Vec<i64> = self.per_call.values().copied().collect();
        let ats: Vec<chrono::DateTime<chrono::Utc>> = ids.iter().map(|id| last_at[id]).collect();
        sqlx::query(
            "UPDATE rm_calls c SET segments = c.segments + u.n, updated_at = greatest(c.updated_at, u.at)
             FROM UNNEST($1::text[], $2::bigint[], $3::timestamptz[]) AS u(id, n, at)
             WHERE c.id = u.id",
        )
        .bind(&ids)
        .bind(&counts)
        .bind(&ats)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

async fn timeline(
    tx: &mut PgConnection,
    e: &StoredEvent,
    at: chrono::DateTime<chrono::Utc>,
    kind: &str,
    detail: Value,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO rm_call_timeline (call_id, sequence, at, kind, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&e.aggregate_id)
    .bind(e.sequence)
    .bind(at)
    .bind(kind)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Sets one JSON/text column of a call.
async fn set(
    tx: &mut PgConnection,
    e: &StoredEvent,
    assignments: &str,
    value: Value,
) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "UPDATE rm_calls SET {assignments}, updated_at = $3 WHERE id = $1"
    ))
    .bind(&e.aggregate_id)
    .bind(value)
    .bind(e.recorded_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn status_cause(cause: &StatusCause) -> Value {
    serde_json::to_value(cause).unwrap_or(Value::Null)
}

async fn apply_one(tx: &mut PgConnection, e: &StoredEvent, event: CallEvent) -> anyhow::Result<()> {
    use CallEvent as E;
    let id = &e.aggregate_id;
    match event {
        E::CallOpened {
            establishment_id,
            direction,
            provider,
            call_sid,
            from,
            to,
            agent_id,
            agent_version_id,
            status,
            opened_by,
            at,
            ..
        } => {
            sqlx::query(
                "INSERT INTO rm_calls (id, establishment_id, provider, provider_call_sid, direction,
                    from_party, to_party, agent_id, agent_version_id, status, active, opened_by,
                    started_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(id)
            .bind(&establishment_id)
            .bind(&provider)
            .bind(call_sid.as_ref().map(|s| s.as_str()))
            .bind(direction.as_str())
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(&agent_id)
            .bind(&agent_version_id)
            .bind(status.as_str())
            .bind(!status.is_terminal())
            .bind(opened_by.as_str())
            .bind(at)
            .bind(e.recorded_at)
            .execute(&mut *tx)
            .await?;
            timeline(
                tx,
                e,
                at,
                "opened",
                json!({"direction": direction, "status": status, "opened_by": opened_by,
                       "from": from, "to": to, "call_sid": call_sid}),
            )
            .await?;
        }
        E::CallSidBound { call_sid, at } => {
            set(tx, e, "provider_call_sid = $2 #>> '{}'", json!(call_sid)).await?;
            timeline(tx, e, at, "call_sid_bound", json!({"call_sid": call_sid})).await?;
        }
        E::InboundCallRouted { decision, at } => {
            let decision = serde_json::to_value(&decision)?;
            set(tx, e, "routing = $2", decision.clone()).await?;
            timeline(tx, e, at, "routed", decision).await?;
        }
        E::OutboundCallQueued {
            agent_id,
            requested_by,
            metadata,
            machine_detection,
            time_limit_seconds,
            at,
        } => {
            sqlx::query(
                "UPDATE rm_calls SET agent_id = $2, requested_by = $3, metadata = $4,
                    placement = $5, updated_at = $6 WHERE id = $1",
            )
            .bind(id)
            .bind(&agent_id)
            .bind(serde_json::to_value(&requested_by)?)
            .bind(Value::Object(metadata))
            .bind(
                json!({"status": "queued", "machine_detection": machine_detection,
                         "time_limit_seconds": time_limit_seconds}),
            )
            .bind(e.recorded_at)
            .execute(&mut *tx)
            .await?;
            timeline(
                tx,
                e,
                at,
                "outbound_queued",
                json!({"requested_by": requested_by}),
            )
            .await?;
        }
        E::PlacementRequested { at } => {
            set(
                tx,
                e,
                "placement = coalesce(placement, '{}'::jsonb) || $2",
                json!({"status": "requested", "requested_at": at}),
            )
            .await?;
            timeline(tx, e, at, "placement_requested", json!({})).await?;
        }
        E::CallPlaced { call_sid, at } => {
            sqlx::query(
                "UPDATE rm_calls SET provider_call_sid = $2,
                    placement = coalesce(placement, '{}'::jsonb) || $3, updated_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(call_sid.as_str())
            .bind(json!({"status": "placed", "placed_at": at}))
            .bind(e.recorded_at)
            .execute(&mut *tx)
            .await?;
            timeline(tx, e, at, "placed", json!({"call_sid": call_sid})).await?;
        }
        E::PlacementFailed {
            http_status,
            code,
            message,
            at,
        } => {
            let detail = json!({"status": "failed", "http_status": http_status, "code": code, "message": message});
            set(
                tx,
                e,
                "placement = coalesce(placement, '{}'::jsonb) || $2",
                detail.clone(),
            )
            .await?;
            timeline(tx, e, at, "placement_failed", detail).await?;
        }
        E::TwilioStatusReceived { callback } => {
            if let Some(d) = callback.call_duration {
                sqlx::query(
                    "UPDATE rm_calls SET duration_seconds = $2, duration_source = 'twilio', updated_at = $3
                     WHERE id = $1",
                )
                .bind(id)
                .bind(d as i32)
                .bind(e.recorded_at)
                .execute(&mut *tx)
                .await?;
            }
            // A late `in-progress` (after a terminal status) still tells when it was answered.
            if callback.status == aggregates::call::TwilioCallStatus::InProgress {
                sqlx::query(
                    "UPDATE rm_calls SET answered_at = coalesce(answered_at, $2), updated_at = $3 WHERE id = $1",
                )
                .bind(id)
                .bind(callback.at())
                .bind(e.recorded_at)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(a) = callback.answered_by {
                sqlx::query(
                    "UPDATE rm_calls SET answered_by = coalesce(answered_by, $2), updated_at = $3 WHERE id = $1",
                )
                .bind(id)
                .bind(a.as_str())
                .bind(e.recorded_at)
                .execute(&mut *tx)
                .await?;
            }
            timeline(
                tx,
                e,
                callback.at(),
                "twilio_status",
                json!({"status": callback.status, "sequence_number": callback.sequence_number,
                       "call_duration": callback.call_duration, "answered_by": callback.answered_by}),
            )
            .await?;
        }
        E::AnsweredByDetected {
            answered_by,
            detection_duration_ms,
            at,
        } => {
            sqlx::query(
                "UPDATE rm_calls SET answered_by = $2, machine_detection_ms = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(answered_by.as_str())
            .bind(detection_duration_ms.map(|d| d as i32))
            .bind(e.recorded_at)
            .execute(&mut *tx)
            .await?;
            timeline(
                tx,
                e,
                at,
                "answered_by",
                json!({"answered_by": answered_by, "detection_duration_ms": detection_duration_ms}),
            )
            .await?;
        }
        E::CallStatusChanged {
            from,
            to,
            cause,
            at,
        } => {
            sqlx::query(
                "UPDATE rm_calls SET status = $2, active = $3,
                    answered_at = CASE WHEN $4 AND answered_at IS NULL THEN $5 ELSE answered_at END,
                    ended_at = CASE WHEN $6 THEN $5 ELSE ended_at END,
                    updated_at = $7
                 WHERE id = $1",
            )
            .bind(id)
            .bind(to.as_str())
            .bind(!to.is_terminal())
            .bind(to.is_answered())
            .bind(at)
            .bind(to.is_terminal())
            .bind(e.recorded_at)
            .execute(&mut *tx)
            .await?;
            timeline(
                tx,
                e,
                at,
                "status_changed",
                json!({"from": from, "to": to, "cause": status_cause(&cause)}),
            )
            .await?;
        }
        E::HandoffRequested {
            reason,
            to,
            requested_by,
            at,
        } => {
            let detail = json!({"status": "requested", "reason": reason, "to": to,
                                "requested_by": requested_by, "requested_at": at});
            set(tx, e, "handoff = $2", detail.clone()).await?;
            timeline(tx, e, at, "handoff_requested", detail).await?;
        }
        E::HandoffStarted { to, at } => {
            set(
                tx,
                e,
                "handoff = coalesce(handoff, '{}'::jsonb) || $2",
                json!({"status": "started", "started_at": at}),
            )
            .await?;
            timeline(tx, e, at, "handoff_started", json!({"to": to})).await?;
        }
        E::HandoffFailed { code, message, at } => {
            let detail =
                json!({"status": "failed", "code": code, "message": message, "failed_at": at});
            set(
                tx,
                e,
                "handoff = coalesce(handoff, '{}'::jsonb) || $2",
                detail.clone(),
            )
            .await?;
            timeline(tx, e, at, "handoff_failed", detail).await?;
        }
        E::CallReaped {
            reason,
            previous_status,
            at,
        } => {
            set(tx, e, "reaped_reason = $2 #>> '{}'", json!(reason)).await?;
            timeline(
                tx,
                e,
                at,
                "reaped",
                json!({"reason": reason, "previous_status": previous_status}),
            )
            .await?;
        }
        E::RuntimeCallStarted {
            origin,
            agent_id,
            agent_version_id,
            started_at,
        } => {
            sqlx::query(
                "UPDATE rm_calls SET runtime_started = true,
                    agent_id = coalesce(agent_id, $2), agent_version_id = coalesce(agent_version_id, $3),
                    updated_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(&agent_id)
            .bind(&agent_version_id)
            .bind(e.recorded_at)
            .execute(&mut *tx)
            .await?;
            timeline(
                tx,
                e,
                started_at,
                "runtime_call_started",
                json!({"runtime_id": origin.runtime_id}),
            )
            .await?;
        }
        E::RuntimeCallConnected {
            origin,
            connected_at,
        } => {
            timeline(
                tx,
                e,
                connected_at.unwrap_or(origin.occurred_at),
                "runtime_call_connected",
                json!({"runtime_id": origin.runtime_id}),
            )
            .await?;
        }
        E::RuntimeCallEnded {
            origin,
            ended_at,
            duration_seconds,
            final_status,
            hangup_by,
            segment_count,
        } => {
            sqlx::query(
                "UPDATE rm_calls SET runtime_ended = true, expected_segments = $2,
                    duration_seconds = CASE WHEN duration_source = 'twilio' THEN duration_seconds
                                            ELSE coalesce($3, duration_seconds) END,
                    duration_source = CASE WHEN duration_source = 'twilio' THEN duration_source
                                           WHEN $3 IS NULL THEN duration_source ELSE 'runtime' END,
                    updated_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(segment_count.map(|n| n as i64))
            .bind(duration_seconds.map(|d| d as i32))
            .bind(e.recorded_at)
            .execute(&mut *tx)
            .await?;
            timeline(
                tx,
                e,
                ended_at,
                "runtime_call_ended",
                json!({"runtime_id": origin.runtime_id, "final_status": final_status,
                       "hangup_by": hangup_by, "duration_seconds": duration_seconds,
                       "segment_count": segment_count}),
            )
            .await?;
        }
        // Gathered by `apply` and written in bulk (`Segments::write`).
        E::TranscriptSegmentAdded { .. } => {}
        E::ToolCalled {
            origin,
            invocation,
            tool_name,
            arguments,
        } => {
            sqlx::query(
                "INSERT INTO rm_tool_log (call_id, sequence, establishment_id, invocation, tool_name,
                    arguments, called_at)
                 SELECT $1, $2, establishment_id, $3, $4, $5, $6 FROM rm_calls WHERE id = $1",
            )
            .bind(id)
            .bind(e.sequence)
            .bind(invocation as i32)
            .bind(&tool_name)
            .bind(&arguments)
            .bind(origin.occurred_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE rm_calls SET tool_calls = tool_calls + 1, updated_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(e.recorded_at)
            .execute(&mut *tx)
            .await?;
        }
        E::ToolResultReceived {
            origin,
            invocation,
            tool_name,
            result,
            error,
        } => {
            let paired = match invocation {
                Some(n) => sqlx::query(
                    "UPDATE rm_tool_log SET result = $3, error = $4, result_at = $5,
                        latency_ms = (extract(epoch FROM ($5 - called_at)) * 1000)::bigint
                     WHERE call_id = $1 AND invocation = $2",
                )
                .bind(id)
                .bind(n as i32)
                .bind(&result)
                .bind(&error)
                .bind(origin.occurred_at)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                None => 0,
            };
            if paired == 0 {
                sqlx::query(
                    "INSERT INTO rm_tool_log (call_id, sequence, establishment_id, invocation, tool_name,
                        result, error, result_at)
                     SELECT $1, $2, establishment_id, NULL, $3, $4, $5, $6 FROM rm_calls WHERE id = $1",
                )
                .bind(id)
                .bind(e.sequence)
                .bind(&tool_name)
                .bind(&result)
                .bind(&error)
                .bind(origin.occurred_at)
                .execute(&mut *tx)
                .await?;
            }
        }
        E::RecordingAvailable { origin, recording } => {
            let detail = json!({"recording_url": recording.recording_url,
                "storage_provider": recording.storage_provider, "content_type": recording.content_type,
                "available_at": origin.occurred_at});
            set(tx, e, "recording = $2", detail).await?;
            timeline(
                tx,
                e,
                origin.occurred_at,
                "recording_available",
                json!({"storage_provider": recording.storage_provider, "content_type": recording.content_type}),
            )
            .await?;
        }
        E::RuntimeErrorReported {
            origin,
            component,
            message,
            fatal,
        } => {
            sqlx::query("UPDATE rm_calls SET runtime_errors = runtime_errors + 1, updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(e.recorded_at)
                .execute(&mut *tx)
                .await?;
            timeline(
                tx,
                e,
                origin.occurred_at,
                "runtime_error",
                json!({"component": component, "message": message, "fatal": fatal}),
            )
            .await?;
        }
        E::SentimentComputed {
            label,
            score,
            windows,
            segments_considered,
            computed_at,
        } => {
            set(
                tx,
                e,
                "sentiment = $2",
                json!({"label": label, "score": score, "computed_at": computed_at,
                       "windows": windows, "segments_considered": segments_considered}),
            )
            .await?;
        }
        E::SummaryGenerated {
            summary,
            generator,
            segments_covered,
            generated_at,
        } => {
            set(
                tx,
                e,
                "summary = $2",
                json!({"text": summary, "generator": generator, "generated_at": generated_at,
                       "segments_covered": segments_covered}),
            )
            .await?;
            timeline(
                tx,
                e,
                generated_at,
                "summary_generated",
                json!({"generator": generator}),
            )
            .await?;
        }
        E::ToolProxyRequested { request } => tool_proxy::requested(tx, e, &request).await?,
        E::ToolProxySucceeded { outcome } | E::ToolProxyFailed { outcome } => {
            tool_proxy::completed(tx, e, &outcome).await?
        }
    }
    Ok(())
}
