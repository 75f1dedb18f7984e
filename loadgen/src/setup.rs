//! Sets up a load-generator run through the public API, as an admin would: an establishment
//! with an agent and a published version, a telephony policy routing a number to it, and a
//! runtime container. The runtime token exists only inside that container (the control plane
//! stores its hash), so it is read from the container's environment through the Docker
//! engine, the same way `docker inspect` shows it, and proven with `GET /runtime/whoami`.

use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::Api;

/// One establishment ready for load: its routed number and its runtime's token.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub establishment_id: String,
    pub agent_id: String,
    pub version_id: String,
    /// The inbound number routed to the agent.
    pub number: String,
    pub runtime_id: String,
    pub container_name: String,
    /// `CONTROL_PLANE_TOKEN` of the runtime container.
    pub runtime_token: String,
}

/// A valid, random North American number (+1 415 867 xxxx) for the inbound route.
fn random_number() -> String {
    format!("+1415867{:04}", rand::random::<u16>() % 10_000)
}

/// Creates establishment `name` with everything a call needs. With `wait_ready`, returns only
/// once the runtime is running and ready (so incoming calls are routed to it).
pub async fn tenant(
    api: &Api,
    admin: &str,
    name: &str,
    image: &str,
    wait_ready: bool,
) -> anyhow::Result<Tenant> {
    let created = [StatusCode::CREATED];
    let est = api
        .expect(
            "create establishment",
            Method::POST,
            "/establishments",
            Some(admin),
            Some(&json!({"name": name, "timezone": "UTC", "locale": "en"})),
            &created,
        )
        .await?;
    let est = id(&est)?;
    let agent = api
        .expect(
            "create agent",
            Method::POST,
            &format!("/establishments/{est}/agents"),
            Some(admin),
            Some(&json!({"name": "loadgen agent", "description": "answers simulated calls"})),
            &created,
        )
        .await?;
    let agent = id(&agent)?;
    let version = api
        .expect(
            "create version",
            Method::POST,
            &format!("/agents/{agent}/versions"),
            Some(admin),
            Some(&json!({
                "name": "v1",
                "prompt": "You are the concierge of a utility company. Be brief and kind.",
                "model": {"provider": "openai", "model": "gpt-4.1-mini", "temperature": 0.7, "max_tokens": 1024},
                "tools": {"email": {"enabled": true}, "calendar": {"enabled": true}},
            })),
            &created,
        )
        .await?;
    let version = id(&version)?;
    api.expect(
        "publish version",
        Method::POST,
        &format!("/agents/{agent}/versions/{version}/publish"),
        Some(admin),
        Some(&json!({})),
        &[StatusCode::OK],
    )
    .await?;
    let mut number = None;
    for _ in 0..20 {
        let candidate = random_number();
        let r = api
            .call(
                Method::PATCH,
                &format!("/establishments/{est}/telephony"),
                Some(admin),
                Some(&json!({
                    "inbound_numbers": [{"provider": "twilio", "e164": candidate, "routing_agent_id": agent}],
                })),
            )
            .await?;
        match r.status {
            StatusCode::OK => {
                number = Some(candidate);
                break;
            }
            // The number belongs to another establishment (an earlier run): pick another.
            StatusCode::CONFLICT => continue,
            s => anyhow::bail!("telephony policy: answered {s}: {}", r.text),
        }
    }
    let number = number.context("no free inbound number after 20 tries")?;
    let rt = api
        .expect(
            "provision runtime",
            Method::POST,
            &format!("/establishments/{est}/runtime"),
            Some(admin),
            Some(&json!({
                "image": image,
                "media_stream_url": format!("wss://media.loadgen.invalid/{est}/media-stream"),
            })),
            &created,
        )
        .await?;
    let runtime_id = id(&rt)?;
    let container_name = rt["container_name"]
        .as_str()
        .context("provision answered without container_name")?
        .to_string();
    api.expect(
        "start runtime",
        Method::POST,
        &format!("/runtimes/{runtime_id}/start"),
        Some(admin),
        Some(&json!({})),
        &[StatusCode::ACCEPTED, StatusCode::OK],
    )
    .await?;
    wait_for_runtime(api, admin, &runtime_id, wait_ready).await?;
    let runtime_token = token_of(api, &container_name, &runtime_id).await?;
    Ok(Tenant {
        establishment_id: est,
        agent_id: agent,
        version_id: version,
        number,
        runtime_id,
        container_name,
        runtime_token,
    })
}

fn id(v: &Value) -> anyhow::Result<String> {
    v["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("answer without id: {v}"))
}

/// Waits until the runtime's container exists and runs (and, with `ready`, is ready).
async fn wait_for_runtime(
    api: &Api,
    admin: &str,
    runtime_id: &str,
    ready: bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = api
            .expect(
                "runtime status",
                Method::GET,
                &format!("/runtimes/{runtime_id}/status"),
                Some(admin),
                None,
                &[StatusCode::OK],
            )
            .await?;
        let running = s["status"] == "running";
        if running && (!ready || s["ready"] == true) {
            return Ok(());
        }
        if s["status"] == "failed" || Instant::now() > deadline {
            anyhow::bail!(
                "runtime {runtime_id} did not become running{}: {s}",
                if ready { " and ready" } else { "" }
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `CONTROL_PLANE_TOKEN` from the container's environment, proven against the control plane.
async fn token_of(api: &Api, container: &str, runtime_id: &str) -> anyhow::Result<String> {
    let docker = bollard::Docker::connect_with_local_defaults()
        .context("connecting to the Docker engine (DOCKER_HOST or the local socket)")?
        .negotiate_version()
        .await
        .context("negotiating with the Docker engine")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = docker
            .inspect_container(container, None)
            .await
            .with_context(|| format!("inspecting container {container}"))?;
        let token = info
            .config
            .and_then(|c| c.env)
            .unwrap_or_default()
            .into_iter()
            .find_map(|kv| kv.strip_prefix("CONTROL_PLANE_TOKEN=").map(str::to_string))
            .with_context(|| format!("container {container} has no CONTROL_PLANE_TOKEN"))?;
        let who = api
            .call(Method::GET, "/runtime/whoami", Some(&token), None)
            .await?;
        if who.status == StatusCode::OK && who.body["runtime_id"] == runtime_id {
            return Ok(token);
        }
        // The container may have been recreated with a fresh token meanwhile: read again.
        if Instant::now() > deadline {
            anyhow::bail!(
                "the token of container {container} is not accepted for {runtime_id}: {} {}",
                who.status,
                who.text
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks the control plane to stop the runtimes of a run (best effort).
pub async fn stop_runtimes(api: &Api, admin: &str, tenants: &[Tenant]) {
    for t in tenants {
        let path = format!("/runtimes/{}/stop", t.runtime_id);
        match api
            .call(Method::POST, &path, Some(admin), Some(&json!({})))
            .await
        {
            Ok(r) if r.status.is_success() => {}
            Ok(r) => eprintln!("stopping runtime {}: {} {}", t.runtime_id, r.status, r.text),
            Err(e) => eprintln!("stopping runtime {}: {e}", t.runtime_id),
        }
    }
}
