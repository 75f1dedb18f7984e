//! Background workers: they react to events (through a [`crate::background::WorkQueue`] fed
//! after a commit, or a checkpointed event consumer), rescan the read models for what a crash
//! left behind, call Docker, Twilio, SMTP or a model outside any transaction, and record the
//! outcome as a command. `server` starts each under [`crate::background::supervise`].

pub mod analysis;
pub mod dialer;
pub mod handoff;
pub mod mailer;
pub mod placer;
pub mod reaper;
pub mod runtime_monitor;
pub mod runtime_ops;
