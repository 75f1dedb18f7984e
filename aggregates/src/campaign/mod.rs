//! Campaign aggregate (prd §6, §7.6, A.6): an outbound dialling campaign over an
//! establishment's leads, with a pinned agent version, a pace, a schedule in the campaign's
//! time zone, a callee-local window, a retry policy and a concurrency cap. The lifecycle
//! (created → running ⇄ paused → cancelled | completed) lives here; what to dial when is the
//! pure [`rules`] module, which the dialer and the preview both use.

pub mod rules;
pub mod zones;

use chrono::{DateTime, NaiveTime, Utc, Weekday};
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::common::{wire_enum, ParseError, Timezone};
use crate::lead::LeadStatus;

/// Highest pace, calls per minute.
pub const MAX_CALLS_PER_MINUTE: u32 = 600;
/// Highest concurrency cap of one campaign.
pub const MAX_CONCURRENT_CALLS: u32 = 200;
/// Most attempts per lead.
pub const MAX_ATTEMPTS: u32 = 10;
/// Longest campaign name, in characters.
pub const MAX_NAME_CHARS: usize = 120;

wire_enum!(
    #[derive(Default)]
    CampaignStatus, "status" {
        #[default]
        Created => "created",
        Running => "running",
        Paused => "paused",
        Cancelled => "cancelled",
        Completed => "completed",
    }
);

wire_enum!(
    /// Outcomes a retry policy may retry.
    RetryOn, "retry.on" {
        Busy => "busy",
        NoAnswer => "no-answer",
        Failed => "failed",
        Machine => "machine",
    }
);

/// A time of day, `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(pub NaiveTime);

impl TimeOfDay {
    pub fn as_string(&self) -> String {
        self.0.format("%H:%M").to_string()
    }
    pub fn hm(h: u32, m: u32) -> Self {
        TimeOfDay(NaiveTime::from_hms_opt(h, m, 0).expect("valid time"))
    }
}

impl std::str::FromStr for TimeOfDay {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        NaiveTime::parse_from_str(s, "%H:%M")
            .map(TimeOfDay)
            .map_err(|_| ParseError::new("time", format!("{s:?} is not a time HH:MM")))
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A daily window `[start, end)` in local time (start < end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: TimeOfDay,
    pub end: TimeOfDay,
}

impl Window {
    pub fn new(start: TimeOfDay, end: TimeOfDay) -> Result<Self, ParseError> {
        if start >= end {
            return Err(ParseError::new("window", "start must be before end"));
        }
        Ok(Window { start, end })
    }
    /// 08:00–21:00, the US federal calling hours (47 CFR 64.1200(c)(1)).
    pub fn default_callee() -> Self {
        Window {
            start: TimeOfDay::hm(8, 0),
            end: TimeOfDay::hm(21, 0),
        }
    }
    pub fn contains(&self, t: NaiveTime) -> bool {
        self.start.0 <= t && t < self.end.0
    }
}

/// The campaign's own schedule: days and hours in its time zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub timezone: Timezone,
    /// `mon` … `sun`.
    pub days: Vec<String>,
    pub start: TimeOfDay,
    pub end: TimeOfDay,
}

impl Schedule {
    pub fn weekdays(&self) -> Vec<Weekday> {
        self.days.iter().filter_map(|d| parse_day(d)).collect()
    }
}

pub fn parse_day(d: &str) -> Option<Weekday> {
    Some(match d {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts per lead, the first included.
    pub max_attempts: u32,
    /// Wait before attempt n+1 (the last value repeats), counted from attempt n's dial.
    pub backoff_minutes: Vec<u32>,
    pub on: Vec<RetryOn>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff_minutes: vec![30, 60, 120],
            on: vec![
                RetryOn::Busy,
                RetryOn::NoAnswer,
                RetryOn::Failed,
                RetryOn::Machine,
            ],
        }
    }
}

/// Which leads a campaign dials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeadFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<LeadStatus>,
}

/// Everything a campaign was created with (validated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub name: String,
    pub agent_id: String,
    pub agent_version_id: String,
    pub lead_filter: LeadFilter,
    pub calls_per_minute: u32,
    pub schedule: Schedule,
    pub max_concurrent_calls: u32,
    pub retry: RetryPolicy,
    pub callee_window: Window,
}

impl CampaignSpec {
    /// Checks the limits; the first broken one is named.
    pub fn validate(&self) -> Result<(), ParseError> {
        if !(1..=MAX_CALLS_PER_MINUTE).contains(&self.calls_per_minute) {
            return Err(ParseError::new(
                "pace.calls_per_minute",
                format!("must be 1 to {MAX_CALLS_PER_MINUTE}"),
            ));
        }
        if !(1..=MAX_CONCURRENT_CALLS).contains(&self.max_concurrent_calls) {
            return Err(ParseError::new(
                "max_concurrent_calls",
                format!("must be 1 to {MAX_CONCURRENT_CALLS}"),
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.retry.max_attempts) {
            return Err(ParseError::new(
                "retry.max_attempts",
                format!("must be 1 to {MAX_ATTEMPTS}"),
            ));
        }
        if self.retry.backoff_minutes.len() > 10
            || self.retry.backoff_minutes.iter().any(|m| *m > 30 * 24 * 60)
        {
            return Err(ParseError::new(
                "retry.backoff_minutes",
                "at most 10 values, each at most 43200 minutes",
            ));
        }
        if self.retry.max_attempts > 1 && self.retry.backoff_minutes.is_empty() {
            return Err(ParseError::new(
                "retry.backoff_minutes",
                "must hold at least one value when max_attempts > 1",
            ));
        }
        if self.schedule.days.is_empty()
            || self.schedule.days.len() > 7
            || self.schedule.days.iter().any(|d| parse_day(d).is_none())
        {
            return Err(ParseError::new(
                "schedule.days",
                "must hold 1 to 7 of mon, tue, wed, thu, fri, sat, sun",
            ));
        }
        if self.schedule.start >= self.schedule.end {
            return Err(ParseError::new("schedule", "start must be before end"));
        }
        if self.callee_window.start >= self.callee_window.end {
            return Err(ParseError::new("callee_window", "start must be before end"));
        }
        let n = self.name.trim().chars().count();
        if n == 0 || n > MAX_NAME_CHARS || self.name.chars().any(char::is_control) {
            return Err(ParseError::new(
                "name",
                format!("must be 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CampaignCommand {
    Create {
        campaign_id: String,
        establishment_id: String,
        spec: Box<CampaignSpec>,
        by: String,
        at: DateTime<Utc>,
    },
    Start {
        by: String,
        at: DateTime<Utc>,
    },
    /// A user's pause (`by` a user) or the dialer's (circuit breaker, abandonment ceiling).
    Pause {
        reason: String,
        by: String,
        at: DateTime<Utc>,
    },
    Resume {
        by: String,
        at: DateTime<Utc>,
    },
    Cancel {
        by: String,
        at: DateTime<Utc>,
    },
    /// The dialer found nothing left to dial, now or later.
    Complete {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CampaignEvent {
    CampaignCreated {
        campaign_id: String,
        establishment_id: String,
        spec: Box<CampaignSpec>,
        by: String,
        at: DateTime<Utc>,
    },
    CampaignStarted {
        by: String,
        at: DateTime<Utc>,
    },
    CampaignPaused {
        reason: String,
        by: String,
        at: DateTime<Utc>,
    },
    CampaignResumed {
        by: String,
        at: DateTime<Utc>,
    },
    CampaignCancelled {
        by: String,
        at: DateTime<Utc>,
    },
    CampaignCompleted {
        at: DateTime<Utc>,
    },
}
crate::domain_event!(CampaignEvent {
    CampaignCreated,
    CampaignStarted,
    CampaignPaused,
    CampaignResumed,
    CampaignCancelled,
    CampaignCompleted,
});
impl crate::UniqueClaims for CampaignEvent {
    fn unique_claims(&self) -> Vec<crate::ClaimOp> {
        vec![]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignError {
    #[error("the campaign already exists")]
    AlreadyExists,
    #[error("the campaign does not exist")]
    NotFound,
    #[error("{0}")]
    InvalidSpec(String),
    #[error("a {status} campaign cannot be {action}")]
    WrongStatus {
        status: CampaignStatus,
        action: &'static str,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    pub establishment_id: String,
    pub spec: Option<CampaignSpec>,
    pub status: CampaignStatus,
    pub pause_reason: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Campaign {
    pub fn decide(&self, command: CampaignCommand) -> Result<Vec<CampaignEvent>, CampaignError> {
        use CampaignCommand as C;
        use CampaignEvent as E;
        use CampaignStatus as S;
        let exists = !self.id.is_empty();
        let wrong = |action| CampaignError::WrongStatus {
            status: self.status,
            action,
        };
        match command {
            C::Create {
                campaign_id,
                establishment_id,
                spec,
                by,
                at,
            } => {
                if exists {
                    return Err(CampaignError::AlreadyExists);
                }
                spec.validate().map_err(|e| {
                    CampaignError::InvalidSpec(format!("{}: {}", e.field, e.message))
                })?;
                Ok(vec![E::CampaignCreated {
                    campaign_id,
                    establishment_id,
                    spec,
                    by,
                    at,
                }])
            }
            _ if !exists => Err(CampaignError::NotFound),
            C::Start { by, at } => match self.status {
                S::Created => Ok(vec![E::CampaignStarted { by, at }]),
                S::Running => Ok(vec![]),
                _ => Err(wrong("started")),
            },
            C::Pause { reason, by, at } => match self.status {
                S::Running => Ok(vec![E::CampaignPaused { reason, by, at }]),
                S::Paused => Ok(vec![]),
                _ => Err(wrong("paused")),
            },
            C::Resume { by, at } => match self.status {
                S::Paused => Ok(vec![E::CampaignResumed { by, at }]),
                S::Running => Ok(vec![]),
                _ => Err(wrong("resumed")),
            },
            C::Cancel { by, at } => match self.status {
                S::Created | S::Running | S::Paused => Ok(vec![E::CampaignCancelled { by, at }]),
                S::Cancelled => Ok(vec![]),
                S::Completed => Err(wrong("cancelled")),
            },
            C::Complete { at } => match self.status {
                S::Running => Ok(vec![E::CampaignCompleted { at }]),
                S::Completed => Ok(vec![]),
                _ => Err(wrong("completed")),
            },
        }
    }
}

impl Aggregate for Campaign {
    const TYPE: &'static str = "Campaign";
    type Command = CampaignCommand;
    type Event = CampaignEvent;
    type Error = CampaignError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: CampaignEvent) {
        use CampaignEvent as E;
        match event {
            E::CampaignCreated {
                campaign_id,
                establishment_id,
                spec,
                at,
                ..
            } => {
                self.id = campaign_id;
                self.establishment_id = establishment_id;
                self.spec = Some(*spec);
                self.status = CampaignStatus::Created;
                self.created_at = Some(at);
                self.updated_at = Some(at);
            }
            E::CampaignStarted { at, .. } => {
                self.status = CampaignStatus::Running;
                self.started_at = Some(at);
                self.updated_at = Some(at);
            }
            E::CampaignPaused { reason, at, .. } => {
                self.status = CampaignStatus::Paused;
                self.pause_reason = Some(reason);
                self.updated_at = Some(at);
            }
            E::CampaignResumed { at, .. } => {
                self.status = CampaignStatus::Running;
                self.pause_reason = None;
                self.updated_at = Some(at);
            }
            E::CampaignCancelled { at, .. } => {
                self.status = CampaignStatus::Cancelled;
                self.updated_at = Some(at);
            }
            E::CampaignCompleted { at } => {
                self.status = CampaignStatus::Completed;
                self.updated_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests;
