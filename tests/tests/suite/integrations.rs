//! Integrations (prd §7.8, A.7): the OAuth dance against the Google stand-in, key-based
//! connections, rotation, enable/disable, revocation, roles and tenancy, refused private
//! destinations, and no secret in any answer, event, read model or log line.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::crm::CrmReceiver;
use tests::google::GoogleStandIn;
use tests::whatsapp;
use tests::TestApp;

pub const REDIRECT: &str = "https://app.example.test/settings/integrations";

/// A client that does not follow redirects (to read the callback's 302).
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Runs the OAuth dance for `est`: connect, consent at the stand-in, callback. Returns the
/// integration id and the callback's `Location`.
pub async fn connect_calendar(
    app: &TestApp,
    google: &GoogleStandIn,
    token: &str,
    est: &str,
) -> (String, String) {
    let r = app
        .post(
            &format!("/establishments/{est}/integrations"),
            token,
            json!({"type": "google_calendar", "display_name": "Main calendar",
                   "auth": {"mode": "oauth", "redirect_url": REDIRECT}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["status"], "pending_auth");
    assert_eq!(r.body["type"], "google_calendar");
    let id = r.body["integration_id"].as_str().unwrap().to_string();
    let (state, code) = google.consent(r.body["auth_url"].as_str().unwrap());
    let res = no_redirects()
        .get(app.url("/integrations/oauth/callback"))
        .query(&[
            ("state", state.as_str()),
            ("code", code.as_str()),
            ("scope", tests::google::SCOPE),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    (id, location)
}

/// Rows of every table that could hold a secret, as text.
pub async fn everything_stored(app: &TestApp) -> String {
    let mut out = String::new();
    for q in [
        "SELECT payload::text || metadata::text FROM events",
        "SELECT coalesce(response::text, '') FROM idempotency_keys",
        "SELECT to_jsonb(r)::text FROM rm_integrations r",
        "SELECT to_jsonb(r)::text FROM rm_tool_log r",
        "SELECT to_jsonb(r)::text FROM rm_calls r",
        "SELECT sealed FROM integration_secrets",
        "SELECT wrapped_key FROM integration_data_keys",
        "SELECT coalesce(payload::text, '') FROM snapshots",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(q).fetch_all(app.pool()).await.unwrap();
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn an_admin_connects_google_calendar_through_the_oauth_dance_and_the_tokens_are_sealed() {
    tests::logs::capture();
    let google = GoogleStandIn::start().await;
    let g = google.clone();
    let app = TestApp::builder()
        .config(move |c| g.configure(c))
        .spawn()
        .await;
    let root = app.root_token().await;
    let est = app.create_establishment(&root, "Clinic").await;

    let (id, location) = connect_calendar(&app, &google, &root, &est).await;
    let loc = url::Url::parse(&location).unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["integration_id"], id);
    assert_eq!(q["status"], "connected");
    assert!(!q.contains_key("error"));
    assert_eq!(google.exchanges(), 1);
    assert!(google.errors().is_empty(), "{:?}", google.errors());

    let list = app
        .get(&format!("/establishments/{est}/integrations"), &root)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    let item = &list.body["items"][0];
    assert_eq!(item["id"], id);
    assert_eq!(item["status"], "connected");
    assert_eq!(item["enabled"], true);
    assert_eq!(item["scopes"], json!([tests::google::SCOPE]));
    for k in [
        "created_at",
        "last_used_at",
        "last_error",
        "display_name",
        "type",
    ] {
        assert!(item.get(k).is_some(), "{k} missing in {item}");
    }

    // A state that names no pending authorisation is refused outright.
    let bad = no_redirects()
        .get(app.url("/integrations/oauth/callback?state=int_nope.abc&code=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let missing = no_redirects()
        .get(app.url("/integrations/oauth/callback?code=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);

    // No token anywhere but sealed: not in the events, the read models, the answers, the logs.
    let stored = everything_stored(&app).await;
    let logs = tests::logs::captured();
    let issued = google.issued_tokens();
    assert_eq!(issued.len(), 2, "one access and one refresh token");
    for t in &issued {
        assert!(!stored.contains(t.as_str()), "a token is stored in clear");
        assert!(!list.text.contains(t.as_str()));
        assert!(!logs.contains(t.as_str()), "a token was logged");
    }
    assert!(!logs.is_empty(), "the log capture works");
    let sealed: Vec<String> = sqlx::query_scalar("SELECT sealed FROM integration_secrets")
        .fetch_all(app.pool())
        .await
        .unwrap();
    assert_eq!(sealed.len(), 1);
}

#[tokio::test]
async fn a_replayed_or_expired_oauth_state_is_refused_and_a_denial_is_reported_to_the_browser() {
    let google = GoogleStandIn::start().await;
    let g = google.clone();
    let app = TestApp::builder()
        .config(move |c| g.configure(c))
        .spawn()
        .await;
    let root = app.root_token().await;
    let est = app.create_establishment(&root, "Clinic").await;
    let r = app
        .post(
            &format!("/establishments/{est}/integrations"),
            &root,
            json!({"type": "google_calendar", "display_name": "Cal",
                   "auth": {"mode": "oauth", "redirect_url": REDIRECT}}),
        )
        .await;
    let (state, code) = google.consent(r.body["auth_url"].as_str().unwrap());
    let callback = |state: String, extra: (&'static str, String)| {
        let app_url = app.url("/integrations/oauth/callback");
        async move {
            no_redirects()
                .get(app_url)
                .query(&[("state", state), extra])
                .send()
                .await
                .unwrap()
        }
    };
    // The user denied access: back to the app with the error, nothing exchanged.
    let denied = callback(state.clone(), ("error", "access_denied".into())).await;
    assert_eq!(denied.status(), StatusCode::FOUND);
    let loc = denied.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.contains("error=access_denied") && loc.contains("status=pending_auth"),
        "{loc}"
    );
    // The state was used: a second callback with a valid code does not exchange it.
    let replay = callback(state.clone(), ("code", code)).await;
    assert!(
        replay.status() == StatusCode::BAD_REQUEST
            || replay.headers()["location"]
                .to_str()
                .unwrap()
                .contains("error="),
        "a used state must not connect"
    );
    assert_eq!(google.exchanges(), 0);
    // A tampered secret half of the state is refused outright.
    let (id, _) = state.split_once('.').unwrap();
    let tampered = callback(format!("{id}.tampered"), ("code", "x".into())).await;
    assert_eq!(tampered.status(), StatusCode::BAD_REQUEST);
    let list = app
        .get(&format!("/establishments/{est}/integrations"), &root)
        .await;
    assert_eq!(list.body["items"][0]["status"], "pending_auth");
    assert!(list.body["items"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("access_denied"));
}

#[tokio::test]
async fn key_based_integrations_connect_rotate_disable_and_revoke_without_returning_secrets() {
    let crm = CrmReceiver::start().await;
    let app = TestApp::builder()
        .config(|c| c.integrations.integration_allowed_private_hosts = vec!["127.0.0.1".into()])
        .spawn()
        .await;
    let root = app.root_token().await;
    let est = app.create_establishment(&root, "Clinic").await;
    let path = format!("/establishments/{est}/integrations");

    let wa = app
        .post(&path, &root, json!({"type": "whatsapp", "display_name": "WhatsApp",
            "auth": {"mode": "api_key", "credentials": {"access_token": whatsapp::ACCESS_TOKEN,
                                                         "phone_number_id": whatsapp::PHONE_NUMBER_ID}}}))
        .await;
    assert_eq!(wa.status, StatusCode::CREATED, "{}", wa.text);
    assert_eq!(wa.body["status"], "connected");
    assert!(wa.body.get("auth_url").is_none());
    assert!(!wa.text.contains(whatsapp::ACCESS_TOKEN));
    let wa_id = wa.body["integration_id"].as_str().unwrap().to_string();

    // One live integration per type.
    let again = app
        .post(&path, &root, json!({"type": "whatsapp", "display_name": "Second",
            "auth": {"mode": "api_key", "credentials": {"access_token": "t", "phone_number_id": "1"}}}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(again.code(), "integration_exists");

    // The CRM signing secret is shown once, at connect.
    let c = app
        .post(
            &path,
            &root,
            json!({"type": "crm_webhook", "display_name": "CRM",
            "auth": {"mode": "api_key", "credentials": {"endpoint_url": crm.url()}}}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.text);
    let secret = c.body["signing_secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_") && secret.len() > 40);
    let email = app
        .post(
            &path,
            &root,
            json!({"type": "email", "display_name": "Mail",
            "auth": {"mode": "api_key", "credentials": {}}}),
        )
        .await;
    assert_eq!(email.status, StatusCode::CREATED, "{}", email.text);

    // Rotation, rename, disable: answered without any credential.
    let rotated_token = "EAAGrotatedtoken9876543210";
    let p = app
        .patch(
            &format!("/integrations/{wa_id}"),
            &root,
            json!({"display_name": "WhatsApp Business",
            "enabled": false, "credentials": {"access_token": rotated_token,
                                              "phone_number_id": whatsapp::PHONE_NUMBER_ID}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(p.body["enabled"], false);
    assert_eq!(p.body["display_name"], "WhatsApp Business");
    assert!(!p.text.contains(rotated_token));
    let bad = app
        .patch(
            &format!("/integrations/{wa_id}"),
            &root,
            json!({"credentials": {"access_token": "x"}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    assert_eq!(
        bad.body["error"]["details"]["field"],
        "credentials.phone_number_id"
    );

    let list = app.get(&path, &root).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 3);
    for needle in [whatsapp::ACCESS_TOKEN, rotated_token, secret.as_str()] {
        assert!(!list.text.contains(needle));
    }
    let stored = everything_stored(&app).await;
    for needle in [whatsapp::ACCESS_TOKEN, rotated_token, secret.as_str()] {
        assert!(!stored.contains(needle), "a secret is stored in clear");
    }

    // Revocation frees the type for a new connection.
    let d = app.delete(&format!("/integrations/{wa_id}"), &root).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT, "{}", d.text);
    let list = app.get(&path, &root).await;
    let revoked = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == wa_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["status"], "revoked");
    let again = app
        .post(&path, &root, json!({"type": "whatsapp", "display_name": "New",
            "auth": {"mode": "api_key", "credentials": {"access_token": "t2", "phone_number_id": "2"}}}))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
}

#[tokio::test]
async fn bad_connections_are_refused_naming_the_field_and_private_endpoints_are_refused() {
    let app = TestApp::spawn().await;
    let root = app.root_token().await;
    let est = app.create_establishment(&root, "Clinic").await;
    let path = format!("/establishments/{est}/integrations");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"type": "fax", "display_name": "x", "auth": {"mode": "api_key"}}),
            "type",
        ),
        (
            json!({"type": "whatsapp", "display_name": "x", "auth": {"mode": "api_key", "credentials": {"access_token": "t"}}}),
            "auth.credentials.phone_number_id",
        ),
        (
            json!({"type": "whatsapp", "display_name": "x", "auth": {"mode": "oauth", "redirect_url": REDIRECT}}),
            "auth.mode",
        ),
        (
            json!({"type": "google_calendar", "display_name": "x", "auth": {"mode": "oauth", "redirect_url": "not a url"}}),
            "auth.redirect_url",
        ),
        (
            json!({"type": "crm_webhook", "display_name": "x", "auth": {"mode": "api_key", "credentials": {"endpoint_url": "http://example.com/x"}}}),
            "auth.credentials.endpoint_url",
        ),
        (
            json!({"type": "crm_webhook", "display_name": "x", "auth": {"mode": "api_key", "credentials": {"endpoint_url": "https://127.0.0.1:9/x"}}}),
            "auth.credentials.endpoint_url",
        ),
        (
            json!({"type": "crm_webhook", "display_name": "x", "auth": {"mode": "api_key", "credentials": {"endpoint_url": "https://169.254.169.254/latest"}}}),
            "auth.credentials.endpoint_url",
        ),
        (
            json!({"type": "crm_webhook", "display_name": "x", "auth": {"mode": "api_key", "credentials": {"endpoint_url": "https://localhost/x"}}}),
            "auth.credentials.endpoint_url",
        ),
        (
            json!({"type": "email", "display_name": "x", "auth": {"mode": "api_key", "credentials": {"smtp_url": "http://x", "from": "a@b.c"}}}),
            "auth.credentials.smtp_url",
        ),
        (
            json!({"type": "email", "display_name": "", "auth": {"mode": "api_key", "credentials": {}}}),
            "display_name",
        ),
    ];
    for (body, field) in cases {
        let r = app.post(&path, &root, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert_eq!(
            r.body["error"]["details"]["field"], field,
            "{body}: {}",
            r.text
        );
    }
    // OAuth without a configured client is a server condition, said plainly.
    let r = app
        .post(
            &path,
            &root,
            json!({"type": "google_calendar", "display_name": "x",
                                     "auth": {"mode": "oauth", "redirect_url": REDIRECT}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.code(), "oauth_not_configured");
}

#[tokio::test]
async fn admins_write_operators_and_viewers_read_and_foreign_integrations_are_not_found() {
    let app = TestApp::spawn().await;
    let root = app.root_token().await;
    let est = app.create_establishment(&root, "Clinic").await;
    let other = app.create_establishment(&root, "Other").await;
    let operator = app.seed_member(&est, "op@clinic.test", "operator").await;
    let viewer = app.seed_member(&est, "view@clinic.test", "viewer").await;
    let outsider = app.seed_member(&other, "admin@other.test", "admin").await;
    let path = format!("/establishments/{est}/integrations");
    let body = json!({"type": "email", "display_name": "Mail", "auth": {"mode": "api_key", "credentials": {}}});
    for t in [&operator, &viewer] {
        assert_eq!(
            app.post(&path, t, body.clone()).await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(app.get(&path, t).await.status, StatusCode::OK);
    }
    assert_eq!(
        app.post(&path, &outsider, body.clone()).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&path, &outsider).await.status,
        StatusCode::NOT_FOUND
    );
    let r = app.post(&path, &root, body).await;
    let id = r.body["integration_id"].as_str().unwrap().to_string();
    let one = format!("/integrations/{id}");
    for t in [&operator, &viewer] {
        assert_eq!(
            app.patch(&one, t, json!({"enabled": false})).await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(app.delete(&one, t).await.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        app.patch(&one, &outsider, json!({"enabled": false}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&one, &outsider).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete("/integrations/int_unknown", &root).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/establishments/{other}/integrations"), &operator)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn every_integration_and_tool_proxy_endpoint_is_in_the_openapi_document() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        ("/establishments/{id}/integrations", "post"),
        ("/establishments/{id}/integrations", "get"),
        ("/integrations/{integrationId}", "patch"),
        ("/integrations/{integrationId}", "delete"),
        ("/integrations/oauth/callback", "get"),
        ("/tool-proxy/email/send", "post"),
        ("/tool-proxy/calendar/create_event", "post"),
        ("/tool-proxy/whatsapp/send_message", "post"),
        ("/tool-proxy/crm/{operation}", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let callback = &doc["paths"]["/integrations/oauth/callback"]["get"];
    let params: Vec<&str> = callback["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        params.contains(&"state") && params.contains(&"code"),
        "{params:?}"
    );
    assert!(
        doc["paths"]["/tool-proxy/calendar/create_event"]["post"]["responses"]["403"].is_object()
    );
}
