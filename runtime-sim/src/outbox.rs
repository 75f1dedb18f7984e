//! The outbox: every call event goes through here to `POST /ingest/call-events`. One queue
//! (lane) per call, so a call's events are delivered strictly in order: a request carries at
//! most the next event of each call (up to `batch` calls), and a call's next event is sent only
//! once the previous one was accepted, recognised as a duplicate, or refused for good.
//!
//! While the control plane is unreachable, times out, or answers 5xx/429 (for the whole request
//! or for single items of a batch), the same envelopes are sent again after an exponential,
//! capped, jittered backoff, for as long as it takes: nothing is lost while the process lives.
//! Resending is safe because keys are deterministic (B.3): an event that did arrive comes back
//! as `duplicate`. Other 4xx answers are logged and the event is dropped (retrying cannot help);
//! a 409 means we reused an idempotency key for a different event, which is a bug here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::config::OutboxConfig;
use crate::cp_client::CpClient;

pub const INGEST_PATH: &str = "/ingest/call-events";

/// One envelope waiting to be delivered.
#[derive(Debug, Clone)]
pub struct Item {
    /// The event's idempotency key (for logs).
    pub key: String,
    pub envelope: Value,
}

#[derive(Default)]
struct Lanes {
    /// Per call (CallSid): events not yet delivered, oldest first.
    lanes: HashMap<String, VecDeque<Item>>,
    /// Calls with events waiting and none in flight, in the order they became ready.
    ready: VecDeque<String>,
    /// Calls whose head event is in a request right now.
    in_flight: HashSet<String>,
}

/// Counters shown in `GET /info` (`outbox`).
#[derive(Default)]
pub struct Stats {
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub dropped: AtomicU64,
    /// Envelopes sent again after a failure.
    pub retries: AtomicU64,
    pub requests: AtomicU64,
    pub failed_requests: AtomicU64,
}

pub struct Outbox {
    lanes: Mutex<Lanes>,
    wake: Notify,
    client: Arc<CpClient>,
    config: OutboxConfig,
    pub stats: Stats,
}

/// What became of one envelope of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Delivered,
    Duplicate,
    /// Refused for good (4xx other than 429).
    Dropped,
    /// Send again later.
    Retry,
}

impl Outbox {
    pub fn new(client: Arc<CpClient>, config: OutboxConfig) -> Arc<Self> {
        Arc::new(Self {
            lanes: Mutex::new(Lanes::default()),
            wake: Notify::new(),
            client,
            config,
            stats: Stats::default(),
        })
    }

    /// Starts the delivery workers.
    pub fn spawn(self: &Arc<Self>) {
        for worker in 0..self.config.workers {
            let me = self.clone();
            tokio::spawn(async move { me.run(worker).await });
        }
    }

    /// Queues an event of call `lane` behind that call's earlier events.
    pub fn push(&self, lane: &str, item: Item) {
        {
            let mut l = self.lanes.lock().expect("lock");
            let queue = l.lanes.entry(lane.to_string()).or_default();
            let was_idle = queue.is_empty() && !l.in_flight.contains(lane);
            l.lanes
                .get_mut(lane)
                .expect("just inserted")
                .push_back(item);
            if was_idle {
                l.ready.push_back(lane.to_string());
            }
        }
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Events queued and not yet delivered or dropped (in flight included).
    pub fn pending(&self) -> u64 {
        let l = self.lanes.lock().expect("lock");
        l.lanes.values().map(|q| q.len() as u64).sum()
    }

    /// Events of one call not yet delivered or dropped.
    pub fn pending_for(&self, lane: &str) -> u64 {
        let l = self.lanes.lock().expect("lock");
        l.lanes.get(lane).map_or(0, |q| q.len() as u64)
    }

    pub fn stats_json(&self) -> Value {
        let s = &self.stats;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "pending": self.pending(),
            "queued": n(&s.queued),
            "delivered": n(&s.delivered),
            "duplicates": n(&s.duplicates),
            "dropped": n(&s.dropped),
            "retries": n(&s.retries),
            "requests": n(&s.requests),
            "failed_requests": n(&s.failed_requests),
        })
    }

    /// Waits until nothing is pending, at most `limit`; true when the outbox is empty.
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.pending() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The head event of up to `batch` ready calls, each call marked in flight.
    fn take_batch(&self) -> Vec<(String, Item)> {
        let mut l = self.lanes.lock().expect("lock");
        let mut batch = Vec::new();
        while batch.len() < self.config.batch {
            let Some(lane) = l.ready.pop_front() else {
                break;
            };
            let Some(head) = l.lanes.get(&lane).and_then(|q| q.front()).cloned() else {
                continue;
            };
            l.in_flight.insert(lane.clone());
            batch.push((lane, head));
        }
        batch
    }

    /// The head event of `lane` is done (delivered or dropped): the call's next event may go.
    fn complete(&self, lane: &str) {
        let mut l = self.lanes.lock().expect("lock");
        l.in_flight.remove(lane);
        let more = match l.lanes.get_mut(lane) {
            Some(q) => {
                q.pop_front();
                !q.is_empty()
            }
            None => false,
        };
        if more {
            l.ready.push_back(lane.to_string());
            drop(l);
            self.wake.notify_one();
        } else {
            l.lanes.remove(lane);
        }
    }

    async fn run(self: Arc<Self>, worker: usize) {
        loop {
            // Register interest before looking, so a push in between is not missed.
            let notified = self.wake.notified();
            let batch = self.take_batch();
            if batch.is_empty() {
                notified.await;
                continue;
            }
            // Let the other workers pick up what is left.
            self.wake.notify_one();
            self.deliver(worker, batch).await;
        }
    }

    /// Sends `batch` until every envelope in it is delivered, a duplicate, or dropped.
    async fn deliver(&self, worker: usize, mut batch: Vec<(String, Item)>) {
        let mut delay = self.config.retry_base;
        let mut failures = 0u32;
        loop {
            let fates = self.send(&batch).await;
            let mut retry = Vec::new();
            for ((lane, item), fate) in batch.into_iter().zip(fates) {
                match fate {
                    Fate::Delivered => {
                        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                        self.complete(&lane);
                    }
                    Fate::Duplicate => {
                        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        self.complete(&lane);
                    }
                    Fate::Dropped => {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        self.complete(&lane);
                    }
                    Fate::Retry => retry.push((lane, item)),
                }
            }
            if retry.is_empty() {
                if failures > 0 {
                    tracing::info!(
                        worker,
                        failures,
                        "control plane accepts events again; backlog draining"
                    );
                }
                return;
            }
            failures += 1;
            self.stats
                .retries
                .fetch_add(retry.len() as u64, Ordering::Relaxed);
            batch = retry;
            tokio::time::sleep(jitter(delay)).await;
            delay = (delay * 2).min(self.config.retry_max);
        }
    }

    /// One request with the envelopes of `batch` (always an array); the fate of each.
    async fn send(&self, batch: &[(String, Item)]) -> Vec<Fate> {
        let body: Vec<&Value> = batch.iter().map(|(_, i)| &i.envelope).collect();
        let bytes = serde_json::to_vec(&body).expect("JSON values serialise");
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let res = self
            .client
            .request(Method::POST, INGEST_PATH, Some(bytes))
            .await;
        let fates = match res {
            Err(e) => {
                self.note_failure(format_args!("control plane unreachable: {e}"), batch.len());
                vec![Fate::Retry; batch.len()]
            }
            Ok(r) if r.status == 429 || r.status >= 500 => {
                self.note_failure(
                    format_args!("control plane answered HTTP {}", r.status),
                    batch.len(),
                );
                vec![Fate::Retry; batch.len()]
            }
            Ok(r) if (200..300).contains(&r.status) => {
                let results = r.body["results"].as_array();
                (0..batch.len())
                    .map(|i| {
                        let item = results.and_then(|rs| {
                            rs.iter()
                                .find(|x| x["index"].as_u64() == Some(i as u64))
                                .or_else(|| rs.get(i))
                        });
                        match item {
                            // A 2xx without per-item results accepted everything.
                            None => Fate::Delivered,
                            Some(x) => match x["status"].as_str() {
                                Some("accepted") => Fate::Delivered,
                                Some("duplicate") => Fate::Duplicate,
                                _ => item_refused(&batch[i].1, &x["error"]),
                            },
                        }
                    })
                    .collect()
            }
            Ok(r) => {
                // The whole request was refused (e.g. 401: our token is not accepted).
                for (_, item) in batch {
                    refused(item, r.status, &r.body["error"]);
                }
                vec![Fate::Dropped; batch.len()]
            }
        };
        if fates.contains(&Fate::Retry) {
            self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        }
        fates
    }

    fn note_failure(&self, why: std::fmt::Arguments<'_>, n: usize) {
        // One line per failed request would flood the log during an outage: log the first
        // failures and then every 20th.
        let failed = self.stats.failed_requests.load(Ordering::Relaxed);
        if failed < 3 || failed.is_multiple_of(20) {
            tracing::warn!(
                events = n,
                pending = self.pending(),
                "{why}; retrying with backoff"
            );
        }
    }
}

fn item_refused(item: &Item, error: &Value) -> Fate {
    let status = error["status"].as_u64().unwrap_or(0) as u16;
    if status == 429 || status >= 500 {
        return Fate::Retry;
    }
    refused(item, status, error);
    Fate::Dropped
}

fn refused(item: &Item, status: u16, error: &Value) {
    let code = error["code"].as_str().unwrap_or("");
    let message = error["message"].as_str().unwrap_or("");
    if status == 409 {
        tracing::error!(key = %item.key, code, message,
            "BUG: the control plane says this idempotency key was used for a different event; dropped");
    } else {
        tracing::warn!(key = %item.key, status, code, message,
            "the control plane refused the event; dropped (retrying cannot help)");
    }
}

/// "Equal jitter": half the delay plus a random part of the other half, so runtimes that lost
/// the control plane together do not all come back in the same millisecond.
fn jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let half = delay / 2;
    half + half.mul_f64((nanos % 1000) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};

    /// A scripted ingest endpoint: the first `fail` requests answer 503; then each envelope is
    /// recorded and answered accepted, duplicate (key seen), or rejected (key in `reject`).
    #[derive(Default)]
    struct Fake {
        fail: Mutex<u32>,
        seen: Mutex<Vec<String>>,
        reject: Mutex<HashMap<String, u16>>,
    }

    async fn ingest(
        State(f): State<Arc<Fake>>,
        Json(items): Json<Vec<Value>>,
    ) -> (StatusCode, Json<Value>) {
        {
            let mut fail = f.fail.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
            }
        }
        let mut results = Vec::new();
        for (index, env) in items.iter().enumerate() {
            let key = env["event"]["idempotency_key"]
                .as_str()
                .unwrap()
                .to_string();
            if let Some(status) = f.reject.lock().unwrap().remove(&key) {
                results.push(json!({"index": index, "status": "rejected",
                    "error": {"code": "x", "message": "no", "status": status}}));
                continue;
            }
            let mut seen = f.seen.lock().unwrap();
            let status = if seen.contains(&key) {
                "duplicate"
            } else {
                "accepted"
            };
            seen.push(key);
            results.push(json!({"index": index, "status": status}));
        }
        (
            StatusCode::ACCEPTED,
            Json(json!({"status": "accepted", "results": results})),
        )
    }

    async fn fake() -> (Arc<Fake>, String) {
        let f = Arc::new(Fake::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(INGEST_PATH, post(ingest))
            .with_state(f.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (f, format!("http://{addr}"))
    }

    fn outbox(base: &str, workers: usize, batch: usize) -> Arc<Outbox> {
        let o = Outbox::new(
            Arc::new(CpClient::new(base, "t", Duration::from_secs(5), workers)),
            OutboxConfig {
                workers,
                batch,
                retry_base: Duration::from_millis(5),
                retry_max: Duration::from_millis(20),
                http_timeout: Duration::from_secs(5),
            },
        );
        o.spawn();
        o
    }

    fn item(call: &str, n: usize) -> Item {
        let key = format!("rt:{call}:seg:{n:06}");
        Item {
            envelope: json!({"event": {"idempotency_key": key}}),
            key,
        }
    }

    #[tokio::test]
    async fn every_event_arrives_once_and_in_order_per_call_through_failures() {
        let (f, base) = fake().await;
        *f.fail.lock().unwrap() = 5;
        // 5xx for one item inside an accepted batch: retried too.
        f.reject
            .lock()
            .unwrap()
            .insert("rt:CA2:seg:000003".into(), 503);
        let o = outbox(&base, 3, 4);
        for n in 1..=20 {
            for call in ["CA1", "CA2", "CA3", "CA4", "CA5"] {
                o.push(call, item(call, n));
            }
        }
        assert!(
            o.flush(Duration::from_secs(10)).await,
            "outbox never drained"
        );
        let seen = f.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 100, "each event exactly once: {seen:?}");
        for call in ["CA1", "CA2", "CA3", "CA4", "CA5"] {
            let order: Vec<&String> = seen
                .iter()
                .filter(|k| k.contains(&format!(":{call}:")))
                .collect();
            let want: Vec<String> = (1..=20).map(|n| format!("rt:{call}:seg:{n:06}")).collect();
            assert_eq!(order, want.iter().collect::<Vec<_>>(), "order of {call}");
        }
        assert!(o.stats.retries.load(Ordering::Relaxed) >= 6);
        assert_eq!(o.stats.dropped.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn events_wait_while_nothing_listens_and_go_once_it_does() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let o = outbox(&format!("http://127.0.0.1:{port}"), 2, 10);
        for n in 1..=5 {
            o.push("CA1", item("CA1", n));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(o.pending(), 5);
        assert!(o.stats.retries.load(Ordering::Relaxed) > 0);
        // The control plane comes up on that port.
        let f = Arc::new(Fake::default());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let app = Router::new()
            .route(INGEST_PATH, post(ingest))
            .with_state(f.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert!(o.flush(Duration::from_secs(5)).await);
        assert_eq!(f.seen.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn refused_events_are_dropped_and_the_call_goes_on() {
        let (f, base) = fake().await;
        f.reject
            .lock()
            .unwrap()
            .insert("rt:CA1:seg:000002".into(), 422);
        f.reject
            .lock()
            .unwrap()
            .insert("rt:CA1:seg:000003".into(), 409);
        let o = outbox(&base, 1, 10);
        for n in 1..=4 {
            o.push("CA1", item("CA1", n));
        }
        assert!(o.flush(Duration::from_secs(5)).await);
        assert_eq!(
            *f.seen.lock().unwrap(),
            vec![
                "rt:CA1:seg:000001".to_string(),
                "rt:CA1:seg:000004".to_string()
            ]
        );
        assert_eq!(o.stats.dropped.load(Ordering::Relaxed), 2);
    }
}
