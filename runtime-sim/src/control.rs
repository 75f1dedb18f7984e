//! The runtime contract's control endpoints: `GET /readyz`, `GET /info`, `POST /drain`,
//! `POST /resume`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::state::SimState;

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/info", get(info))
        .route("/drain", post(drain))
        .route("/resume", post(resume))
        .with_state(state)
}

/// 200 `{"ready":true,"issues":[]}` or 503 with the issues.
async fn readyz(State(s): State<Arc<SimState>>) -> (StatusCode, Json<Value>) {
    let issues = s.issues();
    let status = if issues.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": issues.is_empty(), "issues": issues })),
    )
}

async fn info(State(s): State<Arc<SimState>>) -> Json<Value> {
    Json(info_body(&s))
}

fn info_body(s: &SimState) -> Value {
    json!({
        "runtime_id": s.config.runtime_id,
        "establishment_id": s.config.establishment_id,
        "active_calls": s.active_calls(),
        "total_calls_handled": s.total_calls_handled(),
        "draining": s.draining(),
        "version": concat!("runtime-sim/", env!("CARGO_PKG_VERSION")),
        "outbox": s.outbox.stats_json(),
    })
}

/// Stops taking new calls; calls in progress go on.
async fn drain(State(s): State<Arc<SimState>>) -> Json<Value> {
    s.set_draining(true);
    tracing::info!(active_calls = s.active_calls(), "draining");
    Json(info_body(&s))
}

async fn resume(State(s): State<Arc<SimState>>) -> Json<Value> {
    s.set_draining(false);
    tracing::info!("resumed");
    Json(info_body(&s))
}
