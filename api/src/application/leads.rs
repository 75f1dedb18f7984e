//! Use cases of leads (prd §7.6, A.6): the CSV import (accepted at once, processed in the
//! background: streaming parse, E.164 normalisation in the establishment's region, dedupe per
//! number, bulk append), the lead list and edits, and the do-not-call list.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aggregates::common::{Email, E164};
use aggregates::lead::{
    DoNotCallCommand, DoNotCallError, DoNotCallList, DoNotCallSource, ImportSummary, ImportedLead,
    Lead, LeadChanges, LeadCommand, LeadError, LeadImport, LeadImportCommand, LeadImportError,
    RowError,
};
use chrono::Utc;
use projections::leads::{self, ImportRow, LeadFilter, LeadRow};
use serde_json::{Map, Value};
use sqlx::PgPool;

use super::{unexpected_from, Invalid, Unexpected};
use crate::background::Background;
use crate::store::{Actor, CommandBus, CommandContext, ExecError, ExecOptions};

/// Errors kept per import (the first ones).
pub const MAX_ERRORS: usize = 100;
/// Longest name, e-mail, and extra field value, in characters.
const MAX_TEXT: usize = 200;
/// Most extra columns kept in a lead's `fields`.
const MAX_FIELDS: usize = 50;
/// Leads per append (each append cuts them into events of 1,000).
const LEADS_PER_APPEND: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum LeadsError {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Lead(ExecError<LeadError>),
    #[error(transparent)]
    DoNotCall(ExecError<DoNotCallError>),
    #[error(transparent)]
    Import(ExecError<LeadImportError>),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
}
unexpected_from!(LeadsError);

/// One parsed row that passed.
#[derive(Debug, Clone)]
pub struct ParsedLead {
    pub row: u64,
    pub phone: E164,
    pub name: Option<String>,
    pub email: Option<String>,
    pub timezone: Option<String>,
    pub fields: Map<String, Value>,
}

/// A parsed file.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub leads: Vec<ParsedLead>,
    pub summary: ImportSummary,
}

/// The region (ISO 3166) of a BCP 47 locale: `pt-BR` → `BR`.
pub fn region_of_locale(locale: &str) -> Option<String> {
    locale
        .split('-')
        .skip(1)
        .find(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_alphabetic()))
        .map(|p| p.to_ascii_uppercase())
}

fn reject(s: &mut ImportSummary, row: u64, column: &str, reason: String) {
    s.rows_rejected += 1;
    if s.errors.len() < MAX_ERRORS {
        s.errors.push(RowError {
            row,
            column: column.into(),
            reason,
        });
    }
}

fn text(v: &str) -> Option<String> {
    let t = v.trim();
    (!t.is_empty()).then(|| {
        t.chars()
            .filter(|c| !c.is_control())
            .take(MAX_TEXT)
            .collect()
    })
}

/// Parses a CSV of leads: UTF-8 with or without a BOM, `,` or `;`, headers matched without
/// regard to case. A bad row is counted and reported, never fatal; a file without a `phone`
/// (or `phone_e164`) column is. Rows are numbered from 1 after the header.
pub fn parse_csv(bytes: &[u8], region: Option<&str>) -> Result<ParsedFile, Invalid> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let semicolons = first_line.iter().filter(|b| **b == b';').count();
    let commas = first_line.iter().filter(|b| **b == b',').count();
    let delimiter = if semicolons > commas { b';' } else { b',' };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers: Vec<String> = reader
        .byte_headers()
        .map_err(|e| Invalid::new("file", format!("cannot read the header row: {e}")))?
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_lowercase())
        .collect();
    let col = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
    let phone_col = col(&["phone", "phone_e164", "phone_number", "telefone"]).ok_or_else(|| {
        Invalid::new("file", "the header row has no phone (or phone_e164) column")
    })?;
    let name_col = col(&["name", "nome"]);
    let first_col = col(&["first_name"]);
    let last_col = col(&["last_name"]);
    let email_col = col(&["email", "e-mail"]);
    let tz_col = col(&["timezone", "time_zone"]);
    let known: HashSet<usize> = [
        Some(phone_col),
        name_col,
        first_col,
        last_col,
        email_col,
        tz_col,
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut out = ParsedFile::default();
    // First pass: the rows as text (bad rows counted here).
    let mut rows: Vec<(u64, Vec<String>)> = Vec::new();
    let mut record = csv::ByteRecord::new();
    let mut row = 0u64;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                row += 1;
                out.summary.rows_total += 1;
                reject(
                    &mut out.summary,
                    row,
                    "file",
                    format!("unreadable row: {e}"),
                );
                continue;
            }
        }
        let Ok(fields) = record
            .iter()
            .map(std::str::from_utf8)
            .collect::<Result<Vec<_>, _>>()
        else {
            row += 1;
            out.summary.rows_total += 1;
            reject(&mut out.summary, row, "file", "the row is not UTF-8".into());
            continue;
        };
        if fields.iter().all(|f| f.trim().is_empty()) {
            // A blank line is not a row.
            continue;
        }
        row += 1;
        out.summary.rows_total += 1;
        rows.push((row, fields.into_iter().map(str::to_string).collect()));
    }
    // The numbers, parsed on every core (libphonenumber's parse dominates an import).
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let chunk = rows.len().div_ceil(threads).max(1);
    let phones: Vec<Result<E164, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(_, f)| {
                            let raw = f.get(phone_col).map_or("", String::as_str);
                            E164::parse_in_region(raw, region).map_err(|e| e.message)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut seen: HashSet<String> = HashSet::new();
    for ((row, fields), phone) in rows.iter().zip(phones) {
        let row = *row;
        let s = &mut out.summary;
        let get = |c: Option<usize>| c.and_then(|c| fields.get(c)).map_or("", String::as_str);
        let phone = match phone {
            Ok(p) => p,
            Err(reason) => {
                reject(s, row, "phone", reason);
                continue;
            }
        };
        let email = match text(get(email_col)) {
            None => None,
            Some(e) => match e.parse::<Email>() {
                Ok(e) => Some(e.as_str().to_string()),
                Err(_) => {
                    reject(s, row, "email", format!("{e:?} is not an e-mail address"));
                    continue;
                }
            },
        };
        let timezone = match text(get(tz_col)) {
            None => None,
            Some(t) => match t.parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz.name().to_string()),
                Err(_) => {
                    reject(
                        s,
                        row,
                        "timezone",
                        format!("{t:?} is not an IANA time zone"),
                    );
                    continue;
                }
            },
        };
        let name = text(get(name_col)).or_else(|| {
            let joined = [text(get(first_col)), text(get(last_col))]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            text(&joined)
        });
        if !seen.insert(phone.as_str().to_string()) {
            s.rows_duplicate += 1;
            continue;
        }
        let mut extra = Map::new();
        for (i, v) in fields.iter().enumerate() {
            if known.contains(&i) || extra.len() >= MAX_FIELDS {
                continue;
            }
            if let (Some(h), Some(v)) = (headers.get(i), text(v)) {
                if !h.is_empty() {
                    extra.insert(h.chars().take(64).collect(), Value::String(v));
                }
            }
        }
        out.leads.push(ParsedLead {
            row,
            phone,
            name,
            email,
            timezone,
            fields: extra,
        });
    }
    out.summary.rows_imported = out.leads.len() as u64;
    Ok(out)
}

/// What the dialer did with a lead so far.
#[derive(Debug, Clone, Default)]
pub struct LeadProgress {
    pub attempts: u32,
    pub last_outcome: Option<String>,
    pub next_attempt_at: Option<chrono::DateTime<Utc>>,
}

/// A lead list request.
#[derive(Debug, Clone)]
pub struct LeadQuery {
    pub establishment_id: String,
    pub filter: LeadFilter,
    pub limit: i64,
}

pub struct Leads {
    pub bus: Arc<CommandBus>,
    pub pool: PgPool,
    pub background: Background,
    /// Imports run one at a time in a process, so each sees the numbers the previous added.
    pub importing: Arc<tokio::sync::Mutex<()>>,
}

impl Leads {
    /// Accepts a CSV and processes it in the background; answers the job id.
    pub async fn import(
        self: &Arc<Self>,
        user_id: &str,
        request_id: &str,
        establishment_id: &str,
        file_name: &str,
        bytes: bytes::Bytes,
    ) -> Result<String, LeadsError> {
        let job_id = crate::ids::new_id("job");
        let ctx = CommandContext::from_request(Actor::User(user_id.into()), request_id)
            .in_establishment(establishment_id);
        let outcome = self
            .bus
            .execute::<LeadImport>(
                &job_id,
                LeadImportCommand::Accept {
                    job_id: job_id.clone(),
                    establishment_id: establishment_id.into(),
                    file_name: file_name.chars().take(200).collect(),
                    bytes: bytes.len() as u64,
                    by: user_id.into(),
                    at: Utc::now(),
                },
                &ctx,
                ExecOptions::default().fresh(),
            )
            .await
            .map_err(LeadsError::Import)?;
        self.bus.visible(&outcome).await;
        let job = self.background.job();
        let me = self.clone();
        let (job_id2, est) = (job_id.clone(), establishment_id.to_string());
        tokio::spawn(async move {
            if let Err(e) = me.process(&job_id2, &est, &bytes, &ctx).await {
                tracing::warn!(job_id = job_id2, error = %e, "lead import failed");
                let _ = me
                    .bus
                    .execute::<LeadImport>(
                        &job_id2,
                        LeadImportCommand::Fail {
                            reason: e.to_string().chars().take(1000).collect(),
                            at: Utc::now(),
                        },
                        &ctx,
                        ExecOptions::default(),
                    )
                    .await;
            }
            drop(job);
        });
        Ok(job_id)
    }

    async fn process(
        &self,
        job_id: &str,
        establishment_id: &str,
        bytes: &[u8],
        ctx: &CommandContext,
    ) -> Result<(), LeadsError> {
        let _one_at_a_time = self.importing.lock().await;
        let started = std::time::Instant::now();
        let locale = projections::identity::establishment_locale(&self.pool, establishment_id)
            .await?
            .unwrap_or_default();
        let region = region_of_locale(&locale);
        let owned = bytes.to_vec();
        let parsed = tokio::task::spawn_blocking(move || parse_csv(&owned, region.as_deref()))
            .await
            .map_err(|e| Unexpected::Other(e.to_string()))??;
        let parsed_in = started.elapsed();
        let existing: HashMap<String, String> = leads::phones_of(&self.pool, establishment_id)
            .await?
            .into_iter()
            .collect();
        let now = Utc::now();
        let all: Vec<ImportedLead> = parsed
            .leads
            .into_iter()
            .map(|l| {
                let known = existing.get(l.phone.as_str());
                ImportedLead {
                    lead_id: known.cloned().unwrap_or_else(|| crate::ids::new_id("led")),
                    existing: known.is_some(),
                    phone_e164: l.phone.as_str().to_string(),
                    name: l.name,
                    email: l.email,
                    timezone: l.timezone,
                    fields: l.fields,
                }
            })
            .collect();
        for chunk in all.chunks(LEADS_PER_APPEND) {
            self.bus
                .execute::<LeadImport>(
                    job_id,
                    LeadImportCommand::RecordLeads {
                        leads: chunk.to_vec(),
                        at: now,
                    },
                    ctx,
                    ExecOptions::default(),
                )
                .await
                .map_err(LeadsError::Import)?;
        }
        let appended_in = started.elapsed();
        let outcome = self
            .bus
            .execute::<LeadImport>(
                job_id,
                LeadImportCommand::Complete {
                    summary: parsed.summary,
                    at: Utc::now(),
                },
                ctx,
                ExecOptions::default(),
            )
            .await
            .map_err(LeadsError::Import)?;
        // The next import's dedupe reads the numbers this one added.
        self.bus.visible(&outcome).await;
        tracing::info!(
            job_id,
            parse_ms = parsed_in.as_millis() as u64,
            append_ms = (appended_in - parsed_in).as_millis() as u64,
            projected_ms = (started.elapsed() - appended_in).as_millis() as u64,
            "lead import done"
        );
        Ok(())
    }

    /// Marks imports a stop interrupted as failed (their file was not kept).
    pub async fn fail_interrupted(&self) -> Result<(), LeadsError> {
        for job_id in leads::running_imports(&self.pool).await? {
            let _ = self
                .bus
                .execute::<LeadImport>(
                    &job_id,
                    LeadImportCommand::Fail {
                        reason:
                            "interrupted by a restart of the control plane; upload the file again"
                                .into(),
                        at: Utc::now(),
                    },
                    &CommandContext::system("lead-import"),
                    ExecOptions::default(),
                )
                .await;
        }
        Ok(())
    }

    pub async fn import_status(&self, job_id: &str) -> Result<Option<ImportRow>, LeadsError> {
        Ok(leads::import(&self.pool, job_id).await?)
    }

    pub async fn list(&self, q: &LeadQuery) -> Result<Vec<LeadRow>, LeadsError> {
        Ok(leads::list(&self.pool, &q.establishment_id, &q.filter, q.limit).await?)
    }

    /// The dialer's progress on each lead: attempts, last outcome, next attempt.
    pub async fn progress(
        &self,
        rows: &[LeadRow],
    ) -> Result<HashMap<String, LeadProgress>, LeadsError> {
        use aggregates::campaign::rules::AttemptOutcome;
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let calls = projections::campaigns::attempts_of_leads(&self.pool, &ids).await?;
        let mut specs: HashMap<String, Option<aggregates::campaign::CampaignSpec>> = HashMap::new();
        let mut out: HashMap<String, LeadProgress> = HashMap::new();
        for c in &calls {
            let p = out.entry(c.lead_id.clone()).or_default();
            p.attempts += 1;
            let outcome = AttemptOutcome::of_call(&c.status, c.answered_by.as_deref(), c.active);
            p.last_outcome = Some(
                serde_json::to_value(outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            );
            if !specs.contains_key(&c.campaign_id) {
                let spec = projections::campaigns::by_id(&self.pool, &c.campaign_id)
                    .await?
                    .filter(|r| r.status == "running" || r.status == "paused")
                    .and_then(|r| serde_json::from_value(r.spec).ok());
                specs.insert(c.campaign_id.clone(), spec);
            }
            p.next_attempt_at = specs.get(&c.campaign_id).cloned().flatten().and_then(|s| {
                let retried = outcome
                    .retry_on()
                    .is_some_and(|on| s.retry.on.contains(&on));
                let n = c.attempt.max(1) as usize;
                (retried && (n as u32) < s.retry.max_attempts).then(|| {
                    let b = &s.retry.backoff_minutes;
                    let wait = b.get(n - 1).or(b.last()).copied().unwrap_or(0);
                    c.started_at + chrono::TimeDelta::minutes(i64::from(wait))
                })
            });
        }
        Ok(out)
    }

    pub async fn get(&self, lead_id: &str) -> Result<Option<LeadRow>, LeadsError> {
        Ok(leads::by_id(&self.pool, lead_id).await?)
    }

    /// Changes a lead (the caller checked it is the establishment's); setting the
    /// do-not-call flag also puts the number on the establishment's list.
    pub async fn update(
        &self,
        user_id: &str,
        request_id: &str,
        lead: &LeadRow,
        changes: LeadChanges,
    ) -> Result<LeadRow, LeadsError> {
        let ctx = CommandContext::from_request(Actor::User(user_id.into()), request_id)
            .in_establishment(&lead.establishment_id);
        let dnc = changes.do_not_call == Some(true);
        let outcome = self
            .bus
            .execute::<Lead>(
                &lead.id,
                LeadCommand::Update {
                    establishment_id: lead.establishment_id.clone(),
                    changes,
                    by: user_id.into(),
                    at: Utc::now(),
                },
                &ctx,
                ExecOptions::default(),
            )
            .await
            .map_err(LeadsError::Lead)?;
        self.bus.visible(&outcome).await;
        if dnc {
            let phone: E164 = lead
                .phone_e164
                .parse()
                .map_err(|e: aggregates::common::ParseError| Invalid::from(e))?;
            self.add_do_not_call(
                user_id,
                request_id,
                &lead.establishment_id,
                vec![phone],
                "flagged on the lead".into(),
                DoNotCallSource::LeadFlag,
            )
            .await?;
        }
        self.get(&lead.id).await?.ok_or(LeadsError::NotFound)
    }

    /// Adds numbers to the establishment's do-not-call list; answers how many were new.
    pub async fn add_do_not_call(
        &self,
        user_id: &str,
        request_id: &str,
        establishment_id: &str,
        numbers: Vec<E164>,
        reason: String,
        source: DoNotCallSource,
    ) -> Result<usize, LeadsError> {
        let ctx = CommandContext::from_request(Actor::User(user_id.into()), request_id)
            .in_establishment(establishment_id);
        let outcome = self
            .bus
            .execute::<DoNotCallList>(
                establishment_id,
                DoNotCallCommand::Add {
                    establishment_id: establishment_id.into(),
                    numbers,
                    reason,
                    source,
                    by: user_id.into(),
                    at: Utc::now(),
                },
                &ctx,
                ExecOptions::default(),
            )
            .await
            .map_err(LeadsError::DoNotCall)?;
        self.bus.visible(&outcome).await;
        let added = match &outcome {
            crate::store::Outcome::Applied { events, .. } => events
                .iter()
                .map(|e| match e {
                    aggregates::lead::DoNotCallEvent::DoNotCallNumbersAdded { numbers, .. } => {
                        numbers.len()
                    }
                })
                .sum(),
            _ => 0,
        };
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spreadsheet_with_a_bom_semicolons_and_local_numbers_parses() {
        let csv = "\u{feff}Phone;NAME;Email;Plan\n(11) 91234-5678;Ana;ana@example.com;gold\n+55 11 91234-5678;Ana again;;\n123;Bad;;\n;;;\n11 3333-4444;Bob;not-an-email;\n";
        let p = parse_csv(csv.as_bytes(), Some("BR")).unwrap();
        assert_eq!(p.summary.rows_total, 4);
        assert_eq!(p.summary.rows_imported, 1);
        assert_eq!(p.summary.rows_duplicate, 1);
        assert_eq!(p.summary.rows_rejected, 2);
        assert_eq!(p.leads[0].phone.as_str(), "+5511912345678");
        assert_eq!(
            p.leads[0].fields.get("plan"),
            Some(&Value::String("gold".into()))
        );
        assert_eq!(p.summary.errors[0].row, 3);
        assert_eq!(p.summary.errors[0].column, "phone");
        assert_eq!(p.summary.errors[1].column, "email");
    }

    #[test]
    fn a_file_without_a_phone_column_is_refused() {
        assert!(parse_csv(b"name,email\nA,a@b.co\n", Some("US")).is_err());
    }

    #[test]
    fn the_region_comes_from_the_locale() {
        assert_eq!(region_of_locale("pt-BR").as_deref(), Some("BR"));
        assert_eq!(region_of_locale("en-US").as_deref(), Some("US"));
        assert_eq!(region_of_locale("en"), None);
    }
}
