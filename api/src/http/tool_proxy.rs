//! The tool proxy (prd §7.8, §9.4): `POST /tool-proxy/email/send`,
//! `/tool-proxy/calendar/create_event`, `/tool-proxy/whatsapp/send_message` and
//! `/tool-proxy/crm/{operation}` (`log_call`, `upsert_contact`), with the runtime token.
//! Answers `{"ok":true,"result":{…}}`, or the contract error shape (with `provider_error` in
//! `details` when the provider failed). A retried `tool_call_id` gets the first answer, with
//! `Idempotent-Replayed: true`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::application::tool_proxy::{Operation, ProxyError, ProxyRequest, ToolProxy};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, RequestId};
use crate::http::runtime_principal::RuntimePrincipal;
use crate::state::AppState;

/// Largest tool-proxy request.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(email_send))
        .routes(routes!(calendar_create_event))
        .routes(routes!(whatsapp_send_message))
        .routes(routes!(crm))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
}

/// A tool call of the runtime.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCallBody {
    /// The call's Twilio CallSid.
    #[schema(example = "CA0123456789abcdef0123456789abcdef")]
    pub provider_call_sid: String,
    /// The model's tool-call id: the idempotency key of this invocation within the call.
    #[schema(example = "call_tool_1")]
    pub tool_call_id: String,
    /// The operation's arguments (see docs/integrations.md).
    #[schema(value_type = Object)]
    pub arguments: Value,
}

#[derive(Serialize, ToSchema)]
pub struct ToolCallAnswer {
    pub ok: bool,
    #[schema(value_type = Object)]
    pub result: Value,
}

impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> Self {
        let message = e.to_string();
        match e {
            ProxyError::CallNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "call_not_found", message)
            }
            ProxyError::ToolNotEnabled(tool) => {
                ApiError::new(StatusCode::FORBIDDEN, "tool_not_enabled", message)
                    .with_details(json!({"tool": tool.as_str()}))
            }
            ProxyError::IntegrationUnavailable(t, why) => {
                use aggregates::integration::Unusable as U;
                let code = match why {
                    U::Disabled => "integration_disabled",
                    U::NeedsReauth => "integration_needs_reauth",
                    U::PendingAuth | U::Revoked => "integration_not_connected",
                };
                ApiError::new(StatusCode::FORBIDDEN, code, message)
                    .with_details(json!({"integration_type": t.as_str()}))
            }
            ProxyError::Invalid(i) => i.into(),
            ProxyError::ToolCallIdReused => ApiError::conflict("tool_call_id_reused", message),
            ProxyError::InProgress => ApiError::conflict("tool_call_in_progress", message),
            ProxyError::Failed(f) => ApiError::new(
                StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_GATEWAY),
                f.code,
                f.message,
            )
            .with_details(f.details),
            ProxyError::Unexpected(m) => ApiError::internal(m),
        }
    }
}

async fn run(
    proxy: Arc<ToolProxy>,
    runtime: RuntimePrincipal,
    request_id: String,
    op: Operation,
    body: ToolCallBody,
) -> ApiResult<Response> {
    let answer = proxy
        .invoke(
            &runtime,
            &request_id,
            op,
            ProxyRequest {
                provider_call_sid: body.provider_call_sid,
                tool_call_id: body.tool_call_id,
                arguments: body.arguments,
            },
        )
        .await?;
    let mut res = Json(ToolCallAnswer {
        ok: true,
        result: answer.result,
    })
    .into_response();
    if answer.replayed {
        res.headers_mut()
            .insert("idempotent-replayed", "true".parse().expect("static"));
    }
    Ok(res)
}

/// Sends an e-mail (`to`, `subject`, `text`, optional `html`) through the platform's SMTP or
/// the establishment's own.
#[utoipa::path(post, path = "/tool-proxy/email/send", tag = "tool-proxy", security(("runtime" = [])),
    request_body = ToolCallBody,
    responses((status = 200, body = ToolCallAnswer), (status = 401), (status = 403, description = "tool not enabled, integration not connected, disabled or needing re-authorisation"),
              (status = 404, description = "not a call of the runtime's establishment"), (status = 409, description = "tool_call_id reused with other arguments, or still running"),
              (status = 413), (status = 422), (status = 502, description = "the provider failed (details.provider_error)"), (status = 504, description = "the provider timed out")))]
async fn email_send(
    State(proxy): State<Arc<ToolProxy>>,
    RequestId(request_id): RequestId,
    runtime: RuntimePrincipal,
    ApiJson(body): ApiJson<ToolCallBody>,
) -> ApiResult<Response> {
    run(proxy, runtime, request_id, Operation::EmailSend, body).await
}

/// Books a Google Calendar event (`calendar_id` default `primary`, `summary`, `start`, `end`,
/// `attendees`, `description`); the event id derives from call and tool call, so a retry
/// cannot book twice.
#[utoipa::path(post, path = "/tool-proxy/calendar/create_event", tag = "tool-proxy", security(("runtime" = [])),
    request_body = ToolCallBody,
    responses((status = 200, body = ToolCallAnswer), (status = 401), (status = 403), (status = 404), (status = 409),
              (status = 413), (status = 422), (status = 502), (status = 504)))]
async fn calendar_create_event(
    State(proxy): State<Arc<ToolProxy>>,
    RequestId(request_id): RequestId,
    runtime: RuntimePrincipal,
    ApiJson(body): ApiJson<ToolCallBody>,
) -> ApiResult<Response> {
    run(
        proxy,
        runtime,
        request_id,
        Operation::CalendarCreateEvent,
        body,
    )
    .await
}

/// Sends a WhatsApp message: `to` (E.164) and `text` (within the customer-service window) or
/// `template` (`name`, `language`, `parameters`).
#[utoipa::path(post, path = "/tool-proxy/whatsapp/send_message", tag = "tool-proxy", security(("runtime" = [])),
    request_body = ToolCallBody,
    responses((status = 200, body = ToolCallAnswer), (status = 401), (status = 403), (status = 404), (status = 409),
              (status = 413), (status = 422, description = "bad arguments, or free text outside the window (code template_required)"),
              (status = 502), (status = 504)))]
async fn whatsapp_send_message(
    State(proxy): State<Arc<ToolProxy>>,
    RequestId(request_id): RequestId,
    runtime: RuntimePrincipal,
    ApiJson(body): ApiJson<ToolCallBody>,
) -> ApiResult<Response> {
    run(
        proxy,
        runtime,
        request_id,
        Operation::WhatsappSendMessage,
        body,
    )
    .await
}

/// Delivers a signed webhook to the establishment's CRM endpoint: `log_call` (`summary`,
/// `outcome`, `fields`) or `upsert_contact` (`phone_e164` or `email`, `name`, `fields`).
#[utoipa::path(post, path = "/tool-proxy/crm/{operation}", tag = "tool-proxy", security(("runtime" = [])),
    params(("operation" = String, Path, description = "log_call or upsert_contact")),
    request_body = ToolCallBody,
    responses((status = 200, body = ToolCallAnswer), (status = 401), (status = 403), (status = 404), (status = 409),
              (status = 413), (status = 422, description = "unknown operation or bad arguments"), (status = 502), (status = 504)))]
async fn crm(
    State(proxy): State<Arc<ToolProxy>>,
    RequestId(request_id): RequestId,
    runtime: RuntimePrincipal,
    Path(operation): Path<String>,
    ApiJson(body): ApiJson<ToolCallBody>,
) -> ApiResult<Response> {
    if !crate::application::tool_proxy::args::CRM_OPERATIONS.contains(&operation.as_str()) {
        return Err(ApiError::validation(
            "operation",
            format!(
                "unknown CRM operation; known: {}",
                crate::application::tool_proxy::args::CRM_OPERATIONS.join(", ")
            ),
        ));
    }
    run(proxy, runtime, request_id, Operation::Crm(operation), body).await
}
