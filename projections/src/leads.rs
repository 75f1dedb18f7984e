//! Read models of leads (`rm_leads`), lead imports (`rm_lead_imports`) and the do-not-call list
//! (`rm_do_not_call`). Leads arrive in bulk (`LeadsImported`, up to 1,000 per event) and are
//! written with one multi-row upsert per event; a lead whose number the establishment already
//! has is merged into that row (its fields updated, never a twin). A call's `opt_out` tool call
//! (or a tool call whose arguments carry the disposition `opt_out`/`do_not_call`) puts the
//! called number on the list and flags the lead.

use aggregates::call::CallEvent;
use aggregates::lead::{DoNotCallEvent, LeadEvent, LeadImportEvent};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};

use crate::event::StoredEvent;
use crate::runner::Projection;

pub struct LeadsProjection;

#[async_trait]
impl Projection for LeadsProjection {
    fn name(&self) -> &'static str {
        "leads"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["LeadImport", "Lead", "DoNotCallList", "Call"]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_leads", "rm_lead_imports", "rm_do_not_call"]
    }

    async fn apply(&self, tx: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for e in events {
            match e.aggregate_type.as_str() {
                "LeadImport" => apply_import(tx, e).await?,
                "Lead" => apply_lead(tx, e).await?,
                "DoNotCallList" => apply_dnc(tx, e).await?,
                "Call" if e.event_type == "ToolCalled" => apply_tool_call(tx, e).await?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Writes the leads of a `LeadsImported` event straight from its JSON (PostgreSQL reads the
/// 1,000 leads; decoding them in Rust first costs more than the insert).
async fn apply_leads_json(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let body = &e.payload["LeadsImported"];
    let (Some(establishment_id), Some(leads)) =
        (body["establishment_id"].as_str(), body.get("leads"))
    else {
        anyhow::bail!(
            "LeadsImported {} has no establishment_id or leads",
            e.event_id
        );
    };
    let at: DateTime<Utc> = serde_json::from_value(body["at"].clone())?;
    sqlx::query(
        "INSERT INTO rm_leads (id, establishment_id, phone_e164, name, email, timezone,
             status, fields, created_at, updated_at)
         SELECT l.lead_id, $2, l.phone_e164, l.name, l.email, l.timezone, 'new',
                coalesce(l.fields, '{}'::jsonb), $3, $3
         FROM jsonb_to_recordset($1) AS l(lead_id text, phone_e164 text, name text, email text,
                                          timezone text, fields jsonb)
         ON CONFLICT (establishment_id, phone_e164) DO UPDATE SET
             name = coalesce(EXCLUDED.name, rm_leads.name),
             email = coalesce(EXCLUDED.email, rm_leads.email),
             timezone = coalesce(EXCLUDED.timezone, rm_leads.timezone),
             fields = rm_leads.fields || EXCLUDED.fields,
             updated_at = greatest(rm_leads.updated_at, EXCLUDED.updated_at)",
    )
    .bind(leads)
    .bind(establishment_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn apply_import(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    if e.event_type == "LeadsImported" && e.event_version == "1.0" {
        return apply_leads_json(tx, e).await;
    }
    match e.decode::<LeadImportEvent>()? {
        LeadImportEvent::LeadImportAccepted {
            job_id,
            establishment_id,
            file_name,
            bytes,
            at,
            ..
        } => {
            sqlx::query(
                "INSERT INTO rm_lead_imports (job_id, establishment_id, status, file_name, bytes,
                     created_at, updated_at)
                 VALUES ($1, $2, 'running', $3, $4, $5, $5) ON CONFLICT (job_id) DO NOTHING",
            )
            .bind(job_id)
            .bind(establishment_id)
            .bind(file_name)
            .bind(bytes as i64)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        LeadImportEvent::LeadsImported {
            establishment_id,
            leads,
            at,
        } => {
            let mut ids = Vec::with_capacity(leads.len());
            let mut phones = Vec::with_capacity(leads.len());
            let mut names = Vec::with_capacity(leads.len());
            let mut emails = Vec::with_capacity(leads.len());
            let mut zones = Vec::with_capacity(leads.len());
            let mut fields = Vec::with_capacity(leads.len());
            for l in leads {
                ids.push(l.lead_id);
                phones.push(l.phone_e164);
                names.push(l.name);
                emails.push(l.email);
                zones.push(l.timezone);
                fields.push(Value::Object(l.fields));
            }
            sqlx::query(
                "INSERT INTO rm_leads (id, establishment_id, phone_e164, name, email, timezone,
                     status, fields, created_at, updated_at)
                 SELECT id, $2, phone, name, email, tz, 'new', f, $8, $8
                 FROM UNNEST($1::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])
                      AS t(id, phone, name, email, tz, f)
                 ON CONFLICT (establishment_id, phone_e164) DO UPDATE SET
                     name = coalesce(EXCLUDED.name, rm_leads.name),
                     email = coalesce(EXCLUDED.email, rm_leads.email),
                     timezone = coalesce(EXCLUDED.timezone, rm_leads.timezone),
                     fields = rm_leads.fields || EXCLUDED.fields,
                     updated_at = greatest(rm_leads.updated_at, EXCLUDED.updated_at)",
            )
            .bind(&ids)
            .bind(&establishment_id)
            .bind(&phones)
            .bind(&names)
            .bind(&emails)
            .bind(&zones)
            .bind(&fields)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        LeadImportEvent::LeadImportCompleted { summary, at } => {
            sqlx::query(
                "UPDATE rm_lead_imports SET status = 'completed', rows_total = $2,
                     rows_imported = $3, rows_duplicate = $4, rows_rejected = $5, errors = $6,
                     updated_at = $7
                 WHERE job_id = $1",
            )
            .bind(&e.aggregate_id)
            .bind(summary.rows_total as i64)
            .bind(summary.rows_imported as i64)
            .bind(summary.rows_duplicate as i64)
            .bind(summary.rows_rejected as i64)
            .bind(serde_json::to_value(&summary.errors)?)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        LeadImportEvent::LeadImportFailed { reason, at } => {
            sqlx::query(
                "UPDATE rm_lead_imports SET status = 'failed', failure = $2, updated_at = $3
                 WHERE job_id = $1",
            )
            .bind(&e.aggregate_id)
            .bind(reason)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

async fn apply_lead(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let LeadEvent::LeadUpdated { changes, at, .. } = e.decode::<LeadEvent>()?;
    sqlx::query(
        "UPDATE rm_leads SET status = coalesce($2, status), name = coalesce($3, name),
             email = coalesce($4, email), fields = coalesce($5, fields),
             do_not_call = coalesce($6, do_not_call), updated_at = greatest(updated_at, $7)
         WHERE id = $1",
    )
    .bind(&e.aggregate_id)
    .bind(changes.status.map(|s| s.as_str()))
    .bind(changes.name)
    .bind(changes.email)
    .bind(changes.fields.map(Value::Object))
    .bind(changes.do_not_call)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn apply_dnc(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let DoNotCallEvent::DoNotCallNumbersAdded {
        establishment_id,
        numbers,
        reason,
        source,
        at,
        ..
    } = e.decode::<DoNotCallEvent>()?;
    let numbers: Vec<String> = numbers.iter().map(|n| n.as_str().to_string()).collect();
    sqlx::query(
        "INSERT INTO rm_do_not_call (establishment_id, phone_e164, reason, source, added_at)
         SELECT $1, n, $3, $4, $5 FROM UNNEST($2::text[]) AS t(n)
         ON CONFLICT (establishment_id, phone_e164) DO NOTHING",
    )
    .bind(&establishment_id)
    .bind(&numbers)
    .bind(&reason)
    .bind(source.as_str())
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Whether a tool call says the person asked not to be called again.
pub fn is_opt_out(tool_name: &str, arguments: &Value) -> bool {
    let words = ["opt_out", "do_not_call"];
    words.contains(&tool_name)
        || arguments
            .get("disposition")
            .and_then(Value::as_str)
            .is_some_and(|d| words.contains(&d))
}

async fn apply_tool_call(tx: &mut PgConnection, e: &StoredEvent) -> anyhow::Result<()> {
    let CallEvent::ToolCalled {
        tool_name,
        arguments,
        ..
    } = e.decode::<CallEvent>()?
    else {
        return Ok(());
    };
    if !is_opt_out(&tool_name, &arguments) {
        return Ok(());
    }
    // The called party of an outbound call, the caller of an inbound one.
    let party: Option<(String, String)> = sqlx::query_as(
        "SELECT establishment_id,
                CASE WHEN direction = 'inbound' THEN from_party ELSE to_party END
         FROM rm_calls WHERE id = $1",
    )
    .bind(&e.aggregate_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((establishment_id, phone)) = party else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO rm_do_not_call (establishment_id, phone_e164, reason, source, added_at)
         VALUES ($1, $2, $3, 'opt_out', $4) ON CONFLICT (establishment_id, phone_e164) DO NOTHING",
    )
    .bind(&establishment_id)
    .bind(&phone)
    .bind(format!("opted out during call {}", e.aggregate_id))
    .bind(e.recorded_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE rm_leads SET do_not_call = true, updated_at = greatest(updated_at, $3)
         WHERE establishment_id = $1 AND phone_e164 = $2",
    )
    .bind(&establishment_id)
    .bind(&phone)
    .bind(e.recorded_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, FromRow)]
pub struct LeadRow {
    pub id: String,
    pub establishment_id: String,
    pub phone_e164: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub timezone: Option<String>,
    pub status: String,
    /// The lead flag, or the number on the do-not-call list.
    pub do_not_call: bool,
    pub fields: Value,
    pub created_at: DateTime<Utc>,
}

const LEAD_COLUMNS: &str = "l.id, l.establishment_id, l.phone_e164, l.name, l.email, l.timezone, \
     l.status, (l.do_not_call OR d.phone_e164 IS NOT NULL) AS do_not_call, l.fields, l.created_at";
const LEAD_FROM: &str = "rm_leads l LEFT JOIN rm_do_not_call d
     ON d.establishment_id = l.establishment_id AND d.phone_e164 = l.phone_e164";

#[derive(Debug, Clone, Default)]
pub struct LeadFilter {
    pub status: Option<String>,
    /// Leads a campaign has dialled.
    pub campaign_id: Option<String>,
    /// Part of the name, e-mail or number (case-insensitive).
    pub q: Option<String>,
    /// Page cursor: strictly older than (created_at, id).
    pub before: Option<(DateTime<Utc>, String)>,
}

/// An establishment's leads, newest first.
pub async fn list(
    pool: &PgPool,
    establishment_id: &str,
    f: &LeadFilter,
    limit: i64,
) -> sqlx::Result<Vec<LeadRow>> {
    let q = f.q.as_ref().map(|q| {
        format!(
            "%{}%",
            q.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    sqlx::query_as(&format!(
        "SELECT {LEAD_COLUMNS} FROM {LEAD_FROM}
         WHERE l.establishment_id = $1
           AND ($2::text IS NULL OR l.status = $2)
           AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM rm_calls c
                WHERE c.campaign_id = $3 AND c.lead_id = l.id))
           AND ($4::text IS NULL OR l.name ILIKE $4 OR l.email ILIKE $4 OR l.phone_e164 LIKE $4)
           AND ($5::timestamptz IS NULL OR (l.created_at, l.id) < ($5, $6))
         ORDER BY l.created_at DESC, l.id DESC LIMIT $7"
    ))
    .bind(establishment_id)
    .bind(&f.status)
    .bind(&f.campaign_id)
    .bind(q)
    .bind(f.before.as_ref().map(|b| b.0))
    .bind(f.before.as_ref().map(|b| b.1.clone()))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One lead.
pub async fn by_id(pool: &PgPool, id: &str) -> sqlx::Result<Option<LeadRow>> {
    sqlx::query_as(&format!(
        "SELECT {LEAD_COLUMNS} FROM {LEAD_FROM} WHERE l.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Every lead of an establishment a campaign's filter selects (all of them: the dialer's and
/// the preview's population), oldest first.
pub async fn for_campaign(
    pool: &PgPool,
    establishment_id: &str,
    status: Option<&str>,
) -> sqlx::Result<Vec<LeadRow>> {
    sqlx::query_as(&format!(
        "SELECT {LEAD_COLUMNS} FROM {LEAD_FROM}
         WHERE l.establishment_id = $1 AND ($2::text IS NULL OR l.status = $2)
         ORDER BY l.created_at, l.id"
    ))
    .bind(establishment_id)
    .bind(status)
    .fetch_all(pool)
    .await
}

/// The establishment's numbers and their lead ids (the import's dedupe facts).
pub async fn phones_of(
    pool: &PgPool,
    establishment_id: &str,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as("SELECT phone_e164, id FROM rm_leads WHERE establishment_id = $1")
        .bind(establishment_id)
        .fetch_all(pool)
        .await
}

#[derive(Debug, Clone, FromRow)]
pub struct ImportRow {
    pub job_id: String,
    pub establishment_id: String,
    pub status: String,
    pub rows_total: i64,
    pub rows_imported: i64,
    pub rows_duplicate: i64,
    pub rows_rejected: i64,
    pub errors: Value,
    pub failure: Option<String>,
}

/// One import job.
pub async fn import(pool: &PgPool, job_id: &str) -> sqlx::Result<Option<ImportRow>> {
    sqlx::query_as(
        "SELECT job_id, establishment_id, status, rows_total, rows_imported, rows_duplicate,
                rows_rejected, errors, failure
         FROM rm_lead_imports WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await
}

/// Import jobs still running (a stop interrupted them).
pub async fn running_imports(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT job_id FROM rm_lead_imports WHERE status = 'running' AND updated_at < now() - interval '10 minutes'")
        .fetch_all(pool)
        .await
}

/// Whether a number is on the establishment's do-not-call list.
pub async fn on_do_not_call(
    pool: &PgPool,
    establishment_id: &str,
    phone: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM rm_do_not_call WHERE establishment_id = $1 AND phone_e164 = $2)",
    )
    .bind(establishment_id)
    .bind(phone)
    .fetch_one(pool)
    .await
}
