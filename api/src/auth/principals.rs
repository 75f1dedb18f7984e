//! Resolved bearer tokens kept in memory, so that a poll does not read the session and the
//! memberships again every second.
//!
//! An entry is used only while nothing it depends on may have changed: it carries the
//! [`PrincipalsVersion`] read before its query, and that version moves, in this process, when
//! the identity projector commits (users, memberships) or a session is revoked (logout, reset),
//! before the writer answers; and, from the other processes, when their `NOTIFY` on
//! [`PRINCIPALS_CHANNEL`] arrives. While this process is not listening (not yet, or its
//! connection dropped) nothing is served from the cache. Entries also end with their session
//! and after [`MAX_AGE`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use parking_lot::Mutex;
use projections::identity::{PrincipalsVersion, SessionUser, PRINCIPALS_CHANNEL};
use sqlx::postgres::PgListener;
use sqlx::PgPool;

/// Longest an entry is used, whatever happens.
pub const MAX_AGE: Duration = Duration::from_secs(60);
const CAPACITY: usize = 50_000;

struct Entry {
    user: SessionUser,
    version: u64,
    at: Instant,
}

pub struct PrincipalCache {
    pub version: Arc<PrincipalsVersion>,
    entries: Mutex<HashMap<(String, String), Entry>>,
    listening: AtomicBool,
}

impl PrincipalCache {
    pub fn new(version: Arc<PrincipalsVersion>) -> Self {
        Self {
            version,
            entries: Mutex::new(HashMap::new()),
            listening: AtomicBool::new(false),
        }
    }

    /// The user of session `sid` of user `uid`, from memory when still good, else from the
    /// database.
    pub async fn session_user(
        &self,
        pool: &PgPool,
        sid: &str,
        uid: &str,
    ) -> sqlx::Result<Option<SessionUser>> {
        let version = self.version.current();
        let key = (sid.to_string(), uid.to_string());
        if self.listening.load(Ordering::Acquire) {
            let entries = self.entries.lock();
            if let Some(e) = entries.get(&key) {
                if e.version == version
                    && e.at.elapsed() < MAX_AGE
                    && e.user.expires_at > Utc::now()
                {
                    metrics::counter!("principal_cache_total", "result" => "hit").increment(1);
                    return Ok(Some(e.user.clone()));
                }
            }
        }
        metrics::counter!("principal_cache_total", "result" => "miss").increment(1);
        let user = projections::identity::session_user(pool, sid, uid).await?;
        if let Some(user) = &user {
            // Kept only if nothing changed while it was read.
            if self.listening.load(Ordering::Acquire) && self.version.current() == version {
                let mut entries = self.entries.lock();
                if entries.len() >= CAPACITY {
                    entries.clear();
                }
                entries.insert(
                    key,
                    Entry {
                        user: user.clone(),
                        version,
                        at: Instant::now(),
                    },
                );
            }
        }
        Ok(user)
    }

    /// Forgets everything cached (a session was revoked here).
    pub async fn changed(&self, pool: &PgPool) {
        self.version.changed(pool).await;
        self.entries.lock().clear();
    }

    fn stop_serving(&self) {
        self.listening.store(false, Ordering::Release);
        self.version.bump();
        self.entries.lock().clear();
    }

    /// Listens for the other processes' changes for as long as the process runs; the cache
    /// serves only while the listening connection is up.
    pub async fn listen(self: Arc<Self>, pool: PgPool) {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(PRINCIPALS_CHANNEL).await {
                        tracing::warn!(error = %e, "principal cache: cannot listen");
                    } else {
                        // Whatever changed before the listener was up is not known: start empty.
                        self.version.bump();
                        self.entries.lock().clear();
                        self.listening.store(true, Ordering::Release);
                        // Until the connection drops (`Ok(None)`: notifications may have
                        // been missed) or fails.
                        while let Ok(Some(_)) = listener.try_recv().await {
                            self.version.bump();
                            self.entries.lock().clear();
                        }
                    }
                    self.stop_serving();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "principal cache: cannot connect to listen");
                    self.stop_serving();
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
