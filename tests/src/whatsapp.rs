//! A local stand-in for the WhatsApp Cloud API's `POST /v{version}/{phone-number-id}/messages`,
//! checking requests against the documented format: bearer token, `messaging_product:
//! "whatsapp"`, `to` in E.164 digits, `type` `text` (with `text.body`) or `template` (with
//! `name` and `language.code`). Free text to a number whose customer-service window is closed
//! is refused with error 131047, as the Cloud API does.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};

pub const ACCESS_TOKEN: &str = "EAAGstandinwhatsapptoken0123456789";
pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const VERSION: &str = "21.0";

#[derive(Default)]
struct Inner {
    messages: Vec<Value>,
    open_windows: HashSet<String>,
    errors: Vec<String>,
}

#[derive(Clone)]
pub struct WhatsappStandIn {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "OAuthException", "code": code}})),
    )
        .into_response()
}

impl WhatsappStandIn {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/{version}/{phone}/messages", post(messages))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    pub fn configure(&self, c: &mut control_plane::config::Config) {
        c.integrations.whatsapp_api_base_url = format!("http://{}", self.addr);
        c.integrations.whatsapp_api_version = VERSION.into();
    }

    /// The customer (E.164 digits) wrote to the business within the last 24 hours.
    pub fn open_window(&self, digits: &str) {
        self.inner.lock().open_windows.insert(digits.to_string());
    }

    pub fn messages(&self) -> Vec<Value> {
        self.inner.lock().messages.clone()
    }

    pub fn errors(&self) -> Vec<String> {
        self.inner.lock().errors.clone()
    }
}

async fn messages(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path((version, phone)): Path<(String, String)>,
    headers: HeaderMap,
    Json(m): Json<Value>,
) -> Response {
    let mut i = inner.lock();
    if version != format!("v{VERSION}") || phone != PHONE_NUMBER_ID {
        i.errors.push(format!("path /{version}/{phone}/messages"));
        return error(StatusCode::BAD_REQUEST, 100, "Unsupported post request");
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {ACCESS_TOKEN}"))
    {
        return error(StatusCode::UNAUTHORIZED, 190, "Invalid OAuth access token");
    }
    let to = m["to"].as_str().unwrap_or("");
    if m["messaging_product"] != "whatsapp"
        || to.is_empty()
        || !to.chars().all(|c| c.is_ascii_digit())
    {
        i.errors.push(format!("message: {m}"));
        return error(StatusCode::BAD_REQUEST, 100, "Invalid parameter");
    }
    match m["type"].as_str() {
        Some("text") if m["text"]["body"].as_str().is_some_and(|b| !b.is_empty()) => {
            if !i.open_windows.contains(to) {
                return error(
                    StatusCode::BAD_REQUEST,
                    131047,
                    "Re-engagement message: more than 24 hours have passed since the recipient last replied",
                );
            }
        }
        Some("template")
            if m["template"]["name"].as_str().is_some()
                && m["template"]["language"]["code"].as_str().is_some() => {}
        _ => {
            i.errors.push(format!("message type: {m}"));
            return error(StatusCode::BAD_REQUEST, 100, "Invalid parameter");
        }
    }
    i.messages.push(m.clone());
    let id = format!("wamid.HBgL{:04}", i.messages.len());
    Json(
        json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": id}]}),
    )
    .into_response()
}
