//! The OpenAPI document (generated from the handlers' annotations) at `/openapi.json`, and a
//! self-contained HTML rendering of it at `/docs` (no CDN, works offline).

use std::fmt::Write;
use std::sync::Arc;

use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
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
        (name = "ingest", description = "Runtime events (Appendix B), with the runtime token"),
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
    let json = doc.clone();
    let html = Arc::new(render(&doc));
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

/// Renders every operation with its parameters, request body and responses.
fn render(doc: &Doc) -> String {
    let value = serde_json::to_value(doc).unwrap_or_default();
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
