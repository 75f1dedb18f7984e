//! Use cases of access to an account: login, logout, and the password reset by a mailed
//! one-time token (forgot, then reset; a reset ends every session of the account). Login,
//! forgot and reset are throttled through counters shared by every process, counted before the
//! attempt is judged (`auth::throttle`); a reset token is checked before the new password is
//! hashed, so a forged token costs the server nothing.

use std::sync::Arc;

use aggregates::common::Email;
use aggregates::user::{User, UserCommand, UserError, EMAIL_CLAIM};
use chrono::{Duration, Utc};
use projections::identity;
use sqlx::PgPool;

use super::{unexpected_from, Invalid, Unexpected};
use crate::adapters::smtp::Mail;
use crate::auth::principals::PrincipalCache;
use crate::auth::throttle::Throttle;
use crate::auth::tokens::{one_time_token, parse_one_time_token, JwtKeys};
use crate::auth::{password, sessions};
use crate::background::{Background, WorkQueue};
use crate::store::{Actor, CommandBus, CommandContext, ExecError, ExecOptions};

/// Longest e-mail address and password a login looks at.
const MAX_EMAIL: usize = 254;
const MAX_PASSWORD: usize = 1024;

/// How long a mailed reset token stays valid.
pub const RESET_TTL_HOURS: i64 = 1;

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub access_token: String,
    /// Seconds the token (and its session) lives.
    pub expires_in: u64,
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    /// The establishment the user joined first.
    pub default_establishment_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("too many failed attempts; retry in {0} s")]
    Throttled(u64),
    #[error("the e-mail or the password is wrong")]
    InvalidCredentials,
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

/// Too many requests of this kind from this client (or for this account): retry in that many
/// seconds.
#[derive(Debug, thiserror::Error)]
#[error("too many requests; retry in {0} s")]
pub struct Throttled(pub u64);

#[derive(Debug, thiserror::Error)]
pub enum ForgotError {
    #[error(transparent)]
    Throttled(#[from] Throttled),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error(transparent)]
    Throttled(#[from] Throttled),
    #[error("the reset token has expired")]
    Expired,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the reset token is invalid or has already been used")]
    InvalidToken,
    #[error(transparent)]
    Command(#[from] ExecError<UserError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}

unexpected_from!(LoginError, ResetError, ForgotError);

/// The account-access use cases.
pub struct Accounts {
    pub bus: Arc<CommandBus>,
    /// Told when a session ends, so no process goes on accepting its token.
    pub principals: Arc<PrincipalCache>,
    pub pool: PgPool,
    pub jwt: Arc<JwtKeys>,
    pub throttle: Arc<Throttle>,
    pub mailer: WorkQueue<Mail>,
    /// Counts a reset request in flight (it runs after the caller has its answer).
    pub background: Background,
    /// Lifetime of an access token and its session.
    pub access_token_ttl_seconds: u64,
    /// Base of the links in mails.
    pub frontend_base_url: String,
}

impl Accounts {
    /// Exchanges e-mail and password for an access token; `client` is the caller's address
    /// (for the throttle).
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: &str,
    ) -> Result<LoggedIn, LoginError> {
        let account = email.trim().to_ascii_lowercase();
        if account.len() > MAX_EMAIL || password.len() > MAX_PASSWORD {
            return Err(Invalid::new("email", "too long").into());
        }
        let keys = self.throttle.login_keys(&account, client);
        if let Some(wait) = self.throttle.attempt(&keys).await? {
            metrics::counter!("logins_throttled_total").increment(1);
            return Err(LoginError::Throttled(wait));
        }
        let found = identity::account_by_email(&self.pool, &account).await?;
        let hash = found.as_ref().and_then(|a| a.password_hash.clone());
        // An unknown account still costs one verification (no timing oracle).
        let ok = password::verify(password, hash).await;
        let Some(user) = found.filter(|_| ok) else {
            metrics::counter!("logins_failed_total").increment(1);
            return Err(LoginError::InvalidCredentials);
        };
        // This client's attempts on this account start over; its attempts on others do not.
        self.throttle.clear(&[keys[0].0.clone()]).await?;
        let ttl = self.access_token_ttl_seconds;
        let expires_at = Utc::now() + Duration::seconds(ttl as i64);
        let session_id = sessions::open(&self.pool, &user.id, expires_at).await?;
        let access_token = self.jwt.sign(&user.id, &session_id, expires_at)?;
        let default_establishment_id =
            identity::first_establishment_of(&self.pool, &user.id).await?;
        Ok(LoggedIn {
            access_token,
            expires_in: ttl,
            user_id: user.id,
            email: user.email,
            display_name: user.display_name,
            default_establishment_id,
        })
    }

    /// Ends a session: its token stops working at once.
    pub async fn logout(&self, session_id: &str) -> Result<(), Unexpected> {
        sessions::revoke(&self.pool, session_id).await?;
        self.principals.changed(&self.pool).await;
        Ok(())
    }

    /// Mails a single-use reset token when `email` has an account. The work happens after the
    /// caller has its answer, so neither the answer nor its timing reveals whether the account
    /// exists.
    pub async fn forgot_password(
        self: &Arc<Self>,
        email: String,
        client: &str,
        request_id: String,
    ) -> Result<(), ForgotError> {
        // Keyed on the address as given (bounded), whether or not it has an account, so the
        // throttle reveals nothing either.
        let account: String = email
            .trim()
            .to_ascii_lowercase()
            .chars()
            .take(MAX_EMAIL)
            .collect();
        if let Some(wait) = self
            .throttle
            .attempt(&self.throttle.forgot_keys(&account, client))
            .await?
        {
            metrics::counter!("password_resets_throttled_total").increment(1);
            return Err(Throttled(wait).into());
        }
        let job = self.background.job();
        let accounts = self.clone();
        tokio::spawn(async move {
            let _job = job;
            if let Err(e) = accounts.send_reset(&email, &request_id).await {
                tracing::error!(error = %format!("{e:#}"), "password reset request failed");
            }
        });
        Ok(())
    }

    async fn send_reset(&self, email: &str, request_id: &str) -> anyhow::Result<()> {
        let Ok(email) = email.parse::<Email>() else {
            return Ok(());
        };
        let Some(user_id) = self
            .bus
            .store()
            .claim_owner(EMAIL_CLAIM, email.as_str())
            .await?
        else {
            return Ok(());
        };
        let reset_id = crate::ids::new_id("rst");
        let (token, token_hash) = one_time_token(&format!("{user_id}:{reset_id}"));
        let ctx = CommandContext::from_request(Actor::System("password-reset".into()), request_id);
        self.bus
            .execute::<User>(
                &user_id,
                UserCommand::RequestPasswordReset {
                    reset_id,
                    token_hash,
                    expires_at: Utc::now() + Duration::hours(RESET_TTL_HOURS),
                },
                &ctx,
                ExecOptions::default(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.mailer.enqueue(super::messages::password_reset(
            email.as_str(),
            &self.frontend_base_url,
            &token,
        ));
        Ok(())
    }

    /// Sets a new password with a mailed reset token (single use) and ends every session of
    /// the account.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &str,
        client: &str,
        request_id: &str,
    ) -> Result<(), ResetError> {
        if let Some(wait) = self
            .throttle
            .attempt(&self.throttle.reset_keys(client))
            .await?
        {
            return Err(Throttled(wait).into());
        }
        password::check_policy(new_password)?;
        let (id, token_hash) = parse_one_time_token(token).ok_or(ResetError::InvalidToken)?;
        let (user_id, reset_id) = id.split_once(':').ok_or(ResetError::InvalidToken)?;
        if !crate::ids::is_id("usr", user_id) {
            return Err(ResetError::InvalidToken);
        }
        // The token first: hashing a password is the costly part, and a forged token must not
        // make the server do it.
        let (user, _) = self.bus.load::<User>(user_id).await?;
        match user.check_reset_token(reset_id, &token_hash, Utc::now()) {
            Ok(()) => {}
            Err(UserError::ResetTokenExpired) => return Err(ResetError::Expired),
            Err(_) => return Err(ResetError::InvalidToken),
        }
        let ctx = CommandContext::from_request(Actor::User(user_id.to_string()), request_id);
        let outcome = self
            .bus
            .execute::<User>(
                user_id,
                UserCommand::ResetPassword {
                    reset_id: reset_id.to_string(),
                    token_hash,
                    password_hash: password::hash(new_password).await?,
                    now: Utc::now(),
                },
                &ctx,
                ExecOptions::default(),
            )
            .await
            .map_err(|e| match e {
                ExecError::Domain(UserError::NotRegistered) => ResetError::InvalidToken,
                e => e.into(),
            })?;
        sessions::revoke_all(&self.pool, user_id).await?;
        self.principals.changed(&self.pool).await;
        self.bus.visible(&outcome).await;
        Ok(())
    }
}
