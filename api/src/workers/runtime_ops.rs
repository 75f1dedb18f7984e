//! The runtime worker: carries out the Docker operation each runtime has pending (create,
//! start, stop, restart), outside any transaction, and records the outcome as a command. It
//! also runs the monitor. One process at a time does this (a PostgreSQL advisory lock), and
//! every task stops with the app.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aggregates::runtime::{Observed, OpKind, PendingOp, Runtime, RuntimeCommand};
use parking_lot::Mutex;
use tokio::task::JoinSet;

use super::runtime_monitor::{self as monitor, Target};
use crate::adapters::docker::{
    ContainerSpec, DockerError, LABEL_ESTABLISHMENT, LABEL_INSTANCE, LABEL_MANAGED, LABEL_RUNTIME,
};
use crate::application::runtimes::{RuntimeManagement, Runtimes};
use crate::auth::tokens::{hash_secret, new_secret};
use crate::background::Lease;
use crate::store::{CommandContext, ExecOptions};

const ACTOR: &str = "runtime-worker";
/// How long after a start the worker polls quickly for the first "ready".
const READY_WATCH: Duration = Duration::from_secs(30);
const READY_POLL: Duration = Duration::from_millis(100);

/// The runtime worker and the monitor work with the runtime-management context.
pub type RuntimeWorker = RuntimeManagement;

/// Runs the runtime worker and monitor while this process holds the lease.
pub async fn run(state: Arc<RuntimeWorker>) {
    let mut lease = Lease::acquire(&state.pool, "runtime-worker").await;
    tokio::select! {
        _ = async { tokio::join!(ops_loop(&state), monitor::run(&state)) } => {}
        _ = lease.lost() => {}
    }
}

async fn ops_loop(state: &Arc<RuntimeWorker>) {
    let inflight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        match projections::runtimes::with_pending_ops(&state.pool).await {
            Ok(ids) => {
                for id in ids {
                    if inflight.lock().insert(id.clone()) {
                        let state = state.clone();
                        let inflight = inflight.clone();
                        tasks.spawn(async move {
                            run_ops(&state, &id).await;
                            inflight.lock().remove(&id);
                            // Another intent may have arrived while this one ran.
                            state.runtimes.ops_wake.notify_one();
                        });
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "runtime worker cannot read pending operations"),
        }
        tokio::select! {
            _ = state.runtimes.ops_wake.notified() => {}
            _ = tokio::time::sleep(state.runtimes.config.health_interval()) => {}
        }
    }
}

/// Carries out the runtime's pending operations until none is left.
async fn run_ops(state: &RuntimeWorker, id: &str) {
    let mut done: Option<u64> = None;
    for _ in 0..16 {
        let rt = match state.bus.load::<Runtime>(id).await {
            Ok((rt, _)) => rt,
            Err(e) => {
                tracing::error!(runtime_id = id, error = %e, "cannot load runtime");
                return;
            }
        };
        let Some(op) = rt.pending else { return };
        if done == Some(op.id) {
            // Its outcome could not be recorded; try again on a later pass.
            return;
        }
        perform(state, &rt, op).await;
        done = Some(op.id);
    }
}

fn target(rt: &Runtime) -> Option<Target> {
    let spec = rt.spec.as_ref()?;
    Some(Target {
        id: spec.runtime_id.clone(),
        establishment_id: spec.establishment_id.clone(),
        base_url: spec.base_url.clone(),
        container_id: rt.container_id.clone(),
        pending: rt.pending.is_some(),
    })
}

async fn record(state: &RuntimeWorker, rt: &Runtime, command: RuntimeCommand) -> bool {
    let Some(spec) = &rt.spec else { return false };
    let ctx = CommandContext::system(ACTOR).in_establishment(&spec.establishment_id);
    match state
        .bus
        .execute::<Runtime>(&spec.runtime_id, command, &ctx, ExecOptions::default())
        .await
    {
        Ok(outcome) => {
            state.bus.visible(&outcome).await;
            true
        }
        Err(e) => {
            tracing::error!(runtime_id = %spec.runtime_id, error = %e, "cannot record runtime outcome");
            false
        }
    }
}

async fn perform(state: &RuntimeWorker, rt: &Runtime, op: PendingOp) {
    let Some(spec) = rt.spec.as_ref() else { return };
    let docker = &state.runtimes.docker;
    let grace = state.runtimes.config.stop_grace();
    let name = spec.container_name.as_str();
    tracing::info!(runtime_id = %spec.runtime_id, op = op.id, kind = ?op.kind, "runtime operation");
    match op.kind {
        OpKind::Create => {
            if let Err(reason) = ensure_container(state, rt, op.id).await {
                record(
                    state,
                    rt,
                    RuntimeCommand::RecordCreateFailed { op: op.id, reason },
                )
                .await;
            }
        }
        OpKind::Start | OpKind::Restart => {
            let fresh = match ensure_container(state, rt, op.id).await {
                Ok(fresh) => fresh,
                Err(reason) => {
                    record(
                        state,
                        rt,
                        RuntimeCommand::RecordStartFailed { op: op.id, reason },
                    )
                    .await;
                    return;
                }
            };
            let result = if op.kind == OpKind::Restart && !fresh {
                docker.restart(name, grace).await
            } else {
                docker.start(name).await
            };
            state.runtimes.drain_told.lock().remove(&spec.runtime_id);
            match result {
                Ok(()) => {
                    if record(state, rt, RuntimeCommand::RecordStarted { op: op.id }).await {
                        watch_until_ready(state, rt).await;
                    }
                }
                Err(e) => {
                    record(
                        state,
                        rt,
                        RuntimeCommand::RecordStartFailed {
                            op: op.id,
                            reason: e.to_string(),
                        },
                    )
                    .await;
                }
            }
        }
        OpKind::Stop => {
            if rt.draining && rt.observed == Observed::Running {
                let Some(t) = target(rt) else { return };
                let timeout = state.runtimes.config.drain_timeout();
                if !monitor::wait_idle(state, &t, op.id, timeout).await {
                    return;
                }
            }
            let command = match docker.stop(name, grace).await {
                Ok(()) | Err(DockerError::NotFound(_)) => {
                    RuntimeCommand::RecordStopped { op: op.id }
                }
                Err(e) => RuntimeCommand::RecordStopFailed {
                    op: op.id,
                    reason: e.to_string(),
                },
            };
            record(state, rt, command).await;
        }
    }
}

/// Polls a freshly started runtime quickly until it is ready (so "ready" shows within
/// moments, not a health interval), a newer operation comes, or `READY_WATCH` passes.
async fn watch_until_ready(state: &RuntimeWorker, rt: &Runtime) {
    let Some(t) = target(rt) else { return };
    let deadline = tokio::time::Instant::now() + READY_WATCH;
    while tokio::time::Instant::now() < deadline {
        match state.bus.load::<Runtime>(&t.id).await {
            Ok((now, _)) if now.pending.is_none() && now.observed == Observed::Running => {}
            _ => return,
        }
        if monitor::check(state, &t).await.ready {
            return;
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Makes sure the runtime's container exists; creates it (with a fresh runtime token) when it
/// does not. Returns whether it was created now.
async fn ensure_container(state: &RuntimeWorker, rt: &Runtime, op: u64) -> Result<bool, String> {
    let spec = rt.spec.as_ref().ok_or("runtime not provisioned")?;
    let docker = &state.runtimes.docker;
    match docker.inspect(&spec.container_name).await {
        Err(e) => return Err(e.to_string()),
        Ok(Some(c)) if rt.container_id.as_deref() == Some(c.id.as_str()) => return Ok(false),
        Ok(Some(c)) => {
            // Ours but unrecorded (a crash between create and record): its token is unknown,
            // so it is replaced. Anything else with that name is not ours to remove.
            if c.labels.get(LABEL_RUNTIME) != Some(&spec.runtime_id) {
                return Err(format!(
                    "a container named {} already exists and does not belong to this runtime",
                    spec.container_name
                ));
            }
            docker
                .remove(&spec.container_name)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(None) => {}
    }
    if !state
        .runtimes
        .config
        .runtime_image_allowlist
        .allows(&spec.image)
    {
        return Err(format!(
            "image {} is not allowed here (RUNTIME_IMAGE_ALLOWLIST: {})",
            spec.image, state.runtimes.config.runtime_image_allowlist
        ));
    }
    let token = new_secret();
    let container = container_spec(&state.runtimes, rt, &token)?;
    let labels = network_labels(&state.runtimes, &spec.establishment_id);
    docker
        .ensure_network(&container.network, &labels)
        .await
        .map_err(|e| format!("network {}: {e}", container.network))?;
    let created = match docker.create(&container).await {
        // The network went between the two calls (the monitor removes an unused one): again.
        Err(DockerError::NotFound(m)) if m.contains("network") => {
            docker
                .ensure_network(&container.network, &labels)
                .await
                .map_err(|e| format!("network {}: {e}", container.network))?;
            docker.create(&container).await
        }
        r => r,
    };
    let container_id = created.map_err(|e| match e {
        DockerError::NotFound(m) => format!("image {} is not present: {m}", spec.image),
        e => e.to_string(),
    })?;
    tracing::info!(runtime_id = %spec.runtime_id, container = %spec.container_name, "container created");
    if !record(
        state,
        rt,
        RuntimeCommand::RecordContainerCreated {
            op,
            container_id,
            token_hash: hash_secret(&token),
        },
    )
    .await
    {
        return Err("the container was created but could not be recorded".into());
    }
    Ok(true)
}

/// Labels of an establishment's runtime network (like its container's, without the runtime).
pub fn network_labels(rts: &Runtimes, establishment_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_INSTANCE.to_string(), rts.instance_id.clone()),
        (
            LABEL_ESTABLISHMENT.to_string(),
            establishment_id.to_string(),
        ),
    ])
}

/// The container of a runtime: contract env (with the fresh token) plus the provisioning env,
/// labels, port binding, limits, containment (docs/security.md) and restart policy, on the
/// establishment's own network.
fn container_spec(rts: &Runtimes, rt: &Runtime, token: &str) -> Result<ContainerSpec, String> {
    let spec = rt.spec.as_ref().ok_or("runtime not provisioned")?;
    let mut env: BTreeMap<String, String> = match &spec.env_encrypted {
        Some(sealed) => {
            let plain = rts
                .secrets
                .open(&Runtimes::env_context(&spec.runtime_id), sealed)
                .map_err(|e| format!("cannot decrypt the provisioning env: {e}"))?;
            serde_json::from_slice(&plain)
                .map_err(|_| "the provisioning env does not decode".to_string())?
        }
        None => BTreeMap::new(),
    };
    let port = rts.config.runtime_container_port;
    for (k, v) in [
        ("RUNTIME_ID", spec.runtime_id.clone()),
        ("ESTABLISHMENT_ID", spec.establishment_id.clone()),
        ("CONTROL_PLANE_URL", rts.control_plane_url.clone()),
        ("CONTROL_PLANE_TOKEN", token.to_string()),
        ("PORT", port.to_string()),
    ] {
        env.insert(k.to_string(), v);
    }
    Ok(ContainerSpec {
        name: spec.container_name.clone(),
        image: spec.image.clone(),
        env: env.into_iter().collect(),
        labels: HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_INSTANCE.to_string(), rts.instance_id.clone()),
            (LABEL_RUNTIME.to_string(), spec.runtime_id.clone()),
            (
                LABEL_ESTABLISHMENT.to_string(),
                spec.establishment_id.clone(),
            ),
        ]),
        host_port: spec.host_port,
        container_port: port,
        memory_bytes: (rts.config.runtime_memory_mb * 1024 * 1024) as i64,
        nano_cpus: (rts.config.runtime_cpus * 1e9) as i64,
        pids_limit: rts.config.runtime_pids_limit,
        read_only_rootfs: rts.config.runtime_read_only_rootfs,
        network: Runtimes::network_name(&spec.establishment_id),
        restart_policy: rts.restart_policy.clone(),
    })
}
