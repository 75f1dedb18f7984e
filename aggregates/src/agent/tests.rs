//! Given/when/then tests of the agent aggregate and of the brain's value types.

use super::*;
use cqrs_es::test::TestFramework;
use serde_json::json;
use AgentCommand as C;
use AgentEvent as E;

type F = TestFramework<Agent>;

pub(crate) fn brain(name: &str) -> Brain {
    serde_json::from_value(json!({
        "name": name,
        "prompt": "You are a helpful assistant.",
        "model": {"provider": "openai", "model": "gpt-4.1-mini", "temperature": 0.7, "max_tokens": 1024},
        "tools": {"email": {"enabled": true}},
    }))
    .unwrap()
}

fn created() -> E {
    E::AgentCreated {
        agent_id: "agt_1".into(),
        establishment_id: "est_1".into(),
        name: "Nova".into(),
        description: "Concierge".into(),
        created_by: "usr_admin".into(),
    }
}

fn drafted(id: &str, number: u32) -> E {
    E::VersionDrafted {
        version_id: id.into(),
        number,
        brain: brain(id),
        created_by: "usr_admin".into(),
    }
}

fn published(id: &str, previous: Option<&str>) -> E {
    E::VersionPublished {
        version_id: id.into(),
        previous_version_id: previous.map(Into::into),
    }
}

/// v1 and v2 drafted, v1 published, then v2 published.
fn two_published() -> Vec<E> {
    vec![
        created(),
        drafted("agv_1", 1),
        published("agv_1", None),
        drafted("agv_2", 2),
        published("agv_2", Some("agv_1")),
    ]
}

fn v(id: &str) -> String {
    id.into()
}

#[test]
fn an_agent_is_created_once() {
    F::with(())
        .given_no_previous_events()
        .when(C::Create {
            agent_id: "agt_1".into(),
            establishment_id: "est_1".into(),
            name: "Nova".into(),
            description: "Concierge".into(),
            created_by: "usr_admin".into(),
        })
        .then_expect_events(vec![created()]);
    F::with(())
        .given(vec![created()])
        .when(C::Create {
            agent_id: "agt_1".into(),
            establishment_id: "est_1".into(),
            name: "Nova".into(),
            description: String::new(),
            created_by: "usr_admin".into(),
        })
        .then_expect_error(AgentError::AlreadyExists);
}

#[test]
fn commands_on_a_missing_agent_are_refused() {
    F::with(())
        .given_no_previous_events()
        .when(C::Publish {
            version_id: v("agv_1"),
        })
        .then_expect_error(AgentError::NotFound);
}

#[test]
fn an_update_records_only_what_changed() {
    F::with(())
        .given(vec![created()])
        .when(C::Update {
            name: Some("Nova".into()),
            description: Some("Support".into()),
        })
        .then_expect_events(vec![E::AgentUpdated {
            name: None,
            description: Some("Support".into()),
        }]);
    F::with(())
        .given(vec![created()])
        .when(C::Update {
            name: Some("Nova".into()),
            description: None,
        })
        .then_expect_events(vec![]);
}

#[test]
fn drafts_are_numbered_in_order_and_ids_are_unique() {
    F::with(())
        .given(vec![created(), drafted("agv_1", 1)])
        .when(C::DraftVersion {
            version_id: v("agv_2"),
            brain: brain("agv_2"),
            created_by: "usr_admin".into(),
        })
        .then_expect_events(vec![drafted("agv_2", 2)]);
    F::with(())
        .given(vec![created(), drafted("agv_1", 1)])
        .when(C::DraftVersion {
            version_id: v("agv_1"),
            brain: brain("again"),
            created_by: "usr_admin".into(),
        })
        .then_expect_error(AgentError::VersionExists);
}

#[test]
fn an_agent_has_a_bounded_number_of_versions() {
    let mut given = vec![created()];
    for i in 0..MAX_VERSIONS_PER_AGENT {
        given.push(drafted(&format!("agv_{i}"), i as u32 + 1));
    }
    F::with(())
        .given(given)
        .when(C::DraftVersion {
            version_id: v("agv_last"),
            brain: brain("last"),
            created_by: "usr_admin".into(),
        })
        .then_expect_error(AgentError::TooManyVersions);
}

#[test]
fn a_draft_can_be_edited() {
    let changes = BrainChanges {
        prompt: Some("Be brief.".to_string().try_into().unwrap()),
        ..Default::default()
    };
    F::with(())
        .given(vec![created(), drafted("agv_1", 1)])
        .when(C::EditDraft {
            version_id: v("agv_1"),
            changes: changes.clone(),
        })
        .then_expect_events(vec![E::DraftEdited {
            version_id: v("agv_1"),
            changes,
        }]);
}

#[test]
fn a_published_version_is_immutable() {
    let changes = BrainChanges {
        name: Some("renamed".to_string().try_into().unwrap()),
        ..Default::default()
    };
    // Active…
    F::with(())
        .given(two_published())
        .when(C::EditDraft {
            version_id: v("agv_2"),
            changes: changes.clone(),
        })
        .then_expect_error(AgentError::VersionImmutable);
    // …or superseded.
    F::with(())
        .given(two_published())
        .when(C::EditDraft {
            version_id: v("agv_1"),
            changes,
        })
        .then_expect_error(AgentError::VersionImmutable);
}

#[test]
fn an_archived_draft_cannot_be_edited_or_published() {
    let given = vec![
        created(),
        drafted("agv_1", 1),
        E::VersionArchived {
            version_id: v("agv_1"),
        },
    ];
    F::with(())
        .given(given.clone())
        .when(C::EditDraft {
            version_id: v("agv_1"),
            changes: BrainChanges {
                name: Some("x".to_string().try_into().unwrap()),
                ..Default::default()
            },
        })
        .then_expect_error(AgentError::VersionArchived);
    F::with(())
        .given(given)
        .when(C::Publish {
            version_id: v("agv_1"),
        })
        .then_expect_error(AgentError::VersionArchived);
}

#[test]
fn unknown_versions_are_not_found() {
    for cmd in [
        C::Publish {
            version_id: v("agv_x"),
        },
        C::Rollback {
            version_id: v("agv_x"),
        },
        C::Archive {
            version_id: v("agv_x"),
        },
        C::EditDraft {
            version_id: v("agv_x"),
            changes: BrainChanges::default(),
        },
    ] {
        F::with(())
            .given(vec![created()])
            .when(cmd)
            .then_expect_error(AgentError::VersionNotFound);
    }
}

#[test]
fn publishing_a_draft_makes_it_active_and_names_the_previous_one() {
    F::with(())
        .given(vec![created(), drafted("agv_1", 1)])
        .when(C::Publish {
            version_id: v("agv_1"),
        })
        .then_expect_events(vec![published("agv_1", None)]);
    F::with(())
        .given(vec![
            created(),
            drafted("agv_1", 1),
            published("agv_1", None),
            drafted("agv_2", 2),
        ])
        .when(C::Publish {
            version_id: v("agv_2"),
        })
        .then_expect_events(vec![published("agv_2", Some("agv_1"))]);
}

#[test]
fn publishing_the_active_version_again_changes_nothing() {
    F::with(())
        .given(two_published())
        .when(C::Publish {
            version_id: v("agv_2"),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_superseded_version_is_rolled_back_to_not_republished() {
    F::with(())
        .given(two_published())
        .when(C::Publish {
            version_id: v("agv_1"),
        })
        .then_expect_error(AgentError::AlreadyPublished);
}

#[test]
fn rolling_back_reactivates_a_version_published_before_as_a_new_event() {
    F::with(())
        .given(two_published())
        .when(C::Rollback {
            version_id: v("agv_1"),
        })
        .then_expect_events(vec![E::VersionRolledBack {
            version_id: v("agv_1"),
            previous_version_id: v("agv_2"),
        }]);
}

#[test]
fn a_rollback_state_has_the_target_active() {
    let mut agent = Agent::default();
    for e in two_published() {
        agent.apply(e);
    }
    agent.apply(E::VersionRolledBack {
        version_id: v("agv_1"),
        previous_version_id: v("agv_2"),
    });
    assert_eq!(agent.active_version_id.as_deref(), Some("agv_1"));
    assert_eq!(agent.previous_version_id.as_deref(), Some("agv_2"));
    assert!(agent.versions.values().all(|v| v.ever_published));
}

#[test]
fn only_versions_published_before_can_be_rolled_back_to() {
    let mut given = two_published();
    given.push(drafted("agv_3", 3));
    F::with(())
        .given(given)
        .when(C::Rollback {
            version_id: v("agv_3"),
        })
        .then_expect_error(AgentError::NeverPublished);
    F::with(())
        .given(vec![created(), drafted("agv_1", 1)])
        .when(C::Rollback {
            version_id: v("agv_1"),
        })
        .then_expect_error(AgentError::NeverPublished);
}

#[test]
fn rolling_back_to_the_active_version_changes_nothing() {
    F::with(())
        .given(two_published())
        .when(C::Rollback {
            version_id: v("agv_2"),
        })
        .then_expect_events(vec![]);
}

#[test]
fn an_archived_version_cannot_be_rolled_back_to() {
    let mut given = two_published();
    given.push(E::VersionArchived {
        version_id: v("agv_1"),
    });
    F::with(())
        .given(given)
        .when(C::Rollback {
            version_id: v("agv_1"),
        })
        .then_expect_error(AgentError::VersionArchived);
}

#[test]
fn the_active_version_cannot_be_archived() {
    F::with(())
        .given(two_published())
        .when(C::Archive {
            version_id: v("agv_2"),
        })
        .then_expect_error(AgentError::VersionActive);
}

#[test]
fn drafts_and_superseded_versions_can_be_archived_once() {
    F::with(())
        .given(two_published())
        .when(C::Archive {
            version_id: v("agv_1"),
        })
        .then_expect_events(vec![E::VersionArchived {
            version_id: v("agv_1"),
        }]);
    F::with(())
        .given(vec![
            created(),
            drafted("agv_1", 1),
            E::VersionArchived {
                version_id: v("agv_1"),
            },
        ])
        .when(C::Archive {
            version_id: v("agv_1"),
        })
        .then_expect_events(vec![]);
}

#[test]
fn brain_values_are_checked_when_parsed() {
    let base = json!({
        "name": "v1",
        "prompt": "Hi",
        "model": {"provider": "openai", "model": "gpt-4.1-mini", "temperature": 0.7, "max_tokens": 1024},
    });
    assert!(serde_json::from_value::<Brain>(base.clone()).is_ok());
    let bad = |path: &[&str], value: Value| {
        let mut b = base.clone();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = value;
        b
    };
    for (path, value) in [
        (&["model", "temperature"][..], json!(2.01)),
        (&["model", "temperature"][..], json!(-0.1)),
        (&["model", "max_tokens"][..], json!(0)),
        (&["model", "max_tokens"][..], json!(MAX_TOKENS_LIMIT + 1)),
        (&["model", "provider"][..], json!("Open AI")),
        (&["model", "model"][..], json!("")),
        (&["model", "extra"][..], json!(1)),
        (&["name"][..], json!("")),
        (&["prompt"][..], json!("   ")),
        (&["prompt"][..], json!("a".repeat(MAX_PROMPT_CHARS + 1))),
        (&["prompt"][..], json!("bell\u{7}")),
        (&["tools"][..], json!({"teleport": {"enabled": true}})),
        (&["tools"][..], json!({"email": {"enabled": true, "x": 1}})),
        (&["policies"][..], json!([1, 2])),
        (
            &["policies"][..],
            json!({"big": "x".repeat(MAX_POLICIES_BYTES)}),
        ),
        (
            &["policies"][..],
            json!({"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":1}}}}}}}}}),
        ),
        (&["voice_number"][..], json!("+15551234567")),
    ] {
        let b = bad(path, value.clone());
        assert!(
            serde_json::from_value::<Brain>(b).is_err(),
            "{path:?} = {value} should be refused"
        );
    }
    let multi_line = bad(&["prompt"], json!("Line one\n\tLine two\r\n"));
    assert!(serde_json::from_value::<Brain>(multi_line).is_ok());
}

#[test]
fn tools_are_named_as_in_the_api() {
    crate::common::assert_wire_form(
        Tool::ALL,
        &["email", "calendar", "whatsapp_messaging", "crm", "handoff"],
    );
    assert_eq!(
        "teleport".parse::<Tool>(),
        Err(ParseError::new(
            "tools",
            "unknown tool \"teleport\"; known tools: email, calendar, whatsapp_messaging, crm, handoff"
        ))
    );
    // A draft as stored before the enums shared one macro: tools are keyed by wire name.
    let stored = json!({"VersionDrafted": {"version_id": "agv_1", "number": 1, "created_by": "usr_admin",
        "brain": {"name": "v1", "prompt": "Hi", "policies": {},
            "model": {"provider": "openai", "model": "gpt-4.1-mini", "temperature": 0.7, "max_tokens": 1024},
            "tools": {"whatsapp_messaging": {"enabled": true}, "crm": {"enabled": false}}}}});
    let E::VersionDrafted { brain, .. } = serde_json::from_value::<E>(stored).unwrap() else {
        panic!("not a draft");
    };
    assert_eq!(
        brain.tools.into_iter().collect::<Vec<_>>(),
        [
            (Tool::WhatsappMessaging, ToolSetting { enabled: true }),
            (Tool::Crm, ToolSetting { enabled: false }),
        ]
    );
}

#[test]
fn version_statuses_keep_their_wire_names() {
    crate::common::assert_wire_form(VersionStatus::ALL, &["draft", "published", "archived"]);
    // A snapshot as stored before the enums shared one macro.
    let stored = json!({"id": "agt_1", "establishment_id": "est_1", "name": "Nova", "description": "",
        "versions": {"agv_1": {"number": 1, "status": "published", "ever_published": true},
                     "agv_2": {"number": 2, "status": "archived", "ever_published": false},
                     "agv_3": {"number": 3, "status": "draft", "ever_published": false}},
        "active_version_id": "agv_1", "previous_version_id": null});
    let agent: Agent = serde_json::from_value(stored).unwrap();
    let statuses: Vec<VersionStatus> = agent.versions.values().map(|v| v.status).collect();
    assert_eq!(
        statuses,
        [
            VersionStatus::Published,
            VersionStatus::Archived,
            VersionStatus::Draft
        ]
    );
}

#[test]
fn the_diff_lists_changed_fields_by_path() {
    let a = brain("v1");
    let mut b = brain("v2");
    b.model.temperature = 0.2.try_into().unwrap();
    b.tools.remove(&Tool::Email);
    b.tools.insert(Tool::Crm, ToolSetting { enabled: true });
    b.policies = json!({"tone": "formal"}).try_into().unwrap();
    let changes = diff(&a, &b);
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "model.temperature",
            "name",
            "policies.tone",
            "tools.crm.enabled",
            "tools.email.enabled"
        ]
    );
    assert_eq!(changes[0].from, json!(0.7));
    assert_eq!(changes[0].to, json!(0.2));
    assert_eq!(changes[2].from, Value::Null);
    assert_eq!(changes[2].to, json!("formal"));
    assert!(diff(&a, &a).is_empty());
}

#[test]
fn an_absent_tool_and_a_disabled_one_are_the_same() {
    let a = brain("v1");
    let mut b = brain("v1");
    b.tools
        .insert(Tool::Calendar, ToolSetting { enabled: false });
    assert!(diff(&a, &b).is_empty());
}

#[test]
fn outbound_calls_dial_the_active_or_a_pinned_published_version() {
    use crate::call::OutboundRefusal as R;
    let mut agent = Agent::default();
    assert_eq!(
        agent.dialable_version("est_1", None),
        Err(R::AgentNotInEstablishment)
    );
    agent.apply(created());
    agent.apply(drafted("agv_1", 1));
    assert_eq!(
        agent.dialable_version("est_1", None),
        Err(R::NoPublishedVersion)
    );
    for e in two_published().into_iter().skip(2) {
        agent.apply(e);
    }
    agent.apply(drafted("agv_3", 3));
    assert_eq!(agent.dialable_version("est_1", None), Ok(v("agv_2")));
    assert_eq!(
        agent.dialable_version("est_2", None),
        Err(R::AgentNotInEstablishment)
    );
    assert_eq!(
        agent.dialable_version("est_1", Some("agv_1")),
        Ok(v("agv_1")),
        "a superseded version may be pinned"
    );
    for pinned in ["agv_3", "agv_x"] {
        assert_eq!(
            agent.dialable_version("est_1", Some(pinned)),
            Err(R::VersionNotCallable {
                version_id: v(pinned)
            })
        );
    }
    agent.apply(E::VersionArchived {
        version_id: v("agv_1"),
    });
    assert_eq!(
        agent.dialable_version("est_1", Some("agv_1")),
        Err(R::VersionNotCallable {
            version_id: v("agv_1")
        })
    );
}
