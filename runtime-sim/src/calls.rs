//! Simulated calls: one task per call plays its script and emits the Appendix B events through
//! the outbox: `call_started`, `call_connected`, `transcript_segment`s (agent and customer
//! alternating, timed by the pace), a `tool_called` + `tool_result` pair, then `call_ended`
//! (with the `segment_count` extension) and `recording_available`. Keys and event ids are
//! deterministic (`{runtime_id}:{call_sid}:{kind}:{counter}`), so a resend is recognised.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::clock::Millis;
use crate::outbox::Item;
use crate::script::{Script, Speaker};
use crate::state::SimState;

/// Ended calls remembered for `GET /sim/calls` (the oldest are forgotten first).
const KEEP_ENDED: usize = 10_000;

/// 20 ms of μ-law silence (160 bytes of 0xFF at 8000 Hz), base64-encoded: the agent audio a
/// media message carries back to Twilio.
pub const SILENCE_20MS: &str = concat!(
    "////////////////////////////////////////////////////////////////////////////////",
    "////////////////////////////////////////////////////////////////////////////////",
    "/////////////////////////////////////////////////////w==",
);

/// What the runtime knows about a call when it starts.
#[derive(Debug, Clone)]
pub struct CallMeta {
    pub call_sid: String,
    /// The control plane's call id (a stream's `call_id` parameter), for logs and `/sim/calls`.
    pub call_id: Option<String>,
    pub stream_sid: Option<String>,
    pub agent_id: Option<String>,
    pub agent_version_id: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub from: String,
    pub to: String,
}

/// How a call plays.
#[derive(Debug, Clone)]
pub struct CallPlan {
    pub segments: usize,
    pub pace: Duration,
    /// End when the script ends (the agent hangs up); otherwise wait for a hang-up.
    pub end_with_script: bool,
    /// Make the call's tool call through the control plane's tool proxy instead.
    pub tool_proxy: Option<crate::tool_proxy::ProxyPlan>,
}

pub struct LiveCall {
    pub meta: CallMeta,
    pub plan: CallPlan,
    pub scenario: &'static str,
    pub started_at: Millis,
    /// Who hung up, once someone did (`customer`, `agent`, `system`, `unknown`).
    hangup: watch::Sender<Option<&'static str>>,
    /// Set when `call_ended` has been queued.
    done: watch::Sender<bool>,
    pub segments_sent: AtomicU64,
    pub tool_calls: AtomicU64,
    pub events_emitted: AtomicU64,
    pub media_frames: AtomicU64,
    pub media_bytes: AtomicU64,
    pub dtmf: AtomicU64,
    pub marks_received: AtomicU64,
}

impl LiveCall {
    /// Ends the call (the first hang-up wins).
    pub fn hang_up(&self, by: &'static str) {
        self.hangup.send_if_modified(|h| {
            if h.is_none() {
                *h = Some(by);
                true
            } else {
                false
            }
        });
    }

    pub fn ended(&self) -> bool {
        *self.done.borrow()
    }

    /// Resolves once `call_ended` is queued.
    pub fn done_watch(&self) -> watch::Receiver<bool> {
        self.done.subscribe()
    }

    pub fn info(&self, state: &SimState) -> Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "call_sid": self.meta.call_sid,
            "call_id": self.meta.call_id,
            "stream_sid": self.meta.stream_sid,
            "direction": self.meta.direction,
            "from": self.meta.from,
            "to": self.meta.to,
            "scenario": self.scenario,
            "status": if self.ended() { "ended" } else { "active" },
            "started_at": self.started_at.rfc3339(),
            "segments_planned": self.plan.segments,
            "pace_ms": self.plan.pace.as_millis() as u64,
            "segments_sent": n(&self.segments_sent),
            "tool_calls": n(&self.tool_calls),
            "events_emitted": n(&self.events_emitted),
            "events_pending": state.outbox.pending_for(&self.meta.call_sid),
            "hangup_by": *self.hangup.borrow(),
            "media_frames": n(&self.media_frames),
            "media_bytes": n(&self.media_bytes),
            "dtmf": n(&self.dtmf),
            "marks_received": n(&self.marks_received),
        })
    }
}

#[derive(Default)]
struct RegistryInner {
    calls: HashMap<String, Arc<LiveCall>>,
    ended: VecDeque<String>,
}

/// The calls this runtime is running or has run (bounded).
#[derive(Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

impl Registry {
    pub fn get(&self, call_sid: &str) -> Option<Arc<LiveCall>> {
        self.inner
            .lock()
            .expect("lock")
            .calls
            .get(call_sid)
            .cloned()
    }

    /// Active calls first, then the most recently ended, at most `limit`.
    pub fn list(&self, limit: usize) -> Vec<Arc<LiveCall>> {
        let inner = self.inner.lock().expect("lock");
        let mut active: Vec<Arc<LiveCall>> = inner
            .calls
            .values()
            .filter(|c| !c.ended())
            .cloned()
            .collect();
        active.sort_by_key(|c| c.started_at);
        active.extend(
            inner
                .ended
                .iter()
                .rev()
                .filter_map(|sid| inner.calls.get(sid).cloned()),
        );
        active.truncate(limit);
        active
    }

    fn mark_ended(&self, call_sid: &str) {
        let mut inner = self.inner.lock().expect("lock");
        inner.ended.push_back(call_sid.to_string());
        while inner.ended.len() > KEEP_ENDED {
            if let Some(old) = inner.ended.pop_front() {
                inner.calls.remove(&old);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum StartError {
    Draining,
    /// A call with this CallSid ran here already: its keys would be reused.
    Exists,
    BadCallSid,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StartError::Draining => "the runtime is draining and takes no new calls",
            StartError::Exists => "a call with this CallSid already ran on this runtime",
            StartError::BadCallSid => "a CallSid is CA followed by 32 hexadecimal digits",
        })
    }
}

pub fn valid_call_sid(s: &str) -> bool {
    s.len() == 34 && s.starts_with("CA") && s[2..].chars().all(|c| c.is_ascii_hexdigit())
}

/// Starts a call: registers it and spawns the task that plays it. `to_twilio` receives the
/// messages a media stream sends back (agent audio and marks).
pub fn start(
    state: &Arc<SimState>,
    meta: CallMeta,
    plan: CallPlan,
    to_twilio: Option<mpsc::Sender<String>>,
) -> Result<Arc<LiveCall>, StartError> {
    if !valid_call_sid(&meta.call_sid) {
        return Err(StartError::BadCallSid);
    }
    if state.draining() {
        return Err(StartError::Draining);
    }
    let script = Script::generate(&meta.call_sid, plan.segments, &meta.from);
    let call = Arc::new(LiveCall {
        scenario: script.scenario,
        started_at: Millis::now(),
        hangup: watch::channel(None).0,
        done: watch::channel(false).0,
        segments_sent: AtomicU64::new(0),
        tool_calls: AtomicU64::new(0),
        events_emitted: AtomicU64::new(0),
        media_frames: AtomicU64::new(0),
        media_bytes: AtomicU64::new(0),
        dtmf: AtomicU64::new(0),
        marks_received: AtomicU64::new(0),
        meta,
        plan,
    });
    {
        let mut inner = state.calls.inner.lock().expect("lock");
        if inner.calls.contains_key(&call.meta.call_sid) {
            return Err(StartError::Exists);
        }
        inner.calls.insert(call.meta.call_sid.clone(), call.clone());
    }
    state.call_started();
    tracing::info!(call_sid = %call.meta.call_sid, call_id = ?call.meta.call_id,
        scenario = call.scenario, segments = call.plan.segments,
        pace_ms = call.plan.pace.as_millis() as u64, "call started");
    tokio::spawn(play(state.clone(), call.clone(), script, to_twilio));
    Ok(call)
}

/// Builds and queues the envelopes of one call.
struct Emitter<'a> {
    state: &'a SimState,
    call: &'a LiveCall,
}

impl Emitter<'_> {
    /// Queues event `kind` number `counter` (B.1 envelope, B.2 payload).
    fn emit(&self, event_type: &str, kind: &str, counter: u64, at: Millis, payload: Value) {
        let c = &self.state.config;
        let m = &self.call.meta;
        let key = format!("{}:{}:{kind}:{counter:06}", c.runtime_id, m.call_sid);
        let envelope = json!({
            "runtime_id": c.runtime_id,
            "establishment_id": c.establishment_id,
            "agent_id": m.agent_id,
            "agent_version_id": m.agent_version_id,
            "call": {
                "provider": "twilio",
                "provider_call_sid": m.call_sid,
                "direction": m.direction,
                "from_e164": m.from,
                "to_e164": m.to,
            },
            "event": {
                "id": format!("evt_{}_{kind}_{counter:06}", m.call_sid),
                "type": event_type,
                "occurred_at": at.rfc3339(),
                "idempotency_key": key,
                "payload": payload,
            }
        });
        self.call.events_emitted.fetch_add(1, Ordering::Relaxed);
        self.state.outbox.push(&m.call_sid, Item { key, envelope });
    }
}

/// Sleeps `d`; true (at once) if the call was hung up meanwhile.
async fn hung_up_during(d: Duration, hangup: &mut watch::Receiver<Option<&'static str>>) -> bool {
    tokio::select! {
        biased;
        _ = hangup.wait_for(|h| h.is_some()) => true,
        _ = tokio::time::sleep(d) => false,
    }
}

async fn play(
    state: Arc<SimState>,
    call: Arc<LiveCall>,
    script: Script,
    to_twilio: Option<mpsc::Sender<String>>,
) {
    let e = Emitter {
        state: &state,
        call: &call,
    };
    let sid = call.meta.call_sid.clone();
    let t0 = call.started_at;
    e.emit(
        "call_started",
        "started",
        1,
        t0,
        json!({ "started_at": t0.rfc3339() }),
    );
    e.emit(
        "call_connected",
        "connected",
        1,
        t0,
        json!({ "connected_at": t0.rfc3339() }),
    );
    let mut hangup = call.hangup.subscribe();
    let pace = call.plan.pace;
    let mut sent = 0u64;
    for (i, turn) in script.turns.iter().enumerate() {
        // A pause before each turn, then the speech; a hang-up cuts the turn off.
        let slot = pace.mul_f64(turn.weight);
        let pause = slot.mul_f64(0.2);
        if hung_up_during(pause, &mut hangup).await {
            break;
        }
        let started = Millis::now();
        if hung_up_during(slot - pause, &mut hangup).await {
            break;
        }
        let ended = Millis::now();
        sent += 1;
        e.emit(
            "transcript_segment",
            "seg",
            sent,
            ended,
            json!({
                "segment_id": format!("seg_{sid}_{sent:06}"),
                "speaker": turn.speaker.as_str(),
                "text": turn.text,
                "started_at": started.rfc3339(),
                "ended_at": ended.rfc3339(),
                "confidence": turn.confidence,
            }),
        );
        call.segments_sent.store(sent, Ordering::Relaxed);
        if let (Some(tx), Some(stream_sid), Speaker::Agent) =
            (&to_twilio, &call.meta.stream_sid, turn.speaker)
        {
            // The agent's audio (silence here) and a mark to learn when it has played.
            let media = json!({"event": "media", "streamSid": stream_sid,
                               "media": {"payload": SILENCE_20MS}});
            let mark = json!({"event": "mark", "streamSid": stream_sid,
                              "mark": {"name": format!("seg_{sent:06}")}});
            let _ = tx.try_send(media.to_string());
            let _ = tx.try_send(mark.to_string());
        }
        if let (true, Some(proxy)) = (i == script.tool.after_turn, &call.plan.tool_proxy) {
            let n = call.tool_calls.fetch_add(1, Ordering::Relaxed) + 1;
            let name = proxy.operation.replace('/', ".");
            e.emit(
                "tool_called",
                "tool_called",
                n,
                Millis::now(),
                json!({ "tool_name": name, "arguments": proxy.arguments }),
            );
            let (result, error) = crate::tool_proxy::call(&state, &sid, proxy).await;
            e.emit(
                "tool_result",
                "tool_result",
                n,
                Millis::now(),
                json!({ "tool_name": name, "result": result, "error": error }),
            );
        } else if i == script.tool.after_turn {
            let t = &script.tool;
            let n = call.tool_calls.fetch_add(1, Ordering::Relaxed) + 1;
            e.emit(
                "tool_called",
                "tool_called",
                n,
                Millis::now(),
                json!({ "tool_name": t.tool_name, "arguments": t.arguments }),
            );
            // The tool's latency, never longer than a turn: a hang-up does not cancel it.
            tokio::time::sleep(Duration::from_millis(t.latency_ms).min(pace)).await;
            e.emit(
                "tool_result",
                "tool_result",
                n,
                Millis::now(),
                json!({ "tool_name": t.tool_name, "result": t.result, "error": null }),
            );
        }
    }
    let so_far = *hangup.borrow();
    let by = match so_far {
        Some(by) => by,
        None if call.plan.end_with_script => "agent",
        None => {
            // The agent stays on the line until the caller (or Twilio) ends the stream.
            let _ = hangup.wait_for(|h| h.is_some()).await;
            (*hangup.borrow()).unwrap_or("unknown")
        }
    };
    call.hang_up(by);
    let end = Millis::now();
    e.emit(
        "call_ended",
        "ended",
        1,
        end,
        json!({
            "ended_at": end.rfc3339(),
            "duration_seconds": t0.seconds_until(end),
            "final_status": "completed",
            "hangup_by": by,
            "segment_count": sent,
        }),
    );
    e.emit(
        "recording_available",
        "recording",
        1,
        Millis::now(),
        json!({
            "recording_url": format!("https://recordings.example.invalid/{sid}.wav"),
            "storage_provider": "s3",
            "content_type": "audio/wav",
        }),
    );
    call.done.send_replace(true);
    state.calls.mark_ended(&sid);
    state.call_ended();
    tracing::info!(call_sid = %sid, segments = sent, hangup_by = by,
        duration_s = t0.seconds_until(end), "call ended");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use axum::extract::State;
    use axum::routing::post;
    use axum::{Json, Router};

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    /// A control plane that accepts everything and keeps the envelopes.
    async fn control_plane() -> (Arc<Mutex<Vec<Value>>>, Arc<SimState>) {
        async fn ingest(
            State(seen): State<Arc<Mutex<Vec<Value>>>>,
            Json(items): Json<Vec<Value>>,
        ) -> (axum::http::StatusCode, Json<Value>) {
            let results: Vec<Value> = (0..items.len())
                .map(|i| json!({"index": i, "status": "accepted"}))
                .collect();
            seen.lock().unwrap().extend(items);
            (
                axum::http::StatusCode::ACCEPTED,
                Json(json!({"status": "accepted", "results": results})),
            )
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(crate::outbox::INGEST_PATH, post(ingest))
            .with_state(seen.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let state = Arc::new(SimState::new(Config::for_test(&format!("http://{addr}"))));
        state.outbox.spawn();
        (seen, state)
    }

    fn meta(sid: &str) -> CallMeta {
        CallMeta {
            call_sid: sid.into(),
            call_id: Some("call_1".into()),
            stream_sid: None,
            agent_id: Some("agt_1".into()),
            agent_version_id: Some("agv_1".into()),
            direction: "inbound".into(),
            from: "+15550100000".into(),
            to: "+15550100001".into(),
        }
    }

    async fn until_ended(state: &SimState, call: &LiveCall) {
        for _ in 0..500 {
            if call.ended() && state.outbox.pending() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the call never ended and drained");
    }

    #[tokio::test]
    async fn a_call_reports_every_appendix_b_event_in_order_with_deterministic_keys() {
        let (seen, state) = control_plane().await;
        let plan = CallPlan {
            segments: 6,
            pace: Duration::ZERO,
            end_with_script: true,
            tool_proxy: None,
        };
        let call = start(&state, meta(SID), plan.clone(), None).unwrap();
        until_ended(&state, &call).await;
        let seen = seen.lock().unwrap().clone();
        let types: Vec<&str> = seen
            .iter()
            .map(|e| e["event"]["type"].as_str().unwrap())
            .collect();
        let seg = "transcript_segment";
        assert_eq!(
            types,
            [
                "call_started",
                "call_connected",
                seg,
                seg,
                seg,
                "tool_called",
                "tool_result",
                seg,
                seg,
                seg,
                "call_ended",
                "recording_available"
            ]
        );
        for e in &seen {
            let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                [
                    "agent_id",
                    "agent_version_id",
                    "call",
                    "establishment_id",
                    "event",
                    "runtime_id"
                ]
            );
            assert_eq!(e["runtime_id"], "rt_test");
            assert_eq!(e["establishment_id"], "est_test");
            assert_eq!(
                e["call"],
                json!({"provider": "twilio", "provider_call_sid": SID, "direction": "inbound",
                       "from_e164": "+15550100000", "to_e164": "+15550100001"})
            );
        }
        let segments: Vec<&Value> = seen.iter().filter(|e| e["event"]["type"] == seg).collect();
        for (i, e) in segments.iter().enumerate() {
            let n = i + 1;
            assert_eq!(
                e["event"]["idempotency_key"],
                format!("rt_test:{SID}:seg:{n:06}")
            );
            assert_eq!(e["event"]["id"], format!("evt_{SID}_seg_{n:06}"));
            let p = &e["event"]["payload"];
            assert_eq!(p["segment_id"], format!("seg_{SID}_{n:06}"));
            assert_eq!(p["speaker"], if n % 2 == 1 { "agent" } else { "customer" });
            assert!(p["started_at"].as_str().unwrap() <= p["ended_at"].as_str().unwrap());
        }
        let ended = &seen[10]["event"];
        assert_eq!(
            ended["idempotency_key"],
            format!("rt_test:{SID}:ended:000001")
        );
        assert_eq!(ended["payload"]["segment_count"], 6);
        assert_eq!(ended["payload"]["hangup_by"], "agent");
        assert_eq!(ended["payload"]["final_status"], "completed");
        let rec = &seen[11]["event"]["payload"];
        assert_eq!(
            *rec,
            json!({"recording_url": format!("https://recordings.example.invalid/{SID}.wav"),
                   "storage_provider": "s3", "content_type": "audio/wav"})
        );
        assert_eq!(
            seen[5]["event"]["payload"]["tool_name"],
            seen[6]["event"]["payload"]["tool_name"]
        );
        assert_eq!(state.active_calls(), 0);
        assert_eq!(state.total_calls_handled(), 1);
        // The same CallSid again would reuse its keys for other timestamps: refused.
        assert_eq!(
            start(&state, meta(SID), plan, None).err(),
            Some(StartError::Exists)
        );
    }

    #[tokio::test]
    async fn a_hang_up_ends_the_call_with_the_segments_sent_so_far() {
        let (seen, state) = control_plane().await;
        let plan = CallPlan {
            segments: 1000,
            pace: Duration::from_millis(20),
            end_with_script: false,
            tool_proxy: None,
        };
        let call = start(&state, meta(SID), plan, None).unwrap();
        assert_eq!(state.active_calls(), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        call.hang_up("customer");
        until_ended(&state, &call).await;
        let seen = seen.lock().unwrap().clone();
        let sent = seen
            .iter()
            .filter(|e| e["event"]["type"] == "transcript_segment")
            .count();
        assert!(sent > 0 && sent < 1000, "{sent}");
        let ended = seen
            .iter()
            .find(|e| e["event"]["type"] == "call_ended")
            .unwrap();
        assert_eq!(ended["event"]["payload"]["segment_count"], sent);
        assert_eq!(ended["event"]["payload"]["hangup_by"], "customer");
        assert_eq!(call.segments_sent.load(Ordering::Relaxed), sent as u64);
        assert_eq!(state.active_calls(), 0);
    }

    #[test]
    fn the_silence_frame_is_160_bytes_of_mulaw_silence() {
        // Base64 of 160 × 0xFF: 53 groups of "////" and a final "/w==".
        assert_eq!(SILENCE_20MS.len(), 216);
        assert!(SILENCE_20MS.ends_with("/w=="));
        assert!(SILENCE_20MS[..212].chars().all(|c| c == '/'));
    }

    #[test]
    fn call_sids_are_ca_and_32_hex_digits() {
        assert!(valid_call_sid("CA0123456789abcdef0123456789abcdef"));
        assert!(!valid_call_sid("CA0123456789abcdef0123456789abcde"));
        assert!(!valid_call_sid("XX0123456789abcdef0123456789abcdef"));
        assert!(!valid_call_sid("CA0123456789abcdef0123456789abcdeg"));
    }
}
