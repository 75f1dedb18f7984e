//! Bad input gets a contract-shaped 4xx, never a 500.

use reqwest::StatusCode;
use serde_json::json;
use tests::TestApp;

fn assert_error_shape(body: &serde_json::Value) {
    let e = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no error object in {body}"));
    assert!(
        e["code"].is_string() && e["message"].is_string() && e["details"].is_object(),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_json_unknown_fields_wrong_types_and_missing_content_type_are_4xx() {
    let app = TestApp::spawn().await;
    let token = app.root_token().await;
    let url = app.url("/establishments");
    let send = |body: &'static str, ct: Option<&'static str>| {
        let mut r = app.client.post(&url).bearer_auth(&token).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        async move { TestApp::read(r.send().await.unwrap()).await }
    };
    let r = send("{\"name\": ", Some("application/json")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "malformed_json");
    assert_error_shape(&r.body);

    let r = send(
        r#"{"name":"A","timezone":"UTC","locale":"en","evil":true}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["error"]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{}",
        r.text
    );

    let r = send(
        r#"{"name":42,"timezone":"UTC","locale":"en"}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"]["field"], "name");

    let r = send(
        r#"{"timezone":"UTC","locale":"en"}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("name"), "{}", r.text);

    let r = send(r#"{"name":"A","timezone":"UTC","locale":"en"}"#, None).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error_shape(&r.body);

    let r = send("[]", Some("application/json")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error_shape(&r.body);
}

#[tokio::test]
async fn oversize_bodies_are_413_and_nothing_is_created() {
    let app = TestApp::builder()
        .config(|c| c.max_body_bytes = 4096)
        .spawn()
        .await;
    let token = app.root_token().await;
    let big = "x".repeat(10_000);
    let r = app
        .post(
            "/establishments",
            &token,
            json!({"name": big, "timezone": "UTC", "locale": "en"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "payload_too_large");
    let list = app.get("/establishments", &token).await;
    assert_eq!(list.body["items"], json!([]));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = TestApp::spawn().await;
    let r = app.request(reqwest::Method::GET, "/nope", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_error_shape(&r.body);
    let r = app
        .request(reqwest::Method::DELETE, "/auth/login", None, None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error_shape(&r.body);
}

#[tokio::test]
async fn bad_query_parameters_are_422() {
    let app = TestApp::spawn().await;
    let token = app.root_token().await;
    let r = app.get("/audit/events?limit=abc", &token).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = app.get("/audit/events?limit=100000", &token).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.get("/audit/events?cursor=garbage!", &token).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.get("/audit/events?from=yesterday", &token).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}
