//! Extractors that turn bad input into contract-shaped 4xx answers: JSON bodies (malformed,
//! unknown fields, wrong types, oversize), query strings, and the request id.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::http::error::ApiError;

/// A JSON body, parsed with the path of any offending field reported in `details`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || m.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        refuse_nul(&bytes)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Whether JSON text holds an escaped NUL character (`\u0000` preceded by an even number of
/// backslashes). PostgreSQL stores no NUL in `text` or `jsonb`, so such input can never be kept:
/// it is refused at the door instead of failing deep inside a transaction.
pub fn has_escaped_nul(bytes: &[u8]) -> bool {
    let mut i = 0;
    while let Some(pos) = bytes[i..]
        .windows(6)
        .position(|w| w[0] == b'\\' && (w[1] == b'u' || w[1] == b'U') && &w[2..] == b"0000")
    {
        let at = i + pos;
        let backslashes = bytes[..at]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return true;
        }
        i = at + 1;
    }
    false
}

/// A 422 naming the first string (or key) of a JSON body that holds a NUL character; only
/// bodies that hold one pay for finding where.
pub fn refuse_nul(bytes: &[u8]) -> Result<(), ApiError> {
    if !has_escaped_nul(bytes) {
        return Ok(());
    }
    fn find(v: &serde_json::Value, path: &str) -> Option<String> {
        let join = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        match v {
            serde_json::Value::String(s) if s.contains('\0') => Some(path.to_string()),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| find(item, &format!("{path}[{i}]"))),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
                if k.contains('\0') {
                    Some(join("<key>"))
                } else {
                    find(item, &join(k))
                }
            }),
            _ => None,
        }
    }
    let field = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| find(&v, ""))
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "body".to_string());
    Err(ApiError::validation(
        &field,
        "may not contain NUL (\\u0000) characters",
    ))
}

/// Parses JSON bytes, naming the offending field on a data error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::bad_request(
                    "malformed_json",
                    format!("the body is not valid JSON: {inner}"),
                )
                .with_details(json!({ "line": inner.line(), "column": inner.column() })))
            } else {
                let field = if path == "." { String::new() } else { path };
                let reason = strip_position(&inner.to_string());
                Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    if field.is_empty() {
                        reason.clone()
                    } else {
                        format!("{field}: {reason}")
                    },
                )
                .with_details(json!({ "field": field, "reason": reason })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_nul_characters_are_found_and_escaped_backslashes_are_not() {
        assert!(has_escaped_nul(br#"{"email":"a\u0000b"}"#));
        assert!(has_escaped_nul(br#"{"e":"\\\u0000"}"#));
        assert!(!has_escaped_nul(br#"{"e":"\\u0000"}"#));
        assert!(!has_escaped_nul(br#"{"e":"\u0001"}"#));
        let e = refuse_nul(br#"{"user":{"email":"a\u0000b"}}"#).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message().starts_with("user.email:"), "{}", e.message());
    }
}

fn strip_position(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Maps a failure to read the body (e.g. over the size limit) to the contract shape.
pub fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
    } else {
        ApiError::bad_request("unreadable_body", e.body_text())
    }
}

/// A query string, with bad values answered as 422 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        if let Some((name, _)) =
            form_urlencoded_parse(q).find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(ApiError::validation(
                if name.contains('\0') { "query" } else { &name },
                "may not contain NUL characters",
            ));
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(q));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let field = e.path().to_string();
                let reason = e.into_inner().to_string();
                ApiError::validation(if field == "." { "query" } else { &field }, reason)
            })
    }
}

fn form_urlencoded_parse(q: &str) -> url::form_urlencoded::Parse<'_> {
    url::form_urlencoded::parse(q.as_bytes())
}

/// The id of the current request (`x-request-id`), set by the request-id middleware (a safe
/// token of at most 64 characters; checked again here for routers without the middleware).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| crate::http::is_safe_request_id(v))
                .map(str::to_string)
                .unwrap_or_else(|| crate::ids::new_id("req")),
        ))
    }
}
