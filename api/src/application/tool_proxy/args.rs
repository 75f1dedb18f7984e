//! Arguments of each tool-proxy operation, validated (422 naming the field) before anything
//! is recorded or sent. The model supplies arguments; it never supplies a host or a
//! credential.

use aggregates::common::{Email, E164};
use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde_json::{json, Map, Value};

use crate::application::Invalid;

pub const MAX_ATTENDEES: usize = 50;
pub const MAX_RECIPIENTS: usize = 20;
pub const MAX_TEXT_CHARS: usize = 4096;
pub const MAX_BODY_CHARS: usize = 100_000;

fn field(path: &str) -> String {
    format!("arguments.{path}")
}

fn object(v: &Value) -> Result<&Map<String, Value>, Invalid> {
    v.as_object()
        .ok_or_else(|| Invalid::new("arguments", "must be an object"))
}

fn only(o: &Map<String, Value>, allowed: &[&str]) -> Result<(), Invalid> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Invalid::new(
            field(k),
            format!(
                "is not an argument of this operation (expected {})",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn text(
    o: &Map<String, Value>,
    name: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, Invalid> {
    match o.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(Invalid::new(field(name), "is required")),
        Some(Value::String(s)) if s.trim().is_empty() && required => {
            Err(Invalid::new(field(name), "must not be empty"))
        }
        Some(Value::String(s)) if s.chars().count() > max => Err(Invalid::new(
            field(name),
            format!("must be at most {max} characters"),
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Invalid::new(field(name), "must be a string")),
    }
}

fn emails(v: &Value, name: &str, max: usize) -> Result<Vec<String>, Invalid> {
    let items: Vec<&Value> = match v {
        Value::String(_) => vec![v],
        Value::Array(a) => a.iter().collect(),
        _ => {
            return Err(Invalid::new(
                field(name),
                "must be an e-mail address or a list of them",
            ))
        }
    };
    if items.is_empty() || items.len() > max {
        return Err(Invalid::new(
            field(name),
            format!("must name 1 to {max} addresses"),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let s = item
                .as_str()
                .or_else(|| item.get("email").and_then(Value::as_str))
                .ok_or_else(|| {
                    Invalid::new(field(&format!("{name}[{i}]")), "must be an e-mail address")
                })?;
            s.parse::<Email>()
                .map(|e| e.as_str().to_string())
                .map_err(|e| Invalid::new(field(&format!("{name}[{i}]")), e.message))
        })
        .collect()
}

/// A Calendar event time: RFC 3339 with an offset, or a local date-time with an IANA zone.
fn when(o: &Map<String, Value>, name: &str) -> Result<(Value, DateTime<FixedOffset>), Invalid> {
    let bad = || {
        Invalid::new(
            field(name),
            "must be an RFC 3339 date-time with an offset (2026-12-03T10:00:00-03:00) or \
             {\"date_time\": \"2026-12-03T10:00:00\", \"time_zone\": \"America/Sao_Paulo\"}",
        )
    };
    match o.get(name) {
        Some(Value::String(s)) => {
            let t = DateTime::parse_from_rfc3339(s).map_err(|_| bad())?;
            Ok((json!({"dateTime": t.to_rfc3339()}), t))
        }
        Some(Value::Object(m)) => {
            let local = m.get("date_time").and_then(Value::as_str).ok_or_else(bad)?;
            let zone = m.get("time_zone").and_then(Value::as_str).ok_or_else(bad)?;
            let tz: chrono_tz::Tz = zone.parse().map_err(|_| {
                Invalid::new(
                    field(&format!("{name}.time_zone")),
                    "is not an IANA time zone",
                )
            })?;
            let naive =
                NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S").map_err(|_| bad())?;
            let t = naive
                .and_local_timezone(tz)
                .earliest()
                .ok_or_else(|| Invalid::new(field(name), "does not exist in that time zone"))?;
            Ok((
                json!({"dateTime": local, "timeZone": zone}),
                t.fixed_offset(),
            ))
        }
        None | Some(Value::Null) => Err(Invalid::new(field(name), "is required")),
        Some(_) => Err(bad()),
    }
}

/// `calendar.create_event`: the calendar and the Calendar API's event body (without its id).
pub struct CalendarEvent {
    pub calendar_id: String,
    pub body: Value,
}

pub fn calendar_event(v: &Value) -> Result<CalendarEvent, Invalid> {
    let o = object(v)?;
    only(
        o,
        &[
            "calendar_id",
            "summary",
            "start",
            "end",
            "attendees",
            "description",
            "location",
        ],
    )?;
    let calendar_id = text(o, "calendar_id", 255, false)?.unwrap_or_else(|| "primary".into());
    let summary = text(o, "summary", 1024, true)?;
    let (start, s) = when(o, "start")?;
    let (end, e) = when(o, "end")?;
    if e <= s {
        return Err(Invalid::new(field("end"), "must be after start"));
    }
    let mut body = json!({"summary": summary, "start": start, "end": end});
    if let Some(d) = text(o, "description", 8192, false)? {
        body["description"] = json!(d);
    }
    if let Some(l) = text(o, "location", 1024, false)? {
        body["location"] = json!(l);
    }
    if let Some(a) = o.get("attendees").filter(|a| !a.is_null()) {
        let list = emails(a, "attendees", MAX_ATTENDEES)?;
        body["attendees"] = Value::Array(list.into_iter().map(|e| json!({"email": e})).collect());
    }
    Ok(CalendarEvent { calendar_id, body })
}

/// `whatsapp.send_message`: the Cloud API message body.
pub fn whatsapp_message(v: &Value) -> Result<Value, Invalid> {
    let o = object(v)?;
    only(o, &["to", "text", "template"])?;
    let to: E164 = text(o, "to", 32, true)?
        .unwrap_or_default()
        .parse()
        .map_err(|e: aggregates::common::ParseError| Invalid::new(field("to"), e.message))?;
    let digits = to.as_str().trim_start_matches('+').to_string();
    match (
        o.get("text").filter(|t| !t.is_null()),
        o.get("template").filter(|t| !t.is_null()),
    ) {
        (Some(_), Some(_)) => Err(Invalid::new(
            field("template"),
            "give either text or template, not both",
        )),
        (None, None) => Err(Invalid::new(
            field("text"),
            "give text (within the 24-hour customer-service window) or a template",
        )),
        (Some(_), None) => {
            let body = text(o, "text", MAX_TEXT_CHARS, true)?;
            Ok(
                json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                      "to": digits, "type": "text", "text": {"body": body}}),
            )
        }
        (None, Some(t)) => {
            let t = t
                .as_object()
                .ok_or_else(|| Invalid::new(field("template"), "must be an object"))?;
            only(t, &["name", "language", "parameters"]).map_err(|e| {
                Invalid::new(
                    e.field.replacen("arguments.", "arguments.template.", 1),
                    e.reason,
                )
            })?;
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| {
                    !n.is_empty()
                        && n.len() <= 512
                        && n.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
                .ok_or_else(|| {
                    Invalid::new(
                        field("template.name"),
                        "must be a template name (lowercase letters, digits, _)",
                    )
                })?;
            let language = t
                .get("language")
                .and_then(Value::as_str)
                .filter(|l| (2..=16).contains(&l.len()))
                .ok_or_else(|| {
                    Invalid::new(
                        field("template.language"),
                        "must be a language code such as en_US",
                    )
                })?;
            let parameters = match t.get("parameters") {
                None | Some(Value::Null) => vec![],
                Some(Value::Array(p)) if p.len() <= 20 => p
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        p.as_str()
                            .filter(|s| s.chars().count() <= 1024)
                            .map(|s| json!({"type": "text", "text": s}))
                            .ok_or_else(|| {
                                Invalid::new(
                                    field(&format!("template.parameters[{i}]")),
                                    "must be a string of at most 1024 characters",
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(Invalid::new(
                        field("template.parameters"),
                        "must be a list of at most 20 strings",
                    ))
                }
            };
            let mut template = json!({"name": name, "language": {"code": language}});
            if !parameters.is_empty() {
                template["components"] = json!([{"type": "body", "parameters": parameters}]);
            }
            Ok(
                json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                      "to": digits, "type": "template", "template": template}),
            )
        }
    }
}

/// `email.send`.
pub struct EmailArgs {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

pub fn email(v: &Value) -> Result<EmailArgs, Invalid> {
    let o = object(v)?;
    only(o, &["to", "subject", "text", "html"])?;
    let to = emails(
        o.get("to")
            .ok_or_else(|| Invalid::new(field("to"), "is required"))?,
        "to",
        MAX_RECIPIENTS,
    )?;
    let subject = text(o, "subject", 998, true)?.unwrap_or_default();
    if subject.contains(['\r', '\n']) {
        return Err(Invalid::new(field("subject"), "must be one line"));
    }
    Ok(EmailArgs {
        to,
        subject,
        text: text(o, "text", MAX_BODY_CHARS, true)?.unwrap_or_default(),
        html: text(o, "html", MAX_BODY_CHARS, false)?,
    })
}

/// The CRM operations.
pub const CRM_OPERATIONS: &[&str] = &["log_call", "upsert_contact"];

/// `crm.{operation}`: the `data` of the delivery.
pub fn crm(operation: &str, v: &Value) -> Result<Value, Invalid> {
    let o = object(v)?;
    match operation {
        "log_call" => {
            only(o, &["summary", "outcome", "fields"])?;
            text(o, "summary", MAX_TEXT_CHARS, true)?;
            text(o, "outcome", 256, false)?;
        }
        "upsert_contact" => {
            only(o, &["phone_e164", "email", "name", "fields"])?;
            let phone = text(o, "phone_e164", 32, false)?;
            let mail = text(o, "email", 254, false)?;
            if phone.is_none() && mail.is_none() {
                return Err(Invalid::new(
                    field("phone_e164"),
                    "give phone_e164 or email",
                ));
            }
            if let Some(p) = phone {
                p.parse::<E164>()
                    .map_err(|e| Invalid::new(field("phone_e164"), e.message))?;
            }
            if let Some(m) = mail {
                m.parse::<Email>()
                    .map_err(|e| Invalid::new(field("email"), e.message))?;
            }
            text(o, "name", 256, false)?;
        }
        other => {
            return Err(Invalid::new(
                "operation",
                format!(
                    "unknown CRM operation {other:?}; known: {}",
                    CRM_OPERATIONS.join(", ")
                ),
            ))
        }
    }
    if let Some(f) = o.get("fields").filter(|f| !f.is_null()) {
        if !f.is_object() || f.to_string().len() > 16 * 1024 {
            return Err(Invalid::new(
                field("fields"),
                "must be an object of at most 16 KB",
            ));
        }
    }
    Ok(Value::Object(o.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_times_take_an_offset_or_a_zone_and_end_after_start() {
        let ok = calendar_event(
            &json!({"summary": "Visit", "start": "2026-12-03T10:00:00-03:00",
            "end": {"date_time": "2026-12-03T11:00:00", "time_zone": "America/Sao_Paulo"},
            "attendees": ["A@Example.com"]}),
        )
        .unwrap();
        assert_eq!(ok.calendar_id, "primary");
        assert_eq!(ok.body["attendees"][0]["email"], "a@example.com");
        let e = calendar_event(&json!({"summary": "Visit", "start": "2026-12-03T10:00:00",
            "end": "2026-12-03T11:00:00Z"}))
        .err()
        .unwrap();
        assert_eq!(e.field, "arguments.start");
        let e = calendar_event(&json!({"summary": "Visit", "start": "2026-12-03T10:00:00Z",
            "end": "2026-12-03T09:00:00Z"}))
        .err()
        .unwrap();
        assert_eq!(e.field, "arguments.end");
    }

    #[test]
    fn whatsapp_needs_an_e164_recipient_and_text_or_a_template() {
        let m = whatsapp_message(&json!({"to": "+5511987654321", "text": "Hi"})).unwrap();
        assert_eq!(m["to"], "5511987654321");
        assert_eq!(m["type"], "text");
        let t = whatsapp_message(&json!({"to": "+5511987654321",
            "template": {"name": "visit_confirmed", "language": "pt_BR", "parameters": ["Ana"]}}))
        .unwrap();
        assert_eq!(
            t["template"]["components"][0]["parameters"][0]["text"],
            "Ana"
        );
        assert_eq!(
            whatsapp_message(&json!({"to": "123", "text": "x"}))
                .err()
                .unwrap()
                .field,
            "arguments.to"
        );
        assert_eq!(
            whatsapp_message(&json!({"to": "+5511987654321"}))
                .err()
                .unwrap()
                .field,
            "arguments.text"
        );
    }
}
