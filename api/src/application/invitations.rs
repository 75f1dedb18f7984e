//! Use cases of invitations: an establishment admin invites someone by e-mail with a role (a
//! mailed single-use token, valid seven days); the invitee accepts, which creates the account
//! when the e-mail has none, adds the membership and marks the invitation used — three
//! aggregates (User, Establishment, Invitation), each keeping its own rule.

use std::sync::Arc;

use aggregates::common::{bounded_text, Email, Role};
use aggregates::establishment::{Establishment, EstablishmentCommand, EstablishmentError};
use aggregates::invitation::{Invitation, InvitationCommand, InvitationError, InvitationStatus};
use aggregates::user::{User, UserCommand, UserError, EMAIL_CLAIM};
use chrono::{DateTime, Duration, Utc};
use projections::identity;
use sqlx::PgPool;

use super::{unexpected_from, Invalid, Unexpected};
use crate::adapters::smtp::Mail;
use crate::auth::password;
use crate::auth::tokens::{one_time_token, parse_one_time_token};
use crate::background::WorkQueue;
use crate::store::{Actor, CommandBus, CommandContext, ExecError, ExecOptions};

/// How long an invitation stays valid.
pub const INVITATION_TTL_DAYS: i64 = 7;

/// Longest display name of an account an invitation creates.
pub const MAX_DISPLAY_NAME: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("this person is already a member")]
    AlreadyMember,
    #[error("establishment not found")]
    EstablishmentNotFound,
    #[error(transparent)]
    Command(#[from] ExecError<InvitationError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

/// An answer to an invitation, as the invitee sent it.
#[derive(Debug, Clone)]
pub struct Acceptance {
    pub request_id: String,
    pub token: String,
    /// Required when the invited e-mail has no account yet.
    pub password: Option<String>,
    /// Required when the invited e-mail has no account yet.
    pub display_name: Option<String>,
}

/// The membership an accepted invitation gave.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub user_id: String,
    pub establishment_id: String,
    pub role: Role,
    /// Whether the invitation created the account (else it joined an existing one).
    pub account_created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("the invitation token is invalid")]
    InvalidToken,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Invitation(#[from] ExecError<InvitationError>),
    #[error(transparent)]
    Registration(#[from] ExecError<UserError>),
    #[error(transparent)]
    Membership(#[from] ExecError<EstablishmentError>),
    /// The e-mail was registered by someone else meanwhile, yet its owner cannot be found.
    #[error("the account is being created concurrently; retry")]
    Concurrent,
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

unexpected_from!(InviteError, AcceptError);

/// The invitation use cases.
pub struct Invitations {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
    pub mailer: WorkQueue<Mail>,
    /// Base of the links in mails.
    pub frontend_base_url: String,
}

impl Invitations {
    /// Invites `email` into the establishment (the caller checked the acting user is one of
    /// its admins) and mails the token; answers the invitation's id.
    pub async fn invite(
        &self,
        ctx: &CommandContext,
        establishment_id: &str,
        email: Email,
        role: Role,
    ) -> Result<String, InviteError> {
        if identity::is_member_by_email(&self.pool, establishment_id, email.as_str()).await? {
            return Err(InviteError::AlreadyMember);
        }
        let establishment_name = identity::establishment_name(&self.pool, establishment_id)
            .await?
            .ok_or(InviteError::EstablishmentNotFound)?;
        let invitation_id = crate::ids::new_id("inv");
        let (token, token_hash) = one_time_token(&invitation_id);
        let outcome = self
            .bus
            .execute::<Invitation>(
                &invitation_id,
                InvitationCommand::Send {
                    invitation_id: invitation_id.clone(),
                    establishment_id: establishment_id.to_string(),
                    email: email.clone(),
                    role,
                    token_hash,
                    expires_at: Utc::now() + Duration::days(INVITATION_TTL_DAYS),
                    invited_by: ctx.actor.id().to_string(),
                },
                ctx,
                ExecOptions::default().fresh(),
            )
            .await?;
        self.mailer.enqueue(super::messages::invitation(
            email.as_str(),
            &establishment_name,
            role.as_str(),
            &self.frontend_base_url,
            &token,
        ));
        self.bus.visible(&outcome).await;
        Ok(invitation_id)
    }

    /// Accepts an invitation: creates the account, or joins the existing account of the
    /// invited e-mail (no password needed then), adds the membership and uses the invitation.
    pub async fn accept(&self, answer: Acceptance) -> Result<Accepted, AcceptError> {
        let (invitation_id, token_hash) =
            parse_one_time_token(&answer.token).ok_or(AcceptError::InvalidToken)?;
        if !crate::ids::is_id("inv", &invitation_id) {
            return Err(AcceptError::InvalidToken);
        }
        let (invitation, _) = self.bus.load::<Invitation>(&invitation_id).await?;
        if invitation.status == InvitationStatus::None {
            return Err(AcceptError::InvalidToken);
        }
        let now = Utc::now();
        // Check the token before creating anything (the Accept below re-checks atomically).
        invitation
            .decide(accept(&token_hash, String::new(), now))
            .map_err(ExecError::Domain)?;
        let (Some(email), Some(role)) = (invitation.email.clone(), invitation.role) else {
            return Err(AcceptError::InvalidToken);
        };
        let establishment_id = invitation.establishment_id.clone();
        let (user_id, account_created) = self.account_of(&email, &answer).await?;
        let ctx = CommandContext::from_request(Actor::User(user_id.clone()), &answer.request_id)
            .in_establishment(&establishment_id);
        let joined = self
            .bus
            .execute::<Establishment>(
                &establishment_id,
                EstablishmentCommand::AddMember {
                    user_id: user_id.clone(),
                    role,
                },
                &ctx,
                ExecOptions::default(),
            )
            .await?;
        let accepted = self
            .bus
            .execute::<Invitation>(
                &invitation_id,
                accept(&token_hash, user_id.clone(), now),
                &ctx,
                ExecOptions::default(),
            )
            .await?;
        self.bus.visible(&joined).await;
        self.bus.visible(&accepted).await;
        Ok(Accepted {
            user_id,
            establishment_id,
            role,
            account_created,
        })
    }

    /// The account of the invited e-mail, registered from the answer when there is none yet;
    /// with whether it was created.
    async fn account_of(
        &self,
        email: &Email,
        answer: &Acceptance,
    ) -> Result<(String, bool), AcceptError> {
        let store = self.bus.store();
        if let Some(id) = store.claim_owner(EMAIL_CLAIM, email.as_str()).await? {
            return Ok((id, false));
        }
        let pw = answer
            .password
            .as_deref()
            .ok_or_else(|| Invalid::new("password", "is required to create the account"))?;
        password::check_policy(pw)?;
        let display_name = answer
            .display_name
            .as_deref()
            .ok_or_else(|| Invalid::new("display_name", "is required to create the account"))?;
        let display_name =
            bounded_text("display_name", display_name, MAX_DISPLAY_NAME).map_err(Invalid::from)?;
        let user_id = crate::ids::new_id("usr");
        let ctx = CommandContext::from_request(Actor::User(user_id.clone()), &answer.request_id);
        match self
            .bus
            .execute::<User>(
                &user_id,
                UserCommand::Register {
                    user_id: user_id.clone(),
                    email: email.clone(),
                    display_name,
                    password_hash: Some(password::hash(pw).await?),
                    platform_admin: false,
                },
                &ctx,
                ExecOptions::default(),
            )
            .await
        {
            Ok(outcome) => {
                self.bus.visible(&outcome).await;
                Ok((user_id, true))
            }
            // Someone registered this e-mail meanwhile: join with that account.
            Err(ExecError::ClaimTaken { .. }) => store
                .claim_owner(EMAIL_CLAIM, email.as_str())
                .await?
                .map(|id| (id, false))
                .ok_or(AcceptError::Concurrent),
            Err(e) => Err(e.into()),
        }
    }
}

fn accept(token_hash: &str, user_id: String, now: DateTime<Utc>) -> InvitationCommand {
    InvitationCommand::Accept {
        token_hash: token_hash.to_string(),
        user_id,
        now,
    }
}
