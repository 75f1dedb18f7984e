//! Runtimes: only allowed images are provisioned; a draining runtime (real Docker) says it is
//! not ready.

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
async fn images_outside_the_allow_list_are_refused() {
    let app = TestApp::builder()
        .config(|c| {
            c.runtime.runtime_image_allowlist =
                "agent-runtime-sim:*,registry.local/rt:1".parse().unwrap()
        })
        .spawn()
        .await;
    let root = app.root_token().await;
    let est = app.create_establishment(&root, "Picky").await;
    for image in [
        "alpine:latest",
        "voice-agent-runtime:latest",
        "registry.local/rt:2",
        "agent-runtime-simulator:latest",
    ] {
        let r = app
            .post(
                &format!("/establishments/{est}/runtime"),
                &root,
                json!({ "image": image }),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{image}: {}",
            r.text
        );
        assert_eq!(r.code(), "image_not_allowed", "{}", r.text);
        assert_eq!(r.body["error"]["details"]["field"], "image");
        assert_eq!(r.body["error"]["details"]["image"], image);
    }
    let none = app
        .get(&format!("/establishments/{est}/runtime"), &root)
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "nothing was recorded");

    // The default list: the reference image and the product's runtime image.
    let default = TestApp::spawn().await;
    let root = default.root_token().await;
    let est = default.create_establishment(&root, "Default").await;
    let r = default
        .post(
            &format!("/establishments/{est}/runtime"),
            &root,
            json!({"image": "busybox:latest"}),
        )
        .await;
    assert_eq!(r.code(), "image_not_allowed", "{}", r.text);
    let r = default
        .post(
            &format!("/establishments/{est}/runtime"),
            &root,
            json!({"image": "voice-agent-runtime:never-built"}),
        )
        .await;
    assert_ne!(r.code(), "image_not_allowed", "{}", r.text);
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
