//! Runtimes (real Docker): a draining runtime says it is not ready.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::runtimes::{RuntimeEnv, IMAGE};
use tests::TestApp;

async fn setup() -> Option<(RuntimeEnv, TestApp, String)> {
    let env = RuntimeEnv::acquire().await?;
    let app = env.configure(TestApp::builder()).spawn().await;
    env.track(&app.state().runtimes.instance_id);
    let root = app.root_token().await;
    Some((env, app, root))
}

async fn status(app: &TestApp, token: &str, rt: &str) -> Value {
    let r = app.get(&format!("/runtimes/{rt}/status"), token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

async fn wait_status(
    app: &TestApp,
    token: &str,
    rt: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(app, token, rt).await;
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "runtime {rt} not {what}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(s: &Value) -> bool {
    s["status"] == "running" && s["ready"] == true
}

/// Provisions and starts the establishment's runtime; it is ready only once it has proven its
/// token to the control plane (`SIM_CHECK_CONTROL_PLANE`), i.e. once it reached it from its
/// network. Returns the runtime id.
async fn running_runtime(app: &TestApp, root: &str, est: &str) -> String {
    let r = app
        .post(
            &format!("/establishments/{est}/runtime"),
            root,
            json!({"image": IMAGE, "env": {"SIM_CHECK_CONTROL_PLANE": "true"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let rt = r.body["id"].as_str().unwrap().to_string();
    let r = app
        .post(&format!("/runtimes/{rt}/start"), root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    wait_status(app, root, &rt, "ready", ready).await;
    rt
}

#[tokio::test]
async fn a_draining_runtime_reads_not_ready_with_a_draining_issue() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let est = app.create_establishment(&root, "Draining").await;
    let rt = running_runtime(&app, &root, &est).await;
    let r = app
        .post(&format!("/runtimes/{rt}/drain"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // The drain's own answer already says so, and so does every status read after it.
    for s in [r.body, status(&app, &root, &rt).await] {
        assert_eq!(s["status"], "running", "{s}");
        assert_eq!(s["ready"], false, "{s}");
        let issues = s["ready_issues"].as_array().unwrap();
        assert!(issues[0].as_str().unwrap().starts_with("draining"), "{s}");
    }
    let r = app
        .post(&format!("/runtimes/{rt}/resume"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let s = wait_status(&app, &root, &rt, "ready after resume", ready).await;
    assert_eq!(s["ready_issues"], json!([]));
}
