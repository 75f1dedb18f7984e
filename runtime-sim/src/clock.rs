//! Wall-clock timestamps as RFC 3339 UTC strings (`2026-01-10T00:00:05.123Z`), without a date
//! library: the runtime only ever formats "now" and offsets from it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub u64);

impl Millis {
    pub fn now() -> Self {
        Millis(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_millis() as u64,
        )
    }

    /// Whole seconds from `self` to `later`, rounded up (a 200 ms call lasted 1 s).
    pub fn seconds_until(self, later: Millis) -> u64 {
        later.0.saturating_sub(self.0).div_ceil(1000)
    }

    /// RFC 3339 in UTC with milliseconds.
    pub fn rfc3339(self) -> String {
        let secs = self.0 / 1000;
        let ms = self.0 % 1000;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339_utc_with_milliseconds() {
        assert_eq!(Millis(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        // 2026-01-10T00:00:05Z, the spec's example instant.
        assert_eq!(
            Millis(1_768_003_205_000).rfc3339(),
            "2026-01-10T00:00:05.000Z"
        );
        // A leap day and the last millisecond of a day.
        assert_eq!(
            Millis(951_868_799_999).rfc3339(),
            "2000-02-29T23:59:59.999Z"
        );
        assert_eq!(
            Millis(4_102_444_800_123).rfc3339(),
            "2100-01-01T00:00:00.123Z"
        );
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(Millis(1_000).seconds_until(Millis(1_000)), 0);
        assert_eq!(Millis(1_000).seconds_until(Millis(1_200)), 1);
        assert_eq!(Millis(1_000).seconds_until(Millis(61_000)), 60);
        assert_eq!(Millis(5_000).seconds_until(Millis(1_000)), 0);
    }
}
