//! Read models of agents and their versions (`rm_agents`, `rm_agent_versions`).

use aggregates::agent::{AgentEvent, Brain, BrainChanges};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};

use crate::event::StoredEvent;
use crate::runner::Projection;

pub struct AgentsProjection;

#[async_trait]
impl Projection for AgentsProjection {
    fn name(&self) -> &'static str {
        "agents"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Agent"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_agents", "rm_agent_versions"]
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for e in events {
            apply_event(tx, e).await?;
        }
        Ok(())
    }
}

async fn apply_event(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let id = &e.aggregate_id;
    let at = e.recorded_at;
    match e.decode::<AgentEvent>()? {
        AgentEvent::AgentCreated {
            establishment_id,
            name,
            description,
            created_by,
            ..
        } => {
            sqlx::query(
                "INSERT INTO rm_agents (id, establishment_id, name, description, created_by, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(id)
            .bind(establishment_id)
            .bind(name)
            .bind(description)
            .bind(created_by)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        AgentEvent::AgentUpdated { name, description } => {
            sqlx::query(
                "UPDATE rm_agents SET name = COALESCE($2, name),
                    description = COALESCE($3, description), updated_at = $4
                 WHERE id = $1",
            )
            .bind(id)
            .bind(name)
            .bind(description)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        AgentEvent::VersionDrafted {
            version_id,
            number,
            brain,
            created_by,
        } => {
            sqlx::query(
                "INSERT INTO rm_agent_versions (id, agent_id, establishment_id, number, name, status,
                    prompt, model, tools, policies, created_by, created_at, updated_at)
                 SELECT $1, $2, a.establishment_id, $3, $4, 'draft', $5, $6, $7, $8, $9, $10, $10
                 FROM rm_agents a WHERE a.id = $2",
            )
            .bind(&version_id)
            .bind(id)
            .bind(number as i32)
            .bind(brain.name.as_str())
            .bind(brain.prompt.as_str())
            .bind(serde_json::to_value(&brain.model)?)
            .bind(serde_json::to_value(&brain.tools)?)
            .bind(Value::from(brain.policies))
            .bind(created_by)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        AgentEvent::DraftEdited {
            version_id,
            changes:
                BrainChanges {
                    name,
                    prompt,
                    model,
                    tools,
                    policies,
                },
        } => {
            sqlx::query(
                "UPDATE rm_agent_versions SET name = COALESCE($2, name), prompt = COALESCE($3, prompt),
                    model = COALESCE($4, model), tools = COALESCE($5, tools),
                    policies = COALESCE($6, policies), updated_at = $7
                 WHERE id = $1",
            )
            .bind(&version_id)
            .bind(name.as_ref().map(|n| n.as_str()))
            .bind(prompt.as_ref().map(|p| p.as_str()))
            .bind(model.map(serde_json::to_value).transpose()?)
            .bind(tools.map(serde_json::to_value).transpose()?)
            .bind(policies.map(Value::from))
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        AgentEvent::VersionPublished { version_id, .. }
        | AgentEvent::VersionRolledBack { version_id, .. } => {
            sqlx::query(
                "UPDATE rm_agent_versions SET status = 'published', ever_published = true,
                    published_at = COALESCE(published_at, $2), activated_at = $2, updated_at = $2
                 WHERE id = $1",
            )
            .bind(&version_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE rm_agents SET active_version_id = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(&version_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        AgentEvent::VersionArchived { version_id } => {
            sqlx::query(
                "UPDATE rm_agent_versions SET status = 'archived', updated_at = $2 WHERE id = $1",
            )
            .bind(&version_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads of `rm_agents` and `rm_agent_versions`
// ---------------------------------------------------------------------------------------------

/// An agent as the API shows it.
#[derive(Debug, Clone, FromRow)]
pub struct AgentRow {
    pub id: String,
    pub establishment_id: String,
    pub name: String,
    pub description: String,
    /// The published version calls are routed to.
    pub active_version_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

const AGENT_COLUMNS: &str =
    "id, establishment_id, name, description, active_version_id, created_at";

pub async fn agent(pool: &PgPool, agent_id: &str) -> sqlx::Result<Option<AgentRow>> {
    sqlx::query_as(&format!(
        "SELECT {AGENT_COLUMNS} FROM rm_agents WHERE id = $1"
    ))
    .bind(agent_id)
    .fetch_optional(pool)
    .await
}

/// Agents of an establishment, oldest first.
pub async fn agents_of(pool: &PgPool, establishment_id: &str) -> sqlx::Result<Vec<AgentRow>> {
    sqlx::query_as(&format!(
        "SELECT {AGENT_COLUMNS} FROM rm_agents WHERE establishment_id = $1 ORDER BY created_at, id"
    ))
    .bind(establishment_id)
    .fetch_all(pool)
    .await
}

/// Which of `agent_ids` are agents of the establishment.
pub async fn agents_among(
    pool: &PgPool,
    establishment_id: &str,
    agent_ids: &[&str],
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT id FROM rm_agents WHERE id = ANY($1) AND establishment_id = $2")
        .bind(agent_ids)
        .bind(establishment_id)
        .fetch_all(pool)
        .await
}

/// A version without its brain (as listed).
#[derive(Debug, Clone, FromRow)]
pub struct VersionSummaryRow {
    pub id: String,
    pub agent_id: String,
    /// 1, 2, 3… in drafting order.
    pub number: i32,
    pub name: String,
    /// `draft`, `published` or `archived`.
    pub status: String,
    /// Whether it is the agent's active version.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
}

/// A version with its brain.
#[derive(Debug, Clone, FromRow)]
pub struct VersionRow {
    #[sqlx(flatten)]
    pub summary: VersionSummaryRow,
    pub prompt: String,
    pub model: Value,
    pub tools: Value,
    pub policies: Value,
}

impl VersionRow {
    /// The stored brain as the domain type (to compare versions).
    pub fn brain(&self) -> Result<Brain, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "name": self.summary.name,
            "prompt": self.prompt,
            "model": self.model,
            "tools": self.tools,
            "policies": self.policies,
        }))
    }
}

const VERSION_COLUMNS: &str = "v.id, v.agent_id, v.number, v.name, v.status, v.created_at, \
    v.updated_at, v.published_at, (a.active_version_id IS NOT DISTINCT FROM v.id) AS active";

/// Versions of an agent, in drafting order.
pub async fn versions(pool: &PgPool, agent_id: &str) -> sqlx::Result<Vec<VersionSummaryRow>> {
    sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM rm_agent_versions v JOIN rm_agents a ON a.id = v.agent_id
         WHERE v.agent_id = $1 ORDER BY v.number"
    ))
    .bind(agent_id)
    .fetch_all(pool)
    .await
}

/// One version of an agent, with its brain.
pub async fn version(
    pool: &PgPool,
    agent_id: &str,
    version_id: &str,
) -> sqlx::Result<Option<VersionRow>> {
    sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS}, v.prompt, v.model, v.tools, v.policies
         FROM rm_agent_versions v JOIN rm_agents a ON a.id = v.agent_id
         WHERE v.id = $1 AND v.agent_id = $2"
    ))
    .bind(version_id)
    .bind(agent_id)
    .fetch_optional(pool)
    .await
}
