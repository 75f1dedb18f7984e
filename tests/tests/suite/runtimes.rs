//! Appendix C M1 and §13 E2E test 1 against the real Docker engine and the reference runtime
//! (runtime-sim): provisioning, lifecycle, health, drain, reconciliation and restarts.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tests::fixtures::{
    provision_runtime, running_and_ready, runtime_status as status, runtime_until,
    start_runtime as start_and_wait_ready,
};
use tests::runtimes::{docker, RuntimeEnv, IMAGE};
use tests::{eventually, secs, Json, TestApp};

async fn setup() -> Option<(RuntimeEnv, TestApp, String)> {
    let env = RuntimeEnv::acquire().await?;
    let app = env.spawn(TestApp::builder()).await;
    let root = app.root_token().await;
    Some((env, app, root))
}

async fn provision(app: &TestApp, token: &str, est: &str, body: Json) -> tests::app::Resp {
    app.post(&format!("/establishments/{est}/runtime"), token, body)
        .await
}

/// Provisions a runtime with `env`; returns its id.
async fn provision_ok(app: &TestApp, token: &str, est: &str, env: Json) -> String {
    provision_runtime(app, token, est, env).await.id
}

async fn runtime_of(app: &TestApp, token: &str, est: &str) -> Json {
    let r = app
        .get(&format!("/establishments/{est}/runtime"), token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

/// Polls the status until `pred` holds (Docker, a health poll: real time); panics with the
/// last status after `budget`.
async fn wait_for(
    app: &TestApp,
    token: &str,
    rt: &str,
    what: &str,
    budget: Duration,
    pred: impl Fn(&Json) -> bool,
) -> Json {
    runtime_until(app, token, rt, what, budget, pred).await
}

/// When the runtime monitor last reconciled. A monitor cycle reconciles (and records what it
/// saw) before it sets this, then polls the health of every running runtime and records it,
/// then waits for the next cycle: a new value means the previous cycle is over.
async fn last_reconciled(app: &TestApp, root: &str) -> Json {
    let r = app.get("/runtimes/reconciliation", root).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["last_run_at"].clone()
}

/// Counts the monitor's reconciliations from now on.
struct Cycles {
    seen: Vec<Json>,
}

impl Cycles {
    async fn start(app: &TestApp, root: &str) -> Cycles {
        Cycles {
            seen: vec![last_reconciled(app, root).await],
        }
    }

    /// Looks at the report again; returns how many reconciliations finished since `start`.
    /// After the second, one whole cycle began after `start`: it listed Docker, recorded what
    /// it saw, polled health and recorded it.
    async fn runs(&mut self, app: &TestApp, root: &str) -> usize {
        let now = last_reconciled(app, root).await;
        if !self.seen.contains(&now) {
            self.seen.push(now);
        }
        self.seen.len() - 1
    }
}

/// Waits for `pred` on the runtime's status, which must hold once `cycles` reconciliations
/// finished after the call (the monitor's promise, "within two cycles", counted in its cycles
/// rather than in time).
async fn within_cycles(
    app: &TestApp,
    root: &str,
    rt: &str,
    what: &str,
    cycles: usize,
    pred: impl Fn(&Json) -> bool,
) -> Json {
    let mut counter = Cycles::start(app, root).await;
    eventually(&format!("runtime {rt} {what}"), secs(30), async || {
        let runs = counter.runs(app, root).await;
        let s = status(app, root, rt).await;
        if pred(&s) {
            return Ok(s);
        }
        assert!(
            runs < cycles,
            "runtime {rt} not {what} within {cycles} monitor cycles: {s}"
        );
        Err(s.to_string())
    })
    .await
}

/// Waits until `n` reconciliations finished after the call.
async fn monitor_cycles(app: &TestApp, root: &str, n: usize) {
    let mut counter = Cycles::start(app, root).await;
    eventually(
        &format!("{n} monitor cycles"),
        secs(30),
        async || match counter.runs(app, root).await {
            runs if runs >= n => Ok(()),
            runs => Err(format!("{runs} so far")),
        },
    )
    .await;
}

async fn count_events(app: &TestApp, rt: &str, event_type: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'Runtime' AND aggregate_id = $1
           AND ($2 = '' OR event_type = $2)",
    )
    .bind(rt)
    .bind(event_type)
    .fetch_one(app.pool())
    .await
    .unwrap()
}

fn inspect(name: &str) -> Value {
    let (ok, out) = docker(&["inspect", name]);
    assert!(ok, "docker inspect {name}: {out}");
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

fn container_running(name: &str) -> bool {
    inspect(name)["State"]["Running"] == true
}

/// Calls the reference runtime directly (its test-only fault switches).
async fn sim(app: &TestApp, base_url: &str, path: &str, body: Json) -> Json {
    let r = app
        .client
        .post(format!("{base_url}{path}"))
        .json(&body)
        .send()
        .await
        .expect("runtime reachable");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

#[tokio::test]
async fn m1_admin_provisions_starts_stops_and_restarts_a_runtime_and_status_follows() {
    let Some((env, app, root)) = setup().await else {
        return;
    };
    let est = app.create_establishment(&root, "Helios Energy HQ").await;
    let r = provision(
        &app,
        &root,
        &est,
        json!({"image": IMAGE, "env": {
            "APP_PUBLIC_DOMAIN": "agent-helios-hq.example.com",
            "SUPABASE_SERVICE_ROLE_KEY": "sk-top-secret-value"
        }}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let keys: HashSet<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        HashSet::from([
            "id",
            "establishment_id",
            "status",
            "container_name",
            "base_url"
        ]),
        "A.4 shape: {}",
        r.text
    );
    let rt = r.body["id"].as_str().unwrap().to_string();
    assert!(rt.starts_with("rt_"));
    assert_eq!(r.body["establishment_id"], est.as_str());
    assert_eq!(r.body["status"], "created");
    let name = format!("agent_rt_{est}");
    assert_eq!(r.body["container_name"], name.as_str());
    let base_url = r.body["base_url"].as_str().unwrap().to_string();
    let port: u16 = base_url
        .strip_prefix("http://127.0.0.1:")
        .expect("loopback base URL")
        .parse()
        .unwrap();
    assert!((env.first_port..=env.last_port).contains(&port));

    // The worker creates the container: named, labelled, published on loopback, limited.
    eventually("the container is created", secs(20), async || {
        let r = runtime_of(&app, &root, &est).await;
        match r["container_id"].is_null() {
            false => Ok(()),
            true => Err(r.to_string()),
        }
    })
    .await;
    let c = inspect(&name);
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["io.controlplane.runtime_id"], rt.as_str());
    assert_eq!(labels["io.controlplane.establishment_id"], est.as_str());
    assert_eq!(labels["io.controlplane.managed"], "true");
    assert_eq!(
        c["HostConfig"]["PortBindings"]["8080/tcp"][0],
        json!({"HostIp": "127.0.0.1", "HostPort": port.to_string()})
    );
    assert_eq!(c["HostConfig"]["Memory"], 64 * 1024 * 1024);
    assert_eq!(c["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    let container_env: Vec<String> = serde_json::from_value(c["Config"]["Env"].clone()).unwrap();
    let var = |k: &str| {
        container_env
            .iter()
            .find_map(|e| e.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("{k} missing from the container env"))
    };
    assert_eq!(var("RUNTIME_ID"), rt);
    assert_eq!(var("ESTABLISHMENT_ID"), est);
    assert_eq!(var("PORT"), "8080");
    assert_eq!(var("SUPABASE_SERVICE_ROLE_KEY"), "sk-top-secret-value");
    assert!(var("CONTROL_PLANE_URL").starts_with("http://172.17.0.1:"));
    let token = var("CONTROL_PLANE_TOKEN");
    let stored: String = sqlx::query_scalar("SELECT token_hash FROM rm_runtimes WHERE id = $1")
        .bind(&rt)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(
        stored,
        hex::encode(Sha256::digest(token.as_bytes())),
        "only the hash is stored"
    );

    // Env values are secrets: not in answers, not in the log, not in read models.
    let view = app
        .get(&format!("/establishments/{est}/runtime"), &root)
        .await;
    assert!(!view.text.contains("sk-top-secret-value"), "{}", view.text);
    assert_eq!(
        view.body["env_keys"],
        json!(["APP_PUBLIC_DOMAIN", "SUPABASE_SERVICE_ROLE_KEY"])
    );
    assert!(!view.text.contains(&token));
    let leaks: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM events WHERE payload::text LIKE '%sk-top-secret%' OR payload::text LIKE '%' || $1 || '%')
              + (SELECT count(*) FROM rm_runtimes WHERE state::text LIKE '%sk-top-secret%')",
    )
    .bind(&token)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(leaks, 0, "a secret reached the database in clear");
    let audit = app
        .get(&format!("/audit/events?aggregate_id={rt}"), &root)
        .await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.text);
    let provisioned = &audit.body["items"][0]["payload"]["RuntimeProvisioned"]["spec"];
    assert_eq!(provisioned["env_encrypted"], "[redacted]", "{}", audit.text);
    assert_eq!(
        audit.body["items"][1]["payload"]["ContainerCreated"]["token_hash"], "[redacted]",
        "{}",
        audit.text
    );

    // Start: the API answers at once; status shows the transition to running and ready.
    let r = app
        .post(&format!("/runtimes/{rt}/start"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert!(
        ["starting", "running"].contains(&r.body["status"].as_str().unwrap()),
        "{}",
        r.text
    );
    let s = wait_for(
        &app,
        &root,
        &rt,
        "ready",
        Duration::from_secs(20),
        running_and_ready,
    )
    .await;
    let keys: HashSet<&str> = s.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        HashSet::from([
            "id",
            "status",
            "ready",
            "ready_issues",
            "last_checked_at",
            "agent_info"
        ]),
        "A.4 status shape: {s}"
    );
    assert_eq!(s["ready_issues"], json!([]));
    assert!(s["last_checked_at"].is_string());
    assert_eq!(
        s["agent_info"],
        json!({"active_calls": 0, "total_calls_handled": 0})
    );
    assert!(container_running(&name));

    // Start of a running runtime: nothing recorded, the answer is its status.
    let before = count_events(&app, &rt, "").await;
    let r = app
        .post(&format!("/runtimes/{rt}/start"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "running");
    assert_eq!(count_events(&app, &rt, "").await, before);

    // Stop.
    let r = app
        .post(&format!("/runtimes/{rt}/stop"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let s = wait_for(&app, &root, &rt, "stopped", Duration::from_secs(20), |s| {
        s["status"] == "stopped"
    })
    .await;
    assert_eq!(s["ready"], false);
    assert!(
        s["ready_issues"][0]
            .as_str()
            .unwrap()
            .contains("not running"),
        "{s}"
    );
    assert!(!container_running(&name));
    let r = app
        .post(&format!("/runtimes/{rt}/stop"), &root, json!({}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "stop of a stopped runtime is a no-op"
    );

    // Restart brings it back.
    let r = app
        .post(&format!("/runtimes/{rt}/restart"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    wait_for(
        &app,
        &root,
        &rt,
        "ready again",
        Duration::from_secs(20),
        running_and_ready,
    )
    .await;
    assert!(container_running(&name));
    let started_at = inspect(&name)["State"]["StartedAt"].clone();
    let r = app
        .post(&format!("/runtimes/{rt}/restart"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_for(
        &app,
        &root,
        &rt,
        "ready after a restart",
        Duration::from_secs(20),
        running_and_ready,
    )
    .await;
    eventually(
        "the restart restarts the container",
        secs(10),
        async || match inspect(&name)["State"]["StartedAt"].clone() {
            at if at != started_at => Ok(()),
            at => Err(format!("started at {at}")),
        },
    )
    .await;
}

#[tokio::test]
async fn m1_readyz_issues_of_an_unready_runtime_are_exposed_as_ready_issues() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let est = app.create_establishment(&root, "Unready").await;
    let rt = provision_ok(
        &app,
        &root,
        &est,
        json!({"SIM_UNREADY": "model not loaded;warming up"}),
    )
    .await;
    let r = app
        .post(&format!("/runtimes/{rt}/start"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let s = wait_for(
        &app,
        &root,
        &rt,
        "running with its issues",
        Duration::from_secs(20),
        |s| {
            s["status"] == "running"
                && s["ready_issues"] == json!(["model not loaded", "warming up"])
        },
    )
    .await;
    assert_eq!(s["ready"], false);

    let base_url = runtime_of(&app, &root, &est).await["base_url"]
        .as_str()
        .unwrap()
        .to_string();
    sim(&app, &base_url, "/admin/faults", json!({"unready": []})).await;
    wait_for(
        &app,
        &root,
        &rt,
        "ready",
        Duration::from_secs(5),
        running_and_ready,
    )
    .await;

    // Health is polled every cycle but recorded only when it changes.
    let changes = count_events(&app, &rt, "HealthChanged").await;
    let first_check = status(&app, &root, &rt).await["last_checked_at"].clone();
    monitor_cycles(&app, &root, 4).await;
    assert_eq!(count_events(&app, &rt, "HealthChanged").await, changes);
    assert_ne!(
        status(&app, &root, &rt).await["last_checked_at"],
        first_check,
        "polls go on"
    );

    // Unready again: shown within two cycles.
    sim(
        &app,
        &base_url,
        "/admin/faults",
        json!({"unready": ["stt provider down"]}),
    )
    .await;
    within_cycles(&app, &root, &rt, "unready", 2, |s| {
        s["ready"] == false && s["ready_issues"] == json!(["stt provider down"])
    })
    .await;
    assert_eq!(count_events(&app, &rt, "HealthChanged").await, changes + 1);
}

#[tokio::test]
async fn e2e_an_establishment_created_gets_a_runtime_provisioned_that_becomes_ready() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let est = app.create_establishment(&root, "E2E Clinic").await;
    // The reference runtime reports ready only once the control plane accepted its token
    // from CONTROL_PLANE_URL: provisioning wired both.
    let rt = provision_ok(
        &app,
        &root,
        &est,
        json!({"SIM_CHECK_CONTROL_PLANE": "true"}),
    )
    .await;
    let s = start_and_wait_ready(&app, &root, &rt).await;
    assert_eq!(s["ready_issues"], json!([]));

    let token = {
        let c = inspect(&format!("agent_rt_{est}"));
        let env: Vec<String> = serde_json::from_value(c["Config"]["Env"].clone()).unwrap();
        env.iter()
            .find_map(|e| e.strip_prefix("CONTROL_PLANE_TOKEN=").map(str::to_string))
            .unwrap()
    };
    let me = app
        .request(Method::GET, "/runtime/whoami", Some(&token), None)
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body, json!({"runtime_id": rt, "establishment_id": est}));
    for bad in [Some("not-a-runtime-token"), None] {
        let r = app.request(Method::GET, "/runtime/whoami", bad, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    }
}

#[tokio::test]
async fn a_container_killed_outside_the_control_plane_shows_in_status_within_two_cycles() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let est = app.create_establishment(&root, "Killed").await;
    let rt = provision_ok(&app, &root, &est, json!({})).await;
    start_and_wait_ready(&app, &root, &rt).await;

    let (ok, out) = docker(&["kill", &format!("agent_rt_{est}")]);
    assert!(ok, "{out}");
    let s = within_cycles(&app, &root, &rt, "exited", 2, |s| s["status"] == "exited").await;
    assert_eq!(s["ready"], false);
    assert!(s["ready_issues"].to_string().contains("137"), "{s}");

    // A container with this control plane's labels that no runtime owns is reported, not
    // touched.
    let instance = app.state().runtimes.instance_id.clone();
    let stray = format!(
        "cp_stray_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    let (ok, out) = docker(&[
        "run",
        "-d",
        "--name",
        &stray,
        "--label",
        "io.controlplane.managed=true",
        "--label",
        &format!("io.controlplane.instance={instance}"),
        "--label",
        "io.controlplane.runtime_id=rt_nobody",
        IMAGE,
    ]);
    assert!(ok, "{out}");
    let report = eventually("the stray container is reported", secs(10), async || {
        let r = app.get("/runtimes/reconciliation", &root).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let unknown = r.body["unknown_containers"].as_array().unwrap();
        match unknown.iter().any(|c| c["name"] == stray.as_str()) {
            true => Ok(r.body),
            false => Err(r.text),
        }
    })
    .await;
    assert_eq!(report["instance_id"], instance.as_str());
    // Three more cycles see it and leave it alone.
    monitor_cycles(&app, &root, 3).await;
    assert!(container_running(&stray), "the stray container was touched");
    assert_eq!(status(&app, &root, &rt).await["status"], "exited");
}

#[tokio::test]
async fn concurrent_provisions_for_different_establishments_get_distinct_ports() {
    let Some(env) = RuntimeEnv::acquire().await else {
        return;
    };
    let app = env
        .configure(TestApp::builder())
        .config(|c| {
            c.runtime.runtime_media_stream_url_template =
                Some("wss://rt-{establishment_id}.example.com/media-stream".into());
        })
        .spawn()
        .await;
    env.track(&app.state().runtimes.instance_id);
    let root = app.root_token().await;
    let mut ests = Vec::new();
    for i in 0..8 {
        ests.push(
            app.create_establishment(&root, &format!("Branch {i}"))
                .await,
        );
    }
    let answers = futures::future::join_all(
        ests.iter()
            .map(|est| provision(&app, &root, est, json!({ "image": IMAGE }))),
    )
    .await;
    let mut ports = HashSet::new();
    for r in &answers {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let port: u16 = r.body["base_url"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((env.first_port..=env.last_port).contains(&port));
        assert!(ports.insert(port), "port {port} given twice");
    }
    let claimed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM unique_claims WHERE scope = 'host_port'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(claimed, 8);
    // The worker creates every container (none is left half-made when the test ends).
    eventually("every container created", secs(30), async || {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM rm_runtimes WHERE pending_op IS NOT NULL")
                .fetch_one(app.pool())
                .await
                .unwrap();
        match pending {
            0 => Ok(()),
            n => Err(format!("{n} pending")),
        }
    })
    .await;
    let created: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rm_runtimes WHERE status = 'created' AND container_id IS NOT NULL",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(created, 8);
    // No media-stream URL given: derived from the template, never the loopback base URL.
    assert_eq!(
        runtime_of(&app, &root, &ests[0]).await["media_stream_url"],
        format!(
            "wss://rt-{}.example.com/media-stream",
            ests[0].to_ascii_lowercase()
        )
    );
}

#[tokio::test]
async fn a_restarted_control_plane_reconciles_containers_changed_behind_its_back() {
    let Some((env, app, root)) = setup().await else {
        return;
    };
    let mut rts = Vec::new();
    for name in ["Killed", "Removed", "Revived"] {
        let est = app.create_establishment(&root, name).await;
        let rt = provision_ok(&app, &root, &est, json!({})).await;
        start_and_wait_ready(&app, &root, &rt).await;
        rts.push((est, rt));
    }
    let (revived_est, revived) = rts[2].clone();
    let r = app
        .post(&format!("/runtimes/{revived}/stop"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_for(
        &app,
        &root,
        &revived,
        "stopped",
        Duration::from_secs(20),
        |s| s["status"] == "stopped",
    )
    .await;
    let removed_container = runtime_of(&app, &root, &rts[1].0).await["container_id"].clone();

    // The control plane goes away; Docker changes behind its back.
    let db = app.stop().await;
    assert!(docker(&["kill", &format!("agent_rt_{}", rts[0].0)]).0);
    assert!(docker(&["rm", "-f", &format!("agent_rt_{}", rts[1].0)]).0);
    assert!(docker(&["start", &format!("agent_rt_{revived_est}")]).0);

    let app = env
        .configure(TestApp::builder().database(&db))
        .spawn()
        .await;
    let root = app.root_token().await;
    wait_for(
        &app,
        &root,
        &rts[0].1,
        "exited",
        Duration::from_secs(10),
        |s| s["status"] == "exited",
    )
    .await;
    wait_for(
        &app,
        &root,
        &rts[1].1,
        "missing",
        Duration::from_secs(10),
        |s| s["status"] == "missing",
    )
    .await;
    wait_for(
        &app,
        &root,
        &revived,
        "running",
        Duration::from_secs(10),
        running_and_ready,
    )
    .await;

    // Starting the removed runtime creates its container again.
    start_and_wait_ready(&app, &root, &rts[1].1).await;
    let now = runtime_of(&app, &root, &rts[1].0).await["container_id"].clone();
    assert!(
        now.is_string() && now != removed_container,
        "{now} vs {removed_container}"
    );
}

#[tokio::test]
async fn a_missing_image_bad_input_and_a_second_provision_are_refused() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let est = app.create_establishment(&root, "Refusals").await;
    let r = provision(
        &app,
        &root,
        &est,
        json!({"image": "voice-agent-runtime:never-built"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.code(), "image_not_found");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("voice-agent-runtime:never-built"));
    let none = app
        .get(&format!("/establishments/{est}/runtime"), &root)
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);

    for body in [
        json!({"image": IMAGE, "env": {"PORT": "9999"}}),
        json!({"image": IMAGE, "env": {"lower_case": "x"}}),
        json!({"image": IMAGE, "env": {"NUMBER": 5}}),
        json!({"image": IMAGE, "media_stream_url": "ws://127.0.0.1:1/media"}),
        json!({"image": IMAGE, "extra": true}),
        json!({"image": ""}),
        json!({"image": "UPPER-CASE:latest"}),
        json!({"image": "a..b"}),
    ] {
        let r = provision(&app, &root, &est, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
    }

    let r = provision(
        &app,
        &root,
        &est,
        json!({"image": IMAGE, "media_stream_url": "wss://rt-refusals.example.com/media-stream"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        runtime_of(&app, &root, &est).await["media_stream_url"],
        "wss://rt-refusals.example.com/media-stream"
    );
    let again = provision(&app, &root, &est, json!({"image": IMAGE})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(again.code(), "runtime_exists");

    let unknown = provision(
        &app,
        &root,
        &control_plane::ids::new_id("est"),
        json!({"image": IMAGE}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn members_read_runtimes_only_admins_change_them_and_outsiders_get_404() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let est = app.create_establishment(&root, "Roles").await;
    let other = app.create_establishment(&root, "Elsewhere").await;
    let rt = provision_ok(&app, &root, &est, json!({})).await;
    let viewer = app.seed_member(&est, "viewer@example.com", "viewer").await;
    let operator = app
        .seed_member(&est, "operator@example.com", "operator")
        .await;
    let outsider = app
        .seed_member(&other, "admin@elsewhere.com", "admin")
        .await;

    for token in [&viewer, &operator] {
        assert_eq!(
            app.get(&format!("/runtimes/{rt}/status"), token)
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            app.get(&format!("/establishments/{est}/runtime"), token)
                .await
                .status,
            StatusCode::OK
        );
        for action in ["start", "stop", "restart", "drain", "resume"] {
            let r = app
                .post(&format!("/runtimes/{rt}/{action}"), token, json!({}))
                .await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{action}: {}", r.text);
        }
        let r = provision(&app, token, &est, json!({"image": IMAGE})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        app.get(&format!("/runtimes/{rt}/status"), &outsider)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/establishments/{est}/runtime"), &outsider)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = app
        .post(&format!("/runtimes/{rt}/start"), &outsider, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = provision(&app, &outsider, &est, json!({"image": IMAGE})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for id in [control_plane::ids::new_id("rt"), "nonsense".to_string()] {
        assert_eq!(
            app.get(&format!("/runtimes/{id}/status"), &root)
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        app.get("/runtimes/reconciliation", &outsider).await.status,
        StatusCode::FORBIDDEN
    );
    let doc = app.request(Method::GET, "/openapi.json", None, None).await;
    for p in [
        "/establishments/{id}/runtime",
        "/runtimes/{runtimeId}/status",
        "/runtimes/{runtimeId}/start",
        "/runtimes/{runtimeId}/stop",
        "/runtimes/{runtimeId}/restart",
        "/runtimes/{runtimeId}/drain",
        "/runtimes/{runtimeId}/resume",
        "/runtime/whoami",
    ] {
        assert!(
            doc.body["paths"].get(p).is_some(),
            "{p} missing from OpenAPI"
        );
    }
}

#[tokio::test]
async fn stop_after_drain_waits_for_active_calls_to_end() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let est = app.create_establishment(&root, "Draining").await;
    let rt = provision_ok(&app, &root, &est, json!({})).await;
    start_and_wait_ready(&app, &root, &rt).await;
    let base_url = runtime_of(&app, &root, &est).await["base_url"]
        .as_str()
        .unwrap()
        .to_string();
    sim(&app, &base_url, "/admin/calls", json!({"active_calls": 1})).await;

    let r = app
        .post(&format!("/runtimes/{rt}/drain"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(runtime_of(&app, &root, &est).await["draining"], true);
    // The runtime itself is told (by the monitor, woken by the drain).
    eventually("the runtime is told to drain", secs(15), async || {
        let info: Json = app
            .client
            .get(format!("{base_url}/info"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match info["draining"] == true {
            true => Ok(()),
            false => Err(info.to_string()),
        }
    })
    .await;
    let again = app
        .post(&format!("/runtimes/{rt}/drain"), &root, json!({}))
        .await;
    assert_eq!(again.status, StatusCode::OK);

    let r = app
        .post(&format!("/runtimes/{rt}/stop"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // The stop waits for the call: its worker polls the runtime (every 250 ms) and records
    // each poll's time as the runtime's `last_checked_at`. After two more polls that found
    // the call still on, the runtime is still stopping.
    let first = status(&app, &root, &rt).await["last_checked_at"].clone();
    let mut checks = vec![first];
    eventually(
        "the stop worker polls the runtime twice",
        secs(15),
        async || {
            let s = status(&app, &root, &rt).await;
            if !checks.contains(&s["last_checked_at"]) {
                checks.push(s["last_checked_at"].clone());
            }
            match checks.len() > 2 {
                true => Ok(()),
                false => Err(s.to_string()),
            }
        },
    )
    .await;
    let s = status(&app, &root, &rt).await;
    assert_eq!(s["status"], "stopping", "waits for the call: {s}");
    assert_eq!(s["agent_info"]["active_calls"], 1);
    assert!(container_running(&format!("agent_rt_{est}")));

    sim(&app, &base_url, "/admin/calls", json!({"active_calls": 0})).await;
    let s = wait_for(&app, &root, &rt, "stopped", Duration::from_secs(15), |s| {
        s["status"] == "stopped"
    })
    .await;
    assert_eq!(s["agent_info"]["total_calls_handled"], 1);

    let r = app
        .post(&format!("/runtimes/{rt}/resume"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(runtime_of(&app, &root, &est).await["draining"], false);
}

#[tokio::test]
async fn a_slow_starting_runtime_runs_unready_until_it_answers() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let est = app.create_establishment(&root, "Slow").await;
    let rt = provision_ok(&app, &root, &est, json!({"SIM_STARTUP_DELAY_MS": "3000"})).await;
    let r = app
        .post(&format!("/runtimes/{rt}/start"), &root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // Running (Docker started it) but not answering yet: unready, and the issue says why.
    let s = wait_for(
        &app,
        &root,
        &rt,
        "running unready",
        Duration::from_secs(20),
        |s| {
            s["status"] == "running"
                && s["ready_issues"][0]
                    .as_str()
                    .is_some_and(|i| i.contains("/readyz"))
        },
    )
    .await;
    assert_eq!(s["ready"], false, "{s}");
    assert!(s["last_checked_at"].is_string(), "{s}");
    wait_for(
        &app,
        &root,
        &rt,
        "ready",
        Duration::from_secs(20),
        running_and_ready,
    )
    .await;
}

#[tokio::test]
async fn a_runtime_that_crashes_is_restarted_by_docker_and_becomes_ready_again() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let est = app.create_establishment(&root, "Crashy").await;
    let rt = provision_ok(&app, &root, &est, json!({})).await;
    start_and_wait_ready(&app, &root, &rt).await;
    let base_url = runtime_of(&app, &root, &est).await["base_url"]
        .as_str()
        .unwrap()
        .to_string();
    sim(
        &app,
        &base_url,
        "/admin/faults",
        json!({"crash": true, "exit_code": 3}),
    )
    .await;
    let name = format!("agent_rt_{est}");
    eventually(
        "Docker restarts the crashed runtime",
        secs(15),
        async || match inspect(&name)["RestartCount"].as_i64().unwrap_or(0) {
            0 => Err("restart count 0".to_string()),
            _ => Ok(()),
        },
    )
    .await;
    // Its in-memory state is gone with the crash: the fault is over and it is ready again.
    wait_for(
        &app,
        &root,
        &rt,
        "ready again",
        Duration::from_secs(15),
        running_and_ready,
    )
    .await;
    assert!(container_running(&name));
}
