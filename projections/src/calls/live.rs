//! The live calls held in memory: the rows of the calls in progress (and of those that ended
//! a short while ago) with every transcript segment of each, refreshed by the `calls`
//! projector after each batch it commits. `GET /calls/active` and the live transcript poll,
//! the reads the UI repeats every second or two for every live call, are answered from here
//! without a query, with the same rows, ordinals and cursor contract as the SQL reads in
//! [`super::queries`], which answer whatever this model does not hold.
//!
//! The model is a copy of the read model, not a second projection: after a batch commits, the
//! projector reads back the rows of the calls the batch touched and their new segments (two
//! statements per batch, instead of one per poll). It serves reads only while this process's
//! projector is the one applying the calls' events (it holds the projector's lock); when
//! another process takes the lock, the model empties itself and the SQL reads answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use sqlx::{FromRow, PgPool};

use super::queries::{
    self, CallRow, Scope, SegmentRow, TranscriptCall, TranscriptPage, CALL_COLUMNS,
};

/// An ended call stays this long after it ended (the UI polls its transcript until complete).
const KEEP_ENDED: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, FromRow)]
struct LiveRow {
    #[sqlx(flatten)]
    call: CallRow,
    segments: i64,
    expected_segments: Option<i64>,
    runtime_ended: bool,
    runtime_started: bool,
    active: bool,
}

#[derive(FromRow)]
struct LiveSegment {
    call_id: String,
    #[sqlx(flatten)]
    segment: SegmentRow,
}

struct LiveCall {
    row: LiveRow,
    /// Every segment of the call, by ordinal.
    segments: Vec<SegmentRow>,
    /// When this process saw the call no longer active.
    ended_seen: Option<Instant>,
}

#[derive(Default)]
pub struct LiveCalls {
    calls: RwLock<HashMap<String, LiveCall>>,
    /// Loaded and kept current by this process's projector.
    serving: AtomicBool,
}

impl LiveCalls {
    /// Whether reads are answered from memory.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Whether the call is held (its reads are answered from memory).
    pub fn holds(&self, call_id: &str) -> bool {
        self.serving() && self.calls.read().contains_key(call_id)
    }

    /// Another process applies the calls' events: stop answering, forget everything.
    pub fn stand_down(&self) {
        if self.serving.swap(false, Ordering::AcqRel) {
            self.calls.write().clear();
            tracing::info!("live calls: another process projects calls; reads go to the database");
        }
    }

    /// After the projector committed a batch touching `call_ids`: read their rows and new
    /// segments back (the first time, every active call).
    pub async fn refresh(&self, pool: &PgPool, call_ids: &[String]) -> sqlx::Result<()> {
        if !self.serving() {
            let rows: Vec<LiveRow> = sqlx::query_as(&format!(
                "SELECT {CALL_COLUMNS}, segments, expected_segments, runtime_ended,
                        runtime_started, active
                 FROM rm_calls WHERE active"
            ))
            .fetch_all(pool)
            .await?;
            let ids: Vec<String> = rows.iter().map(|r| r.call.id.clone()).collect();
            let segments = segments_after(pool, &ids, &vec![0; ids.len()]).await?;
            let mut calls: HashMap<String, LiveCall> = rows
                .into_iter()
                .map(|row| {
                    let call = LiveCall {
                        row,
                        segments: Vec::new(),
                        ended_seen: None,
                    };
                    (call.row.call.id.clone(), call)
                })
                .collect();
            for s in segments {
                if let Some(c) = calls.get_mut(&s.call_id) {
                    c.segments.push(s.segment);
                }
            }
            *self.calls.write() = calls;
            self.serving.store(true, Ordering::Release);
            return Ok(());
        }
        if call_ids.is_empty() {
            return Ok(());
        }
        let rows: Vec<LiveRow> = sqlx::query_as(&format!(
            "SELECT {CALL_COLUMNS}, segments, expected_segments, runtime_ended,
                    runtime_started, active
             FROM rm_calls WHERE id = ANY($1)"
        ))
        .bind(call_ids)
        .fetch_all(pool)
        .await?;
        // Known calls continue after their last ordinal; a call not held yet is read whole,
        // if it is live (an ended call nobody held is left to the database).
        let (ids, afters): (Vec<String>, Vec<i64>) = {
            let calls = self.calls.read();
            rows.iter()
                .filter_map(|r| match calls.get(&r.call.id) {
                    Some(c) => Some((
                        r.call.id.clone(),
                        c.segments.last().map_or(0, |s| s.ordinal),
                    )),
                    None if r.active => Some((r.call.id.clone(), 0)),
                    None => None,
                })
                .unzip()
        };
        let segments = segments_after(pool, &ids, &afters).await?;
        let gaps = self.merge(rows, segments);
        if gaps.is_empty() {
            return Ok(());
        }
        let whole = segments_after(pool, &gaps, &vec![0; gaps.len()]).await?;
        let mut calls = self.calls.write();
        for id in &gaps {
            if let Some(c) = calls.get_mut(id) {
                c.segments.clear();
            }
        }
        for s in whole {
            if let Some(c) = calls.get_mut(&s.call_id) {
                c.segments.push(s.segment);
            }
        }
        Ok(())
    }

    /// Puts the rows and segments read back in place; answers the calls whose segments do
    /// not add up.
    fn merge(&self, rows: Vec<LiveRow>, segments: Vec<LiveSegment>) -> Vec<String> {
        let mut calls = self.calls.write();
        let now = Instant::now();
        for row in rows {
            let id = row.call.id.clone();
            let active = row.active;
            match calls.get_mut(&id) {
                Some(c) => {
                    c.row = row;
                    if active {
                        c.ended_seen = None;
                    } else if c.ended_seen.is_none() {
                        c.ended_seen = Some(now);
                    }
                }
                None if active => {
                    calls.insert(
                        id,
                        LiveCall {
                            row,
                            segments: Vec::new(),
                            ended_seen: None,
                        },
                    );
                }
                None => {}
            }
        }
        for s in segments {
            if let Some(c) = calls.get_mut(&s.call_id) {
                if c.segments
                    .last()
                    .is_none_or(|l| l.ordinal < s.segment.ordinal)
                {
                    c.segments.push(s.segment);
                }
            }
        }
        calls.retain(|_, c| {
            c.ended_seen
                .is_none_or(|t| now.duration_since(t) < KEEP_ENDED)
        });
        metrics::gauge!("live_calls_held").set(calls.len() as f64);
        // A segment that landed below the last one held (a set-aside event applied by a
        // retry) shows as a count that differs from the call's counter: read those whole.
        let gaps: Vec<String> = calls
            .values()
            .filter(|c| c.segments.len() as i64 != c.row.segments)
            .map(|c| c.row.call.id.clone())
            .collect();
        gaps
    }

    /// Calls in progress, newest first: [`queries::active`] from memory when serving.
    pub async fn active(
        &self,
        pool: &PgPool,
        scope: Scope<'_>,
        limit: i64,
    ) -> sqlx::Result<Vec<CallRow>> {
        if let Some(rows) = self.active_in_memory(scope, limit) {
            return Ok(rows);
        }
        queries::active(pool, scope, limit).await
    }

    fn active_in_memory(&self, scope: Scope<'_>, limit: i64) -> Option<Vec<CallRow>> {
        if !self.serving() {
            return None;
        }
        let calls = self.calls.read();
        let mut rows: Vec<&CallRow> = calls
            .values()
            .filter(|c| c.row.active)
            .map(|c| &c.row.call)
            .filter(|r| scope.is_none_or(|s| s.contains(&r.establishment_id)))
            .collect();
        rows.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
        Some(
            rows.into_iter()
                .take(limit.max(0) as usize)
                .cloned()
                .collect(),
        )
    }

    /// A transcript poll: [`queries::transcript_page`] from memory when the call is held.
    pub async fn transcript_page(
        &self,
        pool: &PgPool,
        call_id: &str,
        after: Option<i64>,
        since_segment_id: Option<&str>,
        limit: i64,
    ) -> sqlx::Result<Option<TranscriptPage>> {
        if let Some(page) = self.page_in_memory(call_id, after, since_segment_id, limit) {
            return Ok(Some(page));
        }
        queries::transcript_page(pool, call_id, after, since_segment_id, limit).await
    }

    fn page_in_memory(
        &self,
        call_id: &str,
        after: Option<i64>,
        since_segment_id: Option<&str>,
        limit: i64,
    ) -> Option<TranscriptPage> {
        if !self.serving() {
            return None;
        }
        let calls = self.calls.read();
        let c = calls.get(call_id)?;
        let after = after.or_else(|| {
            let since = since_segment_id?;
            c.segments
                .iter()
                .filter(|s| s.segment_id == since)
                .map(|s| s.ordinal)
                .min()
        });
        let segments = match after {
            Some(after) => {
                let start = c.segments.partition_point(|s| s.ordinal <= after);
                c.segments[start..]
                    .iter()
                    .take(limit.max(0) as usize)
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        Some(TranscriptPage {
            call: TranscriptCall {
                establishment_id: c.row.call.establishment_id.clone(),
                segments: c.row.segments,
                expected_segments: c.row.expected_segments,
                runtime_ended: c.row.runtime_ended,
                runtime_started: c.row.runtime_started,
                active: c.row.active,
                after,
            },
            segments,
        })
    }
}

/// The segments of each call `ids[i]` after ordinal `afters[i]`, by call and ordinal.
async fn segments_after(
    pool: &PgPool,
    ids: &[String],
    afters: &[i64],
) -> sqlx::Result<Vec<LiveSegment>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT s.call_id, s.ordinal, s.segment_id, s.speaker, s.text, s.started_at, s.ended_at,
                s.confidence
         FROM UNNEST($1::text[], $2::bigint[]) AS u(id, after)
         JOIN rm_transcript_segments s ON s.call_id = u.id AND s.ordinal > u.after
         ORDER BY s.call_id, s.ordinal",
    )
    .bind(ids)
    .bind(afters)
    .fetch_all(pool)
    .await
}
