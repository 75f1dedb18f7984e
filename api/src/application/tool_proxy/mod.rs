//! Use case: the tool proxy (prd §7.8, §9.4, D.8). A runtime asks the control plane to act
//! for one of its calls through one of the establishment's integrations; the runtime never
//! sees a credential.
//!
//! Checked in order, each with its own answer: the runtime's establishment owns the call
//! (else `CallNotFound`, 404); the call's agent version enables the tool (else
//! `ToolNotEnabled`, 403); the establishment has that integration connected and enabled (else
//! `IntegrationUnavailable`, 403); the arguments are valid for the operation (422).
//!
//! **Exactly once per tool call.** `ToolProxyRequested` is appended to the call's stream with
//! the idempotency key `tool-proxy:{call}:{tool_call_id}`, claimed in the append's
//! transaction: only the caller that claims it calls the provider. A retry in the same
//! process waits for the first caller's answer (a map of in-flight invocations); a retry in
//! another process, or after the first finished, is answered from the recorded outcome
//! (`ToolProxySucceeded`/`ToolProxyFailed`, read back with a bounded wait). The provider call
//! runs in its own task, so a runtime that hangs up mid-call cannot leave it half recorded.
//! Calendar bookings are idempotent at Google too (the event id derives from call and tool
//! call).

pub mod args;
mod perform;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::agent::Tool;
use aggregates::call::{
    Call, CallCommand, CallError, CallSid, ToolProxyOutcome, ToolProxyRequest, CALL_SID_CLAIM,
    MAX_TOOL_CALL_ID_CHARS,
};
use aggregates::integration::{
    claim_value, Integration, IntegrationType, Unusable, INTEGRATION_CLAIM,
};
use chrono::Utc;
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::watch;

use super::ingestion::RuntimeIdentity;
use super::integration_access::IntegrationAccess;
use super::Invalid;
use crate::adapters::integrations::crm::CrmWebhooks;
use crate::adapters::integrations::email::EmailSender;
use crate::adapters::integrations::google::CalendarApi;
use crate::adapters::integrations::whatsapp::WhatsappApi;
use crate::store::{
    Actor, CommandBus, CommandContext, ExecError, ExecOptions, IdempotencyClaim, Outcome,
};

/// An operation of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    EmailSend,
    CalendarCreateEvent,
    WhatsappSendMessage,
    Crm(String),
}

impl Operation {
    pub fn tool(&self) -> Tool {
        match self {
            Operation::EmailSend => Tool::Email,
            Operation::CalendarCreateEvent => Tool::Calendar,
            Operation::WhatsappSendMessage => Tool::WhatsappMessaging,
            Operation::Crm(_) => Tool::Crm,
        }
    }

    pub fn integration_type(&self) -> IntegrationType {
        match self {
            Operation::EmailSend => IntegrationType::Email,
            Operation::CalendarCreateEvent => IntegrationType::GoogleCalendar,
            Operation::WhatsappSendMessage => IntegrationType::Whatsapp,
            Operation::Crm(_) => IntegrationType::CrmWebhook,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Operation::EmailSend => "send",
            Operation::CalendarCreateEvent => "create_event",
            Operation::WhatsappSendMessage => "send_message",
            Operation::Crm(op) => op,
        }
    }
}

/// A tool-proxy request, as the runtime sent it.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    pub provider_call_sid: String,
    pub tool_call_id: String,
    pub arguments: Value,
}

/// A successful invocation's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyAnswer {
    pub result: Value,
    /// Answered from the record of an earlier attempt (the provider was not called again).
    pub replayed: bool,
}

/// A failure that is the invocation's recorded outcome (repeated to every retry): an HTTP
/// status, a contract code and message, and details (`provider_error`).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub details: Value,
}

impl Failure {
    fn to_json(&self) -> Value {
        json!({"status": self.status, "code": self.code, "message": self.message, "details": self.details})
    }

    fn from_json(v: &Value) -> Self {
        Failure {
            status: v["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(502),
            code: v["code"].as_str().unwrap_or("provider_error").to_string(),
            message: v["message"]
                .as_str()
                .unwrap_or("the tool call failed")
                .to_string(),
            details: v.get("details").cloned().unwrap_or(json!({})),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("call not found")]
    CallNotFound,
    #[error("the agent version of this call does not enable the {0} tool")]
    ToolNotEnabled(Tool),
    #[error("the establishment's {0} integration cannot be used ({1:?})")]
    IntegrationUnavailable(IntegrationType, Unusable),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("tool_call_id was already used with other arguments")]
    ToolCallIdReused,
    #[error("an earlier attempt of this tool call is still running; retry later")]
    InProgress,
    #[error("{}", .0.message)]
    Failed(Failure),
    #[error("{0}")]
    Unexpected(String),
}

type Finished = Result<ProxyAnswer, ProxyError>;

pub struct ToolProxy {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
    pub access: Arc<IntegrationAccess>,
    pub calendar: Arc<dyn CalendarApi>,
    pub whatsapp: Arc<dyn WhatsappApi>,
    pub email: Arc<dyn EmailSender>,
    pub crm: Arc<dyn CrmWebhooks>,
    /// How long a retry waits for the first attempt's outcome.
    pub wait_for_first: Duration,
    pub inflight: Mutex<HashMap<String, watch::Receiver<Option<Finished>>>>,
}

fn unexpected(e: impl std::fmt::Display) -> ProxyError {
    ProxyError::Unexpected(e.to_string())
}

/// What the checks found: the call, the integration, the validated request.
struct Checked {
    call_id: String,
    call: Call,
    integration: Integration,
    request: ToolProxyRequest,
}

impl ToolProxy {
    pub async fn invoke(
        self: &Arc<Self>,
        runtime: &RuntimeIdentity,
        request_id: &str,
        op: Operation,
        req: ProxyRequest,
    ) -> Finished {
        let checked = self.check(runtime, &op, req).await?;
        let key = format!(
            "tool-proxy:{}:{}",
            checked.call_id, checked.request.tool_call_id
        );
        let (tx, waiting) = {
            let mut map = self.inflight.lock();
            match map.get(&key) {
                Some(rx) => (None, Some(rx.clone())),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key.clone(), rx);
                    (Some(tx), None)
                }
            }
        };
        if let Some(mut rx) = waiting {
            metrics::counter!("tool_proxy_retries_total", "how" => "joined").increment(1);
            let done = rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| ProxyError::InProgress)?
                .clone()
                .expect("waited for Some");
            return done.map(|a| ProxyAnswer {
                replayed: true,
                ..a
            });
        }
        let tx = tx.expect("leader");
        let this = self.clone();
        let ctx =
            CommandContext::from_request(Actor::Runtime(runtime.runtime_id.clone()), request_id)
                .in_establishment(&runtime.establishment_id);
        let task = tokio::spawn(async move {
            // Leaves the in-flight map however the attempt ends (a panic included).
            struct Leave<'a>(&'a ToolProxy, &'a str);
            impl Drop for Leave<'_> {
                fn drop(&mut self) {
                    self.0.inflight.lock().remove(self.1);
                }
            }
            let _leave = Leave(&this, &key);
            let done = this.lead(&ctx, &key, op, checked).await;
            let _ = tx.send(Some(done.clone()));
            done
        });
        task.await.map_err(unexpected)?
    }

    async fn check(
        &self,
        runtime: &RuntimeIdentity,
        op: &Operation,
        req: ProxyRequest,
    ) -> Result<Checked, ProxyError> {
        let tcid = req.tool_call_id.trim();
        if tcid.is_empty()
            || tcid.chars().count() > MAX_TOOL_CALL_ID_CHARS
            || tcid.chars().any(|c| c.is_control() || c == ':')
        {
            return Err(Invalid::new(
                "tool_call_id",
                format!("must be 1 to {MAX_TOOL_CALL_ID_CHARS} printable characters without ':'"),
            )
            .into());
        }
        let sid: CallSid =
            req.provider_call_sid
                .parse()
                .map_err(|e: aggregates::common::ParseError| {
                    Invalid::new("provider_call_sid", e.message)
                })?;
        // 1. The runtime's establishment owns the call.
        let store = self.bus.store();
        let call_id = store
            .claim_owner(CALL_SID_CLAIM, sid.as_str())
            .await
            .map_err(unexpected)?
            .ok_or(ProxyError::CallNotFound)?;
        let (call, _) = self.bus.load::<Call>(&call_id).await.map_err(unexpected)?;
        if !call.exists() || call.establishment_id != runtime.establishment_id {
            return Err(ProxyError::CallNotFound);
        }
        // 2. The call's agent version enables the tool.
        let tool = op.tool();
        let enabled = match (&call.agent_id, &call.agent_version_id) {
            (Some(agent), Some(version)) => {
                projections::agents::version(&self.pool, agent, version)
                    .await
                    .map_err(unexpected)?
                    .is_some_and(|v| v.tools[tool.as_str()]["enabled"] == json!(true))
            }
            _ => false,
        };
        if !enabled {
            return Err(ProxyError::ToolNotEnabled(tool));
        }
        // 3. The establishment has that integration connected and enabled.
        let t = op.integration_type();
        let integration_id = store
            .claim_owner(
                INTEGRATION_CLAIM,
                &claim_value(&runtime.establishment_id, t),
            )
            .await
            .map_err(unexpected)?
            .ok_or(ProxyError::IntegrationUnavailable(t, Unusable::Revoked))?;
        let (integration, _) = self
            .bus
            .load::<Integration>(&integration_id)
            .await
            .map_err(unexpected)?;
        let credential = integration
            .usable()
            .map_err(|u| ProxyError::IntegrationUnavailable(t, u))?;
        // 4. The arguments.
        perform::validate(op, &req.arguments)?;
        Ok(Checked {
            request: ToolProxyRequest {
                tool_call_id: tcid.to_string(),
                tool: tool.as_str().to_string(),
                operation: op.name().to_string(),
                integration_id,
                credential_version: credential.version,
                arguments: req.arguments,
                runtime_id: runtime.runtime_id.clone(),
                at: Utc::now(),
            },
            call_id,
            call,
            integration,
        })
    }

    /// Claims the invocation; the claimant calls the provider and records the outcome, anyone
    /// else is answered from the record.
    async fn lead(
        &self,
        ctx: &CommandContext,
        key: &str,
        op: Operation,
        checked: Checked,
    ) -> Finished {
        let request_hash = {
            let mut h = Sha256::new();
            h.update(checked.request.tool.as_bytes());
            h.update([0]);
            h.update(checked.request.operation.as_bytes());
            h.update([0]);
            h.update(checked.request.arguments.to_string().as_bytes());
            hex::encode(h.finalize())
        };
        let mut ctx = ctx.clone();
        ctx.correlation_id = checked.call_id.clone();
        let requested = self
            .bus
            .execute::<Call>(
                &checked.call_id,
                CallCommand::RequestToolProxy {
                    establishment_id: checked.call.establishment_id.clone(),
                    request: checked.request.clone(),
                },
                &ctx,
                ExecOptions::idempotent(IdempotencyClaim {
                    key: key.to_string(),
                    request_hash,
                    response: Value::Null,
                }),
            )
            .await;
        match requested {
            Ok(Outcome::Duplicate(_)) => {
                metrics::counter!("tool_proxy_retries_total", "how" => "recorded").increment(1);
                return self
                    .recorded(&checked.call_id, &checked.request.tool_call_id)
                    .await;
            }
            Ok(_) => {}
            Err(ExecError::IdempotencyMismatch(_)) => return Err(ProxyError::ToolCallIdReused),
            Err(ExecError::Domain(CallError::EstablishmentMismatch | CallError::NotFound)) => {
                return Err(ProxyError::CallNotFound)
            }
            Err(e) => return Err(unexpected(e)),
        }
        let started = Instant::now();
        let (result, provider_status) = match perform::perform(self, &op, &checked).await {
            Ok((r, s)) => (Ok(r), s),
            Err((f, s)) => (Err(f), s),
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        metrics::histogram!("tool_proxy_provider_seconds", "tool" => checked.request.tool.clone())
            .record(started.elapsed().as_secs_f64());
        let outcome = ToolProxyOutcome {
            tool_call_id: checked.request.tool_call_id.clone(),
            result: result.clone().unwrap_or(Value::Null),
            error: result
                .as_ref()
                .err()
                .map(Failure::to_json)
                .unwrap_or(Value::Null),
            provider_status,
            latency_ms,
            at: Utc::now(),
        };
        self.bus
            .execute::<Call>(
                &checked.call_id,
                CallCommand::RecordToolProxyOutcome { outcome },
                &ctx,
                ExecOptions::idempotent(IdempotencyClaim::keyed(format!("{key}:outcome"))),
            )
            .await
            .map_err(unexpected)?;
        tracing::info!(call_id = %checked.call_id, tool_call_id = %checked.request.tool_call_id,
            tool = %checked.request.tool, operation = %checked.request.operation,
            integration_id = %checked.request.integration_id,
            credential_version = checked.request.credential_version,
            ok = result.is_ok(), provider_status, latency_ms, "tool proxy invocation");
        result
            .map(|result| ProxyAnswer {
                result,
                replayed: false,
            })
            .map_err(ProxyError::Failed)
    }

    /// The recorded outcome of an invocation someone else claimed (bounded wait).
    async fn recorded(&self, call_id: &str, tool_call_id: &str) -> Finished {
        let deadline = Instant::now() + self.wait_for_first;
        loop {
            if let Some(row) =
                projections::calls::queries::proxy_outcome(&self.pool, call_id, tool_call_id)
                    .await
                    .map_err(unexpected)?
            {
                return match row.error.filter(|e| !e.is_null()) {
                    Some(e) => Err(ProxyError::Failed(Failure::from_json(&e))),
                    None => Ok(ProxyAnswer {
                        result: row.result.unwrap_or(Value::Null),
                        replayed: true,
                    }),
                };
            }
            if Instant::now() >= deadline {
                return Err(ProxyError::InProgress);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
