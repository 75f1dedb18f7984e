//! Runtime management: one agent runtime container per establishment on the local Docker
//! engine (docs/runtimes.md).
//!
//! - HTTP handlers (`http::runtimes`) validate input and record intent through the `Runtime`
//!   aggregate; nothing there touches a container except the read-only image check.
//! - `worker` carries out pending Docker operations and records their outcomes.
//! - `monitor` polls every runtime's `/readyz` and `/info` and reconciles with Docker by label.
//! - `principal` authenticates runtimes by their token.

pub mod bench;
pub mod config;
pub mod docker;
pub mod monitor;
pub mod principal;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aggregates::runtime::{
    Runtime, RuntimeCommand, RuntimeError, RuntimeSpec, ESTABLISHMENT_CLAIM, HOST_PORT_CLAIM,
};
use axum::http::StatusCode;
use parking_lot::Mutex;
use rand::Rng;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::app::AppState;
use crate::config::Config;
use crate::crypto::SecretBox;
use crate::error::{ApiError, ApiResult, DomainError};
use crate::store::{CommandContext, ExecError, ExecOptions, Outcome};

pub use config::RuntimeConfig;
pub use docker::{BollardDocker, DockerApi, DockerError};
pub use monitor::ReconcileReport;

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
    /// Runtime tokens seen recently (token hash → principal), so ingestion does not look the
    /// token up on every event.
    pub token_cache: principal::TokenCache,
}

impl Runtimes {
    pub async fn new(config: &Config, pool: &PgPool) -> anyhow::Result<Self> {
        let rc = config.runtime.clone();
        rc.validate()?;
        if let Some(template) = &rc.runtime_media_stream_url_template {
            let sample = expand_template(template, "rt_x", "est_x", 18080);
            check_media_stream_url("RUNTIME_MEDIA_STREAM_URL_TEMPLATE", &sample)
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
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
            token_cache: Default::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .connect_timeout(Duration::from_secs(1))
                .no_proxy()
                .build()?,
            config: rc,
        })
    }

    /// Context a runtime's provisioning env is sealed under.
    pub fn env_context(runtime_id: &str) -> String {
        format!("runtime-env:{runtime_id}")
    }
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

impl DomainError for RuntimeError {
    fn status(&self) -> StatusCode {
        match self {
            RuntimeError::AlreadyProvisioned => StatusCode::CONFLICT,
            RuntimeError::NotProvisioned => StatusCode::NOT_FOUND,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            RuntimeError::AlreadyProvisioned => "runtime_exists",
            RuntimeError::NotProvisioned => "not_found",
        }
    }
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
    ) -> ApiResult<Self> {
        let image = image.trim();
        if image.is_empty() || image.len() > 255 {
            return Err(ApiError::validation("image", "must be 1 to 255 characters"));
        }
        if !image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        {
            return Err(ApiError::validation(
                "image",
                "must be a Docker image reference like voice-agent-runtime:latest",
            ));
        }
        let env = env.unwrap_or_default();
        if env.len() > MAX_ENV_VARS {
            return Err(ApiError::validation(
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
                return Err(ApiError::validation(
                    &field,
                    format!("names are [A-Z_][A-Z0-9_]* of at most {MAX_ENV_KEY} characters"),
                ));
            }
            if CONTRACT_ENV.contains(&k.as_str()) {
                return Err(ApiError::validation(
                    &field,
                    "is set by the control plane (runtime contract) and cannot be overridden",
                ));
            }
            if v.len() > MAX_ENV_VALUE || v.contains('\0') {
                return Err(ApiError::validation(
                    &field,
                    format!("values are at most {MAX_ENV_VALUE} bytes, without NUL"),
                ));
            }
            total += k.len() + v.len();
        }
        if total > MAX_ENV_TOTAL {
            return Err(ApiError::validation(
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
fn check_media_stream_url(field: &str, raw: &str) -> ApiResult<String> {
    let raw = raw.trim();
    if raw.len() > 2048 {
        return Err(ApiError::validation(
            field,
            "must be at most 2048 characters",
        ));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| ApiError::validation(field, format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(ApiError::validation(field, "must be a ws:// or wss:// URL"));
    }
    let loopback = match url.host() {
        None => true,
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
    };
    if loopback {
        return Err(ApiError::validation(
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

fn media_stream_url(
    state: &AppState,
    given: Option<String>,
    runtime_id: &str,
    establishment_id: &str,
    host_port: u16,
) -> ApiResult<Option<String>> {
    if given.is_some() {
        return Ok(given);
    }
    let Some(template) = &state.runtimes.config.runtime_media_stream_url_template else {
        return Ok(None);
    };
    let url = expand_template(template, runtime_id, establishment_id, host_port);
    check_media_stream_url("RUNTIME_MEDIA_STREAM_URL_TEMPLATE", &url)
        .map(Some)
        .map_err(|e| ApiError::internal(format!("bad media-stream URL template: {}", e.message())))
}

fn docker_error(e: DockerError) -> ApiError {
    match e {
        DockerError::Unavailable(m) => ApiError::unavailable(
            "docker_unavailable",
            format!("the Docker engine is unreachable: {m}"),
        ),
        DockerError::Invalid(m) => ApiError::validation("image", m),
        e => ApiError::internal(e),
    }
}

/// Free host ports of the configured range, in a random rotation (concurrent provisions start
/// at different places; the `host_port` claim settles any clash).
async fn candidate_ports(state: &AppState) -> ApiResult<Vec<u16>> {
    let taken: HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT value FROM unique_claims WHERE scope = $1")
            .bind(HOST_PORT_CLAIM)
            .fetch_all(&state.pool)
            .await?
            .into_iter()
            .collect();
    let range = state.runtimes.config.runtime_port_range;
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

/// Whether nothing on this host listens on 127.0.0.1:`port` right now.
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

const PORT_ATTEMPTS: usize = 32;

/// Provisions the establishment's runtime: checks the image is present, allocates a host
/// port under the `host_port` claim, seals the env and records the intent. The worker creates
/// the container.
pub async fn provision(
    state: &AppState,
    ctx: &CommandContext,
    establishment_id: &str,
    input: ProvisionInput,
) -> ApiResult<Runtime> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM rm_establishments WHERE id = $1)")
            .bind(establishment_id)
            .fetch_one(&state.pool)
            .await?;
    if !exists {
        return Err(ApiError::not_found("establishment"));
    }
    if let Some(existing) = state
        .bus
        .store()
        .claim_owner(ESTABLISHMENT_CLAIM, establishment_id)
        .await?
    {
        return Err(already_provisioned(establishment_id, Some(&existing)));
    }
    if !state
        .runtimes
        .docker
        .image_exists(&input.image)
        .await
        .map_err(docker_error)?
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_not_found",
            format!(
                "image {:?} is not present on the Docker host; nothing is pulled: build or load it there first",
                input.image
            ),
        )
        .with_details(json!({ "field": "image", "image": input.image })));
    }
    let runtime_id = crate::ids::new_id("rt");
    let env_keys: Vec<String> = input.env.keys().cloned().collect();
    let env_encrypted = (!input.env.is_empty()).then(|| {
        let plain = serde_json::to_vec(&input.env).expect("a string map serialises");
        state
            .runtimes
            .secrets
            .seal(&Runtimes::env_context(&runtime_id), &plain)
    });
    let mut tried = 0;
    for port in candidate_ports(state).await? {
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
            media_stream_url: media_stream_url(
                state,
                input.media_stream_url.clone(),
                &runtime_id,
                establishment_id,
                port,
            )?,
            env_keys: env_keys.clone(),
            env_encrypted: env_encrypted.clone(),
        };
        match state
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
                state.visible(&outcome).await;
                state.runtimes.ops_wake.notify_one();
                return Ok(outcome.state().cloned().unwrap_or_default());
            }
            Err(ExecError::ClaimTaken { scope, .. }) if scope == HOST_PORT_CLAIM => continue,
            Err(ExecError::ClaimTaken { scope, .. }) if scope == ESTABLISHMENT_CLAIM => {
                let owner = state
                    .bus
                    .store()
                    .claim_owner(ESTABLISHMENT_CLAIM, establishment_id)
                    .await?;
                return Err(already_provisioned(establishment_id, owner.as_deref()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::unavailable(
        "no_free_host_port",
        format!(
            "no free host port left in RUNTIME_PORT_RANGE {}",
            state.runtimes.config.runtime_port_range
        ),
    ))
}

fn already_provisioned(establishment_id: &str, runtime_id: Option<&str>) -> ApiError {
    ApiError::conflict(
        "runtime_exists",
        format!("establishment {establishment_id} already has a runtime"),
    )
    .with_details(json!({ "establishment_id": establishment_id, "runtime_id": runtime_id }))
}

/// Records a lifecycle intent (start, stop, restart, drain, resume) and wakes the worker that
/// acts on it. A command that changes nothing (start of a running runtime) appends nothing.
pub async fn lifecycle(
    state: &AppState,
    ctx: &CommandContext,
    runtime_id: &str,
    command: RuntimeCommand,
) -> ApiResult<Outcome<Runtime>> {
    let drain = matches!(command, RuntimeCommand::Drain | RuntimeCommand::Resume);
    let outcome = state
        .bus
        .execute::<Runtime>(runtime_id, command, ctx, ExecOptions::default())
        .await?;
    state.visible(&outcome).await;
    if outcome.commit().is_some() {
        if drain {
            state.runtimes.monitor_wake.notify_one();
        } else {
            state.runtimes.ops_wake.notify_one();
        }
    }
    Ok(outcome)
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
            assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
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
