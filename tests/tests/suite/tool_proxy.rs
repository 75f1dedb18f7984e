//! The tool proxy with real runtimes (the reference image in Docker) and local stand-ins for
//! Google, WhatsApp and a CRM receiver, plus the real SMTP test server: the checks in order
//! (establishment owns the call, the version enables the tool, the integration is connected
//! and enabled), exactly-once per tool call under concurrent retries, one token refresh for
//! concurrent calls, `needs_reauth`, every provider, no secret in the log, and master-key
//! rotation.

use base64::Engine;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::app::{Builder, Resp};
use tests::crm::CrmReceiver;
use tests::google::GoogleStandIn;
use tests::runtimes::{container_env, RuntimeEnv, IMAGE};
use tests::wait::{eventually, secs};
use tests::whatsapp::{self, WhatsappStandIn};
use tests::TestApp;

use crate::integrations::{connect_calendar, everything_stored};
use tests::fixtures::{create_agent, draft, publish};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn brain(name: &str, tools: Value) -> Value {
    json!({"name": name, "prompt": "You book visits.",
           "model": {"provider": "openai", "model": "gpt-4.1-mini", "temperature": 0.3, "max_tokens": 512},
           "tools": tools})
}

fn all_tools() -> Value {
    json!({"calendar": {"enabled": true}, "email": {"enabled": true},
           "whatsapp_messaging": {"enabled": true}, "crm": {"enabled": true}})
}

struct Runtime {
    id: String,
    est: String,
    token: String,
    url: String,
}

struct Stands {
    google: GoogleStandIn,
    whatsapp: WhatsappStandIn,
    crm: CrmReceiver,
}

/// A control plane on `port` that runtimes reach, pointed at the stand-ins.
fn control_plane(env: &RuntimeEnv, s: &Stands, port: u16, builder: Builder) -> Builder {
    let (g, w) = (s.google.clone(), s.whatsapp.clone());
    env.configure(builder.smtp()).config(move |c| {
        c.listen_addr = format!("0.0.0.0:{port}").parse().unwrap();
        c.public_base_url = Some(format!("http://127.0.0.1:{port}"));
        c.runtime.runtime_control_plane_url = Some(format!("http://172.17.0.1:{port}"));
        g.configure(c);
        w.configure(c);
        c.integrations.integration_allowed_private_hosts = vec!["127.0.0.1".into()];
    })
}

async fn stands() -> Stands {
    Stands {
        google: GoogleStandIn::start().await,
        whatsapp: WhatsappStandIn::start().await,
        crm: CrmReceiver::start().await,
    }
}

/// A running, ready runtime for `est`, and the token its container was given.
async fn runtime(app: &TestApp, root: &str, est: &str) -> Runtime {
    let r = app
        .post(
            &format!("/establishments/{est}/runtime"),
            root,
            json!({"image": IMAGE}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let container = r.body["container_name"].as_str().unwrap().to_string();
    let url = r.body["base_url"].as_str().unwrap().to_string();
    let r = app
        .post(&format!("/runtimes/{id}/start"), root, json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let token = eventually("the runtime ready, with its token", secs(60), async || {
        let s = app.get(&format!("/runtimes/{id}/status"), root).await;
        if s.body["status"] != "running" || s.body["ready"] != true {
            return Err(s.text);
        }
        container_env(&container, "CONTROL_PLANE_TOKEN").ok_or_else(|| "no token yet".into())
    })
    .await;
    Runtime {
        id,
        est: est.to_string(),
        token,
        url,
    }
}

/// An agent of `est` with one published version enabling `tools`; (agent, version).
async fn agent(app: &TestApp, root: &str, est: &str, tools: Value) -> (String, String) {
    let agent = create_agent(app, root, est, "Nova").await;
    let version = draft(app, root, &agent, brain("v", tools)).await;
    assert_eq!(
        publish(app, root, &agent, &version).await.status,
        StatusCode::OK
    );
    (agent, version)
}

/// Opens a call on the control plane as the runtime reports it (`call_started`).
async fn open_call(app: &TestApp, rt: &Runtime, sid: &str, agent: &str, version: &str) {
    let r = app
        .post(
            "/ingest/call-events",
            &rt.token,
            json!({"runtime_id": rt.id, "establishment_id": rt.est, "agent_id": agent,
                   "agent_version_id": version,
                   "call": {"provider": "twilio", "provider_call_sid": sid, "direction": "inbound",
                            "from_e164": "+5511987654321", "to_e164": "+14158675309"},
                   "event": {"id": format!("evt_{sid}"), "type": "call_started",
                             "occurred_at": chrono::Utc::now().to_rfc3339(),
                             "idempotency_key": format!("{sid}:started"),
                             "payload": {"started_at": chrono::Utc::now().to_rfc3339()}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
}

async fn call(
    app: &TestApp,
    token: &str,
    op: &str,
    sid: &str,
    tcid: &str,
    arguments: Value,
) -> Resp {
    app.post(
        &format!("/tool-proxy/{op}"),
        token,
        json!({"provider_call_sid": sid, "tool_call_id": tcid, "arguments": arguments}),
    )
    .await
}

fn booking(n: u32) -> Value {
    json!({"summary": format!("Solar inspection {n}"), "start": "2026-12-10T09:00:00-03:00",
           "end": {"date_time": "2026-12-10T10:00:00", "time_zone": "America/Sao_Paulo"},
           "attendees": ["ana@example.test"], "description": "Booked by Nova"})
}

fn sid(n: u32) -> String {
    format!("CA{:08x}{n:024x}", std::process::id())
}

async fn call_id(app: &TestApp, sid: &str) -> String {
    app.state()
        .bus
        .store()
        .claim_owner(aggregates::call::CALL_SID_CLAIM, sid)
        .await
        .unwrap()
        .expect("the call exists")
}

#[tokio::test]
async fn e2e_a_simulated_call_books_once_through_the_proxy_tokens_refresh_once_and_a_revoked_grant_needs_reauth(
) {
    let Some(env) = RuntimeEnv::acquire().await else {
        return;
    };
    let s = stands().await;
    let app = control_plane(&env, &s, free_port(), TestApp::builder())
        .spawn()
        .await;
    env.track(&app.state().runtimes.instance_id);
    let root = app.root_token().await;
    let est = app.create_establishment(&root, "Helios Clinic").await;
    let (agent, version) = agent(&app, &root, &est, all_tools()).await;
    let rt = runtime(&app, &root, &est).await;

    // The admin connects Google Calendar: auth_url → consent → callback → tokens sealed.
    let (integration, location) = connect_calendar(&app, &s.google, &root, &est).await;
    assert!(location.contains("status=connected"), "{location}");

    // The simulated call books through the proxy, sending its tool call three times at once.
    let sid1 = sid(1);
    let r = app
        .client
        .post(format!("{}/sim/calls", rt.url))
        .json(&json!({"call_sid": sid1, "segments": 6, "pace_ms": 200, "agent_id": agent,
                      "agent_version_id": version,
                      "tool_proxy": {"operation": "calendar/create_event", "tool_call_id": "tc_booking",
                                     "arguments": booking(1), "attempts": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "{}",
        r.text().await.unwrap()
    );
    let log = eventually("the booking in the tool log", secs(60), async || {
        if let Ok(Some(call)) = app
            .state()
            .bus
            .store()
            .claim_owner(aggregates::call::CALL_SID_CLAIM, &sid1)
            .await
        {
            let log = app.get(&format!("/calls/{call}/tool-log"), &root).await;
            let items = log.body["items"].as_array().cloned().unwrap_or_default();
            let proxied = items
                .iter()
                .any(|i| i["source"] == "proxy" && i["status"] == "ok");
            let reported = items
                .iter()
                .any(|i| i["source"] == "runtime" && i["status"] != "pending");
            if proxied && reported {
                return Some(log);
            }
        }
        None
    })
    .await;
    assert_eq!(
        s.google.events().len(),
        1,
        "three concurrent attempts, one booking"
    );
    assert_eq!(
        s.google.insert_attempts(),
        1,
        "the provider was called once"
    );
    assert!(s.google.errors().is_empty(), "{:?}", s.google.errors());
    let items = log.body["items"].as_array().unwrap();
    let proxied = items.iter().find(|i| i["source"] == "proxy").unwrap();
    assert_eq!(proxied["tool_name"], "calendar.create_event");
    assert_eq!(proxied["tool_call_id"], "tc_booking");
    assert_eq!(proxied["integration_id"], integration);
    assert_eq!(proxied["credential_version"], 1);
    assert_eq!(proxied["provider_status"], 200);
    let event_id = proxied["result"]["event_id"].as_str().unwrap().to_string();
    assert_eq!(s.google.events()[0].1, event_id);
    let reported = items.iter().find(|i| i["source"] == "runtime").unwrap();
    assert_eq!(reported["tool_name"], "calendar.create_event");
    assert_eq!(
        reported["result"]["event_id"],
        event_id.as_str(),
        "{reported}"
    );

    // The runtime retries the same tool call three more times at once: the first answer.
    let retries = join_all((0..3).map(|_| {
        call(
            &app,
            &rt.token,
            "calendar/create_event",
            &sid1,
            "tc_booking",
            booking(1),
        )
    }))
    .await;
    for r in &retries {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["result"]["event_id"], event_id.as_str());
        assert_eq!(r.headers["idempotent-replayed"], "true");
    }
    assert_eq!(s.google.insert_attempts(), 1);
    // Same id, other arguments: refused.
    let reused = call(
        &app,
        &rt.token,
        "calendar/create_event",
        &sid1,
        "tc_booking",
        booking(9),
    )
    .await;
    assert_eq!(reused.status, StatusCode::CONFLICT, "{}", reused.text);
    assert_eq!(reused.code(), "tool_call_id_reused");

    // The access token expires mid-test: five concurrent tool calls, one refresh.
    let sid2 = sid(2);
    open_call(&app, &rt, &sid2, &agent, &version).await;
    s.google.expire_access_tokens();
    let answers = join_all((0..5).map(|n| {
        let (app, token, sid2) = (&app, &rt.token, &sid2);
        async move {
            call(
                app,
                token,
                "calendar/create_event",
                sid2,
                &format!("tc_{n}"),
                booking(10 + n),
            )
            .await
        }
    }))
    .await;
    for r in &answers {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(
        s.google.refreshes(),
        1,
        "one refresh for five concurrent calls"
    );
    assert_eq!(s.google.events().len(), 6);
    assert!(tests::google::unique_ids(&s.google.events()));

    // The user revokes access: the refresh is refused, the integration needs re-authorisation
    // and later calls fail fast without reaching Google.
    s.google.revoke_refresh_tokens();
    s.google.expire_access_tokens();
    let r = call(
        &app,
        &rt.token,
        "calendar/create_event",
        &sid2,
        "tc_after_revoke",
        booking(20),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.code(), "integration_needs_reauth");
    let list = app
        .get(&format!("/establishments/{est}/integrations"), &root)
        .await;
    assert_eq!(
        list.body["items"][0]["status"], "needs_reauth",
        "{}",
        list.text
    );
    assert!(list.body["items"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("invalid_grant"));
    let (refreshes, attempts) = (s.google.refreshes(), s.google.insert_attempts());
    let r = call(
        &app,
        &rt.token,
        "calendar/create_event",
        &sid2,
        "tc_fast_fail",
        booking(21),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.code(), "integration_needs_reauth");
    assert_eq!(
        (s.google.refreshes(), s.google.insert_attempts()),
        (refreshes, attempts)
    );
    // Never a token in the stored state.
    let stored = everything_stored(&app).await;
    for t in s.google.issued_tokens() {
        assert!(!stored.contains(&t), "a Google token is stored in clear");
    }
    let _ = call_id(&app, &sid1).await;
}

#[tokio::test]
async fn runtimes_are_scoped_tools_allow_listed_integrations_checked_providers_reached_and_keys_rotated(
) {
    let Some(env) = RuntimeEnv::acquire().await else {
        return;
    };
    tests::logs::capture();
    let s = stands().await;
    let port = free_port();
    let old_key = B64.encode([7u8; 32]);
    let k = old_key.clone();
    let app = control_plane(&env, &s, port, TestApp::builder())
        .config(move |c| c.secrets_key = Some(k))
        .spawn()
        .await;
    env.track(&app.state().runtimes.instance_id);
    let root = app.root_token().await;
    let est = app.create_establishment(&root, "Helios Clinic").await;
    let other = app.create_establishment(&root, "Other Clinic").await;
    let (agent, v_all) = agent(&app, &root, &est, all_tools()).await;
    let v_no_crm = {
        let v = draft(
            &app,
            &root,
            &agent,
            brain(
                "no crm",
                json!({"calendar": {"enabled": true}, "email": {"enabled": true},
            "whatsapp_messaging": {"enabled": true}, "crm": {"enabled": false}}),
            ),
        )
        .await;
        assert_eq!(
            publish(&app, &root, &agent, &v).await.status,
            StatusCode::OK
        );
        v
    };
    let (rt_a, rt_b) = tokio::join!(runtime(&app, &root, &est), runtime(&app, &root, &other));
    let path = format!("/establishments/{est}/integrations");
    let wa = app
        .post(&path, &root, json!({"type": "whatsapp", "display_name": "WhatsApp",
            "auth": {"mode": "api_key", "credentials": {"access_token": whatsapp::ACCESS_TOKEN,
                                                         "phone_number_id": whatsapp::PHONE_NUMBER_ID}}}))
        .await;
    assert_eq!(wa.status, StatusCode::CREATED, "{}", wa.text);
    let wa_id = wa.body["integration_id"].as_str().unwrap().to_string();
    let crm = app
        .post(
            &path,
            &root,
            json!({"type": "crm_webhook", "display_name": "CRM",
            "auth": {"mode": "api_key", "credentials": {"endpoint_url": s.crm.url()}}}),
        )
        .await;
    assert_eq!(crm.status, StatusCode::CREATED, "{}", crm.text);
    let signing_secret = crm.body["signing_secret"].as_str().unwrap().to_string();
    s.crm.set_secret(&signing_secret);
    let mail = app
        .post(
            &path,
            &root,
            json!({"type": "email", "display_name": "Mail",
            "auth": {"mode": "api_key", "credentials": {}}}),
        )
        .await;
    assert_eq!(mail.status, StatusCode::CREATED, "{}", mail.text);

    let (a1, a2, b1) = (sid(11), sid(12), sid(13));
    open_call(&app, &rt_a, &a1, &agent, &v_all).await;
    open_call(&app, &rt_a, &a2, &agent, &v_no_crm).await;
    open_call(&app, &rt_b, &b1, &agent, &v_all).await;
    let template = json!({"to": "+5511987654321",
        "template": {"name": "visit_confirmed", "language": "pt_BR", "parameters": ["Ana", "10 Dec 09:00"]}});
    let log_call = json!({"summary": "Booked a solar inspection", "outcome": "booked"});

    // 1. A runtime of another establishment learns nothing of A's calls (404 for every tool).
    for (op, args) in [
        ("whatsapp/send_message", template.clone()),
        ("crm/log_call", log_call.clone()),
        (
            "email/send",
            json!({"to": "a@b.test", "subject": "s", "text": "t"}),
        ),
        ("calendar/create_event", booking(1)),
    ] {
        let r = call(&app, &rt_b.token, op, &a1, "tc_b", args).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{op}: {}", r.text);
        assert_eq!(r.code(), "call_not_found");
    }
    // ... and B's own call cannot use A's integrations (B has none).
    let r = call(
        &app,
        &rt_b.token,
        "whatsapp/send_message",
        &b1,
        "tc_b",
        template.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.code(), "integration_not_connected");
    // 2. A tool the call's version does not enable: 403.
    let r = call(
        &app,
        &rt_a.token,
        "crm/log_call",
        &a2,
        "tc_crm",
        log_call.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.code(), "tool_not_enabled");
    // 3. An integration that is not connected, or disabled: 403.
    let r = call(
        &app,
        &rt_a.token,
        "calendar/create_event",
        &a1,
        "tc_cal",
        booking(1),
    )
    .await;
    assert_eq!(r.code(), "integration_not_connected", "{}", r.text);
    let p = app
        .patch(
            &format!("/integrations/{wa_id}"),
            &root,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    let r = call(
        &app,
        &rt_a.token,
        "whatsapp/send_message",
        &a1,
        "tc_wa_off",
        template.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.code(), "integration_disabled");
    assert!(s.whatsapp.messages().is_empty());
    app.patch(
        &format!("/integrations/{wa_id}"),
        &root,
        json!({"enabled": true}),
    )
    .await;
    // 4. Arguments, named.
    let r = call(
        &app,
        &rt_a.token,
        "whatsapp/send_message",
        &a1,
        "tc_bad",
        json!({"to": "12", "text": "hi"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["error"]["details"]["field"], "arguments.to");
    let r = call(
        &app,
        &rt_a.token,
        "crm/delete_everything",
        &a1,
        "tc_bad2",
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    // WhatsApp: a template goes out; free text needs an open customer-service window.
    let r = call(
        &app,
        &rt_a.token,
        "whatsapp/send_message",
        &a1,
        "tc_wa_1",
        template.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body["result"]["message_id"]
        .as_str()
        .unwrap()
        .starts_with("wamid."));
    let text = json!({"to": "+5511987654321", "text": "See you on Thursday!"});
    let r = call(
        &app,
        &rt_a.token,
        "whatsapp/send_message",
        &a1,
        "tc_wa_2",
        text.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.code(), "template_required");
    s.whatsapp.open_window("5511987654321");
    let r = call(
        &app,
        &rt_a.token,
        "whatsapp/send_message",
        &a1,
        "tc_wa_3",
        text,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(s.whatsapp.messages().len(), 2);
    assert_eq!(
        s.whatsapp.messages()[0]["template"]["name"],
        "visit_confirmed"
    );
    assert!(s.whatsapp.errors().is_empty(), "{:?}", s.whatsapp.errors());

    // E-mail through the platform's SMTP (the real test server).
    let r = call(&app, &rt_a.token, "email/send", &a1, "tc_mail",
                 json!({"to": "ana@example.test", "subject": "Your visit on Thursday", "text": "See you at 09:00.",
                        "html": "<p>See you at <b>09:00</b>.</p>"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let smtp = app.smtp.as_ref().unwrap();
    eventually("the mail at the SMTP server", secs(10), async || {
        smtp.mails()
            .iter()
            .any(|m| m.contains("Your visit on Thursday"))
            .then_some(())
    })
    .await;

    // CRM: signed deliveries the receiver verifies.
    let r = call(
        &app,
        &rt_a.token,
        "crm/log_call",
        &a1,
        "tc_crm_1",
        log_call.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(
        &app,
        &rt_a.token,
        "crm/upsert_contact",
        &a1,
        "tc_crm_2",
        json!({"phone_e164": "+5511987654321", "name": "Ana"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let accepted = s.crm.accepted();
    assert_eq!(accepted.len(), 2, "refused: {:?}", s.crm.refused());
    assert_eq!(accepted[0]["operation"], "log_call");
    assert_eq!(accepted[0]["call_id"], call_id(&app, &a1).await.as_str());
    assert_eq!(accepted[1]["data"]["name"], "Ana");
    assert!(s.crm.refused().is_empty());

    // Who used which credential: the audit trail (events) names the runtime and the version.
    let (actor, version): (String, i64) = sqlx::query_as(
        "SELECT metadata->>'actor_id', (payload->'ToolProxyRequested'->'request'->>'credential_version')::bigint
         FROM events WHERE event_type = 'ToolProxyRequested' AND payload::text LIKE '%tc_crm_1%'")
        .fetch_one(app.pool()).await.unwrap();
    assert_eq!((actor.as_str(), version), (rt_a.id.as_str(), 1));

    // No secret in the events, the read models, the answers or the log.
    let stored = everything_stored(&app).await;
    let logs = tests::logs::captured();
    for secret in [whatsapp::ACCESS_TOKEN, signing_secret.as_str()] {
        assert!(!stored.contains(secret), "a secret is stored in clear");
        assert!(!logs.contains(secret), "a secret was logged");
    }
    let list = app.get(&path, &root).await;
    assert!(!list.text.contains(whatsapp::ACCESS_TOKEN) && !list.text.contains(&signing_secret));
    assert!(list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| !i["last_used_at"].is_null()));

    // Master-key rotation: every data key re-wrapped; the server restarted with only the new
    // key keeps every integration working.
    let new_key = B64.encode([9u8; 32]);
    let keyring = control_plane::secrets::Keyring::from_config(&app.state().config).unwrap();
    let done = control_plane::secrets::rotate_master_key(
        app.pool(),
        &keyring,
        &control_plane::secrets::MasterKey::parse(&new_key).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(done.rewrapped, 3);
    let events_before: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(app.pool())
        .await
        .unwrap();
    let db = app.stop().await;
    let nk = new_key.clone();
    let app = control_plane(&env, &s, port, TestApp::builder().database(&db))
        .config(move |c| c.secrets_key = Some(nk))
        .spawn()
        .await;
    env.track(&app.state().runtimes.instance_id);
    let r = call(
        &app,
        &rt_a.token,
        "whatsapp/send_message",
        &a1,
        "tc_after_rotation_1",
        template,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(
        &app,
        &rt_a.token,
        "crm/log_call",
        &a1,
        "tc_after_rotation_2",
        log_call,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        s.crm.accepted().len(),
        3,
        "the rotated server still signs with the same secret"
    );
    let r = call(
        &app,
        &rt_a.token,
        "email/send",
        &a1,
        "tc_after_rotation_3",
        json!({"to": "ana@example.test", "subject": "After rotation", "text": "ok"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rotated_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'Integration' AND position > $1",
    )
    .bind(events_before)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(rotated_events, 0, "rotation touches no event");
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT master_key_id FROM integration_data_keys")
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(
        keys,
        vec![
            control_plane::secrets::MasterKey::parse(&new_key)
                .unwrap()
                .id
        ]
    );
}
