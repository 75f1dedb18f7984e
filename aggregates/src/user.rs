//! User aggregate: an account that can log in, with its password and platform-admin flag.
//! Memberships live on the establishment (its invariants need them), not here.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::common::{ClaimOp, Email, UniqueClaims};

/// Claim scope that keeps e-mail addresses unique across users.
pub const EMAIL_CLAIM: &str = "user_email";

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Register {
        user_id: String,
        email: Email,
        display_name: String,
        password_hash: Option<String>,
        platform_admin: bool,
    },
    RequestPasswordReset {
        reset_id: String,
        token_hash: String,
        expires_at: DateTime<Utc>,
    },
    ResetPassword {
        reset_id: String,
        token_hash: String,
        password_hash: String,
        now: DateTime<Utc>,
    },
    ChangeDisplayName {
        display_name: String,
    },
    GrantPlatformAdmin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered {
        user_id: String,
        email: Email,
        display_name: String,
        /// argon2id PHC string; `None` for accounts that have not set a password yet.
        password_hash: Option<String>,
        platform_admin: bool,
    },
    PasswordResetRequested {
        reset_id: String,
        /// SHA-256 of the mailed secret; the secret itself is never stored.
        token_hash: String,
        expires_at: DateTime<Utc>,
    },
    PasswordReset {
        reset_id: String,
        password_hash: String,
    },
    DisplayNameChanged {
        display_name: String,
    },
    PlatformAdminGranted,
}
crate::domain_event!(UserEvent {
    UserRegistered,
    PasswordResetRequested,
    PasswordReset,
    DisplayNameChanged,
    PlatformAdminGranted
});

impl UniqueClaims for UserEvent {
    fn unique_claims(&self) -> Vec<ClaimOp> {
        match self {
            UserEvent::UserRegistered { email, .. } => vec![ClaimOp::Claim {
                scope: EMAIL_CLAIM,
                value: email.as_str().to_string(),
            }],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the user already exists")]
    AlreadyRegistered,
    #[error("the user does not exist")]
    NotRegistered,
    #[error("the reset token is invalid or has already been used")]
    ResetTokenInvalid,
    #[error("the reset token has expired")]
    ResetTokenExpired,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingReset {
    pub reset_id: String,
    pub token_hash: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub email: Option<Email>,
    pub display_name: String,
    pub platform_admin: bool,
    /// Only the most recent reset request is honoured; using it consumes it.
    pub pending_reset: Option<PendingReset>,
}

impl User {
    pub fn is_registered(&self) -> bool {
        self.email.is_some()
    }

    /// Whether a reset token (its id and the hash of its secret) is the pending one and still
    /// valid at `now`: the same rule `ResetPassword` applies, asked before anything costly (the
    /// new password's hash) is computed.
    pub fn check_reset_token(
        &self,
        reset_id: &str,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), UserError> {
        let pending = self
            .pending_reset
            .as_ref()
            .filter(|p| p.reset_id == reset_id && p.token_hash == token_hash)
            .ok_or(UserError::ResetTokenInvalid)?;
        if now >= pending.expires_at {
            return Err(UserError::ResetTokenExpired);
        }
        Ok(())
    }

    pub fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        use UserCommand as C;
        if !self.is_registered() && !matches!(command, C::Register { .. }) {
            return Err(UserError::NotRegistered);
        }
        match command {
            C::Register {
                user_id,
                email,
                display_name,
                password_hash,
                platform_admin,
            } => {
                if self.is_registered() {
                    return Err(UserError::AlreadyRegistered);
                }
                Ok(vec![UserEvent::UserRegistered {
                    user_id,
                    email,
                    display_name,
                    password_hash,
                    platform_admin,
                }])
            }
            C::RequestPasswordReset {
                reset_id,
                token_hash,
                expires_at,
            } => Ok(vec![UserEvent::PasswordResetRequested {
                reset_id,
                token_hash,
                expires_at,
            }]),
            C::ResetPassword {
                reset_id,
                token_hash,
                password_hash,
                now,
            } => {
                self.check_reset_token(&reset_id, &token_hash, now)?;
                Ok(vec![UserEvent::PasswordReset {
                    reset_id,
                    password_hash,
                }])
            }
            C::ChangeDisplayName { display_name } => {
                if display_name == self.display_name {
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::DisplayNameChanged { display_name }])
            }
            C::GrantPlatformAdmin => {
                if self.platform_admin {
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::PlatformAdminGranted])
            }
        }
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserRegistered {
                user_id,
                email,
                display_name,
                platform_admin,
                ..
            } => {
                self.id = user_id;
                self.email = Some(email);
                self.display_name = display_name;
                self.platform_admin = platform_admin;
            }
            UserEvent::PasswordResetRequested {
                reset_id,
                token_hash,
                expires_at,
            } => {
                self.pending_reset = Some(PendingReset {
                    reset_id,
                    token_hash,
                    expires_at,
                })
            }
            UserEvent::PasswordReset { .. } => self.pending_reset = None,
            UserEvent::DisplayNameChanged { display_name } => self.display_name = display_name,
            UserEvent::PlatformAdminGranted => self.platform_admin = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use cqrs_es::test::TestFramework;

    type F = TestFramework<User>;

    fn registered() -> UserEvent {
        UserEvent::UserRegistered {
            user_id: "usr_1".into(),
            email: "a@example.com".parse().unwrap(),
            display_name: "A".into(),
            password_hash: Some("h".into()),
            platform_admin: false,
        }
    }

    fn t0() -> DateTime<Utc> {
        "2026-01-10T00:00:00Z".parse().unwrap()
    }

    fn reset_requested() -> UserEvent {
        UserEvent::PasswordResetRequested {
            reset_id: "rst_1".into(),
            token_hash: "th".into(),
            expires_at: t0() + Duration::hours(1),
        }
    }

    fn reset(now: DateTime<Utc>) -> UserCommand {
        UserCommand::ResetPassword {
            reset_id: "rst_1".into(),
            token_hash: "th".into(),
            password_hash: "new".into(),
            now,
        }
    }

    #[test]
    fn a_user_registers_once() {
        F::with(())
            .given(vec![registered()])
            .when(UserCommand::Register {
                user_id: "usr_1".into(),
                email: "a@example.com".parse().unwrap(),
                display_name: "A".into(),
                password_hash: None,
                platform_admin: false,
            })
            .then_expect_error(UserError::AlreadyRegistered);
    }

    #[test]
    fn registration_claims_the_email() {
        assert_eq!(
            registered().unique_claims(),
            vec![ClaimOp::Claim {
                scope: EMAIL_CLAIM,
                value: "a@example.com".into()
            }]
        );
    }

    #[test]
    fn a_reset_token_resets_the_password_once() {
        F::with(())
            .given(vec![registered(), reset_requested()])
            .when(reset(t0()))
            .then_expect_events(vec![UserEvent::PasswordReset {
                reset_id: "rst_1".into(),
                password_hash: "new".into(),
            }]);
        F::with(())
            .given(vec![
                registered(),
                reset_requested(),
                UserEvent::PasswordReset {
                    reset_id: "rst_1".into(),
                    password_hash: "new".into(),
                },
            ])
            .when(reset(t0()))
            .then_expect_error(UserError::ResetTokenInvalid);
    }

    #[test]
    fn an_expired_reset_token_is_refused() {
        F::with(())
            .given(vec![registered(), reset_requested()])
            .when(reset(t0() + Duration::minutes(61)))
            .then_expect_error(UserError::ResetTokenExpired);
    }

    #[test]
    fn a_newer_reset_request_supersedes_the_older_token() {
        F::with(())
            .given(vec![
                registered(),
                reset_requested(),
                UserEvent::PasswordResetRequested {
                    reset_id: "rst_2".into(),
                    token_hash: "th2".into(),
                    expires_at: t0() + Duration::hours(1),
                },
            ])
            .when(reset(t0()))
            .then_expect_error(UserError::ResetTokenInvalid);
    }

    #[test]
    fn commands_on_an_unknown_user_fail() {
        F::with(())
            .given_no_previous_events()
            .when(UserCommand::GrantPlatformAdmin)
            .then_expect_error(UserError::NotRegistered);
    }
}
