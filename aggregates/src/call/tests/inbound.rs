//! Inbound routing: the incoming-call webhook's decision and the status it leads to.

use super::*;

#[test]
fn an_incoming_call_opens_a_ringing_call_with_its_routing_decision() {
    F::with(())
        .given_no_previous_events()
        .when(C::ReceiveInbound {
            open: opening(OpenedBy::IncomingWebhook, Some(sid())),
            decision: accepted(),
        })
        .then_expect_events(routed_inbound());
    let call = replay(routed_inbound());
    assert_eq!(call.agent_version_id.as_deref(), Some("agv_3"));
    assert_eq!(call.status, CallStatus::Ringing);
    assert_eq!(
        opened_inbound(OpenedBy::IncomingWebhook).unique_claims(),
        vec![ClaimOp::Claim {
            scope: CALL_SID_CLAIM,
            value: sid().to_string()
        }]
    );
}

#[test]
fn a_repeated_incoming_webhook_keeps_the_first_decision() {
    F::with(())
        .given(routed_inbound())
        .when(C::ReceiveInbound {
            open: opening(OpenedBy::IncomingWebhook, Some(sid())),
            decision: RoutingDecision::RejectedBlacklisted,
        })
        .then_expect_events(vec![]);
}

#[test]
fn each_routing_decision_leads_to_the_status_its_twiml_produces() {
    let dial = Fallback::DialHandoff {
        to: e164("+14158675310"),
    };
    let cases = [
        (accepted(), CallStatus::Ringing),
        (RoutingDecision::RejectedUnknownNumber, CallStatus::NoAnswer),
        (RoutingDecision::RejectedBlacklisted, CallStatus::NoAnswer),
        (
            RoutingDecision::OutsideBusinessHours {
                fallback: dial.clone(),
            },
            CallStatus::HandoffCompleted,
        ),
        (
            RoutingDecision::RuntimeUnavailable {
                reason: RuntimeUnavailableReason::Draining,
                runtime_id: Some("rt_1".into()),
                fallback: Fallback::Hangup,
            },
            CallStatus::Completed,
        ),
        (
            RoutingDecision::NoPublishedVersion {
                agent_id: Some("agt_1".into()),
                fallback: dial,
            },
            CallStatus::HandoffCompleted,
        ),
    ];
    for (decision, expected) in cases {
        let call = run(
            Call::default(),
            [C::ReceiveInbound {
                open: opening(OpenedBy::IncomingWebhook, Some(sid())),
                decision: decision.clone(),
            }],
        )
        .unwrap();
        assert_eq!(call.status, expected, "{decision:?}");
        assert_eq!(call.routing.as_ref(), Some(&decision));
    }
}

#[test]
fn routing_decisions_serialise_with_an_outcome_tag() {
    let d = RoutingDecision::RuntimeUnavailable {
        reason: RuntimeUnavailableReason::NotReady,
        runtime_id: None,
        fallback: Fallback::DialHandoff {
            to: e164("+14158675310"),
        },
    };
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(
        v,
        json!({"outcome": "runtime_unavailable", "reason": "not_ready",
               "fallback": {"action": "dial_handoff", "to": "+14158675310"}})
    );
    assert_eq!(serde_json::from_value::<RoutingDecision>(v).unwrap(), d);
    assert_eq!(
        serde_json::to_value(RoutingDecision::RejectedBlacklisted).unwrap(),
        json!({"outcome": "rejected_blacklisted"})
    );
    assert_eq!(d.outcome(), "runtime_unavailable");
}
