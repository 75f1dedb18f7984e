//! Login sessions (`sessions`): the row an access token names. Not domain state and not a read
//! model: a login opens one, a logout revokes it, a password reset revokes them all, and the
//! token stops working at once (`http::principal` reads it with the user).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Opens a session for the user until `expires_at`; answers its id.
pub async fn open(pool: &PgPool, user_id: &str, expires_at: DateTime<Utc>) -> sqlx::Result<String> {
    let session_id = crate::ids::new_id("ses");
    sqlx::query("INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(&session_id)
        .bind(user_id)
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(session_id)
}

/// Ends one session.
pub async fn revoke(pool: &PgPool, session_id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(session_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends every session of a user.
pub async fn revoke_all(pool: &PgPool, user_id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(())
}
