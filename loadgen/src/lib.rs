//! The load generator (`control-plane-loadgen ...`): load against a RUNNING control plane over
//! HTTP, as runtimes, UI clients and Twilio would send it (docs/benchmarks.md). A client of the
//! server like any other: of the server's code it uses only `twilio::signature`, so its
//! webhooks are signed exactly as the server checks them.
//!
//! - `calls`: N concurrent simulated calls post Appendix B.1 envelopes with a runtime token
//!   while UI clients poll `GET /calls/active` and the transcripts; reports ingest throughput,
//!   append-to-visible lag, poll latencies, errors and the server's peak memory.
//! - `webhooks`: signed `POST /webhooks/twilio/incoming-call` requests at a fixed concurrency;
//!   reports their latency.
//!
//! Both set themselves up through the public API with the bootstrap admin's credentials
//! (`setup`), including a real runtime container whose token they read from Docker.

pub mod calls;
pub mod server;
pub mod setup;
pub mod stats;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// `control-plane-loadgen`: see `--help` and docs/benchmarks.md.
#[derive(Debug, Parser)]
#[command(
    name = "control-plane-loadgen",
    version,
    about = "Load against a RUNNING control plane over HTTP: simulated calls (runtime events in, UI polls out) or signed Twilio webhooks (docs/benchmarks.md)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: LoadgenCommand,
}

#[derive(Debug, Subcommand)]
pub enum LoadgenCommand {
    /// Concurrent simulated calls: runtime events in, UI polls out (ingest benchmark).
    Calls(Box<calls::CallsArgs>),
    /// Signed incoming-call webhooks at a fixed concurrency (webhook latency benchmark).
    Webhooks(Box<webhooks::WebhooksArgs>),
}

/// Options shared by every load-generator mode.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Base URL of the running control plane. Default: http:// + LISTEN_ADDR (0.0.0.0 read as
    /// 127.0.0.1).
    #[arg(long)]
    pub url: Option<String>,
    /// The server's LISTEN_ADDR, for the default --url.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
    /// Login of a platform admin (default: BOOTSTRAP_ADMIN_EMAIL, as the server reads it).
    #[arg(long, env = "BOOTSTRAP_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of that admin (default: BOOTSTRAP_ADMIN_PASSWORD).
    #[arg(long, env = "BOOTSTRAP_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Image of the runtime container provisioned for the run (its token signs the events).
    #[arg(long, default_value = "agent-runtime-sim:latest")]
    pub image: String,
    /// PID of the control-plane process, for its memory and CPU. Default: the process
    /// listening on the target port, found through /proc (same machine only).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// PID of the PostgreSQL postmaster (first line of its data folder's postmaster.pid):
    /// the CPU of it and its backends is reported too.
    #[arg(long)]
    pub db_pid: Option<u32>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Leave the runtime running at the end (default: ask the control plane to stop it).
    #[arg(long)]
    pub keep_runtime: bool,
    /// Per-request timeout, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

pub async fn run(command: LoadgenCommand) -> anyhow::Result<()> {
    match command {
        LoadgenCommand::Calls(args) => calls::run(*args).await.map(drop),
        LoadgenCommand::Webhooks(args) => webhooks::run(*args).await.map(drop),
    }
}

impl Target {
    /// Options for a server at `url` with this admin, every other option at its default.
    pub fn new(url: &str, admin_email: &str, admin_password: &str) -> Self {
        Self {
            url: Some(url.to_string()),
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_email: Some(admin_email.to_string()),
            admin_password: Some(admin_password.to_string()),
            image: "agent-runtime-sim:latest".into(),
            server_pid: None,
            db_pid: None,
            report: None,
            keep_runtime: false,
            timeout_ms: 10_000,
        }
    }

    pub fn base_url(&self) -> String {
        match &self.url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let mut addr = self.listen_addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
        }
    }

    pub fn credentials(&self) -> anyhow::Result<(String, String)> {
        let email = self
            .admin_email
            .clone()
            .context("--admin-email (or BOOTSTRAP_ADMIN_EMAIL) is required")?;
        let password = self
            .admin_password
            .clone()
            .context("--admin-password (or BOOTSTRAP_ADMIN_PASSWORD) is required")?;
        Ok((email, password))
    }

    /// The port of the target URL, to find the server process by.
    pub fn port(&self) -> Option<u16> {
        url::Url::parse(&self.base_url())
            .ok()?
            .port_or_known_default()
    }
}

/// An HTTP client for the control plane: one connection pool for every simulated party.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

/// A response read whole.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
}

impl Api {
    pub fn new(base: String, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .http1_only()
            .no_proxy()
            .build()?;
        Ok(Self { base, http })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a JSON request (or none) with a bearer token; reads the answer whole.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await?;
        let status = res.status();
        let text = res.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, body, text })
    }

    /// Like `call`, but anything but `expect` is an error naming the step.
    pub async fn expect(
        &self,
        step: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        expect: &[StatusCode],
    ) -> anyhow::Result<Value> {
        let r = self
            .call(method, path, token, body)
            .await
            .with_context(|| format!("{step}: request to {path} failed"))?;
        if !expect.contains(&r.status) {
            anyhow::bail!("{step}: {path} answered {}: {}", r.status, r.text);
        }
        Ok(r.body)
    }

    /// Logs in; returns the access token.
    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let r = self
            .call(
                Method::POST,
                "/auth/login",
                None,
                Some(&json!({"email": email, "password": password})),
            )
            .await
            .context("login: request failed")?;
        if r.status != StatusCode::OK {
            anyhow::bail!(
                "login as {email} answered {}: {} (the bootstrap admin is created only when the server starts on a database without users)",
                r.status,
                r.text
            );
        }
        let body = r.body;
        body["access_token"]
            .as_str()
            .map(str::to_string)
            .context("login answered without access_token")
    }

    /// The server's Prometheus metrics (empty when unavailable).
    pub async fn metrics(&self) -> Vec<server::Series> {
        match self.call(Method::GET, "/metrics", None, None).await {
            Ok(r) if r.status.is_success() => server::parse_metrics(&r.text),
            _ => Vec::new(),
        }
    }
}

/// Facts about the machine for the report: cores, memory, kernel, CPU model.
pub fn machine_facts() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu_model": model,
        "memory_kb": server::status_kb(&read("/proc/meminfo"), "MemTotal"),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "load_average": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

/// The end of every run's printout: resource usage, server-side stages, errors by kind; then
/// the JSON report when asked to.
pub fn finish_report(
    usage: &server::Usage,
    report: &Value,
    error_total: u64,
    path: Option<&Path>,
) -> anyhow::Result<()> {
    for l in usage.lines() {
        println!("{l}");
    }
    for l in server::stage_lines(&report["server_stages"]) {
        println!("{l}");
    }
    if error_total == 0 {
        println!("errors: none");
    } else {
        println!("errors: {error_total} {:?}", report["errors"]);
    }
    write_report(path, report)
}

/// Writes the JSON report when asked to.
pub fn write_report(path: Option<&Path>, report: &Value) -> anyhow::Result<()> {
    if let Some(p) = path {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(p, serde_json::to_vec_pretty(report)?)
            .with_context(|| format!("writing the report to {}", p.display()))?;
        println!("report written to {}", p.display());
    }
    Ok(())
}

/// A random salt for this run's identifiers (CallSids, numbers), so runs never collide.
pub fn run_salt() -> u32 {
    rand::random::<u32>()
}
