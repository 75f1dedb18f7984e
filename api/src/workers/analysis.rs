//! Sentiment and summary workers (Appendix D.4). A consumer of the call events (run by the
//! projector runtime, so it resumes from a checkpoint) keeps each live call's transcript in
//! memory; a task recomputes the call's sentiment as customer segments arrive (at most every
//! `SENTIMENT_INTERVAL_MS` per call, and at the end) and writes the summary when the call ends.
//! Both outcomes are recorded as events (`SentimentComputed`, `SummaryGenerated`) with
//! idempotency keys, so replays add nothing and a rebuild reproduces them without recomputing.
//!
//! Summaries come from the embedded extractive summariser, or from an OpenAI-compatible chat
//! endpoint when one is configured, with the extractive one as the fallback.

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

/// Longest transcript kept in memory per call (segments); beyond it the summary reads the rest
/// from the read model.
const MAX_SEGMENTS_IN_MEMORY: usize = 5_000;
/// Window of the per-window sentiment.
const WINDOW_SECS: f64 = 60.0;
/// How long to wait for announced-but-missing segments before summarising anyway.
const SUMMARY_PATIENCE: Duration = Duration::from_secs(4);

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
            CallEvent::SentimentComputed {
                segments_considered,
                ..
            } => {
                let m = calls.entry(id.clone()).or_default();
                m.sentiment_considered = m.sentiment_considered.max(segments_considered);
                false
            }
            CallEvent::SummaryGenerated { .. } => {
                calls.entry(id.clone()).or_default().summarized = true;
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

/// Configuration of the analysis worker.
#[derive(Debug, Clone)]
pub struct AnalysisConfig {
    pub sentiment_interval: Duration,
    pub llm: Option<LlmConfig>,
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

/// The worker task: recomputes what the consumer marked dirty.
pub async fn run(worker: Arc<AnalysisWorker>, dirty: DirtyCalls) {
    let mut dirty = dirty.lock().await;
    let mut pending: BTreeMap<String, Job> = BTreeMap::new();
    let mut last_emit: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            Some((id, job)) = dirty.recv() => { pending.entry(id).or_insert(job); continue; }
            _ = tick.tick() => {}
        }
        let due: Vec<String> = pending.keys().cloned().collect();
        for id in due {
            let keep = process(&worker, &id, &mut last_emit).await;
            match keep {
                Ok(true) => {}
                Ok(false) => {
                    pending.remove(&id);
                }
                Err(e) => {
                    tracing::warn!(call_id = %id, error = %format!("{e:#}"), "call analysis failed; will retry");
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
