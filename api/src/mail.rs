//! Outgoing mail (invitations, password resets) through SMTP with lettre, sent by a worker
//! with retries so no request waits on the mail server. Without `SMTP_URL` mails are logged.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Clone)]
pub struct Mailer {
    tx: mpsc::Sender<Mail>,
}

const QUEUE: usize = 10_000;
const ATTEMPTS: u32 = 6;

impl Mailer {
    /// Starts the mail worker.
    pub fn start(smtp_url: Option<&str>, from: &str) -> anyhow::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Mail>(QUEUE);
        let transport = match smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("SMTP_URL is not usable: {e}"))?
                    .timeout(Some(Duration::from_secs(10)))
                    .build(),
            ),
            None => {
                tracing::warn!("SMTP_URL is not set: mails are logged, not sent");
                None
            }
        };
        let from: lettre::message::Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("MAIL_FROM is not a mailbox: {e}"))?;
        tokio::spawn(async move {
            while let Some(mail) = rx.recv().await {
                let Some(transport) = &transport else {
                    tracing::info!(to = %mail.to, subject = %mail.subject, "mail not sent (no SMTP_URL)");
                    continue;
                };
                let message = match build(&from, &mail) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::error!(to = %mail.to, error = %e, "mail could not be built");
                        continue;
                    }
                };
                for attempt in 1..=ATTEMPTS {
                    match transport.send(message.clone()).await {
                        Ok(_) => {
                            metrics::counter!("mails_sent_total").increment(1);
                            tracing::info!(to = %mail.to, subject = %mail.subject, "mail sent");
                            break;
                        }
                        Err(e) if attempt < ATTEMPTS => {
                            tracing::warn!(to = %mail.to, attempt, error = %e, "mail send failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt)))
                                .await;
                        }
                        Err(e) => {
                            metrics::counter!("mails_failed_total").increment(1);
                            tracing::error!(to = %mail.to, error = %e, "mail send failed; giving up");
                        }
                    }
                }
            }
        });
        Ok(Self { tx })
    }

    /// Queues a mail; never blocks the request.
    pub fn send(&self, mail: Mail) {
        if let Err(e) = self.tx.try_send(mail) {
            tracing::error!(error = %e, "mail queue full; mail dropped");
        }
    }
}

fn build(from: &lettre::message::Mailbox, mail: &Mail) -> anyhow::Result<Message> {
    Ok(Message::builder()
        .from(from.clone())
        .to(mail.to.parse()?)
        .subject(&mail.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())?)
}

pub fn invitation(to: &str, establishment: &str, role: &str, link_base: &str, token: &str) -> Mail {
    Mail {
        to: to.to_string(),
        subject: format!("You are invited to {establishment}"),
        body: format!(
            "You have been invited to join {establishment} as {role}.\n\n\
             Accept the invitation: {link_base}/accept-invite?token={token}\n\n\
             Invitation token: {token}\n\n\
             The invitation expires in 7 days and can be used once.\n"
        ),
    }
}

pub fn password_reset(to: &str, link_base: &str, token: &str) -> Mail {
    Mail {
        to: to.to_string(),
        subject: "Reset your password".to_string(),
        body: format!(
            "Someone asked to reset the password of this account.\n\n\
             Reset it: {link_base}/reset-password?token={token}\n\n\
             Reset token: {token}\n\n\
             The token is valid for one hour and can be used once. If you did not ask, ignore this mail.\n"
        ),
    }
}
