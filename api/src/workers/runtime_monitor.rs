//! The health refresher and reconciliation (one loop, every `RUNTIME_HEALTH_INTERVAL_MS` and
//! at start-up):
//! - reconciliation lists this control plane's containers by label and reports to each
//!   runtime what Docker shows (exited, missing, running); containers with our label that no
//!   runtime owns are reported (log, metric, `GET /runtimes/reconciliation`), never touched;
//! - the refresher polls every running runtime's `/readyz` and `/info`, keeps the latest in
//!   `runtime_health` (plain state, no event per poll) and records a `HealthChanged` event
//!   only when readiness or its issues change; it also re-tells runtimes whether to drain.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aggregates::runtime::{Observed, ObservedState, Runtime, RuntimeCommand};
use chrono::Utc;
use futures::StreamExt;
use serde_json::Value;

use crate::adapters::docker::{
    ContainerInfo, LABEL_ESTABLISHMENT, LABEL_INSTANCE, LABEL_MANAGED, LABEL_RUNTIME,
};
use crate::application::runtimes::RuntimeManagement as RuntimeWorker;
use crate::application::runtimes::UnknownContainer;
use crate::store::{CommandContext, ExecOptions};

const ACTOR: &str = "runtime-monitor";
const MAX_BODY: usize = 64 * 1024;
const MAX_ISSUES: usize = 20;
const MAX_ISSUE_LEN: usize = 300;
const POLL_CONCURRENCY: usize = 16;

/// A runtime as the monitor needs it.
pub type Target = projections::runtimes::MonitorTarget;

/// One poll of a runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub ready: bool,
    pub issues: Vec<String>,
    pub active_calls: Option<u64>,
}

pub async fn run(state: &RuntimeWorker) {
    loop {
        cycle(state).await;
        tokio::select! {
            _ = state.runtimes.monitor_wake.notified() => {}
            _ = tokio::time::sleep(state.runtimes.config.health_interval()) => {}
        }
    }
}

async fn targets(state: &RuntimeWorker) -> anyhow::Result<Vec<Target>> {
    Ok(projections::runtimes::monitor_targets(&state.pool).await?)
}

/// One reconciliation and health pass over every runtime.
pub async fn cycle(state: &RuntimeWorker) {
    let targets = match targets(state).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "runtime monitor cannot read runtimes");
            return;
        }
    };
    reconcile(state, &targets).await;
    futures::stream::iter(targets.iter())
        .for_each_concurrent(POLL_CONCURRENCY, |t| async move {
            match state.bus.load::<Runtime>(&t.id).await {
                Ok((rt, _)) if rt.pending.is_none() && rt.observed == Observed::Running => {
                    check(state, t).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(runtime_id = %t.id, error = %e, "cannot load runtime"),
            }
        })
        .await;
}

async fn record(state: &RuntimeWorker, t: &Target, command: RuntimeCommand) {
    let ctx = CommandContext::system(ACTOR).in_establishment(&t.establishment_id);
    match state
        .bus
        .execute::<Runtime>(&t.id, command, &ctx, ExecOptions::default())
        .await
    {
        Ok(outcome) => {
            if outcome.commit().is_some() {
                state.bus.visible(&outcome).await;
            }
        }
        Err(e) => {
            tracing::error!(runtime_id = %t.id, error = %e, "cannot record runtime observation")
        }
    }
}

/// What Docker's view of a container means for its runtime (`None`: nothing to report).
pub fn observe(container: Option<&ContainerInfo>, known: bool) -> Option<ObservedState> {
    let Some(c) = container else {
        return known.then_some(ObservedState::Missing);
    };
    let code = c
        .exit_code
        .map(|c| format!(" with code {c}"))
        .unwrap_or_default();
    match c.state.as_str() {
        "running" => Some(ObservedState::Running),
        "created" | "removing" => None,
        "restarting" => Some(ObservedState::Exited {
            exit_code: c.exit_code,
            detail: format!("the container exited{code} and Docker is restarting it"),
        }),
        "paused" => Some(ObservedState::Exited {
            exit_code: None,
            detail: "the container was paused outside the control plane".into(),
        }),
        other => Some(ObservedState::Exited {
            exit_code: c.exit_code,
            detail: format!("the container is {other}{code} without the control plane asking"),
        }),
    }
}

async fn reconcile(state: &RuntimeWorker, targets: &[Target]) {
    let rt = &state.runtimes;
    let filters = vec![
        format!("{LABEL_MANAGED}=true"),
        format!("{LABEL_INSTANCE}={}", rt.instance_id),
    ];
    let containers = match rt.docker.list(&filters).await {
        Ok(c) => c,
        Err(e) => {
            let mut report = rt.report.lock();
            if report.docker_error.is_none() {
                tracing::warn!(error = %e, "runtime reconciliation cannot list containers");
            }
            report.docker_error = Some(e.to_string());
            report.last_run_at = Some(Utc::now());
            return;
        }
    };
    let by_runtime: HashMap<&str, &ContainerInfo> = containers
        .iter()
        .filter_map(|c| c.labels.get(LABEL_RUNTIME).map(|r| (r.as_str(), c)))
        .collect();
    for t in targets.iter().filter(|t| !t.pending) {
        let container = by_runtime.get(t.id.as_str()).copied();
        if let Some(observed) = observe(container, t.container_id.is_some()) {
            let missing = observed == ObservedState::Missing;
            record(state, t, RuntimeCommand::RecordObserved(observed)).await;
            if missing {
                // Its container is gone: so goes its network (a start creates both again).
                let network =
                    crate::application::runtimes::Runtimes::network_name(&t.establishment_id);
                if let Err(e) = rt.docker.remove_network(&network).await {
                    tracing::warn!(runtime_id = %t.id, %network, error = %e, "cannot remove the network of a removed runtime");
                }
            }
        }
    }
    let known: HashSet<&str> = targets.iter().map(|t| t.id.as_str()).collect();
    let unknown: Vec<UnknownContainer> = containers
        .iter()
        .filter(|c| {
            c.labels
                .get(LABEL_RUNTIME)
                .is_none_or(|r| !known.contains(r.as_str()))
        })
        .map(|c| UnknownContainer {
            id: c.id.clone(),
            name: c.name.clone(),
            state: c.state.clone(),
            runtime_id: c.labels.get(LABEL_RUNTIME).cloned(),
            establishment_id: c.labels.get(LABEL_ESTABLISHMENT).cloned(),
        })
        .collect();
    metrics::gauge!("runtime_unknown_containers").set(unknown.len() as f64);
    metrics::gauge!("runtime_containers").set(containers.len() as f64);
    let mut report = rt.report.lock();
    for u in &unknown {
        if !report.unknown_containers.iter().any(|o| o.id == u.id) {
            tracing::warn!(container = %u.name, id = %u.id, runtime_id = ?u.runtime_id,
                "a container carries this control plane's labels but no runtime owns it; leaving it alone");
        }
    }
    if report.docker_error.is_some() {
        tracing::info!("runtime reconciliation reaches Docker again");
    }
    report.docker_error = None;
    report.unknown_containers = unknown;
    report.last_run_at = Some(Utc::now());
}

/// Reads at most `MAX_BODY` bytes of a runtime's answer as JSON.
async fn read_json(mut res: reqwest::Response) -> Option<Value> {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_BODY {
            return None;
        }
    }
    serde_json::from_slice(&buf).ok()
}

fn failure_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection refused"
    } else {
        "request failed"
    }
}

/// Issues a runtime reported, bounded (it is input from a container).
fn issues_of(body: &Value) -> Vec<String> {
    body.get("issues")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .take(MAX_ISSUES)
                .map(|i| {
                    let s = i
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string());
                    s.chars().take(MAX_ISSUE_LEN).collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a runtime's `/readyz` answer: ready only on a 2xx with `"ready": true`. A redirect is
/// never followed (the client has no redirect policy) and means not ready.
pub async fn readiness(readyz: reqwest::Result<reqwest::Response>) -> (bool, Vec<String>) {
    match readyz {
        Ok(res) if res.status().is_redirection() => (
            false,
            vec![format!(
                "/readyz answered with a redirect (HTTP {}); a runtime must answer itself, redirects are not followed",
                res.status().as_u16()
            )],
        ),
        Ok(res) => {
            let status = res.status();
            let body = read_json(res).await.unwrap_or(Value::Null);
            let ready = status.is_success() && body.get("ready") == Some(&Value::Bool(true));
            let mut issues = issues_of(&body);
            if !ready && issues.is_empty() {
                issues.push(format!("/readyz answered HTTP {}", status.as_u16()));
            }
            (ready, if ready { vec![] } else { issues })
        }
        Err(e) => (
            false,
            vec![format!("/readyz unreachable: {}", failure_kind(&e))],
        ),
    }
}

/// Polls `/readyz` and `/info` of one runtime, stores the result in `runtime_health`, records
/// a health change and re-tells the runtime whether to drain.
pub async fn check(state: &RuntimeWorker, t: &Target) -> Health {
    let http = &state.runtimes.http;
    let (readyz, info) = tokio::join!(
        http.get(format!("{}/readyz", t.base_url)).send(),
        http.get(format!("{}/info", t.base_url)).send(),
    );
    let (ready, issues) = readiness(readyz).await;
    let info = match info {
        Ok(res) if res.status().is_success() => read_json(res).await,
        _ => None,
    };
    let number = |k: &str| info.as_ref().and_then(|i| i.get(k)).and_then(Value::as_u64);
    let active_calls = number("active_calls");
    let version = info
        .as_ref()
        .and_then(|i| i.get("version"))
        .and_then(Value::as_str)
        .map(|v| v.chars().take(100).collect::<String>());
    let reported_draining = info
        .as_ref()
        .and_then(|i| i.get("draining"))
        .and_then(Value::as_bool);
    metrics::counter!("runtime_health_checks_total", "ready" => ready.to_string()).increment(1);
    if let Err(e) = sqlx::query(
        "INSERT INTO runtime_health (runtime_id, checked_at, ready, issues, active_calls,
             total_calls_handled, version, draining)
         VALUES ($1, now(), $2, $3, $4, $5, $6, $7)
         ON CONFLICT (runtime_id) DO UPDATE SET checked_at = now(), ready = EXCLUDED.ready,
             issues = EXCLUDED.issues,
             active_calls = COALESCE(EXCLUDED.active_calls, runtime_health.active_calls),
             total_calls_handled = COALESCE(EXCLUDED.total_calls_handled, runtime_health.total_calls_handled),
             version = COALESCE(EXCLUDED.version, runtime_health.version),
             draining = COALESCE(EXCLUDED.draining, runtime_health.draining)",
    )
    .bind(&t.id)
    .bind(ready)
    .bind(serde_json::json!(issues))
    .bind(active_calls.map(|n| n as i64))
    .bind(number("total_calls_handled").map(|n| n as i64))
    .bind(version)
    .bind(reported_draining)
    .execute(&state.pool)
    .await
    {
        tracing::warn!(runtime_id = %t.id, error = %e, "cannot store runtime health");
    }
    record(
        state,
        t,
        RuntimeCommand::RecordHealth {
            ready,
            issues: issues.clone(),
        },
    )
    .await;
    if info.is_some() {
        sync_drain(state, t, reported_draining).await;
    }
    Health {
        ready,
        issues,
        active_calls,
    }
}

/// Tells the runtime to drain or resume when it does not do what the control plane wants.
async fn sync_drain(state: &RuntimeWorker, t: &Target, reported: Option<bool>) {
    let Ok((rt, _)) = state.bus.load::<Runtime>(&t.id).await else {
        return;
    };
    let wanted = rt.draining;
    let told = state.runtimes.drain_told.lock().get(&t.id).copied();
    let in_sync = match reported {
        Some(r) => r == wanted,
        None => told == Some(wanted),
    };
    if in_sync {
        return;
    }
    let path = if wanted { "drain" } else { "resume" };
    match state
        .runtimes
        .http
        .post(format!("{}/{path}", t.base_url))
        .send()
        .await
    {
        Ok(res) if res.status().is_success() => {
            tracing::info!(runtime_id = %t.id, action = path, "runtime told");
            state
                .runtimes
                .drain_told
                .lock()
                .insert(t.id.clone(), wanted);
        }
        Ok(res) => {
            tracing::warn!(runtime_id = %t.id, action = path, status = %res.status(), "runtime refused")
        }
        Err(e) => {
            tracing::warn!(runtime_id = %t.id, action = path, error = failure_kind(&e), "runtime unreachable")
        }
    }
}

/// Polls until the runtime reports no active call (or stops answering), up to `timeout`.
/// Returns false when a newer operation superseded `op` meanwhile.
pub async fn wait_idle(state: &RuntimeWorker, t: &Target, op: u64, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok((rt, _)) = state.bus.load::<Runtime>(&t.id).await {
            if rt.pending.is_none_or(|p| p.id != op) {
                return false;
            }
        }
        let health = check(state, t).await;
        match health.active_calls {
            Some(n) if n > 0 => {}
            _ => return true,
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(runtime_id = %t.id, active_calls = ?health.active_calls,
                "drain timeout: stopping with calls still active");
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(state: &str, exit_code: Option<i64>) -> ContainerInfo {
        ContainerInfo {
            id: "c1".into(),
            name: "agent_rt_est_1".into(),
            state: state.into(),
            exit_code,
            labels: HashMap::new(),
        }
    }

    #[test]
    fn docker_states_map_to_observations() {
        assert_eq!(observe(None, true), Some(ObservedState::Missing));
        assert_eq!(observe(None, false), None, "not created yet");
        assert_eq!(
            observe(Some(&container("running", None)), true),
            Some(ObservedState::Running)
        );
        assert_eq!(observe(Some(&container("created", None)), true), None);
        match observe(Some(&container("exited", Some(137))), true) {
            Some(ObservedState::Exited { exit_code, detail }) => {
                assert_eq!(exit_code, Some(137));
                assert!(detail.contains("137"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A tiny HTTP server on 127.0.0.1: `/readyz` redirects to `/elsewhere`, which says ready
    /// (so a client that followed the redirect would call the runtime ready).
    async fn redirecting_runtime() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let target = base.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).to_string();
                    let response = if request.starts_with("GET /readyz ") {
                        format!("HTTP/1.1 302 Found\r\nLocation: {target}/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    } else {
                        let body = r#"{"ready":true,"issues":[]}"#;
                        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    };
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        base
    }

    #[tokio::test]
    async fn a_runtime_answering_readyz_with_a_redirect_is_not_ready_and_is_not_followed() {
        let base = redirecting_runtime().await;
        let http = crate::application::runtimes::runtime_http_client().unwrap();
        // The stand-in does redirect to a ready answer: a following client would be fooled.
        let followed = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(followed.status(), reqwest::StatusCode::OK);

        let (ready, issues) = readiness(http.get(format!("{base}/readyz")).send().await).await;
        assert!(!ready);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].contains("redirect") && issues[0].contains("302"),
            "{issues:?}"
        );
        let ok = readiness(http.get(format!("{base}/elsewhere")).send().await).await;
        assert_eq!(ok, (true, vec![]));
    }

    #[test]
    fn reported_issues_are_bounded() {
        let long = "x".repeat(1000);
        let body = serde_json::json!({ "issues": vec![long; 50] });
        let issues = issues_of(&body);
        assert_eq!(issues.len(), MAX_ISSUES);
        assert!(issues.iter().all(|i| i.chars().count() == MAX_ISSUE_LEN));
    }
}
