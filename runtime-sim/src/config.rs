//! Configuration from the environment: the runtime contract's variables, the simulator's
//! fault switches, and how simulated calls play and report (`SIM_*`).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// `RUNTIME_ID`
    pub runtime_id: String,
    /// `ESTABLISHMENT_ID`
    pub establishment_id: String,
    /// `CONTROL_PLANE_URL`: where events and tool calls go (an IP address: no DNS here).
    pub control_plane_url: String,
    /// `CONTROL_PLANE_TOKEN`: bearer token for the control plane.
    pub control_plane_token: String,
    /// `PORT` (default 8080).
    pub port: u16,
    /// `SIM_STARTUP_DELAY_MS`: sleep this long before listening (a slow start).
    pub startup_delay: Duration,
    /// `SIM_UNREADY`: readiness issues, separated by `;` (unready from the start).
    pub unready: Vec<String>,
    /// `SIM_CRASH_AFTER_MS`: exit after this long.
    pub crash_after: Option<Duration>,
    /// `SIM_CRASH_EXIT_CODE` (default 1).
    pub crash_exit_code: i32,
    /// `SIM_CHECK_CONTROL_PLANE=true`: ready only once `GET /runtime/whoami` on the control
    /// plane accepts our token and names us.
    pub check_control_plane: bool,
    /// How simulated calls play.
    pub calls: CallDefaults,
    /// How events reach the control plane.
    pub outbox: OutboxConfig,
}

/// When a call whose stream is still open ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// When Twilio stops the stream (`stop` message or the socket closes); after the script the
    /// agent stays on the line.
    Stream,
    /// When the script ends (the agent hangs up and closes the stream), or earlier if the
    /// stream stops.
    Script,
}

#[derive(Debug, Clone)]
pub struct CallDefaults {
    /// `SIM_SEGMENTS` (default 12): transcript segments per call.
    pub segments: usize,
    /// `SIM_PACE_MS` (default 2500): average time per segment (speech plus the pause before
    /// it); 0 plays the whole script at once.
    pub pace: Duration,
    /// `SIM_HANGUP` = `stream` (default) or `script`: when a media-stream call ends.
    pub hangup: Hangup,
}

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// `SIM_OUTBOX_WORKERS` (default 4): requests in flight at once (each carries the next
    /// event of up to `batch` different calls).
    pub workers: usize,
    /// `SIM_OUTBOX_BATCH` (default 100, at most 500): envelopes per request.
    pub batch: usize,
    /// `SIM_RETRY_BASE_MS` (default 100): first retry delay, doubled per failure.
    pub retry_base: Duration,
    /// `SIM_RETRY_MAX_MS` (default 5000): cap of the retry delay.
    pub retry_max: Duration,
    /// `SIM_HTTP_TIMEOUT_MS` (default 10000): one request to the control plane.
    pub http_timeout: Duration,
}

/// Upper bounds of per-call settings (also for `POST /sim/calls`).
pub const MAX_SEGMENTS: usize = 10_000;
pub const MAX_PACE: Duration = Duration::from_secs(60);

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number(name: &str, max: u64) -> Result<Option<u64>, String> {
    var(name)
        .map(|v| match v.trim().parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!("{name} must be a number from 0 to {max}")),
        })
        .transpose()
}

fn millis(name: &str) -> Result<Option<Duration>, String> {
    var(name)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{name} must be a number of milliseconds"))
        })
        .transpose()
}

impl Config {
    pub fn from_env() -> Result<Self, String> {
        Ok(Self {
            runtime_id: var("RUNTIME_ID").unwrap_or_else(|| "rt_local".into()),
            establishment_id: var("ESTABLISHMENT_ID").unwrap_or_else(|| "est_local".into()),
            control_plane_url: var("CONTROL_PLANE_URL")
                .unwrap_or_else(|| "http://127.0.0.1:8080".into())
                .trim_end_matches('/')
                .to_string(),
            control_plane_token: var("CONTROL_PLANE_TOKEN").unwrap_or_default(),
            port: var("PORT")
                .map(|p| p.trim().parse().map_err(|_| "PORT must be a port number"))
                .transpose()?
                .unwrap_or(8080),
            startup_delay: millis("SIM_STARTUP_DELAY_MS")?.unwrap_or_default(),
            unready: var("SIM_UNREADY")
                .map(|v| {
                    v.split(';')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            crash_after: millis("SIM_CRASH_AFTER_MS")?,
            crash_exit_code: var("SIM_CRASH_EXIT_CODE")
                .map(|c| {
                    c.trim()
                        .parse()
                        .map_err(|_| "SIM_CRASH_EXIT_CODE must be a number")
                })
                .transpose()?
                .unwrap_or(1),
            check_control_plane: var("SIM_CHECK_CONTROL_PLANE")
                .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes")),
            calls: CallDefaults {
                segments: number("SIM_SEGMENTS", MAX_SEGMENTS as u64)?.unwrap_or(12) as usize,
                pace: Duration::from_millis(
                    number("SIM_PACE_MS", MAX_PACE.as_millis() as u64)?.unwrap_or(2500),
                ),
                hangup: match var("SIM_HANGUP").as_deref().map(str::trim) {
                    None | Some("stream") => Hangup::Stream,
                    Some("script") => Hangup::Script,
                    Some(_) => return Err("SIM_HANGUP must be `stream` or `script`".into()),
                },
            },
            outbox: OutboxConfig {
                workers: number("SIM_OUTBOX_WORKERS", 64)?.unwrap_or(4).max(1) as usize,
                batch: number("SIM_OUTBOX_BATCH", 500)?.unwrap_or(100).max(1) as usize,
                retry_base: Duration::from_millis(
                    number("SIM_RETRY_BASE_MS", 60_000)?.unwrap_or(100).max(1),
                ),
                retry_max: Duration::from_millis(
                    number("SIM_RETRY_MAX_MS", 600_000)?.unwrap_or(5000).max(1),
                ),
                http_timeout: Duration::from_millis(
                    number("SIM_HTTP_TIMEOUT_MS", 600_000)?
                        .unwrap_or(10_000)
                        .max(100),
                ),
            },
        })
    }
}

#[cfg(test)]
impl Config {
    /// A runtime reporting to `control_plane_url`, with fast retries.
    pub fn for_test(control_plane_url: &str) -> Self {
        Self {
            runtime_id: "rt_test".into(),
            establishment_id: "est_test".into(),
            control_plane_url: control_plane_url.into(),
            control_plane_token: "token".into(),
            port: 0,
            startup_delay: Duration::ZERO,
            unready: Vec::new(),
            crash_after: None,
            crash_exit_code: 1,
            check_control_plane: false,
            calls: CallDefaults {
                segments: 6,
                pace: Duration::ZERO,
                hangup: Hangup::Script,
            },
            outbox: OutboxConfig {
                workers: 2,
                batch: 10,
                retry_base: Duration::from_millis(5),
                retry_max: Duration::from_millis(20),
                http_timeout: Duration::from_secs(5),
            },
        }
    }
}
