//! A minimal HTTP/1.1 client for the control plane (plain `http://IP:port`, no DNS: the
//! image is `FROM scratch`), and the optional start-up check that our token is accepted.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::state::SimState;

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RESPONSE: usize = 1 << 20;

/// A response: status code and body parsed as JSON (`Null` when it is not JSON).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// Sends one request (`Connection: close`) and reads the whole answer.
pub async fn request(
    method: &str,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<Response, String> {
    let (authority, path) = split_url(url)?;
    let host = authority.clone();
    let work = async move {
        let mut stream = TcpStream::connect(authority.as_str())
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n"
        );
        if !token.is_empty() {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(payload.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE as u64)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        parse_response(&raw)
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| "timed out".to_string())?
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed status line")?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Until `GET /runtime/whoami` accepts our token and names this runtime, readiness carries an
/// issue saying why.
pub async fn check_control_plane(state: Arc<SimState>) {
    let url = format!("{}/runtime/whoami", state.config.control_plane_url);
    loop {
        let issue = match request("GET", &url, &state.config.control_plane_token, None).await {
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

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://172.17.0.1:8080/runtime/whoami").unwrap(),
            ("172.17.0.1:8080".to_string(), "/runtime/whoami".to_string())
        );
        assert_eq!(
            split_url("http://10.0.0.1").unwrap(),
            ("10.0.0.1:80".to_string(), "/".to_string())
        );
        assert!(split_url("https://x").is_err());
    }

    #[test]
    fn responses_parse_plain_and_chunked() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"a\":true}\n").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body["a"], true);
        let r = parse_response(
            b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"b\":\r\n2\r\n1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.body["b"], 1);
    }
}
