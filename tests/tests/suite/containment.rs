//! Runtimes are contained (real Docker): no new privileges, no capabilities, memory, CPU and
//! process limits, a read-only root filesystem, no binds, and a network of their own per
//! establishment from which the control plane is still reachable; only allowed images are
//! provisioned; a draining runtime says it is not ready.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::runtimes::{docker, RuntimeEnv, IMAGE};
use tests::wait::{eventually, secs};
use tests::TestApp;

async fn setup() -> Option<(RuntimeEnv, TestApp, String)> {
    let env = RuntimeEnv::acquire().await?;
    let app = env
        .configure(TestApp::builder())
        .config(|c| c.runtime.runtime_pids_limit = 128)
        .spawn()
        .await;
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
    eventually(&format!("runtime {rt} {what}"), secs(30), async || {
        let s = status(app, token, rt).await;
        if pred(&s) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await
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

fn inspect(what: &[&str]) -> Value {
    let mut args = vec!["inspect"];
    args.extend_from_slice(what);
    let (ok, out) = docker(&args);
    assert!(ok, "docker inspect {what:?}: {out}");
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

fn network_exists(name: &str) -> bool {
    docker(&["network", "inspect", name]).0
}

#[tokio::test]
async fn runtimes_run_contained_each_on_a_network_of_its_own() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let (est_a, est_b) = (
        app.create_establishment(&root, "Contained A").await,
        app.create_establishment(&root, "Contained B").await,
    );
    let rt_a = running_runtime(&app, &root, &est_a).await;
    let _rt_b = running_runtime(&app, &root, &est_b).await;

    let container = inspect(&[&format!("agent_rt_{est_a}")]);
    let host = &container["HostConfig"];
    assert_eq!(
        host["SecurityOpt"],
        json!(["no-new-privileges:true"]),
        "{host}"
    );
    assert_eq!(host["CapDrop"], json!(["ALL"]), "{host}");
    assert!(host["CapAdd"].is_null(), "{host}");
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["Memory"], 64 * 1024 * 1024);
    assert_eq!(
        host["MemorySwap"],
        64 * 1024 * 1024,
        "no swap beyond the limit"
    );
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["PidsLimit"], 128);
    assert_eq!(host["ReadonlyRootfs"], true);
    assert!(
        host["Tmpfs"]["/tmp"].as_str().unwrap().contains("noexec"),
        "{host}"
    );
    assert!(
        host["Binds"].is_null() || host["Binds"] == json!([]),
        "{host}"
    );
    assert!(
        container["Mounts"].as_array().is_none_or(|m| m
            .iter()
            .all(|m| m["Type"] != "bind" && m["Type"] != "volume")),
        "{container}"
    );
    let net_a = format!("cp-rt-{est_a}");
    let net_b = format!("cp-rt-{est_b}");
    assert_eq!(host["NetworkMode"], net_a.as_str());
    assert_eq!(
        container["NetworkSettings"]["Networks"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [&net_a],
        "on its own network only"
    );
    // Published on loopback only.
    let bindings = host["PortBindings"].as_object().unwrap();
    assert!(bindings
        .values()
        .flat_map(|b| b.as_array().unwrap())
        .all(|b| b["HostIp"] == "127.0.0.1"));

    // Two establishments, two networks, each holding its own runtime only.
    let network_a = inspect(&["--type", "network", &net_a]);
    let network_b = inspect(&["--type", "network", &net_b]);
    assert_eq!(network_a["Driver"], "bridge");
    let labels = &network_a["Labels"];
    assert_eq!(labels["io.controlplane.managed"], "true");
    assert_eq!(
        labels["io.controlplane.instance"],
        app.state().runtimes.instance_id.as_str()
    );
    assert_eq!(labels["io.controlplane.establishment_id"], est_a.as_str());
    let members = |n: &Value| -> Vec<String> {
        n["Containers"]
            .as_object()
            .map(|c| {
                c.values()
                    .map(|v| v["Name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(members(&network_a), [format!("agent_rt_{est_a}")]);
    assert_eq!(members(&network_b), [format!("agent_rt_{est_b}")]);
    assert_ne!(
        network_a["IPAM"]["Config"][0]["Subnet"],
        network_b["IPAM"]["Config"][0]["Subnet"]
    );

    // Its container removed outside the control plane, the runtime's network goes too; a
    // start creates both again, and the runtime reaches the control plane from the new one.
    assert!(docker(&["rm", "-f", &format!("agent_rt_{est_a}")]).0);
    wait_status(&app, &root, &rt_a, "missing", |s| s["status"] == "missing").await;
    eventually(
        &format!("{net_a} gone with its container"),
        secs(15),
        async || (!network_exists(&net_a)).then_some(()),
    )
    .await;
    assert!(
        network_exists(&net_b),
        "the other establishment keeps its network"
    );
    let r = app
        .post(&format!("/runtimes/{rt_a}/start"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    wait_status(&app, &root, &rt_a, "ready again", ready).await;
    assert!(network_exists(&net_a));
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
