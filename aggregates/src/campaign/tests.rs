//! Given/when/then tests of the campaign lifecycle and the dialling rules.

use chrono::{DateTime, Utc};

use super::rules::*;
use super::*;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn spec() -> CampaignSpec {
    CampaignSpec {
        name: "January winback".into(),
        agent_id: "agt_1".into(),
        agent_version_id: "agv_1".into(),
        lead_filter: LeadFilter::default(),
        calls_per_minute: 6,
        schedule: Schedule {
            timezone: "America/Sao_Paulo".parse().unwrap(),
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            start: TimeOfDay::hm(9, 0),
            end: TimeOfDay::hm(18, 0),
        },
        max_concurrent_calls: 5,
        retry: RetryPolicy {
            max_attempts: 3,
            backoff_minutes: vec![10, 30],
            on: vec![RetryOn::Busy, RetryOn::NoAnswer, RetryOn::Machine],
        },
        callee_window: Window::default_callee(),
    }
}

fn lead(phone: &str) -> LeadFacts {
    LeadFacts {
        phone: phone.parse().unwrap(),
        timezone: None,
        do_not_call: false,
    }
}

// Monday 2027-01-04 13:00 UTC = 10:00 in São Paulo, 08:00 in New York, 05:00 in Los Angeles.
const MONDAY_10_SP: &str = "2027-01-04T13:00:00Z";

fn created() -> Campaign {
    let mut c = Campaign::default();
    for e in c
        .decide(CampaignCommand::Create {
            campaign_id: "cmp_1".into(),
            establishment_id: "est_1".into(),
            spec: Box::new(spec()),
            by: "usr_1".into(),
            at: at(MONDAY_10_SP),
        })
        .unwrap()
    {
        c.apply(e);
    }
    c
}

fn run(c: &mut Campaign, cmd: CampaignCommand) -> Result<(), CampaignError> {
    for e in c.decide(cmd)? {
        c.apply(e);
    }
    Ok(())
}

#[test]
fn a_campaign_runs_pauses_resumes_and_a_cancelled_one_stays_cancelled() {
    let mut c = created();
    let t = at(MONDAY_10_SP);
    run(
        &mut c,
        CampaignCommand::Start {
            by: "u".into(),
            at: t,
        },
    )
    .unwrap();
    assert_eq!(c.status, CampaignStatus::Running);
    run(
        &mut c,
        CampaignCommand::Pause {
            reason: "circuit_breaker".into(),
            by: "dialer".into(),
            at: t,
        },
    )
    .unwrap();
    assert_eq!(c.pause_reason.as_deref(), Some("circuit_breaker"));
    run(
        &mut c,
        CampaignCommand::Resume {
            by: "u".into(),
            at: t,
        },
    )
    .unwrap();
    assert_eq!(
        (c.status, c.pause_reason.clone()),
        (CampaignStatus::Running, None)
    );
    run(
        &mut c,
        CampaignCommand::Cancel {
            by: "u".into(),
            at: t,
        },
    )
    .unwrap();
    assert!(matches!(
        c.decide(CampaignCommand::Resume {
            by: "u".into(),
            at: t
        }),
        Err(CampaignError::WrongStatus {
            status: CampaignStatus::Cancelled,
            ..
        })
    ));
}

#[test]
fn a_campaign_with_an_impossible_pace_is_refused() {
    let mut s = spec();
    s.calls_per_minute = 0;
    let r = Campaign::default().decide(CampaignCommand::Create {
        campaign_id: "cmp_1".into(),
        establishment_id: "est_1".into(),
        spec: Box::new(s),
        by: "u".into(),
        at: at(MONDAY_10_SP),
    });
    assert!(matches!(r, Err(CampaignError::InvalidSpec(m)) if m.contains("calls_per_minute")));
}

#[test]
fn a_lead_is_dialled_inside_the_schedule_and_its_own_window() {
    // Given a São Paulo lead, when it is 10:00 there on a Monday, then dial it.
    assert_eq!(
        verdict(&spec(), &lead("+5511912345678"), &[], at(MONDAY_10_SP)),
        Verdict::Now { attempt: 1 }
    );
}

#[test]
fn a_callee_before_eight_in_their_own_zone_waits_even_inside_the_campaign_schedule() {
    // 10:00 in São Paulo is 05:00 in Los Angeles.
    assert_eq!(
        verdict(&spec(), &lead("+14155550100"), &[], at(MONDAY_10_SP)),
        Verdict::Later {
            reason: Reason::OutsideCalleeWindow,
            not_before: None
        }
    );
    // An explicit zone on the lead wins over the number's.
    let mut l = lead("+14155550100");
    l.timezone = Some("America/Sao_Paulo".into());
    assert_eq!(
        verdict(&spec(), &l, &[], at(MONDAY_10_SP)),
        Verdict::Now { attempt: 1 }
    );
}

#[test]
fn outside_the_campaign_schedule_nobody_is_dialled() {
    // Saturday, and Monday 19:00 in São Paulo.
    for t in ["2027-01-09T13:00:00Z", "2027-01-04T22:00:00Z"] {
        assert_eq!(
            verdict(&spec(), &lead("+5511912345678"), &[], at(t)),
            Verdict::Later {
                reason: Reason::OutsideSchedule,
                not_before: None
            }
        );
    }
}

#[test]
fn a_number_of_several_possible_zones_is_dialled_only_when_all_are_inside() {
    // An Australian mobile may be in Perth or Sydney: 09:00 in Perth is 12:00 in Sydney.
    let mut s = spec();
    s.schedule.timezone = "UTC".parse().unwrap();
    s.schedule.days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .map(String::from)
        .to_vec();
    s.schedule.start = TimeOfDay::hm(0, 0);
    s.schedule.end = TimeOfDay::hm(23, 59);
    let mobile = lead("+61412345678");
    assert!(callee_zones(&mobile).len() > 1);
    // 01:00 UTC: 09:00 Perth, 12:00 Sydney: all inside.
    assert_eq!(
        verdict(&s, &mobile, &[], at("2027-01-04T01:00:00Z")),
        Verdict::Now { attempt: 1 }
    );
    // 23:00 UTC: 07:00 Perth (outside), 10:00 Sydney.
    assert!(matches!(
        verdict(&s, &mobile, &[], at("2027-01-04T23:00:00Z")),
        Verdict::Later {
            reason: Reason::OutsideCalleeWindow,
            ..
        }
    ));
}

#[test]
fn an_unknown_zone_is_never_dialled() {
    let mut l = lead("+5511912345678");
    l.timezone = Some("Mars/Olympus".into());
    assert_eq!(
        verdict(&spec(), &l, &[], at(MONDAY_10_SP)),
        Verdict::Never {
            reason: Reason::UnknownTimezone
        }
    );
}

#[test]
fn do_not_call_opt_out_and_a_human_conversation_end_the_lead() {
    let t = at(MONDAY_10_SP);
    let mut l = lead("+5511912345678");
    l.do_not_call = true;
    assert_eq!(
        verdict(&spec(), &l, &[], t),
        Verdict::Never {
            reason: Reason::DoNotCall
        }
    );
    for (o, r) in [
        (AttemptOutcome::Human, Reason::Completed),
        (AttemptOutcome::OptOut, Reason::OptedOut),
    ] {
        let a = [Attempt {
            number: 1,
            outcome: o,
            dialled_at: t,
        }];
        assert_eq!(
            verdict(&spec(), &lead("+5511912345678"), &a, t),
            Verdict::Never { reason: r }
        );
    }
}

#[test]
fn retries_follow_the_outcome_the_backoff_and_the_attempt_limit() {
    let t = at(MONDAY_10_SP);
    let l = lead("+5511912345678");
    let busy = |n, m| Attempt {
        number: n,
        outcome: AttemptOutcome::Busy,
        dialled_at: t + chrono::Duration::minutes(m),
    };
    // Given a busy first attempt at t, then the second waits 10 minutes,
    assert_eq!(
        verdict(&spec(), &l, &[busy(1, 0)], t + chrono::Duration::minutes(9)),
        Verdict::Later {
            reason: Reason::RetryScheduled,
            not_before: Some(t + chrono::Duration::minutes(10))
        }
    );
    assert_eq!(
        verdict(
            &spec(),
            &l,
            &[busy(1, 0)],
            t + chrono::Duration::minutes(10)
        ),
        Verdict::Now { attempt: 2 }
    );
    // the third 30 after the second, and there is no fourth.
    assert_eq!(
        verdict(
            &spec(),
            &l,
            &[busy(1, 0), busy(2, 10)],
            t + chrono::Duration::minutes(40)
        ),
        Verdict::Now { attempt: 3 }
    );
    assert_eq!(
        verdict(
            &spec(),
            &l,
            &[busy(1, 0), busy(2, 10), busy(3, 40)],
            t + chrono::Duration::days(1)
        ),
        Verdict::Never {
            reason: Reason::AttemptsExhausted
        }
    );
    // A failure the policy does not retry ends the lead.
    let failed = [Attempt {
        number: 1,
        outcome: AttemptOutcome::Failed,
        dialled_at: t,
    }];
    assert_eq!(
        verdict(&spec(), &l, &failed, t + chrono::Duration::hours(1)),
        Verdict::Never {
            reason: Reason::OutcomeNotRetried
        }
    );
}

#[test]
fn pacing_is_smooth_and_never_bursts_after_idling() {
    let t = at(MONDAY_10_SP);
    // 60 per minute: one a second.
    assert!(due_dials(Some(t), t + chrono::Duration::milliseconds(999), 60, 5).is_empty());
    assert_eq!(
        due_dials(Some(t), t + chrono::Duration::seconds(2), 60, 5).len(),
        2
    );
    // After an hour away, at most `catch_up` at once.
    assert_eq!(
        due_dials(Some(t), t + chrono::Duration::hours(1), 60, 1).len(),
        1
    );
    assert_eq!(due_dials(None, t, 60, 1), vec![t]);
}

#[test]
fn the_breaker_trips_when_most_recent_attempts_fail() {
    use AttemptOutcome::*;
    assert!(
        !breaker_trips(&[Failed, Failed], 5, 0.5),
        "too few to judge"
    );
    assert!(breaker_trips(
        &[Failed, Failed, Failed, Busy, Human],
        5,
        0.5
    ));
    assert!(!breaker_trips(
        &[Failed, Busy, NoAnswer, Human, Machine],
        5,
        0.5
    ));
}

#[test]
fn outcomes_are_read_from_the_call() {
    assert_eq!(
        AttemptOutcome::of_call("completed", Some("machine_start"), false),
        AttemptOutcome::Machine
    );
    assert_eq!(
        AttemptOutcome::of_call("completed", Some("human"), false),
        AttemptOutcome::Human
    );
    assert_eq!(
        AttemptOutcome::of_call("busy", None, false),
        AttemptOutcome::Busy
    );
    assert_eq!(
        AttemptOutcome::of_call("ringing", None, true),
        AttemptOutcome::InFlight
    );
}

#[test]
fn area_codes_pick_the_zone_where_a_country_spans_several() {
    let z = |n: &str| super::zones::candidate_zones(&n.parse().unwrap());
    assert_eq!(z("+12125550100"), vec![chrono_tz::Tz::America__New_York]);
    assert_eq!(z("+14155550100"), vec![chrono_tz::Tz::America__Los_Angeles]);
    assert_eq!(z("+5592912345678"), vec![chrono_tz::Tz::America__Manaus]);
    assert_eq!(z("+442071838750"), vec![chrono_tz::Tz::Europe__London]);
}
