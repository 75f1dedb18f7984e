//! Login throttle: failed attempts are counted per account and per client address in a
//! sliding window; past the limit, logins answer 429 with Retry-After until the window frees.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct LoginThrottle {
    window: Duration,
    per_account: usize,
    per_client: usize,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

const MAX_KEYS: usize = 100_000;

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(Duration::from_secs(15 * 60), 5, 30)
    }
}

impl LoginThrottle {
    pub fn new(window: Duration, per_account: usize, per_client: usize) -> Self {
        Self {
            window,
            per_account,
            per_client,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(account: &str, client: &str) -> [(String, usize); 2] {
        [(format!("a:{account}"), 0), (format!("c:{client}"), 1)]
    }

    /// `Some(seconds)` to wait when either the account or the client is over its limit.
    pub fn check(&self, account: &str, client: &str) -> Option<u64> {
        let now = Instant::now();
        let mut map = self.failures.lock();
        let mut wait = None;
        for (key, kind) in Self::keys(account, client) {
            let limit = if kind == 0 {
                self.per_account
            } else {
                self.per_client
            };
            if let Some(q) = map.get_mut(&key) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= limit {
                    let oldest = q[q.len() - limit];
                    let secs = (self.window - now.duration_since(oldest)).as_secs() + 1;
                    wait = Some(wait.map_or(secs, |w: u64| w.max(secs)));
                }
            }
        }
        wait
    }

    pub fn record_failure(&self, account: &str, client: &str) {
        let now = Instant::now();
        let mut map = self.failures.lock();
        if map.len() > MAX_KEYS {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for (key, _) in Self::keys(account, client) {
            let q = map.entry(key).or_default();
            q.push_back(now);
            if q.len() > 64 {
                q.pop_front();
            }
        }
    }

    pub fn record_success(&self, account: &str) {
        self.failures.lock().remove(&format!("a:{account}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_locked_after_repeated_failures_and_freed_by_success() {
        let t = LoginThrottle::new(Duration::from_secs(60), 3, 100);
        for _ in 0..3 {
            assert!(t.check("a@x.io", "1.2.3.4").is_none());
            t.record_failure("a@x.io", "1.2.3.4");
        }
        let wait = t.check("a@x.io", "1.2.3.4").expect("locked");
        assert!(wait > 0 && wait <= 61);
        assert!(
            t.check("b@x.io", "1.2.3.4").is_none(),
            "other accounts unaffected"
        );
        t.record_success("a@x.io");
        assert!(t.check("a@x.io", "1.2.3.4").is_none());
    }

    #[test]
    fn a_client_is_locked_across_accounts() {
        let t = LoginThrottle::new(Duration::from_secs(60), 100, 4);
        for i in 0..4 {
            t.record_failure(&format!("u{i}@x.io"), "9.9.9.9");
        }
        assert!(t.check("new@x.io", "9.9.9.9").is_some());
        assert!(t.check("new@x.io", "8.8.8.8").is_none());
    }
}
