//! A CRM webhook receiver, as an establishment would run one: it verifies every delivery's
//! `X-Signature` (`v1=` hex HMAC-SHA256 of `timestamp + "." + body` with the signing secret)
//! and rejects timestamps older than five minutes, recording what it accepted and refused.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::Sha256;

#[derive(Default)]
struct Inner {
    secret: Option<String>,
    accepted: Vec<Value>,
    refused: Vec<String>,
}

#[derive(Clone)]
pub struct CrmReceiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl CrmReceiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/hooks/crm", post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/crm", self.addr)
    }

    /// The signing secret the control plane showed once at connect.
    pub fn set_secret(&self, secret: &str) {
        self.inner.lock().secret = Some(secret.to_string());
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.inner.lock().accepted.clone()
    }

    pub fn refused(&self) -> Vec<String> {
        self.inner.lock().refused.clone()
    }
}

/// Verifies a delivery the way a receiver should.
pub fn verify(secret: &str, timestamp: &str, body: &[u8], signature: &str, now: i64) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (now - ts).abs() > 300 {
        return false;
    }
    let Some(hex_sig) = signature.strip_prefix("v1=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let mut i = inner.lock();
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let ok = i.secret.as_deref().is_some_and(|s| {
        verify(
            s,
            &h("x-signature-timestamp"),
            &body,
            &h("x-signature"),
            chrono::Utc::now().timestamp(),
        )
    });
    if !ok {
        i.refused.push(String::from_utf8_lossy(&body).to_string());
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "bad signature"})),
        );
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    i.accepted.push(v);
    (
        StatusCode::OK,
        Json(json!({"received": true, "crm_id": format!("crm_{}", i.accepted.len())})),
    )
}
