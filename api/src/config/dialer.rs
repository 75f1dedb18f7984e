//! Configuration of lead imports and the campaign dialer (flattened into `Config`; every field
//! is an environment variable and a same-named `--flag`; docs/campaigns.md).

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DialerConfig {
    /// Largest CSV accepted by `POST /leads/import` (bytes).
    #[arg(long, env = "LEAD_IMPORT_MAX_BYTES", default_value_t = 50 * 1024 * 1024, global = true)]
    pub lead_import_max_bytes: usize,

    /// Outbound calls per second the Twilio account allows (Twilio's default is 1), shared by
    /// every campaign.
    #[arg(long, env = "TWILIO_MAX_CPS", default_value_t = 1.0, global = true)]
    pub twilio_max_cps: f64,

    /// Most simultaneous calls of one establishment (inbound and outbound together).
    #[arg(
        long,
        env = "ESTABLISHMENT_MAX_CONCURRENT_CALLS",
        default_value_t = 20,
        global = true
    )]
    pub establishment_max_concurrent_calls: u32,

    /// Lines of each establishment kept free for inbound calls: campaigns dial only while
    /// fewer than `ESTABLISHMENT_MAX_CONCURRENT_CALLS - DIALER_INBOUND_RESERVE` calls are up.
    #[arg(
        long,
        env = "DIALER_INBOUND_RESERVE",
        default_value_t = 2,
        global = true
    )]
    pub dialer_inbound_reserve: u32,

    /// How often the dialer looks at running campaigns (milliseconds).
    #[arg(long, env = "DIALER_TICK_MS", default_value_t = 1000, global = true)]
    pub dialer_tick_ms: u64,

    /// Abandoned calls over calls a person answered, per campaign over 30 days, above which
    /// the campaign pauses (0.03: the FCC's 3%).
    #[arg(
        long,
        env = "CAMPAIGN_ABANDONMENT_CEILING",
        default_value_t = 0.03,
        global = true
    )]
    pub campaign_abandonment_ceiling: f64,

    /// Finished attempts the circuit breaker looks at (the most recent).
    #[arg(
        long,
        env = "CAMPAIGN_BREAKER_WINDOW",
        default_value_t = 20,
        global = true
    )]
    pub campaign_breaker_window: usize,

    /// Share of failed attempts among them that pauses the campaign.
    #[arg(
        long,
        env = "CAMPAIGN_BREAKER_THRESHOLD",
        default_value_t = 0.5,
        global = true
    )]
    pub campaign_breaker_threshold: f64,

    /// Fewest finished attempts before the breaker judges.
    #[arg(
        long,
        env = "CAMPAIGN_BREAKER_MIN_CALLS",
        default_value_t = 10,
        global = true
    )]
    pub campaign_breaker_min_calls: usize,
}

impl Default for DialerConfig {
    fn default() -> Self {
        Self {
            lead_import_max_bytes: 50 * 1024 * 1024,
            twilio_max_cps: 1.0,
            establishment_max_concurrent_calls: 20,
            dialer_inbound_reserve: 2,
            dialer_tick_ms: 1000,
            campaign_abandonment_ceiling: 0.03,
            campaign_breaker_window: 20,
            campaign_breaker_threshold: 0.5,
            campaign_breaker_min_calls: 10,
        }
    }
}
