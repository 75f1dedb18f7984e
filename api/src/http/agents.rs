//! `/establishments/{id}/agents` and `/agents/...`: agents and their versioned brains (draft,
//! edit, publish, rollback, archive, diff). Establishment admins write; every member reads.
//! Agents of other establishments answer 404.

use std::collections::BTreeMap;
use std::sync::Arc;

use aggregates::agent::{
    diff, Brain, BrainChanges, ModelParams, Policies, Prompt, Tool, ToolSetting, Tools, VersionName,
};
use aggregates::common::{bounded_text, ParseError, Role};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use projections::agents::{self as read, AgentRow, VersionRow, VersionSummaryRow};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::establishments::establishment_scope;
use crate::application::agents::{Activation, Agents, AgentsError};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiQuery, RequestId as ReqId};
use crate::http::principal::Principal;
use crate::ids::is_id;
use crate::state::AppState;
use crate::store::{Actor, CommandContext};

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

impl From<AgentsError> for ApiError {
    fn from(e: AgentsError) -> Self {
        match e {
            AgentsError::AgentNotFound => ApiError::not_found("agent"),
            AgentsError::VersionNotFound => ApiError::not_found("version"),
            AgentsError::Command(e) => e.into(),
            AgentsError::Unexpected(e) => e.into(),
        }
    }
}

/// The command context of the caller acting on an agent of `establishment_id`.
fn acting(me: &Principal, request_id: &str, establishment_id: &str) -> CommandContext {
    CommandContext::from_request(Actor::User(me.user_id.clone()), request_id)
        .in_establishment(establishment_id)
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

impl From<AgentRow> for AgentView {
    fn from(r: AgentRow) -> Self {
        Self {
            id: r.id,
            establishment_id: r.establishment_id,
            name: r.name,
            description: r.description,
            active_version_id: r.active_version_id,
            created_at: r.created_at,
        }
    }
}

/// The agent, if the caller may see it with at least `needed`: 404 for unknown agents and
/// agents of other establishments, 403 when the role is too low.
async fn agent_scope(
    pool: &PgPool,
    me: &Principal,
    agent_id: &str,
    needed: Role,
) -> ApiResult<AgentRow> {
    let agent = match is_id("agt", agent_id) {
        true => read::agent(pool, agent_id).await?,
        false => None,
    }
    .ok_or_else(|| ApiError::not_found("agent"))?;
    me.require(&agent.establishment_id, needed)
        .map_err(|e| match e.status() {
            StatusCode::NOT_FOUND => ApiError::not_found("agent"),
            _ => e,
        })?;
    Ok(agent)
}

/// A description: trimmed, empty when blank.
fn description(d: &str) -> Result<String, ParseError> {
    match d.trim() {
        "" => Ok(String::new()),
        d => bounded_text("description", d, MAX_AGENT_DESCRIPTION),
    }
}

/// Agents of an establishment, oldest first.
#[utoipa::path(get, path = "/establishments/{id}/agents", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = AgentList), (status = 404)))]
async fn list_agents(
    State(pool): State<PgPool>,
    me: Principal,
    Path(establishment_id): Path<String>,
) -> ApiResult<Json<AgentList>> {
    establishment_scope(&pool, &me, &establishment_id, Role::Viewer).await?;
    let rows = read::agents_of(&pool, &establishment_id).await?;
    Ok(Json(AgentList {
        items: rows.into_iter().map(Into::into).collect(),
    }))
}

/// Creates an agent (establishment admins); it has no active version until one is published.
#[utoipa::path(post, path = "/establishments/{id}/agents", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = CreateAgent,
    responses((status = 201, body = AgentView), (status = 403), (status = 404), (status = 422)))]
async fn create_agent(
    State(pool): State<PgPool>,
    State(agents): State<Arc<Agents>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(establishment_id): Path<String>,
    ApiJson(req): ApiJson<CreateAgent>,
) -> ApiResult<(StatusCode, Json<AgentView>)> {
    establishment_scope(&pool, &me, &establishment_id, Role::Admin).await?;
    let name = bounded_text("name", &req.name, MAX_AGENT_NAME)?;
    let description = description(req.description.as_deref().unwrap_or_default())?;
    let ctx = acting(&me, &request_id, &establishment_id);
    let agent = agents
        .create(&ctx, &establishment_id, name, description)
        .await?;
    Ok((StatusCode::CREATED, Json(agent.into())))
}

/// One agent, with its active version.
#[utoipa::path(get, path = "/agents/{agentId}", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path)),
    responses((status = 200, body = AgentView), (status = 404)))]
async fn get_agent(
    State(pool): State<PgPool>,
    me: Principal,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    Ok(Json(
        agent_scope(&pool, &me, &agent_id, Role::Viewer)
            .await?
            .into(),
    ))
}

/// Renames an agent or changes its description (establishment admins).
#[utoipa::path(patch, path = "/agents/{agentId}", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path)), request_body = UpdateAgent,
    responses((status = 200, body = AgentView), (status = 403), (status = 404), (status = 422)))]
async fn update_agent(
    State(pool): State<PgPool>,
    State(agents): State<Arc<Agents>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(agent_id): Path<String>,
    ApiJson(req): ApiJson<UpdateAgent>,
) -> ApiResult<Json<AgentView>> {
    let agent = agent_scope(&pool, &me, &agent_id, Role::Admin).await?;
    let name = req
        .name
        .as_deref()
        .map(|n| bounded_text("name", n, MAX_AGENT_NAME))
        .transpose()?;
    let description = req.description.as_deref().map(description).transpose()?;
    let ctx = acting(&me, &request_id, &agent.establishment_id);
    let agent = agents.update(&ctx, &agent_id, name, description).await?;
    Ok(Json(agent.into()))
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
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// Version to compare with; default: the agent's active version.
    pub against: Option<String>,
}

impl From<VersionSummaryRow> for VersionSummary {
    fn from(r: VersionSummaryRow) -> Self {
        Self {
            id: r.id,
            agent_id: r.agent_id,
            number: r.number,
            name: r.name,
            status: r.status,
            active: r.active,
            created_at: r.created_at,
            updated_at: r.updated_at,
            published_at: r.published_at,
        }
    }
}

impl From<VersionRow> for VersionView {
    fn from(r: VersionRow) -> Self {
        Self {
            summary: r.summary.into(),
            prompt: r.prompt,
            model: r.model,
            tools: r.tools,
            policies: r.policies,
        }
    }
}

impl ActivationView {
    fn of(agent_id: String, a: Activation) -> Self {
        Self {
            agent_id,
            active_version_id: a.active_version_id,
            previous_version_id: a.previous_version_id,
        }
    }
}

/// A version of the agent, or 404.
async fn find_version(pool: &PgPool, agent_id: &str, version_id: &str) -> ApiResult<VersionRow> {
    match is_id("agv", version_id) {
        true => read::version(pool, agent_id, version_id).await?,
        false => None,
    }
    .ok_or_else(|| ApiError::not_found("version"))
}

/// Versions of an agent, in drafting order (without their brains; GET one for that).
#[utoipa::path(get, path = "/agents/{agentId}/versions", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path)),
    responses((status = 200, body = VersionList), (status = 404)))]
async fn list_versions(
    State(pool): State<PgPool>,
    me: Principal,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<VersionList>> {
    agent_scope(&pool, &me, &agent_id, Role::Viewer).await?;
    let rows = read::versions(&pool, &agent_id).await?;
    Ok(Json(VersionList {
        items: rows.into_iter().map(Into::into).collect(),
    }))
}

/// Drafts a new version (establishment admins). Brain only: prompt, model, tools, policies.
#[utoipa::path(post, path = "/agents/{agentId}/versions", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path)), request_body = CreateVersion,
    responses((status = 201, body = CreatedVersion), (status = 403), (status = 404),
              (status = 409, description = "too many versions"), (status = 422)))]
async fn create_version(
    State(pool): State<PgPool>,
    State(agents): State<Arc<Agents>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path(agent_id): Path<String>,
    ApiJson(req): ApiJson<CreateVersion>,
) -> ApiResult<(StatusCode, Json<CreatedVersion>)> {
    let agent = agent_scope(&pool, &me, &agent_id, Role::Admin).await?;
    let name = req.name.as_str().to_string();
    let brain = Brain {
        name: req.name,
        prompt: req.prompt,
        model: req.model,
        tools: req.tools,
        policies: req.policies,
    };
    let ctx = acting(&me, &request_id, &agent.establishment_id);
    let version_id = agents.draft(&ctx, &agent_id, brain).await?;
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
    State(pool): State<PgPool>,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
) -> ApiResult<Json<VersionView>> {
    agent_scope(&pool, &me, &agent_id, Role::Viewer).await?;
    Ok(Json(
        find_version(&pool, &agent_id, &version_id).await?.into(),
    ))
}

/// Edits a draft (establishment admins). Published and archived versions never change: 409.
#[utoipa::path(patch, path = "/agents/{agentId}/versions/{versionId}", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path), ("versionId" = String, Path)), request_body = EditVersion,
    responses((status = 200, body = VersionView), (status = 403), (status = 404),
              (status = 409, description = "the version is published or archived"), (status = 422)))]
async fn edit_version(
    State(pool): State<PgPool>,
    State(agents): State<Arc<Agents>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<EditVersion>,
) -> ApiResult<Json<VersionView>> {
    let agent = agent_scope(&pool, &me, &agent_id, Role::Admin).await?;
    let changes = BrainChanges {
        name: req.name,
        prompt: req.prompt,
        model: req.model,
        tools: req.tools,
        policies: req.policies,
    };
    let ctx = acting(&me, &request_id, &agent.establishment_id);
    let version = agents.edit(&ctx, &agent_id, &version_id, changes).await?;
    Ok(Json(version.into()))
}

/// Publishes a draft: it becomes the active version, and incoming calls use it. Publishing
/// the active version again changes nothing and answers the same.
#[utoipa::path(post, path = "/agents/{agentId}/versions/{versionId}/publish", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path), ("versionId" = String, Path)),
    responses((status = 200, body = ActivationView), (status = 403), (status = 404),
              (status = 409, description = "archived, or published before (roll back instead)")))]
async fn publish_version(
    State(pool): State<PgPool>,
    State(agents): State<Arc<Agents>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
) -> ApiResult<Json<ActivationView>> {
    let agent = agent_scope(&pool, &me, &agent_id, Role::Admin).await?;
    let ctx = acting(&me, &request_id, &agent.establishment_id);
    let activation = agents.publish(&ctx, &agent_id, &version_id).await?;
    Ok(Json(ActivationView::of(agent_id, activation)))
}

/// Makes a version that was published before active again (recorded as a new event).
#[utoipa::path(post, path = "/agents/{agentId}/versions/{versionId}/rollback", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path), ("versionId" = String, Path)),
    responses((status = 200, body = ActivationView), (status = 403), (status = 404),
              (status = 409, description = "never published, or archived")))]
async fn rollback_version(
    State(pool): State<PgPool>,
    State(agents): State<Arc<Agents>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
) -> ApiResult<Json<ActivationView>> {
    let agent = agent_scope(&pool, &me, &agent_id, Role::Admin).await?;
    let ctx = acting(&me, &request_id, &agent.establishment_id);
    let activation = agents.rollback(&ctx, &agent_id, &version_id).await?;
    Ok(Json(ActivationView::of(agent_id, activation)))
}

/// Archives a version that is not active (drafts and superseded versions).
#[utoipa::path(post, path = "/agents/{agentId}/versions/{versionId}/archive", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path), ("versionId" = String, Path)),
    responses((status = 200, body = VersionView), (status = 403), (status = 404),
              (status = 409, description = "the version is active")))]
async fn archive_version(
    State(pool): State<PgPool>,
    State(agents): State<Arc<Agents>>,
    ReqId(request_id): ReqId,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
) -> ApiResult<Json<VersionView>> {
    let agent = agent_scope(&pool, &me, &agent_id, Role::Admin).await?;
    let ctx = acting(&me, &request_id, &agent.establishment_id);
    let version = agents.archive(&ctx, &agent_id, &version_id).await?;
    Ok(Json(version.into()))
}

/// Field-level differences between two versions of an agent: what changes when going from
/// `against` (default: the active version) to this version.
#[utoipa::path(get, path = "/agents/{agentId}/versions/{versionId}/diff", tag = "agents", security(("bearer" = [])),
    params(("agentId" = String, Path), ("versionId" = String, Path), DiffQuery),
    responses((status = 200, body = VersionDiff), (status = 404),
              (status = 422, description = "no `against` and no active version")))]
async fn diff_versions(
    State(pool): State<PgPool>,
    me: Principal,
    Path((agent_id, version_id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> ApiResult<Json<VersionDiff>> {
    let agent = agent_scope(&pool, &me, &agent_id, Role::Viewer).await?;
    let Some(against) = q.against.or(agent.active_version_id) else {
        return Err(ApiError::validation(
            "against",
            "required: the agent has no active version to compare with",
        ));
    };
    let brain = |v: VersionRow| {
        v.brain()
            .map_err(|e| ApiError::internal(format!("stored version does not decode: {e}")))
    };
    let to = brain(find_version(&pool, &agent_id, &version_id).await?)?;
    let from = brain(find_version(&pool, &agent_id, &against).await?)?;
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
