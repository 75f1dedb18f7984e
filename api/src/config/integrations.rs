//! Configuration of integrations and the tool proxy (flattened into `Config`; every field is
//! an environment variable and a same-named `--flag`; docs/integrations.md).

use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct IntegrationsConfig {
    /// Earlier master keys (comma-separated base64 of 32 bytes each): data keys wrapped by them
    /// still open while `control-plane secrets rotate` re-wraps them under SECRETS_KEY.
    #[arg(
        long,
        env = "SECRETS_KEY_PREVIOUS",
        global = true,
        hide_env_values = true
    )]
    pub secrets_key_previous: Option<String>,

    /// Google OAuth client id (Google Calendar integrations).
    #[arg(long, env = "GOOGLE_CLIENT_ID", global = true)]
    pub google_client_id: Option<String>,

    /// Google OAuth client secret.
    #[arg(
        long,
        env = "GOOGLE_CLIENT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub google_client_secret: Option<String>,

    /// Google's authorisation endpoint (the browser is sent there).
    #[arg(
        long,
        env = "GOOGLE_OAUTH_AUTH_URL",
        default_value = "https://accounts.google.com/o/oauth2/v2/auth",
        global = true
    )]
    pub google_oauth_auth_url: String,

    /// Google's token endpoint (code exchange and refresh).
    #[arg(
        long,
        env = "GOOGLE_OAUTH_TOKEN_URL",
        default_value = "https://oauth2.googleapis.com/token",
        global = true
    )]
    pub google_oauth_token_url: String,

    /// Base of the Google Calendar API.
    #[arg(
        long,
        env = "GOOGLE_CALENDAR_API_BASE_URL",
        default_value = "https://www.googleapis.com",
        global = true
    )]
    pub google_calendar_api_base_url: String,

    /// Base of the WhatsApp Cloud API (Graph API).
    #[arg(
        long,
        env = "WHATSAPP_API_BASE_URL",
        default_value = "https://graph.facebook.com",
        global = true
    )]
    pub whatsapp_api_base_url: String,

    /// Graph API version of WhatsApp requests (the path is `/v{version}/…`).
    #[arg(
        long,
        env = "WHATSAPP_API_VERSION",
        default_value = "21.0",
        global = true
    )]
    pub whatsapp_api_version: String,

    /// Timeout of one provider request made by the tool proxy (milliseconds).
    #[arg(
        long,
        env = "INTEGRATION_TIMEOUT_MS",
        default_value_t = 8000,
        global = true
    )]
    pub integration_timeout_ms: u64,

    /// Hosts a CRM endpoint may name although they resolve to private, loopback or link-local
    /// addresses (comma-separated host names or IP addresses; plain http is allowed for them).
    #[arg(
        long,
        env = "INTEGRATION_ALLOWED_PRIVATE_HOSTS",
        value_delimiter = ',',
        global = true
    )]
    pub integration_allowed_private_hosts: Vec<String>,

    /// How long an OAuth authorisation may take between connect and callback (seconds).
    #[arg(
        long,
        env = "OAUTH_STATE_TTL_SECONDS",
        default_value_t = 900,
        global = true
    )]
    pub oauth_state_ttl_seconds: u64,

    /// An access token is refreshed this long before it expires (seconds).
    #[arg(
        long,
        env = "TOKEN_REFRESH_MARGIN_SECONDS",
        default_value_t = 60,
        global = true
    )]
    pub token_refresh_margin_seconds: u64,
}

impl Default for IntegrationsConfig {
    fn default() -> Self {
        Self {
            secrets_key_previous: None,
            google_client_id: None,
            google_client_secret: None,
            google_oauth_auth_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            google_oauth_token_url: "https://oauth2.googleapis.com/token".into(),
            google_calendar_api_base_url: "https://www.googleapis.com".into(),
            whatsapp_api_base_url: "https://graph.facebook.com".into(),
            whatsapp_api_version: "21.0".into(),
            integration_timeout_ms: 8000,
            integration_allowed_private_hosts: Vec::new(),
            oauth_state_ttl_seconds: 900,
            token_refresh_margin_seconds: 60,
        }
    }
}

impl IntegrationsConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.integration_timeout_ms.clamp(100, 60_000))
    }
}
