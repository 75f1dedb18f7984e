//! Integration aggregate: one establishment's connection to a business service the tool proxy
//! acts through (Google Calendar, WhatsApp, e-mail, a CRM webhook).
//!
//! - Every change is an event; **no event carries a secret**. Credentials are sealed outside
//!   the log (envelope encryption, `integration_secrets`) and events carry a [`CredentialRef`]
//!   (the sealed row's id and a version number), so the log can be replayed, audited and
//!   shown without ever exposing a token.
//! - An establishment has at most one live integration of each type: the connect event claims
//!   `(establishment, type)` ([`INTEGRATION_CLAIM`]), revocation releases it.
//! - OAuth: the state sent to the provider is single use, bound to this integration and
//!   expiring; only its SHA-256 is recorded ([`IntegrationCommand::ConsumeAuthState`]).
//! - A refresh token the provider refuses (`invalid_grant`) makes the connection
//!   `needs_reauth`; tool calls then fail fast until it is re-authorised.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::common::{wire_enum, ClaimOp, UniqueClaims};

/// Claim scope: one live integration per `(establishment, type)`, value `est_…:type`.
pub const INTEGRATION_CLAIM: &str = "integration";
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

wire_enum!(
    /// The services an establishment can connect.
    IntegrationType, "type" {
        GoogleCalendar => "google_calendar",
        Whatsapp => "whatsapp",
        Email => "email",
        CrmWebhook => "crm_webhook",
    }
);

impl IntegrationType {
    /// Whether connecting goes through an OAuth authorisation (else credentials are given).
    pub fn uses_oauth(self) -> bool {
        matches!(self, IntegrationType::GoogleCalendar)
    }
}

wire_enum!(
    /// Where a connection stands.
    #[derive(Default)]
    IntegrationStatus, "status" {
        #[default]
        None => "none",
        PendingAuth => "pending_auth",
        Connected => "connected",
        NeedsReauth => "needs_reauth",
        Revoked => "revoked",
    }
);

/// A reference to sealed credentials (a row of `integration_secrets`), never their value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRef {
    /// Id of the sealed row (`sec_…`).
    pub secret_id: String,
    /// 1 for the first credentials, +1 for each rotation, authorisation or refresh.
    pub version: u32,
}

/// How a connection starts.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectAuth {
    /// An OAuth authorisation the user completes in the browser.
    OAuth {
        redirect_url: String,
        state_hash: String,
        state_expires_at: DateTime<Utc>,
    },
    /// Credentials given (and sealed) at connect time.
    Credentials { secret_id: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum IntegrationCommand {
    Connect {
        integration_id: String,
        establishment_id: String,
        integration_type: IntegrationType,
        display_name: String,
        auth: ConnectAuth,
        connected_by: String,
        at: DateTime<Utc>,
    },
    /// The OAuth callback presents the state: it must be this integration's, unused and not
    /// expired. Consumed before the code is exchanged, so a replayed callback cannot exchange
    /// twice.
    ConsumeAuthState {
        state_hash: String,
        now: DateTime<Utc>,
    },
    /// The code was exchanged; the tokens are sealed in `secret_id`.
    Authorize {
        secret_id: String,
        scopes: Vec<String>,
        access_expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// The code exchange failed (the user denied access, the code was refused).
    FailAuthorization { reason: String, at: DateTime<Utc> },
    /// A refreshed access token is sealed in `secret_id`.
    RecordTokenRefresh {
        secret_id: String,
        access_expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// The provider refused the refresh token (`invalid_grant`).
    MarkNeedsReauth { reason: String, at: DateTime<Utc> },
    /// New credentials (key-based types) replace the current ones.
    RotateCredentials {
        secret_id: String,
        rotated_by: String,
        at: DateTime<Utc>,
    },
    SetEnabled {
        enabled: bool,
        by: String,
        at: DateTime<Utc>,
    },
    Rename {
        display_name: String,
        at: DateTime<Utc>,
    },
    Revoke {
        revoked_by: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IntegrationEvent {
    IntegrationConnected {
        integration_id: String,
        establishment_id: String,
        integration_type: IntegrationType,
        display_name: String,
        connected_by: String,
        at: DateTime<Utc>,
    },
    /// An OAuth authorisation was started (only the state's hash is kept).
    AuthorizationStarted {
        redirect_url: String,
        state_hash: String,
        state_expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    AuthStateConsumed {
        at: DateTime<Utc>,
    },
    IntegrationAuthorized {
        credential: CredentialRef,
        scopes: Vec<String>,
        access_expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    AuthorizationFailed {
        reason: String,
        at: DateTime<Utc>,
    },
    CredentialsStored {
        credential: CredentialRef,
        at: DateTime<Utc>,
    },
    TokenRefreshed {
        credential: CredentialRef,
        access_expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    ReauthorizationNeeded {
        reason: String,
        at: DateTime<Utc>,
    },
    CredentialsRotated {
        credential: CredentialRef,
        rotated_by: String,
        at: DateTime<Utc>,
    },
    IntegrationEnabled {
        by: String,
        at: DateTime<Utc>,
    },
    IntegrationDisabled {
        by: String,
        at: DateTime<Utc>,
    },
    IntegrationRenamed {
        display_name: String,
        at: DateTime<Utc>,
    },
    /// Gives the `(establishment, type)` claim back.
    IntegrationRevoked {
        establishment_id: String,
        integration_type: IntegrationType,
        revoked_by: String,
        at: DateTime<Utc>,
    },
}
crate::domain_event!(IntegrationEvent {
    IntegrationConnected,
    AuthorizationStarted,
    AuthStateConsumed,
    IntegrationAuthorized,
    AuthorizationFailed,
    CredentialsStored,
    TokenRefreshed,
    ReauthorizationNeeded,
    CredentialsRotated,
    IntegrationEnabled,
    IntegrationDisabled,
    IntegrationRenamed,
    IntegrationRevoked,
});

/// The claim value of an establishment's integration of a type.
pub fn claim_value(establishment_id: &str, t: IntegrationType) -> String {
    format!("{establishment_id}:{}", t.as_str())
}

impl UniqueClaims for IntegrationEvent {
    fn unique_claims(&self) -> Vec<ClaimOp> {
        match self {
            IntegrationEvent::IntegrationConnected {
                establishment_id,
                integration_type,
                ..
            } => vec![ClaimOp::Claim {
                scope: INTEGRATION_CLAIM,
                value: claim_value(establishment_id, *integration_type),
            }],
            IntegrationEvent::IntegrationRevoked {
                establishment_id,
                integration_type,
                ..
            } => vec![ClaimOp::Release {
                scope: INTEGRATION_CLAIM,
                value: claim_value(establishment_id, *integration_type),
            }],
            _ => vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrationError {
    #[error("the integration already exists")]
    AlreadyExists,
    #[error("the integration does not exist")]
    NotFound,
    #[error("the integration was revoked")]
    Revoked,
    #[error(
        "display_name must be 1 to {MAX_DISPLAY_NAME_CHARS} characters without control characters"
    )]
    InvalidDisplayName,
    #[error("this type connects with {expected}, not {given}")]
    WrongAuthMode {
        expected: &'static str,
        given: &'static str,
    },
    #[error("the authorisation state is not valid for this integration")]
    InvalidState,
    #[error("the authorisation state has expired; connect again")]
    StateExpired,
    #[error("the authorisation state was already used")]
    StateUsed,
    #[error("no authorisation is pending for this integration")]
    NotAuthorizing,
    #[error(
        "this integration's credentials come from an OAuth authorisation; re-authorise instead"
    )]
    NotRotatable,
    #[error("the integration is not connected")]
    NotConnected,
}

/// The OAuth authorisation in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAuth {
    pub redirect_url: String,
    pub state_hash: String,
    pub state_expires_at: DateTime<Utc>,
    pub consumed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    pub id: String,
    pub establishment_id: String,
    pub integration_type: Option<IntegrationType>,
    pub display_name: String,
    pub status: IntegrationStatus,
    pub enabled: bool,
    pub scopes: Vec<String>,
    pub credential: Option<CredentialRef>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub pending_auth: Option<PendingAuth>,
    /// The redirect of the last authorisation (the browser goes back there).
    pub redirect_url: Option<String>,
    pub last_error: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Why the tool proxy may not act through an integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    PendingAuth,
    NeedsReauth,
    Disabled,
    Revoked,
}

impl Integration {
    pub fn exists(&self) -> bool {
        !self.id.is_empty()
    }

    /// The credentials the tool proxy may use now, or why not.
    pub fn usable(&self) -> Result<&CredentialRef, Unusable> {
        match self.status {
            IntegrationStatus::Revoked | IntegrationStatus::None => Err(Unusable::Revoked),
            IntegrationStatus::PendingAuth => Err(Unusable::PendingAuth),
            IntegrationStatus::NeedsReauth => Err(Unusable::NeedsReauth),
            IntegrationStatus::Connected if !self.enabled => Err(Unusable::Disabled),
            IntegrationStatus::Connected => self.credential.as_ref().ok_or(Unusable::PendingAuth),
        }
    }

    /// Whether the access token must be refreshed at `now` (within `margin_seconds` of expiry).
    pub fn needs_refresh(&self, now: DateTime<Utc>, margin_seconds: i64) -> bool {
        self.integration_type
            .is_some_and(IntegrationType::uses_oauth)
            && self
                .access_expires_at
                .is_none_or(|e| e - chrono::Duration::seconds(margin_seconds) <= now)
    }

    fn next_credential(&self, secret_id: String) -> CredentialRef {
        CredentialRef {
            secret_id,
            version: self.credential.as_ref().map_or(1, |c| c.version + 1),
        }
    }

    fn live(&self) -> Result<(), IntegrationError> {
        if !self.exists() {
            return Err(IntegrationError::NotFound);
        }
        if self.status == IntegrationStatus::Revoked {
            return Err(IntegrationError::Revoked);
        }
        Ok(())
    }

    pub fn decide(
        &self,
        command: IntegrationCommand,
    ) -> Result<Vec<IntegrationEvent>, IntegrationError> {
        use IntegrationCommand as C;
        use IntegrationEvent as E;
        if let C::Connect {
            integration_id,
            establishment_id,
            integration_type,
            display_name,
            auth,
            connected_by,
            at,
        } = command
        {
            if self.exists() {
                return Err(IntegrationError::AlreadyExists);
            }
            let display_name = valid_display_name(&display_name)?;
            let connected = E::IntegrationConnected {
                integration_id,
                establishment_id,
                integration_type,
                display_name,
                connected_by,
                at,
            };
            return match (integration_type.uses_oauth(), auth) {
                (
                    true,
                    ConnectAuth::OAuth {
                        redirect_url,
                        state_hash,
                        state_expires_at,
                    },
                ) => Ok(vec![
                    connected,
                    E::AuthorizationStarted {
                        redirect_url,
                        state_hash,
                        state_expires_at,
                        at,
                    },
                ]),
                (false, ConnectAuth::Credentials { secret_id }) => Ok(vec![
                    connected,
                    E::CredentialsStored {
                        credential: CredentialRef {
                            secret_id,
                            version: 1,
                        },
                        at,
                    },
                ]),
                (true, _) => Err(IntegrationError::WrongAuthMode {
                    expected: "oauth",
                    given: "api_key",
                }),
                (false, _) => Err(IntegrationError::WrongAuthMode {
                    expected: "api_key",
                    given: "oauth",
                }),
            };
        }
        self.live()?;
        match command {
            C::Connect { .. } => unreachable!("handled above"),
            C::ConsumeAuthState { state_hash, now } => {
                let pending = self
                    .pending_auth
                    .as_ref()
                    .ok_or(IntegrationError::NotAuthorizing)?;
                if pending.state_hash != state_hash {
                    return Err(IntegrationError::InvalidState);
                }
                if pending.consumed {
                    return Err(IntegrationError::StateUsed);
                }
                if now >= pending.state_expires_at {
                    return Err(IntegrationError::StateExpired);
                }
                Ok(vec![E::AuthStateConsumed { at: now }])
            }
            C::Authorize {
                secret_id,
                scopes,
                access_expires_at,
                at,
            } => {
                if !self.pending_auth.as_ref().is_some_and(|p| p.consumed) {
                    return Err(IntegrationError::NotAuthorizing);
                }
                Ok(vec![E::IntegrationAuthorized {
                    credential: self.next_credential(secret_id),
                    scopes,
                    access_expires_at,
                    at,
                }])
            }
            C::FailAuthorization { reason, at } => {
                if self.pending_auth.is_none() {
                    return Err(IntegrationError::NotAuthorizing);
                }
                Ok(vec![E::AuthorizationFailed { reason, at }])
            }
            C::RecordTokenRefresh {
                secret_id,
                access_expires_at,
                at,
            } => {
                if self.status != IntegrationStatus::Connected {
                    return Err(IntegrationError::NotConnected);
                }
                Ok(vec![E::TokenRefreshed {
                    credential: self.next_credential(secret_id),
                    access_expires_at,
                    at,
                }])
            }
            C::MarkNeedsReauth { reason, at } => {
                if self.status == IntegrationStatus::NeedsReauth {
                    return Ok(vec![]);
                }
                if self.status != IntegrationStatus::Connected {
                    return Err(IntegrationError::NotConnected);
                }
                Ok(vec![E::ReauthorizationNeeded { reason, at }])
            }
            C::RotateCredentials {
                secret_id,
                rotated_by,
                at,
            } => {
                if self
                    .integration_type
                    .is_some_and(IntegrationType::uses_oauth)
                {
                    return Err(IntegrationError::NotRotatable);
                }
                Ok(vec![E::CredentialsRotated {
                    credential: self.next_credential(secret_id),
                    rotated_by,
                    at,
                }])
            }
            C::SetEnabled { enabled, by, at } => Ok(match (self.enabled, enabled) {
                (false, true) => vec![E::IntegrationEnabled { by, at }],
                (true, false) => vec![E::IntegrationDisabled { by, at }],
                _ => vec![],
            }),
            C::Rename { display_name, at } => {
                let display_name = valid_display_name(&display_name)?;
                if display_name == self.display_name {
                    return Ok(vec![]);
                }
                Ok(vec![E::IntegrationRenamed { display_name, at }])
            }
            C::Revoke { revoked_by, at } => Ok(vec![E::IntegrationRevoked {
                establishment_id: self.establishment_id.clone(),
                integration_type: self.integration_type.ok_or(IntegrationError::NotFound)?,
                revoked_by,
                at,
            }]),
        }
    }
}

fn valid_display_name(s: &str) -> Result<String, IntegrationError> {
    let s = s.trim();
    let n = s.chars().count();
    if n == 0 || n > MAX_DISPLAY_NAME_CHARS || s.chars().any(char::is_control) {
        return Err(IntegrationError::InvalidDisplayName);
    }
    Ok(s.to_string())
}

impl Aggregate for Integration {
    const TYPE: &'static str = "Integration";
    type Command = IntegrationCommand;
    type Event = IntegrationEvent;
    type Error = IntegrationError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: IntegrationEvent) {
        use IntegrationEvent as E;
        match event {
            E::IntegrationConnected {
                integration_id,
                establishment_id,
                integration_type,
                display_name,
                at,
                ..
            } => {
                self.id = integration_id;
                self.establishment_id = establishment_id;
                self.integration_type = Some(integration_type);
                self.display_name = display_name;
                self.status = IntegrationStatus::PendingAuth;
                self.enabled = true;
                self.created_at = Some(at);
                self.updated_at = Some(at);
            }
            E::AuthorizationStarted {
                redirect_url,
                state_hash,
                state_expires_at,
                at,
            } => {
                self.redirect_url = Some(redirect_url.clone());
                self.pending_auth = Some(PendingAuth {
                    redirect_url,
                    state_hash,
                    state_expires_at,
                    consumed: false,
                });
                self.updated_at = Some(at);
            }
            E::AuthStateConsumed { at } => {
                if let Some(p) = &mut self.pending_auth {
                    p.consumed = true;
                }
                self.updated_at = Some(at);
            }
            E::IntegrationAuthorized {
                credential,
                scopes,
                access_expires_at,
                at,
            } => {
                self.credential = Some(credential);
                self.scopes = scopes;
                self.access_expires_at = Some(access_expires_at);
                self.pending_auth = None;
                self.status = IntegrationStatus::Connected;
                self.last_error = None;
                self.updated_at = Some(at);
            }
            E::AuthorizationFailed { reason, at } => {
                self.pending_auth = None;
                self.last_error = Some(reason);
                self.updated_at = Some(at);
            }
            E::CredentialsStored { credential, at }
            | E::CredentialsRotated { credential, at, .. } => {
                self.credential = Some(credential);
                self.status = IntegrationStatus::Connected;
                self.last_error = None;
                self.updated_at = Some(at);
            }
            E::TokenRefreshed {
                credential,
                access_expires_at,
                at,
            } => {
                self.credential = Some(credential);
                self.access_expires_at = Some(access_expires_at);
                self.updated_at = Some(at);
            }
            E::ReauthorizationNeeded { reason, at } => {
                self.status = IntegrationStatus::NeedsReauth;
                self.last_error = Some(reason);
                self.updated_at = Some(at);
            }
            E::IntegrationEnabled { at, .. } => {
                self.enabled = true;
                self.updated_at = Some(at);
            }
            E::IntegrationDisabled { at, .. } => {
                self.enabled = false;
                self.updated_at = Some(at);
            }
            E::IntegrationRenamed { display_name, at } => {
                self.display_name = display_name;
                self.updated_at = Some(at);
            }
            E::IntegrationRevoked { at, .. } => {
                self.status = IntegrationStatus::Revoked;
                self.enabled = false;
                self.pending_auth = None;
                self.updated_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests;
