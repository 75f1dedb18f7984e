//! `runtime-sim`: the reference agent runtime. It implements the runtime contract
//! (`GET /readyz`, `GET /info`, `POST /drain`, `POST /resume`, the media-stream WebSocket) from
//! the environment the control plane gives it, simulates calls that report to
//! `POST /ingest/call-events` (Appendix B) through a retrying outbox, and has fault switches
//! and a call driver (`/admin/*`, `/sim/*`) for tests.

mod calls;
mod clock;
mod config;
mod control;
mod cp_client;
mod faults;
mod media_stream;
mod outbox;
mod script;
mod sim_api;
mod state;
mod tool_proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use config::Config;
use state::SimState;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runtime-sim: bad configuration: {e}");
            std::process::exit(2);
        }
    };
    tracing::info!(runtime_id = %config.runtime_id, establishment_id = %config.establishment_id,
        port = config.port, control_plane = %config.control_plane_url, "runtime-sim starting");
    if !config.startup_delay.is_zero() {
        tracing::info!(
            delay_ms = config.startup_delay.as_millis() as u64,
            "slow start (fault switch)"
        );
        tokio::time::sleep(config.startup_delay).await;
    }
    let state = Arc::new(SimState::new(config));
    state.outbox.spawn();
    faults::spawn_env_faults(&state);
    if state.config.check_control_plane {
        tokio::spawn(cp_client::check_control_plane(state.clone()));
    }
    let addr = SocketAddr::from(([0, 0, 0, 0], state.config.port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("runtime-sim: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    tracing::info!(%addr, "runtime-sim listening");
    let app = control::router(state.clone())
        .merge(media_stream::router(state.clone()))
        .merge(faults::router(state.clone()))
        .merge(sim_api::router(state.clone()));
    let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal());
    if let Err(e) = serve.await {
        eprintln!("runtime-sim: server error: {e}");
        std::process::exit(1);
    }
    // Events still queued go out if the control plane takes them before the deadline.
    if !state.outbox.flush(Duration::from_millis(2500)).await {
        tracing::warn!(
            pending = state.outbox.pending(),
            "stopping with undelivered events"
        );
    }
    tracing::info!("runtime-sim stopped");
}

/// As PID 1 in a container SIGTERM has no default action: handle it, or `docker stop` waits
/// for its whole grace period.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    // Let in-flight requests finish and the outbox drain, but never hang the stop.
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        std::process::exit(0);
    });
}
