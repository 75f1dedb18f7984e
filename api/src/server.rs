//! Start-up and shutdown: builds the state, creates the bootstrap admin, starts the projectors
//! and every worker (each supervised), and serves HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use aggregates::user::{User, UserCommand};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::background::supervise;
use crate::config::Config;
use crate::state::AppState;
use crate::store::{CommandContext, ExecOptions, IdempotencyClaim};

/// How often the routing index checks for routing changes projected by other processes.
const ROUTING_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// A running server.
pub struct App {
    pub state: AppState,
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl App {
    /// Stops the background tasks at once (for tests that drop a server).
    pub fn abort(&self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Stops the server and its background tasks.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Waits until the system is quiet: every projector has applied every event committed so
    /// far, and no background work (a placement, a handoff, a mail, a call waiting for its
    /// analysis …) is in flight; repeated until a round commits nothing new, since background
    /// work appends events and events make background work. Fails after `timeout`.
    pub async fn settle(&self, timeout: Duration) -> anyhow::Result<()> {
        let state = &self.state;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let before = state.hub.commits();
            state.projectors.catch_up().await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !state.background.idle(left).await {
                anyhow::bail!(
                    "background work still in flight after {timeout:?} ({} jobs)",
                    state.background.in_flight()
                );
            }
            state.projectors.catch_up().await?;
            if state.hub.commits() == before && state.background.in_flight() == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the system kept changing for {timeout:?}");
            }
        }
    }
}

/// Starts everything `serve` runs and binds the listener; returns once it accepts requests.
pub async fn start(config: Config) -> anyhow::Result<App> {
    let listen = config.listen_addr;
    let state = AppState::build(config).await?;
    let mut tasks = state.projectors.spawn();
    tasks.push(tokio::spawn(
        state.sessions.cache.clone().listen(state.pool.clone()),
    ));
    state
        .routing
        .reload(&state.pool)
        .await
        .context("cannot load the routing model")?;
    tasks.push(tokio::spawn(
        state
            .routing
            .clone()
            .run_refresher(state.pool.clone(), ROUTING_RELOAD_EVERY),
    ));
    let w = state.workers.clone();
    tasks.push(supervise("placer", {
        let (worker, queue) = (w.placer.clone(), w.placer_queue.clone());
        move || worker.clone().run(queue.clone())
    }));
    tasks.push(supervise("handoff", {
        let (worker, queue) = (w.handoff.clone(), w.handoff_queue.clone());
        move || worker.clone().run(queue.clone())
    }));
    tasks.push(supervise("reaper", {
        let worker = w.reaper.clone();
        move || worker.clone().run()
    }));
    tasks.push(supervise("analysis", {
        let (worker, queue) = (w.analysis.clone(), w.analysis_queue.clone());
        move || crate::workers::analysis::run(worker.clone(), queue.clone())
    }));
    tasks.push(supervise("mailer", {
        let (transport, queue) = (w.mail_transport.clone(), w.mail_queue.clone());
        move || crate::workers::mailer::run(transport.clone(), queue.clone())
    }));
    tasks.push(supervise("dialer", {
        let (worker, queue) = (w.dialer.clone(), w.dialer_queue.clone());
        move || worker.clone().run(queue.clone())
    }));
    if let Err(e) = state.leads.fail_interrupted().await {
        tracing::warn!(error = %e, "cannot close interrupted lead imports");
    }
    bootstrap_admin(&state).await?;
    tasks.push(supervise("runtimes", {
        let worker = w.runtime.clone();
        move || crate::workers::runtime_ops::run(worker.clone())
    }));
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let (shutdown, mut stop) = watch::channel(false);
    let router = crate::http::router(state.clone());
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "server stopped");
        }
    }));
    tracing::info!(%addr, public_base_url = %state.config.public_base_url(), "control plane listening");
    Ok(App {
        state,
        addr,
        shutdown,
        tasks,
    })
}

/// `control-plane serve`: runs until SIGINT/SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let app = start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    app.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Creates the bootstrap platform admin when configured and no user exists yet. Safe when
/// several processes start at once: the registration is idempotent on a fixed key.
pub async fn bootstrap_admin(state: &AppState) -> anyhow::Result<()> {
    let (Some(email), Some(password)) = (
        state.config.bootstrap_admin_email.as_deref(),
        state.config.bootstrap_admin_password.as_deref(),
    ) else {
        return Ok(());
    };
    if state
        .bus
        .store()
        .any_claim(aggregates::user::EMAIL_CLAIM)
        .await?
    {
        return Ok(());
    }
    let email: aggregates::common::Email = email
        .parse()
        .map_err(|e| anyhow::anyhow!("BOOTSTRAP_ADMIN_EMAIL: {e}"))?;
    crate::auth::password::check_policy(password)
        .map_err(|e| anyhow::anyhow!("BOOTSTRAP_ADMIN_PASSWORD: {e}"))?;
    let user_id = crate::ids::new_id("usr");
    let outcome = state
        .bus
        .execute::<User>(
            &user_id,
            UserCommand::Register {
                user_id: user_id.clone(),
                email: email.clone(),
                display_name: "Admin".into(),
                password_hash: Some(crate::auth::password::hash(password).await?),
                platform_admin: true,
            },
            &CommandContext::system("bootstrap"),
            ExecOptions::idempotent(IdempotencyClaim::keyed("bootstrap-admin")),
        )
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap admin: {e}"))?;
    state.bus.visible(&outcome).await;
    tracing::info!(email = %email, "bootstrap platform admin created");
    Ok(())
}
