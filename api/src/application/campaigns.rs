//! Use cases of campaigns (prd §7.6, A.6): create (with its agent and pinned version
//! checked), start / pause / resume / cancel, the live view with counters, and the preview.
//! [`evaluate`] judges every lead of a campaign with the pure rules of
//! `aggregates::campaign::rules`; the dialer uses the very same function, so a preview is what
//! the dialer then does at that instant.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use aggregates::agent::Agent;
use aggregates::campaign::rules::{self, Attempt, AttemptOutcome, LeadFacts, Reason, Verdict};
use aggregates::campaign::{Campaign, CampaignCommand, CampaignError, CampaignSpec};
use aggregates::telephony::Telephony;
use chrono::{DateTime, Utc};
use projections::campaigns::{self, AttemptRow, CampaignRow};
use projections::leads::{self, LeadRow};
use serde::Serialize;
use sqlx::PgPool;

use super::{unexpected_from, Invalid, Unexpected};
use crate::store::{Actor, CommandBus, CommandContext, ExecError, ExecOptions};

#[derive(Debug, thiserror::Error)]
pub enum CampaignsError {
    #[error("not found")]
    NotFound,
    #[error("the agent does not exist in this establishment")]
    AgentNotFound,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Command(ExecError<CampaignError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}
unexpected_from!(CampaignsError);

/// A lifecycle action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Cancel,
}

/// One lead, judged.
#[derive(Debug, Clone)]
pub struct Judged {
    pub lead: LeadRow,
    pub verdict: Verdict,
    pub attempts: Vec<Attempt>,
}

/// A campaign's leads and calls at one instant.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub judged: Vec<Judged>,
    pub calls: Vec<AttemptRow>,
}

/// Counters of `GET /campaigns/{id}`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    pub leads_total: u64,
    pub eligible: u64,
    pub queued: u64,
    pub dialling: u64,
    pub in_progress: u64,
    pub answered_human: u64,
    pub answered_machine: u64,
    pub completed: u64,
    pub failed: u64,
    pub retry_scheduled: u64,
    pub calls_total: u64,
    pub excluded: BTreeMap<String, u64>,
}

/// `GET /campaigns/{id}/preview`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Preview {
    pub at: Option<DateTime<Utc>>,
    pub leads_total: u64,
    pub now: u64,
    pub later: u64,
    pub never: u64,
    pub later_reasons: BTreeMap<String, u64>,
    pub never_reasons: BTreeMap<String, u64>,
}

pub fn outcome_of(c: &AttemptRow) -> AttemptOutcome {
    AttemptOutcome::of_call(&c.status, c.answered_by.as_deref(), c.active)
}

/// Judges every lead of the campaign at `now`.
pub async fn evaluate(
    pool: &PgPool,
    bus: &CommandBus,
    row: &CampaignRow,
    spec: &CampaignSpec,
    now: DateTime<Utc>,
) -> Result<Evaluation, Unexpected> {
    let status = spec.lead_filter.status.map(|s| s.as_str());
    let leads = leads::for_campaign(pool, &row.establishment_id, status).await?;
    let calls = campaigns::attempts(pool, &row.id).await?;
    let (telephony, _) = bus.load::<Telephony>(&row.establishment_id).await?;
    let blacklist: HashSet<&str> = telephony
        .blacklist_e164
        .iter()
        .map(|n| n.as_str())
        .collect();
    let mut by_lead: HashMap<&str, Vec<Attempt>> = HashMap::new();
    for c in &calls {
        by_lead
            .entry(c.lead_id.as_str())
            .or_default()
            .push(Attempt {
                number: c.attempt.max(1) as u32,
                outcome: outcome_of(c),
                dialled_at: c.started_at,
            });
    }
    let judged = leads
        .into_iter()
        .filter_map(|lead| {
            let phone = lead.phone_e164.parse().ok()?;
            let attempts = by_lead.remove(lead.id.as_str()).unwrap_or_default();
            let facts = LeadFacts {
                phone,
                timezone: lead.timezone.clone(),
                do_not_call: lead.do_not_call || blacklist.contains(lead.phone_e164.as_str()),
            };
            let verdict = rules::verdict(spec, &facts, &attempts, now);
            Some(Judged {
                lead,
                verdict,
                attempts,
            })
        })
        .collect();
    Ok(Evaluation { judged, calls })
}

impl Evaluation {
    pub fn preview(&self, now: DateTime<Utc>) -> Preview {
        let mut p = Preview {
            at: Some(now),
            leads_total: self.judged.len() as u64,
            ..Preview::default()
        };
        for j in &self.judged {
            match &j.verdict {
                Verdict::Now { .. } => p.now += 1,
                Verdict::Later { reason, .. } => {
                    p.later += 1;
                    *p.later_reasons.entry(reason.as_str().into()).or_default() += 1;
                }
                Verdict::Never { reason } => {
                    p.never += 1;
                    *p.never_reasons.entry(reason.as_str().into()).or_default() += 1;
                }
            }
        }
        p
    }

    pub fn counters(&self) -> Counters {
        let mut c = Counters {
            leads_total: self.judged.len() as u64,
            calls_total: self.calls.len() as u64,
            ..Counters::default()
        };
        for call in &self.calls {
            match call.status.as_str() {
                "queued" if call.active => c.queued += 1,
                "ringing" if call.active => c.dialling += 1,
                _ if call.active => c.in_progress += 1,
                _ => {}
            }
            match outcome_of(call) {
                AttemptOutcome::Human => c.answered_human += 1,
                AttemptOutcome::Machine => c.answered_machine += 1,
                AttemptOutcome::Failed => c.failed += 1,
                _ => {}
            }
        }
        for j in &self.judged {
            match &j.verdict {
                Verdict::Now { .. } => c.eligible += 1,
                Verdict::Later {
                    reason: Reason::RetryScheduled,
                    ..
                } => c.retry_scheduled += 1,
                Verdict::Later {
                    reason: Reason::InFlight,
                    ..
                } => {}
                Verdict::Never {
                    reason: Reason::Completed,
                } => c.completed += 1,
                Verdict::Later { reason, .. } | Verdict::Never { reason } => {
                    *c.excluded.entry(reason.as_str().into()).or_default() += 1
                }
            }
        }
        c
    }
}

pub fn spec_of(row: &CampaignRow) -> Result<CampaignSpec, Unexpected> {
    serde_json::from_value(row.spec.clone()).map_err(|e| Unexpected::Other(e.to_string()))
}

pub struct Campaigns {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
}

impl Campaigns {
    pub async fn create(
        &self,
        user_id: &str,
        request_id: &str,
        establishment_id: &str,
        spec: CampaignSpec,
    ) -> Result<String, CampaignsError> {
        let (agent, _) = self.bus.load::<Agent>(&spec.agent_id).await?;
        if agent.id.is_empty() || agent.establishment_id != establishment_id {
            return Err(CampaignsError::AgentNotFound);
        }
        if !agent.versions.contains_key(&spec.agent_version_id) {
            return Err(Invalid::new("agent_version_id", "is not a version of this agent").into());
        }
        spec.validate().map_err(Invalid::from)?;
        let id = crate::ids::new_id("cmp");
        let ctx = CommandContext::from_request(Actor::User(user_id.into()), request_id)
            .in_establishment(establishment_id);
        let outcome = self
            .bus
            .execute::<Campaign>(
                &id,
                CampaignCommand::Create {
                    campaign_id: id.clone(),
                    establishment_id: establishment_id.into(),
                    spec: Box::new(spec),
                    by: user_id.into(),
                    at: Utc::now(),
                },
                &ctx,
                ExecOptions::default().fresh(),
            )
            .await
            .map_err(CampaignsError::Command)?;
        self.bus.visible(&outcome).await;
        Ok(id)
    }

    pub async fn get(&self, id: &str) -> Result<Option<CampaignRow>, CampaignsError> {
        Ok(campaigns::by_id(&self.pool, id).await?)
    }

    pub async fn list(&self, establishment_id: &str) -> Result<Vec<CampaignRow>, CampaignsError> {
        Ok(campaigns::of_establishment(&self.pool, establishment_id).await?)
    }

    pub async fn act(
        &self,
        user_id: &str,
        request_id: &str,
        row: &CampaignRow,
        action: Action,
    ) -> Result<CampaignRow, CampaignsError> {
        let by = user_id.to_string();
        let at = Utc::now();
        let command = match action {
            Action::Start => CampaignCommand::Start { by, at },
            Action::Pause => CampaignCommand::Pause {
                reason: "paused by a user".into(),
                by,
                at,
            },
            Action::Resume => CampaignCommand::Resume { by, at },
            Action::Cancel => CampaignCommand::Cancel { by, at },
        };
        let ctx = CommandContext::from_request(Actor::User(user_id.into()), request_id)
            .in_establishment(&row.establishment_id);
        let outcome = self
            .bus
            .execute::<Campaign>(&row.id, command, &ctx, ExecOptions::default())
            .await
            .map_err(CampaignsError::Command)?;
        self.bus.visible(&outcome).await;
        self.get(&row.id).await?.ok_or(CampaignsError::NotFound)
    }

    /// The campaign's leads judged at `now`.
    pub async fn evaluation(
        &self,
        row: &CampaignRow,
        now: DateTime<Utc>,
    ) -> Result<Evaluation, CampaignsError> {
        let spec = spec_of(row)?;
        Ok(evaluate(&self.pool, &self.bus, row, &spec, now).await?)
    }
}
