//! Probes, metrics, the OpenAPI document and request ids.

use reqwest::{Method, StatusCode};
use tests::TestApp;

#[tokio::test]
async fn probes_metrics_and_request_ids() {
    let app = TestApp::spawn().await;
    let r = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "ready");
    assert!(r.headers["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));

    app.root_token().await;
    let r = app.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("http_requests_total"), "{}", r.text);
    assert!(r.text.contains("route=\"/auth/login\""), "{}", r.text);
}

#[tokio::test]
async fn readyz_reports_unapplied_migrations() {
    let app = TestApp::spawn().await;
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(app.pool())
    .await
    .unwrap();
    let r = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.body["issues"][0]
            .as_str()
            .unwrap()
            .contains("not applied"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_the_docs_page_renders_it() {
    let app = TestApp::spawn().await;
    let r = app.request(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let paths = r.body["paths"].as_object().unwrap();
    for p in [
        "/auth/login",
        "/auth/logout",
        "/auth/forgot-password",
        "/auth/reset-password",
        "/auth/accept-invite",
        "/me",
        "/establishments",
        "/establishments/{id}",
        "/establishments/{id}/users",
        "/users/{userId}",
        "/establishments/{id}/users/{userId}",
        "/audit/events",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    let docs = app.request(Method::GET, "/docs", None, None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.contains("/establishments/{id}/users"));
}
