//! The authenticated user of a request and the role rules every handler applies:
//! a foreign establishment answers 404 (its existence is not revealed), too low a role 403.

use std::sync::Arc;

use aggregates::common::Role;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sqlx::PgPool;

use crate::auth::principals::PrincipalCache;
use crate::auth::tokens::JwtKeys;
use crate::http::error::{ApiError, ApiResult};

/// What resolving a bearer token to a user needs: the token keys and the session store.
pub struct Sessions {
    pub jwt: Arc<JwtKeys>,
    pub pool: PgPool,
    pub cache: Arc<PrincipalCache>,
}

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

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    Arc<Sessions>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let sessions = Arc::<Sessions>::from_ref(state);
        let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let claims = sessions
            .jwt
            .verify(token)
            .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
        let user = sessions
            .cache
            .session_user(&sessions.pool, &claims.sid, &claims.sub)
            .await?
            .ok_or_else(|| ApiError::unauthorized("the session has ended; log in again"))?;
        let raw: Vec<(String, String)> =
            serde_json::from_value(user.memberships).map_err(ApiError::internal)?;
        let memberships = raw
            .into_iter()
            .filter_map(|(e, r)| r.parse().ok().map(|r| (e, r)))
            .collect();
        Ok(Principal {
            user_id: user.id,
            email: user.email,
            display_name: user.display_name,
            platform_admin: user.platform_admin,
            session_id: claims.sid,
            memberships,
        })
    }
}
