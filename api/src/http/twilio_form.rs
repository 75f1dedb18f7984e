//! The Twilio webhook extractor: checks `X-Twilio-Signature` against `PUBLIC_BASE_URL`, path
//! and query (and the body hash for JSON bodies) before anything reads the form; bodies,
//! parameter counts and values are bounded, and values carrying NUL or control characters are
//! refused (422 naming the parameter) before they can reach an event.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{header, StatusCode};

use crate::adapters::twilio::signature;
use crate::application::call_callbacks::CallbackTarget;
use crate::http::error::ApiError;

/// Largest webhook body accepted (Twilio's forms are a few KB).
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;
/// Most form (and query) parameters accepted in one webhook.
pub const MAX_WEBHOOK_PARAMS: usize = 256;
/// Longest parameter name and value accepted, in characters.
pub const MAX_WEBHOOK_NAME: usize = 128;
pub const MAX_WEBHOOK_VALUE: usize = 8 * 1024;

/// Checks the parameters of a signed webhook: bounded counts and sizes, no NUL or control
/// characters other than tab and line breaks (PostgreSQL refuses NUL in what events store).
pub fn check_params<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), ApiError> {
    for (i, (name, value)) in params.into_iter().enumerate() {
        if i >= MAX_WEBHOOK_PARAMS {
            return Err(ApiError::validation(
                "form",
                format!("at most {MAX_WEBHOOK_PARAMS} parameters"),
            ));
        }
        let shown: String = name
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_WEBHOOK_NAME)
            .collect();
        if name.chars().count() > MAX_WEBHOOK_NAME
            || aggregates::common::check_text("name", name, aggregates::common::TextKind::Token)
                .is_err()
        {
            return Err(ApiError::validation(
                &shown,
                format!("parameter names are at most {MAX_WEBHOOK_NAME} printable characters"),
            ));
        }
        if value.chars().count() > MAX_WEBHOOK_VALUE {
            return Err(ApiError::validation(
                &shown,
                format!("must be at most {MAX_WEBHOOK_VALUE} characters"),
            ));
        }
        if let Err(e) =
            aggregates::common::check_text("value", value, aggregates::common::TextKind::Prose)
        {
            return Err(ApiError::validation(&shown, e.message));
        }
    }
    Ok(())
}

/// What checking a webhook's signature needs.
pub struct TwilioWebhooks {
    /// `TWILIO_AUTH_TOKEN`; without it every webhook is refused.
    pub auth_token: Option<String>,
    /// The URL Twilio was given (`PUBLIC_BASE_URL`): signatures are computed over it.
    pub public_base_url: String,
}

/// A Twilio webhook whose signature checked out: its form parameters and query.
pub struct TwilioForm {
    pub params: Vec<(String, String)>,
    pub query: HashMap<String, String>,
}

impl TwilioForm {
    /// The callback's target: `call_id` from the query (outbound calls) and the `CallSid`.
    pub fn target(&self, call_sid: &aggregates::call::CallSid) -> CallbackTarget {
        CallbackTarget {
            call_id: self.query.get("call_id").cloned(),
            call_sid: call_sid.clone(),
        }
    }
}

impl<S> FromRequest<S> for TwilioForm
where
    S: Send + Sync,
    Arc<TwilioWebhooks>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let hooks = Arc::<TwilioWebhooks>::from_ref(state);
        let Some(token) = hooks.auth_token.clone() else {
            return Err(ApiError::forbidden(
                "Twilio webhooks are refused: TWILIO_AUTH_TOKEN is not configured",
            ));
        };
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| req.uri().path().to_string());
        let query: HashMap<String, String> =
            url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let sig = req
            .headers()
            .get(signature::HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = axum::body::to_bytes(req.into_body(), MAX_WEBHOOK_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("webhook bodies are limited to {MAX_WEBHOOK_BYTES} bytes"),
                )
            })?;
        if let Err(e) = signature::verify_request(
            &token,
            &hooks.public_base_url,
            &path_and_query,
            sig.as_deref(),
            content_type.as_deref(),
            &body,
        ) {
            metrics::counter!("twilio_webhooks_rejected_total").increment(1);
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_signature",
                e.to_string(),
            ));
        }
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        check_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        check_params(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        Ok(TwilioForm { params, query })
    }
}
