//! Appendix C M4: agents, versioned brains, publish and rollback, and the routing model that
//! follows them; roles, tenancy and bad input on every agent endpoint.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tests::app::Resp;
use tests::fixtures::{
    brain, create_agent, draft, map_number, publish, routed_version, Tenant, NUMBER,
};
use tests::TestApp;

async fn rollback(app: &TestApp, token: &str, agent: &str, version: &str) -> Resp {
    app.post(
        &format!("/agents/{agent}/versions/{version}/rollback"),
        token,
        json!({}),
    )
    .await
}

#[tokio::test]
async fn m4_admin_publishes_v1_then_v2_rolls_back_to_v1_and_calls_route_to_v1() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios Energy HQ").await;
    let admin = app.seed_member(&est, "admin@example.com", "admin").await;

    // The agent (A.3 shape).
    let r = app
        .post(
            &format!("/establishments/{est}/agents"),
            &admin,
            json!({"name": "Nova GPT", "description": "Concierge and support agent"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let agent = r.body["id"].as_str().unwrap().to_string();
    assert!(agent.starts_with("agt_"));
    let created_at = r.body["created_at"].as_str().unwrap().to_string();
    assert_eq!(
        r.body,
        json!({"id": agent, "establishment_id": est, "name": "Nova GPT",
               "description": "Concierge and support agent", "active_version_id": null,
               "created_at": created_at})
    );
    // The platform assigns the number (its routing is the establishment's).
    map_number(&app, &root, &est, NUMBER, &agent).await;
    assert_eq!(
        routed_version(&app, NUMBER),
        None,
        "no published version yet"
    );

    // v1: draft (A.3 shape), publish (A.3 shape).
    let r = app
        .post(&format!("/agents/{agent}/versions"), &admin, brain("v1"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v1 = r.body["id"].as_str().unwrap().to_string();
    assert!(v1.starts_with("agv_"));
    assert_eq!(
        r.body,
        json!({"id": v1, "agent_id": agent, "status": "draft", "name": "v1"})
    );
    let r = publish(&app, &admin, &agent, &v1).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"agent_id": agent, "active_version_id": v1, "previous_version_id": null})
    );
    assert_eq!(routed_version(&app, NUMBER).as_deref(), Some(v1.as_str()));

    // v2: draft and publish.
    let v2 = draft(&app, &admin, &agent, brain("v2")).await;
    let r = publish(&app, &admin, &agent, &v2).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"agent_id": agent, "active_version_id": v2, "previous_version_id": v1})
    );
    assert_eq!(routed_version(&app, NUMBER).as_deref(), Some(v2.as_str()));

    // Roll back to v1.
    let r = rollback(&app, &admin, &agent, &v1).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"agent_id": agent, "active_version_id": v1, "previous_version_id": v2})
    );
    let r = app.get(&format!("/agents/{agent}"), &admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["active_version_id"], json!(v1));
    // The routing model, served from memory, sends calls to v1.
    assert_eq!(routed_version(&app, NUMBER).as_deref(), Some(v1.as_str()));
    let row: (String, String, Option<String>) = sqlx::query_as(
        "SELECT establishment_id, agent_id, active_version_id FROM rm_routing WHERE to_e164 = $1",
    )
    .bind(NUMBER)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(row, (est.clone(), agent.clone(), Some(v1.clone())));

    // The rollback is a new event; history is intact.
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Agent' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&agent)
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(
        types,
        [
            "AgentCreated",
            "VersionDrafted",
            "VersionPublished",
            "VersionDrafted",
            "VersionPublished",
            "VersionRolledBack"
        ]
    );
    let list = app.get(&format!("/agents/{agent}/versions"), &admin).await;
    let summary: Vec<(Value, Value, Value)> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["id"].clone(), v["status"].clone(), v["active"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!(v1), json!("published"), json!(true)),
            (json!(v2), json!("published"), json!(false)),
        ]
    );
    // Several agents per establishment.
    let other = create_agent(&app, &admin, &est, "Second").await;
    let r = app
        .get(&format!("/establishments/{est}/agents"), &admin)
        .await;
    let ids: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [agent.as_str(), other.as_str()]);
}

#[tokio::test]
async fn a_published_version_is_immutable() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = create_agent(&app, &root, &est, "Nova").await;
    let v1 = draft(&app, &root, &agent, brain("v1")).await;
    assert_eq!(
        publish(&app, &root, &agent, &v1).await.status,
        StatusCode::OK
    );
    let before = app
        .get(&format!("/agents/{agent}/versions/{v1}"), &root)
        .await;

    let r = app
        .patch(
            &format!("/agents/{agent}/versions/{v1}"),
            &root,
            json!({"prompt": "Something else entirely."}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "version_immutable");

    // Superseded, it stays immutable.
    let v2 = draft(&app, &root, &agent, brain("v2")).await;
    assert_eq!(
        publish(&app, &root, &agent, &v2).await.status,
        StatusCode::OK
    );
    let r = app
        .patch(
            &format!("/agents/{agent}/versions/{v1}"),
            &root,
            json!({"model": {"provider": "openai", "model": "gpt-4.1", "temperature": 1.0, "max_tokens": 10}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "version_immutable");

    let after = app
        .get(&format!("/agents/{agent}/versions/{v1}"), &root)
        .await;
    assert_eq!(before.body["prompt"], after.body["prompt"]);
    assert_eq!(before.body["model"], after.body["model"]);
}

#[tokio::test]
async fn a_draft_is_edited_field_by_field_until_it_is_published() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = create_agent(&app, &root, &est, "Nova").await;
    let v1 = draft(&app, &root, &agent, brain("v1")).await;
    let r = app
        .patch(
            &format!("/agents/{agent}/versions/{v1}"),
            &root,
            json!({"prompt": "Be brief.\nBe kind.", "policies": {"tone": "formal", "max_discount_pct": 10}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["prompt"], "Be brief.\nBe kind.");
    assert_eq!(r.body["name"], "v1");
    assert_eq!(r.body["status"], "draft");
    assert_eq!(r.body["active"], false);
    assert_eq!(r.body["number"], 1);
    assert_eq!(r.body["model"], brain("v1")["model"]);
    assert_eq!(r.body["tools"], brain("v1")["tools"]);
    assert_eq!(
        r.body["policies"],
        json!({"tone": "formal", "max_discount_pct": 10})
    );
    let got = app
        .get(&format!("/agents/{agent}/versions/{v1}"), &root)
        .await;
    assert_eq!(got.body, r.body);
    // Nothing telephony in a version.
    for key in [
        "inbound_numbers",
        "handoff_e164",
        "business_hours",
        "blacklist_e164",
    ] {
        assert!(got.body.get(key).is_none(), "{key} in {}", got.text);
    }
}

#[tokio::test]
async fn publish_rollback_and_archive_follow_the_version_lifecycle() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = create_agent(&app, &root, &est, "Nova").await;
    let v1 = draft(&app, &root, &agent, brain("v1")).await;
    let v2 = draft(&app, &root, &agent, brain("v2")).await;
    let v3 = draft(&app, &root, &agent, brain("v3")).await;

    // Rollback needs a version published before.
    let r = rollback(&app, &root, &agent, &v1).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "version_never_published");

    assert_eq!(
        publish(&app, &root, &agent, &v1).await.status,
        StatusCode::OK
    );
    // Publishing the active version again answers the same and records nothing.
    let again = publish(&app, &root, &agent, &v1).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.body,
        json!({"agent_id": agent, "active_version_id": v1, "previous_version_id": null})
    );
    assert_eq!(
        publish(&app, &root, &agent, &v2).await.status,
        StatusCode::OK
    );

    let r = rollback(&app, &root, &agent, &v3).await;
    assert_eq!(r.code(), "version_never_published");
    // A superseded version is rolled back to, not published again.
    let r = publish(&app, &root, &agent, &v1).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "version_already_published");

    // The active version cannot be archived; others can.
    let archive = |v: String| {
        let app = &app;
        let root = &root;
        let agent = &agent;
        async move {
            app.post(
                &format!("/agents/{agent}/versions/{v}/archive"),
                root,
                json!({}),
            )
            .await
        }
    };
    let r = archive(v2.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "version_active");
    let r = archive(v1.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "archived");
    let r = archive(v3.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    // Archived versions are neither rolled back to, published nor edited.
    let r = rollback(&app, &root, &agent, &v1).await;
    assert_eq!(r.code(), "version_archived");
    let r = publish(&app, &root, &agent, &v3).await;
    assert_eq!(r.code(), "version_archived");
    let r = app
        .patch(
            &format!("/agents/{agent}/versions/{v3}"),
            &root,
            json!({"name": "v3b"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "version_archived");
    // A version of another agent is not found through this one.
    let other = create_agent(&app, &root, &est, "Other").await;
    let r = publish(&app, &root, &other, &v2).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = app
        .get(&format!("/agents/{other}/versions/{v2}"), &root)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_diff_shows_field_by_field_what_a_publish_changes() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = create_agent(&app, &root, &est, "Nova").await;
    let v1 = draft(&app, &root, &agent, brain("v1")).await;
    // Without an active version there is nothing to compare with by default.
    let r = app
        .get(&format!("/agents/{agent}/versions/{v1}/diff"), &root)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    publish(&app, &root, &agent, &v1).await;
    let mut b = brain("v2");
    b["model"]["temperature"] = json!(0.2);
    b["tools"] = json!({"email": {"enabled": true}, "crm": {"enabled": true}});
    b["policies"] = json!({"tone": "formal"});
    let v2 = draft(&app, &root, &agent, b).await;

    let expected = json!([
        {"path": "model.temperature", "from": 0.7, "to": 0.2},
        {"path": "name", "from": "v1", "to": "v2"},
        {"path": "policies.tone", "from": null, "to": "formal"},
        {"path": "tools.calendar.enabled", "from": true, "to": false},
        {"path": "tools.crm.enabled", "from": false, "to": true},
    ]);
    let r = app
        .get(
            &format!("/agents/{agent}/versions/{v2}/diff?against={v1}"),
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["against_version_id"], json!(v1));
    assert_eq!(r.body["changes"], expected);
    // Default: against the active version.
    let r = app
        .get(&format!("/agents/{agent}/versions/{v2}/diff"), &root)
        .await;
    assert_eq!(r.body["against_version_id"], json!(v1));
    assert_eq!(r.body["changes"], expected);
    let r = app
        .get(
            &format!("/agents/{agent}/versions/{v1}/diff?against={v1}"),
            &root,
        )
        .await;
    assert_eq!(r.body["changes"], json!([]));
    let r = app
        .get(
            &format!("/agents/{agent}/versions/{v2}/diff?against=agv_01JAAAAAAAAAAAAAAAAAAAAAAA"),
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_agent_and_version_input_is_refused_with_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = create_agent(&app, &root, &est, "Nova").await;

    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"name": "A", "colour": "red"}), "colour"),
        (
            json!({"name": "A", "description": "d".repeat(2001)}),
            "description",
        ),
    ] {
        let r = app
            .post(&format!("/establishments/{est}/agents"), &root, body)
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.code(), "validation_failed");
        assert_eq!(r.body["error"]["details"]["field"], field, "{}", r.text);
    }

    let with = |path: &[&str], value: Value| {
        let mut b = brain("v1");
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = value;
        b
    };
    let cases = [
        (
            with(&["model", "temperature"], json!(2.5)),
            "model.temperature",
        ),
        (
            with(&["model", "temperature"], json!(-1)),
            "model.temperature",
        ),
        (
            with(&["model", "temperature"], json!("hot")),
            "model.temperature",
        ),
        (with(&["model", "max_tokens"], json!(0)), "model.max_tokens"),
        (
            with(&["model", "max_tokens"], json!(1_000_000)),
            "model.max_tokens",
        ),
        (
            with(&["model", "provider"], json!("Open AI!")),
            "model.provider",
        ),
        (
            with(&["tools"], json!({"teleport": {"enabled": true}})),
            "tools",
        ),
        (
            with(&["tools", "email"], json!({"enabled": "yes"})),
            "tools.email.enabled",
        ),
        (with(&["policies"], json!("be nice")), "policies"),
        (with(&["prompt"], json!("")), "prompt"),
        (with(&["prompt"], json!("p".repeat(100_001))), "prompt"),
        (with(&["name"], json!("")), "name"),
        // Telephony never goes into a version.
        (
            with(&["handoff_e164"], json!("+14158671234")),
            "handoff_e164",
        ),
    ];
    for (body, field) in cases {
        let r = app
            .post(&format!("/agents/{agent}/versions"), &root, body)
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {}",
            r.text
        );
        assert_eq!(r.code(), "validation_failed");
        assert_eq!(r.body["error"]["details"]["field"], field, "{}", r.text);
    }
    let mut no_model = brain("v1");
    no_model.as_object_mut().unwrap().remove("model");
    let r = app
        .post(&format!("/agents/{agent}/versions"), &root, no_model)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let v1 = draft(&app, &root, &agent, brain("v1")).await;
    let r = app
        .patch(
            &format!("/agents/{agent}/versions/{v1}"),
            &root,
            json!({"status": "published"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = app
        .patch(
            &format!("/agents/{agent}/versions/{v1}"),
            &root,
            json!({"model": {"provider": "openai", "model": "gpt", "temperature": 3, "max_tokens": 5}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"]["field"], "model.temperature");
    // Nothing of that reached the log.
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'Agent' AND event_type = 'DraftEdited'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn operators_and_viewers_read_agents_but_only_admins_change_them() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = create_agent(&app, &root, &est, "Nova").await;
    let v1 = draft(&app, &root, &agent, brain("v1")).await;
    publish(&app, &root, &agent, &v1).await;
    let v2 = draft(&app, &root, &agent, brain("v2")).await;
    let viewer = app.seed_member(&est, "viewer@example.com", "viewer").await;
    let operator = app
        .seed_member(&est, "operator@example.com", "operator")
        .await;

    let writes = [
        (
            Method::POST,
            format!("/establishments/{est}/agents"),
            json!({"name": "Mine"}),
        ),
        (
            Method::PATCH,
            format!("/agents/{agent}"),
            json!({"name": "Renamed"}),
        ),
        (
            Method::POST,
            format!("/agents/{agent}/versions"),
            brain("v9"),
        ),
        (
            Method::PATCH,
            format!("/agents/{agent}/versions/{v2}"),
            json!({"name": "v2b"}),
        ),
        (
            Method::POST,
            format!("/agents/{agent}/versions/{v2}/publish"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/agents/{agent}/versions/{v1}/rollback"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/agents/{agent}/versions/{v2}/archive"),
            json!({}),
        ),
    ];
    let reads = [
        format!("/establishments/{est}/agents"),
        format!("/agents/{agent}"),
        format!("/agents/{agent}/versions"),
        format!("/agents/{agent}/versions/{v2}"),
        format!("/agents/{agent}/versions/{v2}/diff?against={v1}"),
    ];
    for token in [&viewer, &operator] {
        for (method, path, body) in &writes {
            let r = app
                .request(method.clone(), path, Some(token), Some(body.clone()))
                .await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{method} {path}: {}",
                r.text
            );
            assert_eq!(r.code(), "forbidden");
        }
        for path in &reads {
            let r = app.get(path, token).await;
            assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.text);
        }
    }
    // Nothing changed.
    let r = app.get(&format!("/agents/{agent}"), &viewer).await;
    assert_eq!(r.body["name"], "Nova");
    assert_eq!(r.body["active_version_id"], json!(v1));
}

#[tokio::test]
async fn agents_of_another_establishment_are_not_found() {
    let app = TestApp::spawn().await;
    let root = app.root_token().await;
    let a = app.create_establishment(&root, "A").await;
    let b = app.create_establishment(&root, "B").await;
    let admin_a = app.seed_member(&a, "admin-a@example.com", "admin").await;
    let agent = create_agent(&app, &root, &b, "B's agent").await;
    let v1 = draft(&app, &root, &agent, brain("v1")).await;
    publish(&app, &root, &agent, &v1).await;
    let v2 = draft(&app, &root, &agent, brain("v2")).await;

    let probes = [
        (Method::GET, format!("/establishments/{b}/agents"), None),
        (
            Method::POST,
            format!("/establishments/{b}/agents"),
            Some(json!({"name": "Spy"})),
        ),
        (Method::GET, format!("/agents/{agent}"), None),
        (
            Method::PATCH,
            format!("/agents/{agent}"),
            Some(json!({"name": "Mine"})),
        ),
        (Method::GET, format!("/agents/{agent}/versions"), None),
        (
            Method::POST,
            format!("/agents/{agent}/versions"),
            Some(brain("spy")),
        ),
        (Method::GET, format!("/agents/{agent}/versions/{v2}"), None),
        (
            Method::PATCH,
            format!("/agents/{agent}/versions/{v2}"),
            Some(json!({"name": "x"})),
        ),
        (
            Method::POST,
            format!("/agents/{agent}/versions/{v2}/publish"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/agents/{agent}/versions/{v1}/rollback"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/agents/{agent}/versions/{v2}/archive"),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/agents/{agent}/versions/{v2}/diff?against={v1}"),
            None,
        ),
        // Unknown ids answer exactly like foreign ones.
        (
            Method::GET,
            "/agents/agt_01JAAAAAAAAAAAAAAAAAAAAAAA".to_string(),
            None,
        ),
        (Method::GET, "/agents/not-an-id".to_string(), None),
    ];
    for (method, path, body) in probes {
        let r = app
            .request(method.clone(), &path, Some(&admin_a), body)
            .await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            r.text
        );
        assert_eq!(r.code(), "not_found");
    }
    // Even a platform admin gets 404 for an establishment that does not exist.
    let r = app
        .get(
            "/establishments/est_01JAAAAAAAAAAAAAAAAAAAAAAA/agents",
            &root,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .post(
            "/establishments/est_01JAAAAAAAAAAAAAAAAAAAAAAA/agents",
            &root,
            json!({"name": "Ghost"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // B's agent is untouched.
    let r = app.get(&format!("/agents/{agent}"), &root).await;
    assert_eq!(r.body["name"], "B's agent");
    assert_eq!(r.body["active_version_id"], json!(v1));
}

#[tokio::test]
async fn every_agent_and_telephony_endpoint_is_in_the_openapi_document() {
    let app = TestApp::spawn().await;
    let r = app.request(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let paths = r.body["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/establishments/{id}/agents", &["get", "post"][..]),
        ("/agents/{agentId}", &["get", "patch"]),
        ("/agents/{agentId}/versions", &["get", "post"]),
        ("/agents/{agentId}/versions/{versionId}", &["get", "patch"]),
        ("/agents/{agentId}/versions/{versionId}/publish", &["post"]),
        ("/agents/{agentId}/versions/{versionId}/rollback", &["post"]),
        ("/agents/{agentId}/versions/{versionId}/archive", &["post"]),
        ("/agents/{agentId}/versions/{versionId}/diff", &["get"]),
        ("/establishments/{id}/telephony", &["get", "patch"]),
    ] {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for m in methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing");
        }
    }
    // Every schema the new endpoints refer to is in the document.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&r.body, &mut all);
    let schemas = &r.body["components"]["schemas"];
    for name in [
        "ModelDoc",
        "InboundNumberDoc",
        "BusinessHoursDoc",
        "VersionView",
        "ActivationView",
    ] {
        assert!(
            all.contains(&format!("#/components/schemas/{name}").as_str()),
            "{name} is not referenced"
        );
    }
    for r in all {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(schemas.get(name).is_some(), "dangling $ref {r}");
    }
}
