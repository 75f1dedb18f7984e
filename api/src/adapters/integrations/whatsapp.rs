//! WhatsApp Cloud API: `POST {base}/v{version}/{phone-number-id}/messages` with the
//! integration's access token.

use async_trait::async_trait;
use serde_json::Value;

use super::{http_client, send, ProviderAnswer, ProviderError};
use crate::config::Config;

/// The Cloud API's error code for free-form text outside the 24-hour customer-service
/// window ("re-engagement message").
pub const OUTSIDE_WINDOW_CODE: i64 = 131047;

/// The port.
#[async_trait]
pub trait WhatsappApi: Send + Sync {
    async fn send_message(
        &self,
        access_token: &str,
        phone_number_id: &str,
        message: &Value,
    ) -> Result<ProviderAnswer, ProviderError>;
}

pub struct WhatsappClient {
    http: reqwest::Client,
    base: String,
    version: String,
}

impl WhatsappClient {
    pub fn from_config(config: &Config) -> Self {
        let c = &config.integrations;
        Self {
            http: http_client(c.timeout()),
            base: c.whatsapp_api_base_url.trim_end_matches('/').to_string(),
            version: c.whatsapp_api_version.trim_start_matches('v').to_string(),
        }
    }
}

#[async_trait]
impl WhatsappApi for WhatsappClient {
    async fn send_message(
        &self,
        access_token: &str,
        phone_number_id: &str,
        message: &Value,
    ) -> Result<ProviderAnswer, ProviderError> {
        let mut url = url::Url::parse(&self.base)
            .map_err(|e| ProviderError::new("not_configured", e.to_string()))?;
        url.path_segments_mut()
            .map_err(|_| ProviderError::new("not_configured", "bad WhatsApp base URL"))?
            .extend([&format!("v{}", self.version), phone_number_id, "messages"]);
        send(self.http.post(url).bearer_auth(access_token).json(message)).await
    }
}

/// Whether a failed send was refused for being outside the customer-service window.
pub fn outside_window(e: &ProviderError) -> bool {
    e.body
        .pointer("/error/code")
        .and_then(Value::as_i64)
        .is_some_and(|c| c == OUTSIDE_WINDOW_CODE)
}
