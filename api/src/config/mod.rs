//! Configuration: one documented struct; every field is an environment variable and a
//! same-named `--flag` (docs/operations.md lists them).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

pub mod dialer;
pub mod integrations;
pub mod runtime;

pub use integrations::IntegrationsConfig;
pub use runtime::RuntimeConfig;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// PostgreSQL connection string (required).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Address the HTTP server binds.
    #[arg(
        long,
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen_addr: SocketAddr,

    /// URL at which Twilio and runtimes reach this server; webhook signatures are checked
    /// against it. Default: http:// + LISTEN_ADDR.
    #[arg(long, env = "PUBLIC_BASE_URL", global = true)]
    pub public_base_url: Option<String>,

    /// `development` or `production`. Production refuses to start without JWT_SECRET and
    /// SECRETS_KEY instead of generating throw-away ones.
    #[arg(long, env = "APP_ENV", default_value = "development", global = true)]
    pub app_env: String,

    /// Key for access tokens (HS256).
    #[arg(long, env = "JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Lifetime of an access token, in seconds.
    #[arg(
        long,
        env = "ACCESS_TOKEN_TTL_SECONDS",
        default_value_t = 3600,
        global = true
    )]
    pub access_token_ttl_seconds: u64,

    /// When set and no user exists yet, this user is created as a platform admin at start-up.
    #[arg(long, env = "BOOTSTRAP_ADMIN_EMAIL", global = true)]
    pub bootstrap_admin_email: Option<String>,

    /// Password of the bootstrap admin.
    #[arg(
        long,
        env = "BOOTSTRAP_ADMIN_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub bootstrap_admin_password: Option<String>,

    /// Twilio account used for REST calls and webhook signature checks.
    #[arg(long, env = "TWILIO_ACCOUNT_SID", global = true)]
    pub twilio_account_sid: Option<String>,

    /// Twilio auth token (REST basic auth and webhook signatures).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", global = true, hide_env_values = true)]
    pub twilio_auth_token: Option<String>,

    /// Base of Twilio's REST API (tests point it at a local stand-in).
    #[arg(
        long,
        env = "TWILIO_API_BASE_URL",
        default_value = "https://api.twilio.com",
        global = true
    )]
    pub twilio_api_base_url: String,

    /// Outgoing mail server, e.g. smtp://127.0.0.1:2525 or smtps://user:pass@host. Unset: mails
    /// are logged, not sent.
    #[arg(long, env = "SMTP_URL", global = true, hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Sender address of outgoing mail.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "Control Plane <no-reply@localhost>",
        global = true
    )]
    pub mail_from: String,

    /// Base URL of the admin frontend, used in links inside mails.
    #[arg(long, env = "FRONTEND_BASE_URL", global = true)]
    pub frontend_base_url: Option<String>,

    /// Base64 of 32 bytes; encrypts secrets at rest (integration credentials, runtime env).
    #[arg(long, env = "SECRETS_KEY", global = true, hide_env_values = true)]
    pub secrets_key: Option<String>,

    /// Docker engine that runs agent runtimes (default: the local socket).
    #[arg(long, env = "DOCKER_HOST", global = true)]
    pub docker_host: Option<String>,

    /// `pretty` or `json` (default: pretty on a terminal, else json).
    #[arg(long, env = "LOG_FORMAT", global = true)]
    pub log_format: Option<String>,

    /// Projectors poll the log this often for writes from other processes (milliseconds).
    #[arg(long, env = "PROJECTOR_POLL_MS", default_value_t = 100, global = true)]
    pub projector_poll_ms: u64,

    /// Tasks writing gathered appends (group commit); 0 writes every append on its own.
    #[arg(long, env = "APPEND_FLUSHERS", default_value_t = 2, global = true)]
    pub append_flushers: usize,

    /// Maximum connections in the PostgreSQL pool.
    #[arg(
        long,
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 32,
        global = true
    )]
    pub database_max_connections: u32,

    /// How often the reaper looks for calls that never got a terminal status (seconds).
    #[arg(
        long,
        env = "CALL_REAPER_INTERVAL_SECONDS",
        default_value_t = 30,
        global = true
    )]
    pub call_reaper_interval_seconds: u64,

    /// Grace after a call's maximum duration before the reaper ends it (seconds).
    #[arg(
        long,
        env = "CALL_REAPER_GRACE_SECONDS",
        default_value_t = 120,
        global = true
    )]
    pub call_reaper_grace_seconds: u32,

    /// A call's sentiment is recomputed at most this often while customer segments arrive
    /// (milliseconds), and once more when it ends.
    #[arg(
        long,
        env = "SENTIMENT_INTERVAL_MS",
        default_value_t = 3000,
        global = true
    )]
    pub sentiment_interval_ms: u64,

    /// How often the analysis worker looks for ended calls whose summary or sentiment a stop
    /// left undone (seconds; it also looks at start-up).
    #[arg(
        long,
        env = "ANALYSIS_RESCAN_INTERVAL_SECONDS",
        default_value_t = 60,
        global = true
    )]
    pub analysis_rescan_interval_seconds: u64,

    /// How long a dashboard answer (`GET /dashboard/kpis`) is served from this replica's
    /// in-process cache (milliseconds; 0: never cached). Each replica holds its own cache, so
    /// an answer is never staler than this.
    #[arg(
        long,
        env = "DASHBOARD_CACHE_MS",
        default_value_t = 5000,
        global = true
    )]
    pub dashboard_cache_ms: u64,

    /// Base URL of an OpenAI-compatible API for call summaries (e.g. https://api.openai.com/v1).
    /// Unset: the embedded extractive summariser.
    #[arg(long, env = "SUMMARY_LLM_BASE_URL", global = true)]
    pub summary_llm_base_url: Option<String>,

    /// Model for LLM summaries.
    #[arg(
        long,
        env = "SUMMARY_LLM_MODEL",
        default_value = "gpt-4.1-mini",
        global = true
    )]
    pub summary_llm_model: String,

    /// API key for LLM summaries.
    #[arg(
        long,
        env = "SUMMARY_LLM_API_KEY",
        global = true,
        hide_env_values = true
    )]
    pub summary_llm_api_key: Option<String>,

    /// Timeout of an LLM summary request (milliseconds); the extractive summary is used after it.
    #[arg(
        long,
        env = "SUMMARY_LLM_TIMEOUT_MS",
        default_value_t = 6000,
        global = true
    )]
    pub summary_llm_timeout_ms: u64,

    /// Maximum size of a JSON request body, in bytes.
    #[arg(
        long,
        env = "MAX_BODY_BYTES",
        default_value_t = 1_048_576,
        global = true
    )]
    pub max_body_bytes: usize,

    /// Runtime management (RUNTIME_*; see docs/runtimes.md).
    #[command(flatten)]
    pub runtime: RuntimeConfig,

    /// Integrations and the tool proxy (GOOGLE_*, WHATSAPP_*, INTEGRATION_*; see
    /// docs/integrations.md).
    #[command(flatten)]
    pub integrations: IntegrationsConfig,

    /// Lead imports and the campaign dialer (LEAD_IMPORT_*, TWILIO_MAX_CPS, DIALER_*,
    /// CAMPAIGN_*; see docs/campaigns.md).
    #[command(flatten)]
    pub dialer: dialer::DialerConfig,
}

impl Config {
    pub fn is_production(&self) -> bool {
        self.app_env.eq_ignore_ascii_case("production")
    }

    pub fn public_base_url(&self) -> String {
        self.public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen_addr))
            .trim_end_matches('/')
            .to_string()
    }

    pub fn frontend_base_url(&self) -> String {
        self.frontend_base_url
            .clone()
            .unwrap_or_else(|| self.public_base_url())
            .trim_end_matches('/')
            .to_string()
    }

    pub fn projector_poll_interval(&self) -> Duration {
        Duration::from_millis(self.projector_poll_ms.max(5))
    }

    /// A configuration for tests and tools: every optional service off.
    pub fn for_database(database_url: &str) -> Self {
        Self {
            database_url: Some(database_url.to_string()),
            listen_addr: "127.0.0.1:0".parse().expect("literal address"),
            public_base_url: None,
            app_env: "development".into(),
            jwt_secret: Some("test-secret-test-secret-test-secret".into()),
            access_token_ttl_seconds: 3600,
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            twilio_account_sid: None,
            twilio_auth_token: None,
            twilio_api_base_url: "https://api.twilio.com".into(),
            smtp_url: None,
            mail_from: "Control Plane <no-reply@localhost>".into(),
            frontend_base_url: None,
            secrets_key: None,
            docker_host: None,
            log_format: None,
            projector_poll_ms: 100,
            append_flushers: 2,
            call_reaper_interval_seconds: 30,
            sentiment_interval_ms: 10000,
            analysis_rescan_interval_seconds: 60,
            dashboard_cache_ms: 5000,
            summary_llm_base_url: None,
            summary_llm_model: "gpt-4.1-mini".into(),
            summary_llm_api_key: None,
            summary_llm_timeout_ms: 6000,
            call_reaper_grace_seconds: 120,
            database_max_connections: 16,
            max_body_bytes: 1_048_576,
            runtime: Default::default(),
            integrations: Default::default(),
            dialer: Default::default(),
        }
    }
}
