//! Configuration from the environment: the runtime contract's variables and the simulator's
//! fault switches (`SIM_*`).

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
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
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
        })
    }
}
