//! One error type for every route: `{"error":{"code":"...","message":"..."}}` with the status
//! its kind calls for.
//!
//! Statuses, by what went wrong:
//!
//! - **400** `bad_request`: the request could not be read as the route's input: a body that is
//!   not JSON, a field of the wrong type or unknown, a missing field, a query or path parameter
//!   that does not parse (a time that is not RFC 3339, a window that is not a duration).
//! - **422** `invalid_input`: the request was read, and healstore refused what it says (an id
//!   longer than 256 bytes, a raw event of a known type missing its agent, an event whose
//!   payload does not fit its type): the library's [`ErrorKind::InvalidInput`].
//! - **404** `not_found`: what the request names does not exist (a failure id); `no_route`: no
//!   route has this path. **405** `method_not_allowed`. **415** `unsupported_media_type` (a JSON body without
//!   `Content-Type: application/json`). **413** `payload_too_large`.
//! - **409** `conflict`: the request contradicts what is stored (a failure id reused for other
//!   facts, an outcome already recorded as the other result, a stream at another version).
//! - **503** `retry_later` with `Retry-After`: the database's write lock is held by another
//!   process past the busy timeout; `closed`: the store is shutting down.
//! - **500** for every other kind (a damaged file, a full disk, I/O): the code is the kind's.
//!
//! Bad input changes nothing, as on the command line.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::{Error, ErrorKind};

/// Seconds a client is told to wait before retrying a `503`.
pub const RETRY_AFTER_SECS: u64 = 1;

/// An error answered as JSON.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Sent as `Retry-After` (seconds).
    pub retry_after: Option<u64>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable code and a one-line message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `invalid_input`, `not_found`, `conflict`, `retry_later`, `closed`,
    /// `method_not_allowed`, `unsupported_media_type`, `payload_too_large`, or another of
    /// the library's error kinds (`corrupt`, `disk_full`, `read_only`, `io`, `internal`...).
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request could not be read as the route's input.
    pub fn bad_request(message: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message.to_string())
    }

    /// 404 for a path no route serves (code `no_route`, told apart from a handler's
    /// `not_found` for a failure that does not exist).
    pub fn no_route(path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route {path}; /openapi.json lists every route"),
        )
    }

    /// 405 for a method a route does not serve.
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not serve this method; /openapi.json lists every route",
        )
    }

    /// A library error, with the status of its kind.
    pub fn from_error(e: &Error) -> Self {
        let kind = e.kind();
        let status = match kind {
            ErrorKind::RetryLater | ErrorKind::Closed => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut err = ApiError::new(status, kind.code(), e.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            err.retry_after = Some(RETRY_AFTER_SECS);
        }
        err
    }

    /// A library error met while reading the request's parameters: a 400 when it is about
    /// the input, as [`ApiError::from_error`] otherwise.
    pub fn param(e: &Error) -> Self {
        if e.kind() == ErrorKind::InvalidInput {
            ApiError::bad_request(e)
        } else {
            ApiError::from_error(e)
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.clone(),
                message: self.message.clone(),
            },
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::from_error(&e)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The status a body rejection keeps (too large, wrong media type); anything else is a 400.
fn rejection(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(status, "payload_too_large", text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(status, "unsupported_media_type", text),
        _ => ApiError::bad_request(text),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

/// A JSON body, refused as an [`ApiError`] (never axum's plain-text rejection).
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// Query parameters, refused as an [`ApiError`].
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters, refused as an [`ApiError`].
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The extractors every handler uses: JSON bodies, queries and paths refused as [`ApiError`].
pub mod extract {
    pub use super::{Json, Path, Query};
}

/// The fallback for a path no route serves: a JSON 404.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::no_route(uri.path())
}

/// The fallback for a method a route does not serve: a JSON 405.
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
