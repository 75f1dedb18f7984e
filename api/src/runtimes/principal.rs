//! `RuntimePrincipal`: a request made by an agent runtime, authenticated by the token it was
//! given in `CONTROL_PLANE_TOKEN` (stored only as a SHA-256 hash) and scoped to its
//! establishment.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sqlx::PgPool;

use crate::app::AppState;
use crate::auth::principal::bearer;
use crate::auth::tokens::hash_secret;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePrincipal {
    pub runtime_id: String,
    pub establishment_id: String,
}

impl RuntimePrincipal {
    /// The runtime holding `token`, if any.
    pub async fn lookup(pool: &PgPool, token: &str) -> ApiResult<Option<Self>> {
        if token.len() > 256 {
            return Ok(None);
        }
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT id, establishment_id FROM rm_runtimes WHERE token_hash = $1")
                .bind(hash_secret(token))
                .fetch_optional(pool)
                .await?;
        Ok(row.map(|(runtime_id, establishment_id)| Self {
            runtime_id,
            establishment_id,
        }))
    }
}

/// How long a runtime token stays trusted without a database look-up.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);
const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// Recently seen runtime tokens (by hash).
#[derive(Default)]
pub struct TokenCache(parking_lot::Mutex<HashMap<String, (RuntimePrincipal, Instant)>>);

impl TokenCache {
    fn get(&self, hash: &str) -> Option<RuntimePrincipal> {
        let map = self.0.lock();
        map.get(hash)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(p, _)| p.clone())
    }

    fn put(&self, hash: String, p: RuntimePrincipal) {
        let mut map = self.0.lock();
        if map.len() >= TOKEN_CACHE_CAPACITY {
            map.retain(|_, (_, at)| at.elapsed() < TOKEN_CACHE_TTL);
            if map.len() >= TOKEN_CACHE_CAPACITY {
                map.clear();
            }
        }
        map.insert(hash, (p, Instant::now()));
    }
}

impl FromRequestParts<AppState> for RuntimePrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token (the runtime token)"))?;
        let hash = hash_secret(token);
        if let Some(p) = state.runtimes.token_cache.get(&hash) {
            return Ok(p);
        }
        let p = Self::lookup(&state.pool, token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown runtime token"))?;
        state.runtimes.token_cache.put(hash, p.clone());
        Ok(p)
    }
}
