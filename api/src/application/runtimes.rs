//! Use cases of runtime management: provisioning an establishment's runtime and recording
//! lifecycle intents (start, stop, restart, drain, resume). Nothing here touches a container
//! except the read-only image check: the runtime worker (`workers::runtime_ops`) carries the
//! Docker operations out and records their outcomes; the monitor polls health
//! (docs/runtimes.md). [`Runtimes`] is the runtime-management context they share.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aggregates::runtime::{
    Runtime, RuntimeCommand, RuntimeError, RuntimeSpec, ESTABLISHMENT_CLAIM, HOST_PORT_CLAIM,
};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rand::Rng;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Notify;

use super::{Invalid, Unexpected};
use crate::adapters::docker::{BollardDocker, DockerApi, DockerError};
use crate::config::{Config, RuntimeConfig};
use crate::crypto::SecretBox;
use crate::store::{CommandBus, CommandContext, ExecError, ExecOptions, Outcome};

/// Variables of the runtime contract: set by the control plane, never by provisioning env.
pub const CONTRACT_ENV: [&str; 5] = [
    "RUNTIME_ID",
    "ESTABLISHMENT_ID",
    "CONTROL_PLANE_URL",
    "CONTROL_PLANE_TOKEN",
    "PORT",
];
pub const MAX_ENV_VARS: usize = 64;
pub const MAX_ENV_KEY: usize = 128;
pub const MAX_ENV_VALUE: usize = 8192;
pub const MAX_ENV_TOTAL: usize = 65_536;

/// What the last reconciliation found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    /// Value of the `io.controlplane.instance` label on this control plane's containers.
    pub instance_id: String,
    pub last_run_at: Option<DateTime<Utc>>,
    /// Why Docker could not be listed, when it could not.
    pub docker_error: Option<String>,
    /// Containers with this control plane's labels that no runtime owns (left untouched).
    pub unknown_containers: Vec<UnknownContainer>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnknownContainer {
    pub id: String,
    pub name: String,
    pub state: String,
    pub runtime_id: Option<String>,
    pub establishment_id: Option<String>,
}

/// Runtime management's share of the application state.
pub struct Runtimes {
    pub config: RuntimeConfig,
    /// CONTROL_PLANE_URL given to runtime containers.
    pub control_plane_url: String,
    pub docker: Arc<dyn DockerApi>,
    pub secrets: Arc<SecretBox>,
    /// Label value marking this control plane's containers (one per database), so control
    /// planes sharing a Docker engine never reconcile each other's containers.
    pub instance_id: String,
    pub restart_policy: (String, Option<i64>),
    pub ops_wake: Notify,
    pub monitor_wake: Notify,
    pub report: Mutex<ReconcileReport>,
    /// What each runtime was last told about draining (for runtimes whose `/info` does not say).
    pub drain_told: Mutex<HashMap<String, bool>>,
    /// Client for runtimes' control endpoints (short timeouts, no proxy).
    pub http: reqwest::Client,
}

impl Runtimes {
    pub async fn new(config: &Config, pool: &PgPool) -> anyhow::Result<Self> {
        let rc = config.runtime.clone();
        rc.validate()?;
        if let Some(template) = &rc.runtime_media_stream_url_template {
            let sample = expand_template(template, "rt_x", "est_x", 18080);
            check_media_stream_url("RUNTIME_MEDIA_STREAM_URL_TEMPLATE", &sample)
                .map_err(|e| anyhow::anyhow!("{}", e.reason))?;
        }
        let instance_id = instance_id(pool).await?;
        Ok(Self {
            control_plane_url: rc
                .runtime_control_plane_url
                .clone()
                .unwrap_or_else(|| config.public_base_url())
                .trim_end_matches('/')
                .to_string(),
            docker: Arc::new(BollardDocker::new(config.docker_host.clone())),
            secrets: Arc::new(SecretBox::from_config(config)?),
            restart_policy: rc.restart_policy()?,
            report: Mutex::new(ReconcileReport {
                instance_id: instance_id.clone(),
                ..ReconcileReport::default()
            }),
            instance_id,
            ops_wake: Notify::new(),
            monitor_wake: Notify::new(),
            drain_told: Mutex::new(HashMap::new()),
            http: runtime_http_client()?,
            config: rc,
        })
    }

    /// Context a runtime's provisioning env is sealed under.
    pub fn env_context(runtime_id: &str) -> String {
        format!("runtime-env:{runtime_id}")
    }

    /// The Docker network of an establishment's runtime.
    pub fn network_name(establishment_id: &str) -> String {
        format!("cp-rt-{establishment_id}")
    }
}

/// The client for runtimes' control endpoints: short timeouts, no proxy, and no redirects
/// followed (a runtime must answer itself; a redirect could point the control plane anywhere).
pub fn runtime_http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
}

/// This database's instance label, created on first start (not in a migration: databases
/// cloned from one template must not share it).
async fn instance_id(pool: &PgPool) -> anyhow::Result<String> {
    sqlx::query(
        "INSERT INTO runtime_host (id, instance_id) VALUES (true, $1) ON CONFLICT (id) DO NOTHING",
    )
    .bind(crate::ids::new_id("cp").to_ascii_lowercase())
    .execute(pool)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT instance_id FROM runtime_host WHERE id")
            .fetch_one(pool)
            .await?,
    )
}

/// A validated provisioning request.
#[derive(Clone)]
pub struct ProvisionInput {
    pub image: String,
    pub env: BTreeMap<String, String>,
    pub media_stream_url: Option<String>,
}

impl std::fmt::Debug for ProvisionInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionInput")
            .field("image", &self.image)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("media_stream_url", &self.media_stream_url)
            .finish()
    }
}

impl ProvisionInput {
    pub fn parse(
        image: &str,
        env: Option<BTreeMap<String, String>>,
        media_stream_url: Option<&str>,
    ) -> Result<Self, Invalid> {
        let image = image.trim();
        if image.is_empty() || image.len() > 255 {
            return Err(Invalid::new("image", "must be 1 to 255 characters"));
        }
        if !image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        {
            return Err(Invalid::new(
                "image",
                "must be a Docker image reference like voice-agent-runtime:latest",
            ));
        }
        let env = env.unwrap_or_default();
        if env.len() > MAX_ENV_VARS {
            return Err(Invalid::new(
                "env",
                format!("at most {MAX_ENV_VARS} variables"),
            ));
        }
        let mut total = 0;
        for (k, v) in &env {
            let field = format!("env.{}", k.chars().take(MAX_ENV_KEY).collect::<String>());
            let valid_key = k.len() <= MAX_ENV_KEY
                && k.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !valid_key {
                return Err(Invalid::new(
                    &field,
                    format!("names are [A-Z_][A-Z0-9_]* of at most {MAX_ENV_KEY} characters"),
                ));
            }
            if CONTRACT_ENV.contains(&k.as_str()) {
                return Err(Invalid::new(
                    &field,
                    "is set by the control plane (runtime contract) and cannot be overridden",
                ));
            }
            if v.len() > MAX_ENV_VALUE || v.contains('\0') {
                return Err(Invalid::new(
                    &field,
                    format!("values are at most {MAX_ENV_VALUE} bytes, without NUL"),
                ));
            }
            total += k.len() + v.len();
        }
        if total > MAX_ENV_TOTAL {
            return Err(Invalid::new(
                "env",
                format!("at most {MAX_ENV_TOTAL} bytes in all"),
            ));
        }
        let media_stream_url = media_stream_url
            .map(|u| check_media_stream_url("media_stream_url", u))
            .transpose()?;
        Ok(Self {
            image: image.to_string(),
            env,
            media_stream_url,
        })
    }
}

/// A public WebSocket URL for Twilio media streams: ws(s)://, with a host that is not loopback.
fn check_media_stream_url(field: &str, raw: &str) -> Result<String, Invalid> {
    let raw = raw.trim();
    if raw.len() > 2048 {
        return Err(Invalid::new(field, "must be at most 2048 characters"));
    }
    let url =
        url::Url::parse(raw).map_err(|e| Invalid::new(field, format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(Invalid::new(field, "must be a ws:// or wss:// URL"));
    }
    let loopback = match url.host() {
        None => true,
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
    };
    if loopback {
        return Err(Invalid::new(
            field,
            "must be a public address (Twilio cannot reach loopback)",
        ));
    }
    Ok(url.to_string())
}

fn expand_template(
    template: &str,
    runtime_id: &str,
    establishment_id: &str,
    host_port: u16,
) -> String {
    template
        .replace("{establishment_id}", establishment_id)
        .replace("{runtime_id}", runtime_id)
        .replace("{host_port}", &host_port.to_string())
}

/// Why a runtime could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("establishment not found")]
    EstablishmentNotFound,
    #[error("establishment {establishment_id} already has a runtime")]
    AlreadyProvisioned {
        establishment_id: String,
        runtime_id: Option<String>,
    },
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("image {image:?} is not allowed here (RUNTIME_IMAGE_ALLOWLIST: {allowed})")]
    ImageNotAllowed { image: String, allowed: String },
    #[error("image {0:?} is not present on the Docker host; nothing is pulled: build or load it there first")]
    ImageNotFound(String),
    #[error(transparent)]
    Docker(DockerError),
    #[error("no free host port left in RUNTIME_PORT_RANGE {0}")]
    NoFreeHostPort(String),
    #[error(transparent)]
    Command(#[from] ExecError<RuntimeError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

impl From<sqlx::Error> for ProvisionError {
    fn from(e: sqlx::Error) -> Self {
        ProvisionError::Unexpected(e.into())
    }
}

impl From<crate::store::StoreError> for ProvisionError {
    fn from(e: crate::store::StoreError) -> Self {
        ProvisionError::Unexpected(e.into())
    }
}

/// Whether nothing on this host listens on 127.0.0.1:`port` right now.
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

const PORT_ATTEMPTS: usize = 32;

/// The provisioning and lifecycle use cases.
pub struct RuntimeManagement {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
    pub runtimes: Arc<Runtimes>,
}

impl RuntimeManagement {
    fn media_stream_url(
        &self,
        given: Option<String>,
        runtime_id: &str,
        establishment_id: &str,
        host_port: u16,
    ) -> Result<Option<String>, ProvisionError> {
        if given.is_some() {
            return Ok(given);
        }
        let Some(template) = &self.runtimes.config.runtime_media_stream_url_template else {
            return Ok(None);
        };
        let url = expand_template(template, runtime_id, establishment_id, host_port);
        check_media_stream_url("RUNTIME_MEDIA_STREAM_URL_TEMPLATE", &url)
            .map(Some)
            .map_err(|e| {
                Unexpected::Other(format!("bad media-stream URL template: {}", e.reason)).into()
            })
    }

    /// Free host ports of the configured range, in a random rotation (concurrent provisions
    /// start at different places; the `host_port` claim settles any clash).
    async fn candidate_ports(&self) -> Result<Vec<u16>, ProvisionError> {
        let taken: HashSet<String> = self
            .bus
            .store()
            .claimed_values(HOST_PORT_CLAIM)
            .await?
            .into_iter()
            .collect();
        let range = self.runtimes.config.runtime_port_range;
        let mut free: Vec<u16> = range
            .ports()
            .filter(|p| !taken.contains(&p.to_string()))
            .collect();
        if !free.is_empty() {
            let k = rand::thread_rng().gen_range(0..free.len());
            free.rotate_left(k);
        }
        Ok(free)
    }

    /// Provisions the establishment's runtime: checks the image is allowed and present,
    /// allocates a host port under the `host_port` claim, seals the env and records the intent.
    /// The worker creates the container.
    pub async fn provision(
        &self,
        ctx: &CommandContext,
        establishment_id: &str,
        input: ProvisionInput,
    ) -> Result<Runtime, ProvisionError> {
        if !projections::identity::establishment_exists(&self.pool, establishment_id).await? {
            return Err(ProvisionError::EstablishmentNotFound);
        }
        let store = self.bus.store();
        if let Some(existing) = store
            .claim_owner(ESTABLISHMENT_CLAIM, establishment_id)
            .await?
        {
            return Err(ProvisionError::AlreadyProvisioned {
                establishment_id: establishment_id.to_string(),
                runtime_id: Some(existing),
            });
        }
        let allowed = &self.runtimes.config.runtime_image_allowlist;
        if !allowed.allows(&input.image) {
            return Err(ProvisionError::ImageNotAllowed {
                image: input.image,
                allowed: allowed.to_string(),
            });
        }
        if !self
            .runtimes
            .docker
            .image_exists(&input.image)
            .await
            .map_err(ProvisionError::Docker)?
        {
            return Err(ProvisionError::ImageNotFound(input.image));
        }
        let runtime_id = crate::ids::new_id("rt");
        let env_keys: Vec<String> = input.env.keys().cloned().collect();
        let env_encrypted = (!input.env.is_empty()).then(|| {
            let plain = serde_json::to_vec(&input.env).expect("a string map serialises");
            self.runtimes
                .secrets
                .seal(&Runtimes::env_context(&runtime_id), &plain)
        });
        let mut tried = 0;
        for port in self.candidate_ports().await? {
            if tried == PORT_ATTEMPTS {
                break;
            }
            if !port_is_free(port) {
                continue;
            }
            tried += 1;
            let spec = RuntimeSpec {
                runtime_id: runtime_id.clone(),
                establishment_id: establishment_id.to_string(),
                image: input.image.clone(),
                container_name: format!("agent_rt_{establishment_id}"),
                host_port: port,
                base_url: format!("http://127.0.0.1:{port}"),
                media_stream_url: self.media_stream_url(
                    input.media_stream_url.clone(),
                    &runtime_id,
                    establishment_id,
                    port,
                )?,
                env_keys: env_keys.clone(),
                env_encrypted: env_encrypted.clone(),
            };
            match self
                .bus
                .execute::<Runtime>(
                    &runtime_id,
                    RuntimeCommand::Provision(Box::new(spec)),
                    ctx,
                    ExecOptions::default(),
                )
                .await
            {
                Ok(outcome) => {
                    self.bus.visible(&outcome).await;
                    self.runtimes.ops_wake.notify_one();
                    return Ok(outcome.state().cloned().unwrap_or_default());
                }
                Err(ExecError::ClaimTaken { scope, .. }) if scope == HOST_PORT_CLAIM => continue,
                Err(ExecError::ClaimTaken { scope, .. }) if scope == ESTABLISHMENT_CLAIM => {
                    let owner = store
                        .claim_owner(ESTABLISHMENT_CLAIM, establishment_id)
                        .await?;
                    return Err(ProvisionError::AlreadyProvisioned {
                        establishment_id: establishment_id.to_string(),
                        runtime_id: owner,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ProvisionError::NoFreeHostPort(
            self.runtimes.config.runtime_port_range.to_string(),
        ))
    }

    /// Records a lifecycle intent (start, stop, restart, drain, resume) and wakes the worker
    /// that acts on it. A command that changes nothing (start of a running runtime) appends
    /// nothing.
    pub async fn lifecycle(
        &self,
        ctx: &CommandContext,
        runtime_id: &str,
        command: RuntimeCommand,
    ) -> Result<Outcome<Runtime>, ExecError<RuntimeError>> {
        let drain = matches!(command, RuntimeCommand::Drain | RuntimeCommand::Resume);
        let outcome = self
            .bus
            .execute::<Runtime>(runtime_id, command, ctx, ExecOptions::default())
            .await?;
        self.bus.visible(&outcome).await;
        if outcome.commit().is_some() {
            if drain {
                self.runtimes.monitor_wake.notify_one();
            } else {
                self.runtimes.ops_wake.notify_one();
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn provisioning_env_keys_are_checked_and_cannot_override_the_contract() {
        assert!(
            ProvisionInput::parse("img:latest", env(&[("APP_PUBLIC_DOMAIN", "x")]), None).is_ok()
        );
        for bad in ["lower", "1ABC", "A-B", "", "PORT", "CONTROL_PLANE_TOKEN"] {
            let e = ProvisionInput::parse("img", env(&[(bad, "v")]), None).unwrap_err();
            assert!(e.field.starts_with("env."), "{bad}: {e}");
        }
        let big = "x".repeat(MAX_ENV_VALUE + 1);
        assert!(ProvisionInput::parse("img", env(&[("K", &big)]), None).is_err());
        let many: BTreeMap<String, String> = (0..=MAX_ENV_VARS)
            .map(|i| (format!("K{i}"), "v".to_string()))
            .collect();
        assert!(ProvisionInput::parse("img", Some(many), None).is_err());
    }

    #[test]
    fn images_and_media_stream_urls_are_checked() {
        assert!(ProvisionInput::parse("", None, None).is_err());
        assert!(ProvisionInput::parse("bad image", None, None).is_err());
        assert!(ProvisionInput::parse("registry.local:5000/a/b@sha256:ab", None, None).is_ok());
        let ok =
            ProvisionInput::parse("img", None, Some("wss://rt.example.com/media-stream")).unwrap();
        assert_eq!(
            ok.media_stream_url.as_deref(),
            Some("wss://rt.example.com/media-stream")
        );
        for bad in [
            "https://rt.example.com/x",
            "ws://127.0.0.1:18080/media-stream",
            "wss://localhost/x",
            "not a url",
        ] {
            assert!(
                ProvisionInput::parse("img", None, Some(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_env_values() {
        let input = ProvisionInput::parse("img", env(&[("API_KEY", "sk-secret")]), None).unwrap();
        let printed = format!("{input:?}");
        assert!(printed.contains("API_KEY") && !printed.contains("sk-secret"));
    }
}
