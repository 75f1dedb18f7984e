//! Leads (prd §7.6, A.6): three small aggregates.
//!
//! - [`LeadImport`] (stream `job_…`): one CSV import. The import appends its leads in bulk, a
//!   batch of up to [`MAX_BATCH`] leads per `LeadsImported` event, so 100,000 rows are about a
//!   hundred events, not 100,000 commands. The rows were parsed, normalised and deduplicated
//!   before (the use case gathers the establishment's existing numbers as a fact: a lead that
//!   exists is updated under its own id, never twinned).
//! - [`Lead`] (stream `led_…`): changes to one lead after import (status, name, e-mail,
//!   fields, the do-not-call flag).
//! - [`DoNotCallList`] (stream = establishment id): the establishment's own do-not-call list.
//!   A number on it is never dialled by any campaign.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::common::{wire_enum, E164};

/// Most leads in one `LeadsImported` event.
pub const MAX_BATCH: usize = 1000;
/// Most numbers added to the do-not-call list by one request.
pub const MAX_DNC_NUMBERS: usize = 1000;
/// Longest do-not-call reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

wire_enum!(
    /// Where a lead stands (set by users; the dialer's progress is `attempts`/`last_outcome`).
    #[derive(Default)]
    LeadStatus, "status" {
        #[default]
        New => "new",
        Contacted => "contacted",
        Qualified => "qualified",
        Converted => "converted",
        Lost => "lost",
        Archived => "archived",
    }
);

wire_enum!(
    /// Where an import job stands.
    #[derive(Default)]
    ImportStatus, "status" {
        #[default]
        Queued => "queued",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
    }
);

/// A lead as an import writes it (new, or an update of an existing one: `existing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedLead {
    pub lead_id: String,
    /// In E.164 form (parsed by the import; kept as text so that replaying 100,000 leads
    /// does not parse each number again).
    pub phone_e164: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
    /// The lead existed before this import (its fields are updated).
    #[serde(default)]
    pub existing: bool,
}

/// One refused row of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub row: u64,
    pub column: String,
    pub reason: String,
}

/// The counts of a finished import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    pub rows_total: u64,
    pub rows_imported: u64,
    pub rows_duplicate: u64,
    pub rows_rejected: u64,
    /// The first errors (at most 100).
    pub errors: Vec<RowError>,
}

// ---------------------------------------------------------------------------------------------
// LeadImport
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum LeadImportCommand {
    Accept {
        job_id: String,
        establishment_id: String,
        file_name: String,
        bytes: u64,
        by: String,
        at: DateTime<Utc>,
    },
    /// Appends the import's leads (any number; cut into events of [`MAX_BATCH`]).
    RecordLeads {
        leads: Vec<ImportedLead>,
        at: DateTime<Utc>,
    },
    Complete {
        summary: ImportSummary,
        at: DateTime<Utc>,
    },
    Fail {
        reason: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LeadImportEvent {
    LeadImportAccepted {
        job_id: String,
        establishment_id: String,
        file_name: String,
        bytes: u64,
        by: String,
        at: DateTime<Utc>,
    },
    LeadsImported {
        establishment_id: String,
        leads: Vec<ImportedLead>,
        at: DateTime<Utc>,
    },
    LeadImportCompleted {
        summary: ImportSummary,
        at: DateTime<Utc>,
    },
    LeadImportFailed {
        reason: String,
        at: DateTime<Utc>,
    },
}
crate::domain_event!(LeadImportEvent {
    LeadImportAccepted,
    LeadsImported,
    LeadImportCompleted,
    LeadImportFailed,
});
impl crate::UniqueClaims for LeadImportEvent {
    fn unique_claims(&self) -> Vec<crate::ClaimOp> {
        vec![]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadImportError {
    #[error("the import job already exists")]
    AlreadyAccepted,
    #[error("the import job does not exist")]
    NotFound,
    #[error("the import job is already finished")]
    Finished,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeadImport {
    pub job_id: String,
    pub establishment_id: String,
    pub status: ImportStatus,
    pub leads_recorded: u64,
}

impl LeadImport {
    pub fn decide(
        &self,
        command: LeadImportCommand,
    ) -> Result<Vec<LeadImportEvent>, LeadImportError> {
        use LeadImportCommand as C;
        use LeadImportEvent as E;
        let exists = !self.job_id.is_empty();
        match command {
            C::Accept {
                job_id,
                establishment_id,
                file_name,
                bytes,
                by,
                at,
            } => {
                if exists {
                    return Err(LeadImportError::AlreadyAccepted);
                }
                Ok(vec![E::LeadImportAccepted {
                    job_id,
                    establishment_id,
                    file_name,
                    bytes,
                    by,
                    at,
                }])
            }
            _ if !exists => Err(LeadImportError::NotFound),
            _ if matches!(self.status, ImportStatus::Completed | ImportStatus::Failed) => {
                Err(LeadImportError::Finished)
            }
            C::RecordLeads { leads, at } => Ok(leads
                .chunks(MAX_BATCH)
                .map(|chunk| E::LeadsImported {
                    establishment_id: self.establishment_id.clone(),
                    leads: chunk.to_vec(),
                    at,
                })
                .collect()),
            C::Complete { summary, at } => Ok(vec![E::LeadImportCompleted { summary, at }]),
            C::Fail { reason, at } => Ok(vec![E::LeadImportFailed { reason, at }]),
        }
    }
}

impl Aggregate for LeadImport {
    const TYPE: &'static str = "LeadImport";
    type Command = LeadImportCommand;
    type Event = LeadImportEvent;
    type Error = LeadImportError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: LeadImportEvent) {
        use LeadImportEvent as E;
        match event {
            E::LeadImportAccepted {
                job_id,
                establishment_id,
                ..
            } => {
                self.job_id = job_id;
                self.establishment_id = establishment_id;
                self.status = ImportStatus::Running;
            }
            E::LeadsImported { leads, .. } => self.leads_recorded += leads.len() as u64,
            E::LeadImportCompleted { .. } => self.status = ImportStatus::Completed,
            E::LeadImportFailed { .. } => self.status = ImportStatus::Failed,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lead
// ---------------------------------------------------------------------------------------------

/// What a `PATCH /leads/{id}` changes (omitted: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeadChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<LeadStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_not_call: Option<bool>,
}

impl LeadChanges {
    pub fn is_empty(&self) -> bool {
        self == &LeadChanges::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum LeadCommand {
    Update {
        establishment_id: String,
        changes: LeadChanges,
        by: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LeadEvent {
    LeadUpdated {
        establishment_id: String,
        changes: LeadChanges,
        by: String,
        at: DateTime<Utc>,
    },
}
crate::domain_event!(LeadEvent { LeadUpdated });
impl crate::UniqueClaims for LeadEvent {
    fn unique_claims(&self) -> Vec<crate::ClaimOp> {
        vec![]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadError {
    #[error("nothing to change")]
    NothingToChange,
    #[error("the lead belongs to another establishment")]
    ForeignLead,
}

/// The lead's stream holds its changes after import (its creation is in the import's stream).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    pub establishment_id: String,
    pub updates: u64,
}

impl Lead {
    pub fn decide(&self, command: LeadCommand) -> Result<Vec<LeadEvent>, LeadError> {
        match command {
            LeadCommand::Update {
                establishment_id,
                changes,
                by,
                at,
            } => {
                if !self.establishment_id.is_empty() && self.establishment_id != establishment_id {
                    return Err(LeadError::ForeignLead);
                }
                if changes.is_empty() {
                    return Err(LeadError::NothingToChange);
                }
                Ok(vec![LeadEvent::LeadUpdated {
                    establishment_id,
                    changes,
                    by,
                    at,
                }])
            }
        }
    }
}

impl Aggregate for Lead {
    const TYPE: &'static str = "Lead";
    type Command = LeadCommand;
    type Event = LeadEvent;
    type Error = LeadError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: LeadEvent) {
        match event {
            LeadEvent::LeadUpdated {
                establishment_id, ..
            } => {
                self.establishment_id = establishment_id;
                self.updates += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DoNotCallList
// ---------------------------------------------------------------------------------------------

wire_enum!(
    /// How a number came onto the do-not-call list.
    DoNotCallSource, "source" {
        Manual => "manual",
        LeadFlag => "lead_flag",
        OptOut => "opt_out",
    }
);

#[derive(Debug, Clone, PartialEq)]
pub enum DoNotCallCommand {
    Add {
        establishment_id: String,
        numbers: Vec<E164>,
        reason: String,
        source: DoNotCallSource,
        by: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DoNotCallEvent {
    DoNotCallNumbersAdded {
        establishment_id: String,
        numbers: Vec<E164>,
        reason: String,
        source: DoNotCallSource,
        by: String,
        at: DateTime<Utc>,
    },
}
crate::domain_event!(DoNotCallEvent {
    DoNotCallNumbersAdded
});
impl crate::UniqueClaims for DoNotCallEvent {
    fn unique_claims(&self) -> Vec<crate::ClaimOp> {
        vec![]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DoNotCallError {
    #[error("numbers must hold 1 to {MAX_DNC_NUMBERS} phone numbers")]
    BadNumberCount,
    #[error("reason must be 1 to {MAX_REASON_CHARS} characters")]
    BadReason,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DoNotCallList {
    pub numbers: BTreeSet<String>,
}

impl DoNotCallList {
    /// Adds the numbers not on the list yet; adding only known numbers changes nothing.
    pub fn decide(&self, command: DoNotCallCommand) -> Result<Vec<DoNotCallEvent>, DoNotCallError> {
        match command {
            DoNotCallCommand::Add {
                establishment_id,
                numbers,
                reason,
                source,
                by,
                at,
            } => {
                if numbers.is_empty() || numbers.len() > MAX_DNC_NUMBERS {
                    return Err(DoNotCallError::BadNumberCount);
                }
                let reason = reason.trim().to_string();
                if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
                    return Err(DoNotCallError::BadReason);
                }
                let mut seen = BTreeSet::new();
                let new: Vec<E164> = numbers
                    .into_iter()
                    .filter(|n| !self.numbers.contains(n.as_str()) && seen.insert(n.clone()))
                    .collect();
                if new.is_empty() {
                    return Ok(vec![]);
                }
                Ok(vec![DoNotCallEvent::DoNotCallNumbersAdded {
                    establishment_id,
                    numbers: new,
                    reason,
                    source,
                    by,
                    at,
                }])
            }
        }
    }

    pub fn contains(&self, n: &E164) -> bool {
        self.numbers.contains(n.as_str())
    }
}

impl Aggregate for DoNotCallList {
    const TYPE: &'static str = "DoNotCallList";
    type Command = DoNotCallCommand;
    type Event = DoNotCallEvent;
    type Error = DoNotCallError;
    type Services = ();

    crate::handle_with_decide!();

    fn apply(&mut self, event: DoNotCallEvent) {
        match event {
            DoNotCallEvent::DoNotCallNumbersAdded { numbers, .. } => {
                self.numbers
                    .extend(numbers.into_iter().map(|n| n.as_str().to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-12-07T12:00:00Z".parse().unwrap()
    }

    fn lead(i: usize) -> ImportedLead {
        ImportedLead {
            lead_id: format!("led_{i}"),
            phone_e164: format!("+1415555{i:04}"),
            name: None,
            email: None,
            timezone: None,
            fields: Map::new(),
            existing: false,
        }
    }

    fn accepted() -> LeadImport {
        let mut j = LeadImport::default();
        for e in j
            .decide(LeadImportCommand::Accept {
                job_id: "job_1".into(),
                establishment_id: "est_1".into(),
                file_name: "a.csv".into(),
                bytes: 10,
                by: "usr_1".into(),
                at: at(),
            })
            .unwrap()
        {
            j.apply(e);
        }
        j
    }

    #[test]
    fn an_import_appends_its_leads_in_batches_not_one_event_per_row() {
        // Given an accepted import, when 2,500 leads are recorded,
        let j = accepted();
        let events = j
            .decide(LeadImportCommand::RecordLeads {
                leads: (0..2500).map(lead).collect(),
                at: at(),
            })
            .unwrap();
        // then they arrive in three events of at most MAX_BATCH.
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| matches!(e,
            LeadImportEvent::LeadsImported { leads, establishment_id, .. }
                if leads.len() <= MAX_BATCH && establishment_id == "est_1")));
    }

    #[test]
    fn a_finished_import_takes_nothing_more() {
        let mut j = accepted();
        for e in j
            .decide(LeadImportCommand::Complete {
                summary: ImportSummary::default(),
                at: at(),
            })
            .unwrap()
        {
            j.apply(e);
        }
        assert_eq!(
            j.decide(LeadImportCommand::RecordLeads {
                leads: vec![lead(1)],
                at: at()
            }),
            Err(LeadImportError::Finished)
        );
        assert_eq!(
            LeadImport::default().decide(LeadImportCommand::Fail {
                reason: "x".into(),
                at: at()
            }),
            Err(LeadImportError::NotFound)
        );
    }

    #[test]
    fn a_lead_of_one_establishment_is_not_changed_for_another() {
        let mut l = Lead::default();
        let change = |est: &str| LeadCommand::Update {
            establishment_id: est.into(),
            changes: LeadChanges {
                do_not_call: Some(true),
                ..Default::default()
            },
            by: "usr_1".into(),
            at: at(),
        };
        for e in l.decide(change("est_1")).unwrap() {
            l.apply(e);
        }
        assert_eq!(l.decide(change("est_2")), Err(LeadError::ForeignLead));
        assert_eq!(
            l.decide(LeadCommand::Update {
                establishment_id: "est_1".into(),
                changes: LeadChanges::default(),
                by: "u".into(),
                at: at()
            }),
            Err(LeadError::NothingToChange)
        );
    }

    #[test]
    fn the_do_not_call_list_records_each_number_once() {
        let mut list = DoNotCallList::default();
        let add = |ns: &[&str]| DoNotCallCommand::Add {
            establishment_id: "est_1".into(),
            numbers: ns.iter().map(|n| n.parse().unwrap()).collect(),
            reason: "asked".into(),
            source: DoNotCallSource::Manual,
            by: "usr_1".into(),
            at: at(),
        };
        let events = list.decide(add(&["+14155550001", "+14155550001"])).unwrap();
        assert!(
            matches!(&events[..], [DoNotCallEvent::DoNotCallNumbersAdded { numbers, .. }] if numbers.len() == 1)
        );
        for e in events {
            list.apply(e);
        }
        assert!(list.contains(&"+14155550001".parse().unwrap()));
        assert_eq!(list.decide(add(&["+14155550001"])), Ok(vec![]));
        assert_eq!(list.decide(add(&[])), Err(DoNotCallError::BadNumberCount));
    }
}
