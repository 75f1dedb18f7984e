//! The application layer: one module per use case. A use case takes the narrow dependencies it
//! needs (the command bus, the read side's pool, a port to Docker, Twilio or mail), gathers the
//! facts a command needs, runs the command on an aggregate (which holds the rules), triggers the
//! worker that carries the side effect out, and answers with a typed result or a typed error.
//! Nothing here knows HTTP: the handlers in `http` parse, authorise, call one use case and map
//! its answer (docs/architecture.md, docs/adr/0008-application-layer.md).

pub mod accounts;
pub mod agents;
pub mod call_callbacks;
pub mod call_streams;
pub mod campaigns;
pub mod dead_letters;
pub mod establishments;
pub mod handoff;
pub mod inbound_call;
pub mod ingestion;
pub mod integration_access;
pub mod integration_credentials;
pub mod integrations;
pub mod invitations;
pub mod leads;
pub mod members;
pub mod messages;
pub mod outbound_call;
pub mod reports;
pub mod runtimes;
pub mod telephony;
pub mod tool_proxy;

use std::fmt;

use crate::store::StoreError;

/// Input a use case refused: which field, and why (the HTTP layer answers 422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for Invalid {}

impl From<aggregates::common::ParseError> for Invalid {
    fn from(e: aggregates::common::ParseError) -> Self {
        Self::new(e.field, e.message)
    }
}

/// A failure of the infrastructure under a use case (the database), never the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum Unexpected {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

impl From<anyhow::Error> for Unexpected {
    fn from(e: anyhow::Error) -> Self {
        Unexpected::Other(format!("{e:#}"))
    }
}

/// `From` the database's, the event store's and other infrastructure errors (`anyhow`) for
/// use-case errors with an `Unexpected(Unexpected)` variant, so that `?` works on them.
macro_rules! unexpected_from {
    ($($error:ty),* $(,)?) => {$(
        impl From<sqlx::Error> for $error {
            fn from(e: sqlx::Error) -> Self {
                Self::Unexpected(e.into())
            }
        }

        impl From<$crate::store::StoreError> for $error {
            fn from(e: $crate::store::StoreError) -> Self {
                Self::Unexpected(e.into())
            }
        }

        impl From<anyhow::Error> for $error {
            fn from(e: anyhow::Error) -> Self {
                Self::Unexpected(e.into())
            }
        }
    )*};
}
pub(crate) use unexpected_from;
