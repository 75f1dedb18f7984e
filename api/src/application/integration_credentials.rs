//! The credentials each integration type takes, parsed at connect and rotation time into
//! what gets sealed. Nothing here is ever logged or put in an event.

use aggregates::integration::IntegrationType;
use rand::RngCore;
use serde_json::{json, Map, Value};

use super::Invalid;
use crate::adapters::integrations::crm::CrmWebhooks;
use crate::adapters::integrations::email::OwnSmtp;

/// Longest credential string accepted.
const MAX_CREDENTIAL_CHARS: usize = 4096;

/// Credentials ready to seal, and what is shown to the caller once (a generated secret).
pub struct Parsed {
    pub sealed: Value,
    pub shown_once: Option<String>,
}

fn text<'a>(c: &'a Map<String, Value>, field: &str) -> Result<&'a str, Invalid> {
    let name = format!("auth.credentials.{field}");
    let v = c
        .get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .ok_or_else(|| Invalid::new(&name, "is required (a string)"))?;
    if v.is_empty() || v.chars().count() > MAX_CREDENTIAL_CHARS || v.chars().any(char::is_control) {
        return Err(Invalid::new(
            &name,
            format!("must be 1 to {MAX_CREDENTIAL_CHARS} characters without control characters"),
        ));
    }
    Ok(v)
}

fn only(c: &Map<String, Value>, allowed: &[&str]) -> Result<(), Invalid> {
    match c.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Invalid::new(
            format!("auth.credentials.{k}"),
            format!(
                "is not a credential of this type (expected {})",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// A new webhook signing secret (shown once).
pub fn new_signing_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("whsec_{}", hex::encode(b))
}

/// Parses the credentials of a key-based type.
pub async fn parse(
    t: IntegrationType,
    c: &Map<String, Value>,
    crm: &dyn CrmWebhooks,
) -> Result<Parsed, Invalid> {
    match t {
        IntegrationType::GoogleCalendar => Err(Invalid::new(
            "auth.mode",
            "google_calendar connects with \"oauth\"",
        )),
        IntegrationType::Whatsapp => {
            only(c, &["access_token", "phone_number_id"])?;
            let token = text(c, "access_token")?;
            let phone_number_id = text(c, "phone_number_id")?;
            if !phone_number_id.chars().all(|ch| ch.is_ascii_digit()) || phone_number_id.len() > 32
            {
                return Err(Invalid::new(
                    "auth.credentials.phone_number_id",
                    "must be the numeric id of the WhatsApp business phone number",
                ));
            }
            Ok(Parsed {
                sealed: json!({"access_token": token, "phone_number_id": phone_number_id}),
                shown_once: None,
            })
        }
        IntegrationType::Email => {
            only(c, &["smtp_url", "from"])?;
            if c.is_empty() {
                return Ok(Parsed {
                    sealed: json!({"platform": true}),
                    shown_once: None,
                });
            }
            let smtp_url = text(c, "smtp_url")?;
            let parsed = url::Url::parse(smtp_url)
                .ok()
                .filter(|u| matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some());
            let Some(parsed) = parsed else {
                return Err(Invalid::new(
                    "auth.credentials.smtp_url",
                    "must be an smtp:// or smtps:// URL with a host",
                ));
            };
            // The same destination rule as CRM endpoints: no internal address unless
            // allow-listed (checked as an https URL of the same host and port).
            let port = parsed
                .port()
                .unwrap_or(if parsed.scheme() == "smtps" { 465 } else { 587 });
            let probe = url::Url::parse(&format!(
                "https://{}:{port}/",
                parsed.host_str().unwrap_or_default()
            ))
            .map_err(|_| Invalid::new("auth.credentials.smtp_url", "has an unusable host"))?;
            crm.check_destination(&probe)
                .await
                .map_err(|e| Invalid::new("auth.credentials.smtp_url", e.to_string()))?;
            let from = text(c, "from")?;
            if from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(Invalid::new(
                    "auth.credentials.from",
                    "must be a mailbox such as \"Clinic <desk@clinic.example>\"",
                ));
            }
            Ok(Parsed {
                sealed: json!({"smtp_url": smtp_url, "from": from}),
                shown_once: None,
            })
        }
        IntegrationType::CrmWebhook => {
            only(c, &["endpoint_url"])?;
            let endpoint = text(c, "endpoint_url")?;
            let url = url::Url::parse(endpoint).map_err(|_| {
                Invalid::new(
                    "auth.credentials.endpoint_url",
                    "must be an absolute https URL",
                )
            })?;
            crm.check_destination(&url)
                .await
                .map_err(|e| Invalid::new("auth.credentials.endpoint_url", e.to_string()))?;
            let secret = new_signing_secret();
            Ok(Parsed {
                sealed: json!({"endpoint_url": endpoint, "signing_secret": secret}),
                shown_once: Some(secret),
            })
        }
    }
}

/// The own SMTP settings of an opened e-mail credential (`None`: the platform's SMTP).
pub fn own_smtp(opened: &Value) -> Option<OwnSmtp> {
    Some(OwnSmtp {
        url: opened.get("smtp_url")?.as_str()?.to_string(),
        from: opened.get("from")?.as_str()?.to_string(),
    })
}
