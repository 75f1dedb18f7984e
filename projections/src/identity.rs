//! Read models of users, establishments, memberships and invitations (`rm_users`,
//! `rm_establishments`, `rm_memberships`, `rm_invitations`).

use aggregates::establishment::EstablishmentEvent;
use aggregates::invitation::InvitationEvent;
use aggregates::user::UserEvent;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgConnection;

use crate::event::StoredEvent;
use crate::runner::Projection;

/// The identity read models; every batch it commits bumps `principals` (and notifies the
/// other processes), so cached principals are read again.
#[derive(Default)]
pub struct IdentityProjection {
    pub principals: Arc<PrincipalsVersion>,
}

/// The channel on which the processes tell each other that users, memberships or sessions
/// changed (a `NOTIFY` with no payload).
pub const PRINCIPALS_CHANNEL: &str = "principals_changed";

/// A counter that moves whenever what a bearer token resolves to may have changed: a cached
/// principal read under an older value is not used.
#[derive(Debug, Default)]
pub struct PrincipalsVersion(std::sync::atomic::AtomicU64);

impl PrincipalsVersion {
    pub fn current(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn bump(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Bumps here and tells the other processes (best effort: a process that misses it drops
    /// its cache when its listening connection comes back).
    pub async fn changed(&self, pool: &sqlx::PgPool) {
        self.bump();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(PRINCIPALS_CHANNEL)
            .execute(pool)
            .await
        {
            tracing::warn!(error = %e, "cannot notify the other processes of a principal change");
        }
    }
}

#[async_trait]
impl Projection for IdentityProjection {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["User", "Establishment", "Invitation"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "rm_users",
            "rm_establishments",
            "rm_memberships",
            "rm_invitations",
        ]
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for e in events {
            apply_event(tx, e).await?;
        }
        Ok(())
    }

    async fn after_commit(&self, pool: &sqlx::PgPool, _events: &[StoredEvent]) {
        self.principals.changed(pool).await;
    }
}

async fn apply_event(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    match e.aggregate_type.as_str() {
        "User" => apply_user(tx, e).await,
        "Establishment" => apply_establishment(tx, e).await,
        "Invitation" => apply_invitation(tx, e).await,
        _ => Ok(()),
    }
}

async fn apply_user(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let id = &e.aggregate_id;
    let at = e.recorded_at;
    match e.decode::<UserEvent>()? {
        UserEvent::UserRegistered {
            email,
            display_name,
            password_hash,
            platform_admin,
            ..
        } => {
            sqlx::query(
                "INSERT INTO rm_users (id, email, display_name, password_hash, platform_admin, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(id)
            .bind(email.as_str())
            .bind(display_name)
            .bind(password_hash)
            .bind(platform_admin)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        UserEvent::PasswordReset { password_hash, .. } => {
            sqlx::query("UPDATE rm_users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(password_hash)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        UserEvent::DisplayNameChanged { display_name } => {
            sqlx::query("UPDATE rm_users SET display_name = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(display_name)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        UserEvent::PlatformAdminGranted => {
            sqlx::query("UPDATE rm_users SET platform_admin = true, updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        UserEvent::PasswordResetRequested { .. } => {}
    }
    Ok(())
}

async fn apply_establishment(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let id = &e.aggregate_id;
    let at = e.recorded_at;
    match e.decode::<EstablishmentEvent>()? {
        EstablishmentEvent::EstablishmentCreated {
            name,
            timezone,
            locale,
            created_by,
            ..
        } => {
            sqlx::query(
                "INSERT INTO rm_establishments (id, name, timezone, locale, created_by, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(id)
            .bind(name)
            .bind(timezone.as_str())
            .bind(locale.as_str())
            .bind(created_by)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        EstablishmentEvent::EstablishmentUpdated {
            name,
            timezone,
            locale,
        } => {
            sqlx::query(
                "UPDATE rm_establishments SET name = COALESCE($2, name),
                    timezone = COALESCE($3, timezone), locale = COALESCE($4, locale), updated_at = $5
                 WHERE id = $1",
            )
            .bind(id)
            .bind(name)
            .bind(timezone.map(|t| t.as_str()))
            .bind(locale.map(|l| l.as_str().to_string()))
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        EstablishmentEvent::MemberAdded { user_id, role } => {
            sqlx::query(
                "INSERT INTO rm_memberships (establishment_id, user_id, role, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(id)
            .bind(user_id)
            .bind(role.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        EstablishmentEvent::MemberRoleChanged { user_id, to, .. } => {
            sqlx::query(
                "UPDATE rm_memberships SET role = $3, updated_at = $4
                 WHERE establishment_id = $1 AND user_id = $2",
            )
            .bind(id)
            .bind(user_id)
            .bind(to.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        EstablishmentEvent::MemberRemoved { user_id, .. } => {
            sqlx::query("DELETE FROM rm_memberships WHERE establishment_id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

async fn apply_invitation(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let id = &e.aggregate_id;
    let at = e.recorded_at;
    match e.decode::<InvitationEvent>()? {
        InvitationEvent::InvitationSent {
            establishment_id,
            email,
            role,
            expires_at,
            invited_by,
            ..
        } => {
            sqlx::query(
                "INSERT INTO rm_invitations (id, establishment_id, email, role, status, invited_by,
                    expires_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $7)",
            )
            .bind(id)
            .bind(establishment_id)
            .bind(email.as_str())
            .bind(role.as_str())
            .bind(invited_by)
            .bind(expires_at)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        InvitationEvent::InvitationAccepted { user_id } => {
            sqlx::query(
                "UPDATE rm_invitations SET status = 'accepted', accepted_by = $2, updated_at = $3
                 WHERE id = $1",
            )
            .bind(id)
            .bind(user_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        InvitationEvent::InvitationRevoked => {
            sqlx::query(
                "UPDATE rm_invitations SET status = 'revoked', updated_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads of `rm_establishments`
// ---------------------------------------------------------------------------------------------

pub async fn establishment_exists(pool: &sqlx::PgPool, id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM rm_establishments WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
}

/// The establishment's locale (e.g. `pt-BR`).
pub async fn establishment_locale(pool: &sqlx::PgPool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT locale FROM rm_establishments WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// An establishment as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EstablishmentRow {
    pub id: String,
    pub name: String,
    pub timezone: String,
    pub locale: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

const ESTABLISHMENT_COLUMNS: &str = "id, name, timezone, locale, created_at";

pub async fn establishment(
    pool: &sqlx::PgPool,
    id: &str,
) -> sqlx::Result<Option<EstablishmentRow>> {
    sqlx::query_as(&format!(
        "SELECT {ESTABLISHMENT_COLUMNS} FROM rm_establishments WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Establishments among `ids` (`None`: all of them), oldest first.
pub async fn establishments(
    pool: &sqlx::PgPool,
    ids: Option<&[String]>,
) -> sqlx::Result<Vec<EstablishmentRow>> {
    sqlx::query_as(&format!(
        "SELECT {ESTABLISHMENT_COLUMNS} FROM rm_establishments
         WHERE $1::text[] IS NULL OR id = ANY($1) ORDER BY created_at, id"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// The establishment's name.
pub async fn establishment_name(pool: &sqlx::PgPool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT name FROM rm_establishments WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

// ---------------------------------------------------------------------------------------------
// Reads of `rm_users` and `rm_memberships`
// ---------------------------------------------------------------------------------------------

/// The user of a live session with their memberships (oldest first): `None` when the session
/// is unknown, revoked or expired.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionUser {
    pub id: String,
    /// When the session ends.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub email: String,
    pub display_name: String,
    pub platform_admin: bool,
    /// `[[establishment_id, role], …]`
    pub memberships: serde_json::Value,
}

pub async fn session_user(
    pool: &sqlx::PgPool,
    session_id: &str,
    user_id: &str,
) -> sqlx::Result<Option<SessionUser>> {
    sqlx::query_as(
        "SELECT u.id, s.expires_at, u.email, u.display_name, u.platform_admin,
                COALESCE((SELECT json_agg(json_build_array(m.establishment_id, m.role) ORDER BY m.created_at, m.establishment_id)
                          FROM rm_memberships m WHERE m.user_id = u.id), '[]'::json)::jsonb AS memberships
         FROM sessions s JOIN rm_users u ON u.id = s.user_id
         WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > now()",
    )
    .bind(session_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// An account as login needs it (`password_hash` is `None` for accounts without a password).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: Option<String>,
}

/// The account of a (lower-case) e-mail address.
pub async fn account_by_email(
    pool: &sqlx::PgPool,
    email: &str,
) -> sqlx::Result<Option<AccountRow>> {
    sqlx::query_as("SELECT id, email, display_name, password_hash FROM rm_users WHERE email = $1")
        .bind(email)
        .fetch_optional(pool)
        .await
}

/// The establishment a user joined first (the UI opens it after login).
pub async fn first_establishment_of(
    pool: &sqlx::PgPool,
    user_id: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT establishment_id FROM rm_memberships WHERE user_id = $1
         ORDER BY created_at, establishment_id LIMIT 1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// Whether the account of `email` is a member of the establishment.
pub async fn is_member_by_email(
    pool: &sqlx::PgPool,
    establishment_id: &str,
    email: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM rm_memberships m JOIN rm_users u ON u.id = m.user_id
                        WHERE m.establishment_id = $1 AND u.email = $2)",
    )
    .bind(establishment_id)
    .bind(email)
    .fetch_one(pool)
    .await
}

/// A member of an establishment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    pub joined_at: chrono::DateTime<chrono::Utc>,
}

/// Members of an establishment, in joining order.
pub async fn members(pool: &sqlx::PgPool, establishment_id: &str) -> sqlx::Result<Vec<MemberRow>> {
    sqlx::query_as(
        "SELECT u.id AS user_id, u.email, u.display_name, m.role, m.created_at AS joined_at
         FROM rm_memberships m JOIN rm_users u ON u.id = m.user_id
         WHERE m.establishment_id = $1 ORDER BY m.created_at, u.id",
    )
    .bind(establishment_id)
    .fetch_all(pool)
    .await
}

// ---------------------------------------------------------------------------------------------
// Reads of `rm_invitations`
// ---------------------------------------------------------------------------------------------

/// An invitation as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvitationRow {
    pub id: String,
    pub email: String,
    pub role: String,
    pub status: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Invitations of an establishment still waiting for an answer (pending, not expired), oldest
/// first.
pub async fn pending_invitations(
    pool: &sqlx::PgPool,
    establishment_id: &str,
) -> sqlx::Result<Vec<InvitationRow>> {
    sqlx::query_as(
        "SELECT id, email, role, status, expires_at FROM rm_invitations
         WHERE establishment_id = $1 AND status = 'pending' AND expires_at > now() ORDER BY created_at",
    )
    .bind(establishment_id)
    .fetch_all(pool)
    .await
}
