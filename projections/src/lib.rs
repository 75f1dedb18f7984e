//! Read models of the control plane and the projector runtime that builds them.
//!
//! Projectors read the event log in commit-safe order (see `runner`), apply events to their
//! tables and advance their checkpoint in the same transaction. The UI only ever reads these
//! tables; nothing here is written inline by the command path.

pub mod agents;
pub mod calls;
pub mod campaigns;
pub mod dead_letters;
pub mod event;
pub mod identity;
pub mod integrations;
pub mod leads;
pub mod reports;
pub mod routing;
pub mod runner;
pub mod runtimes;

pub use event::{Checkpoint, StoredEvent};
pub use runner::{Hub, Projection, ProjectorConfig, Projectors};
