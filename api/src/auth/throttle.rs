//! Throttles of the unauthenticated endpoints (login, forgot-password, reset-password), kept in
//! PostgreSQL so every control-plane process shares them, and counted atomically BEFORE the
//! attempt is judged: parallel guesses cannot slip through between a check and a count.
//!
//! Each key is a fixed-window counter (`rate_limits`): one statement bumps every key of an
//! attempt and answers whether any is over its limit, and for how long. Keys are chosen so that
//! nobody can lock a victim out: login failures count per (account, client) and per client,
//! never per account alone, so failures from other addresses never block the victim's own
//! (docs/security.md).

use std::time::Duration;

use sqlx::PgPool;

/// A limit: at most `max` attempts per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max: u32,
    pub window: Duration,
}

impl Limit {
    pub const fn per_minutes(max: u32, minutes: u64) -> Self {
        Self {
            max,
            window: Duration::from_secs(minutes * 60),
        }
    }
}

/// The limits of each throttled action (defaults documented in docs/security.md).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Login attempts of one account from one client.
    pub login_account_client: Limit,
    /// Login attempts from one client, whatever the account.
    pub login_client: Limit,
    /// Reset mails asked for one address (whether or not it has an account).
    pub forgot_account: Limit,
    /// Reset mails asked from one client.
    pub forgot_client: Limit,
    /// Reset attempts from one client.
    pub reset_client: Limit,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            login_account_client: Limit::per_minutes(5, 15),
            login_client: Limit::per_minutes(30, 15),
            forgot_account: Limit::per_minutes(3, 60),
            forgot_client: Limit::per_minutes(20, 60),
            reset_client: Limit::per_minutes(10, 15),
        }
    }
}

/// The throttle over the shared counters.
pub struct Throttle {
    pool: PgPool,
    pub limits: Limits,
}

impl Throttle {
    pub fn new(pool: PgPool, limits: Limits) -> Self {
        Self { pool, limits }
    }

    /// Counts one attempt under every key and answers `Some(seconds)` to wait when any key is
    /// now over its limit.
    pub async fn attempt(&self, keys: &[(String, Limit)]) -> Result<Option<u64>, sqlx::Error> {
        let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        let windows: Vec<i32> = keys
            .iter()
            .map(|(_, l)| l.window.as_secs().min(i32::MAX as u64) as i32)
            .collect();
        let rows: Vec<(String, i32, f64)> = sqlx::query_as(
            "INSERT INTO rate_limits AS r (key, window_start, window_secs, hits)
             SELECT k, now(), w, 1 FROM UNNEST($1::text[], $2::int[]) AS u(k, w)
             ON CONFLICT (key) DO UPDATE SET
                 window_start = CASE WHEN r.window_start <= now() - make_interval(secs => r.window_secs)
                                     THEN now() ELSE r.window_start END,
                 window_secs = EXCLUDED.window_secs,
                 hits = CASE WHEN r.window_start <= now() - make_interval(secs => r.window_secs)
                             THEN 1 ELSE r.hits + 1 END
             RETURNING key, hits,
                 extract(epoch FROM (r.window_start + make_interval(secs => r.window_secs) - now()))::float8",
        )
        .bind(&names)
        .bind(&windows)
        .fetch_all(&self.pool)
        .await?;
        let mut wait: Option<u64> = None;
        for (key, hits, left) in rows {
            let Some((_, limit)) = keys.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            if hits as i64 > limit.max as i64 {
                let secs = left.max(0.0).ceil() as u64 + 1;
                wait = Some(wait.map_or(secs, |w| w.max(secs)));
            }
        }
        if rand::random::<u16>().is_multiple_of(1024) {
            self.prune().await?;
        }
        Ok(wait)
    }

    /// Forgets the counts of these keys (a successful login clears its own key).
    pub async fn clear(&self, keys: &[String]) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM rate_limits WHERE key = ANY($1)")
            .bind(keys)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops counters whose window ended long ago (keys cost nothing once expired).
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "DELETE FROM rate_limits WHERE window_start < now() - make_interval(secs => window_secs) - interval '1 hour'",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub fn login_keys(&self, account: &str, client: &str) -> Vec<(String, Limit)> {
        vec![
            (
                format!("login:{account}|{client}"),
                self.limits.login_account_client,
            ),
            (format!("login-client:{client}"), self.limits.login_client),
        ]
    }

    pub fn forgot_keys(&self, account: &str, client: &str) -> Vec<(String, Limit)> {
        vec![
            (format!("forgot:{account}"), self.limits.forgot_account),
            (format!("forgot-client:{client}"), self.limits.forgot_client),
        ]
    }

    pub fn reset_keys(&self, client: &str) -> Vec<(String, Limit)> {
        vec![(format!("reset-client:{client}"), self.limits.reset_client)]
    }
}
