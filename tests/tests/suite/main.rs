//! The integration suite: one test binary (one link) with a module per area.

mod agents;
mod analysis;
mod audit;
mod auth;
mod boundaries;
mod calls;
mod containment;
mod e2e_calls;
mod errors;
mod ingest;
mod loadgen;
mod ops;
mod poison;
mod projector;
mod runtimes;
mod store;
mod summaries;
mod telephony;
mod tenancy;
mod twilio;
