//! Authentication: password hashing, access tokens backed by revocable sessions, the login
//! throttle, one-time tokens, and the `Principal` extractor with its role checks.

pub mod password;
pub mod principal;
pub mod throttle;
pub mod tokens;

pub use principal::Principal;
