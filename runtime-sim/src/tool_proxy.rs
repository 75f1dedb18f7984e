//! A tool call made through the control plane's tool proxy (`POST /tool-proxy/…`) instead of
//! the script's local tool, when `POST /sim/calls` asks for it (`tool_proxy`): the agent books,
//! mails or messages through the establishment's integrations without ever holding a
//! credential. `attempts` > 1 sends the same tool call that many times at once, as a runtime
//! retrying on a flaky network would; the control plane answers every attempt with the one
//! result.

use std::time::Duration;

use hyper::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::state::SimState;

/// What to call, from `POST /sim/calls`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyPlan {
    /// `calendar/create_event`, `email/send`, `whatsapp/send_message`, `crm/log_call`, …
    pub operation: String,
    /// Default: `tc_<CallSid>`.
    pub tool_call_id: Option<String>,
    pub arguments: Value,
    /// Identical requests sent at once (1 to 5, default 1).
    pub attempts: Option<u8>,
}

impl ProxyPlan {
    pub fn valid(&self) -> Result<(), String> {
        let ok = !self.operation.is_empty()
            && self.operation.len() <= 64
            && self
                .operation
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '/');
        if !ok {
            return Err("tool_proxy.operation must look like calendar/create_event".into());
        }
        if !(1..=5).contains(&self.attempts.unwrap_or(1)) {
            return Err("tool_proxy.attempts must be 1 to 5".into());
        }
        Ok(())
    }
}

/// Calls the proxy; answers (result, error) as the runtime reports them in `tool_result`.
/// A 404 right after the call started is retried briefly: the control plane learns of the
/// call from this runtime's `call_started`, which the outbox may not have delivered yet.
pub async fn call(state: &SimState, call_sid: &str, plan: &ProxyPlan) -> (Value, Value) {
    let body = json!({
        "provider_call_sid": call_sid,
        "tool_call_id": plan.tool_call_id.clone().unwrap_or_else(|| format!("tc_{call_sid}")),
        "arguments": plan.arguments,
    })
    .to_string()
    .into_bytes();
    let path = format!("/tool-proxy/{}", plan.operation);
    for attempt in 0..20 {
        let mut sends = tokio::task::JoinSet::new();
        for _ in 0..plan.attempts.unwrap_or(1) {
            let (client, path, body) = (state.client.clone(), path.clone(), body.clone());
            sends.spawn(async move { client.request(Method::POST, &path, Some(body)).await });
        }
        let mut answers = Vec::new();
        while let Some(a) = sends.join_next().await {
            answers.push(a.unwrap_or_else(|e| Err(e.to_string())));
        }
        // Every attempt got the same answer; report the first that succeeded, else the first.
        let ok = answers
            .iter()
            .position(|a| a.as_ref().is_ok_and(|r| (200..300).contains(&r.status)));
        let first = answers.swap_remove(ok.unwrap_or(0));
        match first {
            Ok(r) if r.status == 404 && attempt < 19 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(r) if (200..300).contains(&r.status) => {
                return (
                    r.body.get("result").cloned().unwrap_or(Value::Null),
                    Value::Null,
                )
            }
            Ok(r) => return (Value::Null, r.body.get("error").cloned().unwrap_or(r.body)),
            Err(e) => return (Value::Null, json!({"code": "transport", "message": e})),
        }
    }
    (Value::Null, json!({"code": "call_not_found"}))
}
