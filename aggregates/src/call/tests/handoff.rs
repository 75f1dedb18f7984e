//! Handoff to a human: requested, started, failed and retried.

use super::*;

#[test]
fn a_handoff_of_a_call_in_progress_is_initiated() {
    F::with(())
        .given(in_progress())
        .when(handoff())
        .then_expect_events(vec![
            E::HandoffRequested {
                reason: "customer_requested_human".into(),
                to: e164("+14158675310"),
                requested_by: Requester::User {
                    user_id: "usr_op".into(),
                },
                at: t(10),
            },
            changed(
                CallStatus::InProgress,
                CallStatus::HandoffInitiated,
                StatusCause::Handoff,
                10,
            ),
        ]);
}

#[test]
fn a_handoff_needs_a_call_in_progress() {
    F::with(())
        .given(routed_inbound())
        .when(handoff())
        .then_expect_error(CallError::NotInProgress {
            status: CallStatus::Ringing,
        });
    let mut ended = in_progress();
    ended.push(changed(
        CallStatus::InProgress,
        CallStatus::Completed,
        by_callback(3),
        3,
    ));
    F::with(())
        .given(ended)
        .when(handoff())
        .then_expect_error(CallError::CallEnded);
    let started = run(replay(in_progress()), [handoff()]).unwrap();
    assert_eq!(
        started.decide(handoff()).unwrap_err(),
        CallError::HandoffAlreadyInProgress
    );
}

#[test]
fn a_handoff_needs_the_provider_call_sid() {
    let mut open = opening(OpenedBy::Runtime, None);
    open.call_sid = None;
    let call = run(
        Call::default(),
        [C::IngestRuntimeEvent {
            open,
            origin: origin(1),
            event: RuntimeEvent::CallStarted { started_at: t(1) },
        }],
    )
    .unwrap();
    assert_eq!(call.status, CallStatus::InProgress);
    assert_eq!(
        call.decide(handoff()).unwrap_err(),
        CallError::NoProviderCallSid
    );
}

#[test]
fn a_started_handoff_completes_and_a_failed_one_returns_the_call_to_the_agent() {
    let requested = run(replay(in_progress()), [handoff()]).unwrap();
    let done = run(requested.clone(), [C::RecordHandoffStarted { at: t(11) }]).unwrap();
    assert_eq!(done.status, CallStatus::HandoffCompleted);
    assert_eq!(
        done.handoff,
        Handoff::Started {
            to: e164("+14158675310")
        }
    );
    let failed = run(
        requested,
        [C::RecordHandoffFailure {
            code: Some(21220),
            message: "call is not in progress".into(),
            at: t(11),
        }],
    )
    .unwrap();
    assert_eq!(failed.status, CallStatus::InProgress);
    assert_eq!(failed.handoff, Handoff::Failed);
    // ...and may be tried again.
    assert!(failed.decide(handoff()).is_ok());
    F::with(())
        .given(in_progress())
        .when(C::RecordHandoffStarted { at: t(11) })
        .then_expect_error(CallError::NoHandoffRequested);
}

#[test]
fn a_late_in_progress_callback_does_not_undo_a_handoff() {
    let call = run(
        replay(routed_inbound()),
        [
            status(2, TwilioCallStatus::InProgress),
            handoff(),
            status(1, TwilioCallStatus::Ringing),
            C::RecordTwilioStatus {
                open: None,
                callback: {
                    let mut c = cb(2, TwilioCallStatus::InProgress);
                    c.sequence_number = None;
                    c
                },
            },
        ],
    )
    .unwrap();
    assert_eq!(call.status, CallStatus::HandoffInitiated);
}
