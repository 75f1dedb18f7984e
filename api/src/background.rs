//! What every worker shares, and what use cases use to hand work to them:
//! - [`Background`] counts the work in flight (a queued placement, a mail, a call waiting for
//!   its summary …), so a caller can wait until the system is quiet (`App::settle` in tests,
//!   graceful shutdown).
//! - [`WorkQueue`] hands items to a worker; each counts as background work until handled.
//! - [`supervise`] runs a worker loop as its own task: a panic is logged, counted
//!   (`worker_restarts_total`) and the loop starts again after a short pause.
//! - [`Lease`]: a worker that must run in one process at a time (several control planes
//!   against one database) leads through a PostgreSQL session advisory lock.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Work in flight across the workers of one process.
#[derive(Clone)]
pub struct Background {
    count: Arc<watch::Sender<usize>>,
}

impl Default for Background {
    fn default() -> Self {
        Self {
            count: Arc::new(watch::channel(0).0),
        }
    }
}

/// One unit of background work; it is done when the guard is dropped.
#[must_use = "the work counts as in flight until this guard is dropped"]
pub struct Job {
    count: Arc<watch::Sender<usize>>,
}

impl Drop for Job {
    fn drop(&mut self) {
        self.count.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Background {
    /// Starts counting one unit of work.
    pub fn job(&self) -> Job {
        self.count.send_modify(|n| *n += 1);
        Job {
            count: self.count.clone(),
        }
    }

    /// Units of work in flight now.
    pub fn in_flight(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until no work is in flight, or `timeout`; returns whether it got quiet.
    pub async fn idle(&self, timeout: Duration) -> bool {
        let mut rx = self.count.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// A queue of work items (calls to place, handoffs to carry out, mails …) for one worker. Each
/// queued item counts as background work until the worker drops its [`Job`]. The receiving
/// end is shared so that a supervised worker started again picks up where the last one
/// stopped.
pub struct WorkQueue<T> {
    tx: mpsc::UnboundedSender<(T, Job)>,
    background: Background,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            background: self.background.clone(),
        }
    }
}

pub type WorkReceiver<T> = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(T, Job)>>>;

impl<T> WorkQueue<T> {
    pub fn channel(background: &Background) -> (WorkQueue<T>, WorkReceiver<T>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            WorkQueue {
                tx,
                background: background.clone(),
            },
            Arc::new(tokio::sync::Mutex::new(rx)),
        )
    }

    pub fn enqueue(&self, item: T) {
        let _ = self.tx.send((item, self.background.job()));
    }
}

/// Leadership of one named worker across processes: a session advisory lock held on a
/// connection of its own. A crashed process releases it with its session; a lost connection
/// ends the lease ([`Lease::lost`]), so the worker stops and its supervisor competes again.
pub struct Lease {
    conn: sqlx::PgConnection,
    name: &'static str,
}

impl Lease {
    /// Waits until this process holds the lease `name`.
    pub async fn acquire(pool: &sqlx::PgPool, name: &'static str) -> Lease {
        let mut waiting_logged = false;
        loop {
            match pool.acquire().await {
                Ok(conn) => {
                    let mut conn = conn.detach();
                    let got: Result<bool, _> =
                        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                            .bind(format!("control-plane:{name}"))
                            .fetch_one(&mut conn)
                            .await;
                    if let Ok(true) = got {
                        tracing::info!(worker = name, "this process leads");
                        return Lease { conn, name };
                    }
                    if !waiting_logged {
                        tracing::info!(worker = name, "another process leads; waiting");
                        waiting_logged = true;
                    }
                }
                Err(e) => tracing::warn!(worker = name, error = %e, "cannot reach PostgreSQL"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Resolves when the lease's connection is gone (checked every few seconds).
    pub async fn lost(&mut self) {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if sqlx::query("SELECT 1")
                .execute(&mut self.conn)
                .await
                .is_err()
            {
                tracing::warn!(worker = self.name, "lease connection lost; stepping down");
                return;
            }
        }
    }
}

/// Aborts the task it holds when dropped (so aborting a supervisor stops its worker too).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `make()`'s future as a task and starts a new one whenever it panics or returns, with a
/// pause that grows (to 30 s) while it keeps failing. Aborting the returned handle stops it.
pub fn supervise<F, Fut>(name: &'static str, mut make: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let started = tokio::time::Instant::now();
            let mut task = AbortOnDrop(tokio::spawn(make()));
            let result = (&mut task.0).await;
            match result {
                Ok(()) => tracing::warn!(worker = name, "worker stopped; starting it again"),
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-text panic".into());
                    tracing::error!(worker = name, panic = %message, "worker panicked; starting it again");
                }
                Err(_) => return,
            }
            metrics::counter!("worker_restarts_total", "worker" => name).increment(1);
            if started.elapsed() > Duration::from_secs(60) {
                failures = 0;
            }
            failures += 1;
            let pause = Duration::from_millis((100u64 << failures.min(9)).min(30_000));
            tokio::time::sleep(pause).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn background_counts_jobs_until_their_guards_drop() {
        let bg = Background::default();
        assert!(bg.idle(Duration::from_millis(1)).await);
        let a = bg.job();
        let b = bg.job();
        assert_eq!(bg.in_flight(), 2);
        drop(a);
        assert!(!bg.idle(Duration::from_millis(10)).await);
        drop(b);
        assert!(bg.idle(Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn a_panicking_worker_is_started_again() {
        let runs = Arc::new(AtomicU32::new(0));
        let seen = runs.clone();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = supervise("test", move || {
            let runs = seen.clone();
            let done = done_tx.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("poisoned input");
                }
                let _ = done.send(());
                std::future::pending::<()>().await;
            }
        });
        done_rx.recv().await.expect("third run reached");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        handle.abort();
    }
}
