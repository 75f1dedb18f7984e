//! Twilio status callbacks: forward-only status, deduplication, any order, AMD.

use super::*;

#[test]
fn a_callback_moves_the_status_forward_and_is_recorded() {
    F::with(())
        .given(routed_inbound())
        .when(status(2, TwilioCallStatus::InProgress))
        .then_expect_events(vec![
            E::TwilioStatusReceived {
                callback: cb(2, TwilioCallStatus::InProgress),
            },
            changed(
                CallStatus::Ringing,
                CallStatus::InProgress,
                by_callback(2),
                2,
            ),
        ]);
}

#[test]
fn a_callback_seen_before_is_ignored_by_its_sequence_number() {
    let mut given = in_progress();
    given.insert(
        2,
        E::TwilioStatusReceived {
            callback: cb(2, TwilioCallStatus::InProgress),
        },
    );
    F::with(())
        .given(given)
        .when(status(2, TwilioCallStatus::InProgress))
        .then_expect_events(vec![]);
}

#[test]
fn callbacks_without_a_sequence_number_are_deduplicated_on_their_status() {
    let mut c = cb(0, TwilioCallStatus::Completed);
    c.sequence_number = None;
    c.call_duration = Some(42);
    let first = run(
        replay(in_progress()),
        [C::RecordTwilioStatus {
            open: None,
            callback: c.clone(),
        }],
    )
    .unwrap();
    assert_eq!(first.status, CallStatus::Completed);
    assert_eq!(
        first
            .decide(C::RecordTwilioStatus {
                open: None,
                callback: c
            })
            .unwrap(),
        vec![]
    );
}

#[test]
fn a_terminal_status_is_final() {
    let mut given = in_progress();
    given.push(changed(
        CallStatus::InProgress,
        CallStatus::Completed,
        by_callback(3),
        3,
    ));
    F::with(())
        .given(given)
        .when(status(4, TwilioCallStatus::Failed))
        .then_expect_events(vec![E::TwilioStatusReceived {
            callback: cb(4, TwilioCallStatus::Failed),
        }]);
}

#[test]
fn a_late_ringing_never_reopens_a_call() {
    let call = run(
        replay(routed_inbound()),
        [
            status(3, TwilioCallStatus::Completed),
            status(1, TwilioCallStatus::Ringing),
            status(2, TwilioCallStatus::InProgress),
        ],
    )
    .unwrap();
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.twilio.callbacks, 3);
}

#[test]
fn a_late_callback_still_brings_its_answered_by_and_duration() {
    let mut answered = cb(2, TwilioCallStatus::InProgress);
    answered.answered_by = Some(AnsweredBy::MachineStart);
    let mut done = cb(3, TwilioCallStatus::Completed);
    done.call_duration = Some(202);
    let call = run(
        replay(routed_inbound()),
        [
            C::RecordTwilioStatus {
                open: None,
                callback: done,
            },
            C::RecordTwilioStatus {
                open: None,
                callback: answered,
            },
        ],
    )
    .unwrap();
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.answered_by, Some(AnsweredBy::MachineStart));
    assert_eq!(call.duration_seconds, Some(202));
}

fn permutations(items: &[u32]) -> Vec<Vec<u32>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let head = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, head);
            out.push(p);
        }
    }
    out
}

#[test]
fn callbacks_in_any_order_and_replayed_give_the_same_call() {
    let callback = |seq: u32| {
        let mut c = match seq {
            0 => cb(0, TwilioCallStatus::Queued),
            1 => cb(1, TwilioCallStatus::Ringing),
            2 => cb(2, TwilioCallStatus::InProgress),
            _ => cb(3, TwilioCallStatus::Completed),
        };
        if seq >= 2 {
            c.answered_by = Some(AnsweredBy::Human);
        }
        if seq == 3 {
            c.call_duration = Some(95);
        }
        C::RecordTwilioStatus {
            open: Some(opening(OpenedBy::StatusCallback, Some(sid()))),
            callback: c,
        }
    };
    let mut finals = Vec::new();
    for order in permutations(&[0, 1, 2, 3]) {
        // Every callback twice: once in this order, then all of them again reversed.
        let commands = order.iter().chain(order.iter().rev()).map(|s| callback(*s));
        let call = run(Call::default(), commands).unwrap();
        finals.push(call);
    }
    let first = &finals[0];
    assert_eq!(first.status, CallStatus::Completed);
    assert_eq!(first.duration_seconds, Some(95));
    assert_eq!(first.answered_by, Some(AnsweredBy::Human));
    assert_eq!(first.twilio.callbacks, 4);
    assert_eq!(
        first.twilio.seen.iter().collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    for f in &finals {
        assert_eq!(f, first);
    }
}

#[test]
fn an_unknown_call_sid_opens_the_call_from_the_callback() {
    let events = F::with(())
        .given_no_previous_events()
        .when(C::RecordTwilioStatus {
            open: Some(opening(OpenedBy::StatusCallback, Some(sid()))),
            callback: cb(1, TwilioCallStatus::Ringing),
        })
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![
            opened_inbound(OpenedBy::StatusCallback),
            E::TwilioStatusReceived {
                callback: cb(1, TwilioCallStatus::Ringing)
            },
        ]
    );
    F::with(())
        .given_no_previous_events()
        .when(status(1, TwilioCallStatus::Ringing))
        .then_expect_error(CallError::NotFound);
}

#[test]
fn a_source_of_another_establishment_cannot_merge_into_a_call() {
    let mut open = opening(OpenedBy::StatusCallback, Some(sid()));
    open.establishment_id = "est_other".into();
    F::with(())
        .given(routed_inbound())
        .when(C::RecordTwilioStatus {
            open: Some(open),
            callback: cb(2, TwilioCallStatus::InProgress),
        })
        .then_expect_error(CallError::EstablishmentMismatch);
}

#[test]
fn a_callback_for_another_call_sid_is_refused() {
    let mut c = cb(2, TwilioCallStatus::InProgress);
    c.call_sid = other_sid();
    F::with(())
        .given(routed_inbound())
        .when(C::RecordTwilioStatus {
            open: None,
            callback: c,
        })
        .then_expect_error(CallError::CallSidMismatch {
            bound: sid().to_string(),
            given: other_sid().to_string(),
        });
}

#[test]
fn the_async_amd_result_is_recorded_and_wins_over_callbacks() {
    let mut answered = cb(2, TwilioCallStatus::InProgress);
    answered.answered_by = Some(AnsweredBy::Human);
    let amd = C::RecordAnsweredBy {
        call_sid: sid(),
        answered_by: AnsweredBy::MachineEndBeep,
        detection_duration_ms: Some(3100),
        at: t(5),
    };
    for order in [[0, 1], [1, 0]] {
        let cmds = order.map(|i| {
            if i == 0 {
                amd.clone()
            } else {
                C::RecordTwilioStatus {
                    open: None,
                    callback: answered.clone(),
                }
            }
        });
        let call = run(replay(routed_inbound()), cmds).unwrap();
        assert_eq!(call.answered_by, Some(AnsweredBy::MachineEndBeep));
        // A replayed AMD callback adds nothing.
        assert_eq!(call.decide(amd.clone()).unwrap(), vec![]);
    }
}
