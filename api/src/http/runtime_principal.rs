//! `RuntimePrincipal`: a request made by an agent runtime, authenticated by the token it was
//! given in `CONTROL_PLANE_TOKEN` (stored only as a SHA-256 hash) and scoped to its
//! establishment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use sqlx::PgPool;

use crate::application::ingestion::RuntimeIdentity;
use crate::auth::tokens::hash_secret;
use crate::http::error::ApiError;
use crate::http::principal::bearer;

/// The runtime behind a request.
pub type RuntimePrincipal = RuntimeIdentity;

/// How long a runtime token stays trusted without a database look-up.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);
const TOKEN_CACHE_CAPACITY: usize = 10_000;
/// Longer than any token the control plane issues.
const MAX_TOKEN_LEN: usize = 256;

/// Resolves runtime tokens, remembering recent ones (by hash) so ingestion does not look the
/// token up on every event.
pub struct RuntimeTokens {
    pool: PgPool,
    cache: parking_lot::Mutex<HashMap<String, (RuntimeIdentity, Instant)>>,
}

impl RuntimeTokens {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Default::default(),
        }
    }

    fn cached(&self, hash: &str) -> Option<RuntimeIdentity> {
        let map = self.cache.lock();
        map.get(hash)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(p, _)| p.clone())
    }

    fn remember(&self, hash: String, p: RuntimeIdentity) {
        let mut map = self.cache.lock();
        if map.len() >= TOKEN_CACHE_CAPACITY {
            map.retain(|_, (_, at)| at.elapsed() < TOKEN_CACHE_TTL);
            if map.len() >= TOKEN_CACHE_CAPACITY {
                map.clear();
            }
        }
        map.insert(hash, (p, Instant::now()));
    }

    /// The runtime holding `token`, if any.
    pub async fn resolve(&self, token: &str) -> Result<Option<RuntimeIdentity>, sqlx::Error> {
        if token.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let hash = hash_secret(token);
        if let Some(p) = self.cached(&hash) {
            return Ok(Some(p));
        }
        let found = projections::runtimes::by_token_hash(&self.pool, &hash)
            .await?
            .map(|(runtime_id, establishment_id)| RuntimeIdentity {
                runtime_id,
                establishment_id,
            });
        if let Some(p) = &found {
            self.remember(hash, p.clone());
        }
        Ok(found)
    }
}

impl<S> FromRequestParts<S> for RuntimeIdentity
where
    S: Send + Sync,
    Arc<RuntimeTokens>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token (the runtime token)"))?;
        Arc::<RuntimeTokens>::from_ref(state)
            .resolve(token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown runtime token"))
    }
}
