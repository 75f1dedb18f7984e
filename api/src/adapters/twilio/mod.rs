//! Twilio adapters: webhook signature checks, TwiML rendering and the REST client.
//! docs/calls.md says how the webhooks and workers use them.

pub mod client;
pub mod signature;
pub mod twiml;
pub mod webhook;
