//! A fresh PostgreSQL database per test, cloned from a template migrated once per set of
//! migrations (so each test starts from the real schema in milliseconds).

use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use crate::wait::{eventually, secs};

fn base_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(u) => u,
        Err(_) => panic!(
            "DATABASE_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL"
        ),
    }
}

fn with_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("DATABASE_URL is a URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

fn template_name() -> String {
    let mut h = Sha256::new();
    for m in control_plane::db::MIGRATOR.iter() {
        h.update(m.version.to_le_bytes());
        h.update(&m.checksum);
    }
    format!("cpt_template_{}", &hex::encode(h.finalize())[..16])
}

async fn admin_conn() -> PgConnection {
    let url = with_db(&base_url(), "postgres");
    eventually(
        &format!("PostgreSQL reachable at {url} (start it with scripts/pg.sh)"),
        secs(5),
        async || PgConnection::connect(&url).await.map_err(|e| e.to_string()),
    )
    .await
}

/// Creates the migrated template once (safe across concurrent test processes).
async fn ensure_template(admin: &mut PgConnection) -> String {
    let name = template_name();
    sqlx::query("SELECT pg_advisory_lock(4242)")
        .execute(&mut *admin)
        .await
        .expect("advisory lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut *admin)
            .await
            .expect("query pg_database");
    if !exists {
        let building = format!("{name}_building");
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {building}"))
            .execute(&mut *admin)
            .await;
        sqlx::query(&format!("CREATE DATABASE {building}"))
            .execute(&mut *admin)
            .await
            .expect("create template database");
        let pool = PgPool::connect(&with_db(&base_url(), &building))
            .await
            .expect("connect template");
        control_plane::db::migrate(&pool)
            .await
            .expect("migrate template");
        pool.close().await;
        sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut *admin)
            .await
            .expect("rename template");
    }
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut *admin)
        .await
        .expect("advisory unlock");
    name
}

/// Per-test databases older than this are left over from earlier runs: the first test of a
/// process drops them, so repeated runs do not fill the disk.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Drops the per-test databases (`cpt_<ulid>`) made more than [`STALE_AFTER`] ago (their ULID
/// says when), once per test process.
async fn drop_stale_databases(admin: &mut PgConnection) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'cpt\\_%' AND datname NOT LIKE 'cpt\\_template%'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    let now = std::time::SystemTime::now();
    for name in names {
        let Some(made) = name
            .strip_prefix("cpt_")
            .and_then(|u| ulid::Ulid::from_string(&u.to_ascii_uppercase()).ok())
            .map(|u| u.datetime())
        else {
            continue;
        };
        if now.duration_since(made).is_ok_and(|age| age > STALE_AFTER) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *admin)
                .await;
        }
    }
}

/// A fresh, migrated database; returns its URL.
pub async fn fresh_database() -> String {
    let mut admin = admin_conn().await;
    let template = ensure_template(&mut admin).await;
    drop_stale_databases(&mut admin).await;
    let name = format!("cpt_{}", ulid::Ulid::new().to_string().to_ascii_lowercase());
    // CREATE DATABASE fails while another session is connected to the template (another
    // test process cloning it at the same moment): clones take turns under an advisory lock
    // (each takes a fraction of a second), and a clash with anything else is retried.
    sqlx::query("SELECT pg_advisory_lock(4243)")
        .execute(&mut admin)
        .await
        .expect("clone lock");
    eventually(
        "a test database cloned from the template",
        secs(60),
        async || {
            sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .execute(&mut admin)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    sqlx::query("SELECT pg_advisory_unlock(4243)")
        .execute(&mut admin)
        .await
        .expect("clone unlock");
    with_db(&base_url(), &name)
}

/// A pool on a fresh database (for tests that drive the store without the server).
pub async fn fresh_pool() -> (String, PgPool) {
    let url = fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(40)
        .connect(&url)
        .await
        .expect("connect test database");
    (url, pool)
}
