//! The Docker engine behind a trait (`DockerApi`), and its bollard implementation. Runtime
//! containers (and their per-establishment networks) are found by their labels; nothing here
//! knows about aggregates or the database.
//!
//! Containment: every runtime container is created without new privileges, with every
//! capability dropped, memory (swap included), CPU and process limits, a read-only root
//! filesystem with a small `noexec` tmpfs on `/tmp`, no bind mounts, and on a bridge network of
//! its own; only its port on 127.0.0.1 is published.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::{
    Config as ContainerConfig, CreateContainerOptions, ListContainersOptions,
    RemoveContainerOptions, RestartContainerOptions, StartContainerOptions, StopContainerOptions,
};
use bollard::models::{HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum};
use bollard::network::{CreateNetworkOptions, InspectNetworkOptions};
use bollard::Docker;
use tokio::sync::OnceCell;

/// Label keys on every runtime container.
pub const LABEL_MANAGED: &str = "io.controlplane.managed";
pub const LABEL_INSTANCE: &str = "io.controlplane.instance";
pub const LABEL_RUNTIME: &str = "io.controlplane.runtime_id";
pub const LABEL_ESTABLISHMENT: &str = "io.controlplane.establishment_id";

/// Everything needed to create a runtime container.
#[derive(Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// `KEY=value` pairs (may hold secrets: never log them).
    pub env: Vec<(String, String)>,
    pub labels: HashMap<String, String>,
    pub host_port: u16,
    pub container_port: u16,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    /// Most processes (and threads) the container may run.
    pub pids_limit: i64,
    /// Mount the image's root filesystem read-only (a tmpfs serves `/tmp`).
    pub read_only_rootfs: bool,
    /// The bridge network the container joins (created beforehand with `ensure_network`).
    pub network: String,
    pub restart_policy: (String, Option<i64>),
}

/// Size of the `/tmp` tmpfs of a runtime container.
pub const TMPFS_OPTIONS: &str = "rw,noexec,nosuid,nodev,size=64m";

impl std::fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field(
                "env_keys",
                &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("host_port", &self.host_port)
            .finish_non_exhaustive()
    }
}

/// A container as Docker reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// created, running, paused, restarting, removing, exited or dead.
    pub state: String,
    pub exit_code: Option<i64>,
    pub labels: HashMap<String, String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DockerError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// Docker refused the request as malformed (e.g. an invalid image reference).
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("the Docker engine is unreachable: {0}")]
    Unavailable(String),
    #[error("Docker: {0}")]
    Failed(String),
}

#[async_trait]
pub trait DockerApi: Send + Sync {
    /// Whether the image is present locally (nothing is ever pulled).
    async fn image_exists(&self, image: &str) -> Result<bool, DockerError>;
    /// Creates (does not start) a container; returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError>;
    /// Starts a container; starting a running one succeeds.
    async fn start(&self, name: &str) -> Result<(), DockerError>;
    /// Stops a container (SIGTERM, then SIGKILL after `grace`); stopping a stopped one succeeds.
    async fn stop(&self, name: &str, grace: Duration) -> Result<(), DockerError>;
    async fn restart(&self, name: &str, grace: Duration) -> Result<(), DockerError>;
    /// Removes a container, running or not; removing a missing one succeeds.
    async fn remove(&self, name: &str) -> Result<(), DockerError>;
    async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>, DockerError>;
    /// Every container (running or not) carrying all of these `key=value` labels.
    async fn list(&self, labels: &[String]) -> Result<Vec<ContainerInfo>, DockerError>;
    /// Creates the bridge network `name` with `labels` unless it exists; an existing network
    /// must carry `labels` (else it is someone else's: `Conflict`).
    async fn ensure_network(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), DockerError>;
    /// Removes the network `name` when no container uses it any more; a missing one is fine.
    /// Returns whether it is gone.
    async fn remove_network(&self, name: &str) -> Result<bool, DockerError>;
}

/// The Docker engine at `DOCKER_HOST` (default: the local socket), through bollard. The API
/// version is negotiated on first use, so an older engine (20.10 speaks 1.41) works.
pub struct BollardDocker {
    host: Option<String>,
    client: OnceCell<Docker>,
}

const TIMEOUT_SECS: u64 = 120;

impl BollardDocker {
    pub fn new(host: Option<String>) -> Self {
        Self {
            host: host.filter(|h| !h.trim().is_empty()),
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&Docker, DockerError> {
        self.client
            .get_or_try_init(|| async {
                let docker = match self.host.as_deref() {
                    None => Docker::connect_with_local_defaults(),
                    Some(h) if h.starts_with("unix://") || h.starts_with('/') => {
                        Docker::connect_with_unix(h, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                    }
                    Some(h) if h.starts_with("tcp://") || h.starts_with("http://") => {
                        Docker::connect_with_http(h, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                    }
                    Some(h) => {
                        return Err(DockerError::Unavailable(format!(
                            "DOCKER_HOST {h:?} is not unix://, tcp:// or http://"
                        )))
                    }
                }
                .map_err(classify)?;
                docker.negotiate_version().await.map_err(classify)
            })
            .await
    }
}

fn classify(e: bollard::errors::Error) -> DockerError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code: 404,
            message,
        } => DockerError::NotFound(message),
        E::DockerResponseServerError {
            status_code: 409,
            message,
        } => DockerError::Conflict(message),
        E::DockerResponseServerError {
            status_code: 400,
            message,
        } => DockerError::Invalid(message),
        E::DockerResponseServerError {
            status_code,
            message,
        } => DockerError::Failed(format!("HTTP {status_code}: {message}")),
        E::SocketNotFoundError(s) => DockerError::Unavailable(format!("no socket at {s}")),
        E::HyperResponseError { .. } | E::IOError { .. } | E::RequestTimeoutError => {
            DockerError::Unavailable(e.to_string())
        }
        e => DockerError::Failed(e.to_string()),
    }
}

/// 304 Not Modified: already in the requested state.
fn not_modified(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

fn observe<T>(op: &'static str, started: Instant, r: &Result<T, DockerError>) {
    metrics::histogram!("runtime_docker_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if r.is_err() {
        metrics::counter!("runtime_docker_errors_total", "op" => op).increment(1);
    }
}

#[async_trait]
impl DockerApi for BollardDocker {
    async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        let started = Instant::now();
        let r = match self.client().await?.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) => match classify(e) {
                DockerError::NotFound(_) => Ok(false),
                e => Err(e),
            },
        };
        observe("inspect_image", started, &r);
        r
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        let started = Instant::now();
        let port_key = format!("{}/tcp", spec.container_port);
        let (policy, retries) = &spec.restart_policy;
        let policy = match policy.as_str() {
            "no" => RestartPolicyNameEnum::NO,
            "always" => RestartPolicyNameEnum::ALWAYS,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::UNLESS_STOPPED,
        };
        let config = ContainerConfig {
            image: Some(spec.image.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.clone()),
            exposed_ports: Some(HashMap::from([(port_key.clone(), HashMap::new())])),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    port_key,
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(spec.host_port.to_string()),
                    }]),
                )])),
                restart_policy: Some(RestartPolicy {
                    name: Some(policy),
                    maximum_retry_count: *retries,
                }),
                memory: Some(spec.memory_bytes),
                // No swap beyond the memory limit.
                memory_swap: Some(spec.memory_bytes),
                nano_cpus: Some(spec.nano_cpus),
                pids_limit: Some(spec.pids_limit),
                init: Some(false),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                cap_drop: Some(vec!["ALL".into()]),
                readonly_rootfs: Some(spec.read_only_rootfs),
                tmpfs: Some(HashMap::from([("/tmp".into(), TMPFS_OPTIONS.into())])),
                binds: None,
                network_mode: Some(spec.network.clone()),
                // A name for the host (the control plane) that resolves on every bridge.
                extra_hosts: Some(vec!["host.docker.internal:host-gateway".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = self
            .client()
            .await?
            .create_container(
                Some(CreateContainerOptions {
                    name: spec.name.clone(),
                    platform: None,
                }),
                config,
            )
            .await
            .map(|c| c.id)
            .map_err(classify);
        observe("create", started, &r);
        r
    }

    async fn start(&self, name: &str) -> Result<(), DockerError> {
        let started = Instant::now();
        let r = match self
            .client()
            .await?
            .start_container(name, None::<StartContainerOptions<String>>)
            .await
        {
            Err(e) if !not_modified(&e) => Err(classify(e)),
            _ => Ok(()),
        };
        observe("start", started, &r);
        r
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<(), DockerError> {
        let started = Instant::now();
        let r = match self
            .client()
            .await?
            .stop_container(
                name,
                Some(StopContainerOptions {
                    t: grace.as_secs() as i64,
                }),
            )
            .await
        {
            Err(e) if !not_modified(&e) => Err(classify(e)),
            _ => Ok(()),
        };
        observe("stop", started, &r);
        r
    }

    async fn restart(&self, name: &str, grace: Duration) -> Result<(), DockerError> {
        let started = Instant::now();
        let r = self
            .client()
            .await?
            .restart_container(
                name,
                Some(RestartContainerOptions {
                    t: grace.as_secs() as isize,
                }),
            )
            .await
            .map_err(classify);
        observe("restart", started, &r);
        r
    }

    async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let started = Instant::now();
        let r = match self
            .client()
            .await?
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(classify)
        {
            Err(DockerError::NotFound(_)) => Ok(()),
            r => r,
        };
        observe("remove", started, &r);
        r
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>, DockerError> {
        let started = Instant::now();
        let r = match self.client().await?.inspect_container(name, None).await {
            Ok(c) => {
                let state = c.state.unwrap_or_default();
                Ok(Some(ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .name
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    state: state
                        .status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    exit_code: state.exit_code,
                    labels: c.config.and_then(|c| c.labels).unwrap_or_default(),
                }))
            }
            Err(e) => match classify(e) {
                DockerError::NotFound(_) => Ok(None),
                e => Err(e),
            },
        };
        observe("inspect", started, &r);
        r
    }

    async fn list(&self, labels: &[String]) -> Result<Vec<ContainerInfo>, DockerError> {
        let started = Instant::now();
        let r = self
            .client()
            .await?
            .list_containers(Some(ListContainersOptions::<String> {
                all: true,
                filters: HashMap::from([("label".to_string(), labels.to_vec())]),
                ..Default::default()
            }))
            .await
            .map_err(classify)
            .map(|list| {
                list.into_iter()
                    .map(|c| ContainerInfo {
                        id: c.id.unwrap_or_default(),
                        name: c
                            .names
                            .and_then(|n| n.into_iter().next())
                            .unwrap_or_default()
                            .trim_start_matches('/')
                            .to_string(),
                        exit_code: c.status.as_deref().and_then(exit_code_of_status),
                        state: c.state.unwrap_or_else(|| "unknown".into()),
                        labels: c.labels.unwrap_or_default(),
                    })
                    .collect()
            });
        observe("list", started, &r);
        r
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), DockerError> {
        let started = Instant::now();
        let client = self.client().await?;
        let r = match client
            .inspect_network(name, None::<InspectNetworkOptions<String>>)
            .await
        {
            Ok(n) if n.name.as_deref() == Some(name) => {
                if carries(n.labels.as_ref(), labels) {
                    Ok(())
                } else {
                    Err(DockerError::Conflict(format!(
                        "a network named {name} exists and does not belong to this control plane"
                    )))
                }
            }
            Ok(_) | Err(_) => client
                .create_network(CreateNetworkOptions {
                    name: name.to_string(),
                    check_duplicate: true,
                    driver: "bridge".to_string(),
                    labels: labels.clone(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(classify),
        };
        observe("ensure_network", started, &r);
        r
    }

    async fn remove_network(&self, name: &str) -> Result<bool, DockerError> {
        let started = Instant::now();
        let r = match self.client().await?.remove_network(name).await {
            Ok(()) => Ok(true),
            Err(e) => match classify(e) {
                DockerError::NotFound(_) => Ok(true),
                // In use (a container is still attached): it stays.
                DockerError::Conflict(_) => Ok(false),
                DockerError::Failed(m) if m.starts_with("HTTP 403") => Ok(false),
                e => Err(e),
            },
        };
        observe("remove_network", started, &r);
        r
    }
}

/// Whether a network's labels include every one of `wanted`.
fn carries(labels: Option<&HashMap<String, String>>, wanted: &HashMap<String, String>) -> bool {
    wanted
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The exit code in a list status like `Exited (137) 3 seconds ago`.
fn exit_code_of_status(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split(')').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_read_from_list_statuses() {
        assert_eq!(exit_code_of_status("Exited (137) 3 seconds ago"), Some(137));
        assert_eq!(
            exit_code_of_status("Exited (0) About a minute ago"),
            Some(0)
        );
        assert_eq!(exit_code_of_status("Up 2 seconds"), None);
    }

    #[test]
    fn container_specs_never_print_env_values() {
        let spec = ContainerSpec {
            name: "agent_rt_est_1".into(),
            image: "img".into(),
            env: vec![("API_KEY".into(), "sk-very-secret".into())],
            labels: HashMap::new(),
            host_port: 18080,
            container_port: 8080,
            memory_bytes: 1,
            nano_cpus: 1,
            pids_limit: 1,
            read_only_rootfs: true,
            network: "cp-rt-est_1".into(),
            restart_policy: ("no".into(), None),
        };
        let printed = format!("{spec:?}");
        assert!(printed.contains("API_KEY"));
        assert!(!printed.contains("sk-very-secret"));
    }
}
