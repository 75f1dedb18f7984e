//! E-mail for the tool proxy: the platform's SMTP (`SMTP_URL`, `MAIL_FROM`) or the
//! establishment's own SMTP server (its URL, with credentials, sealed in the integration).

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::ProviderError;

/// One message.
#[derive(Debug, Clone)]
pub struct Email {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// Own SMTP settings of an establishment (from its sealed credentials).
#[derive(Clone)]
pub struct OwnSmtp {
    pub url: String,
    pub from: String,
}

/// The port.
#[async_trait]
pub trait EmailSender: Send + Sync {
    async fn send(&self, own: Option<&OwnSmtp>, email: &Email) -> Result<(), ProviderError>;
}

pub struct SmtpSender {
    platform_url: Option<String>,
    platform_from: String,
    timeout: Duration,
}

impl SmtpSender {
    pub fn new(platform_url: Option<String>, platform_from: String, timeout: Duration) -> Self {
        Self {
            platform_url,
            platform_from,
            timeout,
        }
    }
}

#[async_trait]
impl EmailSender for SmtpSender {
    async fn send(&self, own: Option<&OwnSmtp>, email: &Email) -> Result<(), ProviderError> {
        let (url, from) = match own {
            Some(o) => (o.url.as_str(), o.from.as_str()),
            None => (
                self.platform_url.as_deref().ok_or_else(|| {
                    ProviderError::new("not_configured", "the platform has no SMTP_URL")
                })?,
                self.platform_from.as_str(),
            ),
        };
        let from: Mailbox = from
            .parse()
            .map_err(|e| ProviderError::new("bad_sender", format!("{e}")))?;
        let mut builder = Message::builder().from(from).subject(&email.subject);
        for to in &email.to {
            builder = builder.to(to
                .parse()
                .map_err(|e| ProviderError::new("bad_recipient", format!("{e}")))?);
        }
        let message = match &email.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                html.clone(),
            )),
            None => builder.body(email.text.clone()),
        }
        .map_err(|e| ProviderError::new("bad_message", e.to_string()))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|_| ProviderError::new("not_configured", "the SMTP URL is not usable"))?
            .timeout(Some(self.timeout))
            .build();
        transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| ProviderError::new("smtp", e.to_string()))
    }
}
