//! The authenticated user of a request and the role rules every handler applies:
//! a foreign establishment answers 404 (its existence is not revealed), too low a role 403.

use aggregates::common::Role;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sqlx::Row;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    pub platform_admin: bool,
    pub session_id: String,
    /// (establishment id, role), oldest membership first.
    pub memberships: Vec<(String, Role)>,
}

fn rank(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::Operator => 1,
        Role::Admin => 2,
    }
}

impl Principal {
    /// The caller's role in an establishment; platform admins act as admins everywhere.
    pub fn role_in(&self, establishment_id: &str) -> Option<Role> {
        if self.platform_admin {
            return Some(Role::Admin);
        }
        self.memberships
            .iter()
            .find(|(e, _)| e == establishment_id)
            .map(|(_, r)| *r)
    }

    /// The caller's role, or 404 when the caller does not belong to the establishment.
    pub fn member_of(&self, establishment_id: &str) -> ApiResult<Role> {
        self.role_in(establishment_id)
            .ok_or_else(|| ApiError::not_found("establishment"))
    }

    /// 404 for outsiders, 403 for members below `needed`.
    pub fn require(&self, establishment_id: &str, needed: Role) -> ApiResult<Role> {
        let role = self.member_of(establishment_id)?;
        if rank(role) < rank(needed) {
            return Err(ApiError::forbidden(format!(
                "this action needs the {needed} role; you are {role}"
            )));
        }
        Ok(role)
    }

    /// Establishments where the caller is an admin (all of them means: platform admin).
    pub fn admin_of(&self) -> Vec<String> {
        self.memberships
            .iter()
            .filter(|(_, r)| *r == Role::Admin)
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Establishments the caller may read (`None`: all, for platform admins).
    pub fn readable_establishments(&self) -> Option<Vec<String>> {
        if self.platform_admin {
            None
        } else {
            Some(self.memberships.iter().map(|(e, _)| e.clone()).collect())
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let claims = state
            .jwt
            .verify(token)
            .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
        let row = sqlx::query(
            "SELECT u.id, u.email, u.display_name, u.platform_admin,
                    COALESCE((SELECT json_agg(json_build_array(m.establishment_id, m.role) ORDER BY m.created_at, m.establishment_id)
                              FROM rm_memberships m WHERE m.user_id = u.id), '[]'::json) AS memberships
             FROM sessions s JOIN rm_users u ON u.id = s.user_id
             WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > now()",
        )
        .bind(&claims.sid)
        .bind(&claims.sub)
        .fetch_optional(&state.pool)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the session has ended; log in again"))?;
        let raw: Vec<(String, String)> =
            serde_json::from_value(row.get::<serde_json::Value, _>("memberships"))
                .map_err(ApiError::internal)?;
        let memberships = raw
            .into_iter()
            .filter_map(|(e, r)| r.parse().ok().map(|r| (e, r)))
            .collect();
        Ok(Principal {
            user_id: row.get("id"),
            email: row.get("email"),
            display_name: row.get("display_name"),
            platform_admin: row.get("platform_admin"),
            session_id: claims.sid,
            memberships,
        })
    }
}
