//! Runtime instances (§7.4, Appendix A.4): provisioning, lifecycle intents, status, and the
//! runtime-authenticated `/runtime/whoami`. Admins change runtimes; every member reads them;
//! other establishments' runtimes answer 404.

use std::collections::BTreeMap;
use std::sync::Arc;

use aggregates::common::Role;
use aggregates::runtime::RuntimeCommand;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use projections::runtimes::RuntimeRow;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::adapters::docker::DockerError;
use crate::application::runtimes::{
    ProvisionError, ProvisionInput, ReconcileReport, RuntimeManagement,
};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, RequestId};
use crate::http::principal::Principal;
use crate::http::runtime_principal::RuntimePrincipal;
use crate::state::AppState;
use crate::store::{Actor, CommandContext};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_runtime, provision_runtime))
        .routes(routes!(runtime_status))
        .routes(routes!(start_runtime))
        .routes(routes!(stop_runtime))
        .routes(routes!(restart_runtime))
        .routes(routes!(drain_runtime))
        .routes(routes!(resume_runtime))
        .routes(routes!(reconciliation))
        .routes(routes!(whoami))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    /// A Docker image present on the host (nothing is pulled).
    pub image: String,
    /// Extra environment for the container; values may be secrets: they are stored encrypted
    /// and never returned. Names are `[A-Z_][A-Z0-9_]*` and cannot be the runtime contract's.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Public ws(s):// URL Twilio media streams reach this runtime at. Default: from
    /// RUNTIME_MEDIA_STREAM_URL_TEMPLATE, else none.
    #[serde(default)]
    pub media_stream_url: Option<String>,
}

/// Appendix A.4 provisioning answer.
#[derive(Serialize, ToSchema)]
pub struct ProvisionResponse {
    pub id: String,
    pub establishment_id: String,
    pub status: String,
    pub container_name: String,
    pub base_url: String,
}

#[derive(Serialize, ToSchema)]
pub struct AgentInfo {
    pub active_calls: i64,
    pub total_calls_handled: i64,
}

/// Appendix A.4 status.
#[derive(Serialize, ToSchema)]
pub struct RuntimeStatusView {
    pub id: String,
    /// created, starting, running, stopping, stopped, restarting, exited, missing or failed.
    pub status: String,
    /// Running, its `/readyz` says ready, and not draining.
    pub ready: bool,
    /// Why it is not ready (a draining runtime's first issue starts with `draining`).
    pub ready_issues: Vec<String>,
    /// Last health poll (null before the first).
    pub last_checked_at: Option<DateTime<Utc>>,
    /// From the runtime's `/info` (null before it first answered).
    pub agent_info: Option<AgentInfo>,
}

/// Everything about a runtime (never its env values or token).
#[derive(Serialize, ToSchema)]
pub struct RuntimeView {
    pub id: String,
    pub establishment_id: String,
    pub status: String,
    pub ready: bool,
    pub ready_issues: Vec<String>,
    /// Takes no new calls (routing skips it); calls in progress go on.
    pub draining: bool,
    pub image: String,
    pub container_name: String,
    pub container_id: Option<String>,
    pub host_port: i32,
    pub base_url: String,
    pub media_stream_url: Option<String>,
    /// Names of the provisioning env variables (values are never returned).
    pub env_keys: Vec<String>,
    /// The Docker operation in progress, if any.
    pub pending_operation: Option<String>,
    pub last_error: Option<String>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub agent_info: Option<AgentInfo>,
    pub agent_version: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub status_changed_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    pub runtime_id: String,
    pub establishment_id: String,
}

/// The issue a draining runtime's status carries (it takes no new calls, so it is not ready).
pub const DRAINING_ISSUE: &str = "draining: the runtime takes no new calls until it is resumed";

fn to_view(r: RuntimeRow) -> RuntimeView {
    let running = r.status == "running";
    let mut ready_issues = if running {
        RuntimeRow::strings(&r.ready_issues)
    } else {
        let mut issues = vec![format!("runtime is not running (status: {})", r.status)];
        issues.extend(r.last_error.clone());
        issues
    };
    if r.draining {
        ready_issues.insert(0, DRAINING_ISSUE.to_string());
    }
    let agent_info = match (r.active_calls, r.total_calls_handled) {
        (Some(a), Some(t)) => Some(AgentInfo {
            active_calls: a,
            total_calls_handled: t,
        }),
        _ => None,
    };
    RuntimeView {
        ready: running && r.ready && !r.draining,
        ready_issues,
        draining: r.draining,
        env_keys: RuntimeRow::strings(&r.env_keys),
        id: r.id,
        establishment_id: r.establishment_id,
        status: r.status,
        image: r.image,
        container_name: r.container_name,
        container_id: r.container_id,
        host_port: r.host_port,
        base_url: r.base_url,
        media_stream_url: r.media_stream_url,
        pending_operation: r.pending_op,
        last_error: r.last_error,
        last_checked_at: r.checked_at,
        agent_info,
        agent_version: r.version,
        created_at: r.created_at,
        updated_at: r.updated_at,
        status_changed_at: r.status_changed_at,
    }
}

impl From<RuntimeView> for RuntimeStatusView {
    fn from(v: RuntimeView) -> Self {
        Self {
            id: v.id,
            status: v.status,
            ready: v.ready,
            ready_issues: v.ready_issues,
            last_checked_at: v.last_checked_at,
            agent_info: v.agent_info,
        }
    }
}

/// A runtime by id, or 404 (also for ids the caller may not know about: checked by callers).
async fn load(pool: &PgPool, runtime_id: &str) -> ApiResult<RuntimeView> {
    if !crate::ids::is_id("rt", runtime_id) {
        return Err(ApiError::not_found("runtime"));
    }
    projections::runtimes::by_id(pool, runtime_id)
        .await?
        .map(to_view)
        .ok_or_else(|| ApiError::not_found("runtime"))
}

/// The runtime of an establishment.
#[utoipa::path(get, path = "/establishments/{id}/runtime", tag = "runtimes", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = RuntimeView), (status = 404, description = "no such establishment, or it has no runtime")))]
async fn get_runtime(
    State(pool): State<PgPool>,
    me: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<RuntimeView>> {
    me.member_of(&id)?;
    let row = projections::runtimes::of_establishment(&pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("runtime"))?;
    Ok(Json(to_view(row)))
}

/// Provisions the establishment's runtime (admins). Answers at once with status `created`; a
/// worker creates the container, and `POST /runtimes/{runtimeId}/start` starts it.
#[utoipa::path(post, path = "/establishments/{id}/runtime", tag = "runtimes", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = ProvisionRequest,
    responses((status = 201, body = ProvisionResponse), (status = 403), (status = 404),
              (status = 409, description = "the establishment already has a runtime"),
              (status = 422, description = "invalid input, an image outside RUNTIME_IMAGE_ALLOWLIST (`image_not_allowed`), or an image not present on the Docker host (`image_not_found`)"),
              (status = 503, description = "Docker unreachable, or no free host port")))]
async fn provision_runtime(
    State(management): State<Arc<RuntimeManagement>>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ProvisionRequest>,
) -> ApiResult<(StatusCode, Json<ProvisionResponse>)> {
    me.require(&id, Role::Admin)?;
    let input = ProvisionInput::parse(&req.image, req.env, req.media_stream_url.as_deref())?;
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&id);
    let rt = management.provision(&ctx, &id, input).await?;
    let spec = rt
        .spec
        .as_ref()
        .ok_or_else(|| ApiError::internal("provisioned runtime has no spec"))?;
    Ok((
        StatusCode::CREATED,
        Json(ProvisionResponse {
            id: spec.runtime_id.clone(),
            establishment_id: spec.establishment_id.clone(),
            status: rt.status().as_str().to_string(),
            container_name: spec.container_name.clone(),
            base_url: spec.base_url.clone(),
        }),
    ))
}

/// Status of a runtime (A.4): lifecycle status, readiness with the runtime's own issues, last
/// health poll and call counters.
#[utoipa::path(get, path = "/runtimes/{runtimeId}/status", tag = "runtimes", security(("bearer" = [])),
    params(("runtimeId" = String, Path)),
    responses((status = 200, body = RuntimeStatusView), (status = 404)))]
async fn runtime_status(
    State(pool): State<PgPool>,
    me: Principal,
    Path(runtime_id): Path<String>,
) -> ApiResult<Json<RuntimeStatusView>> {
    let view = load(&pool, &runtime_id).await?;
    me.member_of(&view.establishment_id)
        .map_err(|_| ApiError::not_found("runtime"))?;
    Ok(Json(view.into()))
}

/// Records a lifecycle intent (admins): 202 with the status when an operation was queued,
/// 200 with the status when there was nothing to do (e.g. start of a running runtime).
async fn lifecycle(
    state: AppState,
    request_id: String,
    me: Principal,
    runtime_id: String,
    command: RuntimeCommand,
) -> ApiResult<(StatusCode, Json<RuntimeStatusView>)> {
    let view = load(&state.pool, &runtime_id).await?;
    let est = view.establishment_id;
    me.member_of(&est)
        .map_err(|_| ApiError::not_found("runtime"))?;
    me.require(&est, Role::Admin)?;
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), &request_id)
        .in_establishment(&est);
    let outcome = state
        .runtime_management
        .lifecycle(&ctx, &runtime_id, command)
        .await?;
    let code = if outcome.commit().is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(load(&state.pool, &runtime_id).await?.into())))
}

/// Starts the runtime (creating its container again if it vanished).
#[utoipa::path(post, path = "/runtimes/{runtimeId}/start", tag = "runtimes", security(("bearer" = [])),
    params(("runtimeId" = String, Path)),
    responses((status = 202, body = RuntimeStatusView, description = "start queued"),
              (status = 200, body = RuntimeStatusView, description = "already running or starting"),
              (status = 403), (status = 404)))]
async fn start_runtime(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(runtime_id): Path<String>,
) -> ApiResult<(StatusCode, Json<RuntimeStatusView>)> {
    lifecycle(state, request_id, me, runtime_id, RuntimeCommand::Start).await
}

/// Stops the runtime; a draining runtime is stopped once its active calls end (bounded by
/// RUNTIME_DRAIN_TIMEOUT_MS).
#[utoipa::path(post, path = "/runtimes/{runtimeId}/stop", tag = "runtimes", security(("bearer" = [])),
    params(("runtimeId" = String, Path)),
    responses((status = 202, body = RuntimeStatusView, description = "stop queued"),
              (status = 200, body = RuntimeStatusView, description = "already stopped or stopping"),
              (status = 403), (status = 404)))]
async fn stop_runtime(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(runtime_id): Path<String>,
) -> ApiResult<(StatusCode, Json<RuntimeStatusView>)> {
    lifecycle(state, request_id, me, runtime_id, RuntimeCommand::Stop).await
}

/// Restarts the runtime (starts it when stopped).
#[utoipa::path(post, path = "/runtimes/{runtimeId}/restart", tag = "runtimes", security(("bearer" = [])),
    params(("runtimeId" = String, Path)),
    responses((status = 202, body = RuntimeStatusView, description = "restart queued"),
              (status = 200, body = RuntimeStatusView, description = "a restart is already pending"),
              (status = 403), (status = 404)))]
async fn restart_runtime(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(runtime_id): Path<String>,
) -> ApiResult<(StatusCode, Json<RuntimeStatusView>)> {
    lifecycle(state, request_id, me, runtime_id, RuntimeCommand::Restart).await
}

/// Drains the runtime: it takes no new calls (routing skips it, and the runtime is told);
/// calls in progress go on.
#[utoipa::path(post, path = "/runtimes/{runtimeId}/drain", tag = "runtimes", security(("bearer" = [])),
    params(("runtimeId" = String, Path)),
    responses((status = 202, body = RuntimeStatusView), (status = 200, body = RuntimeStatusView, description = "already draining"),
              (status = 403), (status = 404)))]
async fn drain_runtime(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(runtime_id): Path<String>,
) -> ApiResult<(StatusCode, Json<RuntimeStatusView>)> {
    lifecycle(state, request_id, me, runtime_id, RuntimeCommand::Drain).await
}

/// Ends a drain: the runtime takes calls again.
#[utoipa::path(post, path = "/runtimes/{runtimeId}/resume", tag = "runtimes", security(("bearer" = [])),
    params(("runtimeId" = String, Path)),
    responses((status = 202, body = RuntimeStatusView), (status = 200, body = RuntimeStatusView, description = "not draining"),
              (status = 403), (status = 404)))]
async fn resume_runtime(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    me: Principal,
    Path(runtime_id): Path<String>,
) -> ApiResult<(StatusCode, Json<RuntimeStatusView>)> {
    lifecycle(state, request_id, me, runtime_id, RuntimeCommand::Resume).await
}

/// What the last reconciliation with Docker found, including containers with this control
/// plane's labels that no runtime owns (platform admins).
#[utoipa::path(get, path = "/runtimes/reconciliation", tag = "runtimes", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403)))]
async fn reconciliation(
    State(state): State<AppState>,
    me: Principal,
) -> ApiResult<Json<ReconcileReport>> {
    if !me.platform_admin {
        return Err(ApiError::forbidden(
            "the reconciliation report is for platform admins",
        ));
    }
    Ok(Json(state.runtimes.report.lock().clone()))
}

/// For runtimes: which runtime and establishment the bearer runtime token belongs to.
#[utoipa::path(get, path = "/runtime/whoami", tag = "runtimes", security(("runtime_token" = [])),
    responses((status = 200, body = WhoAmI), (status = 401)))]
async fn whoami(me: RuntimePrincipal) -> Json<WhoAmI> {
    Json(WhoAmI {
        runtime_id: me.runtime_id,
        establishment_id: me.establishment_id,
    })
}

impl From<ProvisionError> for ApiError {
    fn from(e: ProvisionError) -> Self {
        let message = e.to_string();
        match e {
            ProvisionError::EstablishmentNotFound => ApiError::not_found("establishment"),
            ProvisionError::AlreadyProvisioned {
                establishment_id,
                runtime_id,
            } => ApiError::conflict(
                "runtime_exists",
                format!("establishment {establishment_id} already has a runtime"),
            )
            .with_details(
                json!({ "establishment_id": establishment_id, "runtime_id": runtime_id }),
            ),
            ProvisionError::Invalid(i) => i.into(),
            ProvisionError::ImageNotAllowed { image, allowed } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "image_not_allowed",
                message,
            )
            .with_details(json!({ "field": "image", "image": image, "allowed": allowed })),
            ProvisionError::ImageNotFound(image) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "image_not_found", message)
                    .with_details(json!({ "field": "image", "image": image }))
            }
            ProvisionError::Docker(DockerError::Unavailable(m)) => ApiError::unavailable(
                "docker_unavailable",
                format!("the Docker engine is unreachable: {m}"),
            ),
            ProvisionError::Docker(DockerError::Invalid(m)) => ApiError::validation("image", m),
            ProvisionError::Docker(e) => ApiError::internal(e),
            ProvisionError::NoFreeHostPort(_) => {
                ApiError::unavailable("no_free_host_port", message)
            }
            ProvisionError::Command(e) => e.into(),
            ProvisionError::Unexpected(e) => e.into(),
        }
    }
}
