//! What a caller controls stays bounded: request ids (copied into every event's metadata) and
//! metric labels.

use reqwest::{Method, StatusCode};
use serde_json::json;
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
