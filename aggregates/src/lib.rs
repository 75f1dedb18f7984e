//! Pure domain of the control plane: one module per aggregate (commands, events, errors, state
//! and the `cqrs_es::Aggregate` impl, with given/when/then tests). No IO crates here: time, ids
//! and hashes arrive inside commands, side effects happen in the api crate's workers.

pub mod agent;
pub mod call;
pub mod campaign;
pub mod common;
pub mod establishment;
pub mod integration;
pub mod invitation;
pub mod lead;
pub mod runtime;
pub mod telephony;
pub mod upcast;
pub mod user;

pub use common::{ClaimOp, UniqueClaims};

/// Runs a pure `decide` function and writes its events to the sink (applying each in turn).
#[macro_export]
macro_rules! handle_with_decide {
    () => {
        async fn handle(
            &mut self,
            command: Self::Command,
            _services: &Self::Services,
            sink: &cqrs_es::event_sink::EventSink<Self>,
        ) -> Result<(), Self::Error> {
            let events = self.decide(command)?;
            for event in events {
                sink.write(event, self).await;
            }
            Ok(())
        }
    };
}
