//! Upcasters: how old stored payloads become today's event shapes. Stored events are never
//! rewritten; a payload change bumps `event_version` and adds an upcaster here.

use cqrs_es::persist::EventUpcaster;

/// Every upcaster of every aggregate, applied in order when events are read back.
pub fn all() -> Vec<Box<dyn EventUpcaster>> {
    Vec::new()
}
