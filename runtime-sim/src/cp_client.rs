//! The HTTP client for the control plane: plain HTTP/1.1 with keep-alive (hyper), IP addresses
//! only (no DNS: the image is `FROM scratch`), bounded answers; and the optional start-up check
//! that our token is accepted.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::state::SimState;

const MAX_RESPONSE: usize = 1 << 20;

/// A response: status code and body parsed as JSON (`Null` when it is not JSON).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

/// Talks to `CONTROL_PLANE_URL` with `CONTROL_PLANE_TOKEN`.
pub struct CpClient {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: String,
    timeout: Duration,
}

impl CpClient {
    pub fn new(base: &str, token: &str, timeout: Duration, pool: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(pool)
            .build(connector);
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            timeout,
        }
    }

    /// Sends one request to `{base}{path}`; `Err` for transport failures and timeouts (the
    /// request may or may not have been processed).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, String> {
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| format!("bad control plane URL {}{path}: {e}", self.base))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{uri}: only http:// URLs are supported"));
        }
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(ACCEPT, "application/json");
        if !self.token.is_empty() {
            req = req.header(AUTHORIZATION, format!("Bearer {}", self.token));
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let work = async {
            let res = self.http.request(req).await.map_err(|e| {
                // hyper's outer error says little ("client error (Connect)"): add the cause.
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                msg
            })?;
            let status = res.status().as_u16();
            let bytes = Limited::new(res.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok(Response {
                status,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }
}

/// Until `GET /runtime/whoami` accepts our token and names this runtime, readiness carries an
/// issue saying why.
pub async fn check_control_plane(state: Arc<SimState>) {
    loop {
        let issue = match state
            .client
            .request(Method::GET, "/runtime/whoami", None)
            .await
        {
            Ok(r)
                if r.status == 200 && r.body["runtime_id"] == state.config.runtime_id.as_str() =>
            {
                None
            }
            Ok(r) if r.status == 200 => Some(format!(
                "control plane says this token belongs to {}",
                r.body["runtime_id"]
            )),
            Ok(r) => Some(format!(
                "control plane refused our token (HTTP {})",
                r.status
            )),
            Err(e) => Some(format!("control plane unreachable: {e}")),
        };
        let done = issue.is_none();
        if let Some(i) = &issue {
            tracing::warn!(issue = %i, "control plane check failed");
        } else {
            tracing::info!("control plane accepted our token");
        }
        state.set_control_plane_issue(issue);
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_reach_a_local_server_and_answers_parse_as_json() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/runtime/whoami",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                axum::Json(serde_json::json!({ "runtime_id": "rt_1", "auth": auth }))
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let c = CpClient::new(&format!("http://{addr}/"), "tok", Duration::from_secs(5), 1);
        let r = c
            .request(Method::GET, "/runtime/whoami", None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body["runtime_id"], "rt_1");
        assert_eq!(r.body["auth"], "Bearer tok");
        let r = c.request(Method::GET, "/nothing", None).await.unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, Value::Null);
    }

    #[tokio::test]
    async fn an_unreachable_control_plane_is_an_error_not_a_hang() {
        // Bind and drop: nothing listens there any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = CpClient::new(
            &format!("http://127.0.0.1:{port}"),
            "",
            Duration::from_secs(5),
            1,
        );
        let e = c.request(Method::GET, "/x", None).await.unwrap_err();
        assert!(e.contains("onnect"), "{e}");
        let c = CpClient::new("https://127.0.0.1:1", "", Duration::from_secs(5), 1);
        assert!(c.request(Method::GET, "/x", None).await.is_err());
    }
}
