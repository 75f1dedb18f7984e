//! Outbound refusals: the facts gathered from the agent and the establishment's telephony
//! decide whether an outbound call may be made, and the call refuses on them.

use super::*;
use crate::agent::{Agent, AgentEvent};
use crate::telephony::{InboundNumber, Provider, Telephony, TelephonyEvent};

const OURS: &str = "+18005551212";
const ALSO_OURS: &str = "+18005551213";
const CALLEE: &str = "+14158675309";

fn telephony(numbers: &[&str], blacklist: &[&str]) -> Telephony {
    let mut t = Telephony::default();
    t.apply(TelephonyEvent::InboundNumbersReplaced {
        numbers: numbers
            .iter()
            .map(|n| InboundNumber {
                provider: Provider::Twilio,
                e164: e164(n),
                routing_agent_id: "agt_1".into(),
            })
            .collect(),
        added: numbers.iter().map(|n| e164(n)).collect(),
        removed: vec![],
    });
    t.apply(TelephonyEvent::BlacklistChanged {
        numbers: blacklist.iter().map(|n| e164(n)).collect(),
    });
    t
}

fn drafted(id: &str, number: u32) -> AgentEvent {
    AgentEvent::VersionDrafted {
        version_id: id.into(),
        number,
        brain: serde_json::from_value(json!({
            "name": id, "prompt": "You are a helpful assistant.",
            "model": {"provider": "openai", "model": "gpt-4.1-mini", "temperature": 0.7, "max_tokens": 1024}
        }))
        .unwrap(),
        created_by: "usr_admin".into(),
    }
}

/// Agent `agt_1` of `est_1` with the given version history.
fn agent(versions: Vec<AgentEvent>) -> Agent {
    agent_of("est_1", versions)
}

fn agent_of(establishment_id: &str, versions: Vec<AgentEvent>) -> Agent {
    let mut a = Agent::default();
    a.apply(AgentEvent::AgentCreated {
        agent_id: "agt_1".into(),
        establishment_id: establishment_id.into(),
        name: "Nova".into(),
        description: String::new(),
        created_by: "usr_admin".into(),
    });
    for e in versions {
        a.apply(e);
    }
    a
}

/// agv_1 published, superseded by agv_4, superseded by agv_2 (active); agv_4 then archived;
/// agv_3 a draft.
fn agent_with_history() -> Agent {
    agent(versions())
}

fn versions() -> Vec<AgentEvent> {
    vec![
        drafted("agv_1", 1),
        AgentEvent::VersionPublished {
            version_id: "agv_1".into(),
            previous_version_id: None,
        },
        drafted("agv_4", 2),
        AgentEvent::VersionPublished {
            version_id: "agv_4".into(),
            previous_version_id: Some("agv_1".into()),
        },
        drafted("agv_2", 3),
        AgentEvent::VersionPublished {
            version_id: "agv_2".into(),
            previous_version_id: Some("agv_4".into()),
        },
        AgentEvent::VersionArchived {
            version_id: "agv_4".into(),
        },
        drafted("agv_3", 4),
    ]
}

fn gather(
    telephony: &Telephony,
    agent: &Agent,
    from: Option<&str>,
    pinned: Option<&str>,
) -> OutboundFacts {
    OutboundFacts::gather(
        telephony,
        agent,
        "est_1",
        from.map(e164).as_ref(),
        &e164(CALLEE),
        pinned,
    )
}

fn refused(facts: OutboundFacts, refusal: OutboundRefusal) {
    F::with(())
        .given_no_previous_events()
        .when(queue_outbound_with(facts))
        .then_expect_error(CallError::OutboundRefused(refusal));
}

#[test]
fn an_outbound_call_to_a_blacklisted_number_is_refused() {
    refused(
        gather(
            &telephony(&[OURS], &[CALLEE]),
            &agent_with_history(),
            None,
            None,
        ),
        OutboundRefusal::Blacklisted,
    );
}

#[test]
fn an_outbound_call_from_a_number_the_establishment_does_not_own_is_refused() {
    refused(
        gather(
            &telephony(&[OURS], &[]),
            &agent_with_history(),
            Some("+14158670000"),
            None,
        ),
        OutboundRefusal::CallerIdNotOwned,
    );
}

#[test]
fn an_outbound_call_needs_a_number_to_call_from() {
    refused(
        gather(&telephony(&[], &[]), &agent_with_history(), None, None),
        OutboundRefusal::NoCallerId,
    );
}

#[test]
fn an_outbound_call_needs_an_agent_with_a_published_version() {
    let only_a_draft = agent(vec![drafted("agv_1", 1)]);
    refused(
        gather(&telephony(&[OURS], &[]), &only_a_draft, None, None),
        OutboundRefusal::NoPublishedVersion,
    );
    // The agent is judged before the numbers, as the API always answered.
    refused(
        gather(&telephony(&[], &[CALLEE]), &only_a_draft, None, None),
        OutboundRefusal::NoPublishedVersion,
    );
}

#[test]
fn a_pinned_version_must_be_a_published_version_of_the_agent() {
    for (pinned, why) in [
        ("agv_3", "a draft"),
        ("agv_4", "published once, then archived"),
        ("agv_9", "not a version of this agent"),
    ] {
        let facts = gather(
            &telephony(&[OURS], &[]),
            &agent_with_history(),
            None,
            Some(pinned),
        );
        assert_eq!(
            facts.agent_version,
            Err(OutboundRefusal::VersionNotCallable {
                version_id: pinned.into()
            }),
            "{why}"
        );
        refused(
            facts,
            OutboundRefusal::VersionNotCallable {
                version_id: pinned.into(),
            },
        );
    }
}

#[test]
fn an_agent_of_another_establishment_or_no_agent_cannot_be_dialled() {
    let elsewhere = agent_of("est_2", versions());
    refused(
        gather(&telephony(&[OURS], &[]), &elsewhere, None, None),
        OutboundRefusal::AgentNotInEstablishment,
    );
    refused(
        gather(&telephony(&[OURS], &[]), &Agent::default(), None, None),
        OutboundRefusal::AgentNotInEstablishment,
    );
}

#[test]
fn an_accepted_outbound_call_records_its_version_and_caller_id() {
    let numbers = telephony(&[OURS, ALSO_OURS], &["+14158671111"]);
    let agent = agent_with_history();
    let opened = |from: &str, version: &str| E::CallOpened {
        call_id: "call_2".into(),
        establishment_id: "est_1".into(),
        direction: Direction::Outbound,
        provider: "twilio".into(),
        call_sid: None,
        from: party(from),
        to: party(CALLEE),
        agent_id: Some("agt_1".into()),
        agent_version_id: Some(version.into()),
        status: CallStatus::Queued,
        opened_by: OpenedBy::OutboundRequest,
        at: t(0),
    };
    let queued = E::OutboundCallQueued {
        agent_id: "agt_1".into(),
        requested_by: Requester::User {
            user_id: "usr_op".into(),
        },
        metadata: json!({"lead_id": "lead_9"}).as_object().unwrap().clone(),
        machine_detection: Some(MachineDetection::Enable),
        time_limit_seconds: Some(1800),
        at: t(0),
    };
    // No number asked for: the establishment's first; no version pinned: the active one.
    F::with(())
        .given_no_previous_events()
        .when(queue_outbound_with(gather(&numbers, &agent, None, None)))
        .then_expect_events(vec![opened(OURS, "agv_2"), queued.clone()]);
    // A number of the establishment asked for, and a superseded version pinned (a campaign).
    F::with(())
        .given_no_previous_events()
        .when(queue_outbound_with(gather(
            &numbers,
            &agent,
            Some(ALSO_OURS),
            Some("agv_1"),
        )))
        .then_expect_events(vec![opened(ALSO_OURS, "agv_1"), queued]);
}
