//! The HTTP surface: routes (collected with their OpenAPI descriptions), middleware (request
//! id, tracing, metrics, body limits, panics) and the contract-shaped fallbacks.

pub mod admin;
pub mod agents;
pub mod audit;
pub mod auth;
pub mod calls;
pub mod calls_export;
pub mod campaigns;
pub mod error;
pub mod establishments;
pub mod extract;
pub mod health;
pub mod ingest;
pub mod integrations;
pub mod leads;
pub mod openapi;
pub mod principal;
pub mod recording_links;
pub mod reports;
pub mod runtime_principal;
pub mod runtimes;
pub mod telephony;
pub mod tool_proxy;
pub mod twilio;
pub mod twilio_form;
pub mod users;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::http::error::{ApiError, InternalCause};
use crate::state::AppState;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-chosen request id kept (it is copied into the metadata of every event the
/// request appends, and into the log).
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client's `X-Request-Id` is a short, safe token: 1 to 64 of `[A-Za-z0-9._-]`.
pub fn is_safe_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Keeps the client's `X-Request-Id` when it is a safe token, else replaces it with a fresh
/// one, and echoes the id actually used on the response.
async fn request_id(mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_safe_request_id(v))
        .and_then(|v| HeaderValue::from_str(v).ok());
    let id = match given {
        Some(v) => v,
        None => HeaderValue::from_str(&crate::ids::new_id("req"))
            .expect("generated ids are header-safe"),
    };
    req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
    let mut res = next.run(req).await;
    res.headers_mut().insert(X_REQUEST_ID.clone(), id);
    res
}

/// The `method` label of request metrics: the standard methods, every other one `other` (a
/// client must not be able to mint label values).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Every API route with its OpenAPI description.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::routes())
        .merge(auth::routes())
        .merge(establishments::routes())
        .merge(users::routes())
        .merge(audit::routes())
        .merge(agents::routes())
        .merge(telephony::routes())
        .merge(calls::routes())
        .merge(calls_export::routes())
        .merge(reports::routes())
        .merge(twilio::routes())
        .merge(runtimes::routes())
        .merge(ingest::routes())
        .merge(integrations::routes())
        .merge(leads::routes())
        .merge(campaigns::routes())
        .merge(tool_proxy::routes())
        .merge(admin::routes())
}

/// The OpenAPI document served at `/openapi.json` (also `control-plane openapi`).
pub fn openapi_document() -> serde_json::Value {
    let (_, doc) = api_routes().split_for_parts();
    openapi::complete(serde_json::to_value(&doc).expect("the OpenAPI document serialises"))
}

pub fn router(state: AppState) -> Router {
    let (api, doc) = api_routes().split_for_parts();
    let doc = Arc::new(doc);
    Router::new()
        .merge(api)
        .merge(openapi::routes(doc))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn(observe))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get(&X_REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(middleware::from_fn(request_id))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }))
        .with_state(state)
}

/// Records request metrics and logs every 5xx with its internal cause. A path holding a NUL
/// character names nothing that can exist (no id contains one, and PostgreSQL stores none):
/// it is answered 404 before any handler runs.
async fn observe(req: Request, next: Next) -> Response {
    if req.uri().path().to_ascii_lowercase().contains("%00") {
        return ApiError::not_found("resource").into_response();
    }
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let res = next.run(req).await;
    let status = res.status();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status.as_u16().to_string()).increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route.clone()).record(elapsed);
    if status.is_server_error() {
        let cause = res
            .extensions()
            .get::<InternalCause>()
            .map(|c| c.0.as_str())
            .unwrap_or("-");
        tracing::error!(%status, %route, cause, "request failed");
    } else {
        tracing::debug!(%status, elapsed_ms = elapsed * 1e3, "request done");
    }
    res
}

async fn not_found(State(_): State<AppState>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}
