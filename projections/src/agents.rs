//! Read models of agents and their versions (`rm_agents`, `rm_agent_versions`).

use aggregates::agent::{AgentEvent, BrainChanges};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::PgConnection;

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
