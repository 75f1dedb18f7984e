//! Appendix C M0: establishments, invitations, roles and tenant isolation.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::fixtures::Tenant;
use tests::TestApp;

#[tokio::test]
async fn m0_admin_creates_an_establishment_invites_an_operator_who_accepts_and_sees_it() {
    let app = TestApp::builder().smtp().spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios Energy HQ").await;

    let invite = app
        .post(
            &format!("/establishments/{est}/users"),
            &root,
            json!({"email": "Operator@Example.com", "role": "operator"}),
        )
        .await;
    assert_eq!(invite.status, StatusCode::CREATED, "{}", invite.text);
    assert!(invite.body["invitation_id"]
        .as_str()
        .unwrap()
        .starts_with("inv_"));
    assert_eq!(invite.body["status"], "sent");
    assert_eq!(
        invite.body.as_object().unwrap().len(),
        2,
        "A.1 shape: {}",
        invite.text
    );

    let token = app
        .mailed_token("operator@example.com", "Invitation token:")
        .await;
    let accepted = app
        .request(
            Method::POST,
            "/auth/accept-invite",
            None,
            Some(json!({"token": token, "password": "operator-pass-1", "display_name": "Olga Operator"})),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text);
    assert_eq!(accepted.body["role"], "operator");
    assert_eq!(accepted.body["account_created"], true);

    // The token is single-use.
    let again = app
        .request(
            Method::POST,
            "/auth/accept-invite",
            None,
            Some(json!({"token": token, "password": "operator-pass-1", "display_name": "X"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.text);
    assert_eq!(again.code(), "token_used");

    let op = app.login("operator@example.com", "operator-pass-1").await;
    let list = app.get("/establishments", &op).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(
        list.body,
        json!({"items": [{"id": est, "name": "Helios Energy HQ", "timezone": "America/Sao_Paulo", "locale": "pt-BR"}]})
    );
    let one = app.get(&format!("/establishments/{est}"), &op).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["name"], "Helios Energy HQ");
    let me = app.get("/me", &op).await;
    assert_eq!(
        me.body["memberships"],
        json!([{"establishment_id": est, "role": "operator"}])
    );
    assert_eq!(me.body["user"]["display_name"], "Olga Operator");

    // An operator cannot manage users or establishments.
    let r = app
        .post(
            &format!("/establishments/{est}/users"),
            &op,
            json!({"email": "x@example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .patch(
            &format!("/establishments/{est}"),
            &op,
            json!({"name": "Renamed"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post(
            "/establishments",
            &op,
            json!({"name": "Mine", "timezone": "UTC", "locale": "en"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_invitation_to_an_existing_account_adds_a_membership_without_a_password() {
    let app = TestApp::builder().smtp().spawn().await;
    let root = app.root_token().await;
    let a = app.create_establishment(&root, "A").await;
    let b = app.create_establishment(&root, "B").await;
    app.seed_member(&a, "shared@example.com", "viewer").await;
    let r = app
        .post(
            &format!("/establishments/{b}/users"),
            &root,
            json!({"email": "shared@example.com", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = app
        .mailed_token("shared@example.com", "Invitation token:")
        .await;
    let r = app
        .request(
            Method::POST,
            "/auth/accept-invite",
            None,
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["account_created"], false);
    let t = app.login("shared@example.com", "member-password-1").await;
    let me = app.get("/me", &t).await;
    let roles: Vec<(String, String)> = me.body["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["establishment_id"].as_str().unwrap().into(),
                m["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        roles.contains(&(a.clone(), "viewer".into()))
            && roles.contains(&(b.clone(), "admin".into())),
        "{roles:?}"
    );
}

#[tokio::test]
async fn a_viewer_cannot_create_or_change_anything() {
    let app = TestApp::spawn().await;
    let Tenant { est, .. } = app.tenant("Helios").await;
    let viewer = app.seed_member(&est, "viewer@example.com", "viewer").await;

    let attempts = [
        (
            Method::POST,
            "/establishments".to_string(),
            json!({"name": "V", "timezone": "UTC", "locale": "en"}),
        ),
        (
            Method::PATCH,
            format!("/establishments/{est}"),
            json!({"name": "V"}),
        ),
        (
            Method::POST,
            format!("/establishments/{est}/users"),
            json!({"email": "n@example.com", "role": "viewer"}),
        ),
    ];
    for (method, path, body) in attempts {
        let r = app
            .request(method.clone(), &path, Some(&viewer), Some(body))
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            r.text
        );
        assert_eq!(r.code(), "forbidden");
    }
    // Reading is allowed.
    assert_eq!(
        app.get(&format!("/establishments/{est}"), &viewer)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/establishments/{est}/users"), &viewer)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_member_of_one_establishment_gets_404_for_another_establishments_resources() {
    let app = TestApp::spawn().await;
    let root = app.root_token().await;
    let a = app.create_establishment(&root, "A").await;
    let b = app.create_establishment(&root, "B").await;
    let admin_a = app.seed_member(&a, "admin-a@example.com", "admin").await;
    let b_admin = app.seed_member(&b, "admin-b@example.com", "admin").await;
    let b_user: String =
        sqlx::query_scalar("SELECT id FROM rm_users WHERE email = 'admin-b@example.com'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    let _ = b_admin;

    let probes = [
        (Method::GET, format!("/establishments/{b}"), None),
        (
            Method::PATCH,
            format!("/establishments/{b}"),
            Some(json!({"name": "Mine now"})),
        ),
        (Method::GET, format!("/establishments/{b}/users"), None),
        (
            Method::POST,
            format!("/establishments/{b}/users"),
            Some(json!({"email": "spy@example.com", "role": "admin"})),
        ),
        (
            Method::PATCH,
            format!("/users/{b_user}"),
            Some(json!({"establishment_id": b, "role": "viewer"})),
        ),
        (
            Method::DELETE,
            format!("/establishments/{b}/users/{b_user}"),
            None,
        ),
        (
            Method::GET,
            format!("/audit/events?establishment_id={b}"),
            None,
        ),
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
    let list = app.get("/establishments", &admin_a).await;
    let ids: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str()]);
    // An unknown id answers exactly like a foreign one.
    let r = app
        .get("/establishments/est_01JAAAAAAAAAAAAAAAAAAAAAAA", &admin_a)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_last_admin_cannot_be_demoted_or_removed_but_roles_can_change() {
    let app = TestApp::spawn().await;
    let Tenant { est, .. } = app.tenant("Helios").await;
    let admin = app.seed_member(&est, "boss@example.com", "admin").await;
    app.seed_member(&est, "staff@example.com", "viewer").await;
    let user = |email: &'static str| {
        let pool = app.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT id FROM rm_users WHERE email = $1")
                .bind(email)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let root_id = user(tests::app::ADMIN_EMAIL).await;
    let boss = user("boss@example.com").await;
    let staff = user("staff@example.com").await;

    // The creator (root) is an admin too; demote root, then boss is the last admin.
    let r = app
        .patch(
            &format!("/users/{root_id}"),
            &admin,
            json!({"establishment_id": est, "role": "operator"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .patch(
            &format!("/users/{boss}"),
            &admin,
            json!({"establishment_id": est, "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.code(), "last_admin");
    let r = app
        .delete(&format!("/establishments/{est}/users/{boss}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let r = app
        .patch(
            &format!("/users/{staff}"),
            &admin,
            json!({"establishment_id": est, "role": "operator"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"user_id": staff, "establishment_id": est, "role": "operator"})
    );
    let users = app
        .get(&format!("/establishments/{est}/users"), &admin)
        .await;
    let staff_role = users.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == staff.as_str())
        .unwrap()["role"]
        .clone();
    assert_eq!(staff_role, "operator");

    // Every membership change is an auditable event.
    let audit = app
        .get(
            &format!("/audit/events?aggregate_type=Establishment&aggregate_id={est}"),
            &admin,
        )
        .await;
    let types: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "EstablishmentCreated",
            "MemberAdded",
            "MemberAdded",
            "MemberAdded",
            "MemberRoleChanged",
            "MemberRoleChanged"
        ]
    );

    let r = app
        .delete(&format!("/establishments/{est}/users/{staff}"), &admin)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn establishments_validate_time_zones_and_locales() {
    let app = TestApp::spawn().await;
    let root = app.root_token().await;
    let r = app
        .post(
            "/establishments",
            &root,
            json!({"name": "X", "timezone": "Mars/Base", "locale": "en"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"]["field"], "timezone");
    let r = app
        .post(
            "/establishments",
            &root,
            json!({"name": "X", "timezone": "UTC", "locale": "not a locale"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"]["field"], "locale");
    let r = app
        .post(
            "/establishments",
            &root,
            json!({"name": "  ", "timezone": "UTC", "locale": "en"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let est = app.create_establishment(&root, "Helios").await;
    let r = app
        .patch(
            &format!("/establishments/{est}"),
            &root,
            json!({"timezone": "Europe/Lisbon", "locale": "pt-pt"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["timezone"], "Europe/Lisbon");
    assert_eq!(r.body["locale"], "pt-PT");
    assert_eq!(r.body["name"], "Helios");
    let keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "A.2 shape: {keys:?}");
}

#[tokio::test]
async fn only_platform_admins_create_establishments_and_the_creator_becomes_their_admin() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("First").await;
    let admin = app.seed_member(&est, "owner@example.com", "admin").await;
    // Tenants are onboarded by the platform (operations.md): an establishment's admin may not.
    let r = app
        .post(
            "/establishments",
            &admin,
            json!({"name": "Second", "timezone": "America/Sao_Paulo", "locale": "pt-BR"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.code(), "forbidden");
    let second = app.create_establishment(&root, "Second").await;
    let me = app.get("/me", &root).await;
    assert!(me.body["memberships"]
        .as_array()
        .unwrap()
        .contains(&json!({"establishment_id": second, "role": "admin"})));
}

#[tokio::test]
async fn only_the_platform_assigns_a_number_and_establishment_admins_route_the_ones_they_hold() {
    let app = TestApp::spawn().await;
    let Tenant { est, admin: root } = app.tenant("Helios").await;
    let admin = app.seed_member(&est, "owner@example.com", "admin").await;
    let agent = tests::fixtures::create_agent(&app, &admin, &est, "Nova").await;
    let other = tests::fixtures::create_agent(&app, &admin, &est, "Backup").await;
    let numbers = |agent: &str| json!({"inbound_numbers": [{"provider": "twilio", "e164": "+15553012211", "routing_agent_id": agent}]});
    let path = format!("/establishments/{est}/telephony");
    // An establishment admin cannot take a number nobody assigned to it.
    let r = app.patch(&path, &admin, numbers(&agent)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.code(), "number_not_assigned");
    assert_eq!(r.body["error"]["details"]["field"], "inbound_numbers");
    // The platform assigns it; the establishment's admin then routes it to another agent.
    let r = app.patch(&path, &root, numbers(&agent)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.patch(&path, &admin, numbers(&other)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["inbound_numbers"][0]["routing_agent_id"],
        json!(other)
    );
}
