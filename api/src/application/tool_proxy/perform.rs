//! The provider call of each operation, through the adapters' ports, with the integration's
//! opened credentials. Nothing is retried except a Calendar insert answered 401 (the access
//! token died early: nothing was booked), once, after a refresh.

use serde_json::{json, Value};

use super::args;
use super::{Checked, Failure, Operation, ToolProxy};
use crate::adapters::integrations::email::Email;
use crate::adapters::integrations::google::event_id;
use crate::adapters::integrations::{whatsapp, ProviderError};
use crate::application::integration_access::{AccessError, Opened};
use crate::application::integration_credentials::own_smtp;
use crate::application::Invalid;

type Performed = Result<(Value, Option<u16>), (Failure, Option<u16>)>;

pub(super) fn validate(op: &Operation, arguments: &Value) -> Result<(), Invalid> {
    match op {
        Operation::EmailSend => args::email(arguments).map(|_| ()),
        Operation::CalendarCreateEvent => args::calendar_event(arguments).map(|_| ()),
        Operation::WhatsappSendMessage => args::whatsapp_message(arguments).map(|_| ()),
        Operation::Crm(o) => args::crm(o, arguments).map(|_| ()),
    }
}

fn access_failure(e: AccessError) -> (Failure, Option<u16>) {
    let f = match e {
        AccessError::NeedsReauth | AccessError::Unusable(_) => Failure {
            status: 403,
            code: "integration_needs_reauth".into(),
            message: "the integration's authorisation was revoked or expired; an admin must \
                      connect it again"
                .into(),
            details: json!({}),
        },
        AccessError::Refresh(p) => return provider_failure(p),
        AccessError::Unexpected(m) => {
            tracing::error!(error = %m, "tool proxy: credentials could not be opened");
            Failure {
                status: 500,
                code: "internal".into(),
                message: "internal error; it has been logged".into(),
                details: json!({}),
            }
        }
    };
    (f, None)
}

fn provider_failure(e: ProviderError) -> (Failure, Option<u16>) {
    let status = e.status;
    let (http, code) = if e.code == "timeout" {
        (504, "provider_timeout")
    } else {
        (502, "provider_error")
    };
    (
        Failure {
            status: http,
            code: code.into(),
            message: format!("the provider refused or failed the operation ({})", e.code),
            details: json!({"provider_error": {"code": e.code, "status": e.status,
                                               "message": e.message, "body": e.body}}),
        },
        status,
    )
}

fn secret<'a>(opened: &'a Opened, name: &str) -> &'a str {
    opened.value.get(name).and_then(Value::as_str).unwrap_or("")
}

pub(super) async fn perform(proxy: &ToolProxy, op: &Operation, c: &Checked) -> Performed {
    let args_ = &c.request.arguments;
    let opened = proxy
        .access
        .open(&c.integration)
        .await
        .map_err(access_failure)?;
    match op {
        Operation::CalendarCreateEvent => {
            let ev = args::calendar_event(args_).map_err(invalid)?;
            let id = event_id(&c.call_id, &c.request.tool_call_id);
            let mut body = ev.body;
            body["id"] = json!(id);
            let mut answer = proxy
                .calendar
                .insert_event(secret(&opened, "access_token"), &ev.calendar_id, &body)
                .await;
            if answer
                .as_ref()
                .err()
                .is_some_and(ProviderError::is_unauthorized)
            {
                let fresh = proxy
                    .access
                    .refresh(&c.integration.id, opened.credential.version)
                    .await
                    .map_err(access_failure)?;
                answer = proxy
                    .calendar
                    .insert_event(secret(&fresh, "access_token"), &ev.calendar_id, &body)
                    .await;
            }
            match answer {
                Ok(a) => Ok((
                    json!({"event_id": id, "calendar_id": ev.calendar_id,
                           "status": a.body.get("status").cloned().unwrap_or(json!("confirmed")),
                           "html_link": a.body.get("htmlLink").cloned().unwrap_or(Value::Null)}),
                    Some(a.status),
                )),
                // The id is ours: a 409 means this very booking exists already.
                Err(e) if e.status == Some(409) => Ok((
                    json!({"event_id": id, "calendar_id": ev.calendar_id, "status": "confirmed",
                           "already_existed": true}),
                    Some(409),
                )),
                Err(e) => Err(provider_failure(e)),
            }
        }
        Operation::WhatsappSendMessage => {
            let message = args::whatsapp_message(args_).map_err(invalid)?;
            match proxy
                .whatsapp
                .send_message(
                    secret(&opened, "access_token"),
                    secret(&opened, "phone_number_id"),
                    &message,
                )
                .await
            {
                Ok(a) => Ok((
                    json!({"message_id": a.body.pointer("/messages/0/id").cloned().unwrap_or(Value::Null),
                           "to": message["to"]}),
                    Some(a.status),
                )),
                Err(e) if whatsapp::outside_window(&e) => Err((
                    Failure {
                        status: 422,
                        code: "template_required".into(),
                        message:
                            "free text is only allowed within 24 hours of the customer's last \
                                  message; send a template instead"
                                .into(),
                        details: json!({"field": "arguments.template",
                                        "provider_error": {"status": e.status, "body": e.body}}),
                    },
                    e.status,
                )),
                Err(e) => Err(provider_failure(e)),
            }
        }
        Operation::EmailSend => {
            let a = args::email(args_).map_err(invalid)?;
            let own = own_smtp(&opened.value);
            let email = Email {
                to: a.to.clone(),
                subject: a.subject,
                text: a.text,
                html: a.html,
            };
            match proxy.email.send(own.as_ref(), &email).await {
                Ok(()) => Ok((
                    json!({"status": "sent", "to": a.to,
                           "via": if own.is_some() { "establishment_smtp" } else { "platform_smtp" }}),
                    None,
                )),
                Err(e) => Err(provider_failure(e)),
            }
        }
        Operation::Crm(operation) => {
            let data = args::crm(operation, args_).map_err(invalid)?;
            let payload = json!({
                "operation": operation,
                "establishment_id": c.call.establishment_id,
                "call_id": c.call_id,
                "provider_call_sid": c.call.call_sid,
                "tool_call_id": c.request.tool_call_id,
                "data": data,
                "sent_at": chrono::Utc::now(),
            });
            match proxy
                .crm
                .deliver(
                    secret(&opened, "endpoint_url"),
                    secret(&opened, "signing_secret"),
                    &payload,
                )
                .await
            {
                Ok(a) => Ok((
                    json!({"delivered": true, "status": a.status, "response": a.body}),
                    Some(a.status),
                )),
                Err(e) => Err(provider_failure(e)),
            }
        }
    }
}

fn invalid(e: Invalid) -> (Failure, Option<u16>) {
    (
        Failure {
            status: 422,
            code: "validation_failed".into(),
            message: e.to_string(),
            details: json!({"field": e.field, "reason": e.reason}),
        },
        None,
    )
}
