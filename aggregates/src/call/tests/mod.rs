//! Given/when/then tests of the call aggregate, one module per family of rules; the shared
//! fixtures (a routed inbound call, a queued outbound call, callbacks, runtime events) live here.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use serde::Deserialize;
use serde_json::{json, Value};

use super::*;
use crate::common::{ClaimOp, UniqueClaims, E164};
use CallCommand as C;
use CallEvent as E;

type F = TestFramework<Call>;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::seconds(s)
}

fn sid() -> CallSid {
    "CA0123456789abcdef0123456789abcdef".parse().unwrap()
}

fn other_sid() -> CallSid {
    "CAffffffffffffffffffffffffffffffff".parse().unwrap()
}

fn e164(s: &str) -> E164 {
    s.parse().unwrap()
}

fn party(s: &str) -> Party {
    s.parse().unwrap()
}

fn opening(by: OpenedBy, call_sid: Option<CallSid>) -> CallOpening {
    CallOpening {
        call_id: "call_1".into(),
        establishment_id: "est_1".into(),
        direction: Direction::Inbound,
        call_sid,
        from: party("+14158675309"),
        to: party("+18005551212"),
        agent_id: None,
        agent_version_id: None,
        opened_by: by,
        at: t(0),
    }
}

fn opened_inbound(by: OpenedBy) -> E {
    E::CallOpened {
        call_id: "call_1".into(),
        establishment_id: "est_1".into(),
        direction: Direction::Inbound,
        provider: "twilio".into(),
        call_sid: Some(sid()),
        from: party("+14158675309"),
        to: party("+18005551212"),
        agent_id: None,
        agent_version_id: None,
        status: CallStatus::Ringing,
        opened_by: by,
        at: t(0),
    }
}

fn accepted() -> RoutingDecision {
    RoutingDecision::Accepted {
        agent_id: "agt_1".into(),
        agent_version_id: "agv_3".into(),
        runtime_id: "rt_1".into(),
    }
}

fn routed_inbound() -> Vec<E> {
    vec![
        opened_inbound(OpenedBy::IncomingWebhook),
        E::InboundCallRouted {
            decision: accepted(),
            at: t(0),
        },
    ]
}

fn changed(from: CallStatus, to: CallStatus, cause: StatusCause, at: i64) -> E {
    E::CallStatusChanged {
        from,
        to,
        cause,
        at: t(at),
    }
}

fn cb(seq: u32, status: TwilioCallStatus) -> StatusCallback {
    StatusCallback {
        call_sid: sid(),
        sequence_number: Some(seq),
        status,
        timestamp: Some(t(seq as i64)),
        call_duration: None,
        answered_by: None,
        machine_detection_duration_ms: None,
        sip_response_code: None,
        received_at: t(100),
    }
}

fn status(seq: u32, status: TwilioCallStatus) -> C {
    C::RecordTwilioStatus {
        open: None,
        callback: cb(seq, status),
    }
}

fn by_callback(seq: u32) -> StatusCause {
    StatusCause::TwilioCallback {
        sequence_number: Some(seq),
    }
}

fn in_progress() -> Vec<E> {
    let mut e = routed_inbound();
    e.push(changed(
        CallStatus::Ringing,
        CallStatus::InProgress,
        by_callback(2),
        2,
    ));
    e
}

fn origin(n: u32) -> RuntimeOrigin {
    RuntimeOrigin {
        runtime_id: "rt_1".into(),
        event_id: format!("evt_{n}"),
        occurred_at: t(n as i64),
    }
}

fn runtime(n: u32, event: RuntimeEvent) -> C {
    let mut open = opening(OpenedBy::Runtime, Some(sid()));
    open.agent_id = Some("agt_1".into());
    open.agent_version_id = Some("agv_3".into());
    C::IngestRuntimeEvent {
        open,
        origin: origin(n),
        event,
    }
}

fn segment(n: u32) -> RuntimeEvent {
    RuntimeEvent::TranscriptSegment(TranscriptSegment {
        segment_id: format!("seg_{n}"),
        speaker: Speaker::Customer,
        text: "I need to update my service plan.".into(),
        started_at: t(n as i64),
        ended_at: t(n as i64 + 1),
        confidence: Some(0.91),
    })
}

/// Runs commands one after another (as the bus would), returning the final state.
fn run(state: Call, commands: impl IntoIterator<Item = C>) -> Result<Call, CallError> {
    let mut state = state;
    for c in commands {
        for e in state.decide(c)? {
            state.apply(e);
        }
    }
    Ok(state)
}

fn replay(events: Vec<E>) -> Call {
    let mut s = Call::default();
    for e in events {
        s.apply(e);
    }
    s
}

/// Facts as the agent and the telephony policy give them for a call that may be made.
fn dialable() -> OutboundFacts {
    OutboundFacts {
        agent_version: Ok("agv_1".into()),
        caller_id: Ok(e164("+18005551212")),
    }
}

fn queue_outbound() -> C {
    queue_outbound_with(dialable())
}

fn queue_outbound_with(facts: OutboundFacts) -> C {
    C::QueueOutbound {
        call_id: "call_2".into(),
        establishment_id: "est_1".into(),
        agent_id: "agt_1".into(),
        to: e164("+14158675309"),
        facts,
        requested_by: Requester::User {
            user_id: "usr_op".into(),
        },
        metadata: json!({"lead_id": "lead_9"}).as_object().unwrap().clone(),
        machine_detection: Some(MachineDetection::Enable),
        time_limit_seconds: Some(1800),
        at: t(0),
    }
}

fn outbound_queued() -> Vec<E> {
    F::with(())
        .given_no_previous_events()
        .when(queue_outbound())
        .inspect_result()
        .unwrap()
}

fn outbound_requested() -> Vec<E> {
    let mut e = outbound_queued();
    e.push(E::PlacementRequested { at: t(1) });
    e
}

fn handoff() -> C {
    C::RequestHandoff {
        reason: "customer_requested_human".into(),
        to: e164("+14158675310"),
        requested_by: Requester::User {
            user_id: "usr_op".into(),
        },
        at: t(10),
    }
}

fn reap(now: i64) -> C {
    C::Reap {
        now: t(now),
        max_duration_seconds: 3600,
        grace_seconds: 300,
        reason: "no terminal callback".into(),
    }
}

mod artefacts;
mod handoff;
mod inbound;
mod outbound;
mod outbound_refusals;
mod reaper;
mod runtime_first;
mod tool_proxy;
mod twilio_callbacks;
mod values;
