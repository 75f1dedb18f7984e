//! The control plane: HTTP API, webhooks, workers and adapters around the event store.

pub mod app;
pub mod auth;
pub mod bench;
pub mod calls;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod error;
pub mod http;
pub mod ids;
pub mod mail;
pub mod runtimes;
pub mod store;
pub mod telemetry;
pub mod twilio;
