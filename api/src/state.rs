//! The application state, built once at start-up: the pool, the command bus, the projectors,
//! each use case with its narrow dependencies, the workers' handles, and what the request
//! extractors need. Handlers and extractors take only their part (`State<Arc<UseCase>>`,
//! `FromRef`), never the whole.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::FromRef;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use projections::calls::LiveCalls;
use projections::identity::PrincipalsVersion;
use projections::routing::RoutingIndex;
use projections::{Hub, Projection, ProjectorConfig, Projectors};
use sqlx::PgPool;

use crate::adapters::smtp::{self, Mail, MailTransport};
use crate::adapters::twilio::client::{TwilioCalls, TwilioClient};
use crate::application::accounts::Accounts;
use crate::application::agents::Agents;
use crate::application::call_callbacks::CallCallbacks;
use crate::application::call_streams::CallStreams;
use crate::application::campaigns::Campaigns;
use crate::application::dead_letters::DeadLetters;
use crate::application::establishments::Establishments;
use crate::application::handoff::Handoffs;
use crate::application::inbound_call::InboundCalls;
use crate::application::ingestion::Ingestion;
use crate::application::integration_access::IntegrationAccess;
use crate::application::integrations::Integrations;
use crate::application::invitations::Invitations;
use crate::application::leads::Leads;
use crate::application::members::Members;
use crate::application::outbound_call::OutboundCalls;
use crate::application::reports::Reports;
use crate::application::runtimes::{RuntimeManagement, Runtimes};
use crate::application::telephony::TelephonyPolicies;
use crate::application::tool_proxy::ToolProxy;
use crate::auth::principals::PrincipalCache;
use crate::auth::throttle::{Limits, Throttle};
use crate::auth::tokens::JwtKeys;
use crate::background::{Background, WorkQueue, WorkReceiver};
use crate::config::Config;
use crate::http::principal::Sessions;
use crate::http::recording_links::RecordingLinks;
use crate::http::runtime_principal::RuntimeTokens;
use crate::http::twilio_form::TwilioWebhooks;
use crate::store::{CommandBus, EventStore};
use crate::workers::analysis::{AnalysisConfig, AnalysisConsumer, AnalysisWorker, DirtyCalls};
use crate::workers::dialer::Dialer;
use crate::workers::handoff::HandoffWorker;
use crate::workers::placer::Placer;
use crate::workers::reaper::Reaper;

/// Shared state of the server and its workers (cheap to clone: every part is shared).
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub bus: Arc<CommandBus>,
    pub hub: Hub,
    pub projectors: Arc<Projectors>,
    pub background: Background,
    pub metrics: PrometheusHandle,
    /// The phone-number routing model in memory (kept current by the `routing` projector).
    pub routing: Arc<RoutingIndex>,
    /// The live calls in memory (kept current by the `calls` projector): active calls and
    /// live transcripts are read from here.
    pub live_calls: Arc<LiveCalls>,
    pub jwt: Arc<JwtKeys>,
    pub throttle: Arc<Throttle>,
    pub mailer: WorkQueue<Mail>,
    // What the extractors need.
    pub sessions: Arc<Sessions>,
    pub runtime_tokens: Arc<RuntimeTokens>,
    pub twilio_webhooks: Arc<TwilioWebhooks>,
    pub recording_links: Arc<RecordingLinks>,
    // Use cases.
    pub accounts: Arc<Accounts>,
    pub invitations: Arc<Invitations>,
    pub establishments: Arc<Establishments>,
    pub members: Arc<Members>,
    pub agents: Arc<Agents>,
    pub telephony: Arc<TelephonyPolicies>,
    pub inbound_calls: Arc<InboundCalls>,
    pub call_callbacks: Arc<CallCallbacks>,
    pub outbound_calls: Arc<OutboundCalls>,
    pub handoffs: Arc<Handoffs>,
    pub ingestion: Arc<Ingestion>,
    pub runtime_management: Arc<RuntimeManagement>,
    pub runtimes: Arc<Runtimes>,
    pub integrations: Arc<Integrations>,
    pub reports: Arc<Reports>,
    pub tool_proxy: Arc<ToolProxy>,
    pub dead_letters: Arc<DeadLetters>,
    pub leads: Arc<Leads>,
    pub campaigns: Arc<Campaigns>,
    /// The workers, started by `server::start`.
    pub workers: Arc<Workers>,
}

/// Each worker with its queue (the receiving ends are shared so a restarted worker resumes).
pub struct Workers {
    pub placer: Arc<Placer>,
    pub placer_queue: WorkReceiver<String>,
    pub handoff: Arc<HandoffWorker>,
    pub handoff_queue: WorkReceiver<String>,
    pub reaper: Arc<Reaper>,
    pub analysis: Arc<AnalysisWorker>,
    pub analysis_queue: DirtyCalls,
    pub mail_transport: Arc<dyn MailTransport>,
    pub mail_queue: WorkReceiver<Mail>,
    pub runtime: Arc<RuntimeManagement>,
    pub dialer: Arc<Dialer>,
    pub dialer_queue: WorkReceiver<()>,
}

macro_rules! from_ref {
    ($($field:ident: $t:ty),* $(,)?) => {
        $(impl FromRef<AppState> for $t {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        })*
    };
}

from_ref!(
    pool: PgPool,
    live_calls: Arc<LiveCalls>,
    config: Arc<Config>,
    reports: Arc<Reports>,
    sessions: Arc<Sessions>,
    runtime_tokens: Arc<RuntimeTokens>,
    twilio_webhooks: Arc<TwilioWebhooks>,
    recording_links: Arc<RecordingLinks>,
    accounts: Arc<Accounts>,
    invitations: Arc<Invitations>,
    establishments: Arc<Establishments>,
    members: Arc<Members>,
    agents: Arc<Agents>,
    telephony: Arc<TelephonyPolicies>,
    inbound_calls: Arc<InboundCalls>,
    call_callbacks: Arc<CallCallbacks>,
    outbound_calls: Arc<OutboundCalls>,
    handoffs: Arc<Handoffs>,
    ingestion: Arc<Ingestion>,
    runtime_management: Arc<RuntimeManagement>,
    integrations: Arc<Integrations>,
    tool_proxy: Arc<ToolProxy>,
    dead_letters: Arc<DeadLetters>,
    leads: Arc<Leads>,
    campaigns: Arc<Campaigns>,
);

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

/// Every projection this server maintains (the routing one feeding a detached index; for
/// tools such as `projections rebuild`).
pub fn projections() -> Vec<Arc<dyn Projection>> {
    projections_feeding(Arc::default(), Arc::default(), Arc::default())
}

/// Every projection, with the routing projection keeping `routing` current.
pub fn projections_feeding(
    routing: Arc<RoutingIndex>,
    live_calls: Arc<LiveCalls>,
    principals: Arc<PrincipalsVersion>,
) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(projections::identity::IdentityProjection { principals }),
        Arc::new(projections::agents::AgentsProjection),
        Arc::new(projections::routing::RoutingProjection::new(routing)),
        Arc::new(projections::runtimes::RuntimesProjection),
        Arc::new(projections::calls::CallsProjection::feeding(live_calls)),
        Arc::new(projections::integrations::IntegrationsProjection),
        Arc::new(projections::leads::LeadsProjection),
        Arc::new(projections::campaigns::CampaignsProjection),
        Arc::new(projections::reports::ReportsProjection),
    ]
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

impl AppState {
    /// Connects, migrates and builds everything (no listener, no worker started).
    pub async fn build(config: Config) -> anyhow::Result<AppState> {
        let pool = crate::db::connect(&config).await?;
        crate::db::migrate(&pool).await?;
        let hub = Hub::default();
        let mut store = EventStore::new(pool.clone(), hub.clone());
        if config.append_flushers > 0 {
            store = store.with_group_commit(config.append_flushers);
        }
        let bus = Arc::new(CommandBus::new(store));
        let background = Background::default();
        let public_base_url = config.public_base_url();

        let (mailer, mail_queue) = WorkQueue::channel(&background);
        let mail_transport: Arc<dyn MailTransport> = Arc::from(smtp::transport(
            config.smtp_url.as_deref(),
            &config.mail_from,
        )?);

        let routing = Arc::new(RoutingIndex::default());
        let (analysis_consumer, analysis_queue) = AnalysisConsumer::new(&background);
        let live_calls = Arc::new(LiveCalls::default());
        let principal_cache = Arc::new(PrincipalCache::new(Arc::default()));
        let mut running = projections_feeding(
            routing.clone(),
            live_calls.clone(),
            principal_cache.version.clone(),
        );
        running.push(analysis_consumer.clone());
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
        let jwt = Arc::new(JwtKeys::new(&jwt_key));
        let throttle = Arc::new(Throttle::new(pool.clone(), Limits::default()));
        let twilio: Option<Arc<dyn TwilioCalls>> = TwilioClient::from_config(&config)
            .map_err(|e| anyhow::anyhow!("Twilio configuration: {e}"))?
            .map(|c| Arc::new(c) as Arc<dyn TwilioCalls>);
        let streams = Arc::new(CallStreams::new(bus.clone()));
        let runtimes = Arc::new(Runtimes::new(&config, &pool).await?);

        let runtime_management = Arc::new(RuntimeManagement {
            bus: bus.clone(),
            pool: pool.clone(),
            runtimes: runtimes.clone(),
        });
        let (placer_queue_tx, placer_queue) = WorkQueue::channel(&background);
        let (handoff_queue_tx, handoff_queue) = WorkQueue::channel(&background);
        let (dialer_wake, dialer_queue) = WorkQueue::channel(&background);
        let outbound_calls = Arc::new(OutboundCalls {
            bus: bus.clone(),
            pool: pool.clone(),
            placer: placer_queue_tx,
            twilio_configured: twilio.is_some(),
        });
        let workers = Arc::new(Workers {
            dialer: Arc::new(Dialer::new(
                pool.clone(),
                bus.clone(),
                outbound_calls.clone(),
                config.dialer.clone(),
                background.clone(),
                dialer_wake,
            )),
            dialer_queue,
            placer: Arc::new(Placer {
                streams: streams.clone(),
                pool: pool.clone(),
                twilio: twilio.clone(),
                public_base_url: public_base_url.clone(),
                background: background.clone(),
                placing: Default::default(),
                startup: parking_lot::Mutex::new(Some(background.job())),
            }),
            placer_queue,
            handoff: Arc::new(HandoffWorker {
                bus: bus.clone(),
                pool: pool.clone(),
                twilio: twilio.clone(),
                background: background.clone(),
                running: Default::default(),
                startup: parking_lot::Mutex::new(Some(background.job())),
            }),
            handoff_queue,
            reaper: Arc::new(Reaper {
                bus: bus.clone(),
                pool: pool.clone(),
                twilio: twilio.clone(),
                every: Duration::from_secs(config.call_reaper_interval_seconds.max(1)),
                grace_seconds: config.call_reaper_grace_seconds,
            }),
            analysis: Arc::new(AnalysisWorker {
                bus: bus.clone(),
                pool: pool.clone(),
                consumer: analysis_consumer,
                config: AnalysisConfig::from_config(&config),
                http: reqwest::Client::new(),
            }),
            analysis_queue,
            mail_transport,
            mail_queue,
            runtime: runtime_management.clone(),
        });

        let (integrations, tool_proxy) = integration_use_cases(&config, &bus, &pool)?;

        Ok(AppState {
            integrations,
            reports: Arc::new(Reports::new(
                pool.clone(),
                Duration::from_millis(config.dashboard_cache_ms),
            )),
            tool_proxy,
            sessions: Arc::new(Sessions {
                jwt: jwt.clone(),
                pool: pool.clone(),
                cache: principal_cache.clone(),
            }),
            runtime_tokens: Arc::new(RuntimeTokens::new(pool.clone())),
            twilio_webhooks: Arc::new(TwilioWebhooks {
                auth_token: config.twilio_auth_token.clone(),
                public_base_url: public_base_url.clone(),
            }),
            recording_links: Arc::new(RecordingLinks::new(&jwt_key, &public_base_url)),
            accounts: Arc::new(Accounts {
                bus: bus.clone(),
                principals: principal_cache.clone(),
                pool: pool.clone(),
                jwt: jwt.clone(),
                throttle: throttle.clone(),
                mailer: mailer.clone(),
                background: background.clone(),
                access_token_ttl_seconds: config.access_token_ttl_seconds,
                frontend_base_url: config.frontend_base_url(),
            }),
            invitations: Arc::new(Invitations {
                bus: bus.clone(),
                pool: pool.clone(),
                mailer: mailer.clone(),
                frontend_base_url: config.frontend_base_url(),
            }),
            establishments: Arc::new(Establishments {
                bus: bus.clone(),
                pool: pool.clone(),
            }),
            members: Arc::new(Members { bus: bus.clone() }),
            agents: Arc::new(Agents {
                bus: bus.clone(),
                pool: pool.clone(),
            }),
            telephony: Arc::new(TelephonyPolicies {
                bus: bus.clone(),
                pool: pool.clone(),
            }),
            inbound_calls: Arc::new(InboundCalls {
                routing: routing.clone(),
                pool: pool.clone(),
                streams: streams.clone(),
            }),
            call_callbacks: Arc::new(CallCallbacks {
                routing: routing.clone(),
                streams: streams.clone(),
            }),
            outbound_calls,
            leads: Arc::new(Leads {
                bus: bus.clone(),
                pool: pool.clone(),
                background: background.clone(),
                importing: Default::default(),
            }),
            campaigns: Arc::new(Campaigns {
                bus: bus.clone(),
                pool: pool.clone(),
            }),
            handoffs: Arc::new(Handoffs {
                bus: bus.clone(),
                pool: pool.clone(),
                queue: handoff_queue_tx,
            }),
            ingestion: Arc::new(Ingestion {
                streams: streams.clone(),
            }),
            runtime_management,
            runtimes,
            dead_letters: Arc::new(DeadLetters {
                pool: pool.clone(),
                projectors: projectors.clone(),
            }),
            workers,
            jwt,
            throttle,
            mailer,
            metrics: metrics_handle(),
            background,
            routing,
            live_calls,
            projectors,
            hub,
            bus,
            pool,
            config: Arc::new(config),
        })
    }
}

/// The integration use cases and the tool proxy with their adapters (Google, WhatsApp, CRM
/// webhooks, SMTP) and the credential vault.
fn integration_use_cases(
    config: &Config,
    bus: &Arc<CommandBus>,
    pool: &PgPool,
) -> anyhow::Result<(Arc<Integrations>, Arc<ToolProxy>)> {
    use crate::adapters::integrations::{crm, email, google, whatsapp};
    let c = &config.integrations;
    let vault = Arc::new(crate::secrets::Vault::new(
        pool.clone(),
        crate::secrets::Keyring::from_config(config)?,
    ));
    let google = Arc::new(google::GoogleClient::from_config(config));
    let crm: Arc<dyn crm::CrmWebhooks> = Arc::new(crm::CrmClient::new(
        c.timeout(),
        c.integration_allowed_private_hosts.clone(),
    ));
    let access = Arc::new(IntegrationAccess {
        bus: bus.clone(),
        pool: pool.clone(),
        vault: vault.clone(),
        oauth: google.clone(),
        refresh_margin_seconds: c.token_refresh_margin_seconds as i64,
        refreshing: Default::default(),
    });
    let integrations = Arc::new(Integrations {
        bus: bus.clone(),
        pool: pool.clone(),
        vault,
        oauth: google.clone(),
        crm: crm.clone(),
        state_ttl: Duration::from_secs(c.oauth_state_ttl_seconds.max(30)),
    });
    let proxy = Arc::new(ToolProxy {
        bus: bus.clone(),
        pool: pool.clone(),
        access,
        calendar: google,
        whatsapp: Arc::new(whatsapp::WhatsappClient::from_config(config)),
        email: Arc::new(email::SmtpSender::new(
            config.smtp_url.clone(),
            config.mail_from.clone(),
            c.timeout(),
        )),
        crm,
        wait_for_first: c.timeout() + Duration::from_secs(5),
        inflight: Default::default(),
    });
    Ok((integrations, proxy))
}
