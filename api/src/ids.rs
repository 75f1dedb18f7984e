//! Opaque ids: a type prefix and a ULID (`est_01J...`), sortable by creation time.

/// A new id with the given prefix, e.g. `new_id("est")`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// Whether `s` looks like an id of this kind (prefix and a ULID); cheap guard on path params.
pub fn is_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|u| u.len() == 26 && u.parse::<ulid::Ulid>().is_ok())
}
