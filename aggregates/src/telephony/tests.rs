//! Given/when/then tests of the telephony aggregate, its value types and the routing function.

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
    TelephonyCommand::Update {
        patch,
        by: NumberAuthority::Platform,
    }
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

#[test]
fn an_establishment_admin_reroutes_and_removes_held_numbers_but_cannot_add_a_new_one() {
    let given = vec![E::InboundNumbersReplaced {
        numbers: vec![inbound(A, "agt_1"), inbound(B, "agt_1")],
        added: vec![n(A), n(B)],
        removed: vec![],
    }];
    let by_establishment = |numbers| TelephonyCommand::Update {
        patch: TelephonyPatch {
            inbound_numbers: Some(numbers),
            ..Default::default()
        },
        by: NumberAuthority::Establishment,
    };
    // Re-routing a held number and dropping another: allowed.
    F::with(())
        .given(given.clone())
        .when(by_establishment(vec![inbound(A, "agt_2")]))
        .then_expect_events(vec![E::InboundNumbersReplaced {
            numbers: vec![inbound(A, "agt_2")],
            added: vec![],
            removed: vec![n(B)],
        }]);
    // A number the establishment does not hold: only the platform assigns it.
    F::with(())
        .given(given)
        .when(by_establishment(vec![
            inbound(A, "agt_1"),
            inbound(C, "agt_1"),
        ]))
        .then_expect_error(TelephonyError::NumberNotAssigned(C.into()));
    // The platform may.
    F::with(())
        .given_no_previous_events()
        .when(update(TelephonyPatch {
            inbound_numbers: Some(vec![inbound(C, "agt_1")]),
            ..Default::default()
        }))
        .then_expect_events(vec![E::InboundNumbersReplaced {
            numbers: vec![inbound(C, "agt_1")],
            added: vec![n(C)],
            removed: vec![],
        }]);
}
