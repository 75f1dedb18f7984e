//! Tool-proxy invocations: recorded on the call of the runtime's establishment only, with
//! their outcome; counters only in the state.

use super::*;
use serde_json::json;

fn request() -> ToolProxyRequest {
    ToolProxyRequest {
        tool_call_id: "tc_1".into(),
        tool: "calendar".into(),
        operation: "create_event".into(),
        integration_id: "int_1".into(),
        credential_version: 2,
        arguments: json!({"summary": "Visit"}),
        runtime_id: "rt_1".into(),
        at: t(10),
    }
}

#[test]
fn a_proxy_request_lands_on_the_call_of_its_establishment_only() {
    F::with(())
        .given(routed_inbound())
        .when(C::RequestToolProxy {
            establishment_id: "est_other".into(),
            request: request(),
        })
        .then_expect_error(CallError::EstablishmentMismatch);
    F::with(())
        .given(routed_inbound())
        .when(C::RequestToolProxy {
            establishment_id: "est_1".into(),
            request: request(),
        })
        .then_expect_events(vec![E::ToolProxyRequested { request: request() }]);
    F::with(())
        .given_no_previous_events()
        .when(C::RequestToolProxy {
            establishment_id: "est_1".into(),
            request: request(),
        })
        .then_expect_error(CallError::NotFound);
}

#[test]
fn an_outcome_is_a_success_or_a_failure_and_only_counted_in_the_state() {
    let ok = ToolProxyOutcome {
        tool_call_id: "tc_1".into(),
        result: json!({"event_id": "abc"}),
        error: serde_json::Value::Null,
        provider_status: Some(200),
        latency_ms: 12,
        at: t(11),
    };
    let failed = ToolProxyOutcome {
        error: json!({"code": "provider_error"}),
        ..ok.clone()
    };
    let mut given = routed_inbound();
    given.push(E::ToolProxyRequested { request: request() });
    F::with(())
        .given(given.clone())
        .when(C::RecordToolProxyOutcome {
            outcome: ok.clone(),
        })
        .then_expect_events(vec![E::ToolProxySucceeded {
            outcome: ok.clone(),
        }]);
    given.push(E::ToolProxyFailed { outcome: failed });
    let call = replay(given);
    assert_eq!(
        call.tool_proxy,
        ToolProxyProgress {
            requested: 1,
            succeeded: 0,
            failed: 1
        }
    );
}
