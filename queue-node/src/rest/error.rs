//! Errors of the REST API: an HTTP status and a JSON body,
//! `{"error": {"code": "INVALID_ARGUMENT", "message": "...", "field": "jobs[0].delay_ms"}}`.
//! A gRPC status maps to the HTTP status its code stands for; `field` is
//! the request field the message is about, when it names one.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// A bad value of request field `field`.
    pub fn field(field: impl Into<String>, message: impl std::fmt::Display) -> ApiError {
        let field = field.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: Code::InvalidArgument,
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: Code::NotFound,
            message: message.into(),
            field: None,
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        let code = status.code();
        let message = status.message().to_string();
        let field = (code == Code::InvalidArgument)
            .then(|| field_named_by(&message))
            .flatten();
        ApiError {
            status: http_status(code),
            code,
            message,
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Detail {
                code: code_name(self.code),
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The HTTP status that stands for a gRPC code (as in Google's API
/// design guide).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The request field a validation message is about: the node's messages
/// begin with the field's path (`jobs[2].delay_ms must be ...`,
/// `limit must be in ...`); queue-name messages begin `queue name`.
fn field_named_by(message: &str) -> Option<String> {
    if message.starts_with("queue name") {
        return Some("queue".into());
    }
    let first = message.split([' ', ':']).next()?;
    let is_path = !first.is_empty()
        && first.starts_with(|c: char| c.is_ascii_lowercase())
        && first
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c))
        && (first.contains('_')
            || first.contains('.')
            || first.contains('[')
            || KNOWN.contains(&first));
    is_path.then(|| first.to_string())
}

/// One-word fields the messages may begin with.
const KNOWN: &[&str] = &[
    "limit", "jobs", "tokens", "items", "state", "before", "after", "queue",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_field() {
        assert_eq!(
            field_named_by("jobs[2].delay_ms must be >= 0").as_deref(),
            Some("jobs[2].delay_ms")
        );
        assert_eq!(
            field_named_by("limit must be in 1..=1000 (got 0)").as_deref(),
            Some("limit")
        );
        assert_eq!(
            field_named_by("queue name \"a b\" contains ' '").as_deref(),
            Some("queue")
        );
        assert_eq!(field_named_by("the request is too large"), None);
        assert_eq!(field_named_by("Something else"), None);
    }
}
