//! The OpenAPI document (generated from the handlers' annotations) at `/openapi.json`, and a
//! self-contained HTML rendering of it at `/docs` (no CDN, works offline).

use std::fmt::Write;
use std::sync::Arc;

use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Doc;
use utoipa::{Modify, OpenApi};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Voice agent control plane",
        description = "Multi-tenant control plane for AI voice agents: establishments, users, agents, runtimes, calls. Errors always have the shape {\"error\":{\"code\",\"message\",\"details\"}}.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Login, sessions, password reset, invitations"),
        (name = "establishments", description = "Tenants and their settings"),
        (name = "users", description = "Members and roles"),
        (name = "audit", description = "The event log, for auditors"),
        (name = "calls", description = "Active calls, history, details, transcript, recording, tool log; outbound calls and handoff"),
        (name = "reports", description = "Dashboard KPIs, agent performance, calls over time, billing stub: exact figures from rollups, in the establishment's time zone"),
        (name = "ingest", description = "Runtime events (Appendix B), with the runtime token"),
        (name = "integrations", description = "Establishment-owned connections (Google Calendar, WhatsApp, e-mail, CRM webhook); credentials sealed, never returned"),
        (name = "leads", description = "Lead imports (CSV), leads, the do-not-call list"),
        (name = "campaigns", description = "Outbound campaigns: pace, schedule, callee-local window, retries; live counters and a preview"),
        (name = "tool-proxy", description = "Runtimes act through the establishment's integrations, with the runtime token; exactly once per tool call"),
        (name = "twilio", description = "Twilio webhooks (X-Twilio-Signature, no user auth)"),
        (name = "operations", description = "Probes and metrics"),
        (name = "admin", description = "Platform administration: dead letters (events a projector set aside)"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut Doc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "runtime",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "the runtime token given to the container as CONTROL_PLANE_TOKEN",
                    ))
                    .build(),
            ),
        );
    }
}

pub fn routes(doc: Arc<Doc>) -> Router<AppState> {
    let json = Arc::new(complete(
        serde_json::to_value(&*doc).expect("the OpenAPI document serialises"),
    ));
    let html = Arc::new(render(&json));
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move { Json((*json).clone()) }),
        )
        .route("/docs", get(move || async move { Html((*html).clone()) }))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Statuses every operation of a kind can answer, declared once here rather than on each
/// handler: the contract error shape for each, 401 where a token is required, 404 where a path
/// names a resource, 400/413/415/422 where a JSON body is parsed, 422 where query parameters
/// are, 413 and 403 on signed webhooks, 429 where a throttle applies.
pub fn complete(mut doc: Value) -> Value {
    let error_ref = json!({"$ref": "#/components/schemas/Error"});
    doc["components"]["schemas"]["Error"] = json!({
        "type": "object",
        "description": "Every error: a stable code, a human message and details (e.g. the field of a 422).",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"}
            }
        }}
    });
    const THROTTLED: [&str; 3] = ["login", "forgot_password", "reset_password"];
    add_links(&mut doc);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (_, op) in item.iter_mut() {
            let mut add: Vec<(&str, &str)> = Vec::new();
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if secured {
                add.push((
                    "401",
                    "no token, or an invalid or ended session / unknown runtime token",
                ));
            }
            if path.contains('{') {
                add.push((
                    "404",
                    "no such resource, or one of an establishment the caller is not in",
                ));
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if params.iter().any(|p| p["in"] == "query") {
                add.push(("422", "a query parameter is invalid (details name it)"));
            }
            let content_types: Vec<String> = op["requestBody"]["content"]
                .as_object()
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_default();
            if content_types.iter().any(|c| c == "application/json") {
                add.push(("400", "the body is not valid JSON"));
                add.push(("413", "the body is too large"));
                add.push(("415", "the body is not application/json"));
                add.push((
                    "422",
                    "a field is missing, unknown or invalid (details name it)",
                ));
            }
            if content_types
                .iter()
                .any(|c| c == "application/x-www-form-urlencoded")
            {
                add.push(("403", "missing or invalid X-Twilio-Signature"));
                add.push(("413", "the body is too large"));
                add.push(("422", "a form field is missing or invalid"));
            }
            if op["operationId"]
                .as_str()
                .is_some_and(|id| THROTTLED.contains(&id))
            {
                add.push(("429", "too many attempts; see Retry-After"));
            }
            let responses = op["responses"]
                .as_object_mut()
                .expect("every operation has responses");
            for (code, description) in add {
                let r = responses
                    .entry(code)
                    .or_insert_with(|| json!({"description": ""}));
                if r["description"].as_str() == Some("") {
                    r["description"] = json!(description);
                }
            }
            for (code, response) in responses.iter_mut() {
                let is_error = code.starts_with('4') || code.starts_with('5');
                if is_error && response.get("content").is_none() {
                    response["content"] = json!({"application/json": {"schema": error_ref}});
                }
                if response["description"].as_str() == Some("") {
                    response["description"] = json!(default_description(code));
                }
            }
        }
    }
    doc
}

/// What each creating operation answers that other operations take as path parameters:
/// `(operationId, status, [(path parameter, JSON pointer into the answer)])`. Turned into
/// OpenAPI links, so clients (and the fuzzer's stateful phase) can follow real ids.
type Producer = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);
const PRODUCERS: &[Producer] = &[
    ("create_establishment", "201", &[("id", "/id")]),
    ("create_agent", "201", &[("agentId", "/id")]),
    (
        "create_version",
        "201",
        &[("agentId", "/agent_id"), ("versionId", "/id")],
    ),
    ("provision_runtime", "201", &[("runtimeId", "/id")]),
    ("outbound_call", "201", &[("callId", "/call_id")]),
    (
        "create_integration",
        "201",
        &[("integrationId", "/integration_id")],
    ),
    ("create_campaign", "201", &[("campaignId", "/id")]),
    ("import_leads", "202", &[("jobId", "/job_id")]),
];

fn add_links(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object() else {
        return;
    };
    // operationId → its path parameters.
    let mut targets: Vec<(String, Vec<String>)> = Vec::new();
    for item in paths.values() {
        for op in item.as_object().into_iter().flat_map(|o| o.values()) {
            let Some(id) = op["operationId"].as_str() else {
                continue;
            };
            let params: Vec<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect();
            if !params.is_empty() {
                targets.push((id.to_string(), params));
            }
        }
    }
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut() {
            let Some(&(_, status, produced)) = PRODUCERS
                .iter()
                .find(|(id, _, _)| op["operationId"].as_str() == Some(id))
            else {
                continue;
            };
            let mut links = serde_json::Map::new();
            for (target, params) in &targets {
                let all = params
                    .iter()
                    .all(|p| produced.iter().any(|(name, _)| name == p));
                // Only links that carry the newly created id.
                let carries_new = params.iter().any(|p| p == produced[produced.len() - 1].0);
                if !all || !carries_new {
                    continue;
                }
                let parameters: serde_json::Map<String, Value> = params
                    .iter()
                    .filter_map(|p| {
                        produced
                            .iter()
                            .find(|(name, _)| name == p)
                            .map(|(_, ptr)| (p.clone(), json!(format!("$response.body#{ptr}"))))
                    })
                    .collect();
                links.insert(
                    target.clone(),
                    json!({"operationId": target, "parameters": parameters}),
                );
            }
            if !links.is_empty() {
                if let Some(r) = op["responses"].get_mut(status) {
                    r["links"] = Value::Object(links);
                }
            }
        }
    }
}

fn default_description(code: &str) -> &'static str {
    match code {
        "200" => "OK",
        "201" => "created",
        "202" => "accepted",
        "204" => "done, no body",
        "400" => "bad request",
        "401" => "not authenticated",
        "403" => "your role in that establishment is too low",
        "404" => "not found",
        "409" => "a rule or a uniqueness claim refused the change",
        "422" => "invalid input (details name the field)",
        "429" => "too many requests; see Retry-After",
        "503" => "a dependency is unavailable",
        _ => "see the error code",
    }
}

/// Renders every operation with its parameters, request body and responses.
fn render(value: &Value) -> String {
    let mut out = String::new();
    let title = value["info"]["title"].as_str().unwrap_or("API");
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=utf-8><title>{t}</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         .op{{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.6rem 1rem}}\
         .m{{display:inline-block;min-width:4.5rem;font-weight:bold;text-transform:uppercase}}\
         code,pre{{background:#f5f5f5;padding:.1rem .3rem;border-radius:3px}}pre{{padding:.5rem;overflow:auto}}\
         </style></head><body><h1>{t}</h1><p>{d}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a></p>",
        t = esc(title),
        d = esc(value["info"]["description"].as_str().unwrap_or(""))
    );
    if let Some(paths) = value["paths"].as_object() {
        for (path, item) in paths {
            let Some(ops) = item.as_object() else {
                continue;
            };
            for (method, op) in ops {
                let _ = write!(
                    out,
                    "<div class=op><span class=m>{}</span> <code>{}</code>",
                    esc(method),
                    esc(path)
                );
                if let Some(s) = op["summary"].as_str().or(op["description"].as_str()) {
                    let _ = write!(out, "<p>{}</p>", esc(s));
                }
                if let Some(params) = op["parameters"].as_array() {
                    out.push_str("<p>Parameters: ");
                    for p in params {
                        let _ = write!(
                            out,
                            "<code>{}</code> ({}{}) ",
                            esc(p["name"].as_str().unwrap_or("")),
                            esc(p["in"].as_str().unwrap_or("")),
                            if p["required"].as_bool() == Some(true) {
                                ", required"
                            } else {
                                ""
                            }
                        );
                    }
                    out.push_str("</p>");
                }
                if let Some(body) = op.get("requestBody") {
                    let _ = write!(
                        out,
                        "<p>Request body:</p><pre>{}</pre>",
                        esc(&schema_ref(body))
                    );
                }
                if let Some(responses) = op["responses"].as_object() {
                    out.push_str("<p>Responses: ");
                    for (code, r) in responses {
                        let _ = write!(
                            out,
                            "<b>{}</b> {} ",
                            esc(code),
                            esc(r["description"].as_str().unwrap_or(""))
                        );
                    }
                    out.push_str("</p>");
                }
                out.push_str("</div>");
            }
        }
    }
    if let Some(schemas) = value["components"]["schemas"].as_object() {
        out.push_str("<h2>Schemas</h2>");
        for (name, schema) in schemas {
            let _ = write!(
                out,
                "<h3 id=\"{n}\">{n}</h3><pre>{}</pre>",
                esc(&serde_json::to_string_pretty(schema).unwrap_or_default()),
                n = esc(name)
            );
        }
    }
    out.push_str("</body></html>");
    out
}

fn schema_ref(body: &serde_json::Value) -> String {
    let content = &body["content"];
    content
        .as_object()
        .and_then(|c| c.values().next())
        .map(|m| serde_json::to_string_pretty(&m["schema"]).unwrap_or_default())
        .unwrap_or_default()
}
