//! Authentication building blocks: password hashing, access tokens backed by revocable
//! sessions, one-time tokens and the login throttle. The request extractors that use them live
//! in `http::principal`.

pub mod password;
pub mod principals;
pub mod sessions;
pub mod throttle;
pub mod tokens;
