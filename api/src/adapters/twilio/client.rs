//! Twilio REST client (reqwest): place a call, update a live call (handoff `<Dial>`, hang up).
//! Form-encoded requests with HTTP Basic auth against a configurable base URL; Twilio's error
//! JSON becomes a typed error; 429/20429 and 5xx are retried with exponential backoff and jitter
//! (bounded attempts), other 4xx are not. A timed-out call creation is never retried: Twilio
//! may have placed the call, and dialling someone twice is worse than failing once.

use std::fmt;
use std::time::Duration;

use aggregates::call::MachineDetection;
use rand::Rng;
use serde::Deserialize;

use crate::config::Config;

/// Twilio's error code for "too many requests".
pub const CODE_TOO_MANY_REQUESTS: u32 = 20429;
/// Twilio's error code for an invalid `To` number.
pub const CODE_INVALID_TO: u32 = 21211;
/// Twilio's error code for bad credentials.
pub const CODE_AUTHENTICATE: u32 = 20003;

/// Account SID and auth token. `Debug` never shows the token.
#[derive(Clone)]
pub struct Credentials {
    pub account_sid: String,
    auth_token: String,
}

impl Credentials {
    pub fn new(account_sid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
        }
    }

    pub fn auth_token(&self) -> &str {
        &self.auth_token
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (0 = the first retry): exponential, capped, with
    /// "equal jitter" (half fixed, half random) so concurrent callers spread out but never
    /// hammer. A `Retry-After` from Twilio is honoured up to `max_delay`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let half = exp / 2;
        let jitter =
            Duration::from_nanos(rng.gen_range(0..=half.as_nanos().min(u64::MAX as u128) as u64));
        let backoff = half + jitter;
        match retry_after {
            Some(r) => r.min(self.max_delay).max(backoff),
            None => backoff,
        }
    }
}

/// What Twilio runs when the call is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Twilio fetches TwiML from this URL (our webhook).
    Url(String),
    /// Inline TwiML.
    Twiml(String),
}

/// Progress events Twilio reports to `StatusCallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCallbackEvent {
    Initiated,
    Ringing,
    Answered,
    Completed,
}

impl StatusCallbackEvent {
    pub const ALL: [StatusCallbackEvent; 4] = [
        StatusCallbackEvent::Initiated,
        StatusCallbackEvent::Ringing,
        StatusCallbackEvent::Answered,
        StatusCallbackEvent::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StatusCallbackEvent::Initiated => "initiated",
            StatusCallbackEvent::Ringing => "ringing",
            StatusCallbackEvent::Answered => "answered",
            StatusCallbackEvent::Completed => "completed",
        }
    }
}

/// `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateCall {
    pub to: String,
    pub from: String,
    pub answer: Answer,
    pub status_callback: Option<String>,
    /// Sent only with a `status_callback`; all four by default.
    pub status_callback_events: Vec<StatusCallbackEvent>,
    /// Maximum length of the call in seconds (`TimeLimit`).
    pub time_limit: Option<u32>,
    /// Seconds to let it ring (`Timeout`).
    pub timeout: Option<u32>,
    pub machine_detection: Option<MachineDetection>,
    /// With machine detection: report the result asynchronously to this URL
    /// (`AsyncAmd=true`, `AsyncAmdStatusCallback`).
    pub async_amd_status_callback: Option<String>,
}

impl CreateCall {
    pub fn new(to: impl Into<String>, from: impl Into<String>, answer: Answer) -> Self {
        Self {
            to: to.into(),
            from: from.into(),
            answer,
            status_callback: None,
            status_callback_events: StatusCallbackEvent::ALL.to_vec(),
            time_limit: None,
            timeout: None,
            machine_detection: None,
            async_amd_status_callback: None,
        }
    }

    /// The form fields, in Twilio's names (`StatusCallbackEvent` repeated per value).
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("To", self.to.clone()), ("From", self.from.clone())];
        match &self.answer {
            Answer::Url(u) => f.push(("Url", u.clone())),
            Answer::Twiml(t) => f.push(("Twiml", t.clone())),
        }
        if let Some(cb) = &self.status_callback {
            f.push(("StatusCallback", cb.clone()));
            f.push(("StatusCallbackMethod", "POST".into()));
            for e in &self.status_callback_events {
                f.push(("StatusCallbackEvent", e.as_str().into()));
            }
        }
        if let Some(t) = self.time_limit {
            f.push(("TimeLimit", t.to_string()));
        }
        if let Some(t) = self.timeout {
            f.push(("Timeout", t.to_string()));
        }
        if let Some(md) = self.machine_detection {
            f.push(("MachineDetection", md.as_twilio().into()));
            if let Some(cb) = &self.async_amd_status_callback {
                f.push(("AsyncAmd", "true".into()));
                f.push(("AsyncAmdStatusCallback", cb.clone()));
                f.push(("AsyncAmdStatusCallbackMethod", "POST".into()));
            }
        }
        f
    }
}

/// `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallUpdate {
    /// Replace what the live call runs (the handoff `<Dial>`).
    Twiml(String),
    Url(String),
    /// Hang up (`Status=completed`).
    Complete,
}

impl CallUpdate {
    pub fn form(&self) -> Vec<(&'static str, String)> {
        match self {
            CallUpdate::Twiml(t) => vec![("Twiml", t.clone())],
            CallUpdate::Url(u) => vec![("Url", u.clone()), ("Method", "POST".into())],
            CallUpdate::Complete => vec![("Status", "completed".into())],
        }
    }
}

/// The parts of Twilio's call resource we use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CallResource {
    pub sid: String,
    pub status: String,
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub direction: Option<String>,
}

/// Twilio's error body: `{"code":21211,"message":"...","more_info":"...","status":400}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: Option<u32>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub more_info: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwilioError {
    /// Twilio answered with an error status.
    #[error("Twilio refused the request (HTTP {http_status}, code {code:?}): {message}")]
    Api {
        http_status: u16,
        code: Option<u32>,
        message: String,
        more_info: Option<String>,
    },
    /// No answer in time; the request may or may not have been processed.
    #[error("Twilio did not answer in time")]
    Timeout,
    /// The request never reached Twilio (connection refused, DNS, TLS).
    #[error("could not reach Twilio: {0}")]
    Transport(String),
    #[error("unexpected answer from Twilio: {0}")]
    Decode(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl TwilioError {
    pub fn code(&self) -> Option<u32> {
        match self {
            TwilioError::Api { code, .. } => *code,
            _ => None,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            TwilioError::Api { http_status, .. } => Some(*http_status),
            _ => None,
        }
    }

    /// Rate limited or a server error: worth another try (Twilio did not process a 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            TwilioError::Api {
                http_status, code, ..
            } => {
                *http_status == 429 || *http_status >= 500 || *code == Some(CODE_TOO_MANY_REQUESTS)
            }
            TwilioError::Transport(_) => true,
            _ => false,
        }
    }

    /// 21211: the `To` number is not valid (the call fails for good).
    pub fn is_invalid_number(&self) -> bool {
        self.code() == Some(CODE_INVALID_TO)
    }

    /// A short message for the call's history (bounded, no secrets: Twilio's own message).
    pub fn message(&self) -> String {
        match self {
            TwilioError::Api { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    fn from_response(http_status: u16, body: &str) -> TwilioError {
        match serde_json::from_str::<ErrorBody>(body) {
            Ok(e) => TwilioError::Api {
                http_status,
                code: e.code,
                message: truncate(&e.message, 512),
                more_info: e.more_info.map(|m| truncate(&m, 512)),
            },
            Err(_) => TwilioError::Api {
                http_status,
                code: None,
                message: truncate(body.trim(), 512),
                more_info: None,
            },
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Timeouts of one HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(15),
        }
    }
}

/// The port the call workers use to act on calls at Twilio (placement, transfer, hang-up).
#[async_trait::async_trait]
pub trait TwilioCalls: Send + Sync {
    /// Places a call (`POST …/Calls.json`).
    async fn create_call(&self, call: &CreateCall) -> Result<CallResource, TwilioError>;
    /// Changes a live call (`POST …/Calls/{CallSid}.json`).
    async fn update_call(
        &self,
        call_sid: &str,
        update: &CallUpdate,
    ) -> Result<CallResource, TwilioError>;
}

#[async_trait::async_trait]
impl TwilioCalls for TwilioClient {
    async fn create_call(&self, call: &CreateCall) -> Result<CallResource, TwilioError> {
        TwilioClient::create_call(self, call).await
    }

    async fn update_call(
        &self,
        call_sid: &str,
        update: &CallUpdate,
    ) -> Result<CallResource, TwilioError> {
        TwilioClient::update_call(self, call_sid, update).await
    }
}

#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    base: url::Url,
    credentials: Credentials,
    retry: RetryPolicy,
}

impl fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioClient")
            .field("base", &self.base.as_str())
            .field("credentials", &self.credentials)
            .field("retry", &self.retry)
            .finish()
    }
}

impl TwilioClient {
    pub fn new(
        base_url: &str,
        credentials: Credentials,
        retry: RetryPolicy,
        timeouts: Timeouts,
    ) -> Result<Self, TwilioError> {
        let base = url::Url::parse(base_url)
            .map_err(|e| TwilioError::InvalidRequest(format!("TWILIO_API_BASE_URL: {e}")))?;
        if base.cannot_be_a_base() {
            return Err(TwilioError::InvalidRequest(
                "TWILIO_API_BASE_URL must be an http(s) URL".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .user_agent(concat!("control-plane/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TwilioError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            base,
            credentials,
            retry: RetryPolicy {
                max_attempts: retry.max_attempts.max(1),
                ..retry
            },
        })
    }

    /// The client of the configured account; `None` when `TWILIO_ACCOUNT_SID` or
    /// `TWILIO_AUTH_TOKEN` is unset.
    pub fn from_config(config: &Config) -> Result<Option<Self>, TwilioError> {
        let (Some(sid), Some(token)) = (&config.twilio_account_sid, &config.twilio_auth_token)
        else {
            return Ok(None);
        };
        Self::new(
            &config.twilio_api_base_url,
            Credentials::new(sid.clone(), token.clone()),
            RetryPolicy::default(),
            Timeouts::default(),
        )
        .map(Some)
    }

    pub fn account_sid(&self) -> &str {
        &self.credentials.account_sid
    }

    /// `{base}/2010-04-01/Accounts/{AccountSid}/Calls[/{CallSid}].json`
    pub fn calls_url(&self, call_sid: Option<&str>) -> Result<url::Url, TwilioError> {
        let safe = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
        if !safe(&self.credentials.account_sid) || call_sid.is_some_and(|s| !safe(s)) {
            return Err(TwilioError::InvalidRequest(
                "account and call SIDs are alphanumeric".into(),
            ));
        }
        let mut url = self.base.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| TwilioError::InvalidRequest("base URL".into()))?;
            segments.pop_if_empty().extend([
                "2010-04-01",
                "Accounts",
                &self.credentials.account_sid,
            ]);
            match call_sid {
                Some(sid) => segments.extend(["Calls", &format!("{sid}.json")]),
                None => segments.push("Calls.json"),
            };
        }
        Ok(url)
    }

    /// Places a call. Retries 429/20429, 5xx and refused connections; never a timeout.
    pub async fn create_call(&self, call: &CreateCall) -> Result<CallResource, TwilioError> {
        let url = self.calls_url(None)?;
        self.post("create_call", url, &call.form(), false).await
    }

    /// Changes a live call (handoff TwiML or hang-up). Also retried after a timeout: applying
    /// the same update twice is harmless.
    pub async fn update_call(
        &self,
        call_sid: &str,
        update: &CallUpdate,
    ) -> Result<CallResource, TwilioError> {
        let url = self.calls_url(Some(call_sid))?;
        self.post("update_call", url, &update.form(), true).await
    }

    async fn post(
        &self,
        op: &'static str,
        url: url::Url,
        form: &[(&'static str, String)],
        retry_timeouts: bool,
    ) -> Result<CallResource, TwilioError> {
        let mut retry = 0u32;
        loop {
            let attempt = self
                .http
                .post(url.clone())
                .basic_auth(
                    &self.credentials.account_sid,
                    Some(&self.credentials.auth_token),
                )
                .header(reqwest::header::ACCEPT, "application/json")
                .form(form)
                .send()
                .await;
            let last = retry + 1 >= self.retry.max_attempts;
            let (error, retry_after) = match attempt {
                Ok(res) if res.status().is_success() => {
                    metrics::counter!("twilio_requests_total", "op" => op, "outcome" => "ok")
                        .increment(1);
                    let text = res
                        .text()
                        .await
                        .map_err(|e| TwilioError::Decode(e.to_string()))?;
                    return serde_json::from_str(&text).map_err(|e| {
                        TwilioError::Decode(format!("{e}: {}", truncate(&text, 200)))
                    });
                }
                Ok(res) => {
                    let status = res.status().as_u16();
                    let retry_after = res
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = res.text().await.unwrap_or_default();
                    (TwilioError::from_response(status, &body), retry_after)
                }
                // A connect-phase failure (even a connect timeout) sent nothing: safe to retry.
                Err(e) if e.is_connect() => (TwilioError::Transport(e.to_string()), None),
                Err(e) if e.is_timeout() => (TwilioError::Timeout, None),
                Err(e) => {
                    let err = TwilioError::Transport(e.to_string());
                    metrics::counter!("twilio_requests_total", "op" => op, "outcome" => "error")
                        .increment(1);
                    return Err(err);
                }
            };
            let retryable =
                error.is_retryable() || (retry_timeouts && error == TwilioError::Timeout);
            if !retryable || last {
                metrics::counter!("twilio_requests_total", "op" => op, "outcome" => "error")
                    .increment(1);
                return Err(error);
            }
            let delay = self
                .retry
                .delay(retry, retry_after, &mut rand::thread_rng());
            tracing::warn!(op, retry = retry + 1, ?delay, error = %error, "retrying a Twilio request");
            metrics::counter!("twilio_retries_total", "op" => op).increment(1);
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> TwilioClient {
        TwilioClient::new(
            base,
            Credentials::new("AC0123456789abcdef0123456789abcdef", "secret-token"),
            RetryPolicy::default(),
            Timeouts::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_call_request_has_every_field_twilio_documents() {
        let mut req = CreateCall::new(
            "+14158675309",
            "+18005551212",
            Answer::Url(
                "https://cp.example.com/webhooks/twilio/outbound-answer?call_id=call_1".into(),
            ),
        );
        req.status_callback =
            Some("https://cp.example.com/webhooks/twilio/call-status?call_id=call_1".into());
        req.time_limit = Some(1800);
        req.machine_detection = Some(MachineDetection::DetectMessageEnd);
        req.async_amd_status_callback =
            Some("https://cp.example.com/webhooks/twilio/amd-callback".into());
        let form = req.form();
        let get = |k: &str| {
            form.iter()
                .filter(|(n, _)| *n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("To"), ["+14158675309"]);
        assert_eq!(get("From"), ["+18005551212"]);
        assert_eq!(get("Url").len(), 1);
        assert!(get("Twiml").is_empty());
        assert_eq!(
            get("StatusCallbackEvent"),
            ["initiated", "ringing", "answered", "completed"]
        );
        assert_eq!(get("StatusCallbackMethod"), ["POST"]);
        assert_eq!(get("TimeLimit"), ["1800"]);
        assert_eq!(get("MachineDetection"), ["DetectMessageEnd"]);
        assert_eq!(get("AsyncAmd"), ["true"]);
        assert_eq!(get("AsyncAmdStatusCallback").len(), 1);
        // Encoded as Twilio expects: the repeated field appears once per value.
        let encoded = serde_urlencoded::to_string(&form).unwrap();
        assert_eq!(encoded.matches("StatusCallbackEvent=").count(), 4);
        assert!(encoded.starts_with("To=%2B14158675309&From=%2B18005551212&Url=https%3A%2F%2F"));
    }

    #[test]
    fn a_minimal_call_request_sends_no_optional_fields() {
        let form = CreateCall::new("+1", "+2", Answer::Twiml("<Response/>".into())).form();
        let names: Vec<&str> = form.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["To", "From", "Twiml"]);
    }

    #[test]
    fn live_call_updates_carry_twiml_or_a_hang_up() {
        assert_eq!(
            CallUpdate::Twiml("<Response><Dial>+14158675310</Dial></Response>".into()).form(),
            vec![(
                "Twiml",
                "<Response><Dial>+14158675310</Dial></Response>".to_string()
            )]
        );
        assert_eq!(
            CallUpdate::Complete.form(),
            vec![("Status", "completed".to_string())]
        );
    }

    #[test]
    fn urls_follow_the_configured_base_and_refuse_odd_sids() {
        let c = client("http://127.0.0.1:9999/twilio/");
        assert_eq!(
            c.calls_url(None).unwrap().as_str(),
            "http://127.0.0.1:9999/twilio/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json"
        );
        assert_eq!(
            client("https://api.twilio.com").calls_url(Some("CAabc")).unwrap().as_str(),
            "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls/CAabc.json"
        );
        assert!(matches!(
            c.calls_url(Some("../Calls")),
            Err(TwilioError::InvalidRequest(_))
        ));
        assert!(TwilioClient::new(
            "not a url",
            Credentials::new("AC1", "t"),
            RetryPolicy::default(),
            Timeouts::default()
        )
        .is_err());
    }

    #[test]
    fn twilio_error_bodies_become_typed_errors() {
        let e = TwilioError::from_response(
            400,
            r#"{"code":21211,"message":"The 'To' number 123 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
        );
        assert_eq!(e.code(), Some(21211));
        assert!(e.is_invalid_number());
        assert!(!e.is_retryable());
        assert_eq!(e.http_status(), Some(400));
        assert!(TwilioError::from_response(
            429,
            r#"{"code":20429,"message":"Too Many Requests","status":429}"#
        )
        .is_retryable());
        assert!(TwilioError::from_response(400, r#"{"code":20429,"message":"x"}"#).is_retryable());
        assert!(TwilioError::from_response(503, "<html>Service Unavailable</html>").is_retryable());
        let auth = TwilioError::from_response(
            401,
            r#"{"code":20003,"message":"Authenticate","status":401}"#,
        );
        assert_eq!(auth.code(), Some(CODE_AUTHENTICATE));
        assert!(!auth.is_retryable());
        let odd = TwilioError::from_response(502, &"x".repeat(5000));
        assert_eq!(odd.message().len(), 512);
        assert!(!TwilioError::Timeout.is_retryable());
    }

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        let p = RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            let d0 = p.delay(0, None, &mut rng);
            assert!(
                d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100),
                "{d0:?}"
            );
            let d2 = p.delay(2, None, &mut rng);
            assert!(
                d2 >= Duration::from_millis(200) && d2 <= Duration::from_millis(400),
                "{d2:?}"
            );
            let d9 = p.delay(9, None, &mut rng);
            assert!(
                d9 >= Duration::from_millis(500) && d9 <= Duration::from_secs(1),
                "{d9:?}"
            );
            let d = p.delay(31, Some(Duration::from_secs(60)), &mut rng);
            assert_eq!(
                d,
                Duration::from_secs(1),
                "Retry-After is capped at max_delay"
            );
        }
    }

    #[test]
    fn the_auth_token_never_shows_in_debug_output() {
        let shown = format!("{:?}", client("https://api.twilio.com"));
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("AC0123456789abcdef0123456789abcdef"));
    }
}
