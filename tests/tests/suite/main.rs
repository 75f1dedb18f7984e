//! The integration suite: one test binary (one link) with a module per area.

mod agents;
mod audit;
mod auth;
mod errors;
mod loadgen;
mod ops;
mod projector;
mod runtimes;
mod store;
mod telephony;
mod tenancy;
mod twilio;
