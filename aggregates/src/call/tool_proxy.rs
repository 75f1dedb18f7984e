//! Tool-proxy invocations on a call's stream: the runtime asked the control plane to act
//! through one of the establishment's integrations (`ToolProxyRequested`), and what came of it
//! (`ToolProxySucceeded` / `ToolProxyFailed`). The pair (call, `tool_call_id`) is the
//! invocation's identity: the use case claims it as the append's idempotency key, so a retried
//! tool call adds nothing and is answered with the first outcome. Events name the integration
//! and the credential version used, never a credential.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Call, CallError, CallEvent};

/// Longest `tool_call_id` accepted.
pub const MAX_TOOL_CALL_ID_CHARS: usize = 128;

/// What the runtime asked the proxy to do, after the checks passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolProxyRequest {
    pub tool_call_id: String,
    /// The agent tool (`calendar`, `email`, `whatsapp_messaging`, `crm`).
    pub tool: String,
    /// The operation (`create_event`, `send`, `send_message`, `log_call`, …).
    pub operation: String,
    pub integration_id: String,
    /// Which credentials were used (a version number; the value stays sealed).
    pub credential_version: u32,
    pub arguments: Value,
    pub runtime_id: String,
    pub at: DateTime<Utc>,
}

/// What came of an invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolProxyOutcome {
    pub tool_call_id: String,
    /// The answer given to the runtime (`result` on success).
    pub result: Value,
    /// The contract error given to the runtime, on failure.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub error: Value,
    /// HTTP status of the provider's answer, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<u16>,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
}

impl ToolProxyOutcome {
    pub fn ok(&self) -> bool {
        self.error.is_null()
    }
}

/// Counters of tool-proxy invocations (never their payloads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolProxyProgress {
    pub requested: u32,
    pub succeeded: u32,
    pub failed: u32,
}

impl ToolProxyProgress {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl Call {
    pub(super) fn request_tool_proxy(
        &self,
        establishment_id: &str,
        request: ToolProxyRequest,
    ) -> Result<Vec<CallEvent>, CallError> {
        if self.establishment_id != establishment_id {
            return Err(CallError::EstablishmentMismatch);
        }
        Ok(vec![CallEvent::ToolProxyRequested { request }])
    }

    pub(super) fn record_tool_proxy(
        &self,
        outcome: ToolProxyOutcome,
    ) -> Result<Vec<CallEvent>, CallError> {
        Ok(vec![if outcome.ok() {
            CallEvent::ToolProxySucceeded { outcome }
        } else {
            CallEvent::ToolProxyFailed { outcome }
        }])
    }
}
