//! The control plane: HTTP API, webhooks, workers and adapters around the event store.
//!
//! The layers, one way only (docs/architecture.md):
//! `http` (parse, authorise, map) → `application` (one use case per module, typed errors, no
//! axum) → `aggregates` (pure rules) → `store` → `projections` (read models, queried through
//! their typed functions). `workers` react to events and call the `adapters` (Docker, Twilio,
//! SMTP), recording outcomes as commands. `state` builds everything once; `server` runs it.

pub mod adapters;
pub mod application;
pub mod auth;
pub mod background;
pub mod bench;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod db;
pub mod http;
pub mod ids;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod workers;
