//! Adapters to the world outside the process: the Docker engine, Twilio's REST API and
//! webhooks, SMTP. Use cases and workers reach them through the ports they define.

pub mod docker;
pub mod integrations;
pub mod smtp;
pub mod twilio;
