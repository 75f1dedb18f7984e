//! Telephony aggregate: an establishment's telephony policy (inbound numbers and the agent each
//! routes to, handoff number, call-duration cap, business hours, caller blacklist), one stream
//! per establishment (stream id = establishment id). Inbound numbers are claimed platform-wide
//! in the append transaction, so one number routes to exactly one establishment.
//!
//! Also here: the routing model's entry type and the pure `route` function that decides what
//! happens to an incoming call (see docs/agents-and-routing.md).

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike, Utc};
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::call::OutboundRefusal;
use crate::common::{wire_enum, ClaimOp, ParseError, Timezone, UniqueClaims, E164};

/// Claim scope that keeps an inbound number with one establishment.
pub const PHONE_NUMBER_CLAIM: &str = "phone_number";
/// Call-duration cap until an admin sets one.
pub const DEFAULT_MAX_CALL_DURATION_SECONDS: u32 = 3600;
pub const MIN_CALL_DURATION_SECONDS: u32 = 30;
pub const MAX_CALL_DURATION_SECONDS: u32 = 14_400;
/// Inbound numbers per establishment.
pub const MAX_INBOUND_NUMBERS: usize = 100;
/// Blacklisted callers per establishment.
pub const MAX_BLACKLIST: usize = 1000;
/// Business-hours windows per establishment.
pub const MAX_BUSINESS_HOURS_WINDOWS: usize = 50;

// ---------------------------------------------------------------------------------------------
// Value types.

wire_enum!(
    /// Telephony provider of an inbound number.
    #[derive(Default)]
    Provider, "provider" {
        #[default]
        Twilio => "twilio",
    }
);

/// A number callers dial, and the agent that answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundNumber {
    #[serde(default)]
    pub provider: Provider,
    pub e164: E164,
    pub routing_agent_id: String,
}

/// A call-duration cap, 30 s to 4 h.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MaxCallDuration(u32);

impl TryFrom<u32> for MaxCallDuration {
    type Error = ParseError;
    fn try_from(n: u32) -> Result<Self, ParseError> {
        if (MIN_CALL_DURATION_SECONDS..=MAX_CALL_DURATION_SECONDS).contains(&n) {
            Ok(MaxCallDuration(n))
        } else {
            Err(ParseError::new(
                "max_call_duration_seconds",
                format!(
                    "must be between {MIN_CALL_DURATION_SECONDS} and {MAX_CALL_DURATION_SECONDS} (got {n})"
                ),
            ))
        }
    }
}
impl From<MaxCallDuration> for u32 {
    fn from(d: MaxCallDuration) -> u32 {
        d.0
    }
}
impl MaxCallDuration {
    pub fn seconds(self) -> u32 {
        self.0
    }
}

wire_enum!(
    /// A day of the week, as `mon`…`sun`.
    Day, "days" {
        Mon => "mon",
        Tue => "tue",
        Wed => "wed",
        Thu => "thu",
        Fri => "fri",
        Sat => "sat",
        Sun => "sun",
    }
);

impl Day {
    pub fn from_weekday(w: chrono::Weekday) -> Day {
        use chrono::Weekday as W;
        match w {
            W::Mon => Day::Mon,
            W::Tue => Day::Tue,
            W::Wed => Day::Wed,
            W::Thu => Day::Thu,
            W::Fri => Day::Fri,
            W::Sat => Day::Sat,
            W::Sun => Day::Sun,
        }
    }

    pub fn previous(self) -> Day {
        match self {
            Day::Mon => Day::Sun,
            Day::Tue => Day::Mon,
            Day::Wed => Day::Tue,
            Day::Thu => Day::Wed,
            Day::Fri => Day::Thu,
            Day::Sat => Day::Fri,
            Day::Sun => Day::Sat,
        }
    }
}

/// A wall-clock time `HH:MM` (00:00 to 24:00), as minutes since midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LocalTime(u16);

impl LocalTime {
    pub const MIDNIGHT: LocalTime = LocalTime(0);
    pub const END_OF_DAY: LocalTime = LocalTime(24 * 60);

    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl FromStr for LocalTime {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = || ParseError::new("time", format!("{s:?} is not a time HH:MM (00:00–24:00)"));
        let b = s.as_bytes();
        if b.len() != 5
            || b[2] != b':'
            || !b
                .iter()
                .enumerate()
                .all(|(i, c)| i == 2 || c.is_ascii_digit())
        {
            return Err(err());
        }
        let h = u16::from(b[0] - b'0') * 10 + u16::from(b[1] - b'0');
        let m = u16::from(b[3] - b'0') * 10 + u16::from(b[4] - b'0');
        if m > 59 || h > 24 || (h == 24 && m != 0) {
            return Err(err());
        }
        Ok(LocalTime(h * 60 + m))
    }
}
impl TryFrom<String> for LocalTime {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}
impl From<LocalTime> for String {
    fn from(t: LocalTime) -> String {
        t.to_string()
    }
}
impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// Opening hours on some days, in the establishment's time zone. `end` before `start` means the
/// window crosses midnight: it opens on a listed day and closes the next morning.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawBusinessHours")]
pub struct BusinessHours {
    days: Vec<Day>,
    start: LocalTime,
    end: LocalTime,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBusinessHours {
    days: Vec<Day>,
    start: LocalTime,
    end: LocalTime,
}

impl TryFrom<RawBusinessHours> for BusinessHours {
    type Error = ParseError;
    fn try_from(r: RawBusinessHours) -> Result<Self, ParseError> {
        BusinessHours::new(r.days, r.start, r.end)
    }
}

impl BusinessHours {
    /// Days are sorted and de-duplicated; `start` = `end` and `start` = 24:00 are refused.
    pub fn new(days: Vec<Day>, start: LocalTime, end: LocalTime) -> Result<Self, ParseError> {
        let days: Vec<Day> = days
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if days.is_empty() {
            return Err(ParseError::new("days", "must list at least one day"));
        }
        if start == LocalTime::END_OF_DAY {
            return Err(ParseError::new("start", "must be before 24:00"));
        }
        if start == end {
            return Err(ParseError::new(
                "end",
                "must differ from start (use 00:00–24:00 for a whole day)",
            ));
        }
        Ok(Self { days, start, end })
    }

    pub fn days(&self) -> &[Day] {
        &self.days
    }
    pub fn start(&self) -> LocalTime {
        self.start
    }
    pub fn end(&self) -> LocalTime {
        self.end
    }

    /// Whether the window is open at `minute` (since local midnight) on `day`.
    pub fn contains(&self, day: Day, minute: u16) -> bool {
        let (s, e) = (self.start.0, self.end.0);
        if s < e {
            self.days.contains(&day) && s <= minute && minute < e
        } else {
            (self.days.contains(&day) && minute >= s)
                || (self.days.contains(&day.previous()) && minute < e)
        }
    }
}

/// Whether an establishment with these windows is open at `now`. No windows: always open.
///
/// The instant is turned into the establishment's wall-clock time first, so DST changes need
/// no special case: on a spring-forward day the skipped hour simply never occurs, and on a
/// fall-back day the repeated hour is judged by the wall clock both times.
pub fn open_at(windows: &[BusinessHours], tz: Timezone, now: DateTime<Utc>) -> bool {
    if windows.is_empty() {
        return true;
    }
    let local = now.with_timezone(&tz.0);
    let day = Day::from_weekday(local.weekday());
    let minute = (local.hour() * 60 + local.minute()) as u16;
    windows.iter().any(|w| w.contains(day, minute))
}

// ---------------------------------------------------------------------------------------------
// Commands, events, errors, state.

/// A partial update: `None` keeps a setting; `inbound_numbers` replaces the whole list;
/// `handoff_e164: Some(None)` clears the handoff number.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelephonyPatch {
    pub inbound_numbers: Option<Vec<InboundNumber>>,
    pub handoff_e164: Option<Option<E164>>,
    pub max_call_duration_seconds: Option<MaxCallDuration>,
    pub business_hours: Option<Vec<BusinessHours>>,
    pub blacklist_e164: Option<Vec<E164>>,
}

/// Who changes the policy, as far as numbers go: only the platform assigns a number the
/// establishment does not hold yet; an establishment's admins re-route the numbers they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberAuthority {
    /// A platform admin: may assign new numbers.
    Platform,
    /// An establishment admin: may route, add back or remove only numbers already held.
    Establishment,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TelephonyCommand {
    Update {
        patch: TelephonyPatch,
        by: NumberAuthority,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TelephonyEvent {
    /// The inbound number list was replaced; `added` are claimed, `removed` released.
    InboundNumbersReplaced {
        numbers: Vec<InboundNumber>,
        added: Vec<E164>,
        removed: Vec<E164>,
    },
    HandoffNumberChanged {
        e164: Option<E164>,
    },
    MaxCallDurationChanged {
        seconds: MaxCallDuration,
    },
    BusinessHoursChanged {
        windows: Vec<BusinessHours>,
    },
    BlacklistChanged {
        numbers: Vec<E164>,
    },
}
crate::domain_event!(TelephonyEvent {
    InboundNumbersReplaced,
    HandoffNumberChanged,
    MaxCallDurationChanged,
    BusinessHoursChanged,
    BlacklistChanged
});

impl UniqueClaims for TelephonyEvent {
    fn unique_claims(&self) -> Vec<ClaimOp> {
        match self {
            TelephonyEvent::InboundNumbersReplaced { added, removed, .. } => removed
                .iter()
                .map(|n| ClaimOp::Release {
                    scope: PHONE_NUMBER_CLAIM,
                    value: n.as_str().to_string(),
                })
                .chain(added.iter().map(|n| ClaimOp::Claim {
                    scope: PHONE_NUMBER_CLAIM,
                    value: n.as_str().to_string(),
                }))
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelephonyError {
    #[error("inbound_numbers: {0} is listed more than once")]
    DuplicateNumber(String),
    #[error("inbound_numbers: at most {MAX_INBOUND_NUMBERS} numbers")]
    TooManyNumbers,
    #[error("blacklist_e164: at most {MAX_BLACKLIST} numbers")]
    BlacklistTooLong,
    #[error("business_hours: at most {MAX_BUSINESS_HOURS_WINDOWS} windows")]
    TooManyWindows,
    #[error("handoff_e164: {0} is one of the establishment's inbound numbers; a handoff there would loop")]
    HandoffIsInbound(String),
    #[error("inbound_numbers: {0} is not assigned to this establishment; a platform admin assigns new numbers")]
    NumberNotAssigned(String),
}

impl TelephonyError {
    /// The request field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            TelephonyError::DuplicateNumber(_)
            | TelephonyError::TooManyNumbers
            | TelephonyError::NumberNotAssigned(_) => "inbound_numbers",
            TelephonyError::BlacklistTooLong => "blacklist_e164",
            TelephonyError::TooManyWindows => "business_hours",
            TelephonyError::HandoffIsInbound(_) => "handoff_e164",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Telephony {
    pub inbound_numbers: Vec<InboundNumber>,
    pub handoff_e164: Option<E164>,
    pub max_call_duration: Option<MaxCallDuration>,
    pub business_hours: Vec<BusinessHours>,
    pub blacklist_e164: Vec<E164>,
}

impl Telephony {
    pub fn max_call_duration_seconds(&self) -> u32 {
        self.max_call_duration
            .map_or(DEFAULT_MAX_CALL_DURATION_SECONDS, MaxCallDuration::seconds)
    }

    /// The number an outbound call to `to` is made from: `requested_from` if it is one of the
    /// establishment's inbound numbers, else the first of them. Refused when `to` is on the
    /// blacklist, the requested number is not the establishment's, or it has no number.
    pub fn outbound_caller_id(
        &self,
        requested_from: Option<&E164>,
        to: &E164,
    ) -> Result<E164, OutboundRefusal> {
        if self.blacklist_e164.contains(to) {
            return Err(OutboundRefusal::Blacklisted);
        }
        match requested_from {
            Some(from) if self.inbound_numbers.iter().any(|n| n.e164 == *from) => Ok(from.clone()),
            Some(_) => Err(OutboundRefusal::CallerIdNotOwned),
            None => self
                .inbound_numbers
                .first()
                .map(|n| n.e164.clone())
                .ok_or(OutboundRefusal::NoCallerId),
        }
    }

    pub fn decide(&self, command: TelephonyCommand) -> Result<Vec<TelephonyEvent>, TelephonyError> {
        use TelephonyEvent as E;
        let TelephonyCommand::Update { patch, by } = command;
        let mut events = Vec::new();

        let numbers = patch
            .inbound_numbers
            .unwrap_or_else(|| self.inbound_numbers.clone());
        if numbers.len() > MAX_INBOUND_NUMBERS {
            return Err(TelephonyError::TooManyNumbers);
        }
        let mut seen = HashSet::new();
        for n in &numbers {
            if !seen.insert(&n.e164) {
                return Err(TelephonyError::DuplicateNumber(n.e164.to_string()));
            }
        }
        let handoff = patch
            .handoff_e164
            .unwrap_or_else(|| self.handoff_e164.clone());
        if let Some(h) = &handoff {
            if seen.contains(h) {
                return Err(TelephonyError::HandoffIsInbound(h.to_string()));
            }
        }
        if numbers != self.inbound_numbers {
            let before: BTreeSet<&E164> = self.inbound_numbers.iter().map(|n| &n.e164).collect();
            let after: BTreeSet<&E164> = numbers.iter().map(|n| &n.e164).collect();
            if by == NumberAuthority::Establishment {
                if let Some(new) = after.difference(&before).next() {
                    return Err(TelephonyError::NumberNotAssigned(new.to_string()));
                }
            }
            events.push(E::InboundNumbersReplaced {
                added: after.difference(&before).map(|n| (*n).clone()).collect(),
                removed: before.difference(&after).map(|n| (*n).clone()).collect(),
                numbers,
            });
        }
        if handoff != self.handoff_e164 {
            events.push(E::HandoffNumberChanged { e164: handoff });
        }
        if let Some(seconds) = patch.max_call_duration_seconds {
            if seconds.seconds() != self.max_call_duration_seconds() {
                events.push(E::MaxCallDurationChanged { seconds });
            }
        }
        if let Some(windows) = patch.business_hours {
            if windows.len() > MAX_BUSINESS_HOURS_WINDOWS {
                return Err(TelephonyError::TooManyWindows);
            }
            if windows != self.business_hours {
                events.push(E::BusinessHoursChanged { windows });
            }
        }
        if let Some(list) = patch.blacklist_e164 {
            let list: Vec<E164> = list
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if list.len() > MAX_BLACKLIST {
                return Err(TelephonyError::BlacklistTooLong);
            }
            if list != self.blacklist_e164 {
                events.push(E::BlacklistChanged { numbers: list });
            }
        }
        Ok(events)
    }
}

impl Aggregate for Telephony {
    const TYPE: &'static str = "Telephony";
    type Command = TelephonyCommand;
    type Event = TelephonyEvent;
    type Error = TelephonyError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: TelephonyEvent) {
        use TelephonyEvent as E;
        match event {
            E::InboundNumbersReplaced { numbers, .. } => self.inbound_numbers = numbers,
            E::HandoffNumberChanged { e164 } => self.handoff_e164 = e164,
            E::MaxCallDurationChanged { seconds } => self.max_call_duration = Some(seconds),
            E::BusinessHoursChanged { windows } => self.business_hours = windows,
            E::BlacklistChanged { numbers } => self.blacklist_e164 = numbers,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Routing.

/// One row of the routing model (frozen contract, PRD Appendix E.4): what an incoming call to
/// `to_e164` needs to be routed.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingEntry {
    pub to_e164: String,
    pub provider: Provider,
    pub establishment_id: String,
    pub agent_id: String,
    /// The agent's active version; `None` until one is published.
    pub active_version_id: Option<String>,
    pub timezone: Timezone,
    pub business_hours: Vec<BusinessHours>,
    /// Blocked callers, E.164.
    pub blacklist: HashSet<String>,
    pub handoff_e164: Option<String>,
    pub max_call_duration_seconds: u32,
}

/// Where an accepted call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    pub establishment_id: String,
    pub agent_id: String,
    pub version_id: String,
    pub max_call_duration_seconds: u32,
    pub handoff_e164: Option<String>,
}

/// Why a call is not put through. New reasons (runtime missing, not ready, draining) join here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No establishment has this number.
    UnknownNumber,
    BlacklistedCaller {
        establishment_id: String,
    },
    NoPublishedVersion {
        establishment_id: String,
        agent_id: String,
    },
    OutsideBusinessHours {
        establishment_id: String,
    },
}

impl Rejection {
    /// Stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::UnknownNumber => "unknown_number",
            Rejection::BlacklistedCaller { .. } => "blacklisted_caller",
            Rejection::NoPublishedVersion { .. } => "no_published_version",
            Rejection::OutsideBusinessHours { .. } => "outside_business_hours",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    Accept(RouteTarget),
    Reject(Rejection),
}

/// Whether `from` is on the blacklist: exact match first (callers arrive in E.164), then the
/// number's E.164 form when it was written differently.
fn blacklisted(blacklist: &HashSet<String>, from: &str) -> bool {
    if blacklist.is_empty() {
        return false;
    }
    let from = from.trim();
    if blacklist.contains(from) {
        return true;
    }
    let canonical = from.starts_with('+') && from[1..].bytes().all(|b| b.is_ascii_digit());
    !canonical
        && from
            .parse::<E164>()
            .is_ok_and(|n| blacklist.contains(n.as_str()))
}

/// Decides what happens to a call to the number `entry` was found for (`None`: the number is
/// not routed), from caller `from`, at `now`. Pure: same inputs, same answer.
///
/// Checks, in order: known number, caller not blacklisted, agent has an active version, within
/// business hours.
pub fn route(entry: Option<&RoutingEntry>, from: &str, now: DateTime<Utc>) -> RouteDecision {
    let Some(e) = entry else {
        return RouteDecision::Reject(Rejection::UnknownNumber);
    };
    if blacklisted(&e.blacklist, from) {
        return RouteDecision::Reject(Rejection::BlacklistedCaller {
            establishment_id: e.establishment_id.clone(),
        });
    }
    let Some(version_id) = &e.active_version_id else {
        return RouteDecision::Reject(Rejection::NoPublishedVersion {
            establishment_id: e.establishment_id.clone(),
            agent_id: e.agent_id.clone(),
        });
    };
    if !open_at(&e.business_hours, e.timezone, now) {
        return RouteDecision::Reject(Rejection::OutsideBusinessHours {
            establishment_id: e.establishment_id.clone(),
        });
    }
    RouteDecision::Accept(RouteTarget {
        establishment_id: e.establishment_id.clone(),
        agent_id: e.agent_id.clone(),
        version_id: version_id.clone(),
        max_call_duration_seconds: e.max_call_duration_seconds,
        handoff_e164: e.handoff_e164.clone(),
    })
}

#[cfg(test)]
mod tests;
