//! Test harness: a fresh database per test (cloned from a migrated template), the real server
//! on a random port, a real SMTP server, small HTTP helpers, the setup the suite shares
//! (`fixtures`), and the two ways to wait on the system (`TestApp::settle` for what happens in
//! the control plane, `wait::eventually` for what takes real time outside it).
//!
//! Under `CI=true` a missing dependency (PostgreSQL, Python's aiosmtpd, Docker) fails the test
//! loudly; nothing is skipped.

pub mod app;
pub mod crm;
pub mod db;
pub mod fixtures;
pub mod google;
pub mod logs;
pub mod runtimes;
pub mod smtp;
pub mod twilio;
pub mod wait;
pub mod whatsapp;

pub use app::{Json, TestApp};
pub use wait::{eventually, secs};

/// Whether we run in CI, where missing dependencies must fail tests.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Installs a test log subscriber once (`RUST_LOG` to see server logs).
pub fn init_logs() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
