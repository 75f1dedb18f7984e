//! Signed CRM webhooks: the control plane POSTs JSON to the establishment's endpoint with
//! `X-Signature-Timestamp` (Unix seconds) and
//! `X-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`; the receiver recomputes
//! it and rejects old timestamps (replay).

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::destination::{self, DestinationError};
use super::{http_client, send, ProviderAnswer, ProviderError};

pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
pub const SIGNATURE_HEADER: &str = "x-signature";

/// `v1=<hex>` of HMAC-SHA256(secret, `timestamp.body`).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The port: deliveries to an establishment's endpoint.
#[async_trait]
pub trait CrmWebhooks: Send + Sync {
    /// Checks a destination (connect time).
    async fn check_destination(&self, url: &url::Url) -> Result<(), DestinationError>;
    async fn deliver(
        &self,
        endpoint: &str,
        secret: &str,
        payload: &Value,
    ) -> Result<ProviderAnswer, ProviderError>;
}

pub struct CrmClient {
    http: reqwest::Client,
    allowed_hosts: Vec<String>,
}

impl CrmClient {
    pub fn new(timeout: std::time::Duration, allowed_hosts: Vec<String>) -> Self {
        Self {
            http: http_client(timeout),
            allowed_hosts,
        }
    }
}

#[async_trait]
impl CrmWebhooks for CrmClient {
    async fn check_destination(&self, url: &url::Url) -> Result<(), DestinationError> {
        destination::check(url, &self.allowed_hosts).await
    }

    async fn deliver(
        &self,
        endpoint: &str,
        secret: &str,
        payload: &Value,
    ) -> Result<ProviderAnswer, ProviderError> {
        let url = url::Url::parse(endpoint)
            .map_err(|_| ProviderError::new("bad_destination", "the endpoint is not a URL"))?;
        self.check_destination(&url)
            .await
            .map_err(|e| ProviderError::new("destination_refused", e.to_string()))?;
        let body = serde_json::to_vec(payload).expect("JSON values serialise");
        let timestamp = chrono::Utc::now().timestamp();
        send(
            self.http
                .post(url)
                .header("content-type", "application/json")
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, signature(secret, timestamp, &body))
                .body(body),
        )
        .await
    }
}
