//! Use cases of dead letters (events a projector set aside; `projections::dead_letters`):
//! listing them, and retrying one through the projector that set it aside. A retry that
//! succeeds resolves the row (its stream is no longer degraded); one that fails again counts
//! the attempt and says why.

use std::sync::Arc;

use projections::dead_letters::{self, DeadLetterRow, Filter};
use projections::Projectors;
use sqlx::PgPool;

use super::Unexpected;

/// Most rows one list returns.
pub const MAX_LIST: i64 = 500;

/// The dead-letter context: the read side and this process's projectors.
pub struct DeadLetters {
    pub pool: PgPool,
    pub projectors: Arc<Projectors>,
}

/// Why a retry did not resolve a dead letter.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("dead letter not found")]
    NotFound,
    #[error("dead letter {0} is already resolved")]
    AlreadyResolved(i64),
    /// The projector that set it aside does not run in this version.
    #[error("projector {0:?} does not run here")]
    UnknownProjector(String),
    /// The event is not in the log (it never disappears; a restored backup could lose it).
    #[error("event {0} is not in the log")]
    EventMissing(i64),
    /// Applying the event failed again; the row counts the attempt.
    #[error("the event still cannot be applied: {error}")]
    StillFailing {
        error: String,
        dead_letter: Box<DeadLetterRow>,
    },
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

impl From<sqlx::Error> for RetryError {
    fn from(e: sqlx::Error) -> Self {
        RetryError::Unexpected(e.into())
    }
}

impl DeadLetters {
    /// Dead letters, newest failure first (`limit` is clamped to 1..=500).
    pub async fn list(
        &self,
        filter: &Filter,
        limit: i64,
    ) -> Result<Vec<DeadLetterRow>, Unexpected> {
        Ok(dead_letters::list(&self.pool, filter, limit.clamp(1, MAX_LIST)).await?)
    }

    /// Applies the dead letter's event again through its projector; resolves it on success.
    pub async fn retry(&self, id: i64) -> Result<DeadLetterRow, RetryError> {
        let row = dead_letters::by_id(&self.pool, id)
            .await?
            .ok_or(RetryError::NotFound)?;
        if row.resolved {
            return Err(RetryError::AlreadyResolved(id));
        }
        let projector = self
            .projectors
            .get(&row.projector)
            .ok_or_else(|| RetryError::UnknownProjector(row.projector.clone()))?;
        let event = dead_letters::event(&self.pool, row.event_position)
            .await
            .map_err(|e| Unexpected::Other(format!("{e:#}")))?
            .ok_or(RetryError::EventMissing(row.event_position))?;
        match projector.reapply(&event, id).await {
            Ok(()) => {
                tracing::info!(dead_letter = id, projector = %row.projector, position = row.event_position,
                    "dead letter retried and resolved");
                metrics::counter!("projector_dead_letters_resolved_total", "projector" => row.projector.clone())
                    .increment(1);
                Ok(dead_letters::by_id(&self.pool, id)
                    .await?
                    .ok_or(RetryError::NotFound)?)
            }
            Err(e) if projections::runner::is_transient(&e) => {
                Err(Unexpected::Other(format!("retry of dead letter {id}: {e:#}")).into())
            }
            Err(e) => {
                let error = format!("{e:#}");
                dead_letters::failed_again(&self.pool, id, &error).await?;
                let dead_letter = dead_letters::by_id(&self.pool, id)
                    .await?
                    .ok_or(RetryError::NotFound)?;
                Err(RetryError::StillFailing {
                    error,
                    dead_letter: Box::new(dead_letter),
                })
            }
        }
    }
}
