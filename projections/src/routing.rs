//! Telephony policies and the phone-number routing model (`rm_telephony`, `rm_routing_agents`,
//! `rm_routing`), plus `RoutingIndex`: the routing model held in memory so that an incoming
//! call is routed in microseconds, without a database round trip.
//!
//! Freshness of the index: the projection refreshes the establishments a batch touched right
//! after the batch commits (before the projector reports progress, so a write's
//! `AppState::visible` also covers the index); a refresher reloads everything when the
//! projector's stored checkpoint moved (writes projected by another process); start-up loads
//! the table.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aggregates::agent::AgentEvent;
use aggregates::common::{Timezone, E164};
use aggregates::establishment::EstablishmentEvent;
use aggregates::telephony::{
    route, BusinessHours, Provider, RouteDecision, RoutingEntry, TelephonyEvent,
    DEFAULT_MAX_CALL_DURATION_SECONDS,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use crate::event::StoredEvent;
use crate::runner::Projection;

/// Name of the routing projector (its checkpoint is the index's change marker).
pub const NAME: &str = "routing";

pub struct RoutingProjection {
    index: Arc<RoutingIndex>,
}

impl RoutingProjection {
    /// A projection that keeps `index` current.
    pub fn new(index: Arc<RoutingIndex>) -> Self {
        Self { index }
    }
}

#[async_trait]
impl Projection for RoutingProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["Establishment", "Agent", "Telephony"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_telephony", "rm_routing_agents", "rm_routing"]
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for e in events {
            apply_event(tx, e).await?;
        }
        Ok(())
    }

    async fn after_commit(&self, pool: &PgPool, events: &[StoredEvent]) {
        let result = match affected_establishments(events) {
            Affected::None => Ok(()),
            Affected::All => self.index.reload(pool).await,
            Affected::Some(ids) => self.index.refresh_establishments(pool, &ids).await,
        };
        if let Err(e) = result {
            tracing::error!(error = %format!("{e:#}"), "routing index refresh failed; the periodic reload will retry");
            self.index.mark_stale();
        }
    }
}

async fn apply_event(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    match e.aggregate_type.as_str() {
        "Establishment" => apply_establishment(tx, e).await,
        "Agent" => apply_agent(tx, e).await,
        "Telephony" => apply_telephony(tx, e).await,
        _ => Ok(()),
    }
}

enum Affected {
    None,
    All,
    Some(Vec<String>),
}

/// Which establishments' routing rows a batch may have changed (`All` after a rebuild, which
/// passes no events, or when an event does not say).
fn affected_establishments(events: &[StoredEvent]) -> Affected {
    if events.is_empty() {
        return Affected::All;
    }
    let mut ids = BTreeSet::new();
    for e in events {
        let id = match (e.aggregate_type.as_str(), e.event_type.as_str()) {
            ("Telephony", _) | ("Establishment", "EstablishmentUpdated") => {
                Some(e.aggregate_id.as_str())
            }
            ("Agent", "VersionPublished" | "VersionRolledBack") => {
                match e.meta("establishment_id") {
                    Some(id) => Some(id),
                    None => return Affected::All,
                }
            }
            _ => None,
        };
        if let Some(id) = id {
            ids.insert(id.to_string());
        }
    }
    if ids.is_empty() {
        Affected::None
    } else {
        Affected::Some(ids.into_iter().collect())
    }
}

async fn apply_establishment(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let id = &e.aggregate_id;
    let at = e.recorded_at;
    match e.decode::<EstablishmentEvent>()? {
        EstablishmentEvent::EstablishmentCreated { timezone, .. } => {
            sqlx::query(
                "INSERT INTO rm_telephony (establishment_id, timezone, max_call_duration_seconds, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (establishment_id) DO UPDATE SET timezone = EXCLUDED.timezone",
            )
            .bind(id)
            .bind(timezone.as_str())
            .bind(DEFAULT_MAX_CALL_DURATION_SECONDS as i32)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sync_policy(tx, id, at).await?;
        }
        EstablishmentEvent::EstablishmentUpdated {
            timezone: Some(timezone),
            ..
        } => {
            sqlx::query(
                "UPDATE rm_telephony SET timezone = $2, updated_at = $3 WHERE establishment_id = $1",
            )
            .bind(id)
            .bind(timezone.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sync_policy(tx, id, at).await?;
        }
        _ => {}
    }
    Ok(())
}

async fn apply_agent(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let id = &e.aggregate_id;
    match e.decode::<AgentEvent>()? {
        AgentEvent::AgentCreated {
            establishment_id, ..
        } => {
            sqlx::query(
                "INSERT INTO rm_routing_agents (agent_id, establishment_id) VALUES ($1, $2)
                 ON CONFLICT (agent_id) DO NOTHING",
            )
            .bind(id)
            .bind(establishment_id)
            .execute(&mut *tx)
            .await?;
        }
        AgentEvent::VersionPublished { version_id, .. }
        | AgentEvent::VersionRolledBack { version_id, .. } => {
            sqlx::query("UPDATE rm_routing_agents SET active_version_id = $2 WHERE agent_id = $1")
                .bind(id)
                .bind(&version_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE rm_routing SET active_version_id = $2, updated_at = $3
                 WHERE agent_id = $1 AND establishment_id =
                     (SELECT establishment_id FROM rm_routing_agents WHERE agent_id = $1)",
            )
            .bind(id)
            .bind(&version_id)
            .bind(e.recorded_at)
            .execute(&mut *tx)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

async fn apply_telephony(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let id = &e.aggregate_id;
    let at = e.recorded_at;
    // Establishments always exist before their policy; the fallback keeps a bad log replayable.
    sqlx::query(
        "INSERT INTO rm_telephony (establishment_id, timezone, max_call_duration_seconds, updated_at)
         VALUES ($1, 'UTC', $2, $3) ON CONFLICT (establishment_id) DO NOTHING",
    )
    .bind(id)
    .bind(DEFAULT_MAX_CALL_DURATION_SECONDS as i32)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    let set = |column: &str| {
        format!(
            "UPDATE rm_telephony SET {column} = $2, updated_at = $3 WHERE establishment_id = $1"
        )
    };
    match e.decode::<TelephonyEvent>()? {
        TelephonyEvent::InboundNumbersReplaced { numbers, .. } => {
            sqlx::query(&set("inbound_numbers"))
                .bind(id)
                .bind(serde_json::to_value(&numbers)?)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM rm_routing WHERE establishment_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let e164: Vec<&str> = numbers.iter().map(|n| n.e164.as_str()).collect();
            let provider: Vec<&str> = numbers.iter().map(|n| n.provider.as_str()).collect();
            let agent: Vec<&str> = numbers
                .iter()
                .map(|n| n.routing_agent_id.as_str())
                .collect();
            // A number moved here from another establishment may still have its old row when
            // this commit sorts first: take it over.
            sqlx::query(
                "INSERT INTO rm_routing (to_e164, provider, establishment_id, agent_id, active_version_id,
                    timezone, handoff_e164, max_call_duration_seconds, business_hours, blacklist_e164, updated_at)
                 SELECT n.e164, n.provider, t.establishment_id, n.agent_id, a.active_version_id,
                    t.timezone, t.handoff_e164, t.max_call_duration_seconds, t.business_hours, t.blacklist_e164, $5
                 FROM UNNEST($2::text[], $3::text[], $4::text[]) AS n(e164, provider, agent_id)
                 JOIN rm_telephony t ON t.establishment_id = $1
                 LEFT JOIN rm_routing_agents a ON a.agent_id = n.agent_id AND a.establishment_id = $1
                 ON CONFLICT (to_e164) DO UPDATE SET provider = EXCLUDED.provider,
                    establishment_id = EXCLUDED.establishment_id, agent_id = EXCLUDED.agent_id,
                    active_version_id = EXCLUDED.active_version_id, timezone = EXCLUDED.timezone,
                    handoff_e164 = EXCLUDED.handoff_e164,
                    max_call_duration_seconds = EXCLUDED.max_call_duration_seconds,
                    business_hours = EXCLUDED.business_hours, blacklist_e164 = EXCLUDED.blacklist_e164,
                    updated_at = EXCLUDED.updated_at",
            )
            .bind(id)
            .bind(&e164)
            .bind(&provider)
            .bind(&agent)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            return Ok(());
        }
        TelephonyEvent::HandoffNumberChanged { e164 } => {
            sqlx::query(&set("handoff_e164"))
                .bind(id)
                .bind(e164.as_ref().map(E164::as_str))
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        TelephonyEvent::MaxCallDurationChanged { seconds } => {
            sqlx::query(&set("max_call_duration_seconds"))
                .bind(id)
                .bind(seconds.seconds() as i32)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        TelephonyEvent::BusinessHoursChanged { windows } => {
            sqlx::query(&set("business_hours"))
                .bind(id)
                .bind(serde_json::to_value(&windows)?)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        TelephonyEvent::BlacklistChanged { numbers } => {
            sqlx::query(&set("blacklist_e164"))
                .bind(id)
                .bind(serde_json::to_value(&numbers)?)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
    }
    sync_policy(tx, id, at).await
}

/// Copies an establishment's policy onto its routing rows.
async fn sync_policy(tx: &mut PgConnection, id: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE rm_routing r SET timezone = t.timezone, handoff_e164 = t.handoff_e164,
            max_call_duration_seconds = t.max_call_duration_seconds,
            business_hours = t.business_hours, blacklist_e164 = t.blacklist_e164, updated_at = $2
         FROM rm_telephony t WHERE t.establishment_id = $1 AND r.establishment_id = $1",
    )
    .bind(id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The in-memory index.

const ROUTING_COLUMNS: &str = "to_e164, provider, establishment_id, agent_id, active_version_id, \
    timezone, handoff_e164, max_call_duration_seconds, business_hours, blacklist_e164";

fn entry_from_row(r: &PgRow) -> anyhow::Result<RoutingEntry> {
    let provider: String = r.try_get("provider")?;
    let timezone: String = r.try_get("timezone")?;
    let hours: Value = r.try_get("business_hours")?;
    let blacklist: Value = r.try_get("blacklist_e164")?;
    Ok(RoutingEntry {
        to_e164: r.try_get("to_e164")?,
        provider: serde_json::from_value::<Provider>(Value::String(provider))?,
        establishment_id: r.try_get("establishment_id")?,
        agent_id: r.try_get("agent_id")?,
        active_version_id: r.try_get("active_version_id")?,
        timezone: timezone.parse::<Timezone>()?,
        business_hours: serde_json::from_value::<Vec<BusinessHours>>(hours)?,
        blacklist: serde_json::from_value::<HashSet<String>>(blacklist)?,
        handoff_e164: r.try_get("handoff_e164")?,
        max_call_duration_seconds: r.try_get::<i32, _>("max_call_duration_seconds")? as u32,
    })
}

fn entries(rows: &[PgRow]) -> Vec<Arc<RoutingEntry>> {
    rows.iter()
        .filter_map(|r| match entry_from_row(r) {
            Ok(e) => Some(Arc::new(e)),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "routing row does not decode; number not routed");
                None
            }
        })
        .collect()
}

/// The routing model in memory: `to_e164` → entry. Lookups take a read lock and clone an
/// `Arc`; refreshes are serialised and swap entries under a short write lock.
#[derive(Default)]
pub struct RoutingIndex {
    by_number: RwLock<HashMap<String, Arc<RoutingEntry>>>,
    /// The routing projector's stored checkpoint at the last full load.
    loaded_at: Mutex<Option<(String, i64)>>,
    /// One refresh at a time, so an older read never overwrites a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

impl RoutingIndex {
    /// The entry for a called number (E.164; other spellings of a number are normalised).
    pub fn lookup(&self, to: &str) -> Option<Arc<RoutingEntry>> {
        let to = to.trim();
        if let Some(e) = self.by_number.read().get(to) {
            return Some(e.clone());
        }
        let canonical = to.starts_with('+') && to[1..].bytes().all(|b| b.is_ascii_digit());
        if canonical {
            return None;
        }
        let n = to.parse::<E164>().ok()?;
        self.by_number.read().get(n.as_str()).cloned()
    }

    /// Routes a call to `to` from `from` at `now` (see `aggregates::telephony::route`).
    pub fn route(&self, to: &str, from: &str, now: DateTime<Utc>) -> RouteDecision {
        route(self.lookup(to).as_deref(), from, now)
    }

    /// Number of routed numbers.
    pub fn len(&self) -> usize {
        self.by_number.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forces the next `reload_if_changed` to reload.
    pub fn mark_stale(&self) {
        *self.loaded_at.lock() = None;
    }

    async fn stored_checkpoint(pool: &PgPool) -> anyhow::Result<Option<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT last_txid::text, last_position FROM projector_checkpoints WHERE name = $1",
        )
        .bind(NAME)
        .fetch_optional(pool)
        .await?)
    }

    /// Replaces the whole index with `rm_routing`.
    pub async fn reload(&self, pool: &PgPool) -> anyhow::Result<()> {
        let _one = self.refreshing.lock().await;
        self.reload_locked(pool).await
    }

    async fn reload_locked(&self, pool: &PgPool) -> anyhow::Result<()> {
        // Checkpoint first: the rows read next are at least that new.
        let checkpoint = Self::stored_checkpoint(pool).await?;
        let rows = sqlx::query(&format!("SELECT {ROUTING_COLUMNS} FROM rm_routing"))
            .fetch_all(pool)
            .await?;
        let map: HashMap<String, Arc<RoutingEntry>> = entries(&rows)
            .into_iter()
            .map(|e| (e.to_e164.clone(), e))
            .collect();
        *self.by_number.write() = map;
        *self.loaded_at.lock() = checkpoint;
        Ok(())
    }

    /// Reloads when the routing projector's stored checkpoint moved since the last load (it
    /// moves whenever any process projects routing events). Returns whether it reloaded.
    pub async fn reload_if_changed(&self, pool: &PgPool) -> anyhow::Result<bool> {
        let _one = self.refreshing.lock().await;
        let now = Self::stored_checkpoint(pool).await?;
        let loaded = self.loaded_at.lock().clone();
        if loaded.is_some() && loaded == now {
            return Ok(false);
        }
        self.reload_locked(pool).await?;
        Ok(true)
    }

    /// Re-reads the rows of some establishments.
    pub async fn refresh_establishments(
        &self,
        pool: &PgPool,
        ids: &[String],
    ) -> anyhow::Result<()> {
        let _one = self.refreshing.lock().await;
        let rows = sqlx::query(&format!(
            "SELECT {ROUTING_COLUMNS} FROM rm_routing WHERE establishment_id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(pool)
        .await?;
        let fresh = entries(&rows);
        let mut map = self.by_number.write();
        map.retain(|_, e| !ids.contains(&e.establishment_id));
        for e in fresh {
            map.insert(e.to_e164.clone(), e);
        }
        Ok(())
    }

    /// Keeps the index current with writes projected by other processes: checks the stored
    /// checkpoint every `every` and reloads when it moved. Runs until the task is dropped.
    pub async fn run_refresher(self: Arc<Self>, pool: PgPool, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.reload_if_changed(&pool).await {
                tracing::warn!(error = %format!("{e:#}"), "routing index reload failed");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reads of `rm_telephony`
// ---------------------------------------------------------------------------------------------

/// The establishment's handoff number, if one is configured.
pub async fn handoff_number(pool: &PgPool, establishment_id: &str) -> sqlx::Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT handoff_e164 FROM rm_telephony WHERE establishment_id = $1")
            .bind(establishment_id)
            .fetch_optional(pool)
            .await?
            .flatten(),
    )
}

/// An establishment's telephony policy as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TelephonyRow {
    pub establishment_id: String,
    /// `[{provider, e164, routing_agent_id}, …]`
    pub inbound_numbers: Value,
    pub handoff_e164: Option<String>,
    pub max_call_duration_seconds: i32,
    /// `[{days, start, end}, …]`
    pub business_hours: Value,
    /// `["+1…", …]`
    pub blacklist_e164: Value,
}

impl TelephonyRow {
    /// The policy of an establishment that never changed it.
    pub fn default_for(establishment_id: &str) -> Self {
        Self {
            establishment_id: establishment_id.to_string(),
            inbound_numbers: Value::Array(Vec::new()),
            handoff_e164: None,
            max_call_duration_seconds: DEFAULT_MAX_CALL_DURATION_SECONDS as i32,
            business_hours: Value::Array(Vec::new()),
            blacklist_e164: Value::Array(Vec::new()),
        }
    }
}

/// The establishment's telephony policy (the default one until it is first changed).
pub async fn telephony(pool: &PgPool, establishment_id: &str) -> sqlx::Result<TelephonyRow> {
    let row = sqlx::query_as(
        "SELECT establishment_id, inbound_numbers, handoff_e164, max_call_duration_seconds,
                business_hours, blacklist_e164
         FROM rm_telephony WHERE establishment_id = $1",
    )
    .bind(establishment_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.unwrap_or_else(|| TelephonyRow::default_for(establishment_id)))
}
