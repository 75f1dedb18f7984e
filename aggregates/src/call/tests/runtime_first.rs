//! The runtime first and Twilio later (and the other way round): one call either way.

use super::*;

#[test]
fn a_runtime_event_for_an_unknown_call_opens_it() {
    let events = F::with(())
        .given_no_previous_events()
        .when(runtime(1, RuntimeEvent::CallStarted { started_at: t(1) }))
        .inspect_result()
        .unwrap();
    assert!(matches!(
        &events[0],
        E::CallOpened { opened_by: OpenedBy::Runtime, call_sid: Some(s), agent_version_id: Some(v), .. }
            if *s == sid() && v == "agv_3"
    ));
    assert!(matches!(&events[1], E::RuntimeCallStarted { .. }));
    assert_eq!(
        events[2],
        changed(
            CallStatus::Ringing,
            CallStatus::InProgress,
            StatusCause::Runtime,
            1
        )
    );
}

#[test]
fn runtime_first_then_twilio_merges_into_one_call() {
    let call = run(
        Call::default(),
        [
            runtime(1, RuntimeEvent::CallStarted { started_at: t(1) }),
            runtime(2, segment(2)),
            C::ReceiveInbound {
                open: opening(OpenedBy::IncomingWebhook, Some(sid())),
                decision: accepted(),
            },
            C::RecordTwilioStatus {
                open: Some(opening(OpenedBy::StatusCallback, Some(sid()))),
                callback: cb(1, TwilioCallStatus::Ringing),
            },
            C::RecordTwilioStatus {
                open: Some(opening(OpenedBy::StatusCallback, Some(sid()))),
                callback: cb(3, TwilioCallStatus::Completed),
            },
        ],
    )
    .unwrap();
    assert_eq!(call.id, "call_1");
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.runtime.segments, 1);
    assert!(call.routing.is_some());
}

#[test]
fn twilio_first_then_runtime_merges_into_one_call() {
    let call = run(
        Call::default(),
        [
            C::RecordTwilioStatus {
                open: Some(opening(OpenedBy::StatusCallback, Some(sid()))),
                callback: cb(2, TwilioCallStatus::InProgress),
            },
            runtime(3, RuntimeEvent::CallStarted { started_at: t(3) }),
            runtime(4, segment(4)),
        ],
    )
    .unwrap();
    assert_eq!(call.status, CallStatus::InProgress);
    assert!(call.runtime.started);
    assert_eq!(call.agent_version_id.as_deref(), Some("agv_3"));
}

#[test]
fn the_runtime_ending_the_call_sets_its_final_status_but_twilio_duration_wins() {
    let ended = RuntimeEvent::CallEnded {
        ended_at: t(600),
        duration_seconds: Some(598),
        final_status: TerminalStatus::Completed,
        hangup_by: Some(HangupBy::Customer),
        segment_count: Some(1),
    };
    let call = run(replay(in_progress()), [runtime(600, ended.clone())]).unwrap();
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.duration_seconds, Some(598));
    let mut done = cb(3, TwilioCallStatus::Completed);
    done.call_duration = Some(600);
    let call = run(
        call,
        [
            C::RecordTwilioStatus {
                open: None,
                callback: done,
            },
            // A second call_ended (another key) changes nothing.
            runtime(601, ended),
        ],
    )
    .unwrap();
    assert_eq!(call.duration_seconds, Some(600));
    assert_eq!(call.status, CallStatus::Completed);
}

#[test]
fn the_media_stream_ending_after_a_handoff_keeps_the_call_live() {
    let call = run(
        replay(in_progress()),
        [
            C::RequestHandoff {
                reason: "customer_requested_human".into(),
                to: e164("+14158675310"),
                requested_by: Requester::User {
                    user_id: "usr_op".into(),
                },
                at: t(10),
            },
            C::RecordHandoffStarted { at: t(11) },
            runtime(
                12,
                RuntimeEvent::CallEnded {
                    ended_at: t(12),
                    duration_seconds: Some(12),
                    final_status: TerminalStatus::Completed,
                    hangup_by: Some(HangupBy::System),
                    segment_count: None,
                },
            ),
        ],
    )
    .unwrap();
    assert_eq!(call.status, CallStatus::HandoffCompleted);
    let call = run(call, [status(3, TwilioCallStatus::Completed)]).unwrap();
    assert_eq!(call.status, CallStatus::Completed);
}
