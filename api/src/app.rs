//! Wiring: the shared state, start-up (migrations, bootstrap admin, projectors, workers) and
//! the HTTP server.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aggregates::user::{User, UserCommand};
use anyhow::Context;
use cqrs_es::Aggregate;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use projections::routing::RoutingIndex;
use projections::{Hub, Projection, ProjectorConfig, Projectors};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::throttle::LoginThrottle;
use crate::auth::tokens::JwtKeys;
use crate::config::Config;
use crate::mail::Mailer;
use crate::store::{
    CommandBus, CommandContext, EventStore, ExecOptions, IdempotencyClaim, Outcome,
};

pub struct Inner {
    pub config: Config,
    pub pool: PgPool,
    pub bus: CommandBus,
    pub hub: Hub,
    pub jwt: JwtKeys,
    pub throttle: LoginThrottle,
    pub mailer: Mailer,
    pub metrics: PrometheusHandle,
    pub projectors: Arc<Projectors>,
    /// The phone-number routing model in memory (kept current by the `routing` projector).
    pub routing: Arc<RoutingIndex>,
    /// CallSid → call id.
    pub calls: crate::calls::CallDirectory,
    /// Twilio's REST API, when an account is configured.
    pub twilio: Option<Arc<crate::twilio::client::TwilioClient>>,
    /// Queue of outbound calls to place.
    pub placer: crate::calls::workers::Placer,
    placer_rx: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// Key of short-lived signed links (recordings).
    pub link_key: Vec<u8>,
    analysis: parking_lot::Mutex<
        Option<(
            Arc<crate::calls::analysis::AnalysisConsumer>,
            tokio::sync::mpsc::UnboundedReceiver<String>,
        )>,
    >,
    pub runtimes: crate::runtimes::Runtimes,
}

/// Shared state of the server and its workers.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// How long a write waits for the read models to show it before answering.
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);

impl AppState {
    /// Waits until the projectors reading `A`'s events have applied this outcome, so the
    /// caller's next read sees its own write.
    pub async fn visible<A: Aggregate>(&self, outcome: &Outcome<A>) {
        if let Some(commit) = outcome.commit() {
            if !self
                .hub
                .wait_for(A::TYPE, commit.checkpoint(), READ_YOUR_WRITES)
                .await
            {
                tracing::warn!(aggregate = A::TYPE, "read models did not catch up in time");
            }
        }
    }
}

/// Every projection this server maintains (the routing one feeding a detached index; for
/// tools such as `projections rebuild`).
pub fn projections() -> Vec<Arc<dyn Projection>> {
    projections_feeding(Arc::default())
}

/// Every projection, with the routing projection keeping `routing` current.
pub fn projections_feeding(routing: Arc<RoutingIndex>) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(projections::identity::IdentityProjection),
        Arc::new(projections::agents::AgentsProjection),
        Arc::new(projections::routing::RoutingProjection::new(routing)),
        Arc::new(projections::runtimes::RuntimesProjection),
        Arc::new(projections::calls::CallsProjection),
    ]
}

/// How often the routing index checks for routing changes projected by other processes.
const ROUTING_RELOAD_EVERY: Duration = Duration::from_secs(1);

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let url = config.database_url.as_deref().context(
        "DATABASE_URL is required (scripts/run.sh starts a local PostgreSQL when it is unset)",
    )?;
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .context("cannot connect to PostgreSQL")
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("migrations failed")
}

/// The process-wide Prometheus recorder (installed once, shared by every app in a process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    match &config.jwt_secret {
        Some(s) if s.len() >= 32 => Ok(s.as_bytes().to_vec()),
        Some(_) => anyhow::bail!("JWT_SECRET must be at least 32 characters"),
        None if config.is_production() => anyhow::bail!("JWT_SECRET is required in production"),
        None => {
            tracing::warn!("JWT_SECRET is not set: using a random development key; every token dies with this process");
            Ok(crate::auth::tokens::new_secret().into_bytes())
        }
    }
}

/// A running server (or the state without a listener, for tools).
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
}

/// Builds the state: pool, migrations, store, mailer (no listener, no workers).
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let pool = connect(&config).await?;
    migrate(&pool).await?;
    let hub = Hub::default();
    let store = EventStore::new(pool.clone(), hub.clone());
    let mailer = Mailer::start(config.smtp_url.as_deref(), &config.mail_from)?;
    let runtimes = crate::runtimes::Runtimes::new(&config, &pool).await?;
    let routing = Arc::new(RoutingIndex::default());
    let (analysis, analysis_rx) = crate::calls::analysis::AnalysisConsumer::new();
    let mut running = projections_feeding(routing.clone());
    running.push(analysis.clone());
    let projectors = Arc::new(Projectors::new(
        running,
        pool.clone(),
        hub.clone(),
        ProjectorConfig {
            poll_interval: config.projector_poll_interval(),
            ..ProjectorConfig::default()
        },
    ));
    let jwt_key = jwt_secret(&config)?;
    let twilio = crate::twilio::client::TwilioClient::from_config(&config)
        .map_err(|e| anyhow::anyhow!("Twilio configuration: {e}"))?
        .map(Arc::new);
    let (placer, placer_rx) = crate::calls::workers::Placer::channel();
    let link_key = {
        use sha2::Digest;
        sha2::Sha256::new()
            .chain_update(b"signed-links")
            .chain_update(&jwt_key)
            .finalize()
            .to_vec()
    };
    Ok(AppState(Arc::new(Inner {
        jwt: JwtKeys::new(&jwt_key),
        calls: Default::default(),
        twilio,
        placer,
        placer_rx: parking_lot::Mutex::new(Some(placer_rx)),
        analysis: parking_lot::Mutex::new(Some((analysis, analysis_rx))),
        link_key,
        bus: CommandBus::new(store),
        throttle: LoginThrottle::default(),
        metrics: metrics_handle(),
        mailer,
        pool,
        hub,
        projectors,
        routing,
        runtimes,
        config,
    })))
}

/// Starts everything `serve` runs and binds the listener; returns once it accepts requests.
pub async fn start(config: Config) -> anyhow::Result<App> {
    let listen = config.listen_addr;
    let state = build_state(config).await?;
    let mut tasks = state.projectors.spawn();
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
    if let Some(rx) = state.placer_rx.lock().take() {
        tasks.push(tokio::spawn(crate::calls::workers::run_placer(
            state.clone(),
            rx,
        )));
    }
    if let Some((consumer, rx)) = state.analysis.lock().take() {
        tasks.push(tokio::spawn(crate::calls::analysis::run(
            state.clone(),
            consumer,
            rx,
            state.config.analysis(),
        )));
    }
    tasks.push(tokio::spawn(crate::calls::workers::run_reaper(
        state.clone(),
        Duration::from_secs(state.config.call_reaper_interval_seconds.max(1)),
        state.config.call_reaper_grace_seconds,
    )));
    bootstrap_admin(&state).await?;
    tasks.push(crate::runtimes::worker::spawn(state.clone()));
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
    let any_user: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM unique_claims WHERE scope = $1)")
            .bind(aggregates::user::EMAIL_CLAIM)
            .fetch_one(&state.pool)
            .await?;
    if any_user {
        return Ok(());
    }
    let email: aggregates::common::Email = email
        .parse()
        .map_err(|e| anyhow::anyhow!("BOOTSTRAP_ADMIN_EMAIL: {e}"))?;
    crate::auth::password::check_policy(password)
        .map_err(|e| anyhow::anyhow!("BOOTSTRAP_ADMIN_PASSWORD: {}", e.message()))?;
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
            ExecOptions::idempotent(IdempotencyClaim {
                key: "bootstrap-admin".into(),
                request_hash: "bootstrap-admin".into(),
                response: serde_json::Value::Null,
            }),
        )
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap admin: {e}"))?;
    state.visible(&outcome).await;
    tracing::info!(email = %email, "bootstrap platform admin created");
    Ok(())
}
