//! Outgoing mail through SMTP (lettre), behind the `MailTransport` port; without `SMTP_URL`
//! mails are only logged. The mail worker (`workers::mailer`) queues and retries.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The mail itself is unusable (bad address): retrying cannot help.
    #[error("mail cannot be built: {0}")]
    Invalid(String),
    #[error("SMTP: {0}")]
    Transport(String),
}

/// The port: sends one mail.
#[async_trait]
pub trait MailTransport: Send + Sync {
    async fn send(&self, mail: &Mail) -> Result<(), MailError>;
}

/// SMTP at `SMTP_URL` (e.g. `smtp://127.0.0.1:2525`, `smtps://user:pass@host`).
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    pub fn new(url: &str, from: &str) -> anyhow::Result<Self> {
        Ok(Self {
            transport: AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map_err(|e| anyhow::anyhow!("SMTP_URL is not usable: {e}"))?
                .timeout(Some(Duration::from_secs(10)))
                .build(),
            from: parse_from(from)?,
        })
    }
}

fn parse_from(from: &str) -> anyhow::Result<Mailbox> {
    from.parse()
        .map_err(|e| anyhow::anyhow!("MAIL_FROM is not a mailbox: {e}"))
}

#[async_trait]
impl MailTransport for Smtp {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(mail
                .to
                .parse()
                .map_err(|e| MailError::Invalid(format!("{e}")))?)
            .subject(&mail.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| MailError::Invalid(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Transport(e.to_string()))
    }
}

/// No SMTP server configured: the mail is logged (recipient and subject only).
pub struct LogOnly;

#[async_trait]
impl MailTransport for LogOnly {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        tracing::info!(to = %mail.to, subject = %mail.subject, "mail not sent (no SMTP_URL)");
        Ok(())
    }
}

/// The transport of the configuration: SMTP when `SMTP_URL` is set, else logging.
pub fn transport(smtp_url: Option<&str>, from: &str) -> anyhow::Result<Box<dyn MailTransport>> {
    match smtp_url {
        Some(url) => Ok(Box::new(Smtp::new(url, from)?)),
        None => {
            parse_from(from)?;
            tracing::warn!("SMTP_URL is not set: mails are logged, not sent");
            Ok(Box::new(LogOnly))
        }
    }
}
