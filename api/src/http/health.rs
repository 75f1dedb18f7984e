//! Probes: `/healthz` (alive), `/readyz` (database reachable and migrated), `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::MIGRATOR;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<String>,
}

/// The process is alive (no dependency checks).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        issues: vec![],
    })
}

/// The database is reachable and every migration is applied; 503 with the reasons otherwise.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut issues = Vec::new();
    match sqlx::query_scalar::<_, i64>(
        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(&state.pool)
    .await
    {
        Ok(applied) => {
            for m in MIGRATOR.iter() {
                if !applied.contains(&m.version) {
                    issues.push(format!(
                        "migration {} ({}) is not applied",
                        m.version, m.description
                    ));
                }
            }
        }
        Err(e) => issues.push(format!("database unreachable: {e}")),
    }
    if issues.is_empty() {
        (
            StatusCode::OK,
            Json(Health {
                status: "ready",
                issues,
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "not_ready",
                issues,
            }),
        )
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let progress = state.hub.progress();
    for (name, cp) in progress {
        metrics::gauge!("projector_checkpoint_position", "projector" => name)
            .set(cp.position as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
