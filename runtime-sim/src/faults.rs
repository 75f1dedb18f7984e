//! Fault switches for tests: from the environment at start (`SIM_*`, see `config`) and at run
//! time through `POST /admin/faults` and `POST /admin/calls`. This is a test fixture: a real
//! runtime has no such endpoints.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::state::SimState;

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/admin/faults", post(set_faults))
        .route("/admin/calls", post(set_calls))
        .with_state(state)
}

/// Starts the crash timer of `SIM_CRASH_AFTER_MS`.
pub fn spawn_env_faults(state: &Arc<SimState>) {
    if let Some(after) = state.config.crash_after {
        let code = state.config.crash_exit_code;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            crash(code);
        });
    }
}

fn crash(code: i32) -> ! {
    tracing::error!(exit_code = code, "crashing (fault switch)");
    std::process::exit(code)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Faults {
    /// Readiness issues to report (empty: ready again).
    unready: Option<Vec<String>>,
    /// Exit at once with `exit_code` (default 1).
    crash: Option<bool>,
    exit_code: Option<i32>,
}

async fn set_faults(
    State(s): State<Arc<SimState>>,
    Json(f): Json<Faults>,
) -> (StatusCode, Json<Value>) {
    if let Some(issues) = f.unready {
        tracing::warn!(?issues, "readiness issues set (fault switch)");
        s.set_fault_issues(issues);
    }
    if f.crash == Some(true) {
        let code = f.exit_code.unwrap_or(1);
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            crash(code);
        });
    }
    (StatusCode::OK, Json(json!({ "issues": s.issues() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Calls {
    active_calls: u64,
}

/// Pretends `active_calls` calls are in progress (to exercise drain-then-stop).
async fn set_calls(State(s): State<Arc<SimState>>, Json(c): Json<Calls>) -> Json<Value> {
    s.set_active_calls(c.active_calls);
    Json(
        json!({ "active_calls": s.active_calls(), "total_calls_handled": s.total_calls_handled() }),
    )
}
