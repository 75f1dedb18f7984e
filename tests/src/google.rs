//! A local stand-in for Google's OAuth 2.0 token endpoint and Calendar `events.insert`, checking
//! each request against Google's documented format: the authorisation URL's parameters
//! (`client_id`, `redirect_uri`, `response_type=code`, `scope`, `access_type=offline`,
//! `prompt=consent`, `state`), the token endpoint's grants (form-encoded, client credentials,
//! `redirect_uri` matching the authorisation, single-use codes), and inserts (bearer token
//! alive, `start`/`end`, the client-chosen event `id` in lowercase base32hex of 5–1024
//! characters, 409 on a duplicate id). Tests can expire every access token and revoke every
//! refresh token.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};

pub const CLIENT_ID: &str = "stand-in-client.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "stand-in-client-secret";
pub const SCOPE: &str = "https://www.googleapis.com/auth/calendar.events";

#[derive(Default)]
struct Inner {
    redirect_uri: String,
    codes: HashMap<String, String>,
    access: HashMap<String, bool>,
    refresh: HashMap<String, bool>,
    refreshes: usize,
    exchanges: usize,
    /// (calendar, event id, body)
    events: Vec<(String, String, Value)>,
    insert_attempts: usize,
    errors: Vec<String>,
    n: u64,
}

#[derive(Clone)]
pub struct GoogleStandIn {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

fn random(prefix: &str, n: u64) -> String {
    format!(
        "{prefix}{n:04}{}",
        ulid::Ulid::new().to_string().to_lowercase()
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

impl GoogleStandIn {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/token", post(token))
            .route("/calendar/v3/calendars/{calendar}/events", post(insert))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The configuration that points a control plane here.
    pub fn configure(&self, c: &mut control_plane::config::Config) {
        c.integrations.google_client_id = Some(CLIENT_ID.into());
        c.integrations.google_client_secret = Some(CLIENT_SECRET.into());
        c.integrations.google_oauth_auth_url = format!("{}/o/oauth2/v2/auth", self.base());
        c.integrations.google_oauth_token_url = format!("{}/token", self.base());
        c.integrations.google_calendar_api_base_url = self.base();
    }

    /// What Google does when the user consents at `auth_url`: checks its parameters, returns
    /// (state, code) for the redirect back.
    pub fn consent(&self, auth_url: &str) -> (String, String) {
        let url = url::Url::parse(auth_url).expect("auth_url is a URL");
        assert_eq!(url.path(), "/o/oauth2/v2/auth");
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
        assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
        assert_eq!(q.get("access_type").map(String::as_str), Some("offline"));
        assert_eq!(q.get("prompt").map(String::as_str), Some("consent"));
        assert!(
            q.get("scope")
                .is_some_and(|s| s.split(' ').any(|s| s == SCOPE)),
            "{q:?}"
        );
        let redirect_uri = q.get("redirect_uri").expect("redirect_uri").clone();
        assert!(
            redirect_uri.ends_with("/integrations/oauth/callback"),
            "{redirect_uri}"
        );
        let state = q.get("state").expect("state").clone();
        let mut i = self.inner.lock();
        i.n += 1;
        let code = random("4/code", i.n);
        i.codes.insert(code.clone(), redirect_uri.clone());
        i.redirect_uri = redirect_uri;
        (state, code)
    }

    pub fn expire_access_tokens(&self) {
        for alive in self.inner.lock().access.values_mut() {
            *alive = false;
        }
    }

    pub fn revoke_refresh_tokens(&self) {
        for alive in self.inner.lock().refresh.values_mut() {
            *alive = false;
        }
    }

    pub fn refreshes(&self) -> usize {
        self.inner.lock().refreshes
    }

    pub fn exchanges(&self) -> usize {
        self.inner.lock().exchanges
    }

    /// Events inserted: (calendar id, event id, body).
    pub fn events(&self) -> Vec<(String, String, Value)> {
        self.inner.lock().events.clone()
    }

    pub fn insert_attempts(&self) -> usize {
        self.inner.lock().insert_attempts
    }

    /// Every token this stand-in issued (to grep for).
    pub fn issued_tokens(&self) -> Vec<String> {
        let i = self.inner.lock();
        i.access.keys().chain(i.refresh.keys()).cloned().collect()
    }

    /// Requests that broke the documented format (should stay empty).
    pub fn errors(&self) -> Vec<String> {
        self.inner.lock().errors.clone()
    }
}

fn issue(i: &mut Inner, with_refresh: bool) -> Value {
    i.n += 1;
    let access = random("ya29.", i.n);
    i.access.insert(access.clone(), true);
    let mut answer = json!({"access_token": access, "expires_in": 3599, "scope": SCOPE,
                            "token_type": "Bearer"});
    if with_refresh {
        let refresh = random("1//refresh", i.n);
        i.refresh.insert(refresh.clone(), true);
        answer["refresh_token"] = json!(refresh);
    }
    answer
}

async fn token(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut i = inner.lock();
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        i.errors.push(format!("token: content-type {ct}"));
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "form encoding expected",
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
        i.errors.push("token: bad client credentials".into());
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "bad client");
    }
    match get("grant_type") {
        "authorization_code" => {
            i.exchanges += 1;
            let Some(redirect) = i.codes.remove(get("code")) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "unknown or used code",
                );
            };
            if redirect != get("redirect_uri") {
                i.errors
                    .push("token: redirect_uri differs from the authorisation's".into());
                return oauth_error(StatusCode::BAD_REQUEST, "redirect_uri_mismatch", "mismatch");
            }
            Json(issue(&mut i, true)).into_response()
        }
        "refresh_token" => {
            i.refreshes += 1;
            if i.refresh.get(get("refresh_token")) != Some(&true) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Token has been expired or revoked.",
                );
            }
            Json(issue(&mut i, false)).into_response()
        }
        other => {
            i.errors.push(format!("token: grant_type {other:?}"));
            oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "unknown grant",
            )
        }
    }
}

fn google_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message}})),
    )
        .into_response()
}

async fn insert(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(calendar): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut i = inner.lock();
    i.insert_attempts += 1;
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if i.access.get(token) != Some(&true) {
        return google_error(StatusCode::UNAUTHORIZED, "Invalid Credentials");
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        i.errors.push("insert: body is not JSON".into());
        return google_error(StatusCode::BAD_REQUEST, "Parse Error");
    };
    for k in ["start", "end"] {
        let t = &event[k];
        if t.get("dateTime").and_then(Value::as_str).is_none() && t.get("date").is_none() {
            i.errors
                .push(format!("insert: {k} without dateTime or date: {event}"));
            return google_error(StatusCode::BAD_REQUEST, "Missing end time.");
        }
    }
    let id = event["id"].as_str().unwrap_or("").to_string();
    if !(5..=1024).contains(&id.len()) || !id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='v')) {
        i.errors.push(format!("insert: bad event id {id:?}"));
        return google_error(StatusCode::BAD_REQUEST, "Invalid resource id value.");
    }
    if i.events.iter().any(|(c, e, _)| *c == calendar && *e == id) {
        return google_error(
            StatusCode::CONFLICT,
            "The requested identifier already exists.",
        );
    }
    i.events.push((calendar.clone(), id.clone(), event.clone()));
    let mut answer = event;
    answer["status"] = json!("confirmed");
    answer["htmlLink"] = json!(format!("https://calendar.test/event?eid={id}"));
    answer["kind"] = json!("calendar#event");
    Json(answer).into_response()
}

/// Every event id the stand-in holds is unique per calendar (a sanity check for tests).
pub fn unique_ids(events: &[(String, String, Value)]) -> bool {
    let set: HashSet<(&str, &str)> = events
        .iter()
        .map(|(c, e, _)| (c.as_str(), e.as_str()))
        .collect();
    set.len() == events.len()
}
