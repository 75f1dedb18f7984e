//! What the dialer may do, as pure functions of the campaign, the lead, its attempts so far and
//! the time: the dialer and `GET /campaigns/{id}/preview` both call [`verdict`], so the preview
//! is what then happens. Sources of the rules: docs/campaigns.md.

use chrono::{DateTime, Datelike, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::zones::candidate_zones;
use super::{CampaignSpec, RetryOn, Schedule, Window};
use crate::common::E164;

/// What became of one dial attempt (from the call's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Queued, placing, ringing or in progress: holds a concurrency slot.
    InFlight,
    /// A person answered and the call completed.
    Human,
    /// An answering machine or fax answered.
    Machine,
    Busy,
    NoAnswer,
    /// Twilio refused or the call failed.
    Failed,
    /// Cancelled or reaped before anyone answered.
    Canceled,
    /// The person asked not to be called again.
    OptOut,
}

impl AttemptOutcome {
    /// The policy word the outcome is retried under (none: never retried).
    pub fn retry_on(self) -> Option<RetryOn> {
        match self {
            AttemptOutcome::Busy => Some(RetryOn::Busy),
            AttemptOutcome::NoAnswer => Some(RetryOn::NoAnswer),
            AttemptOutcome::Failed | AttemptOutcome::Canceled => Some(RetryOn::Failed),
            AttemptOutcome::Machine => Some(RetryOn::Machine),
            _ => None,
        }
    }

    /// Classifies a finished call: Twilio's status, AMD's `AnsweredBy`.
    pub fn of_call(status: &str, answered_by: Option<&str>, active: bool) -> AttemptOutcome {
        if active {
            return AttemptOutcome::InFlight;
        }
        let machine = answered_by.is_some_and(|a| a.starts_with("machine") || a == "fax");
        match status {
            "busy" => AttemptOutcome::Busy,
            "no_answer" | "no-answer" => AttemptOutcome::NoAnswer,
            "failed" => AttemptOutcome::Failed,
            "canceled" => AttemptOutcome::Canceled,
            "completed" if machine => AttemptOutcome::Machine,
            "completed" | "handoff_completed" => AttemptOutcome::Human,
            _ => AttemptOutcome::Failed,
        }
    }
}

/// One earlier attempt on the lead, in this campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub number: u32,
    pub outcome: AttemptOutcome,
    /// When the dialer decided to dial it (the campaign clock).
    pub dialled_at: DateTime<Utc>,
}

/// The facts about a lead the rules need.
#[derive(Debug, Clone)]
pub struct LeadFacts {
    pub phone: E164,
    /// The lead's own IANA zone, when given (overrides the number's).
    pub timezone: Option<String>,
    /// On the lead flag, the establishment's do-not-call list or its blacklist.
    pub do_not_call: bool,
}

/// Why a lead is dialled later or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    DoNotCall,
    UnknownTimezone,
    Completed,
    OptedOut,
    AttemptsExhausted,
    OutcomeNotRetried,
    InFlight,
    RetryScheduled,
    OutsideSchedule,
    OutsideCalleeWindow,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DoNotCall => "do_not_call",
            Reason::UnknownTimezone => "unknown_timezone",
            Reason::Completed => "completed",
            Reason::OptedOut => "opted_out",
            Reason::AttemptsExhausted => "attempts_exhausted",
            Reason::OutcomeNotRetried => "outcome_not_retried",
            Reason::InFlight => "in_flight",
            Reason::RetryScheduled => "retry_scheduled",
            Reason::OutsideSchedule => "outside_schedule",
            Reason::OutsideCalleeWindow => "outside_callee_window",
        }
    }
}

/// What to do with a lead now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Dial it now, as attempt `attempt`.
    Now { attempt: u32 },
    /// Not now; maybe later (`not_before` when known).
    Later {
        reason: Reason,
        not_before: Option<DateTime<Utc>>,
    },
    /// Never, in this campaign.
    Never { reason: Reason },
}

/// The zones the callee may be in: the lead's own, else those of the number.
pub fn callee_zones(lead: &LeadFacts) -> Vec<Tz> {
    match lead.timezone.as_deref().map(str::parse::<Tz>) {
        Some(Ok(tz)) => vec![tz],
        // An unparseable explicit zone is unknown: fail closed.
        Some(Err(_)) => vec![],
        None => candidate_zones(&lead.phone),
    }
}

/// Whether `now` is inside the campaign's schedule (days and hours in its time zone).
pub fn in_schedule(schedule: &Schedule, now: DateTime<Utc>) -> bool {
    let local = now.with_timezone(&schedule.timezone.0);
    schedule.weekdays().contains(&local.weekday())
        && Window {
            start: schedule.start,
            end: schedule.end,
        }
        .contains(local.time())
}

/// Whether `now` is inside the callee window in every one of `zones` (none: never).
pub fn in_callee_window(window: &Window, zones: &[Tz], now: DateTime<Utc>) -> bool {
    !zones.is_empty()
        && zones
            .iter()
            .all(|z| window.contains(now.with_timezone(z).time()))
}

/// The verdict on one lead at `now`, given its earlier attempts in this campaign.
pub fn verdict(
    spec: &CampaignSpec,
    lead: &LeadFacts,
    attempts: &[Attempt],
    now: DateTime<Utc>,
) -> Verdict {
    if lead.do_not_call {
        return Verdict::Never {
            reason: Reason::DoNotCall,
        };
    }
    if attempts.iter().any(|a| a.outcome == AttemptOutcome::OptOut) {
        return Verdict::Never {
            reason: Reason::OptedOut,
        };
    }
    if attempts.iter().any(|a| a.outcome == AttemptOutcome::Human) {
        return Verdict::Never {
            reason: Reason::Completed,
        };
    }
    if attempts
        .iter()
        .any(|a| a.outcome == AttemptOutcome::InFlight)
    {
        return Verdict::Later {
            reason: Reason::InFlight,
            not_before: None,
        };
    }
    let zones = callee_zones(lead);
    if zones.is_empty() {
        return Verdict::Never {
            reason: Reason::UnknownTimezone,
        };
    }
    let last = attempts.iter().max_by_key(|a| a.number);
    let attempt = last.map_or(1, |a| a.number + 1);
    if let Some(last) = last {
        if attempt > spec.retry.max_attempts {
            return Verdict::Never {
                reason: Reason::AttemptsExhausted,
            };
        }
        match last.outcome.retry_on() {
            Some(on) if spec.retry.on.contains(&on) => {}
            _ => {
                return Verdict::Never {
                    reason: Reason::OutcomeNotRetried,
                }
            }
        }
        let b = &spec.retry.backoff_minutes;
        let wait = b
            .get((last.number as usize).saturating_sub(1))
            .or(b.last())
            .copied()
            .unwrap_or(0);
        let due = last.dialled_at + Duration::minutes(i64::from(wait));
        if now < due {
            return Verdict::Later {
                reason: Reason::RetryScheduled,
                not_before: Some(due),
            };
        }
    }
    if !in_schedule(&spec.schedule, now) {
        return Verdict::Later {
            reason: Reason::OutsideSchedule,
            not_before: None,
        };
    }
    if !in_callee_window(&spec.callee_window, &zones, now) {
        return Verdict::Later {
            reason: Reason::OutsideCalleeWindow,
            not_before: None,
        };
    }
    Verdict::Now { attempt }
}

/// Smooth pacing: the earliest instant of the next dial after one at `last`.
pub fn next_dial_at(last: Option<DateTime<Utc>>, calls_per_minute: u32) -> Option<DateTime<Utc>> {
    let gap = Duration::microseconds(60_000_000 / i64::from(calls_per_minute.max(1)));
    last.map(|l| l + gap)
}

/// How many dials may start in `(last, now]` at a pace, and at which instants (evenly spaced,
/// never a burst: at most one per gap, and when the dialer fell behind at most `catch_up`).
pub fn due_dials(
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    calls_per_minute: u32,
    catch_up: usize,
) -> Vec<DateTime<Utc>> {
    let gap = Duration::microseconds(60_000_000 / i64::from(calls_per_minute.max(1)));
    let Some(mut t) = last else {
        return vec![now];
    };
    let mut out = vec![];
    // A dialer that was idle (or away) does not make up for lost time in a burst.
    if now - t > gap * (catch_up as i32) {
        t = now - gap * (catch_up as i32);
    }
    while t + gap <= now && out.len() < catch_up {
        t += gap;
        out.push(t);
    }
    out
}

/// The circuit breaker: of the last `window` finished attempts (at least `min`), the share
/// that failed; above `threshold` the campaign pauses.
pub fn breaker_trips(recent: &[AttemptOutcome], min: usize, threshold: f64) -> bool {
    let finished: Vec<_> = recent
        .iter()
        .filter(|o| **o != AttemptOutcome::InFlight)
        .collect();
    if finished.len() < min {
        return false;
    }
    let failed = finished
        .iter()
        .filter(|o| ***o == AttemptOutcome::Failed)
        .count();
    failed as f64 / finished.len() as f64 >= threshold
}

/// The abandonment rate: abandoned calls over calls a person answered (0 when none).
pub fn abandonment_rate(human_answered: u64, abandoned: u64) -> f64 {
    if human_answered == 0 {
        0.0
    } else {
        abandoned as f64 / human_answered as f64
    }
}
