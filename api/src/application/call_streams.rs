//! A call's stream, found by Twilio `CallSid`: the incoming-call webhook, status callbacks, the
//! runtime's events and the placement worker all go through here, so every source of one call
//! meets in one stream (docs/adr/0006-one-stream-per-call.md).

use std::collections::HashMap;
use std::sync::Arc;

use aggregates::call::{Call, CallCommand, CallError, CallSid, CALL_SID_CLAIM};
use parking_lot::Mutex;

use crate::store::{CommandBus, CommandContext, ExecError, ExecOptions, Outcome, StoreError};

const DIRECTORY_CAPACITY: usize = 200_000;

/// Call streams by `CallSid`. A binding never changes once claimed (the store's `call_sid`
/// claim), so the mapping is cached for good (bounded).
pub struct CallStreams {
    bus: Arc<CommandBus>,
    cache: Mutex<HashMap<String, String>>,
}

impl CallStreams {
    pub fn new(bus: Arc<CommandBus>) -> Self {
        Self {
            bus,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn bus(&self) -> &CommandBus {
        &self.bus
    }

    /// The call that owns `sid`, if any.
    pub async fn lookup(&self, sid: &str) -> Result<Option<String>, StoreError> {
        if let Some(id) = self.cached(sid) {
            return Ok(Some(id));
        }
        let owner = self.bus.store().claim_owner(CALL_SID_CLAIM, sid).await?;
        if let Some(id) = &owner {
            self.remember(sid, id);
        }
        Ok(owner)
    }

    /// The call of `sid` if this process has seen it, without asking the database.
    pub fn cached(&self, sid: &str) -> Option<String> {
        self.cache.lock().get(sid).cloned()
    }

    pub fn remember(&self, sid: &str, call_id: &str) {
        let mut cache = self.cache.lock();
        if cache.len() >= DIRECTORY_CAPACITY {
            cache.clear();
        }
        cache.insert(sid.to_string(), call_id.to_string());
    }

    /// Runs a command on the call that owns `sid`, opening a new call (its id from
    /// `command(new_id)`) when none does. When another source opens the call for the same
    /// `CallSid` at the same moment, the store refuses the second claim and the command is
    /// re-sent to the winner.
    pub async fn execute_for_sid(
        &self,
        sid: &CallSid,
        command: impl FnMut(&str) -> CallCommand,
        ctx: &CommandContext,
        options: ExecOptions,
    ) -> Result<(String, Outcome<Call>), ExecError<CallError>> {
        self.execute_with(sid, command, ctx, options, false).await
    }

    /// [`Self::execute_for_sid`] for a `CallSid` that is almost certainly new (Twilio's
    /// incoming-call webhook): the first attempt opens a call without asking the database who
    /// owns the sid. When it was not new after all, the append says so (the idempotency key of
    /// a replayed webhook, or the CallSid claim of a call opened by an earlier callback) and
    /// the next attempt looks it up.
    pub async fn execute_for_new_sid(
        &self,
        sid: &CallSid,
        command: impl FnMut(&str) -> CallCommand,
        ctx: &CommandContext,
        options: ExecOptions,
    ) -> Result<(String, Outcome<Call>), ExecError<CallError>> {
        self.execute_with(sid, command, ctx, options, true).await
    }

    async fn execute_with(
        &self,
        sid: &CallSid,
        mut command: impl FnMut(&str) -> CallCommand,
        ctx: &CommandContext,
        options: ExecOptions,
        likely_new: bool,
    ) -> Result<(String, Outcome<Call>), ExecError<CallError>> {
        for attempt in 0..4 {
            let existing = if likely_new && attempt == 0 {
                self.cached(sid.as_str())
            } else {
                self.lookup(sid.as_str()).await.map_err(ExecError::Store)?
            };
            let fresh = existing.is_none();
            let call_id = existing.unwrap_or_else(|| crate::ids::new_id("call"));
            let mut options = options.clone();
            options.fresh_stream = fresh;
            match self
                .bus
                .execute::<Call>(&call_id, command(&call_id), ctx, options)
                .await
            {
                Err(ExecError::ClaimTaken { scope, .. }) if scope == CALL_SID_CLAIM => continue,
                Ok(outcome) => {
                    if let Outcome::Duplicate(record) = &outcome {
                        return Ok((record.aggregate_id.clone(), outcome));
                    }
                    self.remember(sid.as_str(), &call_id);
                    return Ok((call_id, outcome));
                }
                Err(e) => return Err(e),
            }
        }
        Err(ExecError::Conflict)
    }
}
