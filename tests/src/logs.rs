//! Captures the server's log lines in this test process (nextest runs each test in a process
//! of its own), so a test can grep them, e.g. for secrets that must never be logged.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static BUFFER: OnceLock<Buffer> = OnceLock::new();

/// Installs a process-wide subscriber at `debug` that keeps every line (call before the app
/// starts); returns false when another subscriber was installed first.
pub fn capture() -> bool {
    let buffer = BUFFER.get_or_init(Buffer::default).clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "debug,sqlx=info,hyper=info,h2=info,rustls=info",
        ))
        .with_ansi(false)
        .with_writer(move || buffer.clone())
        .try_init()
        .is_ok()
}

/// Everything logged so far.
pub fn captured() -> String {
    BUFFER
        .get()
        .map(|b| String::from_utf8_lossy(&b.0.lock()).to_string())
        .unwrap_or_default()
}
