//! What a caller controls stays bounded: request ids (copied into every event's metadata),
//! metric labels, and the values of signed Twilio webhooks.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tests::twilio::TwilioStandIn;
use tests::TestApp;

async fn with_request_id(app: &TestApp, id: &str) -> tests::app::Resp {
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    TestApp::read(res).await
}

fn echoed(r: &tests::app::Resp) -> String {
    r.headers["x-request-id"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_client_request_id_is_kept_only_when_it_is_a_short_safe_token() {
    let app = TestApp::spawn().await;
    for good in ["abc-123.X_y", &"a".repeat(64)] {
        assert_eq!(echoed(&with_request_id(&app, good).await), good);
    }
    for bad in [
        "a".repeat(65),
        "a".repeat(8_000),
        "has space".to_string(),
        "semi;colon".to_string(),
        "slash/../etc".to_string(),
        "quote\"d".to_string(),
    ] {
        let used = echoed(&with_request_id(&app, &bad).await);
        assert_ne!(used, bad);
        assert!(used.starts_with("req_") && used.len() <= 64, "{used}");
    }
    let generated = echoed(&app.request(Method::GET, "/healthz", None, None).await);
    assert!(generated.starts_with("req_"), "{generated}");

    // The id actually used is the one the events of the request carry.
    let root = app.root_token().await;
    let res = app
        .client
        .post(app.url("/establishments"))
        .bearer_auth(&root)
        .header("x-request-id", "x".repeat(500))
        .json(&json!({"name": "Tagged", "timezone": "UTC", "locale": "en-US"}))
        .send()
        .await
        .unwrap();
    let r = TestApp::read(res).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let used = echoed(&r);
    assert!(used.starts_with("req_"), "{used}");
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT metadata->>'request_id' FROM events WHERE aggregate_id = $1")
            .bind(r.body["id"].as_str().unwrap())
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert!(!stored.is_empty());
    assert!(stored.iter().all(|s| *s == used), "{stored:?} vs {used}");
}

#[tokio::test]
async fn request_metrics_label_only_the_standard_methods() {
    let app = TestApp::spawn().await;
    for method in ["BREW", "PROPFIND", "XYZZY-1"] {
        let res = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url("/healthz"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    app.request(Method::GET, "/healthz", None, None).await;
    let metrics = app.request(Method::GET, "/metrics", None, None).await.text;
    let requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .collect();
    assert!(
        requests.iter().any(|l| l.contains("method=\"other\"")),
        "{metrics}"
    );
    assert!(requests.iter().any(|l| l.contains("method=\"GET\"")));
    for method in ["BREW", "PROPFIND", "XYZZY"] {
        assert!(
            !metrics.contains(method),
            "{method} became a label: {metrics}"
        );
    }
}

#[tokio::test]
async fn signed_twilio_webhooks_with_values_postgres_could_not_store_are_refused() {
    let twilio = TwilioStandIn::start().await;
    let token = twilio.auth_token.clone();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = TestApp::builder()
        .config(move |c| {
            c.listen_addr = format!("127.0.0.1:{port}").parse().unwrap();
            c.public_base_url = Some(format!("http://127.0.0.1:{port}"));
            c.twilio_auth_token = Some(token);
        })
        .spawn()
        .await;
    let incoming = app.url("/webhooks/twilio/incoming-call");
    let status_url = app.url("/webhooks/twilio/call-status");

    // A well-formed call to a number nobody owns is answered (rejected by TwiML).
    let ok = twilio.incoming_call(&incoming, "+14155550100", "+14158675309");
    assert_eq!(twilio.send(&ok).await.status(), StatusCode::OK);

    // (parameter, its value, which webhook)
    let cases: [(&str, String, &str); 5] = [
        ("CallerCountry", "U\u{0}S".into(), "incoming"),
        ("FromCity", "bell\u{7}".into(), "incoming"),
        ("CallerName", "x".repeat(9_000), "incoming"),
        (
            "Timestamp",
            "Fri, 31 Dec 1999 23:00:00 +0000".into(),
            "status",
        ),
        (
            "Timestamp",
            "Mon, 01 Jan 2120 00:00:00 +0000".into(),
            "status",
        ),
    ];
    for (field, value, kind) in cases {
        let mut hook = twilio.incoming_call(
            if kind == "incoming" {
                &incoming
            } else {
                &status_url
            },
            "+14155550100",
            "+14158675309",
        );
        if kind == "status" {
            hook.params.retain(|(k, _)| k != "CallStatus");
            hook.params.push(("CallStatus".into(), "completed".into()));
        }
        hook.params.push((field.to_string(), value));
        let r = TestApp::read(twilio.send(&hook).await).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {}",
            r.text
        );
        assert_eq!(r.body["error"]["details"]["field"], field, "{}", r.text);
    }
    let calls: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Call'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(calls, 0, "nothing refused was recorded");
}
