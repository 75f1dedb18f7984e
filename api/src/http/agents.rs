//! `/establishments/{id}/agents` and `/agents/...`: agents and their versioned brains (draft,
//! edit, publish, rollback, archive, diff). Establishment admins write; every member reads.
//! Agents of other establishments answer 404.

use std::collections::BTreeMap;

use aggregates::agent::{
    diff, Agent, AgentCommand, AgentError, Brain, BrainChanges, ModelParams, Policies, Prompt,
    Tool, ToolSetting, Tools, VersionName,
};
use aggregates::common::{bounded_text, Role};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::{ApiError, ApiResult, DomainError};
use crate::http::extract::{ApiJson, ApiQuery, RequestId as ReqId};
use crate::http::principal::Principal;
use crate::ids::is_id;
use crate::state::AppState;
use crate::store::{Actor, CommandContext, ExecOptions, Outcome};

/// Longest agent name and description, in characters.
const MAX_AGENT_NAME: usize = 200;
const MAX_AGENT_DESCRIPTION: usize = 2000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, update_agent))
        .routes(routes!(list_versions, create_version))
        .routes(routes!(get_version, edit_version))
        .routes(routes!(publish_version))
        .routes(routes!(rollback_version))
        .routes(routes!(archive_version))
        .routes(routes!(diff_versions))
}

impl DomainError for AgentError {
    fn status(&self) -> StatusCode {
        match self {
            AgentError::NotFound | AgentError::VersionNotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::CONFLICT,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            AgentError::AlreadyExists | AgentError::VersionExists => "already_exists",
            AgentError::NotFound | AgentError::VersionNotFound => "not_found",
            AgentError::VersionImmutable => "version_immutable",
            AgentError::VersionArchived => "version_archived",
            AgentError::AlreadyPublished => "version_already_published",
            AgentError::NeverPublished => "version_never_published",
            AgentError::VersionActive => "version_active",
            AgentError::TooManyVersions => "too_many_versions",
        }
    }
}

/// 404 for outsiders and unknown establishments, 403 below `needed`.
pub(crate) async fn establishment_scope(
    state: &AppState,
    me: &Principal,
    establishment_id: &str,
    needed: Role,
) -> ApiResult<()> {
    me.require(establishment_id, needed)?;
    // Platform admins pass `require` for any id: the establishment must also exist.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM rm_establishments WHERE id = $1)")
            .bind(establishment_id)
            .fetch_one(&state.pool)
            .await?;
    if !exists {
        return Err(ApiError::not_found("establishment"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Agents.

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    #[schema(example = "Nova GPT")]
    pub name: String,
    #[schema(example = "Concierge and support agent")]
    pub description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    pub name: Option<String>,
    /// An empty string clears the description.
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AgentView {
    pub id: String,
    pub establishment_id: String,
    pub name: String,
    pub description: String,
    /// The published version calls are routed to; `null` until one is published.
    pub active_version_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct AgentList {
    pub items: Vec<AgentView>,
}

const AGENT_COLUMNS: &str =
    "id, establishment_id, name, description, active_version_id, created_at";

fn agent_view(r: &PgRow) -> AgentView {
    AgentView {
        id: r.get("id"),
        establishment_id: r.get("establishment_id"),
        name: r.get("name"),
        description: r.get("description"),
        active_version_id: r.get("active_version_id"),
        created_at: r.get("created_at"),
    }
}

async fn find_agent(state: &AppState, id: &str) -> ApiResult<Option<AgentView>> {
    if !is_id("agt", id) {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {AGENT_COLUMNS} FROM rm_agents WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.as_ref().map(agent_view))
}

/// The agent, if the caller may see it with at least `needed`: 404 for unknown agents and
/// agents of other establishments, 403 when the role is too low.
async fn agent_scope(
    state: &AppState,
    me: &Principal,
    agent_id: &str,
    needed: Role,
) -> ApiResult<AgentView> {
    let agent = find_agent(state, agent_id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    me.require(&agent.establishment_id, needed)
        .map_err(|e| match e.status() {
            StatusCode::NOT_FOUND => ApiError::not_found("agent"),
            _ => e,
        })?;
    Ok(agent)
}

async fn load_agent(state: &AppState, id: &str) -> ApiResult<AgentView> {
    find_agent(state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))
}

fn description(d: Option<&str>) -> ApiResult<String> {
    match d.map(str::trim) {
        None | Some("") => Ok(String::new()),
        Some(d) => Ok(bounded_text("description", d, MAX_AGENT_DESCRIPTION)?),
    }
}

async fn execute(
    state: &AppState,
    me: &Principal,
    request_id: &str,
    establishment_id: &str,
    agent_id: &str,
    command: AgentCommand,
) -> ApiResult<Outcome<Agent>> {
    let ctx = CommandContext::from_request(Actor::User(me.user_id.clone()), request_id)
        .in_establishment(establishment_id);
    let outcome = state
        .bus
        .execute::<Agent>(agent_id, command, &ctx, ExecOptions::default())
        .await?;
    state.bus.visible(&outcome).await;
    Ok(outcome)
}

/// Agents of an establishment, oldest first.
#[utoipa::path(get, path = "/establishments/{id}/agents", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = AgentList), (status = 404)))]
async fn list_agents(
    State(state): State<AppState>,
    me: Principal,
    Path(establishment_id): Path<String>,
) -> ApiResult<Json<AgentList>> {
    establishment_scope(&state, &me, &establishment_id, Role::Viewer).await?;
    let rows = sqlx::query(&format!(
        "SELECT {AGENT_COLUMNS} FROM rm_agents WHERE establishment_id = $1 ORDER BY created_at, id"
    ))
    .bind(&establishment_id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(AgentList {
        items: rows.iter().map(agent_view).collect(),
    }))
}

/// Creates an agent (establishment admins); it has no active version until one is published.
#[utoipa::path(post, path = "/establishments/{id}/agents", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = CreateAgent,
    responses((status = 201, body = AgentView), (status = 403), (status = 404), (status = 422)))]
async fn create_agent(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(establishment_id): Path<String>,
    ApiJson(req): ApiJson<CreateAgent>,
) -> ApiResult<(StatusCode, Json<AgentView>)> {
    establishment_scope(&state, &me, &establishment_id, Role::Admin).await?;
    let name = bounded_text("name", &req.name, MAX_AGENT_NAME)?;
    let description = description(req.description.as_deref())?;
    let id = crate::ids::new_id("agt");
    execute(
        &state,
        &me,
        &request_id,
        &establishment_id,
        &id,
        AgentCommand::Create {
            agent_id: id.clone(),
            establishment_id: establishment_id.clone(),
            name,
            description,
            created_by: me.user_id.clone(),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(load_agent(&state, &id).await?)))
}

/// One agent, with its active version.
#[utoipa::path(get, path = "/agents/{agentId}", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path)),
    responses((status = 200, body = AgentView), (status = 404)))]
async fn get_agent(
    State(state): State<AppState>,
    me: Principal,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    Ok(Json(
        agent_scope(&state, &me, &agent_id, Role::Viewer).await?,
    ))
}

/// Renames an agent or changes its description (establishment admins).
#[utoipa::path(patch, path = "/agents/{agentId}", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path)), request_body = UpdateAgent,
    responses((status = 200, body = AgentView), (status = 403), (status = 404), (status = 422)))]
async fn update_agent(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(agent_id): Path<String>,
    ApiJson(req): ApiJson<UpdateAgent>,
) -> ApiResult<Json<AgentView>> {
    let agent = agent_scope(&state, &me, &agent_id, Role::Admin).await?;
    let name = req
        .name
        .as_deref()
        .map(|n| bounded_text("name", n, MAX_AGENT_NAME))
        .transpose()?;
    let description = req
        .description
        .as_deref()
        .map(|d| description(Some(d)))
        .transpose()?;
    execute(
        &state,
        &me,
        &request_id,
        &agent.establishment_id,
        &agent_id,
        AgentCommand::Update { name, description },
    )
    .await?;
    Ok(Json(load_agent(&state, &agent_id).await?))
}

// ---------------------------------------------------------------------------------------------
// Versions.

/// Model parameters (documentation of the shape).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ModelDoc {
    /// Lower-case slug, e.g. `openai`.
    #[schema(example = "openai")]
    provider: String,
    #[schema(example = "gpt-4.1-mini")]
    model: String,
    #[schema(minimum = 0.0, maximum = 2.0, example = 0.7)]
    temperature: f64,
    #[schema(minimum = 1, maximum = 131072, example = 1024)]
    max_tokens: u32,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVersion {
    /// 1–100 characters, e.g. `v1`.
    #[schema(value_type = String, example = "v1")]
    pub name: VersionName,
    /// The system prompt, up to 100,000 characters.
    #[schema(value_type = String, example = "You are a helpful assistant...")]
    pub prompt: Prompt,
    #[schema(value_type = ModelDoc)]
    pub model: ModelParams,
    /// `{"<tool>": {"enabled": true|false}}` for tools `email`, `calendar`,
    /// `whatsapp_messaging`, `crm`, `handoff`; unlisted tools are disabled.
    #[serde(default, deserialize_with = "tools")]
    #[schema(value_type = Object, example = json!({"email": {"enabled": true}, "calendar": {"enabled": false}}))]
    pub tools: Tools,
    /// Free-form policies for the LLM and its tools (JSON object, at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub policies: Policies,
}

/// Fields of a draft to replace; omitted ones stay. `model`, `tools` and `policies` are
/// replaced as a whole.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditVersion {
    #[schema(value_type = Option<String>)]
    pub name: Option<VersionName>,
    #[schema(value_type = Option<String>)]
    pub prompt: Option<Prompt>,
    #[schema(value_type = Option<ModelDoc>)]
    pub model: Option<ModelParams>,
    #[serde(default, deserialize_with = "some_tools")]
    #[schema(value_type = Option<Object>)]
    pub tools: Option<Tools>,
    #[schema(value_type = Option<Object>)]
    pub policies: Option<Policies>,
}

/// Tool flags keyed by tool name, an unknown name answered as a 422 on `tools` that lists the
/// known tools.
fn tools<'de, D: Deserializer<'de>>(d: D) -> Result<Tools, D::Error> {
    BTreeMap::<String, ToolSetting>::deserialize(d)?
        .into_iter()
        .map(|(name, setting)| {
            name.parse::<Tool>()
                .map(|t| (t, setting))
                .map_err(|e| D::Error::custom(e.message))
        })
        .collect()
}

fn some_tools<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Tools>, D::Error> {
    tools(d).map(Some)
}

/// Answer to a draft creation (Appendix A.3).
#[derive(Serialize, ToSchema)]
pub struct CreatedVersion {
    pub id: String,
    pub agent_id: String,
    #[schema(example = "draft")]
    pub status: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct VersionSummary {
    pub id: String,
    pub agent_id: String,
    /// 1, 2, 3… in drafting order.
    pub number: i32,
    pub name: String,
    /// `draft`, `published` or `archived`.
    pub status: String,
    /// Whether this is the agent's active version.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it was first published.
    pub published_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    pub items: Vec<VersionSummary>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionView {
    #[serde(flatten)]
    pub summary: VersionSummary,
    pub prompt: String,
    #[schema(value_type = ModelDoc)]
    pub model: Value,
    #[schema(value_type = Object)]
    pub tools: Value,
    #[schema(value_type = Object)]
    pub policies: Value,
}

/// Answer to a publish or a rollback (Appendix A.3).
#[derive(Serialize, ToSchema)]
pub struct ActivationView {
    pub agent_id: String,
    pub active_version_id: String,
    /// The version that was active before; `null` after the first publish.
    pub previous_version_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FieldChangeView {
    /// Dotted field path, e.g. `model.temperature`, `tools.email.enabled`, `policies.tone`.
    pub path: String,
    /// Value in the `against` version (`null`: absent).
    #[schema(value_type = Object)]
    pub from: Value,
    /// Value in this version (`null`: absent).
    #[schema(value_type = Object)]
    pub to: Value,
}

#[derive(Serialize, ToSchema)]
pub struct VersionDiff {
    pub agent_id: String,
    pub version_id: String,
    pub against_version_id: String,
    /// Fields that differ, by path; empty when the brains are the same.
    pub changes: Vec<FieldChangeView>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// Version to compare with; default: the agent's active version.
    pub against: Option<String>,
}

const VERSION_COLUMNS: &str = "v.id, v.agent_id, v.number, v.name, v.status, v.created_at, \
    v.updated_at, v.published_at, (a.active_version_id IS NOT DISTINCT FROM v.id) AS active";

fn version_summary(r: &PgRow) -> VersionSummary {
    VersionSummary {
        id: r.get("id"),
        agent_id: r.get("agent_id"),
        number: r.get("number"),
        name: r.get("name"),
        status: r.get("status"),
        active: r.get("active"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        published_at: r.get("published_at"),
    }
}

async fn find_version(state: &AppState, agent_id: &str, version_id: &str) -> ApiResult<PgRow> {
    if !is_id("agv", version_id) {
        return Err(ApiError::not_found("version"));
    }
    sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS}, v.prompt, v.model, v.tools, v.policies
         FROM rm_agent_versions v JOIN rm_agents a ON a.id = v.agent_id
         WHERE v.id = $1 AND v.agent_id = $2"
    ))
    .bind(version_id)
    .bind(agent_id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| ApiError::not_found("version"))
}

fn version_view(r: &PgRow) -> VersionView {
    VersionView {
        summary: version_summary(r),
        prompt: r.get("prompt"),
        model: r.get("model"),
        tools: r.get("tools"),
        policies: r.get("policies"),
    }
}

fn brain_of(r: &PgRow) -> ApiResult<Brain> {
    serde_json::from_value(json!({
        "name": r.get::<String, _>("name"),
        "prompt": r.get::<String, _>("prompt"),
        "model": r.get::<Value, _>("model"),
        "tools": r.get::<Value, _>("tools"),
        "policies": r.get::<Value, _>("policies"),
    }))
    .map_err(|e| ApiError::internal(format!("stored version does not decode: {e}")))
}

/// Versions of an agent, in drafting order (without their brains; GET one for that).
#[utoipa::path(get, path = "/agents/{agentId}/versions", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path)),
    responses((status = 200, body = VersionList), (status = 404)))]
async fn list_versions(
    State(state): State<AppState>,
    me: Principal,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<VersionList>> {
    agent_scope(&state, &me, &agent_id, Role::Viewer).await?;
    let rows = sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM rm_agent_versions v JOIN rm_agents a ON a.id = v.agent_id
         WHERE v.agent_id = $1 ORDER BY v.number"
    ))
    .bind(&agent_id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(VersionList {
        items: rows.iter().map(version_summary).collect(),
    }))
}

/// Drafts a new version (establishment admins). Brain only: prompt, model, tools, policies.
#[utoipa::path(post, path = "/agents/{agentId}/versions", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path)), request_body = CreateVersion,
    responses((status = 201, body = CreatedVersion), (status = 403), (status = 404),
              (status = 409, description = "too many versions"), (status = 422)))]
async fn create_version(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(agent_id): Path<String>,
    ApiJson(req): ApiJson<CreateVersion>,
) -> ApiResult<(StatusCode, Json<CreatedVersion>)> {
    let agent = agent_scope(&state, &me, &agent_id, Role::Admin).await?;
    let version_id = crate::ids::new_id("agv");
    let name = req.name.as_str().to_string();
    execute(
        &state,
        &me,
        &request_id,
        &agent.establishment_id,
        &agent_id,
        AgentCommand::DraftVersion {
            version_id: version_id.clone(),
            brain: Brain {
                name: req.name,
                prompt: req.prompt,
                model: req.model,
                tools: req.tools,
                policies: req.policies,
            },
            created_by: me.user_id.clone(),
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedVersion {
            id: version_id,
            agent_id,
            status: "draft".into(),
            name,
        }),
    ))
}

/// One version with its brain.
#[utoipa::path(get, path = "/agents/{agentId}/versions/{versionId}", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path), ("versionId" = String, Path)),
    responses((status = 200, body = VersionView), (status = 404)))]
async fn get_version(
    State(state): State<AppState>,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
) -> ApiResult<Json<VersionView>> {
    agent_scope(&state, &me, &agent_id, Role::Viewer).await?;
    Ok(Json(version_view(
        &find_version(&state, &agent_id, &version_id).await?,
    )))
}

/// Edits a draft (establishment admins). Published and archived versions never change: 409.
#[utoipa::path(patch, path = "/agents/{agentId}/versions/{versionId}", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path), ("versionId" = String, Path)), request_body = EditVersion,
    responses((status = 200, body = VersionView), (status = 403), (status = 404),
              (status = 409, description = "the version is published or archived"), (status = 422)))]
async fn edit_version(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<EditVersion>,
) -> ApiResult<Json<VersionView>> {
    let agent = agent_scope(&state, &me, &agent_id, Role::Admin).await?;
    execute(
        &state,
        &me,
        &request_id,
        &agent.establishment_id,
        &agent_id,
        AgentCommand::EditDraft {
            version_id: version_id.clone(),
            changes: BrainChanges {
                name: req.name,
                prompt: req.prompt,
                model: req.model,
                tools: req.tools,
                policies: req.policies,
            },
        },
    )
    .await?;
    Ok(Json(version_view(
        &find_version(&state, &agent_id, &version_id).await?,
    )))
}

fn activation(agent_id: String, outcome: &Outcome<Agent>) -> ApiResult<Json<ActivationView>> {
    let state = outcome
        .state()
        .ok_or_else(|| ApiError::internal("no agent state after activation"))?;
    Ok(Json(ActivationView {
        agent_id,
        active_version_id: state
            .active_version_id
            .clone()
            .ok_or_else(|| ApiError::internal("no active version after activation"))?,
        previous_version_id: state.previous_version_id.clone(),
    }))
}

/// Publishes a draft: it becomes the active version, and incoming calls use it. Publishing
/// the active version again changes nothing and answers the same.
#[utoipa::path(post, path = "/agents/{agentId}/versions/{versionId}/publish", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path), ("versionId" = String, Path)),
    responses((status = 200, body = ActivationView), (status = 403), (status = 404),
              (status = 409, description = "archived, or published before (roll back instead)")))]
async fn publish_version(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
) -> ApiResult<Json<ActivationView>> {
    let agent = agent_scope(&state, &me, &agent_id, Role::Admin).await?;
    let outcome = execute(
        &state,
        &me,
        &request_id,
        &agent.establishment_id,
        &agent_id,
        AgentCommand::Publish { version_id },
    )
    .await?;
    activation(agent_id, &outcome)
}

/// Makes a version that was published before active again (recorded as a new event).
#[utoipa::path(post, path = "/agents/{agentId}/versions/{versionId}/rollback", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path), ("versionId" = String, Path)),
    responses((status = 200, body = ActivationView), (status = 403), (status = 404),
              (status = 409, description = "never published, or archived")))]
async fn rollback_version(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
) -> ApiResult<Json<ActivationView>> {
    let agent = agent_scope(&state, &me, &agent_id, Role::Admin).await?;
    let outcome = execute(
        &state,
        &me,
        &request_id,
        &agent.establishment_id,
        &agent_id,
        AgentCommand::Rollback { version_id },
    )
    .await?;
    activation(agent_id, &outcome)
}

/// Archives a version that is not active (drafts and superseded versions).
#[utoipa::path(post, path = "/agents/{agentId}/versions/{versionId}/archive", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path), ("versionId" = String, Path)),
    responses((status = 200, body = VersionView), (status = 403), (status = 404),
              (status = 409, description = "the version is active")))]
async fn archive_version(
    State(state): State<AppState>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
) -> ApiResult<Json<VersionView>> {
    let agent = agent_scope(&state, &me, &agent_id, Role::Admin).await?;
    execute(
        &state,
        &me,
        &request_id,
        &agent.establishment_id,
        &agent_id,
        AgentCommand::Archive {
            version_id: version_id.clone(),
        },
    )
    .await?;
    Ok(Json(version_view(
        &find_version(&state, &agent_id, &version_id).await?,
    )))
}

/// Field-level differences between two versions of an agent: what changes when going from
/// `against` (default: the active version) to this version.
#[utoipa::path(get, path = "/agents/{agentId}/versions/{versionId}/diff", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path), ("versionId" = String, Path), DiffQuery),
    responses((status = 200, body = VersionDiff), (status = 404),
              (status = 422, description = "no `against` and no active version")))]
async fn diff_versions(
    State(state): State<AppState>,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> ApiResult<Json<VersionDiff>> {
    let agent = agent_scope(&state, &me, &agent_id, Role::Viewer).await?;
    let against = match q.against.or(agent.active_version_id) {
        Some(a) => a,
        None => {
            return Err(ApiError::validation(
                "against",
                "required: the agent has no active version to compare with",
            ))
        }
    };
    let to = brain_of(&find_version(&state, &agent_id, &version_id).await?)?;
    let from = brain_of(&find_version(&state, &agent_id, &against).await?)?;
    Ok(Json(VersionDiff {
        agent_id,
        version_id,
        against_version_id: against,
        changes: diff(&from, &to)
            .into_iter()
            .map(|c| FieldChangeView {
                path: c.path,
                from: c.from,
                to: c.to,
            })
            .collect(),
    }))
}
