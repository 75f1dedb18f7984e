//! The mail worker: sends queued mails (invitations, password resets) with retries, so no
//! request waits on the mail server. Each queued mail counts as background work until it is
//! sent or given up.

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::smtp::{Mail, MailError, MailTransport};
use crate::background::{WorkQueue, WorkReceiver};

const ATTEMPTS: u32 = 6;

/// The queue use cases hand mails to.
pub type MailQueue = WorkQueue<Mail>;

/// Sends what is queued, one mail at a time, retrying transport failures with backoff.
pub async fn run(transport: Arc<dyn MailTransport>, queue: WorkReceiver<Mail>) {
    let mut queue = queue.lock().await;
    while let Some((mail, _job)) = queue.recv().await {
        for attempt in 1..=ATTEMPTS {
            match transport.send(&mail).await {
                Ok(()) => {
                    metrics::counter!("mails_sent_total").increment(1);
                    tracing::info!(to = %mail.to, subject = %mail.subject, "mail sent");
                    break;
                }
                Err(e @ MailError::Invalid(_)) => {
                    metrics::counter!("mails_failed_total").increment(1);
                    tracing::error!(to = %mail.to, error = %e, "mail dropped");
                    break;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(to = %mail.to, attempt, error = %e, "mail send failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
                }
                Err(e) => {
                    metrics::counter!("mails_failed_total").increment(1);
                    tracing::error!(to = %mail.to, error = %e, "mail send failed; giving up");
                }
            }
        }
    }
}
