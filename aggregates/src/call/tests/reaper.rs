//! The reaper: overdue calls end, calls within their time and ended calls are left alone.

use super::*;

#[test]
fn the_reaper_ends_an_overdue_answered_call_as_completed() {
    F::with(())
        .given(in_progress())
        .when(reap(3900))
        .then_expect_events(vec![
            E::CallReaped {
                reason: "no terminal callback".into(),
                previous_status: CallStatus::InProgress,
                at: t(3900),
            },
            changed(
                CallStatus::InProgress,
                CallStatus::Completed,
                StatusCause::Reaper,
                3900,
            ),
        ]);
}

#[test]
fn the_reaper_ends_an_overdue_unanswered_call_as_failed() {
    let call = run(replay(outbound_requested()), [reap(4000)]).unwrap();
    assert_eq!(call.status, CallStatus::Failed);
    assert!(call.reaped);
}

#[test]
fn the_reaper_leaves_calls_within_their_time_and_ended_calls_alone() {
    F::with(())
        .given(in_progress())
        .when(reap(3899))
        .then_expect_error(CallError::NotOverdue { deadline: t(3900) });
    let mut ended = in_progress();
    ended.push(changed(
        CallStatus::InProgress,
        CallStatus::Busy,
        by_callback(3),
        3,
    ));
    F::with(())
        .given(ended)
        .when(reap(9999))
        .then_expect_events(vec![]);
}

#[test]
fn a_terminal_callback_after_the_reaper_keeps_the_status_and_adds_the_duration() {
    let mut done = cb(3, TwilioCallStatus::Busy);
    done.call_duration = Some(4000);
    let call = run(
        replay(in_progress()),
        [
            reap(3900),
            C::RecordTwilioStatus {
                open: None,
                callback: done,
            },
        ],
    )
    .unwrap();
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.duration_seconds, Some(4000));
}
