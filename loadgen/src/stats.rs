//! Latency samples, percentiles and error counts of a load-generator run.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

/// Latency samples (microseconds) of one kind of request, collected from many tasks.
#[derive(Default)]
pub struct Samples(Mutex<Vec<u64>>);

impl Samples {
    pub fn record(&self, d: Duration) {
        self.0.lock().push(d.as_micros() as u64);
    }

    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn summary(&self) -> Summary {
        let mut v = self.0.lock().clone();
        Summary::of(&mut v)
    }
}

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The sample at quantile `q` (nearest rank) of sorted samples.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

impl Summary {
    pub fn of(us: &mut [u64]) -> Self {
        if us.is_empty() {
            return Self::default();
        }
        us.sort_unstable();
        let sum: u64 = us.iter().sum();
        Self {
            count: us.len(),
            mean_ms: sum as f64 / us.len() as f64 / 1e3,
            p50_ms: ms(percentile(us, 0.50)),
            p90_ms: ms(percentile(us, 0.90)),
            p99_ms: ms(percentile(us, 0.99)),
            p999_ms: ms(percentile(us, 0.999)),
            max_ms: ms(*us.last().expect("not empty")),
        }
    }

    /// `p50 1.23 ms, p99 4.56 ms, max 7.89 ms (n=100)`.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

/// Errors by kind (`ingest_http_500`, `poll_transport`, `transcript_incomplete`, ...).
#[derive(Default)]
pub struct Errors(Mutex<BTreeMap<String, u64>>);

impl Errors {
    pub fn add(&self, kind: impl Into<String>) {
        *self.0.lock().entry(kind.into()).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().clone()
    }

    pub fn total(&self) -> u64 {
        self.0.lock().values().sum()
    }
}

/// The error kind of a failed request: `{what}_http_{status}` or `{what}_{transport kind}`.
pub fn request_error_kind(what: &str, e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "transport"
    };
    format!("{what}_{kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(s.mean_ms, 50.5);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn a_slow_tail_shows_in_p99_but_not_p50() {
        let samples = Samples::default();
        for _ in 0..990 {
            samples.record(Duration::from_millis(1));
        }
        for _ in 0..10 {
            samples.record(Duration::from_millis(200));
        }
        let s = samples.summary();
        assert_eq!(s.p50_ms, 1.0);
        assert_eq!(s.p99_ms, 1.0);
        assert_eq!(s.p999_ms, 200.0);
        assert_eq!(s.max_ms, 200.0);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let e = Errors::default();
        e.add("ingest_http_500");
        e.add("ingest_http_500");
        e.add("poll_timeout");
        assert_eq!(e.total(), 3);
        assert_eq!(e.snapshot()["ingest_http_500"], 2);
    }
}
