//! Runtime event ingestion (Appendix B): authentication and scoping, validation, idempotency
//! at append (replays, concurrent replays, reused keys), batches, runtime-first calls, and the
//! transcript, tool log and recording read models it feeds.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tests::fixtures::ready_runtime;
use tests::runtimes::{container_env, RuntimeEnv};
use tests::wait::{eventually, secs};
use tests::TestApp;

struct Runtime {
    id: String,
    est: String,
    token: String,
}

/// A ready runtime for a new establishment, and the token its container was given.
async fn runtime(app: &TestApp, root: &str, name: &str) -> Runtime {
    let est = app.create_establishment(root, name).await;
    let rt = ready_runtime(app, root, &est, json!({})).await;
    let token = container_env(&rt.container_name, "CONTROL_PLANE_TOKEN")
        .expect("the container was given CONTROL_PLANE_TOKEN");
    Runtime {
        id: rt.id,
        est,
        token,
    }
}

async fn setup() -> Option<(RuntimeEnv, TestApp, String)> {
    let env = RuntimeEnv::acquire().await?;
    let app = env.spawn(TestApp::builder()).await;
    let root = app.root_token().await;
    Some((env, app, root))
}

fn sid(n: u32, salt: u32) -> String {
    format!("CA{salt:08x}{n:024x}")
}

/// Event times near now (calls from long ago would be ended by the reaper).
fn base_time() -> chrono::DateTime<chrono::Utc> {
    static BASE: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| chrono::Utc::now() - chrono::Duration::minutes(5))
}

fn at(secs: i64) -> String {
    (base_time() + chrono::Duration::seconds(secs)).to_rfc3339()
}

fn envelope(rt: &Runtime, call_sid: &str, key: &str, kind: &str, payload: Value) -> Value {
    json!({
        "runtime_id": rt.id,
        "establishment_id": rt.est,
        "agent_id": "agt_sim",
        "agent_version_id": "agv_sim",
        "call": {"provider": "twilio", "provider_call_sid": call_sid, "direction": "inbound",
                 "from_e164": "+14155550100", "to_e164": "+14158675309"},
        "event": {"id": format!("evt_{key}"), "type": kind, "occurred_at": at(5),
                  "idempotency_key": key, "payload": payload},
    })
}

fn segment(n: u32) -> Value {
    json!({"segment_id": format!("seg_{n:06}"), "speaker": if n.is_multiple_of(2) { "agent" } else { "customer" },
           "text": format!("utterance number {n}, thank you"), "started_at": at(n as i64 * 2),
           "ended_at": at(n as i64 * 2 + 1), "confidence": 0.9})
}

/// The events of one call, in the order a runtime sends them.
fn call_events(rt: &Runtime, call_sid: &str, segments: u32) -> Vec<Value> {
    let k = |s: &str| format!("{}:{call_sid}:{s}", rt.id);
    let mut v = vec![
        envelope(
            rt,
            call_sid,
            &k("started"),
            "call_started",
            json!({"started_at": at(0)}),
        ),
        envelope(rt, call_sid, &k("connected"), "call_connected", json!({})),
    ];
    for n in 0..segments {
        v.push(envelope(
            rt,
            call_sid,
            &k(&format!("seg:{n:06}")),
            "transcript_segment",
            segment(n),
        ));
        if n == segments / 2 {
            v.push(envelope(
                rt,
                call_sid,
                &k("tool:1:called"),
                "tool_called",
                json!({"tool_name": "send_email", "arguments": {"to": "a@example.com"}}),
            ));
            v.push(envelope(
                rt,
                call_sid,
                &k("tool:1:result"),
                "tool_result",
                json!({"tool_name": "send_email", "result": {"ok": true}, "error": null}),
            ));
        }
    }
    v.push(envelope(rt, call_sid, &k("recording"), "recording_available",
        json!({"recording_url": format!("https://recordings.example.invalid/{call_sid}.wav"), "storage_provider": "s3", "content_type": "audio/wav"})));
    v.push(envelope(rt, call_sid, &k("ended"), "call_ended",
        json!({"ended_at": at(1000), "duration_seconds": 1000, "final_status": "completed", "hangup_by": "customer", "segment_count": segments})));
    v
}

async fn post(app: &TestApp, token: &str, body: &Value) -> tests::app::Resp {
    app.post("/ingest/call-events", token, body.clone()).await
}

#[tokio::test]
async fn ingestion_checks_the_token_the_envelope_and_the_payload() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let rt = runtime(&app, &root, "A").await;
    let other = runtime(&app, &root, "B").await;
    let call = sid(1, 1);
    let good = envelope(
        &rt,
        &call,
        "k1",
        "call_started",
        json!({"started_at": at(0)}),
    );

    let r = app
        .request(
            reqwest::Method::POST,
            "/ingest/call-events",
            None,
            Some(good.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = post(&app, "not-a-token", &good).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A user's token is not a runtime token.
    let r = post(&app, &root, &good).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Another runtime's token: 403, nothing recorded.
    let r = post(&app, &other.token, &good).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut wrong_est = good.clone();
    wrong_est["establishment_id"] = json!(other.est);
    let r = post(&app, &rt.token, &wrong_est).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = post(
        &app,
        &rt.token,
        &envelope(&rt, &call, "k2", "call_teleported", json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"]["details"]["field"], "event.type");
    let mut bad = segment(1);
    bad["speaker"] = json!("narrator");
    let r = post(
        &app,
        &rt.token,
        &envelope(&rt, &call, "k3", "transcript_segment", bad),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let mut long = segment(1);
    long["text"] = json!("x".repeat(20_000));
    let r = post(
        &app,
        &rt.token,
        &envelope(&rt, &call, "k4", "transcript_segment", long),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let mut unknown_field = good.clone();
    unknown_field["extra"] = json!(1);
    let r = post(&app, &rt.token, &unknown_field).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut bad_sid = good.clone();
    bad_sid["call"]["provider_call_sid"] = json!("nope");
    let r = post(&app, &rt.token, &bad_sid).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Call'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing recorded from refused events");

    // Accepted; replayed: accepted again, nothing added; same key, other payload: 409.
    let r = post(&app, &rt.token, &good).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body, json!({"status": "accepted"}));
    let r = post(&app, &rt.token, &good).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let mut changed = good.clone();
    changed["event"]["payload"]["started_at"] = json!(at(1));
    let r = post(&app, &rt.token, &changed).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "idempotency_key_reused");
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'RuntimeCallStarted'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(n, 1);

    // A batch answers per item.
    let batch = json!([
        envelope(&rt, &call, "b1", "call_connected", json!({})),
        envelope(
            &rt,
            &call,
            "b2",
            "transcript_segment",
            json!({"speaker": "customer"})
        ),
        good,
    ]);
    let r = post(&app, &rt.token, &batch).await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS, "{}", r.text);
    let statuses: Vec<&str> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "rejected", "duplicate"]);
    assert_eq!(r.body["results"][1]["error"]["status"], 422);
}

#[tokio::test]
async fn events_from_the_runtime_open_the_call_and_twilio_merges_in_later() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let rt = runtime(&app, &root, "A").await;
    let call_sid = sid(7, 2);
    for e in call_events(&rt, &call_sid, 6) {
        let r = post(&app, &rt.token, &e).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    }
    let call_id: String = sqlx::query_scalar(
        "SELECT owner_id FROM unique_claims WHERE scope = 'call_sid' AND value = $1",
    )
    .bind(&call_sid)
    .fetch_one(app.pool())
    .await
    .unwrap();
    // Ingestion answers before the read models show the events (and before the summary).
    app.settle().await;
    let d = app.get(&format!("/calls/{call_id}"), &root).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.text);
    assert_eq!(d.body["provider_call_sid"], call_sid.as_str());
    assert_eq!(d.body["establishment_id"], rt.est.as_str());
    assert_eq!(d.body["transcript_segments"], 6);

    let t = app
        .get(&format!("/calls/{call_id}/transcript"), &root)
        .await;
    assert_eq!(t.body["items"].as_array().unwrap().len(), 6);
    assert_eq!(t.body["is_complete"], true);
    let log = app.get(&format!("/calls/{call_id}/tool-log"), &root).await;
    let item = &log.body["items"][0];
    assert_eq!(
        (item["tool_name"].as_str(), item["status"].as_str()),
        (Some("send_email"), Some("ok"))
    );
    assert_eq!(item["arguments"], json!({"to": "a@example.com"}));
    assert_eq!(item["result"], json!({"ok": true}));
    assert!(item["latency_ms"].is_number());

    // The recording link is signed and short-lived; tampering or expiry is refused.
    let rec = app.get(&format!("/calls/{call_id}/recording"), &root).await;
    assert_eq!(rec.status, StatusCode::OK, "{}", rec.text);
    let url = rec.body["url"].as_str().unwrap().to_string();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(
        res.headers()["location"],
        format!("https://recordings.example.invalid/{call_sid}.wav").as_str()
    );
    let res = client
        .get(url.replace("signature=", "signature=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let expired = url.replace("expires=", "expires=1");
    assert_eq!(
        client.get(&expired).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let outsider_est = app.create_establishment(&root, "Outsider").await;
    let outsider = app
        .seed_member(&outsider_est, "out@example.com", "admin")
        .await;
    assert_eq!(
        app.get(&format!("/calls/{call_id}/recording"), &outsider)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Summary and sentiment follow the end of the call (the system settled above).
    let d = app.get(&format!("/calls/{call_id}"), &root).await.body;
    assert!(
        d["summary"]["text"].is_string() && d["sentiment"]["label"].is_string(),
        "no summary/sentiment: {d}"
    );
    let score = d["sentiment"]["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score), "{d}");
}

#[tokio::test]
async fn the_transcript_poll_returns_only_new_segments_after_the_cursor_in_speaker_order() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let rt = runtime(&app, &root, "A").await;
    let call_sid = sid(3, 3);
    let events = call_events(&rt, &call_sid, 10);
    for e in &events[..6] {
        let r = post(&app, &rt.token, e).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    }
    let call_id: String = sqlx::query_scalar(
        "SELECT owner_id FROM unique_claims WHERE scope = 'call_sid' AND value = $1",
    )
    .bind(&call_sid)
    .fetch_one(app.pool())
    .await
    .unwrap();
    // Ingestion answers before the read models show the events.
    app.settle().await;
    let first = app
        .get(&format!("/calls/{call_id}/transcript"), &root)
        .await;
    let ids = |r: &tests::app::Resp| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["segment_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first).len(), 4, "{}", first.text);
    assert_eq!(first.body["is_complete"], false, "{}", first.text);
    let cursor = first.body["cursor"].as_str().unwrap().to_string();
    let again = app
        .get(
            &format!("/calls/{call_id}/transcript?cursor={cursor}"),
            &root,
        )
        .await;
    assert!(ids(&again).is_empty(), "nothing new yet: {}", again.text);
    // A late segment (earlier started_at) arrives with the next ones: it is not missed.
    let late = envelope(&rt, &call_sid, "late-seg", "transcript_segment", {
        let mut s = segment(100);
        s["started_at"] = json!(at(-1));
        s["ended_at"] = json!(at(0));
        s
    });
    let r = post(&app, &rt.token, &late).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    for e in &events[6..] {
        let r = post(&app, &rt.token, e).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    }
    app.settle().await;
    let next = app
        .get(
            &format!("/calls/{call_id}/transcript?cursor={cursor}"),
            &root,
        )
        .await;
    let new_ids = ids(&next);
    assert_eq!(new_ids.len(), 7, "{new_ids:?} {}", next.text);
    assert_eq!(
        new_ids[0], "seg_000100",
        "speaker order puts the late one first"
    );
    assert_eq!(next.body["is_complete"], true);
    let by_id = app
        .get(
            &format!(
                "/calls/{call_id}/transcript?since_segment_id={}",
                ids(&first)[3]
            ),
            &root,
        )
        .await;
    assert_eq!(ids(&by_id).len(), 7);
    let bad = app
        .get(&format!("/calls/{call_id}/transcript?cursor=zzz"), &root)
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn read_models(app: &TestApp, est: &str) -> Value {
    let calls: Value = sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(jsonb_build_object('sid', provider_call_sid, 'status', status, 'segments', segments,
             'expected', expected_segments, 'tools', tool_calls, 'recording', recording->>'recording_url',
             'duration', duration_seconds) ORDER BY provider_call_sid), '[]') FROM rm_calls WHERE establishment_id = $1",
    ).bind(est).fetch_one(app.pool()).await.unwrap();
    let segments: Value = sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(jsonb_build_array(substr(c.provider_call_sid, 11), s.ordinal, s.segment_id, s.speaker, s.text)
             ORDER BY c.provider_call_sid, s.ordinal), '[]')
         FROM rm_transcript_segments s JOIN rm_calls c ON c.id = s.call_id WHERE c.establishment_id = $1",
    ).bind(est).fetch_one(app.pool()).await.unwrap();
    let tools: Value = sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(jsonb_build_array(substr(c.provider_call_sid, 11), t.invocation, t.tool_name, t.result)
             ORDER BY c.provider_call_sid), '[]')
         FROM rm_tool_log t JOIN rm_calls c ON c.id = t.call_id WHERE c.establishment_id = $1",
    ).bind(est).fetch_one(app.pool()).await.unwrap();
    let mut calls = calls;
    for c in calls.as_array_mut().unwrap() {
        let s = c["sid"].as_str().unwrap()[10..].to_string();
        c["sid"] = json!(s);
        c["recording"] = json!(c["recording"].is_string());
    }
    json!({"calls": calls, "segments": segments, "tools": tools})
}

#[tokio::test]
async fn the_same_ten_thousand_events_sent_twice_by_sixteen_senders_are_stored_once() {
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let once = runtime(&app, &root, "Once").await;
    let twice = runtime(&app, &root, "Twice").await;
    // 20 calls × 500 events = 10,000 events per runtime.
    let calls = 20u32;
    let per_call = |rt: &Runtime, salt: u32| -> Vec<Vec<Value>> {
        (0..calls)
            .map(|n| call_events(rt, &sid(n, salt), 494))
            .collect()
    };
    let single = per_call(&once, 0xaaaa);
    let double = per_call(&twice, 0xbbbb);
    assert_eq!(single.iter().map(Vec::len).sum::<usize>(), 10_000);

    let app = Arc::new(app);
    let send = |app: Arc<TestApp>, token: String, events: Vec<Vec<Value>>| async move {
        for call in events {
            for chunk in call.chunks(25) {
                let r = app
                    .post("/ingest/call-events", &token, Value::Array(chunk.to_vec()))
                    .await;
                assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
            }
        }
    };
    // Once, by 8 senders.
    let mut tasks = Vec::new();
    for k in 0..8usize {
        let mine: Vec<Vec<Value>> = single
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 8 == k)
            .map(|(_, c)| c.clone())
            .collect();
        tasks.push(tokio::spawn(send(app.clone(), once.token.clone(), mine)));
    }
    // Twice, by 16 senders racing: each call's events go out from two senders at once.
    for k in 0..16usize {
        let mine: Vec<Vec<Value>> = double
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 8 == k % 8)
            .map(|(_, c)| c.clone())
            .collect();
        tasks.push(tokio::spawn(send(app.clone(), twice.token.clone(), mine)));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let count = |est: String| {
        let pool = app.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM events WHERE aggregate_type = 'Call' AND establishment_id = $1
                   AND metadata->>'actor_type' = 'runtime'",
            )
            .bind(est)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Each runtime event is one domain event (plus status changes it causes).
    let stored_once = count(once.est.clone()).await;
    let stored_twice = count(twice.est.clone()).await;
    let by_type = |est: String| {
        let pool = app.pool().clone();
        async move {
            sqlx::query_scalar::<_, Value>(
                "SELECT jsonb_object_agg(event_type, n) FROM (SELECT event_type, count(*) AS n FROM events
                 WHERE aggregate_type = 'Call' AND establishment_id = $1 GROUP BY event_type) t",
            )
            .bind(est)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        stored_once,
        stored_twice,
        "{} vs {}",
        by_type(once.est.clone()).await,
        by_type(twice.est.clone()).await
    );
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key LIKE $1")
        .bind(format!("ingest:{}:%", twice.est))
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(keys, 10_000, "exactly 10,000 events stored");
    app.settle().await;
    assert_eq!(
        read_models(&app, &once.est).await,
        read_models(&app, &twice.est).await
    );
    let segs: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_transcript_segments s JOIN rm_calls c ON c.id = s.call_id WHERE c.establishment_id = $1")
        .bind(&twice.est).fetch_one(app.pool()).await.unwrap();
    assert_eq!(segs, 20 * 494);
}

/// Every transcript page of `call_id` (from each cursor, and after each segment id) as
/// `(after, segment ids, counters)`, read by `read`.
async fn pages<F, Fut>(call_id: &str, segments: &[String], read: F) -> Vec<Value>
where
    F: Fn(Option<i64>, Option<String>) -> Fut,
    Fut: std::future::Future<Output = Option<projections::calls::queries::TranscriptPage>>,
{
    let mut out = Vec::new();
    let mut asks: Vec<(Option<i64>, Option<String>)> = (0..=segments.len() as i64 + 1)
        .map(|a| (Some(a), None))
        .collect();
    asks.extend(segments.iter().map(|s| (None, Some(s.clone()))));
    asks.push((None, Some("seg_unknown".into())));
    for (after, since) in asks {
        let page = read(after, since.clone()).await.expect("the call exists");
        let c = &page.call;
        out.push(json!({
            "call": call_id, "after": after, "since": since, "page_after": c.after,
            "establishment": c.establishment_id, "segments": c.segments,
            "expected": c.expected_segments, "runtime_ended": c.runtime_ended,
            "runtime_started": c.runtime_started, "active": c.active,
            "items": page.segments.iter().map(|s| json!([s.ordinal, s.segment_id, s.speaker, s.text,
                s.started_at, s.ended_at, s.confidence])).collect::<Vec<_>>(),
        }));
    }
    out
}

/// The active calls as the UI sees them (id, status, sentiment), in order.
fn active_ids(rows: &[projections::calls::queries::CallRow]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            json!([
                r.id,
                r.status,
                r.establishment_id,
                r.started_at,
                r.sentiment,
                r.answered_at
            ])
        })
        .collect()
}

#[tokio::test]
async fn the_live_calls_in_memory_answer_exactly_what_the_database_answers() {
    use projections::calls::queries;
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let a = runtime(&app, &root, "A").await;
    let b = runtime(&app, &root, "B").await;
    let sids = [(sid(1, 77), &a), (sid(2, 77), &a), (sid(3, 77), &b)];
    let scripts: Vec<Vec<Value>> = sids.iter().map(|(s, rt)| call_events(rt, s, 8)).collect();
    let live = app.state().live_calls.clone();
    let pool = app.pool().clone();
    // In three steps: part of each call, the rest of two, the end of one.
    for (step, upto) in [(0usize, 5usize), (1, 9), (2, usize::MAX)] {
        for (i, events) in scripts.iter().enumerate() {
            let (rt, n) = (
                sids[i].1,
                if i == 2 && step == 2 {
                    events.len()
                } else {
                    upto.min(events.len() - 1)
                },
            );
            let body = Value::Array(events[..n].to_vec());
            let r = post(&app, &rt.token, &body).await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        }
        app.settle().await;
        assert!(
            live.serving(),
            "the calls projector of this process feeds the model"
        );
        for (s, _) in &sids {
            let call_id: String = sqlx::query_scalar(
                "SELECT owner_id FROM unique_claims WHERE scope = 'call_sid' AND value = $1",
            )
            .bind(s)
            .fetch_one(&pool)
            .await
            .unwrap();
            assert!(live.holds(&call_id), "step {step}: {call_id} is held");
            let ids: Vec<String> = queries::all_segments(&pool, &call_id)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.segment_id)
                .collect();
            let (pool2, live2) = (pool.clone(), live.clone());
            let from_db = pages(&call_id, &ids, |after, since| {
                let (pool, id) = (pool2.clone(), call_id.clone());
                async move {
                    queries::transcript_page(&pool, &id, after, since.as_deref(), 3)
                        .await
                        .unwrap()
                }
            })
            .await;
            let from_memory = pages(&call_id, &ids, |after, since| {
                let (pool, id, live) = (pool2.clone(), call_id.clone(), live2.clone());
                async move {
                    live.transcript_page(&pool, &id, after, since.as_deref(), 3)
                        .await
                        .unwrap()
                }
            })
            .await;
            assert_eq!(from_memory, from_db, "step {step}, call {call_id}");
        }
        for scope in [None, Some(vec![a.est.clone()]), Some(vec![b.est.clone()])] {
            for limit in [1, 2, 500] {
                let db = queries::active(&pool, scope.as_deref(), limit)
                    .await
                    .unwrap();
                let mem = live.active(&pool, scope.as_deref(), limit).await.unwrap();
                assert_eq!(
                    active_ids(&mem),
                    active_ids(&db),
                    "step {step} {scope:?} {limit}"
                );
            }
        }
    }
    let active = queries::active(&pool, None, 500).await.unwrap();
    assert_eq!(active.len(), 2, "two calls go on, one ended");
}

#[tokio::test]
async fn while_another_process_projects_calls_the_reads_come_from_the_database() {
    use projections::calls::queries;
    let Some((_env, app, root)) = setup().await else {
        return;
    };
    let rt = runtime(&app, &root, "A").await;
    let call_sid = sid(9, 78);
    let events = call_events(&rt, &call_sid, 6);
    let r = post(&app, &rt.token, &Value::Array(events[..4].to_vec())).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    app.settle().await;
    let live = app.state().live_calls.clone();
    assert!(live.serving());
    let call_id: String = sqlx::query_scalar(
        "SELECT owner_id FROM unique_claims WHERE scope = 'call_sid' AND value = $1",
    )
    .bind(&call_sid)
    .fetch_one(app.pool())
    .await
    .unwrap();

    // Another process holds the calls projector's lock (as a second control plane would).
    let mut other = app.pool().acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext('projector:calls'))")
        .execute(&mut *other)
        .await
        .unwrap();
    let r = post(&app, &rt.token, &events[4]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    eventually(
        "this process stops serving from memory",
        secs(10),
        async || (!live.serving()).then_some(()),
    )
    .await;
    assert!(!live.holds(&call_id));
    // The other process writes the read model (here: by hand); the reads show it at once.
    sqlx::query("UPDATE rm_calls SET segments = segments + 100 WHERE id = $1")
        .bind(&call_id)
        .execute(&mut *other)
        .await
        .unwrap();
    let page = live
        .transcript_page(app.pool(), &call_id, Some(0), None, 10)
        .await
        .unwrap()
        .unwrap();
    assert!(page.call.segments >= 100, "read from the database");
    sqlx::query("UPDATE rm_calls SET segments = segments - 100 WHERE id = $1")
        .bind(&call_id)
        .execute(&mut *other)
        .await
        .unwrap();

    // The lock comes back: this process applies what it missed and serves from memory again.
    sqlx::query("SELECT pg_advisory_unlock(hashtext('projector:calls'))")
        .execute(&mut *other)
        .await
        .unwrap();
    drop(other);
    let r = post(&app, &rt.token, &events[5]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    app.settle().await;
    assert!(live.serving() && live.holds(&call_id));
    let db = queries::transcript_page(app.pool(), &call_id, Some(0), None, 100)
        .await
        .unwrap()
        .unwrap();
    let mem = live
        .transcript_page(app.pool(), &call_id, Some(0), None, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mem.segments.len(), db.segments.len());
    assert_eq!(mem.call.segments, db.call.segments);
    assert_eq!(db.segments.len(), 4, "segments 0 to 3 of six");
}
