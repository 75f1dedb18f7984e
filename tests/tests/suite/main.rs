//! The integration suite: one test binary (one link) with a module per area.

mod agents;
mod analysis;
mod audit;
mod auth;
mod boundaries;
mod calls;
mod containment;
mod contract;
mod e2e_calls;
mod errors;
mod ingest;
mod integrations;
mod loadgen;
mod ops;
mod poison;
mod projector;
mod reports;
mod runtimes;
mod store;
mod structure;
mod summaries;
mod telephony;
mod tenancy;
mod tool_proxy;
mod twilio;
