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

#[derive(Debug, Clone, PartialEq)]
pub enum TelephonyCommand {
    Update(TelephonyPatch),
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
}

impl TelephonyError {
    /// The request field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            TelephonyError::DuplicateNumber(_) | TelephonyError::TooManyNumbers => {
                "inbound_numbers"
            }
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
        let TelephonyCommand::Update(patch) = command;
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
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use serde_json::json;
    use TelephonyEvent as E;

    type F = TestFramework<Telephony>;

    fn n(s: &str) -> E164 {
        s.parse().unwrap()
    }

    fn inbound(e164: &str, agent: &str) -> InboundNumber {
        InboundNumber {
            provider: Provider::Twilio,
            e164: n(e164),
            routing_agent_id: agent.into(),
        }
    }

    fn update(patch: TelephonyPatch) -> TelephonyCommand {
        TelephonyCommand::Update(patch)
    }

    fn hours(days: &[Day], start: &str, end: &str) -> BusinessHours {
        BusinessHours::new(days.to_vec(), start.parse().unwrap(), end.parse().unwrap()).unwrap()
    }

    const A: &str = "+14158675301";
    const B: &str = "+14158675302";
    const C: &str = "+14158675303";

    #[test]
    fn adding_numbers_claims_them_and_removing_releases_them() {
        let given = vec![E::InboundNumbersReplaced {
            numbers: vec![inbound(A, "agt_1"), inbound(B, "agt_1")],
            added: vec![n(A), n(B)],
            removed: vec![],
        }];
        let expected = E::InboundNumbersReplaced {
            numbers: vec![inbound(B, "agt_2"), inbound(C, "agt_1")],
            added: vec![n(C)],
            removed: vec![n(A)],
        };
        F::with(())
            .given(given)
            .when(update(TelephonyPatch {
                inbound_numbers: Some(vec![inbound(B, "agt_2"), inbound(C, "agt_1")]),
                ..Default::default()
            }))
            .then_expect_events(vec![expected.clone()]);
        assert_eq!(
            expected.unique_claims(),
            vec![
                ClaimOp::Release {
                    scope: PHONE_NUMBER_CLAIM,
                    value: A.into()
                },
                ClaimOp::Claim {
                    scope: PHONE_NUMBER_CLAIM,
                    value: C.into()
                },
            ]
        );
    }

    #[test]
    fn a_number_cannot_be_listed_twice() {
        F::with(())
            .given_no_previous_events()
            .when(update(TelephonyPatch {
                inbound_numbers: Some(vec![inbound(A, "agt_1"), inbound(A, "agt_2")]),
                ..Default::default()
            }))
            .then_expect_error(TelephonyError::DuplicateNumber(A.into()));
    }

    #[test]
    fn the_number_list_is_bounded() {
        let many: Vec<InboundNumber> = (0..=MAX_INBOUND_NUMBERS)
            .map(|i| inbound(&format!("+1415867{:04}", 2000 + i), "agt_1"))
            .collect();
        F::with(())
            .given_no_previous_events()
            .when(update(TelephonyPatch {
                inbound_numbers: Some(many),
                ..Default::default()
            }))
            .then_expect_error(TelephonyError::TooManyNumbers);
    }

    #[test]
    fn the_handoff_number_cannot_be_an_inbound_number() {
        F::with(())
            .given(vec![E::InboundNumbersReplaced {
                numbers: vec![inbound(A, "agt_1")],
                added: vec![n(A)],
                removed: vec![],
            }])
            .when(update(TelephonyPatch {
                handoff_e164: Some(Some(n(A))),
                ..Default::default()
            }))
            .then_expect_error(TelephonyError::HandoffIsInbound(A.into()));
    }

    #[test]
    fn a_patch_records_only_what_changed() {
        let given = vec![
            E::HandoffNumberChanged { e164: Some(n(B)) },
            E::MaxCallDurationChanged {
                seconds: 900.try_into().unwrap(),
            },
        ];
        F::with(())
            .given(given.clone())
            .when(update(TelephonyPatch {
                handoff_e164: Some(Some(n(B))),
                max_call_duration_seconds: Some(600.try_into().unwrap()),
                ..Default::default()
            }))
            .then_expect_events(vec![E::MaxCallDurationChanged {
                seconds: 600.try_into().unwrap(),
            }]);
        F::with(())
            .given(given)
            .when(update(TelephonyPatch {
                handoff_e164: Some(Some(n(B))),
                max_call_duration_seconds: Some(900.try_into().unwrap()),
                ..Default::default()
            }))
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_handoff_number_can_be_cleared() {
        F::with(())
            .given(vec![E::HandoffNumberChanged { e164: Some(n(B)) }])
            .when(update(TelephonyPatch {
                handoff_e164: Some(None),
                ..Default::default()
            }))
            .then_expect_events(vec![E::HandoffNumberChanged { e164: None }]);
    }

    #[test]
    fn the_blacklist_is_a_sorted_set() {
        F::with(())
            .given_no_previous_events()
            .when(update(TelephonyPatch {
                blacklist_e164: Some(vec![n(C), n(A), n(C)]),
                ..Default::default()
            }))
            .then_expect_events(vec![E::BlacklistChanged {
                numbers: vec![n(A), n(C)],
            }]);
    }

    #[test]
    fn business_hours_are_bounded() {
        let w = hours(&[Day::Mon], "08:00", "09:00");
        F::with(())
            .given_no_previous_events()
            .when(update(TelephonyPatch {
                business_hours: Some(vec![w; MAX_BUSINESS_HOURS_WINDOWS + 1]),
                ..Default::default()
            }))
            .then_expect_error(TelephonyError::TooManyWindows);
    }

    #[test]
    fn call_durations_are_bounded() {
        assert!(MaxCallDuration::try_from(29).is_err());
        assert!(MaxCallDuration::try_from(30).is_ok());
        assert!(MaxCallDuration::try_from(14_400).is_ok());
        assert!(MaxCallDuration::try_from(14_401).is_err());
    }

    #[test]
    fn times_and_windows_are_parsed_strictly() {
        assert_eq!("08:30".parse::<LocalTime>().unwrap().minutes(), 510);
        assert_eq!("24:00".parse::<LocalTime>().unwrap(), LocalTime::END_OF_DAY);
        for bad in [
            "8:30", "08:60", "24:01", "25:00", "0830", "08:3a", "", "08:30:00",
        ] {
            assert!(bad.parse::<LocalTime>().is_err(), "{bad}");
        }
        let ok: BusinessHours = serde_json::from_value(
            json!({"days": ["fri", "mon", "mon"], "start": "08:00", "end": "22:00"}),
        )
        .unwrap();
        assert_eq!(ok.days(), &[Day::Mon, Day::Fri]);
        for bad in [
            json!({"days": [], "start": "08:00", "end": "22:00"}),
            json!({"days": ["mon"], "start": "08:00", "end": "08:00"}),
            json!({"days": ["mon"], "start": "24:00", "end": "08:00"}),
            json!({"days": ["monday"], "start": "08:00", "end": "22:00"}),
            json!({"days": ["mon"], "start": "08:00", "end": "22:00", "tz": "UTC"}),
        ] {
            assert!(
                serde_json::from_value::<BusinessHours>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    // --- routing ------------------------------------------------------------------------

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn entry(tz: &str, windows: Vec<BusinessHours>) -> RoutingEntry {
        RoutingEntry {
            to_e164: A.into(),
            provider: Provider::Twilio,
            establishment_id: "est_1".into(),
            agent_id: "agt_1".into(),
            active_version_id: Some("agv_1".into()),
            timezone: tz.parse().unwrap(),
            business_hours: windows,
            blacklist: HashSet::from(["+14158671111".to_string()]),
            handoff_e164: Some("+14158671234".into()),
            max_call_duration_seconds: 900,
        }
    }

    fn accepted(d: &RouteDecision) -> bool {
        matches!(d, RouteDecision::Accept(_))
    }

    fn rejected(d: &RouteDecision) -> &'static str {
        match d {
            RouteDecision::Reject(r) => r.code(),
            RouteDecision::Accept(_) => "accepted",
        }
    }

    const WEEKDAYS: [Day; 5] = [Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri];

    #[test]
    fn a_call_to_a_routed_number_is_accepted_with_agent_and_version() {
        let e = entry("America/Sao_Paulo", vec![]);
        assert_eq!(
            route(Some(&e), "+15550102244", at("2026-01-10T00:00:00Z")),
            RouteDecision::Accept(RouteTarget {
                establishment_id: "est_1".into(),
                agent_id: "agt_1".into(),
                version_id: "agv_1".into(),
                max_call_duration_seconds: 900,
                handoff_e164: Some("+14158671234".into()),
            })
        );
    }

    #[test]
    fn a_call_to_an_unknown_number_is_rejected() {
        assert_eq!(
            route(None, "+15550102244", at("2026-01-10T00:00:00Z")),
            RouteDecision::Reject(Rejection::UnknownNumber)
        );
    }

    #[test]
    fn a_blacklisted_caller_is_rejected_in_any_spelling() {
        let e = entry("UTC", vec![]);
        let now = at("2026-01-10T12:00:00Z");
        assert_eq!(
            rejected(&route(Some(&e), "+14158671111", now)),
            "blacklisted_caller"
        );
        assert_eq!(
            rejected(&route(Some(&e), "+1 (415) 867-1111", now)),
            "blacklisted_caller"
        );
        assert!(accepted(&route(Some(&e), "+14158671112", now)));
        // Withheld or non-phone callers are not blacklisted by accident.
        assert!(accepted(&route(Some(&e), "anonymous", now)));
        assert!(accepted(&route(Some(&e), "client:alice", now)));
    }

    #[test]
    fn an_agent_without_a_published_version_cannot_take_calls() {
        let mut e = entry("UTC", vec![]);
        e.active_version_id = None;
        assert_eq!(
            route(Some(&e), "+15550102244", at("2026-01-10T12:00:00Z")),
            RouteDecision::Reject(Rejection::NoPublishedVersion {
                establishment_id: "est_1".into(),
                agent_id: "agt_1".into()
            })
        );
    }

    #[test]
    fn the_blacklist_is_checked_before_anything_else_about_the_establishment() {
        let mut e = entry("UTC", vec![hours(&[Day::Mon], "08:00", "09:00")]);
        e.active_version_id = None;
        assert_eq!(
            rejected(&route(Some(&e), "+14158671111", at("2026-01-10T12:00:00Z"))),
            "blacklisted_caller"
        );
    }

    #[test]
    fn business_hours_are_judged_in_the_establishments_time_zone() {
        // São Paulo is UTC-3 (no DST since 2019). Sat 2026-01-10 is a Saturday.
        let e = entry(
            "America/Sao_Paulo",
            vec![hours(&WEEKDAYS, "08:00", "22:00")],
        );
        // Mon 2026-01-12 10:59 UTC = 07:59 local: closed; 11:00 UTC = 08:00 local: open.
        assert_eq!(
            rejected(&route(Some(&e), "+15550102244", at("2026-01-12T10:59:00Z"))),
            "outside_business_hours"
        );
        assert!(accepted(&route(
            Some(&e),
            "+15550102244",
            at("2026-01-12T11:00:00Z")
        )));
        // Mon 21:59 local = Tue 00:59 UTC: still Monday there, open.
        assert!(accepted(&route(
            Some(&e),
            "+15550102244",
            at("2026-01-13T00:59:00Z")
        )));
        // 22:00 local: closed (end is exclusive).
        assert_eq!(
            rejected(&route(Some(&e), "+15550102244", at("2026-01-13T01:00:00Z"))),
            "outside_business_hours"
        );
        // Saturday 12:00 local: closed.
        assert_eq!(
            rejected(&route(Some(&e), "+15550102244", at("2026-01-10T15:00:00Z"))),
            "outside_business_hours"
        );
    }

    #[test]
    fn historical_dst_of_sao_paulo_is_respected() {
        // In January 2019 São Paulo still observed DST (UTC-2).
        let e = entry(
            "America/Sao_Paulo",
            vec![hours(&WEEKDAYS, "08:00", "22:00")],
        );
        // Mon 2019-01-14 10:30 UTC = 08:30 local (UTC-2): open; at UTC-3 it would be 07:30.
        assert!(accepted(&route(Some(&e), "+1", at("2019-01-14T10:30:00Z"))));
        // Same wall-clock check in 2026 (UTC-3): 07:30 local, closed.
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-01-12T10:30:00Z"))),
            "outside_business_hours"
        );
    }

    #[test]
    fn new_york_spring_forward_moves_opening_an_hour_earlier_in_utc() {
        // DST starts Sun 2026-03-08 02:00 EST → 03:00 EDT. Window: every day 09:00–17:00.
        let all = [
            Day::Mon,
            Day::Tue,
            Day::Wed,
            Day::Thu,
            Day::Fri,
            Day::Sat,
            Day::Sun,
        ];
        let e = entry("America/New_York", vec![hours(&all, "09:00", "17:00")]);
        // Saturday before (EST, UTC-5): opens 14:00 UTC.
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-03-07T13:30:00Z"))),
            "outside_business_hours"
        );
        assert!(accepted(&route(Some(&e), "+1", at("2026-03-07T14:00:00Z"))));
        // Sunday of the change (EDT, UTC-4): opens 13:00 UTC.
        assert!(accepted(&route(Some(&e), "+1", at("2026-03-08T13:30:00Z"))));
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-03-08T12:59:00Z"))),
            "outside_business_hours"
        );
        // Closes 17:00 EDT = 21:00 UTC.
        assert!(accepted(&route(Some(&e), "+1", at("2026-03-08T20:59:00Z"))));
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-03-08T21:00:00Z"))),
            "outside_business_hours"
        );
    }

    #[test]
    fn a_window_starting_in_the_skipped_hour_opens_when_the_clock_jumps() {
        // 02:00–03:00 does not exist on 2026-03-08 in New York; a window from 02:30 opens at
        // the jump (03:00 EDT = 07:00 UTC), not an hour later.
        let e = entry(
            "America/New_York",
            vec![hours(&[Day::Sun], "02:30", "04:00")],
        );
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-03-08T06:59:00Z"))),
            "outside_business_hours"
        );
        assert!(accepted(&route(Some(&e), "+1", at("2026-03-08T07:00:00Z"))));
    }

    #[test]
    fn new_york_fall_back_judges_the_repeated_hour_by_the_wall_clock() {
        // DST ends Sun 2026-11-01 02:00 EDT → 01:00 EST. Window Sun 01:00–01:30.
        let e = entry(
            "America/New_York",
            vec![hours(&[Day::Sun], "01:00", "01:30")],
        );
        // First 01:15 (EDT) = 05:15 UTC, second 01:15 (EST) = 06:15 UTC: both open.
        assert!(accepted(&route(Some(&e), "+1", at("2026-11-01T05:15:00Z"))));
        assert!(accepted(&route(Some(&e), "+1", at("2026-11-01T06:15:00Z"))));
        // 01:45 either time: closed.
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-11-01T05:45:00Z"))),
            "outside_business_hours"
        );
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-11-01T06:45:00Z"))),
            "outside_business_hours"
        );
        // A 09:00 opening on that Sunday is 14:00 UTC (EST), not 13:00.
        let e = entry(
            "America/New_York",
            vec![hours(&[Day::Sun], "09:00", "17:00")],
        );
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-11-01T13:30:00Z"))),
            "outside_business_hours"
        );
        assert!(accepted(&route(Some(&e), "+1", at("2026-11-01T14:00:00Z"))));
    }

    #[test]
    fn a_window_crossing_midnight_belongs_to_the_day_it_opens() {
        // Fri 22:00 → Sat 02:00, Europe/Paris (UTC+1 in January). Fri 2026-01-16.
        let e = entry("Europe/Paris", vec![hours(&[Day::Fri], "22:00", "02:00")]);
        // Fri 21:59 local: closed; Fri 22:00: open; Sat 01:59: open; Sat 02:00: closed.
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-01-16T20:59:00Z"))),
            "outside_business_hours"
        );
        assert!(accepted(&route(Some(&e), "+1", at("2026-01-16T21:00:00Z"))));
        assert!(accepted(&route(Some(&e), "+1", at("2026-01-17T00:59:00Z"))));
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-01-17T01:00:00Z"))),
            "outside_business_hours"
        );
        // Thursday night → Friday early morning is not covered (Thursday is not listed).
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-01-16T00:30:00Z"))),
            "outside_business_hours"
        );
        // Saturday 22:30: closed (Saturday is not listed).
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-01-17T21:30:00Z"))),
            "outside_business_hours"
        );
    }

    #[test]
    fn a_window_ending_at_midnight_covers_the_last_minute_of_the_day() {
        let e = entry("UTC", vec![hours(&[Day::Sat], "20:00", "24:00")]);
        assert!(accepted(&route(Some(&e), "+1", at("2026-01-10T23:59:59Z"))));
        assert_eq!(
            rejected(&route(Some(&e), "+1", at("2026-01-11T00:00:00Z"))),
            "outside_business_hours"
        );
        let crossing_to_midnight = entry("UTC", vec![hours(&[Day::Sat], "20:00", "00:00")]);
        assert!(accepted(&route(
            Some(&crossing_to_midnight),
            "+1",
            at("2026-01-10T23:59:00Z")
        )));
        assert_eq!(
            rejected(&route(
                Some(&crossing_to_midnight),
                "+1",
                at("2026-01-11T00:00:00Z")
            )),
            "outside_business_hours"
        );
    }

    #[test]
    fn no_business_hours_means_open_around_the_clock() {
        let e = entry("Asia/Tokyo", vec![]);
        for t in [
            "2026-01-10T00:00:00Z",
            "2026-01-11T15:30:00Z",
            "2026-07-04T03:00:00Z",
        ] {
            assert!(accepted(&route(Some(&e), "+1", at(t))), "{t}");
        }
    }

    #[test]
    fn provider_and_days_keep_their_wire_names() {
        use crate::common::assert_wire_form;
        assert_wire_form(Provider::ALL, &["twilio"]);
        assert_wire_form(Day::ALL, &["mon", "tue", "wed", "thu", "fri", "sat", "sun"]);
        // Events as stored before the enums shared one macro.
        let stored = json!({"InboundNumbersReplaced": {
            "numbers": [{"provider": "twilio", "e164": A, "routing_agent_id": "agt_1"}],
            "added": [A], "removed": []}});
        assert_eq!(
            serde_json::from_value::<TelephonyEvent>(stored).unwrap(),
            E::InboundNumbersReplaced {
                numbers: vec![inbound(A, "agt_1")],
                added: vec![n(A)],
                removed: vec![],
            }
        );
        let stored = json!({"BusinessHoursChanged": {
            "windows": [{"days": ["mon", "sun"], "start": "08:00", "end": "22:00"}]}});
        assert_eq!(
            serde_json::from_value::<TelephonyEvent>(stored).unwrap(),
            E::BusinessHoursChanged {
                windows: vec![hours(&[Day::Sun, Day::Mon], "08:00", "22:00")]
            }
        );
        assert_eq!("skype".parse::<Provider>().unwrap_err().field, "provider");
    }

    #[test]
    fn an_outbound_call_is_made_from_an_own_number_and_never_to_a_blacklisted_one() {
        use crate::call::OutboundRefusal as R;
        let mut t = Telephony::default();
        assert_eq!(t.outbound_caller_id(None, &n(C)), Err(R::NoCallerId));
        t.apply(E::InboundNumbersReplaced {
            numbers: vec![inbound(A, "agt_1"), inbound(B, "agt_1")],
            added: vec![n(A), n(B)],
            removed: vec![],
        });
        t.apply(E::BlacklistChanged {
            numbers: vec![n("+14158671111")],
        });
        assert_eq!(t.outbound_caller_id(None, &n(C)), Ok(n(A)));
        assert_eq!(t.outbound_caller_id(Some(&n(B)), &n(C)), Ok(n(B)));
        assert_eq!(
            t.outbound_caller_id(Some(&n(C)), &n(C)),
            Err(R::CallerIdNotOwned)
        );
        assert_eq!(
            t.outbound_caller_id(Some(&n(A)), &n("+14158671111")),
            Err(R::Blacklisted)
        );
    }
}
