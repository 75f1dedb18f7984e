//! Adapters of the services integrations act on: Google (OAuth 2.0 and Calendar), the WhatsApp
//! Cloud API, signed CRM webhooks and SMTP, each behind a port the tool proxy and the
//! integration use cases call. Every HTTP request goes through one client shape: a timeout
//! (default 8 s), no redirects, a capped response size; no request is retried here (the
//! proxy's own record makes retries safe, not the transport).

pub mod crm;
pub mod destination;
pub mod email;
pub mod google;
pub mod whatsapp;

use std::time::Duration;

use serde_json::Value;

/// Largest provider answer read (bytes); more is refused as `response_too_large`.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Why a provider call failed. Carries no credential.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderError {
    /// `timeout`, `network`, `response_too_large`, `http_<status>`, `invalid_grant`, …
    pub code: String,
    pub message: String,
    /// The provider's HTTP status, when it answered.
    pub status: Option<u16>,
    /// The provider's error body (bounded), when it answered with one.
    pub body: Value,
}

impl ProviderError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            status: None,
            body: Value::Null,
        }
    }

    pub fn is_unauthorized(&self) -> bool {
        self.status == Some(401)
    }
}

/// A successful provider answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderAnswer {
    pub status: u16,
    pub body: Value,
}

/// The HTTP client every integration adapter uses: timeout, no redirects, rustls.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("control-plane-tool-proxy")
        .build()
        .expect("static client configuration")
}

/// Sends a request and reads at most [`MAX_RESPONSE_BYTES`] of the answer; a non-2xx answer
/// becomes a `ProviderError` with the status and the (bounded) body.
pub async fn send(req: reqwest::RequestBuilder) -> Result<ProviderAnswer, ProviderError> {
    let mut res = req.send().await.map_err(transport_error)?;
    let status = res.status().as_u16();
    let mut buf = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(transport_error)? {
        if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ProviderError {
                status: Some(status),
                ..ProviderError::new(
                    "response_too_large",
                    format!("the provider answered more than {MAX_RESPONSE_BYTES} bytes"),
                )
            });
        }
        buf.extend_from_slice(&chunk);
    }
    let body: Value = if buf.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&buf).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&buf).chars().take(500).collect())
        })
    };
    if (200..300).contains(&status) {
        Ok(ProviderAnswer { status, body })
    } else {
        Err(ProviderError {
            code: format!("http_{status}"),
            message: format!("the provider answered HTTP {status}"),
            status: Some(status),
            body,
        })
    }
}

fn transport_error(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::new("timeout", "the provider did not answer in time")
    } else if e.is_redirect() || e.status().is_some_and(|s| s.is_redirection()) {
        ProviderError::new("redirect_refused", "the provider answered with a redirect")
    } else {
        // Without the URL: it may carry a host the log should not need.
        ProviderError::new("network", format!("{}", e.without_url()))
    }
}
