//! One error family for the whole HTTP API, mapped onto the wire's error kinds.
//!
//! Every handler returns `Result<_, ApiError>`; the body is always
//! `{"error": "<text>", "code": "<kind>", "message": "<text>"}` (seed + client readers).

use std::fmt;

use palaver_actors::error_code::ErrorCode;
use sea_orm::DbErr;
use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;

#[derive(Debug)]
pub enum ApiError {
    /// 400: bad input or a business-rule refusal.
    Validation(String),
    /// 401: missing, invalid or expired credentials.
    Unauthorized,
    /// 401 with a specific text (wrong password etc.).
    BadCredentials(String),
    /// 403: the caller may not do this.
    Forbidden,
    /// 403 with a reason the user should read.
    ForbiddenBecause(String),
    /// 404: missing, or hidden from this caller.
    NotFound(String),
    /// 405: path exists, method does not.
    MethodNotAllowed,
    /// 409: duplicate.
    Conflict(String),
    /// 413: body over the limit.
    PayloadTooLarge,
    /// 415: JSON expected.
    UnsupportedMediaType,
    /// 429 with `Retry-After` seconds.
    RateLimited { retry_after: u64 },
    /// 503: the database (or another dependency) is unreachable; retrying later helps.
    Unavailable(String),
    /// 503 with a reason the user should read (a feature this server has not configured).
    ServiceUnavailable(String),
    /// 503 with `Retry-After` seconds: a bounded resource (the password-hashing pool) is full.
    Busy { retry_after: u64 },
    /// 500: logged with context, never shown.
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: ErrorCode,
    message: &'a str,
}

impl ApiError {
    pub fn validation(msg: impl Into<String>) -> Self {
        Self::Validation(msg.into())
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::Conflict(msg.into())
    }
    pub fn internal(context: impl fmt::Display) -> Self {
        Self::Internal(context.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::BadCredentials(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::ForbiddenBecause(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::ServiceUnavailable(_) | Self::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation(_) => ErrorCode::ValidationError,
            Self::Unauthorized | Self::BadCredentials(_) => ErrorCode::Unauthorized,
            Self::Forbidden | Self::ForbiddenBecause(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Unavailable(_) | Self::ServiceUnavailable(_) | Self::Busy { .. } => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::InternalError,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Validation(m)
            | Self::BadCredentials(m)
            | Self::ForbiddenBecause(m)
            | Self::Conflict(m)
            | Self::ServiceUnavailable(m) => m.clone(),
            Self::Unauthorized => "unauthorized".into(),
            Self::Forbidden => "forbidden".into(),
            Self::NotFound(what) => format!("{what} not found"),
            Self::MethodNotAllowed => "method not allowed".into(),
            Self::PayloadTooLarge => "request body too large".into(),
            Self::UnsupportedMediaType => "expected Content-Type: application/json".into(),
            Self::RateLimited { .. } => "too many requests, slow down".into(),
            Self::Unavailable(_) => "the service is temporarily unavailable, try again shortly".into(),
            Self::Busy { .. } => "the server is busy, try again shortly".into(),
            Self::Internal(_) => "an internal error occurred".into(),
        }
    }

    pub fn into_response(self) -> Response {
        match &self {
            Self::Internal(context) => tracing::error!(error = %context, "internal error"),
            Self::Unavailable(context) => tracing::warn!(error = %context, "dependency unavailable"),
            _ => {}
        }
        let message = self.message();
        let body = serde_json::to_vec(&ErrorBody { error: &message, code: self.code(), message: &message })
            .unwrap_or_default();
        let mut response = Response::new(body.into());
        *response.status_mut() = self.status();
        // For the front door's counters (`unavailable` answers); never sent to the client.
        response.extensions_mut().insert(self.code());
        let headers = response.headers_mut();
        headers.insert(
            warp::http::header::CONTENT_TYPE,
            warp::http::HeaderValue::from_static("application/json"),
        );
        if let Self::RateLimited { retry_after } | Self::Busy { retry_after } = self {
            headers.insert(warp::http::header::RETRY_AFTER, retry_after.into());
        }
        response
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for ApiError {}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        if palaver_actors::is_unavailable(&err) {
            return Self::Unavailable(err.to_string());
        }
        if let Some(sea_orm::SqlErr::UniqueConstraintViolation(detail)) = err.sql_err() {
            return Self::Conflict(format!("already exists ({})", short_constraint(&detail)));
        }
        Self::Internal(err.to_string())
    }
}

fn short_constraint(detail: &str) -> &str {
    detail.rsplit(['"', ':']).find(|s| !s.trim().is_empty()).unwrap_or(detail).trim()
}

pub type ApiResult<T> = Result<T, ApiError>;
