//! Who and what caused a command: copied into the metadata of every event it appends.

use std::collections::HashMap;

/// The actor behind a command, recorded on every event for auditors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(String),
    Runtime(String),
    Twilio(String),
    System(String),
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::User(_) => "user",
            Actor::Runtime(_) => "runtime",
            Actor::Twilio(_) => "twilio",
            Actor::System(_) => "system",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Actor::User(id) | Actor::Runtime(id) | Actor::Twilio(id) | Actor::System(id) => id,
        }
    }
}

/// Metadata of a command: actor, correlation and causation ids, tenant and request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    pub actor: Actor,
    /// Shared by everything one user action or call set in motion.
    pub correlation_id: String,
    /// The request or event that directly caused this command.
    pub causation_id: String,
    pub establishment_id: Option<String>,
    pub request_id: Option<String>,
}

impl CommandContext {
    /// A command caused by an HTTP request: the request id correlates and causes it.
    pub fn from_request(actor: Actor, request_id: &str) -> Self {
        Self {
            actor,
            correlation_id: request_id.to_string(),
            causation_id: request_id.to_string(),
            establishment_id: None,
            request_id: Some(request_id.to_string()),
        }
    }

    /// A command a worker issues in reaction to a stored event.
    pub fn caused_by_event(worker: &str, correlation_id: Option<&str>, event_id: &str) -> Self {
        Self {
            actor: Actor::System(worker.to_string()),
            correlation_id: correlation_id.unwrap_or(event_id).to_string(),
            causation_id: event_id.to_string(),
            establishment_id: None,
            request_id: None,
        }
    }

    /// A command issued by the system itself (start-up, reapers).
    pub fn system(worker: &str) -> Self {
        let id = crate::ids::new_id("sys");
        Self {
            actor: Actor::System(worker.to_string()),
            correlation_id: id.clone(),
            causation_id: id,
            establishment_id: None,
            request_id: None,
        }
    }

    pub fn in_establishment(mut self, establishment_id: impl Into<String>) -> Self {
        self.establishment_id = Some(establishment_id.into());
        self
    }

    pub fn metadata(&self, idempotency_key: Option<&str>) -> HashMap<String, String> {
        let mut m = HashMap::with_capacity(7);
        m.insert("actor_type".into(), self.actor.kind().into());
        m.insert("actor_id".into(), self.actor.id().into());
        m.insert("correlation_id".into(), self.correlation_id.clone());
        m.insert("causation_id".into(), self.causation_id.clone());
        if let Some(e) = &self.establishment_id {
            m.insert("establishment_id".into(), e.clone());
        }
        if let Some(r) = &self.request_id {
            m.insert("request_id".into(), r.clone());
        }
        if let Some(k) = idempotency_key {
            m.insert("idempotency_key".into(), k.into());
        }
        m
    }
}
