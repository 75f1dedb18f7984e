//! Docker for runtime tests: the reference image (built when missing), a private window of
//! host ports per test (held through a PostgreSQL advisory lock, so parallel test processes
//! never share one), and removal of every container a test's control planes created.

use std::process::Command;
use std::sync::OnceLock;

use parking_lot::Mutex;
use sqlx::{Connection, PgConnection};

use crate::app::{Builder, TestApp};

pub const IMAGE: &str = "agent-runtime-sim:latest";
/// Health interval of test control planes: "within two cycles" stays short.
pub const HEALTH_INTERVAL_MS: u64 = 400;
const WINDOW: u16 = 20;
const FIRST_PORT: u16 = 20000;
const WINDOWS: i32 = 500;
const LOCK_SPACE: i32 = 731_104;

/// A free TCP port on every interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

/// Runs `docker args…`; returns (success, stdout or, on failure, stderr).
pub fn docker(args: &[&str]) -> (bool, String) {
    match Command::new("docker").args(args).output() {
        Ok(o) => {
            let out = if o.status.success() {
                &o.stdout
            } else {
                &o.stderr
            };
            (
                o.status.success(),
                String::from_utf8_lossy(out).trim().to_string(),
            )
        }
        Err(e) => (false, e.to_string()),
    }
}

fn docker_ok() -> Result<(), String> {
    match Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).to_string()),
        Err(e) => Err(format!("cannot run docker: {e}")),
    }
}

fn ensure_image() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/build-runtime-image.sh"
        );
        let out = Command::new("bash")
            .arg(script)
            .arg("--if-missing")
            .output()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    });
    if let Err(e) = r {
        panic!("the reference runtime image {IMAGE} could not be built: {e}");
    }
}

/// What a runtime test holds: its port window and the control planes to clean up after.
pub struct RuntimeEnv {
    pub first_port: u16,
    pub last_port: u16,
    instances: Mutex<Vec<String>>,
    _lock: PgConnection,
}

impl RuntimeEnv {
    /// Docker, the image and a port window. Without Docker the test fails under CI=true and
    /// is skipped (loudly) elsewhere.
    pub async fn acquire() -> Option<RuntimeEnv> {
        if let Err(e) = docker_ok() {
            if crate::in_ci() {
                panic!("the Docker engine is unreachable (CI=true, so this fails): {e}");
            }
            eprintln!("SKIPPED: the Docker engine is unreachable: {e}");
            return None;
        }
        ensure_image();
        let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
        let mut conn = PgConnection::connect(&url)
            .await
            .expect("connect for the port-window lock");
        let start = (ulid::Ulid::new().random() % WINDOWS as u128) as i32;
        for i in 0..WINDOWS {
            let w = (start + i) % WINDOWS;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                .bind(LOCK_SPACE)
                .bind(w)
                .fetch_one(&mut conn)
                .await
                .expect("advisory lock");
            if got {
                let first_port = FIRST_PORT + w as u16 * WINDOW;
                let env = RuntimeEnv {
                    first_port,
                    last_port: first_port + WINDOW - 1,
                    instances: Mutex::new(Vec::new()),
                    _lock: conn,
                };
                env.remove_leftovers();
                return Some(env);
            }
        }
        panic!("no free host-port window for runtime tests");
    }

    /// Containers of earlier, interrupted runs that still publish ports of this window, and
    /// runtime networks such runs left unused for a while.
    fn remove_leftovers(&self) {
        docker(&[
            "network",
            "prune",
            "-f",
            "--filter",
            "label=io.controlplane.managed=true",
            "--filter",
            "until=30m",
        ]);
        let (_, ids) = docker(&[
            "ps",
            "-aq",
            "--filter",
            "label=io.controlplane.managed=true",
            "--filter",
            &format!("publish={}-{}/tcp", self.first_port, self.last_port),
        ]);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
    }

    /// A control plane that runtimes can reach (listening on every interface, with
    /// RUNTIME_CONTROL_PLANE_URL on the Docker bridge), using this window's ports.
    pub fn configure(&self, builder: Builder) -> Builder {
        self.configure_on(builder, free_port())
    }

    /// As [`RuntimeEnv::configure`], on a given port (a control plane restarted on the port
    /// its runtimes were given).
    pub fn configure_on(&self, builder: Builder, port: u16) -> Builder {
        let (first, last) = (self.first_port, self.last_port);
        builder.config(move |c| {
            c.listen_addr = format!("0.0.0.0:{port}").parse().expect("address");
            c.runtime.runtime_control_plane_url = Some(format!("http://172.17.0.1:{port}"));
            c.runtime.runtime_port_range = format!("{first}-{last}").parse().expect("range");
            c.runtime.runtime_health_interval_ms = HEALTH_INTERVAL_MS;
            c.runtime.runtime_drain_timeout_ms = 20_000;
            c.runtime.runtime_stop_grace_seconds = 2;
            c.runtime.runtime_memory_mb = 64;
            c.runtime.runtime_cpus = 0.5;
        })
    }

    /// Starts a control plane configured for this window ([`RuntimeEnv::configure`]) whose
    /// containers go when the test ends.
    pub async fn spawn(&self, builder: Builder) -> TestApp {
        self.spawn_on(builder, free_port()).await
    }

    /// As [`RuntimeEnv::spawn`], on a given port.
    pub async fn spawn_on(&self, builder: Builder, port: u16) -> TestApp {
        let app = self.configure_on(builder, port).spawn().await;
        self.track(&app.state().runtimes.instance_id);
        app
    }

    /// Remembers a control plane whose containers go when the test ends.
    pub fn track(&self, instance_id: &str) {
        self.instances.lock().push(instance_id.to_string());
    }
}

impl RuntimeEnv {
    fn remove_tracked(&self) -> usize {
        let mut removed = 0;
        for instance in self.instances.lock().iter() {
            let (_, ids) = docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=io.controlplane.instance={instance}"),
            ]);
            for id in ids.split_whitespace() {
                removed += docker(&["rm", "-f", id]).0 as usize;
            }
            // Each establishment's runtime has a network of its own.
            let (_, networks) = docker(&[
                "network",
                "ls",
                "-q",
                "--filter",
                &format!("label=io.controlplane.instance={instance}"),
            ]);
            for id in networks.split_whitespace() {
                docker(&["network", "rm", id]);
            }
        }
        removed
    }
}

impl Drop for RuntimeEnv {
    fn drop(&mut self) {
        self.remove_tracked();
        // A create the worker had sent when the test ended still lands in Docker: sweep again.
        std::thread::sleep(std::time::Duration::from_millis(750));
        self.remove_tracked();
    }
}

/// A variable of a container's environment (e.g. the `CONTROL_PLANE_TOKEN` a runtime was given).
pub fn container_env(container: &str, key: &str) -> Option<String> {
    let (ok, out) = docker(&[
        "inspect",
        "--format",
        "{{range .Config.Env}}{{println .}}{{end}}",
        container,
    ]);
    if !ok {
        return None;
    }
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}
