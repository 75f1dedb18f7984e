//! Agent aggregate: an AI agent of an establishment and its versioned "brains" (prompt, model
//! parameters, tool flags, policies; nothing telephony). Versions live in the agent's stream:
//! drafts are edited, a publish makes one active, a rollback re-activates a version published
//! before (as a new event), archiving retires a version that is not active.
//!
//! The aggregate keeps only what its rules need (per-version status, whether it was ever
//! published, which one is active); the brains themselves live in the events and read models.

use std::collections::BTreeMap;

use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::call::OutboundRefusal;
use crate::common::{wire_enum, ParseError, UniqueClaims};

/// Longest system prompt, in characters.
pub const MAX_PROMPT_CHARS: usize = 100_000;
/// Longest version name, in characters.
pub const MAX_VERSION_NAME_CHARS: usize = 100;
/// Largest `max_tokens` a version may ask for.
pub const MAX_TOKENS_LIMIT: u32 = 131_072;
/// Largest `policies` object, serialised as JSON.
pub const MAX_POLICIES_BYTES: usize = 16 * 1024;
/// Deepest nesting of the `policies` object.
pub const MAX_POLICIES_DEPTH: usize = 8;
/// Versions one agent may have (archived ones included).
pub const MAX_VERSIONS_PER_AGENT: usize = 500;

// ---------------------------------------------------------------------------------------------
// The brain and its value types (parsed once, at the boundary).

wire_enum!(
    /// Tools an agent version can enable. The tool proxy serves exactly these.
    Tool, "tools", unknown = (|s: &str| {
        let known: Vec<&str> = Tool::ALL.iter().map(|t| t.as_str()).collect();
        format!("unknown tool {s:?}; known tools: {}", known.join(", "))
    }) {
        Email => "email",
        Calendar => "calendar",
        WhatsappMessaging => "whatsapp_messaging",
        Crm => "crm",
        Handoff => "handoff",
    }
);

/// How one tool is set in a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSetting {
    pub enabled: bool,
}

/// Tool flags of a version; a tool that is not listed is disabled.
pub type Tools = BTreeMap<Tool, ToolSetting>;

/// Name of a version, e.g. `v1` or `Summer promo`: 1–100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VersionName(String);

impl TryFrom<String> for VersionName {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        crate::common::bounded_text("name", &s, MAX_VERSION_NAME_CHARS).map(VersionName)
    }
}
impl From<VersionName> for String {
    fn from(v: VersionName) -> String {
        v.0
    }
}
impl VersionName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The system prompt: 1–100,000 characters; line breaks and tabs allowed, other control
/// characters not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prompt(String);

impl TryFrom<String> for Prompt {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        if s.trim().is_empty() {
            return Err(ParseError::new("prompt", "must not be empty"));
        }
        if s.chars().count() > MAX_PROMPT_CHARS {
            return Err(ParseError::new(
                "prompt",
                format!("must be at most {MAX_PROMPT_CHARS} characters"),
            ));
        }
        if s.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(ParseError::new(
                "prompt",
                "must not contain control characters other than line breaks and tabs",
            ));
        }
        Ok(Prompt(s))
    }
}
impl From<Prompt> for String {
    fn from(p: Prompt) -> String {
        p.0
    }
}
impl Prompt {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An LLM provider, as a lower-case slug (`openai`, `anthropic`, `azure_openai`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Provider(String);

impl TryFrom<String> for Provider {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        let ok = (1..=40).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(Provider(s))
        } else {
            Err(ParseError::new(
                "provider",
                "must be a lower-case slug of 1–40 characters (a-z, 0-9, _ and -), e.g. openai",
            ))
        }
    }
}
impl From<Provider> for String {
    fn from(p: Provider) -> String {
        p.0
    }
}

/// A model name as the provider spells it (`gpt-4.1-mini`, `claude-3-5-haiku@20241022`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

impl TryFrom<String> for ModelName {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        let ok = (1..=100).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:/@-".contains(c));
        if ok {
            Ok(ModelName(s))
        } else {
            Err(ParseError::new(
                "model",
                "must be 1–100 characters of letters, digits and . _ : / @ -",
            ))
        }
    }
}
impl From<ModelName> for String {
    fn from(m: ModelName) -> String {
        m.0
    }
}

/// Sampling temperature, 0 to 2.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Temperature(f64);

impl TryFrom<f64> for Temperature {
    type Error = ParseError;
    fn try_from(t: f64) -> Result<Self, ParseError> {
        if t.is_finite() && (0.0..=2.0).contains(&t) {
            Ok(Temperature(t))
        } else {
            Err(ParseError::new(
                "temperature",
                format!("must be between 0 and 2 (got {t})"),
            ))
        }
    }
}
impl From<Temperature> for f64 {
    fn from(t: Temperature) -> f64 {
        t.0
    }
}
impl Temperature {
    pub fn value(self) -> f64 {
        self.0
    }
}

/// Most tokens one reply may use: 1 to [`MAX_TOKENS_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct MaxTokens(u32);

impl TryFrom<u32> for MaxTokens {
    type Error = ParseError;
    fn try_from(n: u32) -> Result<Self, ParseError> {
        if (1..=MAX_TOKENS_LIMIT).contains(&n) {
            Ok(MaxTokens(n))
        } else {
            Err(ParseError::new(
                "max_tokens",
                format!("must be between 1 and {MAX_TOKENS_LIMIT} (got {n})"),
            ))
        }
    }
}
impl From<MaxTokens> for u32 {
    fn from(n: MaxTokens) -> u32 {
        n.0
    }
}

/// Model parameters of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    pub provider: Provider,
    pub model: ModelName,
    pub temperature: Temperature,
    pub max_tokens: MaxTokens,
}

/// Free-form policies that steer the LLM and its tools (not telephony): a JSON object of at
/// most 16 KiB and 8 levels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct Policies(Map<String, Value>);

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

impl TryFrom<Value> for Policies {
    type Error = ParseError;
    fn try_from(v: Value) -> Result<Self, ParseError> {
        let size = serde_json::to_vec(&v)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size > MAX_POLICIES_BYTES {
            return Err(ParseError::new(
                "policies",
                format!("must be at most {MAX_POLICIES_BYTES} bytes of JSON"),
            ));
        }
        if depth(&v) > MAX_POLICIES_DEPTH {
            return Err(ParseError::new(
                "policies",
                format!("must nest at most {MAX_POLICIES_DEPTH} levels"),
            ));
        }
        match v {
            Value::Object(m) => Ok(Policies(m)),
            _ => Err(ParseError::new("policies", "must be a JSON object")),
        }
    }
}
impl From<Policies> for Value {
    fn from(p: Policies) -> Value {
        Value::Object(p.0)
    }
}
impl Policies {
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// What one agent version is: the "brain" the runtime loads. Nothing telephony.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Brain {
    pub name: VersionName,
    pub prompt: Prompt,
    pub model: ModelParams,
    #[serde(default)]
    pub tools: Tools,
    #[serde(default)]
    pub policies: Policies,
}

/// The fields a draft edit replaces; `None` keeps the current value. `model`, `tools` and
/// `policies` are replaced as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrainChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<VersionName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Prompt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Tools>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Policies>,
}

impl BrainChanges {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.prompt.is_none()
            && self.model.is_none()
            && self.tools.is_none()
            && self.policies.is_none()
    }

    /// The brain after these changes.
    pub fn apply_to(self, mut brain: Brain) -> Brain {
        if let Some(v) = self.name {
            brain.name = v;
        }
        if let Some(v) = self.prompt {
            brain.prompt = v;
        }
        if let Some(v) = self.model {
            brain.model = v;
        }
        if let Some(v) = self.tools {
            brain.tools = v;
        }
        if let Some(v) = self.policies {
            brain.policies = v;
        }
        brain
    }
}

// ---------------------------------------------------------------------------------------------
// Field-level diff of two brains.

/// One changed field between two brains: `path` is dotted (`model.temperature`,
/// `tools.email.enabled`, `policies.tone`); `from`/`to` are `null` when the field is absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    pub from: Value,
    pub to: Value,
}

/// Every field that differs from `from` to `to`, in path order. Tools absent on one side are
/// compared as disabled, so `{}` and `{"email":{"enabled":false}}` show no change.
pub fn diff(from: &Brain, to: &Brain) -> Vec<FieldChange> {
    let norm = |b: &Brain| {
        let mut v = serde_json::to_value(b).unwrap_or(Value::Null);
        if let Some(tools) = v.get_mut("tools").and_then(Value::as_object_mut) {
            for t in Tool::ALL {
                tools
                    .entry(t.as_str())
                    .or_insert_with(|| serde_json::json!({"enabled": false}));
            }
        }
        v
    };
    let mut out = Vec::new();
    diff_values("", &norm(from), &norm(to), &mut out);
    out
}

fn diff_values(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_values(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a == b => {}
        _ => out.push(FieldChange {
            path: path.to_string(),
            from: a.clone(),
            to: b.clone(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Commands, events, errors, state.

#[derive(Debug, Clone, PartialEq)]
pub enum AgentCommand {
    Create {
        agent_id: String,
        establishment_id: String,
        name: String,
        description: String,
        created_by: String,
    },
    Update {
        name: Option<String>,
        description: Option<String>,
    },
    DraftVersion {
        version_id: String,
        brain: Brain,
        created_by: String,
    },
    EditDraft {
        version_id: String,
        changes: BrainChanges,
    },
    Publish {
        version_id: String,
    },
    Rollback {
        version_id: String,
    },
    Archive {
        version_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentEvent {
    AgentCreated {
        agent_id: String,
        establishment_id: String,
        name: String,
        description: String,
        created_by: String,
    },
    AgentUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    VersionDrafted {
        version_id: String,
        /// 1, 2, 3… in drafting order (names are free text).
        number: u32,
        brain: Brain,
        created_by: String,
    },
    DraftEdited {
        version_id: String,
        changes: BrainChanges,
    },
    VersionPublished {
        version_id: String,
        previous_version_id: Option<String>,
    },
    /// A version published before became active again.
    VersionRolledBack {
        version_id: String,
        previous_version_id: String,
    },
    VersionArchived {
        version_id: String,
    },
}
crate::domain_event!(AgentEvent {
    AgentCreated,
    AgentUpdated,
    VersionDrafted,
    DraftEdited,
    VersionPublished,
    VersionRolledBack,
    VersionArchived
});
impl UniqueClaims for AgentEvent {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("the agent already exists")]
    AlreadyExists,
    #[error("the agent does not exist")]
    NotFound,
    #[error("a version with this id already exists")]
    VersionExists,
    #[error("the version does not exist")]
    VersionNotFound,
    #[error("the version has been published and can no longer change; draft a new version")]
    VersionImmutable,
    #[error("the version is archived")]
    VersionArchived,
    #[error("the version was published before; roll back to it instead of publishing it")]
    AlreadyPublished,
    #[error("only a version that was published before can be rolled back to")]
    NeverPublished,
    #[error("the active version cannot be archived; publish or roll back to another first")]
    VersionActive,
    #[error("an agent can have at most {MAX_VERSIONS_PER_AGENT} versions")]
    TooManyVersions,
}

wire_enum!(
    /// Lifecycle of a version. A published version stays `published` after another one becomes
    /// active (it can be rolled back to); `archived` versions are retired.
    #[derive(Default)]
    VersionStatus, "status" {
        #[default]
        Draft => "draft",
        Published => "published",
        Archived => "archived",
    }
);

/// What the aggregate remembers of a version (not its brain).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionState {
    pub number: u32,
    pub status: VersionStatus,
    /// Whether it was ever published (archiving keeps this).
    pub ever_published: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub establishment_id: String,
    pub name: String,
    pub description: String,
    pub versions: BTreeMap<String, VersionState>,
    pub active_version_id: Option<String>,
    /// The version that was active before the active one (for repeated publish answers).
    pub previous_version_id: Option<String>,
}

impl Agent {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    /// The version an outbound call for `establishment_id` is made with: `pinned` if it is one
    /// of this agent's published versions (active or superseded; not a draft, not archived),
    /// else the active version. Refused when the agent does not exist or belongs to another
    /// establishment, or has no such version.
    pub fn dialable_version(
        &self,
        establishment_id: &str,
        pinned: Option<&str>,
    ) -> Result<String, OutboundRefusal> {
        if !self.exists() || self.establishment_id != establishment_id {
            return Err(OutboundRefusal::AgentNotInEstablishment);
        }
        match pinned {
            None => self
                .active_version_id
                .clone()
                .ok_or(OutboundRefusal::NoPublishedVersion),
            Some(id) => match self.versions.get(id) {
                Some(v) if v.status == VersionStatus::Published => Ok(id.to_string()),
                _ => Err(OutboundRefusal::VersionNotCallable {
                    version_id: id.to_string(),
                }),
            },
        }
    }

    fn version(&self, id: &str) -> Result<&VersionState, AgentError> {
        self.versions.get(id).ok_or(AgentError::VersionNotFound)
    }

    pub fn decide(&self, command: AgentCommand) -> Result<Vec<AgentEvent>, AgentError> {
        use AgentCommand as C;
        use AgentEvent as E;
        if !self.exists() && !matches!(command, C::Create { .. }) {
            return Err(AgentError::NotFound);
        }
        match command {
            C::Create {
                agent_id,
                establishment_id,
                name,
                description,
                created_by,
            } => {
                if self.exists() {
                    return Err(AgentError::AlreadyExists);
                }
                Ok(vec![E::AgentCreated {
                    agent_id,
                    establishment_id,
                    name,
                    description,
                    created_by,
                }])
            }
            C::Update { name, description } => {
                let name = name.filter(|n| *n != self.name);
                let description = description.filter(|d| *d != self.description);
                if name.is_none() && description.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![E::AgentUpdated { name, description }])
            }
            C::DraftVersion {
                version_id,
                brain,
                created_by,
            } => {
                if self.versions.contains_key(&version_id) {
                    return Err(AgentError::VersionExists);
                }
                if self.versions.len() >= MAX_VERSIONS_PER_AGENT {
                    return Err(AgentError::TooManyVersions);
                }
                Ok(vec![E::VersionDrafted {
                    version_id,
                    number: self.versions.len() as u32 + 1,
                    brain,
                    created_by,
                }])
            }
            C::EditDraft {
                version_id,
                changes,
            } => {
                match self.version(&version_id)?.status {
                    VersionStatus::Draft => {}
                    VersionStatus::Published => return Err(AgentError::VersionImmutable),
                    VersionStatus::Archived => return Err(AgentError::VersionArchived),
                }
                if changes.is_empty() {
                    return Ok(vec![]);
                }
                Ok(vec![E::DraftEdited {
                    version_id,
                    changes,
                }])
            }
            C::Publish { version_id } => {
                let v = self.version(&version_id)?;
                if self.active_version_id.as_deref() == Some(version_id.as_str()) {
                    return Ok(vec![]);
                }
                match v.status {
                    VersionStatus::Draft => Ok(vec![E::VersionPublished {
                        version_id,
                        previous_version_id: self.active_version_id.clone(),
                    }]),
                    VersionStatus::Published => Err(AgentError::AlreadyPublished),
                    VersionStatus::Archived => Err(AgentError::VersionArchived),
                }
            }
            C::Rollback { version_id } => {
                let v = self.version(&version_id)?;
                if self.active_version_id.as_deref() == Some(version_id.as_str()) {
                    return Ok(vec![]);
                }
                match (v.status, &self.active_version_id) {
                    (VersionStatus::Archived, _) => Err(AgentError::VersionArchived),
                    (VersionStatus::Draft, _) | (_, None) => Err(AgentError::NeverPublished),
                    (VersionStatus::Published, Some(active)) => Ok(vec![E::VersionRolledBack {
                        version_id,
                        previous_version_id: active.clone(),
                    }]),
                }
            }
            C::Archive { version_id } => {
                let v = self.version(&version_id)?;
                if self.active_version_id.as_deref() == Some(version_id.as_str()) {
                    return Err(AgentError::VersionActive);
                }
                if v.status == VersionStatus::Archived {
                    return Ok(vec![]);
                }
                Ok(vec![E::VersionArchived { version_id }])
            }
        }
    }

    fn activate(&mut self, version_id: String, previous: Option<String>) {
        if let Some(v) = self.versions.get_mut(&version_id) {
            v.status = VersionStatus::Published;
            v.ever_published = true;
        }
        self.previous_version_id = previous;
        self.active_version_id = Some(version_id);
    }
}

impl Aggregate for Agent {
    const TYPE: &'static str = "Agent";
    type Command = AgentCommand;
    type Event = AgentEvent;
    type Error = AgentError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: AgentEvent) {
        use AgentEvent as E;
        match event {
            E::AgentCreated {
                agent_id,
                establishment_id,
                name,
                description,
                ..
            } => {
                self.id = agent_id;
                self.establishment_id = establishment_id;
                self.name = name;
                self.description = description;
            }
            E::AgentUpdated { name, description } => {
                if let Some(n) = name {
                    self.name = n;
                }
                if let Some(d) = description {
                    self.description = d;
                }
            }
            E::VersionDrafted {
                version_id, number, ..
            } => {
                self.versions.insert(
                    version_id,
                    VersionState {
                        number,
                        status: VersionStatus::Draft,
                        ever_published: false,
                    },
                );
            }
            E::DraftEdited { .. } => {}
            E::VersionPublished {
                version_id,
                previous_version_id,
            } => self.activate(version_id, previous_version_id),
            E::VersionRolledBack {
                version_id,
                previous_version_id,
            } => self.activate(version_id, Some(previous_version_id)),
            E::VersionArchived { version_id } => {
                if let Some(v) = self.versions.get_mut(&version_id) {
                    v.status = VersionStatus::Archived;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
