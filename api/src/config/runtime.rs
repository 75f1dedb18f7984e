//! Configuration of runtime management (flattened into `Config`; every field is an
//! environment variable and a same-named `--flag`).

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;

/// An inclusive range of host ports, written `FIRST-LAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn ports(&self) -> RangeInclusive<u16> {
        self.first..=self.last
    }

    pub fn len(&self) -> usize {
        (self.last - self.first) as usize + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("{s:?} is not a port range like 18080-18999");
        let (a, b) = s.trim().split_once('-').ok_or_else(err)?;
        let first: u16 = a.trim().parse().map_err(|_| err())?;
        let last: u16 = b.trim().parse().map_err(|_| err())?;
        if first == 0 || last < first {
            return Err(err());
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Images runtimes may be provisioned from: exact references, or prefixes ending in `*`
/// (`voice-agent-runtime:*`), written comma-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageAllowList {
    entries: Vec<String>,
}

/// The default allow-list: the reference runtime and the product's runtime image.
pub const DEFAULT_IMAGE_ALLOWLIST: &str = "agent-runtime-sim:latest,voice-agent-runtime:*";

impl ImageAllowList {
    /// Whether `image` is allowed: equal to an entry, or starting with an entry's prefix.
    pub fn allows(&self, image: &str) -> bool {
        self.entries.iter().any(|e| match e.strip_suffix('*') {
            Some(prefix) => image.starts_with(prefix),
            None => image == e,
        })
    }

    pub fn entries(&self) -> &[String] {
        &self.entries
    }
}

impl FromStr for ImageAllowList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entries: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        if entries.is_empty() {
            return Err("RUNTIME_IMAGE_ALLOWLIST names no image".into());
        }
        for e in &entries {
            let body = e.strip_suffix('*').unwrap_or(e);
            if body.is_empty() {
                return Err(format!(
                    "{e:?} would allow every image; name a registry or repository before the *"
                ));
            }
            if body.contains('*')
                || !body
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
            {
                return Err(format!(
                    "{e:?} is not an image reference or a prefix ending in *"
                ));
            }
        }
        Ok(Self { entries })
    }
}

impl fmt::Display for ImageAllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.entries.join(","))
    }
}

#[derive(Debug, Clone, Args)]
pub struct RuntimeConfig {
    /// Host ports runtime containers are published on (127.0.0.1 only), `FIRST-LAST`.
    #[arg(
        long,
        env = "RUNTIME_PORT_RANGE",
        default_value = "18080-18999",
        global = true
    )]
    pub runtime_port_range: PortRange,

    /// URL at which runtime containers reach this server (their CONTROL_PLANE_URL), e.g.
    /// http://172.17.0.1:8080 for the default Docker bridge. Default: PUBLIC_BASE_URL.
    #[arg(long, env = "RUNTIME_CONTROL_PLANE_URL", global = true)]
    pub runtime_control_plane_url: Option<String>,

    /// Public media-stream URL of a runtime when provisioning gives none; `{establishment_id}`,
    /// `{runtime_id}` and `{host_port}` are replaced. E.g.
    /// wss://rt-{establishment_id}.example.com/media-stream
    #[arg(long, env = "RUNTIME_MEDIA_STREAM_URL_TEMPLATE", global = true)]
    pub runtime_media_stream_url_template: Option<String>,

    /// How often the health refresher polls every runtime and reconciles with Docker (ms).
    #[arg(
        long,
        env = "RUNTIME_HEALTH_INTERVAL_MS",
        default_value_t = 5000,
        global = true
    )]
    pub runtime_health_interval_ms: u64,

    /// How long `stop` of a draining runtime waits for its active calls to end (ms).
    #[arg(
        long,
        env = "RUNTIME_DRAIN_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub runtime_drain_timeout_ms: u64,

    /// Seconds Docker waits after SIGTERM before killing a stopping container.
    #[arg(
        long,
        env = "RUNTIME_STOP_GRACE_SECONDS",
        default_value_t = 10,
        global = true
    )]
    pub runtime_stop_grace_seconds: u64,

    /// Port the runtime listens on inside its container (its PORT).
    #[arg(
        long,
        env = "RUNTIME_CONTAINER_PORT",
        default_value_t = 8080,
        global = true
    )]
    pub runtime_container_port: u16,

    /// Memory limit of a runtime container, in MiB.
    #[arg(long, env = "RUNTIME_MEMORY_MB", default_value_t = 512, global = true)]
    pub runtime_memory_mb: u64,

    /// CPU limit of a runtime container, in CPUs (e.g. 0.5).
    #[arg(long, env = "RUNTIME_CPUS", default_value_t = 1.0, global = true)]
    pub runtime_cpus: f64,

    /// Most processes (threads included) a runtime container may run.
    #[arg(long, env = "RUNTIME_PIDS_LIMIT", default_value_t = 256, global = true)]
    pub runtime_pids_limit: i64,

    /// Mount runtime containers' root filesystem read-only (a 64 MiB tmpfs serves /tmp).
    #[arg(
        long,
        env = "RUNTIME_READ_ONLY_ROOTFS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub runtime_read_only_rootfs: bool,

    /// Images runtimes may be provisioned from, comma-separated: exact references, or prefixes
    /// ending in `*`. Any other image is refused (422 image_not_allowed).
    #[arg(
        long,
        env = "RUNTIME_IMAGE_ALLOWLIST",
        default_value = DEFAULT_IMAGE_ALLOWLIST,
        global = true
    )]
    pub runtime_image_allowlist: ImageAllowList,

    /// Docker restart policy of runtime containers: no, always, unless-stopped,
    /// on-failure[:max-retries].
    #[arg(
        long,
        env = "RUNTIME_RESTART_POLICY",
        default_value = "unless-stopped",
        global = true
    )]
    pub runtime_restart_policy: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            runtime_port_range: PortRange {
                first: 18080,
                last: 18999,
            },
            runtime_control_plane_url: None,
            runtime_media_stream_url_template: None,
            runtime_health_interval_ms: 5000,
            runtime_drain_timeout_ms: 30_000,
            runtime_stop_grace_seconds: 10,
            runtime_container_port: 8080,
            runtime_memory_mb: 512,
            runtime_cpus: 1.0,
            runtime_pids_limit: 256,
            runtime_read_only_rootfs: true,
            runtime_image_allowlist: DEFAULT_IMAGE_ALLOWLIST
                .parse()
                .expect("the default allow-list parses"),
            runtime_restart_policy: "unless-stopped".into(),
        }
    }
}

impl RuntimeConfig {
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.runtime_health_interval_ms.max(50))
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.runtime_drain_timeout_ms)
    }

    pub fn stop_grace(&self) -> Duration {
        Duration::from_secs(self.runtime_stop_grace_seconds)
    }

    /// The restart policy as (name, maximum retries); checked at start-up.
    pub fn restart_policy(&self) -> anyhow::Result<(String, Option<i64>)> {
        let p = self.runtime_restart_policy.trim();
        let (name, retries) = match p.split_once(':') {
            Some((n, r)) => (
                n,
                Some(r.parse::<i64>().map_err(|_| {
                    anyhow::anyhow!("RUNTIME_RESTART_POLICY: {p:?} has a bad retry count")
                })?),
            ),
            None => (p, None),
        };
        match name {
            "no" | "always" | "unless-stopped" if retries.is_none() => {}
            "on-failure" => {}
            _ => anyhow::bail!(
                "RUNTIME_RESTART_POLICY must be no, always, unless-stopped or on-failure[:N], not {p:?}"
            ),
        }
        Ok((name.to_string(), retries))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.restart_policy()?;
        if !(self.runtime_cpus > 0.0 && self.runtime_cpus <= 1024.0) {
            anyhow::bail!("RUNTIME_CPUS must be a positive number of CPUs");
        }
        if self.runtime_memory_mb < 6 {
            anyhow::bail!("RUNTIME_MEMORY_MB must be at least 6 (Docker's minimum)");
        }
        if self.runtime_pids_limit < 8 {
            anyhow::bail!("RUNTIME_PIDS_LIMIT must be at least 8");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_reject_nonsense() {
        let r: PortRange = "18080-18999".parse().unwrap();
        assert_eq!((r.first, r.last, r.len()), (18080, 18999, 920));
        for bad in ["", "18080", "2-1", "0-10", "a-b", "1-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn image_allow_lists_match_exact_references_and_prefixes() {
        let l: ImageAllowList = DEFAULT_IMAGE_ALLOWLIST.parse().unwrap();
        assert!(l.allows("agent-runtime-sim:latest"));
        assert!(l.allows("voice-agent-runtime:1.4.2"));
        assert!(!l.allows("agent-runtime-sim:other"));
        assert!(!l.allows("voice-agent-runtime-evil:latest"));
        assert!(!l.allows("alpine:latest"));
        let l: ImageAllowList = " registry.local:5000/runtimes/* , x:1 ".parse().unwrap();
        assert!(l.allows("registry.local:5000/runtimes/a:b"));
        assert!(l.allows("x:1"));
        assert!(!l.allows("registry.local:5000/other/a:b"));
        for bad in ["", " , ", "*", "a*b:*", "bad image"] {
            assert!(bad.parse::<ImageAllowList>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn restart_policies_are_checked() {
        let mut c = RuntimeConfig::default();
        assert_eq!(c.restart_policy().unwrap(), ("unless-stopped".into(), None));
        c.runtime_restart_policy = "on-failure:5".into();
        assert_eq!(c.restart_policy().unwrap(), ("on-failure".into(), Some(5)));
        c.runtime_restart_policy = "sometimes".into();
        assert!(c.validate().is_err());
    }
}
