//! The Twilio REST client against the local Twilio stand-in (no database needed), and the
//! stand-in's signed callbacks against the signature check.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use control_plane::adapters::twilio::client::{
    Answer, CallUpdate, CreateCall, Credentials, RetryPolicy, Timeouts, TwilioClient, TwilioError,
};
use control_plane::adapters::twilio::{signature, twiml};
use parking_lot::Mutex;
use tests::twilio::{CallOutcome, Scripted, TwilioStandIn, ACCOUNT_SID, AUTH_TOKEN};

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

fn client_for(stand_in: &TwilioStandIn, token: &str, timeouts: Timeouts) -> TwilioClient {
    TwilioClient::new(
        &stand_in.base_url,
        Credentials::new(ACCOUNT_SID, token),
        fast_retries(),
        timeouts,
    )
    .unwrap()
}

fn client(stand_in: &TwilioStandIn) -> TwilioClient {
    client_for(stand_in, AUTH_TOKEN, Timeouts::default())
}

fn call_to(to: &str, callback: Option<String>) -> CreateCall {
    let mut c = CreateCall::new(
        to,
        "+18005551212",
        Answer::Url("https://cp.example.com/webhooks/twilio/outbound-answer?call_id=call_1".into()),
    );
    c.status_callback = callback;
    c.time_limit = Some(1800);
    c
}

#[tokio::test]
async fn the_client_places_a_call_the_way_twilio_documents() {
    let twilio = TwilioStandIn::start().await;
    let call = client(&twilio)
        .create_call(&call_to(
            "+14158675309",
            Some("https://cp.example.com/webhooks/twilio/call-status?call_id=call_1".into()),
        ))
        .await
        .expect("call created");
    assert!(
        call.sid.starts_with("CA") && call.sid.len() == 34,
        "{}",
        call.sid
    );
    assert!(call.sid.parse::<aggregates::call::CallSid>().is_ok());
    assert_eq!(call.status, "queued");
    let reqs = twilio.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.status, 201);
    assert_eq!(
        r.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json")
    );
    assert_eq!(
        r.basic_auth(),
        Some((ACCOUNT_SID.into(), AUTH_TOKEN.into()))
    );
    assert!(r
        .content_type
        .as_deref()
        .unwrap()
        .starts_with("application/x-www-form-urlencoded"));
    assert_eq!(r.field("To"), Some("+14158675309"));
    assert_eq!(
        r.fields("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    assert_eq!(r.field("StatusCallbackMethod"), Some("POST"));
    assert_eq!(r.field("TimeLimit"), Some("1800"));
}

#[tokio::test]
async fn bad_credentials_come_back_as_twilio_error_20003_and_are_not_retried() {
    let twilio = TwilioStandIn::start().await;
    let err = client_for(&twilio, "wrong-token", Timeouts::default())
        .create_call(&call_to("+14158675309", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(20003));
    assert_eq!(err.http_status(), Some(401));
    assert_eq!(twilio.requests().len(), 1);
    assert!(twilio.calls().is_empty());
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_until_twilio_accepts() {
    let twilio = TwilioStandIn::start().await;
    twilio.script([Scripted::RateLimited, Scripted::ServerError(503)]);
    let call = client(&twilio)
        .create_call(&call_to("+14158675309", None))
        .await
        .expect("third attempt succeeds");
    let statuses: Vec<u16> = twilio.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 503, 201]);
    assert_eq!(twilio.calls().len(), 1);
    assert_eq!(twilio.calls()[0].sid, call.sid);
}

#[tokio::test]
async fn retries_stop_after_the_bounded_number_of_attempts() {
    let twilio = TwilioStandIn::start().await;
    twilio.script(std::iter::repeat_n(Scripted::ServerError(500), 5));
    let err = client(&twilio)
        .create_call(&call_to("+14158675309", None))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), Some(500));
    assert_eq!(twilio.requests().len(), 3, "max_attempts is 3");
}

#[tokio::test]
async fn an_invalid_number_maps_to_21211_without_a_retry() {
    let twilio = TwilioStandIn::start().await;
    twilio.mark_invalid("+14158675300");
    let err = client(&twilio)
        .create_call(&call_to("+14158675300", None))
        .await
        .unwrap_err();
    assert!(err.is_invalid_number(), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(twilio.requests().len(), 1);
    // A malformed number is refused the same way.
    let err = client(&twilio)
        .create_call(&call_to("0800 FLOWERS", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(21211));
}

#[tokio::test]
async fn the_stand_in_refuses_requests_twilio_would_refuse() {
    let twilio = TwilioStandIn::start().await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
        twilio.base_url
    );
    let post = |form: Vec<(&'static str, &'static str)>| {
        http.post(&url)
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
            .form(&form)
            .send()
    };
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        (status, body["code"].as_u64().unwrap())
    };
    let base = [
        ("To", "+14158675309"),
        ("From", "+18005551212"),
        ("Url", "https://x.example/a"),
    ];
    for (drop, expected) in [("To", 21201), ("From", 21213), ("Url", 21205)] {
        let form = base.iter().copied().filter(|(k, _)| *k != drop).collect();
        assert_eq!(
            code(post(form).await.unwrap()).await,
            (400, expected),
            "without {drop}"
        );
    }
    let mut bad_event = base.to_vec();
    bad_event.extend([
        ("StatusCallback", "https://x.example/s"),
        ("StatusCallbackEvent", "hungup"),
    ]);
    assert_eq!(code(post(bad_event).await.unwrap()).await.0, 400);
    let json = http
        .post(&url)
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .json(&serde_json::json!({"To": "+14158675309"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400);
    let elsewhere = http
        .post(format!(
            "{}/2010-04-01/Accounts/ACother/Calls.json",
            twilio.base_url
        ))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .form(&base)
        .send()
        .await
        .unwrap();
    assert_eq!(code(elsewhere).await, (404, 20404));
    assert!(twilio.calls().is_empty());
}

#[tokio::test]
async fn a_timed_out_call_creation_is_not_retried_but_an_update_is() {
    let twilio = TwilioStandIn::start().await;
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_millis(300),
    };
    let c = client_for(&twilio, AUTH_TOKEN, timeouts);
    twilio.script([Scripted::Stall(Duration::from_secs(2))]);
    let err = c
        .create_call(&call_to("+14158675309", None))
        .await
        .unwrap_err();
    assert_eq!(err, TwilioError::Timeout);
    assert_eq!(twilio.received(), 1, "no second dial after a timeout");

    let placed = client(&twilio)
        .create_call(&call_to("+14158675309", None))
        .await
        .unwrap();
    let before = twilio.received();
    twilio.script([Scripted::Stall(Duration::from_secs(2))]);
    c.update_call(&placed.sid, &CallUpdate::Complete)
        .await
        .expect("the retried update lands");
    assert_eq!(twilio.received(), before + 2);
    assert_eq!(twilio.call(&placed.sid).unwrap().status, "completed");
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = TwilioClient::new(
        &format!("http://127.0.0.1:{port}"),
        Credentials::new(ACCOUNT_SID, AUTH_TOKEN),
        fast_retries(),
        Timeouts::default(),
    )
    .unwrap();
    let err = c
        .create_call(&call_to("+14158675309", None))
        .await
        .unwrap_err();
    assert!(matches!(err, TwilioError::Transport(_)), "{err:?}");
}

#[tokio::test]
async fn a_live_call_is_handed_off_with_dial_twiml_and_then_hung_up() {
    let twilio = TwilioStandIn::start().await;
    let c = client(&twilio);
    let placed = c.create_call(&call_to("+14158675309", None)).await.unwrap();
    let dial = twiml::handoff(twiml::Dial::number("+14158675310"));
    c.update_call(&placed.sid, &CallUpdate::Twiml(dial.clone()))
        .await
        .expect("handoff accepted");
    c.update_call(&placed.sid, &CallUpdate::Complete)
        .await
        .expect("hang-up accepted");
    let fake = twilio.call(&placed.sid).unwrap();
    assert_eq!(fake.status, "completed");
    assert_eq!(fake.updates[0], vec![("Twiml".to_string(), dial)]);
    let err = c
        .update_call(&placed.sid, &CallUpdate::Twiml("<Response/>".into()))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(21220),
        "an ended call cannot be redirected"
    );
    let err = c
        .update_call("CA00000000000000000000000000000000", &CallUpdate::Complete)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(20404));
}

type Accepted = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A receiver standing in for the control plane's webhooks: checks the signature against its
/// own public base URL, records what it accepted.
struct Receiver {
    base: String,
    accepted: Accepted,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receiver() -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let state = (base.clone(), accepted.clone());
    let app = axum::Router::new()
        .fallback(
            |State((base, accepted)): State<(String, Accepted)>,
             OriginalUri(uri): OriginalUri,
             headers: HeaderMap,
             body: Bytes| async move {
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
                let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                match signature::verify_request(
                    AUTH_TOKEN,
                    &base,
                    path,
                    header(signature::HEADER),
                    header("content-type"),
                    &body,
                ) {
                    Ok(()) => {
                        accepted
                            .lock()
                            .push(url::form_urlencoded::parse(&body).into_owned().collect());
                        StatusCode::NO_CONTENT
                    }
                    Err(_) => StatusCode::FORBIDDEN,
                }
            },
        )
        .with_state(state);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        base,
        accepted,
        task,
    }
}

fn param<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn status_callbacks_come_back_signed_and_in_sequence() {
    let twilio = TwilioStandIn::start().await;
    let hooks = receiver().await;
    let mut req = call_to(
        "+14158675309",
        Some(format!(
            "{}/webhooks/twilio/call-status?call_id=call_1",
            hooks.base
        )),
    );
    req.machine_detection = Some(aggregates::call::MachineDetection::Enable);
    let placed = client(&twilio).create_call(&req).await.unwrap();
    let statuses = twilio
        .play(
            &placed.sid,
            &CallOutcome::Completed {
                duration: 95,
                answered_by: Some("human".into()),
            },
        )
        .await;
    assert_eq!(statuses, [StatusCode::NO_CONTENT; 4]);
    let got = hooks.accepted.lock().clone();
    let seq: Vec<(&str, &str)> = got
        .iter()
        .map(|p| {
            (
                param(p, "SequenceNumber").unwrap(),
                param(p, "CallStatus").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seq,
        [
            ("0", "queued"),
            ("1", "ringing"),
            ("2", "in-progress"),
            ("3", "completed")
        ]
    );
    let last = &got[3];
    assert_eq!(param(last, "CallSid"), Some(placed.sid.as_str()));
    assert_eq!(param(last, "CallDuration"), Some("95"));
    assert_eq!(param(last, "AnsweredBy"), Some("human"));
    let ts = param(last, "Timestamp").unwrap();
    assert!(chrono::DateTime::parse_from_rfc2822(ts).is_ok(), "{ts}");
    assert_eq!(twilio.call(&placed.sid).unwrap().status, "completed");

    // Tampered or unsigned callbacks are refused by the signature check.
    let mut forged = twilio.status_callbacks(&placed.sid, &CallOutcome::Busy)[0].clone();
    let sig = twilio.sign(&forged);
    forged.params.push(("CallDuration".into(), "9999".into()));
    assert_eq!(
        twilio
            .send_with_signature(&forged, Some(&sig))
            .await
            .status(),
        403
    );
    assert_eq!(
        twilio.send_with_signature(&forged, None).await.status(),
        403
    );
    assert_eq!(hooks.accepted.lock().len(), 4);
}

#[tokio::test]
async fn only_the_requested_events_are_reported_and_async_amd_has_its_own_callback() {
    let twilio = TwilioStandIn::start().await;
    let hooks = receiver().await;
    let mut req = call_to(
        "+14158675309",
        Some(format!("{}/webhooks/twilio/call-status", hooks.base)),
    );
    req.status_callback_events =
        vec![control_plane::adapters::twilio::client::StatusCallbackEvent::Answered];
    req.machine_detection = Some(aggregates::call::MachineDetection::DetectMessageEnd);
    req.async_amd_status_callback = Some(format!("{}/webhooks/twilio/amd-callback", hooks.base));
    let placed = client(&twilio).create_call(&req).await.unwrap();
    let cbs = twilio.status_callbacks(
        &placed.sid,
        &CallOutcome::Completed {
            duration: 30,
            answered_by: Some("machine_end_beep".into()),
        },
    );
    let statuses: Vec<&str> = cbs.iter().map(|c| c.param("CallStatus").unwrap()).collect();
    assert_eq!(statuses, ["in-progress", "completed"]);
    assert!(
        cbs.iter().all(|c| c.param("AnsweredBy").is_none()),
        "async AMD reports separately"
    );
    let amd = twilio
        .amd_callback(&placed.sid, "machine_end_beep")
        .unwrap();
    assert_eq!(twilio.send(&amd).await.status(), 204);
    assert_eq!(
        param(&hooks.accepted.lock()[0], "AnsweredBy"),
        Some("machine_end_beep")
    );
    let busy = twilio.status_callbacks(&placed.sid, &CallOutcome::Busy);
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0].param("CallStatus"), Some("busy"));
}

#[tokio::test]
async fn incoming_call_webhooks_are_signed_like_twilios() {
    let twilio = TwilioStandIn::start().await;
    let hooks = receiver().await;
    let hook = twilio.incoming_call(
        &format!("{}/webhooks/twilio/incoming-call", hooks.base),
        "+14158675309",
        "+18005551212",
    );
    assert_eq!(hook.param("Direction"), Some("inbound"));
    assert!(hook
        .param("CallSid")
        .unwrap()
        .parse::<aggregates::call::CallSid>()
        .is_ok());
    assert_eq!(twilio.send(&hook).await.status(), 204);
    let wrong = signature::compute("not-the-token", &hook.url, &[]);
    assert_eq!(
        twilio
            .send_with_signature(&hook, Some(&wrong))
            .await
            .status(),
        403
    );
    assert_eq!(hooks.accepted.lock().len(), 1);
}

#[tokio::test]
async fn the_stand_ins_callbacks_parse_and_fold_into_one_call_in_any_order() {
    use aggregates::call::{
        AnsweredBy, Call, CallCommand, CallOpening, CallStatus, Direction, OpenedBy,
    };
    use control_plane::adapters::twilio::webhook;

    let twilio = TwilioStandIn::start().await;
    let mut req = call_to(
        "+14158675309",
        Some("https://cp.example.com/webhooks/twilio/call-status".into()),
    );
    req.machine_detection = Some(aggregates::call::MachineDetection::Enable);
    let placed = client(&twilio).create_call(&req).await.unwrap();
    let callbacks = twilio.status_callbacks(
        &placed.sid,
        &CallOutcome::Completed {
            duration: 95,
            answered_by: Some("human".into()),
        },
    );
    let commands: Vec<CallCommand> = callbacks
        .iter()
        .map(|cb| {
            let parsed = webhook::status_callback(&cb.params, chrono::Utc::now()).unwrap();
            let call = webhook::call_params(&cb.params).unwrap();
            CallCommand::RecordTwilioStatus {
                open: Some(CallOpening {
                    call_id: "call_1".into(),
                    establishment_id: "est_1".into(),
                    direction: call.direction,
                    call_sid: Some(call.call_sid),
                    from: call.from,
                    to: call.to,
                    agent_id: None,
                    agent_version_id: None,
                    opened_by: OpenedBy::StatusCallback,
                    at: parsed.at(),
                }),
                callback: parsed,
            }
        })
        .collect();
    assert_eq!(commands.len(), 4);
    let fold = |order: &[usize]| {
        let mut state = Call::default();
        for i in order {
            for e in state.decide(commands[*i].clone()).unwrap() {
                cqrs_es::Aggregate::apply(&mut state, e);
            }
        }
        state
    };
    let in_order = fold(&[0, 1, 2, 3]);
    assert_eq!(in_order.status, CallStatus::Completed);
    assert_eq!(in_order.direction, Some(Direction::Outbound));
    assert_eq!(in_order.duration_seconds, Some(95));
    assert_eq!(in_order.answered_by, Some(AnsweredBy::Human));
    let shuffled_twice = fold(&[3, 1, 3, 0, 2, 2, 1, 0]);
    assert_eq!(shuffled_twice.status, in_order.status);
    assert_eq!(shuffled_twice.duration_seconds, in_order.duration_seconds);
    assert_eq!(shuffled_twice.answered_by, in_order.answered_by);
    assert_eq!(shuffled_twice.twilio, in_order.twilio);
}
