//! The one API error type: every failure becomes `{"error":{"code","message","details"}}`.
//! 5xx bodies never carry internals; the internal cause rides along as a response extension
//! that the logging middleware writes out.

use aggregates::common::ParseError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::application::{Invalid, Unexpected};
use crate::store::{ExecError, StoreError};

#[derive(Debug)]
pub struct ApiError(Box<ErrorBody>);

#[derive(Debug)]
struct ErrorBody {
    status: StatusCode,
    code: String,
    message: String,
    details: Value,
    retry_after: Option<u64>,
    internal: Option<String>,
}

/// The internal cause of a 5xx, for the log only.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorBody {
            status,
            code: code.into(),
            message: message.into(),
            details: json!({}),
            retry_after: None,
            internal: None,
        }))
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.0.details = details;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn code(&self) -> &str {
        &self.0.code
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for a resource that does not exist *or that the caller may not know about*.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 422 naming the offending field.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("{field}: {message}"),
        )
        .with_details(json!({ "field": field, "reason": message }))
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many attempts; try again later",
        )
        .with_details(json!({ "retry_after_seconds": retry_after_secs }));
        e.0.retry_after = Some(retry_after_secs.max(1));
        e
    }

    pub fn unavailable(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// A 500 whose cause is logged, never shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        );
        e.0.internal = Some(cause.to_string());
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ErrorBody {
            status,
            code,
            message,
            details,
            retry_after,
            internal,
        } = *self.0;
        let body = json!({
            "error": { "code": code, "message": message, "details": details }
        });
        let mut res = (status, axum::Json(body)).into_response();
        if let Some(s) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if let Some(cause) = internal {
            res.extensions_mut().insert(InternalCause(cause));
        }
        res
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        ApiError::validation(e.field, e.message)
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::validation(&e.field, e.reason)
    }
}

impl From<Unexpected> for ApiError {
    fn from(e: Unexpected) -> Self {
        match e {
            Unexpected::Store(s) => s.into(),
            e => ApiError::internal(e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(format!("database: {e}"))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::VersionConflict => ApiError::conflict(
                "concurrent_modification",
                "the resource is being changed by someone else; retry",
            ),
            StoreError::ClaimTaken { scope, value } => claim_taken(&scope, &value),
            StoreError::IdempotencyMismatch(_) => idempotency_mismatch(),
            e => ApiError::internal(e),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(format!("{e:#}"))
    }
}

fn claim_taken(scope: &str, value: &str) -> ApiError {
    let (code, message) = match scope {
        aggregates::user::EMAIL_CLAIM => (
            "email_taken",
            "this e-mail address already has an account".to_string(),
        ),
        s => ("already_taken", format!("{s} {value} is already in use")),
    };
    ApiError::conflict(code, message).with_details(json!({ "scope": scope, "value": value }))
}

fn idempotency_mismatch() -> ApiError {
    ApiError::conflict(
        "idempotency_key_reused",
        "this idempotency key was already used with a different request",
    )
}

/// How a domain error of an aggregate maps onto HTTP.
pub trait DomainError: std::error::Error {
    fn status(&self) -> StatusCode;
    fn code(&self) -> &'static str;
}

impl<E: DomainError> From<ExecError<E>> for ApiError {
    fn from(e: ExecError<E>) -> Self {
        match e {
            ExecError::Domain(d) => ApiError::new(d.status(), d.code(), d.to_string()),
            ExecError::Conflict => ApiError::conflict(
                "concurrent_modification",
                "the resource is being changed by someone else; retry",
            ),
            ExecError::ClaimTaken { scope, value } => claim_taken(&scope, &value),
            ExecError::IdempotencyMismatch(_) => idempotency_mismatch(),
            ExecError::Store(s) => s.into(),
        }
    }
}

mod domain_errors {
    use super::*;
    use aggregates::agent::AgentError as Ag;
    use aggregates::establishment::EstablishmentError as Es;
    use aggregates::invitation::InvitationError as In;
    use aggregates::telephony::TelephonyError;
    use aggregates::user::UserError as Us;

    impl DomainError for Us {
        fn status(&self) -> StatusCode {
            match self {
                Us::AlreadyRegistered => StatusCode::CONFLICT,
                Us::NotRegistered => StatusCode::NOT_FOUND,
                Us::ResetTokenInvalid | Us::ResetTokenExpired => StatusCode::BAD_REQUEST,
            }
        }
        fn code(&self) -> &'static str {
            match self {
                Us::AlreadyRegistered => "already_exists",
                Us::NotRegistered => "not_found",
                Us::ResetTokenInvalid => "invalid_token",
                Us::ResetTokenExpired => "token_expired",
            }
        }
    }

    impl DomainError for Es {
        fn status(&self) -> StatusCode {
            match self {
                Es::AlreadyExists | Es::LastAdmin => StatusCode::CONFLICT,
                Es::NotFound | Es::NotAMember => StatusCode::NOT_FOUND,
            }
        }
        fn code(&self) -> &'static str {
            match self {
                Es::AlreadyExists => "already_exists",
                Es::NotFound | Es::NotAMember => "not_found",
                Es::LastAdmin => "last_admin",
            }
        }
    }

    impl DomainError for In {
        fn status(&self) -> StatusCode {
            match self {
                In::AlreadySent => StatusCode::CONFLICT,
                In::InvalidToken | In::Expired | In::AlreadyAccepted | In::Revoked => {
                    StatusCode::BAD_REQUEST
                }
            }
        }
        fn code(&self) -> &'static str {
            match self {
                In::AlreadySent => "already_exists",
                In::InvalidToken => "invalid_token",
                In::Expired => "token_expired",
                In::AlreadyAccepted => "token_used",
                In::Revoked => "invitation_revoked",
            }
        }
    }

    impl DomainError for Ag {
        fn status(&self) -> StatusCode {
            match self {
                Ag::NotFound | Ag::VersionNotFound => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            }
        }
        fn code(&self) -> &'static str {
            match self {
                Ag::AlreadyExists | Ag::VersionExists => "already_exists",
                Ag::NotFound | Ag::VersionNotFound => "not_found",
                Ag::VersionImmutable => "version_immutable",
                Ag::VersionArchived => "version_archived",
                Ag::AlreadyPublished => "version_already_published",
                Ag::NeverPublished => "version_never_published",
                Ag::VersionActive => "version_active",
                Ag::TooManyVersions => "too_many_versions",
            }
        }
    }

    /// A policy the Telephony aggregate refuses is invalid input (the telephony use case
    /// names the field; this is the fallback).
    impl DomainError for TelephonyError {
        fn status(&self) -> StatusCode {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        fn code(&self) -> &'static str {
            "validation_failed"
        }
    }

    impl DomainError for aggregates::runtime::RuntimeError {
        fn status(&self) -> StatusCode {
            use aggregates::runtime::RuntimeError as Rt;
            match self {
                Rt::AlreadyProvisioned => StatusCode::CONFLICT,
                Rt::NotProvisioned => StatusCode::NOT_FOUND,
            }
        }
        fn code(&self) -> &'static str {
            use aggregates::runtime::RuntimeError as Rt;
            match self {
                Rt::AlreadyProvisioned => "runtime_exists",
                Rt::NotProvisioned => "not_found",
            }
        }
    }

    impl DomainError for aggregates::call::CallError {
        fn status(&self) -> StatusCode {
            use aggregates::call::CallError as Ca;
            match self {
                // A source of another establishment learns nothing about the call.
                Ca::NotFound | Ca::EstablishmentMismatch => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            }
        }
        fn code(&self) -> &'static str {
            use aggregates::call::CallError as Ca;
            match self {
                Ca::NotFound | Ca::EstablishmentMismatch => "not_found",
                Ca::AlreadyExists => "already_exists",
                Ca::CallSidMismatch { .. } => "call_sid_mismatch",
                Ca::NotOutbound => "not_outbound",
                Ca::PlacementAlreadyRequested => "placement_already_requested",
                Ca::PlacementNotRequested => "placement_not_requested",
                Ca::AlreadyPlaced => "already_placed",
                Ca::CallEnded => "call_ended",
                Ca::NotInProgress { .. } => "call_not_in_progress",
                Ca::HandoffAlreadyInProgress => "handoff_in_progress",
                Ca::NoHandoffRequested => "no_handoff_requested",
                Ca::NoProviderCallSid => "call_not_placed",
                Ca::NotOverdue { .. } => "not_overdue",
                // The outbound handler answers each refusal itself (field, status, message).
                Ca::OutboundRefused(_) => "outbound_refused",
            }
        }
    }
}
