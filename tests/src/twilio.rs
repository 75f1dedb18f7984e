//! A local HTTP server standing in for Twilio's REST API (axum on 127.0.0.1:0), for integration
//! tests: it checks requests the way Twilio documents them (path, Basic auth, form encoding,
//! required fields), answers like Twilio (201 call resource, error JSON), records every request,
//! can be scripted to fail, and sends signed status callbacks and incoming-call webhooks back.
//!
//! The error codes the Twilio guide names (20003, 20429, 21211, 21214) are Twilio's; those
//! marked "stand-in code" are plausible choices, not verified against Twilio.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use chrono::{DateTime, Utc};
use control_plane::adapters::twilio::signature;
use parking_lot::Mutex;
use serde_json::{json, Value};

pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
pub const AUTH_TOKEN: &str = "stand-in-auth-token";
const API_VERSION: &str = "2010-04-01";

/// One request the stand-in received, with the status it answered.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub form: Vec<(String, String)>,
    pub status: u16,
}

impl RecordedRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields(name).into_iter().next()
    }

    pub fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The Basic auth credentials, decoded.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        let b64 = self.authorization.as_deref()?.strip_prefix("Basic ")?;
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

/// A call the stand-in created.
#[derive(Debug, Clone)]
pub struct FakeCall {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub status: String,
    /// The creating request's form.
    pub form: Vec<(String, String)>,
    /// Forms of later updates (handoff TwiML, hang-up).
    pub updates: Vec<Vec<(String, String)>>,
    pub created_at: DateTime<Utc>,
}

impl FakeCall {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn events(&self) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == "StatusCallbackEvent")
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A scripted answer for the next request(s) that pass authentication.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// 429 with code 20429 (and `Retry-After: 0`).
    RateLimited,
    /// A bare 5xx.
    ServerError(u16),
    /// Any error JSON.
    Error {
        status: u16,
        code: u32,
        message: String,
    },
    /// Answer normally, but only after this long (to make the client time out).
    Stall(Duration),
}

#[derive(Default)]
struct Inner {
    /// Requests that arrived (counted before any stall).
    received: usize,
    requests: Vec<RecordedRequest>,
    calls: Vec<FakeCall>,
    script: VecDeque<Scripted>,
    invalid_numbers: HashSet<String>,
    unreachable_numbers: HashSet<String>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
}

/// How the outbound call ends, for [`TwilioStandIn::status_callbacks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// Answered, talked for `duration` seconds; `answered_by` when machine detection ran.
    Completed {
        duration: u32,
        answered_by: Option<String>,
    },
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

/// A webhook request Twilio would make: URL and form parameters (sign and send with
/// [`TwilioStandIn::send`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub params: Vec<(String, String)>,
}

impl Webhook {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct TwilioStandIn {
    pub addr: SocketAddr,
    /// Give this to the control plane as `TWILIO_API_BASE_URL`.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    shared: Shared,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TwilioStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn new_sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", ulid::Ulid::new().0)
}

fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (7..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()) && !d.starts_with('0')
    })
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

fn error(status: u16, code: u32, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        axum::Json(json!({
            "code": code,
            "message": message.into(),
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

fn call_json(c: &FakeCall) -> Value {
    json!({
        "sid": c.sid,
        "account_sid": ACCOUNT_SID,
        "to": c.to,
        "to_formatted": c.to,
        "from": c.from,
        "from_formatted": c.from,
        "status": c.status,
        "direction": "outbound-api",
        "api_version": API_VERSION,
        "date_created": c.created_at.to_rfc2822(),
        "date_updated": Utc::now().to_rfc2822(),
        "price": null,
        "uri": format!("/{API_VERSION}/Accounts/{ACCOUNT_SID}/Calls/{}.json", c.sid),
    })
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type");
    let is_form = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let form: Vec<(String, String)> = if is_form {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        Vec::new()
    };
    let mut record = RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization: header("authorization"),
        content_type: content_type.clone(),
        form: form.clone(),
        status: 0,
    };
    let stall = {
        let mut inner = shared.inner.lock();
        inner.received += 1;
        match inner.script.front() {
            Some(Scripted::Stall(d)) => {
                let d = *d;
                inner.script.pop_front();
                Some(d)
            }
            _ => None,
        }
    };
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    let response = respond(&shared, &method, uri.path(), &record, is_form, form);
    record.status = response.status().as_u16();
    shared.inner.lock().requests.push(record);
    response
}

fn respond(
    shared: &Shared,
    method: &Method,
    path: &str,
    record: &RecordedRequest,
    is_form: bool,
    form: Vec<(String, String)>,
) -> Response {
    let not_found = || {
        error(
            404,
            20404,
            format!("The requested resource {path} was not found"),
        )
    };
    // /2010-04-01/Accounts/{AccountSid}/Calls.json or .../Calls/{CallSid}.json
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (account, call_sid) = match parts.as_slice() {
        [API_VERSION, "Accounts", acct, "Calls.json"] => (*acct, None),
        [API_VERSION, "Accounts", acct, "Calls", sid] => match sid.strip_suffix(".json") {
            Some(s) => (*acct, Some(s.to_string())),
            None => return not_found(),
        },
        _ => return not_found(),
    };
    if record.basic_auth() != Some((ACCOUNT_SID.to_string(), AUTH_TOKEN.to_string())) {
        return error(401, 20003, "Authenticate");
    }
    if account != ACCOUNT_SID {
        return not_found();
    }
    if method != Method::POST {
        return error(405, 20004, "Method not allowed");
    }
    if let Some(s) = shared.inner.lock().script.pop_front() {
        return match s {
            Scripted::RateLimited => {
                let mut r = error(429, 20429, "Too Many Requests");
                r.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("0"));
                r
            }
            Scripted::ServerError(status) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "internal error",
            )
                .into_response(),
            Scripted::Error {
                status,
                code,
                message,
            } => error(status, code, message),
            // Taken before authentication by `handle`; one left here just answers normally.
            Scripted::Stall(_) => create_or_update(shared, is_form, form, call_sid),
        };
    }
    create_or_update(shared, is_form, form, call_sid)
}

fn create_or_update(
    shared: &Shared,
    is_form: bool,
    form: Vec<(String, String)>,
    call_sid: Option<String>,
) -> Response {
    if !is_form {
        // Twilio would simply see no parameters; the stand-in says why (stand-in code).
        return error(
            400,
            20001,
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    match call_sid {
        None => create_call(shared, form),
        Some(sid) => update_call(shared, &sid, form),
    }
}

fn create_call(shared: &Shared, form: Vec<(String, String)>) -> Response {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(to) = get("To") else {
        return error(400, 21201, "No 'To' number is specified");
    };
    let Some(from) = get("From") else {
        return error(400, 21213, "No 'From' number is specified");
    };
    if get("Url").is_none() && get("Twiml").is_none() && get("ApplicationSid").is_none() {
        // stand-in code
        return error(400, 21205, "Url parameter is required");
    }
    {
        let inner = shared.inner.lock();
        let addressable = is_e164(&to) || to.starts_with("client:") || to.starts_with("sip:");
        if !addressable || inner.invalid_numbers.contains(&to) {
            return error(
                400,
                21211,
                format!("The 'To' number {to} is not a valid phone number."),
            );
        }
        if inner.unreachable_numbers.contains(&to) {
            return error(400, 21214, "'To' phone number cannot be reached");
        }
    }
    if !is_e164(&from) {
        return error(
            400,
            21212,
            format!("The 'From' number {from} is not a valid phone number."),
        );
    }
    for url_field in ["Url", "StatusCallback", "AsyncAmdStatusCallback"] {
        if let Some(u) = get(url_field) {
            if !is_http_url(&u) {
                return error(400, 21205, format!("{url_field} is not a valid URL"));
                // stand-in code
            }
        }
    }
    for (k, v) in &form {
        let ok = match k.as_str() {
            "StatusCallbackEvent" => {
                ["initiated", "ringing", "answered", "completed"].contains(&v.as_str())
            }
            "StatusCallbackMethod" | "AsyncAmdStatusCallbackMethod" | "Method" => {
                v == "GET" || v == "POST"
            }
            "MachineDetection" => v == "Enable" || v == "DetectMessageEnd",
            "AsyncAmd" => v == "true" || v == "false",
            "TimeLimit" | "Timeout" | "MachineDetectionTimeout" => v.parse::<u32>().is_ok(),
            _ => true,
        };
        if !ok {
            return error(400, 20001, format!("Invalid value {v:?} for {k}")); // stand-in code
        }
    }
    let call = FakeCall {
        sid: new_sid("CA"),
        to,
        from,
        status: "queued".into(),
        form,
        updates: Vec::new(),
        created_at: Utc::now(),
    };
    let body = call_json(&call);
    shared.inner.lock().calls.push(call);
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

fn update_call(shared: &Shared, sid: &str, form: Vec<(String, String)>) -> Response {
    let mut inner = shared.inner.lock();
    let Some(call) = inner.calls.iter_mut().find(|c| c.sid == sid) else {
        return error(
            404,
            20404,
            format!("The requested resource /{API_VERSION}/Accounts/{ACCOUNT_SID}/Calls/{sid}.json was not found"),
        );
    };
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let ended =
        ["completed", "busy", "failed", "no-answer", "canceled"].contains(&call.status.as_str());
    if ended {
        return error(400, 21220, "Call is not in-progress. Cannot redirect.");
    }
    match (get("Status"), get("Twiml"), get("Url")) {
        (Some(s), _, _) if s == "completed" || s == "canceled" => call.status = s,
        (Some(s), _, _) => return error(400, 20001, format!("Invalid value {s:?} for Status")),
        (None, None, None) => return error(400, 21205, "Url or Twiml is required"),
        _ => {}
    }
    call.updates.push(form);
    let mut body = call_json(call);
    body["direction"] = json!("outbound-api");
    (StatusCode::OK, axum::Json(body)).into_response()
}

impl TwilioStandIn {
    pub async fn start() -> TwilioStandIn {
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Twilio stand-in");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TwilioStandIn {
            addr,
            base_url: format!("http://{addr}"),
            account_sid: ACCOUNT_SID.into(),
            auth_token: AUTH_TOKEN.into(),
            shared,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            task,
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.inner.lock().requests.clone()
    }

    /// How many requests arrived (including ones still stalled or abandoned by the client).
    pub fn received(&self) -> usize {
        self.shared.inner.lock().received
    }

    /// Every call created so far.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.shared.inner.lock().calls.clone()
    }

    pub fn call(&self, sid: &str) -> Option<FakeCall> {
        self.calls().into_iter().find(|c| c.sid == sid)
    }

    /// The next authenticated request(s) get these answers, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.shared.inner.lock().script.extend(answers);
    }

    /// Creating a call to `number` fails with 21211.
    pub fn mark_invalid(&self, number: &str) {
        self.shared
            .inner
            .lock()
            .invalid_numbers
            .insert(number.to_string());
    }

    /// Creating a call to `number` fails with 21214.
    pub fn mark_unreachable(&self, number: &str) {
        self.shared
            .inner
            .lock()
            .unreachable_numbers
            .insert(number.to_string());
    }

    fn set_status(&self, sid: &str, status: &str) {
        if let Some(c) = self
            .shared
            .inner
            .lock()
            .calls
            .iter_mut()
            .find(|c| c.sid == sid)
        {
            c.status = status.to_string();
        }
    }

    /// The status callbacks Twilio would send for a created call, in order, each with its
    /// `SequenceNumber` (from 0) and RFC 2822 `Timestamp`. Only the requested
    /// `StatusCallbackEvent`s are reported (`completed` always is); `initiated` is reported
    /// as `CallStatus=queued`. Empty when the call had no `StatusCallback`.
    pub fn status_callbacks(&self, call_sid: &str, outcome: &CallOutcome) -> Vec<Webhook> {
        let call = self.call(call_sid).expect("a call the stand-in created");
        let Some(url) = call.field("StatusCallback").map(str::to_string) else {
            return Vec::new();
        };
        let events = call.events();
        let sync_amd =
            call.field("MachineDetection").is_some() && call.field("AsyncAmd") != Some("true");
        let mut steps: Vec<(&str, &str)> = vec![("initiated", "queued"), ("ringing", "ringing")];
        let final_status = match outcome {
            CallOutcome::Completed { .. } => {
                steps.push(("answered", "in-progress"));
                "completed"
            }
            CallOutcome::Busy => "busy",
            CallOutcome::NoAnswer => "no-answer",
            CallOutcome::Failed => "failed",
            CallOutcome::Canceled => "canceled",
        };
        steps.push(("completed", final_status));
        let (duration, answered_by) = match outcome {
            CallOutcome::Completed {
                duration,
                answered_by,
            } => (*duration, answered_by.clone()),
            _ => (0, None),
        };
        let start = call.created_at;
        let mut out = Vec::new();
        let mut seq = 0u32;
        for (i, (event, status)) in steps.into_iter().enumerate() {
            if event != "completed" && !events.contains(&event) {
                continue;
            }
            let at = start
                + chrono::Duration::seconds(
                    i as i64 * 2
                        + if status == final_status {
                            duration as i64
                        } else {
                            0
                        },
                );
            let mut p = vec![
                ("AccountSid", ACCOUNT_SID.to_string()),
                ("ApiVersion", API_VERSION.to_string()),
                ("CallSid", call.sid.clone()),
                ("CallStatus", status.to_string()),
                ("CallbackSource", "call-progress-events".to_string()),
                ("Called", call.to.clone()),
                ("Caller", call.from.clone()),
                ("Direction", "outbound-api".to_string()),
                ("From", call.from.clone()),
                ("SequenceNumber", seq.to_string()),
                ("Timestamp", at.to_rfc2822()),
                ("To", call.to.clone()),
            ];
            if status == final_status {
                p.push(("CallDuration", duration.to_string()));
                p.push(("Duration", duration.div_ceil(60).to_string()));
                let sip = match final_status {
                    "completed" => "200",
                    "busy" => "486",
                    "no-answer" => "480",
                    "canceled" => "487",
                    _ => "500",
                };
                p.push(("SipResponseCode", sip.to_string()));
            }
            if sync_amd && (status == "in-progress" || status == "completed") {
                if let Some(a) = &answered_by {
                    p.push(("AnsweredBy", a.clone()));
                    p.push(("MachineDetectionDuration", "2350".to_string()));
                }
            }
            out.push(Webhook {
                url: url.clone(),
                params: p.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            });
            seq += 1;
        }
        out
    }

    /// The async AMD callback for a call created with `AsyncAmd=true`, if any.
    pub fn amd_callback(&self, call_sid: &str, answered_by: &str) -> Option<Webhook> {
        let call = self.call(call_sid)?;
        if call.field("AsyncAmd") != Some("true") {
            return None;
        }
        let url = call.field("AsyncAmdStatusCallback")?.to_string();
        Some(Webhook {
            url,
            params: vec![
                ("AccountSid".into(), ACCOUNT_SID.into()),
                ("AnsweredBy".into(), answered_by.into()),
                ("CallSid".into(), call.sid.clone()),
                ("MachineDetectionDuration".into(), "2350".into()),
            ],
        })
    }

    /// An incoming-call webhook for a new call from `from` to `to`, aimed at `url`.
    pub fn incoming_call(&self, url: &str, from: &str, to: &str) -> Webhook {
        let params = [
            ("AccountSid", ACCOUNT_SID),
            ("ApiVersion", API_VERSION),
            ("CallSid", &new_sid("CA")),
            ("CallStatus", "ringing"),
            ("Called", to),
            ("Caller", from),
            ("Direction", "inbound"),
            ("From", from),
            ("To", to),
            ("CallerCountry", "US"),
        ];
        Webhook {
            url: url.to_string(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The `X-Twilio-Signature` Twilio would send with this webhook.
    pub fn sign(&self, webhook: &Webhook) -> String {
        let params: Vec<(&str, &str)> = webhook
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        signature::compute(&self.auth_token, &webhook.url, &params)
    }

    /// Sends a webhook as Twilio does: form-encoded POST, signed.
    pub async fn send(&self, webhook: &Webhook) -> reqwest::Response {
        let sig = self.sign(webhook);
        self.send_with_signature(webhook, Some(&sig)).await
    }

    /// Sends a webhook with any signature (or none), to test rejections.
    pub async fn send_with_signature(
        &self,
        webhook: &Webhook,
        signature: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.http.post(&webhook.url).form(&webhook.params);
        if let Some(s) = signature {
            req = req.header(signature::HEADER, s);
        }
        req.send().await.expect("webhook delivered")
    }

    /// Plays a call to its end: sends its status callbacks in order (updating the stand-in's
    /// own view of the call), returning the HTTP status of each answer.
    pub async fn play(&self, call_sid: &str, outcome: &CallOutcome) -> Vec<StatusCode> {
        let mut statuses = Vec::new();
        for cb in self.status_callbacks(call_sid, outcome) {
            if let Some(s) = cb.param("CallStatus") {
                self.set_status(call_sid, s);
            }
            let res = self.send(&cb).await;
            statuses.push(StatusCode::from_u16(res.status().as_u16()).expect("status"));
        }
        statuses
    }
}
