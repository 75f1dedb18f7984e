//! `control-plane-loadgen webhooks`: latency of `POST /webhooks/twilio/incoming-call` under
//! concurrent load. Every request is a new call (a distinct CallSid) to a number routed to an
//! agent with a published version and a ready runtime, form-encoded and signed exactly like
//! Twilio signs it (HMAC-SHA1 over PUBLIC_BASE_URL + path + sorted parameters with the auth
//! token), so each one goes the whole way: signature check, routing, the Call aggregate's
//! append, and `<Connect><Stream>` TwiML.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use reqwest::StatusCode;
use serde_json::json;

use super::server::{self, Monitor, Watched};
use super::setup::{self, Tenant};
use super::stats::{request_error_kind, Errors, Samples};
use super::{finish_report, machine_facts, Api, Target};
use control_plane::adapters::twilio::signature;

pub const PATH: &str = "/webhooks/twilio/incoming-call";

#[derive(Debug, Clone, Args)]
pub struct WebhooksArgs {
    #[command(flatten)]
    pub target: Target,
    /// Requests in flight: always this many (closed loop), or at most this many with --rate.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Open loop: start requests at this rate (per second) whatever the answers take, and
    /// time each from its scheduled start (waiting for a free slot counts). 0: closed loop.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Measured requests.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Requests sent first and not measured (connections, caches, JIT-free but cold pages).
    #[arg(long, default_value_t = 500)]
    pub warmup: u64,
    /// The server's Twilio auth token: requests are signed with it.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,
    /// The `AccountSid` the requests carry (default: 34 zeros after `AC`).
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,
    /// The server's PUBLIC_BASE_URL, which signatures cover (default: http:// + LISTEN_ADDR,
    /// as the server reads it).
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
}

/// The form parameters of Twilio's voice webhook for a new inbound call.
pub fn incoming_params(
    account_sid: &str,
    call_sid: &str,
    from: &str,
    to: &str,
) -> Vec<(String, String)> {
    [
        ("AccountSid", account_sid),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Called", to),
        ("CalledCountry", "US"),
        ("Caller", from),
        ("CallerCountry", "US"),
        ("Direction", "inbound"),
        ("From", from),
        ("FromCountry", "US"),
        ("To", to),
        ("ToCountry", "US"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The form body and `X-Twilio-Signature` of a request to `url` (PUBLIC_BASE_URL + path).
pub fn signed_form(auth_token: &str, url: &str, params: &[(String, String)]) -> (String, String) {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let sig = signature::compute(auth_token, url, &pairs);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    (body, sig)
}

struct Shot {
    api: Api,
    auth_token: String,
    signed_url: String,
    account_sid: String,
    tenant: Tenant,
    salt: u32,
    next: AtomicU64,
    latency: Samples,
    errors: Errors,
}

impl Shot {
    /// Sends call `n`; Ok(latency since `since`, or since sending) when answered 200 with a
    /// media stream.
    async fn send(&self, n: u64, since: Option<Instant>) -> Result<Duration, String> {
        let sid = format!("CA{:08x}{:024x}", self.salt, n);
        let from = format!("+1303{:07}", n % 10_000_000);
        let params = incoming_params(&self.account_sid, &sid, &from, &self.tenant.number);
        let (body, sig) = signed_form(&self.auth_token, &self.signed_url, &params);
        let t0 = since.unwrap_or_else(Instant::now);
        let res = self
            .api
            .http
            .post(self.api.url(PATH))
            .header(signature::HEADER, sig)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| request_error_kind("webhook", &e))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| request_error_kind("webhook", &e))?;
        let took = t0.elapsed();
        if status != StatusCode::OK {
            return Err(format!("webhook_http_{}", status.as_u16()));
        }
        if !text.contains("<Connect") || !text.contains("<Stream") {
            return Err("webhook_not_routed_to_the_runtime".into());
        }
        Ok(took)
    }
}

impl WebhooksArgs {
    /// The URL signatures are computed for: PUBLIC_BASE_URL, or http:// + LISTEN_ADDR as the
    /// server derives it (without trailing slash).
    pub fn public_base_url(&self) -> String {
        self.public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.target.listen_addr))
            .trim_end_matches('/')
            .to_string()
    }
}

/// Starts request i at `started + i / rate`, at most `concurrency` in flight; each is timed
/// from its scheduled start, so a server falling behind shows in the latency.
async fn open_loop(shot: &Arc<Shot>, args: &WebhooksArgs, started: Instant) -> anyhow::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let every = Duration::from_secs_f64(1.0 / args.rate);
    let mut tasks = Vec::with_capacity(args.requests as usize);
    for i in 0..args.requests {
        let scheduled = started + every.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let slot = slots.clone().acquire_owned().await?;
        let shot = shot.clone();
        tasks.push(tokio::spawn(async move {
            let _slot = slot;
            let n = shot.next.fetch_add(1, Ordering::Relaxed);
            match shot.send(n, Some(scheduled)).await {
                Ok(d) => shot.latency.record(d),
                Err(kind) => shot.errors.add(kind),
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// Runs the load, prints a summary and returns the report.
pub async fn run(args: WebhooksArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let auth_token = args
        .twilio_auth_token
        .clone()
        .context("TWILIO_AUTH_TOKEN (or --twilio-auth-token) must be the server's")?;
    let public = args.public_base_url();
    let base = args.target.base_url();
    let api = Api::new(base.clone(), Duration::from_millis(args.target.timeout_ms))?;
    let (email, password) = args.target.credentials()?;
    let admin = api.login(&email, &password).await?;
    let salt = super::run_salt();
    println!("loadgen webhooks against {base} (signed for {public}{PATH}): setting up...");
    let tenant = setup::tenant(
        &api,
        &admin,
        &format!("loadgen webhooks {salt:08x}"),
        &args.target.image,
        true,
    )
    .await
    .context("setting up the establishment")?;
    println!(
        "  {} number {} runtime {} ready",
        tenant.establishment_id, tenant.number, tenant.runtime_id
    );
    let shot = Arc::new(Shot {
        api: api.clone(),
        auth_token,
        signed_url: signature::webhook_url(&public, PATH),
        account_sid: args
            .twilio_account_sid
            .clone()
            .unwrap_or_else(|| format!("AC{}", "0".repeat(32))),
        tenant: tenant.clone(),
        salt,
        next: AtomicU64::new(0),
        latency: Samples::default(),
        errors: Errors::default(),
    });
    // The routing model follows the telephony policy and runtime readiness through projectors:
    // wait until a call is routed to the runtime.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = shot.next.fetch_add(1, Ordering::Relaxed);
        match shot.send(n, None).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                anyhow::bail!("incoming calls are not routed to the runtime after 20 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let warm = {
        let shot = shot.clone();
        let n = args.warmup;
        let c = args.concurrency;
        async move {
            let done = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> = (0..c)
                .map(|_| {
                    let shot = shot.clone();
                    let done = done.clone();
                    tokio::spawn(async move {
                        while done.fetch_add(1, Ordering::Relaxed) < n {
                            let i = shot.next.fetch_add(1, Ordering::Relaxed);
                            let _ = shot.send(i, None).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        }
    };
    warm.await;
    let mode = if args.rate > 0.0 {
        format!(
            "open loop at {}/s, at most {} in flight",
            args.rate, args.concurrency
        )
    } else {
        format!("closed loop, {} in flight", args.concurrency)
    };
    println!(
        "sending {} signed incoming-call webhooks, {mode} (after {} warm-up requests)...",
        args.requests, args.warmup
    );
    let watcher = Watched::locate(args.target.server_pid, args.target.port());
    let metrics_before = api.metrics().await;
    let monitor = Monitor::start(watcher, args.target.db_pid);
    let started = Instant::now();
    if args.rate > 0.0 {
        open_loop(&shot, &args, started).await?;
    } else {
        let budget = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let shot = shot.clone();
                let budget = budget.clone();
                let total = args.requests;
                tokio::spawn(async move {
                    while budget.fetch_add(1, Ordering::Relaxed) < total {
                        let n = shot.next.fetch_add(1, Ordering::Relaxed);
                        match shot.send(n, None).await {
                            Ok(d) => shot.latency.record(d),
                            Err(kind) => shot.errors.add(kind),
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let usage = monitor.finish();
    let metrics_after = api.metrics().await;
    if !args.target.keep_runtime {
        setup::stop_runtimes(&api, &admin, std::slice::from_ref(&tenant)).await;
    }
    let latency = shot.latency.summary();
    let errors = shot.errors.snapshot();
    let error_total: u64 = errors.values().sum();
    let stages = server::stage_report(&metrics_before, &metrics_after, &[("POST", PATH)]);
    let report = json!({
        "kind": "loadgen webhooks",
        "target": base,
        "signed_for": format!("{public}{PATH}"),
        "at": Utc::now(),
        "machine": machine_facts(),
        "options": {"concurrency": args.concurrency, "rate": args.rate, "requests": args.requests, "warmup": args.warmup},
        "requests_ok": latency.count,
        "seconds": elapsed,
        "requests_per_s": latency.count as f64 / elapsed.max(1e-9),
        "latency": latency,
        "errors": errors,
        "error_total": error_total,
        "usage": usage,
        "server_stages": stages,
        "goals": {"p99_under_5ms": latency.count > 0 && latency.p99_ms < 5.0, "zero_errors": error_total == 0},
    });
    println!("--- loadgen webhooks: results ---");
    println!(
        "POST {PATH}: {} ok in {elapsed:.1} s ({:.0}/s), {mode}",
        latency.count,
        latency.count as f64 / elapsed.max(1e-9),
    );
    println!(
        "latency (client side, request to full TwiML): {}",
        latency.line()
    );
    finish_report(&usage, &report, error_total, args.target.report.as_deref())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_forms_pass_the_servers_own_signature_check() {
        let params = incoming_params(
            "AC00000000000000000000000000000000",
            "CA0000000100000000000000000000002a",
            "+13030000042",
            "+14158670000",
        );
        let url = signature::webhook_url("https://cp.example.com/", PATH);
        let (body, sig) = signed_form("tok", &url, &params);
        assert!(signature::verify_request(
            "tok",
            "https://cp.example.com",
            PATH,
            Some(&sig),
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
        )
        .is_ok());
        assert!(signature::verify_request(
            "other",
            "https://cp.example.com",
            PATH,
            Some(&sig),
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
        )
        .is_err());
        let parsed: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let p = control_plane::adapters::twilio::webhook::call_params(&parsed).unwrap();
        assert_eq!(p.to.as_str(), "+14158670000");
    }
}
