//! Use cases of agents and their versioned brains: creating and changing an agent; drafting,
//! editing, publishing, rolling back and archiving versions. The Agent aggregate holds the
//! rules (published versions never change, only a version published before can be rolled back
//! to, the active version cannot be archived); each write answers what the UI shows next, read
//! back once the projectors caught up.

use std::sync::Arc;

use aggregates::agent::{Agent, AgentCommand, AgentError, Brain, BrainChanges};
use projections::agents::{self, AgentRow, VersionRow};
use sqlx::PgPool;

use super::{unexpected_from, Unexpected};
use crate::ids::is_id;
use crate::store::{CommandBus, CommandContext, ExecError, ExecOptions, Outcome};

/// The agent's versions after a publish or a rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub active_version_id: String,
    /// The version that was active before (`None` after the first publish).
    pub previous_version_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    #[error("agent not found")]
    AgentNotFound,
    #[error("version not found")]
    VersionNotFound,
    #[error(transparent)]
    Command(#[from] ExecError<AgentError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

unexpected_from!(AgentsError);

/// The agent use cases. `ctx` names the acting user and the agent's establishment (the caller
/// checked the user may change agents there).
pub struct Agents {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
}

impl Agents {
    /// Creates an agent; it has no active version until one is published.
    pub async fn create(
        &self,
        ctx: &CommandContext,
        establishment_id: &str,
        name: String,
        description: String,
    ) -> Result<AgentRow, AgentsError> {
        let id = crate::ids::new_id("agt");
        self.execute(
            ctx,
            &id,
            AgentCommand::Create {
                agent_id: id.clone(),
                establishment_id: establishment_id.to_string(),
                name,
                description,
                created_by: ctx.actor.id().to_string(),
            },
        )
        .await?;
        self.agent(&id).await
    }

    /// Renames an agent or changes its description (`None`: keep).
    pub async fn update(
        &self,
        ctx: &CommandContext,
        agent_id: &str,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<AgentRow, AgentsError> {
        self.execute(ctx, agent_id, AgentCommand::Update { name, description })
            .await?;
        self.agent(agent_id).await
    }

    /// Drafts a new version; answers its id.
    pub async fn draft(
        &self,
        ctx: &CommandContext,
        agent_id: &str,
        brain: Brain,
    ) -> Result<String, AgentsError> {
        let version_id = crate::ids::new_id("agv");
        self.execute(
            ctx,
            agent_id,
            AgentCommand::DraftVersion {
                version_id: version_id.clone(),
                brain,
                created_by: ctx.actor.id().to_string(),
            },
        )
        .await?;
        Ok(version_id)
    }

    /// Changes a draft.
    pub async fn edit(
        &self,
        ctx: &CommandContext,
        agent_id: &str,
        version_id: &str,
        changes: BrainChanges,
    ) -> Result<VersionRow, AgentsError> {
        let command = AgentCommand::EditDraft {
            version_id: version_id.to_string(),
            changes,
        };
        self.execute(ctx, agent_id, command).await?;
        self.version(agent_id, version_id).await
    }

    /// Makes a draft the active version (publishing the active version again changes nothing).
    pub async fn publish(
        &self,
        ctx: &CommandContext,
        agent_id: &str,
        version_id: &str,
    ) -> Result<Activation, AgentsError> {
        let command = AgentCommand::Publish {
            version_id: version_id.to_string(),
        };
        activation(&self.execute(ctx, agent_id, command).await?)
    }

    /// Makes a version published before active again.
    pub async fn rollback(
        &self,
        ctx: &CommandContext,
        agent_id: &str,
        version_id: &str,
    ) -> Result<Activation, AgentsError> {
        let command = AgentCommand::Rollback {
            version_id: version_id.to_string(),
        };
        activation(&self.execute(ctx, agent_id, command).await?)
    }

    /// Archives a version that is not active.
    pub async fn archive(
        &self,
        ctx: &CommandContext,
        agent_id: &str,
        version_id: &str,
    ) -> Result<VersionRow, AgentsError> {
        let command = AgentCommand::Archive {
            version_id: version_id.to_string(),
        };
        self.execute(ctx, agent_id, command).await?;
        self.version(agent_id, version_id).await
    }

    /// Runs a command on the agent and waits until the read models show it.
    async fn execute(
        &self,
        ctx: &CommandContext,
        agent_id: &str,
        command: AgentCommand,
    ) -> Result<Outcome<Agent>, AgentsError> {
        let outcome = self
            .bus
            .execute::<Agent>(agent_id, command, ctx, ExecOptions::default())
            .await?;
        self.bus.visible(&outcome).await;
        Ok(outcome)
    }

    async fn agent(&self, agent_id: &str) -> Result<AgentRow, AgentsError> {
        if !is_id("agt", agent_id) {
            return Err(AgentsError::AgentNotFound);
        }
        agents::agent(&self.pool, agent_id)
            .await?
            .ok_or(AgentsError::AgentNotFound)
    }

    async fn version(&self, agent_id: &str, version_id: &str) -> Result<VersionRow, AgentsError> {
        if !is_id("agv", version_id) {
            return Err(AgentsError::VersionNotFound);
        }
        agents::version(&self.pool, agent_id, version_id)
            .await?
            .ok_or(AgentsError::VersionNotFound)
    }
}

/// The active and previous versions after an activation.
fn activation(outcome: &Outcome<Agent>) -> Result<Activation, AgentsError> {
    let state = outcome
        .state()
        .ok_or_else(|| Unexpected::Other("no agent state after activation".into()))?;
    Ok(Activation {
        active_version_id: state
            .active_version_id
            .clone()
            .ok_or_else(|| Unexpected::Other("no active version after activation".into()))?,
        previous_version_id: state.previous_version_id.clone(),
    })
}
