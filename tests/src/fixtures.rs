//! Setup shared by the suite: an establishment with its admin, agents with published
//! versions, a routed inbound number, a ready runtime (Docker), a signed incoming-call
//! webhook. Each returns once what it made is visible to the next request.

use std::time::Duration;

use aggregates::telephony::{RouteDecision, RouteTarget};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::{Json, Resp, TestApp};
use crate::runtimes::IMAGE;
use crate::twilio::{TwilioStandIn, Webhook};
use crate::wait::eventually;

/// The inbound number the suite routes.
pub const NUMBER: &str = "+14158675309";
/// The caller of the suite's inbound calls.
pub const CALLER: &str = "+14155550100";
/// How long a runtime container may take to start and report ready, or to stop (Docker, two
/// cores, tests side by side).
pub const RUNTIME_BUDGET: Duration = Duration::from_secs(30);

/// An establishment and the token of an admin of it (the platform admin who created it).
pub struct Tenant {
    pub est: String,
    pub admin: String,
}

impl TestApp {
    /// A new establishment named `name`, created by the platform admin.
    pub async fn tenant(&self, name: &str) -> Tenant {
        let admin = self.root_token().await;
        let est = self.create_establishment(&admin, name).await;
        Tenant { est, admin }
    }

    /// A signed-on-send incoming-call webhook for a new call from `from` to `to`, aimed at
    /// this control plane's public URL (the one it checks signatures against).
    pub fn incoming_call(&self, twilio: &TwilioStandIn, from: &str, to: &str) -> Webhook {
        twilio.incoming_call(&self.public_url("/webhooks/twilio/incoming-call"), from, to)
    }
}

/// A brain (version body) named `name`.
pub fn brain(name: &str) -> Value {
    json!({
        "name": name,
        "prompt": "You are a helpful assistant...",
        "model": {"provider": "openai", "model": "gpt-4.1-mini", "temperature": 0.7, "max_tokens": 1024},
        "tools": {"email": {"enabled": true}, "calendar": {"enabled": true}, "whatsapp_messaging": {"enabled": false}},
    })
}

pub async fn create_agent(app: &TestApp, token: &str, est: &str, name: &str) -> String {
    let r = app
        .post(
            &format!("/establishments/{est}/agents"),
            token,
            json!({"name": name, "description": "Concierge and support agent"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "create agent: {}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

/// Drafts a version; returns its id.
pub async fn draft(app: &TestApp, token: &str, agent: &str, body: Value) -> String {
    let r = app
        .post(&format!("/agents/{agent}/versions"), token, body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "draft: {}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

pub async fn publish(app: &TestApp, token: &str, agent: &str, version: &str) -> Resp {
    app.post(
        &format!("/agents/{agent}/versions/{version}/publish"),
        token,
        json!({}),
    )
    .await
}

/// An agent and its active version.
pub struct PublishedAgent {
    pub id: String,
    pub version: String,
}

/// An agent named `name` with one version ("v1"), published.
pub async fn published_agent(app: &TestApp, token: &str, est: &str, name: &str) -> PublishedAgent {
    let id = create_agent(app, token, est, name).await;
    let version = draft(app, token, &id, brain("v1")).await;
    let r = publish(app, token, &id, &version).await;
    assert_eq!(r.status, StatusCode::OK, "publish: {}", r.text);
    PublishedAgent { id, version }
}

/// Patches the establishment's telephony policy; panics unless it is accepted.
pub async fn set_telephony(app: &TestApp, token: &str, est: &str, policy: Value) -> Json {
    let r = app
        .patch(&format!("/establishments/{est}/telephony"), token, policy)
        .await;
    assert_eq!(r.status, StatusCode::OK, "telephony policy: {}", r.text);
    r.body
}

/// Routes `number` to `agent` in `est` (the only inbound number of `est`).
pub async fn map_number(app: &TestApp, token: &str, est: &str, number: &str, agent: &str) {
    set_telephony(
        app,
        token,
        est,
        json!({"inbound_numbers": [{"provider": "twilio", "e164": number, "routing_agent_id": agent}]}),
    )
    .await;
}

/// The version the in-memory routing model sends a call to `number` to, right now.
pub fn routed_version(app: &TestApp, number: &str) -> Option<String> {
    match app
        .state()
        .routing
        .route(number, CALLER, chrono::Utc::now())
    {
        RouteDecision::Accept(RouteTarget { version_id, .. }) => Some(version_id),
        RouteDecision::Reject(_) => None,
    }
}

/// A runtime as provisioning answered it.
pub struct ProvisionedRuntime {
    pub id: String,
    /// `http://127.0.0.1:{host_port}`.
    pub base_url: String,
    pub host_port: u16,
    pub container_name: String,
}

/// Provisions a runtime of the reference image with `env` for `est`.
pub async fn provision_runtime(
    app: &TestApp,
    token: &str,
    est: &str,
    env: Json,
) -> ProvisionedRuntime {
    let r = app
        .post(
            &format!("/establishments/{est}/runtime"),
            token,
            json!({"image": IMAGE, "env": env}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "provision: {}", r.text);
    let base_url = r.body["base_url"].as_str().unwrap().to_string();
    let host_port = base_url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a loopback base URL: {}", r.text));
    ProvisionedRuntime {
        id: r.body["id"].as_str().unwrap().to_string(),
        base_url,
        host_port,
        container_name: r.body["container_name"].as_str().unwrap().to_string(),
    }
}

/// `GET /runtimes/{rt}/status`; panics unless it answers 200.
pub async fn runtime_status(app: &TestApp, token: &str, rt: &str) -> Json {
    let r = app.get(&format!("/runtimes/{rt}/status"), token).await;
    assert_eq!(r.status, StatusCode::OK, "runtime status: {}", r.text);
    r.body
}

/// Polls the runtime's status until `pred` holds (a container starting or stopping, a health
/// poll: real time); returns that status.
pub async fn runtime_until(
    app: &TestApp,
    token: &str,
    rt: &str,
    what: &str,
    budget: Duration,
    pred: impl Fn(&Json) -> bool,
) -> Json {
    eventually(&format!("runtime {rt} {what}"), budget, async || {
        let s = runtime_status(app, token, rt).await;
        if pred(&s) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await
}

pub fn running_and_ready(s: &Json) -> bool {
    s["status"] == "running" && s["ready"] == true
}

/// Starts the runtime (202) and waits until it runs and reports ready.
pub async fn start_runtime(app: &TestApp, token: &str, rt: &str) -> Json {
    let r = app
        .post(&format!("/runtimes/{rt}/start"), token, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "start: {}", r.text);
    runtime_until(
        app,
        token,
        rt,
        "running and ready",
        RUNTIME_BUDGET,
        running_and_ready,
    )
    .await
}

/// A runtime of the reference image with `env` for `est`, provisioned, started and ready.
/// Needs a control plane configured by [`crate::runtimes::RuntimeEnv`].
pub async fn ready_runtime(app: &TestApp, token: &str, est: &str, env: Json) -> ProvisionedRuntime {
    let rt = provision_runtime(app, token, est, env).await;
    start_runtime(app, token, &rt.id).await;
    rt
}
