//! Sentiment and summary workers (Appendix D.4). A consumer of the call events (run by the
//! projector runtime, so it resumes from a checkpoint) keeps each live call's transcript in
//! memory; a task recomputes the call's sentiment as customer segments arrive (at most every
//! `SENTIMENT_INTERVAL_MS` per call, and at the end) and writes the summary when the call ends.
//! Both outcomes are recorded as events (`SentimentComputed`, `SummaryGenerated`) with
//! idempotency keys, so replays add nothing and a rebuild reproduces them without recomputing.
//!
//! Summaries come from the embedded extractive summariser, or from an OpenAI-compatible chat
//! endpoint when one is configured, with the extractive one as the fallback.
//!
//! Nothing is lost to a stop: the consumer's checkpoint moves when it has *seen* a call end,
//! before the summary exists, so at start-up and every `ANALYSIS_RESCAN_INTERVAL_SECONDS` the
//! worker looks for ended calls (of the last `RESCAN_DAYS` days) that the consumer has passed
//! but whose summary, or sentiment over every segment, is missing, and queues them again. A
//! call whose analysis fails to record stays queued and is retried with a growing pause.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::call::{
    Call, CallCommand, CallEvent, SentimentLabel, SentimentScore, SentimentWindow, Speaker,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use projections::{Projection, StoredEvent};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};

use crate::background::{Background, Job, WorkQueue, WorkReceiver};
use crate::config::Config;
use crate::store::{CommandBus, CommandContext, ExecOptions, IdempotencyClaim};
use projections::calls::queries::UnanalysedCall;

/// Longest transcript kept in memory per call (segments); beyond it the summary reads the rest
/// from the read model.
const MAX_SEGMENTS_IN_MEMORY: usize = 5_000;
/// Window of the per-window sentiment.
const WINDOW_SECS: f64 = 60.0;
/// How long to wait for announced-but-missing segments before summarising anyway.
const SUMMARY_PATIENCE: Duration = Duration::from_secs(4);
/// How far back the rescan looks for ended calls without their analysis.
const RESCAN_DAYS: i64 = 7;
/// Most calls one rescan queues.
const RESCAN_LIMIT: i64 = 500;
/// Longest pause between two attempts at a call whose analysis keeps failing.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Seg {
    ordinal: u64,
    speaker: Speaker,
    text: String,
    started_at: DateTime<Utc>,
}

#[derive(Default)]
struct CallMemory {
    segments: Vec<Seg>,
    last_ordinal: u64,
    /// The memory holds every segment from the first (else it must be read back first).
    complete_from_start: bool,
    expected: Option<u64>,
    ended_at: Option<Instant>,
    sentiment_considered: u64,
    summarized: bool,
}

/// The event consumer: cheap, in-memory, no tables. A call marked dirty counts as background
/// work until the worker has done what is due for it.
pub struct AnalysisConsumer {
    calls: Arc<Mutex<HashMap<String, CallMemory>>>,
    dirty: WorkQueue<String>,
}

pub type DirtyCalls = WorkReceiver<String>;

impl AnalysisConsumer {
    pub fn new(background: &Background) -> (Arc<AnalysisConsumer>, DirtyCalls) {
        let (dirty, rx) = WorkQueue::channel(background);
        (
            Arc::new(AnalysisConsumer {
                calls: Arc::default(),
                dirty,
            }),
            rx,
        )
    }
}

#[async_trait]
impl Projection for AnalysisConsumer {
    fn name(&self) -> &'static str {
        "analysis-worker"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Call"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    async fn apply(&self, _tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for e in events {
            self.consume(e)?;
        }
        Ok(())
    }
}

impl AnalysisConsumer {
    fn consume(&self, e: &StoredEvent) -> anyhow::Result<()> {
        // Only the events that matter are decoded.
        let relevant = matches!(
            e.event_type.as_str(),
            "CallOpened"
                | "TranscriptSegmentAdded"
                | "RuntimeCallEnded"
                | "CallStatusChanged"
                | "SentimentComputed"
                | "SummaryGenerated"
        );
        if !relevant {
            return Ok(());
        }
        let event = e.decode::<CallEvent>()?;
        let mut calls = self.calls.lock();
        let id = &e.aggregate_id;
        let dirty = match event {
            CallEvent::CallOpened { .. } => {
                calls.entry(id.clone()).or_default().complete_from_start = true;
                false
            }
            CallEvent::TranscriptSegmentAdded {
                ordinal, segment, ..
            } => {
                let m = calls.entry(id.clone()).or_default();
                if ordinal <= m.last_ordinal {
                    // A call's ordinals arrive in order: this one was seen already (a failed
                    // batch applied again).
                    return Ok(());
                }
                if ordinal != m.last_ordinal + 1 {
                    m.complete_from_start = false;
                }
                m.last_ordinal = m.last_ordinal.max(ordinal);
                if m.segments.len() < MAX_SEGMENTS_IN_MEMORY {
                    m.segments.push(Seg {
                        ordinal,
                        speaker: segment.speaker,
                        text: segment.text,
                        started_at: segment.started_at,
                    });
                } else {
                    m.complete_from_start = false;
                }
                segment.speaker == Speaker::Customer || m.ended_at.is_some()
            }
            CallEvent::RuntimeCallEnded { segment_count, .. } => {
                let m = calls.entry(id.clone()).or_default();
                m.expected = segment_count;
                m.ended_at.get_or_insert_with(Instant::now);
                true
            }
            CallEvent::CallStatusChanged { to, .. } if to.is_terminal() => {
                calls
                    .entry(id.clone())
                    .or_default()
                    .ended_at
                    .get_or_insert_with(Instant::now);
                true
            }
            // Only for calls it tracks: an entry made for a call it never saw end would sit in
            // memory for ever (and hide the call from the rescan).
            CallEvent::SentimentComputed {
                segments_considered,
                ..
            } => {
                if let Some(m) = calls.get_mut(id) {
                    m.sentiment_considered = m.sentiment_considered.max(segments_considered);
                }
                false
            }
            CallEvent::SummaryGenerated { .. } => {
                if let Some(m) = calls.get_mut(id) {
                    m.summarized = true;
                }
                false
            }
            _ => false,
        };
        if dirty {
            self.dirty.enqueue(id.clone());
        }
        Ok(())
    }
}

impl AnalysisConsumer {
    /// Queues an ended call found by the rescan, unless the consumer saw it end in this
    /// process (then it is queued already). What memory lacks comes from the read model (the
    /// transcript is read back when it is due).
    fn requeue(&self, c: &UnanalysedCall) -> bool {
        let mut calls = self.calls.lock();
        let m = calls.entry(c.id.clone()).or_default();
        if m.ended_at.is_some() {
            return false;
        }
        // It ended before this process saw it: no patience left for missing segments.
        m.ended_at = Some(
            Instant::now()
                .checked_sub(SUMMARY_PATIENCE)
                .unwrap_or_else(Instant::now),
        );
        m.complete_from_start = false;
        m.last_ordinal = m.last_ordinal.max(c.segments.max(0) as u64);
        m.expected = m.expected.or(c.expected_segments.map(|n| n.max(0) as u64));
        m.sentiment_considered = m
            .sentiment_considered
            .max(c.sentiment_considered.unwrap_or(0).max(0) as u64);
        m.summarized |= c.summarized;
        drop(calls);
        self.dirty.enqueue(c.id.clone());
        true
    }
}

/// Configuration of the analysis worker.
#[derive(Debug, Clone)]
pub struct AnalysisConfig {
    pub sentiment_interval: Duration,
    pub llm: Option<LlmConfig>,
    /// How often ended calls without their analysis are looked for (also at start-up).
    pub rescan_interval: Duration,
}

/// An OpenAI-compatible chat-completions endpoint for summaries.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

impl AnalysisConfig {
    pub fn from_config(config: &Config) -> Self {
        Self {
            sentiment_interval: Duration::from_millis(config.sentiment_interval_ms),
            llm: config.summary_llm_base_url.as_ref().map(|base| LlmConfig {
                base_url: base.clone(),
                model: config.summary_llm_model.clone(),
                api_key: config.summary_llm_api_key.clone(),
                timeout: Duration::from_millis(config.summary_llm_timeout_ms.max(100)),
            }),
            rescan_interval: Duration::from_secs(config.analysis_rescan_interval_seconds.max(1)),
        }
    }
}

/// What the analysis worker needs.
pub struct AnalysisWorker {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
    pub consumer: Arc<AnalysisConsumer>,
    pub config: AnalysisConfig,
    pub http: reqwest::Client,
}

/// A call waiting for the worker: its background job, and when to try again after failures.
struct Pending {
    _job: Job,
    failures: u32,
    next_at: Instant,
}

/// The pause after `failures` failed attempts: 250 ms, doubled each time, at most 30 s.
fn retry_pause(failures: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1u64 << failures.min(16))).min(MAX_RETRY_PAUSE)
}

/// Queues the ended calls whose analysis a stop left undone (see the module doc).
pub async fn rescan(worker: &AnalysisWorker) -> anyhow::Result<usize> {
    let since = Utc::now()
        .checked_sub_signed(chrono::TimeDelta::days(RESCAN_DAYS))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let calls = projections::calls::queries::ended_without_analysis(
        &worker.pool,
        worker.consumer.name(),
        since,
        RESCAN_LIMIT,
    )
    .await?;
    let queued = calls.iter().filter(|c| worker.consumer.requeue(c)).count();
    if queued > 0 {
        tracing::info!(
            queued,
            "ended calls without their analysis queued again by the rescan"
        );
        metrics::counter!("analysis_rescan_queued_total").increment(queued as u64);
    }
    Ok(queued)
}

/// The worker task: recomputes what the consumer marked dirty, and rescans for calls whose
/// analysis a stop left undone.
pub async fn run(worker: Arc<AnalysisWorker>, dirty: DirtyCalls) {
    let mut dirty = dirty.lock().await;
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut last_emit: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut rescan_tick = tokio::time::interval(worker.config.rescan_interval);
    rescan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some((id, job)) = dirty.recv() => {
                pending.entry(id).or_insert(Pending { _job: job, failures: 0, next_at: Instant::now() });
                continue;
            }
            _ = rescan_tick.tick() => {
                if let Err(e) = rescan(&worker).await {
                    tracing::warn!(error = %format!("{e:#}"), "analysis rescan failed; will try again");
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let due: Vec<String> = pending
            .iter()
            .filter(|(_, p)| p.next_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let keep = process(&worker, &id, &mut last_emit).await;
            match keep {
                Ok(true) => {}
                Ok(false) => {
                    pending.remove(&id);
                }
                Err(e) => {
                    if let Some(p) = pending.get_mut(&id) {
                        p.failures = p.failures.saturating_add(1);
                        let pause = retry_pause(p.failures);
                        p.next_at = Instant::now() + pause;
                        tracing::warn!(call_id = %id, failures = p.failures, ?pause,
                            error = %format!("{e:#}"), "call analysis failed; will retry");
                        metrics::counter!("analysis_failures_total").increment(1);
                    }
                }
            }
        }
    }
}

/// Does what is due for one call; `Ok(true)` when something is left for later.
async fn process(
    worker: &AnalysisWorker,
    id: &str,
    last_emit: &mut HashMap<String, Instant>,
) -> anyhow::Result<bool> {
    let consumer = &worker.consumer;
    let config = &worker.config;
    let (segments, last_ordinal, considered, ended_at, summarized, expected, complete) = {
        let calls = consumer.calls.lock();
        let Some(m) = calls.get(id) else {
            return Ok(false);
        };
        (
            m.segments.clone(),
            m.last_ordinal,
            m.sentiment_considered,
            m.ended_at,
            m.summarized,
            m.expected,
            m.complete_from_start,
        )
    };
    let ended = ended_at.is_some();
    let mut later = false;
    // The whole transcript, from memory or (after a restart or a gap) from the read model.
    let segments = if complete {
        segments
    } else {
        let rows = read_segments(&worker.pool, id).await?;
        if (rows.last().map_or(0, |s| s.ordinal)) < last_ordinal {
            return Ok(true); // the read model has not caught up yet
        }
        rows
    };

    if last_ordinal > considered {
        let recent = last_emit
            .get(id)
            .is_some_and(|t| t.elapsed() < config.sentiment_interval);
        if recent && !ended {
            later = true;
        } else {
            record_sentiment(worker, id, &segments, last_ordinal).await?;
            last_emit.insert(id.to_string(), Instant::now());
            consumer
                .calls
                .lock()
                .entry(id.to_string())
                .or_default()
                .sentiment_considered = last_ordinal;
        }
    }

    if ended && !summarized {
        let missing = expected.is_some_and(|n| last_ordinal < n);
        if missing && ended_at.is_some_and(|t| t.elapsed() < SUMMARY_PATIENCE) {
            return Ok(true);
        }
        record_summary(worker, id, &segments, last_ordinal).await?;
        let mut calls = consumer.calls.lock();
        calls.remove(id);
        last_emit.remove(id);
        return Ok(false);
    }
    Ok(later)
}

async fn read_segments(pool: &PgPool, call_id: &str) -> anyhow::Result<Vec<Seg>> {
    Ok(projections::calls::queries::all_segments(pool, call_id)
        .await?
        .into_iter()
        .map(|r| Seg {
            ordinal: r.ordinal as u64,
            speaker: r.speaker.parse().unwrap_or(Speaker::System),
            text: r.text,
            started_at: r.started_at,
        })
        .collect())
}

/// Segments as the analysis crate takes them: offsets in seconds from the first one.
fn to_analysis(segments: &[Seg]) -> (Vec<analysis::Segment>, Option<DateTime<Utc>>) {
    let mut sorted: Vec<&Seg> = segments.iter().collect();
    sorted.sort_by_key(|s| (s.started_at, s.ordinal));
    let base = sorted.first().map(|s| s.started_at);
    let out = sorted
        .iter()
        .map(|s| {
            let offset = base.map_or(0.0, |b| {
                (s.started_at - b).num_milliseconds() as f64 / 1000.0
            });
            let speaker = match s.speaker {
                Speaker::Customer => analysis::Speaker::Customer,
                Speaker::Agent => analysis::Speaker::Agent,
                Speaker::System => analysis::Speaker::Other,
            };
            analysis::Segment::new(speaker, s.text.clone(), offset.max(0.0))
        })
        .collect();
    (out, base)
}

async fn locale_of(pool: &PgPool, call_id: &str) -> Option<String> {
    let establishment = projections::calls::queries::establishment_of(pool, call_id)
        .await
        .ok()
        .flatten()?;
    projections::identity::establishment_locale(pool, &establishment)
        .await
        .ok()
        .flatten()
}

fn label(l: analysis::Label) -> SentimentLabel {
    match l {
        analysis::Label::Negative => SentimentLabel::Negative,
        analysis::Label::Neutral => SentimentLabel::Neutral,
        analysis::Label::Positive => SentimentLabel::Positive,
    }
}

fn ctx(worker: &str, call_id: &str) -> CommandContext {
    let mut c = CommandContext::system(worker);
    c.correlation_id = call_id.to_string();
    c
}

async fn record_sentiment(
    worker: &AnalysisWorker,
    call_id: &str,
    segments: &[Seg],
    considered: u64,
) -> anyhow::Result<()> {
    let locale = locale_of(&worker.pool, call_id).await;
    let (segs, base) = to_analysis(segments);
    let mut call = analysis::call::CallSentiment::new(locale.as_deref());
    for s in &segs {
        call.add(s);
    }
    let overall = call.overall();
    let windows = match base {
        Some(base) => call
            .windows(WINDOW_SECS)
            .into_iter()
            .filter_map(|w| {
                // Checked: the offsets come from runtime-supplied times.
                let at = |secs: f64| {
                    base.checked_add_signed(chrono::TimeDelta::try_milliseconds(
                        (secs * 1000.0) as i64,
                    )?)
                };
                Some(SentimentWindow {
                    start: at(w.start)?,
                    end: at(w.end)?,
                    label: label(w.score.label),
                    score: SentimentScore::try_from(w.score.score).ok()?,
                })
            })
            .collect(),
        None => vec![],
    };
    let score = SentimentScore::try_from(overall.score).map_err(|e| anyhow::anyhow!("{e}"))?;
    let r = worker
        .bus
        .execute::<Call>(
            call_id,
            CallCommand::RecordSentiment {
                label: label(overall.label),
                score,
                windows,
                segments_considered: considered,
                computed_at: Utc::now(),
            },
            &ctx("sentiment", call_id),
            ExecOptions::idempotent(IdempotencyClaim {
                key: format!("sentiment:{call_id}:{considered}"),
                request_hash: "sentiment".into(),
                response: Value::Null,
            }),
        )
        .await;
    r.map(|_| ()).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn record_summary(
    worker: &AnalysisWorker,
    call_id: &str,
    segments: &[Seg],
    covered: u64,
) -> anyhow::Result<()> {
    let (segs, _) = to_analysis(segments);
    let extractive = analysis::summary::summarize(&segs, 5);
    let (text, generator) = match &worker.config.llm {
        Some(llm) if !segs.is_empty() => match llm_summary(&worker.http, llm, &segs).await {
            Ok(t) => (t, format!("llm:{}", llm.model)),
            Err(e) => {
                tracing::warn!(call_id, error = %format!("{e:#}"), "LLM summary failed; using the extractive summary");
                metrics::counter!("summary_llm_fallbacks_total").increment(1);
                (extractive.text.clone(), analysis::SUMMARY_MODEL.to_string())
            }
        },
        _ => (extractive.text.clone(), analysis::SUMMARY_MODEL.to_string()),
    };
    let text: String = text.chars().take(8_000).collect();
    let r = worker
        .bus
        .execute::<Call>(
            call_id,
            CallCommand::RecordSummary {
                summary: text,
                generator,
                segments_covered: covered,
                generated_at: Utc::now(),
            },
            &ctx("summary", call_id),
            ExecOptions::idempotent(IdempotencyClaim {
                key: format!("summary:{call_id}"),
                request_hash: "summary".into(),
                response: Value::Null,
            }),
        )
        .await;
    metrics::counter!("summaries_generated_total").increment(1);
    r.map(|_| ()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Asks an OpenAI-compatible `chat/completions` endpoint for a summary.
async fn llm_summary(
    http: &reqwest::Client,
    llm: &LlmConfig,
    segments: &[analysis::Segment],
) -> anyhow::Result<String> {
    let mut transcript = String::new();
    for s in segments {
        transcript.push_str(s.speaker.as_str());
        transcript.push_str(": ");
        transcript.push_str(&s.text);
        transcript.push('\n');
    }
    // Keep the request bounded: the end of a long call matters most for its outcome.
    let max = 24_000;
    if transcript.len() > max {
        let mut cut = transcript.len() - max;
        while !transcript.is_char_boundary(cut) {
            cut += 1;
        }
        transcript = transcript[cut..].to_string();
    }
    let body = json!({
        "model": llm.model,
        "temperature": 0.2,
        "max_tokens": 300,
        "messages": [
            {"role": "system", "content": "You summarise phone calls between a customer and a business's voice agent. Answer with 2-4 sentences: what the customer wanted, what was done or agreed, and any follow-up. Use the language of the call."},
            {"role": "user", "content": transcript},
        ],
    });
    let mut req = http
        .post(format!(
            "{}/chat/completions",
            llm.base_url.trim_end_matches('/')
        ))
        .timeout(llm.timeout)
        .json(&body);
    if let Some(k) = &llm.api_key {
        req = req.bearer_auth(k);
    }
    let res = req.send().await?.error_for_status()?;
    let v: Value = res.json().await?;
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow::anyhow!("the completion has no text"))?;
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_analyses_are_retried_with_a_growing_bounded_pause() {
        assert_eq!(retry_pause(0), Duration::from_millis(250));
        assert_eq!(retry_pause(1), Duration::from_millis(500));
        assert_eq!(retry_pause(3), Duration::from_secs(2));
        assert_eq!(retry_pause(8), MAX_RETRY_PAUSE);
        assert_eq!(retry_pause(u32::MAX), MAX_RETRY_PAUSE);
    }

    #[test]
    fn a_rescanned_call_is_queued_once_and_a_replayed_segment_is_not_counted_twice() {
        let background = Background::default();
        let (consumer, _rx) = AnalysisConsumer::new(&background);
        let call = UnanalysedCall {
            id: "call_1".into(),
            segments: 3,
            expected_segments: Some(3),
            sentiment_considered: Some(3),
            summarized: false,
        };
        assert!(consumer.requeue(&call));
        assert!(!consumer.requeue(&call), "queued already");
        assert_eq!(background.in_flight(), 1);
        {
            let calls = consumer.calls.lock();
            let m = &calls["call_1"];
            assert_eq!((m.last_ordinal, m.sentiment_considered), (3, 3));
            assert!(!m.complete_from_start && !m.summarized);
        }
        // A segment the consumer has seen (a failed batch applied again) changes nothing.
        let seg = |ordinal: u64| StoredEvent {
            position: ordinal as i64,
            txid: 1,
            aggregate_type: "Call".into(),
            aggregate_id: "call_2".into(),
            sequence: ordinal as i64,
            event_type: "TranscriptSegmentAdded".into(),
            event_version: "1".into(),
            payload: serde_json::to_value(CallEvent::TranscriptSegmentAdded {
                ordinal,
                origin: aggregates::call::RuntimeOrigin {
                    runtime_id: "rt_1".into(),
                    event_id: format!("evt_{ordinal}"),
                    occurred_at: Utc::now(),
                },
                segment: aggregates::call::TranscriptSegment {
                    segment_id: format!("seg_{ordinal}"),
                    speaker: Speaker::Agent,
                    text: "hello".into(),
                    started_at: Utc::now(),
                    ended_at: Utc::now(),
                    confidence: None,
                },
            })
            .unwrap(),
            metadata: json!({}),
            event_id: format!("evt_{ordinal}"),
            recorded_at: Utc::now(),
        };
        for ordinal in [1, 2, 1, 2, 3] {
            consumer.consume(&seg(ordinal)).unwrap();
        }
        let calls = consumer.calls.lock();
        assert_eq!(calls["call_2"].segments.len(), 3);
        assert_eq!(calls["call_2"].last_ordinal, 3);
    }
}
