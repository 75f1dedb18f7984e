//! `control-plane-loadgen calls`: N concurrent simulated calls against a running control plane.
//!
//! Each call slot plays calls like a runtime would: `call_started`, `call_connected`, transcript
//! segments at a pace with a tool call and result halfway, `recording_available`, `call_ended`,
//! as Appendix B.1 envelopes with deterministic idempotency keys (retried on failure; a retry
//! of an accepted event is a no-op by B.3). Meanwhile:
//! - UI transcript pollers (one per watched call) poll `GET /calls/{id}/transcript` with the
//!   cursor at the UI cadence until the transcript is complete, and check every segment came
//!   exactly once;
//! - lag probes (a sample of calls) poll that call's transcript every few milliseconds while
//!   one of its segments is acknowledged but not yet seen: append-to-visible lag is the time
//!   from the segment's 202 to the poll answer that first contains it;
//! - UI clients poll `GET /calls/active` every 3–5 s.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::server::{self, Monitor, Watched};
use super::setup::{self, Tenant};
use super::stats::{request_error_kind, Errors, Samples};
use super::{finish_report, machine_facts, Api, Target};

#[derive(Debug, Clone, Args)]
pub struct CallsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Concurrent simulated calls (call slots).
    #[arg(long, default_value_t = 100)]
    pub calls: usize,
    /// Transcript segments per call.
    #[arg(long, default_value_t = 20)]
    pub segments: usize,
    /// Time between two events of a call, milliseconds (±20% jitter). 0 sends them back to
    /// back: a throughput test.
    #[arg(long, default_value_t = 1000)]
    pub pace_ms: u64,
    /// Seconds of load: each slot starts calls one after another until then. 0: one call per
    /// slot.
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Seconds over which the slots start (slot i at ramp_up * i / calls).
    #[arg(long, default_value_t = 5)]
    pub ramp_up: u64,
    /// Establishments (each with its own runtime) the calls are spread over.
    #[arg(long, default_value_t = 1)]
    pub establishments: usize,
    /// Simulated UI clients polling `GET /calls/active`.
    #[arg(long, default_value_t = 4)]
    pub ui_clients: usize,
    /// Mean time between two `GET /calls/active` of one UI client, milliseconds (±25%: 3–5 s
    /// by default).
    #[arg(long, default_value_t = 4000)]
    pub active_interval_ms: u64,
    /// Call slots whose calls a UI transcript poller watches (default: all).
    #[arg(long)]
    pub pollers: Option<usize>,
    /// Mean time between two transcript polls of a UI poller, milliseconds (±33%: 1–2 s by
    /// default).
    #[arg(long, default_value_t = 1500)]
    pub poll_interval_ms: u64,
    /// Call slots whose segments are timed from 202 to visible (lag probes).
    #[arg(long, default_value_t = 50)]
    pub lag_probes: usize,
    /// Time between two polls of a lag probe while a segment is outstanding, milliseconds.
    #[arg(long, default_value_t = 5)]
    pub probe_interval_ms: u64,
    /// Events per request (the batch form of B.1): each call slot plays this many calls in
    /// step and posts one event of each in one array. 1 posts one envelope per request. With
    /// more than 1 there are no pollers or lag probes on these calls.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

/// What one line of the scripted conversation says (agent on even segments).
const SCRIPT: [&str; 12] = [
    "Hello, thank you for calling. How can I help you today?",
    "Hi, I need to update my service plan, my bill went up again.",
    "I can help with that. Can you confirm the account holder's name?",
    "Yes, it's Maria Souza. I have been a customer for six years.",
    "Thank you, Maria. I see two plans that would lower your bill.",
    "That's great, the cheaper one sounds good to me.",
    "Done. I've switched you to the saver plan starting next month.",
    "Perfect, thank you so much, that was really helpful.",
    "I'll send a confirmation to your email. Anything else?",
    "No, that's all. Actually, the last agent was rude to me.",
    "I'm sorry about that experience. I'll note it on your account.",
    "Thanks, I appreciate it. Have a good day.",
];

/// B.1 envelope for one event of a simulated call, with its deterministic idempotency key
/// `{runtime_id}:{CallSid}:{suffix}` and an event id derived from it.
pub fn envelope(
    t: &Tenant,
    sid: &str,
    from: &str,
    kind: &str,
    suffix: &str,
    payload: Value,
    at: DateTime<Utc>,
) -> Value {
    let key = format!("{}:{sid}:{suffix}", t.runtime_id);
    let event_id = format!("evt_{}", &hex::encode(Sha256::digest(key.as_bytes()))[..26]);
    json!({
        "runtime_id": t.runtime_id,
        "establishment_id": t.establishment_id,
        "agent_id": t.agent_id,
        "agent_version_id": t.version_id,
        "call": {
            "provider": "twilio",
            "provider_call_sid": sid,
            "direction": "inbound",
            "from_e164": from,
            "to_e164": t.number,
        },
        "event": {
            "id": event_id,
            "type": kind,
            "occurred_at": at,
            "idempotency_key": key,
            "payload": payload,
        }
    })
}

/// Builds an event's payload from (call start, now).
pub type Payload = Box<dyn Fn(DateTime<Utc>, DateTime<Utc>) -> Value + Send + Sync>;

/// The events of one call in order: (type, key suffix, payload). Timestamps are filled in
/// when each is sent.
pub fn script(sid: &str, call_no: u64, segments: usize) -> Vec<(&'static str, String, Payload)> {
    let mut out: Vec<(&'static str, String, Payload)> = vec![
        (
            "call_started",
            "started".into(),
            Box::new(|_, now| json!({ "started_at": now })),
        ),
        (
            "call_connected",
            "connected".into(),
            Box::new(|_, now| json!({ "connected_at": now })),
        ),
    ];
    for k in 0..segments {
        if k == segments / 2 {
            out.push((
                "tool_called",
                "tool_called:1".into(),
                Box::new(|_, _| {
                    json!({"tool_name": "send_email", "arguments": {"to": "maria@example.com", "template": "plan_change"}})
                }),
            ));
            out.push((
                "tool_result",
                "tool_result:1".into(),
                Box::new(|_, _| {
                    json!({"tool_name": "send_email", "result": {"ok": true, "correlation_id": "msg_loadgen"}, "error": null})
                }),
            ));
        }
        let segment_id = segment_id(call_no, k);
        let speaker = if k % 2 == 0 { "agent" } else { "customer" };
        let text = SCRIPT[k % SCRIPT.len()];
        out.push((
            "transcript_segment",
            format!("seg:{k:06}"),
            Box::new(move |_, now| {
                json!({
                    "segment_id": segment_id,
                    "speaker": speaker,
                    "text": text,
                    "started_at": now - chrono::Duration::milliseconds(1500),
                    "ended_at": now,
                    "confidence": 0.91,
                })
            }),
        ));
    }
    let url = format!("https://recordings.loadgen.invalid/{sid}.wav");
    out.push((
        "recording_available",
        "recording".into(),
        Box::new(move |_, _| {
            json!({"recording_url": url, "storage_provider": "s3", "content_type": "audio/wav"})
        }),
    ));
    out.push((
        "call_ended",
        "ended".into(),
        Box::new(move |started, now| {
            json!({
                "ended_at": now,
                "duration_seconds": (now - started).num_seconds().max(0),
                "final_status": "completed",
                "hangup_by": "customer",
                "segment_count": segments,
            })
        }),
    ));
    out
}

pub fn segment_id(call_no: u64, k: usize) -> String {
    format!("seg_{call_no}_{k:04}")
}

/// A CallSid for call `n` of the run with this salt: `CA` + 32 hex digits.
pub fn call_sid(salt: u32, n: u64) -> String {
    format!("CA{salt:08x}{n:024x}")
}

/// The caller's number of call `n` (unique within a run, to find the call by).
pub fn caller(n: u64) -> String {
    format!("+1202{:07}", n % 10_000_000)
}

/// One call as its observers see it.
#[derive(Default)]
struct CallState {
    call_id: Mutex<Option<String>>,
    /// Segment id → time its 202 arrived.
    acked: Mutex<HashMap<String, Instant>>,
    segments_acked: AtomicUsize,
    /// Set when `call_ended` was sent (accepted or not).
    ended: Mutex<Option<Instant>>,
}

struct Run {
    api: Api,
    admin: String,
    tenants: Vec<Tenant>,
    args: CallsArgs,
    salt: u32,
    started: Instant,
    stop_at: Option<Instant>,
    next_call: AtomicU64,
    done: AtomicBool,
    observers: Mutex<Vec<tokio::task::JoinHandle<()>>>,

    ingest: Samples,
    accepted: AtomicU64,
    replayed: AtomicU64,
    first_send: Mutex<Option<Instant>>,
    last_accept: Mutex<Option<Instant>>,
    per_second: Mutex<Vec<u64>>,
    calls_started: AtomicU64,
    calls_finished: AtomicU64,

    lag: Samples,
    call_visible: Samples,
    ui_seen: Samples,
    poll: Samples,
    probe_poll: Samples,
    find_call: Samples,
    active: Samples,
    active_items_max: AtomicUsize,
    transcripts_checked: AtomicU64,
    errors: Errors,
}

fn jitter(mean: Duration, spread: f64) -> Duration {
    if mean.is_zero() {
        return mean;
    }
    let f = 1.0 - spread + rand::random::<f64>() * 2.0 * spread;
    mean.mul_f64(f)
}

impl Run {
    /// Posts one envelope like a runtime: retries transport errors, 429 and 5xx with backoff.
    /// Returns when the 202 arrived, or None when the event was given up.
    async fn post(&self, t: &Tenant, env: &Value) -> Option<Instant> {
        self.post_items(t, env, 1).await
    }

    /// [`Self::post`] for a body carrying `items` events (a batch); a 207 (some item
    /// rejected) counts as an error and is not retried.
    async fn post_items(&self, t: &Tenant, env: &Value, items: u64) -> Option<Instant> {
        {
            let mut f = self.first_send.lock();
            if f.is_none() {
                *f = Some(Instant::now());
            }
        }
        let url = self.api.url("/ingest/call-events");
        for attempt in 0..6u32 {
            let t0 = Instant::now();
            let res = self
                .api
                .http
                .post(&url)
                .bearer_auth(&t.runtime_token)
                .json(env)
                .send()
                .await;
            match res {
                Ok(res) => {
                    let status = res.status();
                    let replayed = res.headers().contains_key("idempotent-replayed");
                    let body = res.bytes().await;
                    let now = Instant::now();
                    self.ingest.record(now - t0);
                    match (status, body) {
                        (StatusCode::ACCEPTED, Ok(_)) => {
                            self.accepted.fetch_add(items, Ordering::Relaxed);
                            if replayed {
                                self.replayed.fetch_add(1, Ordering::Relaxed);
                            }
                            *self.last_accept.lock() = Some(now);
                            let sec = (now - self.started).as_secs() as usize;
                            let mut ps = self.per_second.lock();
                            if ps.len() <= sec {
                                ps.resize(sec + 1, 0);
                            }
                            ps[sec] += items;
                            return Some(now);
                        }
                        (StatusCode::ACCEPTED, Err(e)) => {
                            self.errors.add(request_error_kind("ingest", &e))
                        }
                        (s, _) => {
                            self.errors.add(format!("ingest_http_{}", s.as_u16()));
                            if s == StatusCode::MULTI_STATUS
                                || (s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS)
                            {
                                return None;
                            }
                        }
                    }
                }
                Err(e) => self.errors.add(request_error_kind("ingest", &e)),
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        self.errors.add("ingest_given_up");
        None
    }

    /// GET with the admin token; records the latency in `samples`, counts errors as `what_*`.
    async fn get(&self, what: &str, path: &str, samples: &Samples) -> Option<Value> {
        let t0 = Instant::now();
        match self
            .api
            .call(Method::GET, path, Some(&self.admin), None)
            .await
        {
            Ok(r) => {
                samples.record(t0.elapsed());
                if r.status == StatusCode::OK {
                    Some(r.body)
                } else {
                    self.errors
                        .add(format!("{what}_http_{}", r.status.as_u16()));
                    None
                }
            }
            Err(e) => {
                self.errors.add(request_error_kind(what, &e));
                None
            }
        }
    }

    /// Looks the call up in the history by its unique caller number.
    async fn find_call(&self, t: &Tenant, from: &str) -> Option<String> {
        let path = format!(
            "/calls?establishment_id={}&from_e164={}&limit=1",
            t.establishment_id,
            urlencode(from)
        );
        let body = self.get("find_call", &path, &self.find_call).await?;
        body["items"][0]["call_id"].as_str().map(str::to_string)
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn transcript_path(call_id: &str, cursor: Option<&str>) -> String {
    match cursor {
        Some(c) => format!("/calls/{call_id}/transcript?cursor={}", urlencode(c)),
        None => format!("/calls/{call_id}/transcript"),
    }
}

/// Plays call slot `slot`: one call, or calls back to back until the end of the run.
async fn slot(run: Arc<Run>, slot: usize, watch: bool, probe: bool) {
    let args = &run.args;
    let delay = if args.calls > 1 {
        Duration::from_secs(args.ramp_up).mul_f64(slot as f64 / args.calls as f64)
    } else {
        Duration::ZERO
    };
    tokio::time::sleep_until((run.started + delay).into()).await;
    loop {
        if args.batch > 1 {
            let first = run
                .next_call
                .fetch_add(args.batch as u64, Ordering::Relaxed);
            play_batch(run.clone(), first..first + args.batch as u64).await;
        } else {
            let n = run.next_call.fetch_add(1, Ordering::Relaxed);
            play(run.clone(), n, watch, probe).await;
        }
        match run.stop_at {
            Some(stop) if Instant::now() < stop => continue,
            _ => break,
        }
    }
}

/// A call's events in order: (type, key suffix, payload).
type Script = Vec<(&'static str, String, Payload)>;

/// Plays the calls `ns` in step, as one runtime flushing its calls' events together: one
/// request per step carrying the next event of every call.
async fn play_batch(run: Arc<Run>, ns: std::ops::Range<u64>) {
    let tenant = run.tenants[ns.start as usize % run.tenants.len()].clone();
    let pace = Duration::from_millis(run.args.pace_ms);
    let calls: Vec<(String, String, Script)> = ns
        .clone()
        .map(|n| {
            let sid = call_sid(run.salt, n);
            let events = script(&sid, n, run.args.segments);
            (sid, caller(n), events)
        })
        .collect();
    run.calls_started
        .fetch_add(calls.len() as u64, Ordering::Relaxed);
    let started_at = Utc::now();
    let steps = calls.iter().map(|c| c.2.len()).min().unwrap_or(0);
    for i in 0..steps {
        if i > 0 && !pace.is_zero() {
            tokio::time::sleep(jitter(pace, 0.2)).await;
        }
        let now = Utc::now();
        let body: Vec<Value> = calls
            .iter()
            .map(|(sid, from, events)| {
                let (kind, suffix, payload) = &events[i];
                envelope(
                    &tenant,
                    sid,
                    from,
                    kind,
                    suffix,
                    payload(started_at, now),
                    now,
                )
            })
            .collect();
        let n = body.len() as u64;
        run.post_items(&tenant, &Value::Array(body), n).await;
    }
    run.calls_finished
        .fetch_add(calls.len() as u64, Ordering::Relaxed);
}

/// Plays call number `n`.
async fn play(run: Arc<Run>, n: u64, watch: bool, probe: bool) {
    let tenant = run.tenants[n as usize % run.tenants.len()].clone();
    let sid = call_sid(run.salt, n);
    let from = caller(n);
    let state = Arc::new(CallState::default());
    run.calls_started.fetch_add(1, Ordering::Relaxed);
    let pace = Duration::from_millis(run.args.pace_ms);
    let events = script(&sid, n, run.args.segments);
    let mut probe_tx: Option<mpsc::UnboundedSender<(String, Instant)>> = None;
    let started_at = Utc::now();
    for (i, (kind, suffix, payload)) in events.iter().enumerate() {
        if i > 0 && !pace.is_zero() {
            tokio::time::sleep(jitter(pace, 0.2)).await;
        }
        let now = Utc::now();
        let body = payload(started_at, now);
        let segment = (*kind == "transcript_segment")
            .then(|| body["segment_id"].as_str().unwrap_or_default().to_string());
        let env = envelope(&tenant, &sid, &from, kind, suffix, body, now);
        if *kind == "call_ended" {
            *state.ended.lock() = Some(Instant::now());
        }
        let Some(acked) = run.post(&tenant, &env).await else {
            continue;
        };
        if i == 0 {
            // The call exists now: its observers start.
            let mut obs = run.observers.lock();
            if probe {
                let (tx, rx) = mpsc::unbounded_channel();
                probe_tx = Some(tx);
                obs.push(tokio::spawn(probe_call(
                    run.clone(),
                    tenant.clone(),
                    from.clone(),
                    state.clone(),
                    acked,
                    rx,
                )));
            }
            if watch {
                obs.push(tokio::spawn(watch_call(
                    run.clone(),
                    tenant.clone(),
                    from.clone(),
                    state.clone(),
                    n,
                )));
            }
        }
        if let Some(seg) = segment {
            state.acked.lock().insert(seg.clone(), acked);
            state.segments_acked.fetch_add(1, Ordering::Relaxed);
            if let Some(tx) = &probe_tx {
                let _ = tx.send((seg, acked));
            }
        }
    }
    if state.ended.lock().is_none() {
        *state.ended.lock() = Some(Instant::now());
    }
    run.calls_finished.fetch_add(1, Ordering::Relaxed);
}

/// Lag probe of one call: finds the call as soon as it is visible, then, whenever a segment
/// was acknowledged and not yet seen, polls the transcript every `probe_interval_ms`.
async fn probe_call(
    run: Arc<Run>,
    tenant: Tenant,
    from: String,
    state: Arc<CallState>,
    started_ack: Instant,
    mut rx: mpsc::UnboundedReceiver<(String, Instant)>,
) {
    let interval = Duration::from_millis(run.args.probe_interval_ms);
    let call_id = loop {
        if let Some(id) = run.find_call(&tenant, &from).await {
            run.call_visible.record(started_ack.elapsed());
            *state.call_id.lock() = Some(id.clone());
            break id;
        }
        if started_ack.elapsed() > Duration::from_secs(30) {
            run.errors.add("call_not_visible_30s");
            return;
        }
        tokio::time::sleep(interval).await;
    };
    let mut pending: HashMap<String, Instant> = HashMap::new();
    // Segments a poll showed before their 202 reached us (lag 0).
    let mut early: HashSet<String> = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some((seg, at)) => {
                    if !early.remove(&seg) {
                        pending.insert(seg, at);
                    } else {
                        run.lag.record(Duration::ZERO);
                    }
                }
                None => return,
            }
        }
        while let Ok((seg, at)) = rx.try_recv() {
            if !early.remove(&seg) {
                pending.insert(seg, at);
            } else {
                run.lag.record(Duration::ZERO);
            }
        }
        if pending.is_empty() {
            continue;
        }
        let path = transcript_path(&call_id, cursor.as_deref());
        if let Some(body) = run.get("probe_poll", &path, &run.probe_poll).await {
            let seen = Instant::now();
            for item in body["items"].as_array().into_iter().flatten() {
                let Some(seg) = item["segment_id"].as_str() else {
                    continue;
                };
                match pending.remove(seg) {
                    Some(acked) => run.lag.record(seen.saturating_duration_since(acked)),
                    None => {
                        early.insert(seg.to_string());
                    }
                }
            }
            if let Some(c) = body["cursor"].as_str() {
                cursor = Some(c.to_string());
            }
        }
        let before = pending.len();
        pending.retain(|_, acked| acked.elapsed() < Duration::from_secs(30));
        for _ in pending.len()..before {
            run.errors.add("segment_not_visible_30s");
        }
        if !pending.is_empty() {
            tokio::time::sleep(interval).await;
        }
    }
}

/// UI transcript poller of one call: finds the call, polls with the cursor at the UI cadence
/// until `is_complete`, and checks each segment arrived exactly once.
async fn watch_call(run: Arc<Run>, tenant: Tenant, from: String, state: Arc<CallState>, n: u64) {
    let interval = Duration::from_millis(run.args.poll_interval_ms);
    let first = Instant::now();
    let call_id = loop {
        let known = state.call_id.lock().clone();
        if let Some(id) = known {
            break id;
        }
        if let Some(id) = run.find_call(&tenant, &from).await {
            break id;
        }
        if first.elapsed() > Duration::from_secs(30) {
            run.errors.add("call_not_visible_30s");
            return;
        }
        tokio::time::sleep(jitter(interval, 0.33)).await;
    };
    let mut cursor: Option<String> = None;
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let path = transcript_path(&call_id, cursor.as_deref());
        if let Some(body) = run.get("poll", &path, &run.poll).await {
            let now = Instant::now();
            for item in body["items"].as_array().into_iter().flatten() {
                let seg = item["segment_id"].as_str().unwrap_or_default().to_string();
                let acked = state.acked.lock().get(&seg).copied();
                if let Some(a) = acked {
                    run.ui_seen.record(now.saturating_duration_since(a));
                }
                if !seen.insert(seg) {
                    run.errors.add("transcript_duplicate_segment");
                }
            }
            if let Some(c) = body["cursor"].as_str() {
                cursor = Some(c.to_string());
            }
            if body["is_complete"] == true {
                let want = run.args.segments;
                let expected: HashSet<String> = (0..want).map(|k| segment_id(n, k)).collect();
                if seen != expected {
                    run.errors.add("transcript_incomplete");
                }
                run.transcripts_checked.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let ended = *state.ended.lock();
        if ended.is_some_and(|e| e.elapsed() > Duration::from_secs(30)) {
            run.errors.add("transcript_not_complete_30s_after_end");
            return;
        }
        tokio::time::sleep(jitter(interval, 0.33)).await;
    }
}

/// A UI client on the active-calls page.
async fn ui_client(run: Arc<Run>, i: usize) {
    let interval = Duration::from_millis(run.args.active_interval_ms);
    let t = &run.tenants[i % run.tenants.len()];
    let path = format!("/calls/active?establishment_id={}", t.establishment_id);
    tokio::time::sleep(interval.mul_f64(rand::random::<f64>())).await;
    while !run.done.load(Ordering::Relaxed) {
        if let Some(body) = run.get("active", &path, &run.active).await {
            let n = body["items"].as_array().map(Vec::len).unwrap_or(0);
            run.active_items_max.fetch_max(n, Ordering::Relaxed);
        }
        tokio::time::sleep(jitter(interval, 0.25)).await;
    }
}

/// Whether slot `i` of `n` is one of `k` evenly spread ones.
fn picked(i: usize, n: usize, k: usize) -> bool {
    k >= n || (i * k) / n != ((i + 1) * k) / n
}

/// Runs the load, prints a summary and returns the report.
pub async fn run(args: CallsArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.calls > 0, "--calls must be at least 1");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(
        args.establishments > 0,
        "--establishments must be at least 1"
    );
    let base = args.target.base_url();
    let api = Api::new(base.clone(), Duration::from_millis(args.target.timeout_ms))?;
    let (email, password) = args.target.credentials()?;
    let admin = api.login(&email, &password).await?;
    let salt = super::run_salt();
    println!(
        "loadgen calls against {base}: setting up {} establishment(s) with a runtime each...",
        args.establishments
    );
    let mut tenants = Vec::new();
    for i in 0..args.establishments {
        let t = setup::tenant(
            &api,
            &admin,
            &format!("loadgen {salt:08x} #{i}"),
            &args.target.image,
            false,
        )
        .await
        .with_context(|| format!("setting up establishment {i}"))?;
        println!(
            "  {} number {} runtime {} (token read from container {})",
            t.establishment_id, t.number, t.runtime_id, t.container_name
        );
        tenants.push(t);
    }
    let watched = args.pollers.unwrap_or(args.calls).min(args.calls);
    let probes = args.lag_probes.min(args.calls);
    println!(
        "playing {} concurrent calls ({} segments, pace {} ms, duration {} s, ramp-up {} s); {} watched by UI pollers every ~{} ms, {} lag probes every {} ms, {} UI clients on /calls/active every ~{} ms",
        args.calls, args.segments, args.pace_ms, args.duration, args.ramp_up, watched,
        args.poll_interval_ms, probes, args.probe_interval_ms, args.ui_clients, args.active_interval_ms
    );
    let watcher = Watched::locate(args.target.server_pid, args.target.port());
    let metrics_before = api.metrics().await;
    let monitor = Monitor::start(watcher, args.target.db_pid);
    let started = Instant::now();
    let run = Arc::new(Run {
        api: api.clone(),
        admin: admin.clone(),
        tenants: tenants.clone(),
        salt,
        started,
        stop_at: (args.duration > 0).then(|| started + Duration::from_secs(args.duration)),
        next_call: AtomicU64::new(0),
        done: AtomicBool::new(false),
        observers: Mutex::new(Vec::new()),
        ingest: Samples::default(),
        accepted: AtomicU64::new(0),
        replayed: AtomicU64::new(0),
        first_send: Mutex::new(None),
        last_accept: Mutex::new(None),
        per_second: Mutex::new(Vec::new()),
        calls_started: AtomicU64::new(0),
        calls_finished: AtomicU64::new(0),
        lag: Samples::default(),
        call_visible: Samples::default(),
        ui_seen: Samples::default(),
        poll: Samples::default(),
        probe_poll: Samples::default(),
        find_call: Samples::default(),
        active: Samples::default(),
        active_items_max: AtomicUsize::new(0),
        transcripts_checked: AtomicU64::new(0),
        errors: Errors::default(),
        args: args.clone(),
    });
    let ui: Vec<_> = (0..args.ui_clients)
        .map(|i| tokio::spawn(ui_client(run.clone(), i)))
        .collect();
    let slots: Vec<_> = (0..args.calls)
        .map(|i| {
            tokio::spawn(slot(
                run.clone(),
                i,
                picked(i, args.calls, watched),
                picked(i, args.calls, probes),
            ))
        })
        .collect();
    let progress = {
        let run = run.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let a = run.accepted.load(Ordering::Relaxed);
                eprintln!(
                    "  t={:>4.0}s calls started {} finished {}, events accepted {} (+{}/5s), lag samples {}, errors {}",
                    run.started.elapsed().as_secs_f64(),
                    run.calls_started.load(Ordering::Relaxed),
                    run.calls_finished.load(Ordering::Relaxed),
                    a,
                    a - last,
                    run.lag.len(),
                    run.errors.total()
                );
                last = a;
            }
        })
    };
    for s in slots {
        s.await?;
    }
    let ingest_done = Instant::now();
    // Observers finish on their own (complete transcripts, or their timeouts).
    loop {
        let handles: Vec<_> = std::mem::take(&mut *run.observers.lock());
        if handles.is_empty() {
            break;
        }
        for h in handles {
            h.await?;
        }
    }
    run.done.store(true, Ordering::Relaxed);
    for u in ui {
        u.abort();
    }
    progress.abort();
    let usage = monitor.finish();
    let metrics_after = api.metrics().await;
    if !args.target.keep_runtime {
        setup::stop_runtimes(&api, &admin, &tenants).await;
    }

    let accepted = run.accepted.load(Ordering::Relaxed);
    let window = match (*run.first_send.lock(), *run.last_accept.lock()) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let throughput = if window > 0.0 {
        accepted as f64 / window
    } else {
        0.0
    };
    let mut per_second = run.per_second.lock().clone();
    // Steady state: every slot busy, i.e. after the ramp-up and, with --duration, before slots
    // stop starting calls (then the rate tails off); without it, until the first call ends.
    let busy_from = args.ramp_up as usize + 1;
    let call_secs = ((args.segments + 5) as u64 * args.pace_ms / 1000) as usize;
    let busy_to = if args.duration > 0 {
        args.duration as usize
    } else {
        call_secs
    }
    .min((ingest_done - started).as_secs() as usize);
    let mut busy: Vec<u64> = per_second
        .iter()
        .copied()
        .enumerate()
        .filter(|(s, _)| *s >= busy_from && *s + 1 < busy_to)
        .map(|(_, v)| v)
        .collect();
    busy.sort_unstable();
    let steady = (!busy.is_empty()).then(|| busy[busy.len() / 2]);
    per_second.truncate(3600);
    let offered = (args.pace_ms > 0).then(|| args.calls as f64 * 1000.0 / args.pace_ms as f64);
    let stages = server::stage_report(
        &metrics_before,
        &metrics_after,
        &[
            ("POST", "/ingest/call-events"),
            ("GET", "/calls/{callId}/transcript"),
            ("GET", "/calls/active"),
            ("GET", "/calls"),
        ],
    );
    let lag = run.lag.summary();
    let poll = run.poll.summary();
    let errors = run.errors.snapshot();
    let error_total: u64 = errors.values().sum();
    let report = json!({
        "kind": "loadgen calls",
        "target": base,
        "at": Utc::now(),
        "machine": machine_facts(),
        "options": {
            "calls": args.calls, "segments": args.segments, "pace_ms": args.pace_ms,
            "duration_s": args.duration, "ramp_up_s": args.ramp_up,
            "establishments": args.establishments, "ui_clients": args.ui_clients,
            "active_interval_ms": args.active_interval_ms, "watched_calls": watched,
            "poll_interval_ms": args.poll_interval_ms, "lag_probes": probes,
            "probe_interval_ms": args.probe_interval_ms,
        },
        "calls": {
            "played": run.calls_started.load(Ordering::Relaxed),
            "finished": run.calls_finished.load(Ordering::Relaxed),
            "transcripts_checked_complete": run.transcripts_checked.load(Ordering::Relaxed),
        },
        "ingest": {
            "events_accepted": accepted,
            "events_per_request": args.batch,
            "replayed": run.replayed.load(Ordering::Relaxed),
            "window_s": window,
            "events_per_s": throughput,
            "steady_events_per_s_median": steady,
            "offered_events_per_s": offered,
            "per_second": per_second,
            "post_latency": run.ingest.summary(),
        },
        "append_to_visible_lag": lag,
        "call_visible_lag": run.call_visible.summary(),
        "ui_seen_after_ack": run.ui_seen.summary(),
        "transcript_poll": poll,
        "probe_poll": run.probe_poll.summary(),
        "find_call": run.find_call.summary(),
        "active_calls_poll": run.active.summary(),
        "active_calls_items_max": run.active_items_max.load(Ordering::Relaxed),
        "errors": errors,
        "error_total": error_total,
        "usage": usage,
        "server_stages": stages,
        "goals": {
            "zero_errors": error_total == 0,
            "lag_p99_under_100ms": lag.count > 0 && lag.p99_ms < 100.0,
            "poll_p99_under_10ms": poll.count > 0 && poll.p99_ms < 10.0,
            "at_1000_calls": args.calls >= 1000,
        },
    });

    println!("--- loadgen calls: results ---");
    println!(
        "calls: {} played, {} transcripts checked complete and exact",
        run.calls_started.load(Ordering::Relaxed),
        run.transcripts_checked.load(Ordering::Relaxed)
    );
    println!(
        "ingest: {accepted} events accepted in {window:.1} s = {throughput:.0} events/s{}{}; POST {}",
        steady
            .map(|s| format!(" (median of busy seconds {s}/s)"))
            .unwrap_or_default(),
        offered
            .map(|o| format!(", offered ~{o:.0}/s"))
            .unwrap_or_default(),
        run.ingest.summary().line()
    );
    println!(
        "append-to-visible lag (202 -> in a transcript poll): {}",
        lag.line()
    );
    println!(
        "call visible (call_started 202 -> in GET /calls): {}",
        run.call_visible.summary().line()
    );
    println!(
        "UI pollers saw segments after their 202: {}",
        run.ui_seen.summary().line()
    );
    println!("transcript poll (UI cadence): {}", poll.line());
    println!(
        "transcript poll (lag probes): {}",
        run.probe_poll.summary().line()
    );
    println!(
        "GET /calls/active: {} (up to {} items)",
        run.active.summary().line(),
        run.active_items_max.load(Ordering::Relaxed)
    );
    finish_report(&usage, &report, error_total, args.target.report.as_deref())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregates::call::{CallSid, RuntimeEvent};
    use serde::Deserialize;

    /// The Appendix B.1 envelope as the wire format states it (no unknown fields), read back
    /// independently of how `envelope` writes it.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Envelope {
        runtime_id: String,
        establishment_id: String,
        agent_id: Option<String>,
        agent_version_id: Option<String>,
        call: EnvelopeCall,
        event: EnvelopeEvent,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct EnvelopeCall {
        provider: String,
        provider_call_sid: String,
        direction: String,
        from_e164: String,
        to_e164: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct EnvelopeEvent {
        id: String,
        #[serde(rename = "type")]
        kind: String,
        occurred_at: DateTime<Utc>,
        idempotency_key: String,
        payload: Value,
    }

    fn tenant() -> Tenant {
        Tenant {
            establishment_id: "est_1".into(),
            agent_id: "agt_1".into(),
            version_id: "agv_1".into(),
            number: "+14158670000".into(),
            runtime_id: "rt_1".into(),
            container_name: "agent_rt_est_1".into(),
            runtime_token: "secret".into(),
        }
    }

    #[test]
    fn every_scripted_event_is_a_valid_appendix_b_envelope() {
        let t = tenant();
        let sid = call_sid(7, 42);
        let events = script(&sid, 42, 5);
        let kinds: Vec<&str> = events.iter().map(|e| e.0).collect();
        assert_eq!(
            kinds,
            [
                "call_started",
                "call_connected",
                "transcript_segment",
                "transcript_segment",
                "tool_called",
                "tool_result",
                "transcript_segment",
                "transcript_segment",
                "transcript_segment",
                "recording_available",
                "call_ended"
            ]
        );
        let start = Utc::now();
        for (kind, suffix, payload) in &events {
            let env = envelope(
                &t,
                &sid,
                &caller(42),
                kind,
                suffix,
                payload(start, Utc::now()),
                Utc::now(),
            );
            let parsed: Envelope = serde_json::from_value(env.clone())
                .unwrap_or_else(|e| panic!("{kind}: {e}: {env}"));
            assert_eq!(parsed.call.provider_call_sid, sid);
            // The payload as the server reads it: the Call aggregate's runtime event.
            let event: RuntimeEvent = serde_json::from_value(
                json!({"type": parsed.event.kind, "payload": parsed.event.payload}),
            )
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
            event.validate().unwrap();
            assert_eq!(event.type_name(), *kind);
        }
        assert!(sid.parse::<CallSid>().is_ok());
    }

    #[test]
    fn idempotency_keys_and_event_ids_are_deterministic_and_distinct() {
        let t = tenant();
        let sid = call_sid(1, 2);
        let key = |suffix: &str| {
            let e = envelope(
                &t,
                &sid,
                "+12020000002",
                "call_started",
                suffix,
                json!({}),
                Utc::now(),
            );
            (
                e["event"]["idempotency_key"].as_str().unwrap().to_string(),
                e["event"]["id"].as_str().unwrap().to_string(),
            )
        };
        assert_eq!(key("seg:000001"), key("seg:000001"));
        assert_ne!(key("seg:000001"), key("seg:000002"));
        assert_eq!(key("started").0, format!("rt_1:{sid}:started"));
        let suffixes: HashSet<String> = script(&sid, 2, 30).into_iter().map(|e| e.1).collect();
        assert_eq!(suffixes.len(), 30 + 6);
        assert_ne!(call_sid(1, 2), call_sid(2, 2));
        assert_ne!(caller(1), caller(2));
    }

    #[test]
    fn evenly_spread_picks_take_exactly_k_slots() {
        for (n, k) in [(100, 50), (1000, 50), (7, 3), (5, 5), (5, 9), (10, 0)] {
            let got = (0..n).filter(|&i| picked(i, n, k)).count();
            assert_eq!(got, k.min(n), "n={n} k={k}");
        }
    }
}
