//! Telephony policies (Appendix A.2), platform-wide number claims, and the in-memory routing
//! model that follows policy, agent and establishment changes.

use std::sync::Arc;

use aggregates::telephony::{Rejection, RouteDecision};
use chrono::{DateTime, Utc};
use projections::routing::RoutingIndex;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::fixtures::{
    brain, create_agent, draft, map_number, publish, published_agent, routed_version, Tenant,
    NUMBER,
};
use tests::{eventually, secs, TestApp};

fn rejection(d: RouteDecision) -> Option<Rejection> {
    match d {
        RouteDecision::Reject(r) => Some(r),
        RouteDecision::Accept(_) => None,
    }
}

#[tokio::test]
async fn the_telephony_policy_has_the_appendix_a2_shape_and_patches_are_partial() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = create_agent(&app, &root, &est, "Nova").await;
    let path = format!("/establishments/{est}/telephony");

    // Defaults.
    let r = app.get(&path, &root).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"establishment_id": est, "inbound_numbers": [], "handoff_e164": null,
               "max_call_duration_seconds": 3600, "business_hours": [], "blacklist_e164": []})
    );

    // Everything at once; numbers are normalised to E.164.
    let r = app
        .patch(
            &path,
            &root,
            json!({
                "inbound_numbers": [{"provider": "twilio", "e164": "+1 (415) 867-5309", "routing_agent_id": agent}],
                "handoff_e164": "+1 415 867 1234",
                "max_call_duration_seconds": 900,
                "business_hours": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "22:00"}],
                "blacklist_e164": ["+1-415-867-1111"],
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let full = json!({
        "establishment_id": est,
        "inbound_numbers": [{"provider": "twilio", "e164": "+14158675309", "routing_agent_id": agent}],
        "handoff_e164": "+14158671234",
        "max_call_duration_seconds": 900,
        "business_hours": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "22:00"}],
        "blacklist_e164": ["+14158671111"],
    });
    assert_eq!(r.body, full);
    assert_eq!(app.get(&path, &root).await.body, full);

    // A partial patch keeps the rest (A.2 example request).
    let r = app
        .patch(&path, &root, json!({"max_call_duration_seconds": 600}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut expected = full.clone();
    expected["max_call_duration_seconds"] = json!(600);
    assert_eq!(r.body, expected);

    // `inbound_numbers` replaces the list; `handoff_e164: null` clears.
    let r = app
        .patch(
            &path,
            &root,
            json!({"inbound_numbers": [
                {"e164": "+14158675310", "routing_agent_id": agent},
                {"e164": "+12127365000", "routing_agent_id": agent},
            ], "handoff_e164": null}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["inbound_numbers"],
        json!([
            {"provider": "twilio", "e164": "+14158675310", "routing_agent_id": agent},
            {"provider": "twilio", "e164": "+12127365000", "routing_agent_id": agent},
        ])
    );
    assert_eq!(r.body["handoff_e164"], json!(null));
    assert_eq!(r.body["blacklist_e164"], json!(["+14158671111"]));
    // The released number is free again, the new ones are held.
    let held: Vec<String> = sqlx::query_scalar(
        "SELECT value FROM unique_claims WHERE scope = 'phone_number' AND owner_id = $1 ORDER BY value",
    )
    .bind(&est)
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(held, ["+12127365000", "+14158675310"]);
}

#[tokio::test]
async fn two_establishments_claiming_one_number_at_once_get_exactly_one_winner() {
    let app = TestApp::spawn().await;
    let root = app.root_token().await;
    let mut contenders = Vec::new();
    for i in 0..6 {
        let est = app.create_establishment(&root, &format!("E{i}")).await;
        let agent = create_agent(&app, &root, &est, "Nova").await;
        contenders.push((est, agent));
    }
    for round in 0..3 {
        let number = format!("+1415867{:04}", 5000 + round);
        let attempts = contenders.iter().map(|(est, agent)| {
            let app = &app;
            let root = &root;
            let number = number.clone();
            async move {
                app.patch(
                    &format!("/establishments/{est}/telephony"),
                    root,
                    json!({"inbound_numbers": [{"e164": number, "routing_agent_id": agent}]}),
                )
                .await
            }
        });
        let results = futures::future::join_all(attempts).await;
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == StatusCode::OK)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for r in results.iter().filter(|r| r.status != StatusCode::OK) {
            assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
            assert_eq!(r.code(), "already_taken");
            assert_eq!(r.body["error"]["details"]["scope"], "phone_number");
            assert_eq!(r.body["error"]["details"]["value"], json!(number));
        }
        let (winner_est, winner_agent) = &contenders[winners[0]];
        let owner: Vec<String> = sqlx::query_scalar(
            "SELECT owner_id FROM unique_claims WHERE scope = 'phone_number' AND value = $1",
        )
        .bind(&number)
        .fetch_all(app.pool())
        .await
        .unwrap();
        assert_eq!(owner, std::slice::from_ref(winner_est));
        // Losers recorded nothing; the routing model knows only the winner.
        for (i, (est, _)) in contenders.iter().enumerate() {
            let r = app
                .get(&format!("/establishments/{est}/telephony"), &root)
                .await;
            let listed = r.body["inbound_numbers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["e164"] == json!(number));
            assert_eq!(listed, i == winners[0], "round {round}, establishment {i}");
        }
        let entry = app.state().routing.lookup(&number).expect("routed");
        assert_eq!(&entry.establishment_id, winner_est);
        assert_eq!(&entry.agent_id, winner_agent);
        // The winner lets go; the number can be claimed by someone else.
        let r = app
            .patch(
                &format!("/establishments/{winner_est}/telephony"),
                &root,
                json!({"inbound_numbers": []}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(app.state().routing.lookup(&number).is_none());
        let (other_est, other_agent) = &contenders[(winners[0] + 1) % contenders.len()];
        map_number(&app, &root, other_est, &number, other_agent).await;
        assert_eq!(
            &app.state()
                .routing
                .lookup(&number)
                .unwrap()
                .establishment_id,
            other_est
        );
    }
}

#[tokio::test]
async fn a_number_routes_only_to_an_agent_of_the_same_establishment() {
    let app = TestApp::spawn().await;
    let root = app.root_token().await;
    let a = app.create_establishment(&root, "A").await;
    let b = app.create_establishment(&root, "B").await;
    let agent_b = create_agent(&app, &root, &b, "B's").await;
    for agent in [
        agent_b.as_str(),
        "agt_01JAAAAAAAAAAAAAAAAAAAAAAA",
        "nonsense",
    ] {
        let r = app
            .patch(
                &format!("/establishments/{a}/telephony"),
                &root,
                json!({"inbound_numbers": [{"e164": NUMBER, "routing_agent_id": agent}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(
            r.body["error"]["details"]["field"],
            "inbound_numbers[0].routing_agent_id"
        );
    }
    let claimed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM unique_claims WHERE scope = 'phone_number'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(claimed, 0);
}

#[tokio::test]
async fn bad_telephony_input_is_refused_with_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = create_agent(&app, &root, &est, "Nova").await;
    let path = format!("/establishments/{est}/telephony");
    let n = |e164: &str| json!([{"e164": e164, "routing_agent_id": agent}]);
    let cases = [
        (
            // One digit short: not a possible +1 number (+15553012211 itself is accepted).
            json!({"inbound_numbers": n("+1555301221")}),
            "inbound_numbers[0].e164",
        ),
        (
            json!({"inbound_numbers": n("4158675309")}),
            "inbound_numbers[0].e164",
        ),
        (
            json!({"inbound_numbers": n("call me")}),
            "inbound_numbers[0].e164",
        ),
        (
            json!({"inbound_numbers": [{"provider": "skype", "e164": NUMBER, "routing_agent_id": agent}]}),
            "inbound_numbers[0].provider",
        ),
        (
            json!({"inbound_numbers": [{"e164": NUMBER, "routing_agent_id": agent, "weight": 2}]}),
            "inbound_numbers[0].weight",
        ),
        (
            json!({"inbound_numbers": [{"e164": NUMBER, "routing_agent_id": agent}, {"e164": "+1 415 867 5309", "routing_agent_id": agent}]}),
            "inbound_numbers",
        ),
        (json!({"handoff_e164": "+1"}), "handoff_e164"),
        (
            json!({"max_call_duration_seconds": 29}),
            "max_call_duration_seconds",
        ),
        (
            json!({"max_call_duration_seconds": 14_401}),
            "max_call_duration_seconds",
        ),
        (
            json!({"max_call_duration_seconds": -5}),
            "max_call_duration_seconds",
        ),
        (
            json!({"business_hours": [{"days": ["funday"], "start": "08:00", "end": "22:00"}]}),
            "business_hours[0].days[0]",
        ),
        (
            json!({"business_hours": [{"days": ["mon"], "start": "25:00", "end": "22:00"}]}),
            "business_hours[0].start",
        ),
        (
            json!({"business_hours": [{"days": ["mon"], "start": "08:00", "end": "08:00"}]}),
            "business_hours[0]",
        ),
        (
            json!({"business_hours": [{"days": [], "start": "08:00", "end": "09:00"}]}),
            "business_hours[0]",
        ),
        (
            json!({"blacklist_e164": ["+14158671111", "nope"]}),
            "blacklist_e164[1]",
        ),
        (json!({"voicemail": true}), "voicemail"),
    ];
    for (body, field) in cases {
        let r = app.patch(&path, &root, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert_eq!(r.code(), "validation_failed");
        assert_eq!(
            r.body["error"]["details"]["field"], field,
            "{body}: {}",
            r.text
        );
    }
    // The handoff number cannot be one of the inbound numbers (the handoff would loop).
    map_number(&app, &root, &est, NUMBER, &agent).await;
    let r = app
        .patch(&path, &root, json!({"handoff_e164": "+1 415 867 5309"}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["error"]["details"]["field"], "handoff_e164");
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Telephony' ORDER BY position",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    assert_eq!(types, ["InboundNumbersReplaced"]);
}

#[tokio::test]
async fn members_read_the_telephony_policy_only_admins_change_it_and_outsiders_get_404() {
    let app = TestApp::spawn().await;
    let root = app.root_token().await;
    let a = app.create_establishment(&root, "A").await;
    let b = app.create_establishment(&root, "B").await;
    let viewer = app.seed_member(&a, "viewer@example.com", "viewer").await;
    let operator = app.seed_member(&a, "op@example.com", "operator").await;
    let admin_b = app.seed_member(&b, "admin-b@example.com", "admin").await;
    let path = format!("/establishments/{a}/telephony");
    for token in [&viewer, &operator] {
        assert_eq!(app.get(&path, token).await.status, StatusCode::OK);
        let r = app
            .patch(&path, token, json!({"max_call_duration_seconds": 60}))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert_eq!(r.code(), "forbidden");
    }
    for (method, body) in [
        (Method::GET, None),
        (
            Method::PATCH,
            Some(json!({"max_call_duration_seconds": 60})),
        ),
    ] {
        let r = app
            .request(method.clone(), &path, Some(&admin_b), body.clone())
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}: {}", r.text);
        assert_eq!(r.code(), "not_found");
        let r = app
            .request(
                method.clone(),
                "/establishments/est_01JAAAAAAAAAAAAAAAAAAAAAAA/telephony",
                Some(&root),
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}: {}", r.text);
    }
    assert_eq!(
        app.get(&path, &root).await.body["max_call_duration_seconds"],
        3600
    );
}

#[tokio::test]
async fn the_routing_model_follows_policy_agent_and_time_zone_changes() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await; // America/Sao_Paulo
    let agent = create_agent(&app, &root, &est, "Nova").await;
    let routing = &app.state().routing;
    let caller = "+14155550100";
    // Mon 2026-01-12 12:00 UTC = 09:00 in São Paulo, 13:00 in Paris.
    let monday_noon_utc: DateTime<Utc> = "2026-01-12T12:00:00Z".parse().unwrap();

    assert_eq!(
        rejection(routing.route(NUMBER, caller, monday_noon_utc)),
        Some(Rejection::UnknownNumber)
    );
    map_number(&app, &root, &est, NUMBER, &agent).await;
    assert_eq!(
        rejection(routing.route(NUMBER, caller, monday_noon_utc)),
        Some(Rejection::NoPublishedVersion {
            establishment_id: est.clone(),
            agent_id: agent.clone()
        })
    );
    let v1 = draft(&app, &root, &agent, brain("v1")).await;
    publish(&app, &root, &agent, &v1).await;
    assert_eq!(routed_version(&app, NUMBER), Some(v1.clone()));
    // Other spellings of the called number find it too.
    assert!(routing.lookup("+1 415-867-5309").is_some());

    let path = format!("/establishments/{est}/telephony");
    let r = app
        .patch(
            &path,
            &root,
            json!({"blacklist_e164": [caller], "max_call_duration_seconds": 120,
                   "business_hours": [{"days": ["mon"], "start": "08:00", "end": "10:00"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        rejection(routing.route(NUMBER, caller, monday_noon_utc)),
        Some(Rejection::BlacklistedCaller {
            establishment_id: est.clone()
        })
    );
    let entry = routing.lookup(NUMBER).unwrap();
    assert_eq!(entry.max_call_duration_seconds, 120);
    assert_eq!(entry.timezone.as_str(), "America/Sao_Paulo");
    // 09:00 in São Paulo: open.
    assert!(matches!(
        routing.route(NUMBER, "+14155550101", monday_noon_utc),
        RouteDecision::Accept(_)
    ));
    // The establishment moves to Paris: 13:00 there, closed.
    let r = app
        .patch(
            &format!("/establishments/{est}"),
            &root,
            json!({"timezone": "Europe/Paris"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        routing.lookup(NUMBER).unwrap().timezone.as_str(),
        "Europe/Paris"
    );
    assert_eq!(
        rejection(routing.route(NUMBER, "+14155550101", monday_noon_utc)),
        Some(Rejection::OutsideBusinessHours {
            establishment_id: est.clone()
        })
    );
    // The table and the index agree.
    let row: (String, i32) = sqlx::query_as(
        "SELECT timezone, max_call_duration_seconds FROM rm_routing WHERE to_e164 = $1",
    )
    .bind(NUMBER)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(row, ("Europe/Paris".to_string(), 120));
}

#[tokio::test]
async fn the_routing_index_reloads_when_another_process_projected_a_change() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let published = published_agent(&app, &root, &est, "Nova").await;
    let (agent, v1) = (published.id, published.version);

    // An index that no projector feeds: it only learns through the stored checkpoint.
    let detached = Arc::new(RoutingIndex::default());
    detached.reload(app.pool()).await.unwrap();
    assert!(detached.lookup(NUMBER).is_none());
    assert!(!detached.reload_if_changed(app.pool()).await.unwrap());
    map_number(&app, &root, &est, NUMBER, &agent).await;
    assert!(detached.reload_if_changed(app.pool()).await.unwrap());
    assert_eq!(
        detached
            .lookup(NUMBER)
            .unwrap()
            .active_version_id
            .as_deref(),
        Some(v1.as_str())
    );
    assert!(!detached.reload_if_changed(app.pool()).await.unwrap());

    // A second server on the same database sees a change made through the first one.
    let other = TestApp::builder().database(&app.db_url).spawn().await;
    assert_eq!(routed_version(&other, NUMBER), Some(v1.clone()));
    let v2 = draft(&app, &root, &agent, brain("v2")).await;
    publish(&app, &root, &agent, &v2).await;
    // The other process learns of it by its periodic reload (every second): real time.
    eventually(
        "the other process routes to v2",
        secs(15),
        async || match routed_version(&other, NUMBER) {
            Some(v) if v == v2 => Ok(()),
            seen => Err(format!("routes to {seen:?}")),
        },
    )
    .await;
}

#[tokio::test]
async fn the_in_memory_routing_index_answers_from_a_large_policy_without_the_database() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let agent = published_agent(&app, &root, &est, "Nova").await.id;
    let blacklist: Vec<String> = (0..500)
        .map(|i| format!("+1415867{:04}", 6000 + i))
        .collect();
    let r = app
        .patch(
            &format!("/establishments/{est}/telephony"),
            &root,
            json!({"inbound_numbers": [{"e164": NUMBER, "routing_agent_id": agent}],
                   "blacklist_e164": blacklist,
                   "business_hours": [{"days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "00:00", "end": "24:00"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let routing = &app.state().routing;
    let now = Utc::now();
    // The projector has handed the new policy to the index.
    app.settle().await;
    assert!(
        matches!(
            routing.route(NUMBER, "+12127360000", now),
            RouteDecision::Accept(_)
        ),
        "the index never saw the policy"
    );
    // `route` is synchronous: every decision below comes from memory, not the database.
    let n = 20_000;
    let mut accepted = 0;
    for i in 0..n {
        let from = format!("+1212736{:04}", i % 10_000);
        if let RouteDecision::Accept(_) = routing.route(NUMBER, &from, now) {
            accepted += 1;
        }
    }
    assert_eq!(accepted, n);
    // Every blacklisted caller is refused, however long the list.
    let refused = (0..500)
        .filter(|i| {
            !matches!(
                routing.route(NUMBER, &format!("+1415867{:04}", 6000 + i), now),
                RouteDecision::Accept(_)
            )
        })
        .count();
    assert_eq!(refused, 500);
}
