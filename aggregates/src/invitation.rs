//! Invitation aggregate: a single-use, expiring invitation to join an establishment with a role.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::common::{wire_enum, Email, Role, UniqueClaims};

#[derive(Debug, Clone, PartialEq)]
pub enum InvitationCommand {
    Send {
        invitation_id: String,
        establishment_id: String,
        email: Email,
        role: Role,
        token_hash: String,
        expires_at: DateTime<Utc>,
        invited_by: String,
    },
    Accept {
        token_hash: String,
        user_id: String,
        now: DateTime<Utc>,
    },
    Revoke,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InvitationEvent {
    InvitationSent {
        invitation_id: String,
        establishment_id: String,
        email: Email,
        role: Role,
        /// SHA-256 of the mailed secret.
        token_hash: String,
        expires_at: DateTime<Utc>,
        invited_by: String,
    },
    InvitationAccepted {
        user_id: String,
    },
    InvitationRevoked,
}
crate::domain_event!(InvitationEvent {
    InvitationSent,
    InvitationAccepted,
    InvitationRevoked
});
impl UniqueClaims for InvitationEvent {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvitationError {
    #[error("the invitation already exists")]
    AlreadySent,
    #[error("the invitation token is invalid")]
    InvalidToken,
    #[error("the invitation has expired")]
    Expired,
    #[error("the invitation has already been used")]
    AlreadyAccepted,
    #[error("the invitation was revoked")]
    Revoked,
}

wire_enum!(
    /// Where an invitation stands: not sent yet, pending until accepted or revoked.
    #[derive(Default)]
    InvitationStatus, "status" {
        #[default]
        None => "none",
        Pending => "pending",
        Accepted => "accepted",
        Revoked => "revoked",
    }
);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: String,
    pub establishment_id: String,
    pub email: Option<Email>,
    pub role: Option<Role>,
    pub token_hash: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub status: InvitationStatus,
}

impl Invitation {
    pub fn decide(
        &self,
        command: InvitationCommand,
    ) -> Result<Vec<InvitationEvent>, InvitationError> {
        use InvitationCommand as C;
        match command {
            C::Send {
                invitation_id,
                establishment_id,
                email,
                role,
                token_hash,
                expires_at,
                invited_by,
            } => {
                if self.status != InvitationStatus::None {
                    return Err(InvitationError::AlreadySent);
                }
                Ok(vec![InvitationEvent::InvitationSent {
                    invitation_id,
                    establishment_id,
                    email,
                    role,
                    token_hash,
                    expires_at,
                    invited_by,
                }])
            }
            C::Accept {
                token_hash,
                user_id,
                now,
            } => {
                match self.status {
                    InvitationStatus::None => return Err(InvitationError::InvalidToken),
                    InvitationStatus::Accepted => return Err(InvitationError::AlreadyAccepted),
                    InvitationStatus::Revoked => return Err(InvitationError::Revoked),
                    InvitationStatus::Pending => {}
                }
                if token_hash != self.token_hash {
                    return Err(InvitationError::InvalidToken);
                }
                if self.expires_at.is_some_and(|e| now >= e) {
                    return Err(InvitationError::Expired);
                }
                Ok(vec![InvitationEvent::InvitationAccepted { user_id }])
            }
            C::Revoke => match self.status {
                InvitationStatus::Pending => Ok(vec![InvitationEvent::InvitationRevoked]),
                InvitationStatus::Revoked => Ok(vec![]),
                InvitationStatus::Accepted => Err(InvitationError::AlreadyAccepted),
                InvitationStatus::None => Err(InvitationError::InvalidToken),
            },
        }
    }
}

impl Aggregate for Invitation {
    const TYPE: &'static str = "Invitation";
    type Command = InvitationCommand;
    type Event = InvitationEvent;
    type Error = InvitationError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: InvitationEvent) {
        match event {
            InvitationEvent::InvitationSent {
                invitation_id,
                establishment_id,
                email,
                role,
                token_hash,
                expires_at,
                ..
            } => {
                self.id = invitation_id;
                self.establishment_id = establishment_id;
                self.email = Some(email);
                self.role = Some(role);
                self.token_hash = token_hash;
                self.expires_at = Some(expires_at);
                self.status = InvitationStatus::Pending;
            }
            InvitationEvent::InvitationAccepted { .. } => self.status = InvitationStatus::Accepted,
            InvitationEvent::InvitationRevoked => self.status = InvitationStatus::Revoked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use cqrs_es::test::TestFramework;

    type F = TestFramework<Invitation>;

    fn t0() -> DateTime<Utc> {
        "2026-01-10T00:00:00Z".parse().unwrap()
    }

    fn sent() -> InvitationEvent {
        InvitationEvent::InvitationSent {
            invitation_id: "inv_1".into(),
            establishment_id: "est_1".into(),
            email: "op@example.com".parse().unwrap(),
            role: Role::Operator,
            token_hash: "th".into(),
            expires_at: t0() + Duration::days(7),
            invited_by: "usr_admin".into(),
        }
    }

    fn accept(hash: &str, now: DateTime<Utc>) -> InvitationCommand {
        InvitationCommand::Accept {
            token_hash: hash.into(),
            user_id: "usr_op".into(),
            now,
        }
    }

    #[test]
    fn an_invitation_is_accepted_once() {
        F::with(())
            .given(vec![sent()])
            .when(accept("th", t0()))
            .then_expect_events(vec![InvitationEvent::InvitationAccepted {
                user_id: "usr_op".into(),
            }]);
        F::with(())
            .given(vec![
                sent(),
                InvitationEvent::InvitationAccepted {
                    user_id: "usr_op".into(),
                },
            ])
            .when(accept("th", t0()))
            .then_expect_error(InvitationError::AlreadyAccepted);
    }

    #[test]
    fn a_wrong_or_late_token_is_refused() {
        F::with(())
            .given(vec![sent()])
            .when(accept("other", t0()))
            .then_expect_error(InvitationError::InvalidToken);
        F::with(())
            .given(vec![sent()])
            .when(accept("th", t0() + Duration::days(8)))
            .then_expect_error(InvitationError::Expired);
    }

    #[test]
    fn a_revoked_invitation_cannot_be_accepted() {
        F::with(())
            .given(vec![sent(), InvitationEvent::InvitationRevoked])
            .when(accept("th", t0()))
            .then_expect_error(InvitationError::Revoked);
    }

    #[test]
    fn invitation_status_keeps_its_wire_names() {
        crate::common::assert_wire_form(
            InvitationStatus::ALL,
            &["none", "pending", "accepted", "revoked"],
        );
        // A snapshot as stored before the enums shared one macro.
        let stored = serde_json::json!({
            "id": "inv_1", "establishment_id": "est_1", "email": "new@example.com",
            "role": "viewer", "token_hash": "h", "expires_at": "2026-01-10T00:00:00Z",
            "status": "accepted"
        });
        let invitation: Invitation = serde_json::from_value(stored).unwrap();
        assert_eq!(invitation.status, InvitationStatus::Accepted);
        assert_eq!(invitation.role, Some(Role::Viewer));
    }
}
