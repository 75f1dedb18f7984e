//! Waiting on the system under test.
//!
//! Most of what a test waits for happens inside the control plane: projectors catching up,
//! workers placing calls, sending mail, writing summaries. For those, [`TestApp::settle`]
//! waits until the system is quiet, and the test asserts afterwards.
//!
//! [`eventually`] is for the few things that take real time outside the process: a Docker
//! container starting, a runtime playing its paced script, a runtime's health poll, a second
//! control plane's periodic reload. It polls with a short backoff and, when the budget runs
//! out, panics naming what it waited for and what it saw last.
//!
//! [`TestApp::settle`]: crate::TestApp::settle

use std::time::Duration;

use tokio::time::Instant;

/// First pause between two looks; it grows to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between two looks: short next to any budget, and to the 400 ms health cycle
/// of test control planes.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// What one look at the system says: done (with a value), or not yet (with what was seen).
pub trait Observation {
    type Value;
    /// `Ok(value)` when done; `Err(what was seen)` otherwise.
    fn observe(self) -> Result<Self::Value, String>;
}

impl<T> Observation for Option<T> {
    type Value = T;
    fn observe(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".to_string())
    }
}

impl<T> Observation for Result<T, String> {
    type Value = T;
    fn observe(self) -> Result<T, String> {
        self
    }
}

/// Looks at the system with `check` until it is done, for at most `budget`; panics naming
/// `what` and the last observation when the budget runs out. Returns what `check` found.
///
/// `check` answers `Some(value)` / `Ok(value)` when done, `None` / `Err(observation)` when
/// not yet (the `Err` is shown if the wait fails, so make it say what was seen).
pub async fn eventually<O: Observation>(
    what: &str,
    budget: Duration,
    mut check: impl AsyncFnMut() -> O,
) -> O::Value {
    let deadline = Instant::now() + budget;
    let mut pause = FIRST_BACKOFF;
    loop {
        let last = match check().await.observe() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        let now = Instant::now();
        if now >= deadline {
            panic!("{what}: not within {budget:?}; last observation: {last}");
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// `n` seconds, for budgets.
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
