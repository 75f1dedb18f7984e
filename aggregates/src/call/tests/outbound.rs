//! Outbound lifecycle: queueing, placement requested once, placed, failed.

use super::*;

#[test]
fn an_outbound_request_opens_a_queued_call_with_its_request() {
    let events = outbound_queued();
    assert!(matches!(
        &events[0],
        E::CallOpened {
            direction: Direction::Outbound,
            status: CallStatus::Queued,
            call_sid: None,
            opened_by: OpenedBy::OutboundRequest,
            agent_version_id: Some(v),
            from,
            ..
        } if v == "agv_1" && from.as_str() == "+18005551212"
    ));
    assert!(matches!(
        &events[1],
        E::OutboundCallQueued { agent_id, time_limit_seconds: Some(1800), .. } if agent_id == "agt_1"
    ));
    let call = replay(events);
    assert_eq!(call.status, CallStatus::Queued);
    assert_eq!(call.agent_id.as_deref(), Some("agt_1"));
    assert_eq!(call.agent_version_id.as_deref(), Some("agv_1"));
}

#[test]
fn an_outbound_call_is_queued_only_once() {
    F::with(())
        .given(outbound_queued())
        .when(queue_outbound())
        .then_expect_error(CallError::AlreadyExists);
}

#[test]
fn placement_is_requested_at_most_once_so_no_call_is_dialled_twice() {
    F::with(())
        .given(outbound_queued())
        .when(C::RequestPlacement { at: t(1) })
        .then_expect_events(vec![E::PlacementRequested { at: t(1) }]);
    F::with(())
        .given(outbound_requested())
        .when(C::RequestPlacement { at: t(2) })
        .then_expect_error(CallError::PlacementAlreadyRequested);
}

#[test]
fn only_outbound_calls_are_placed() {
    F::with(())
        .given(routed_inbound())
        .when(C::RequestPlacement { at: t(1) })
        .then_expect_error(CallError::NotOutbound);
}

#[test]
fn a_placed_call_records_and_claims_its_call_sid() {
    let events = F::with(())
        .given(outbound_requested())
        .when(C::RecordPlacement {
            call_sid: sid(),
            at: t(2),
        })
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![E::CallPlaced {
            call_sid: sid(),
            at: t(2)
        }]
    );
    assert_eq!(
        events[0].unique_claims(),
        vec![ClaimOp::Claim {
            scope: CALL_SID_CLAIM,
            value: sid().to_string()
        }]
    );
    let mut all = outbound_requested();
    all.extend(events);
    let call = replay(all);
    assert_eq!(call.placement, Placement::Placed);
    assert_eq!(call.status, CallStatus::Queued);
}

#[test]
fn placement_needs_a_request_first() {
    F::with(())
        .given(outbound_queued())
        .when(C::RecordPlacement {
            call_sid: sid(),
            at: t(2),
        })
        .then_expect_error(CallError::PlacementNotRequested);
}

#[test]
fn a_placement_failure_ends_the_call_as_failed() {
    F::with(())
        .given(outbound_requested())
        .when(C::RecordPlacementFailure {
            http_status: Some(400),
            code: Some(21211),
            message: "The 'To' number is not a valid phone number.".into(),
            at: t(2),
        })
        .then_expect_events(vec![
            E::PlacementFailed {
                http_status: Some(400),
                code: Some(21211),
                message: "The 'To' number is not a valid phone number.".into(),
                at: t(2),
            },
            changed(
                CallStatus::Queued,
                CallStatus::Failed,
                StatusCause::PlacementFailed,
                2,
            ),
        ]);
}

#[test]
fn a_status_callback_before_the_placement_answer_binds_the_sid_and_placement_merges() {
    // Twilio's first callback can beat the REST answer to us: the webhook finds the call by
    // the call_id in its StatusCallback URL and binds the sid; CallPlaced then agrees.
    let call = run(
        replay(outbound_requested()),
        [
            status(0, TwilioCallStatus::Queued),
            status(1, TwilioCallStatus::Ringing),
            C::RecordPlacement {
                call_sid: sid(),
                at: t(2),
            },
        ],
    )
    .unwrap();
    assert_eq!(call.call_sid, Some(sid()));
    assert_eq!(call.placement, Placement::Placed);
    assert_eq!(call.status, CallStatus::Ringing);
    let err = run(
        call,
        [C::RecordPlacement {
            call_sid: other_sid(),
            at: t(3),
        }],
    )
    .unwrap_err();
    assert_eq!(err, CallError::AlreadyPlaced);
}

#[test]
fn placing_with_another_sid_than_the_bound_one_is_refused() {
    let mut given = outbound_requested();
    given.push(E::CallSidBound {
        call_sid: sid(),
        at: t(1),
    });
    F::with(())
        .given(given)
        .when(C::RecordPlacement {
            call_sid: other_sid(),
            at: t(2),
        })
        .then_expect_error(CallError::CallSidMismatch {
            bound: sid().to_string(),
            given: other_sid().to_string(),
        });
}
