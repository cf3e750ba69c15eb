//! The one error shape every transport shows: RFC 7807 problem details.
//!
//! Over HTTP an [`ApiError`] becomes its status code with an
//! `application/problem+json` body; over native messaging and WebRTC it is the
//! `error` member of a `response_type: "Error"` reply, with the same `status`.

use serde::Serialize;
use std::fmt;

/// A problem a request ran into: what a client sees.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiError {
    /// A URI naming the kind of problem, e.g. `urn:tabagent:problem:bad-request`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind, the same for every problem of that kind.
    pub title: String,
    /// The HTTP status the problem gets over HTTP.
    pub status: u16,
    /// What went wrong with this request, in words a user can act on.
    pub detail: String,
    /// Seconds after which retrying may succeed (503s from a full queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// A problem with the given status, slug and title.
    pub fn new(status: u16, slug: &str, title: &str, detail: impl Into<String>) -> ApiError {
        ApiError {
            kind: format!("urn:tabagent:problem:{slug}"),
            title: title.to_string(),
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 400: the message cannot be read as a request.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad-request", "Bad request", detail)
    }

    /// 404: the thing named does not exist.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(404, "not-found", "Not found", detail)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError::new(409, "conflict", "Conflict", detail)
    }

    /// 413: the message is larger than allowed.
    pub fn too_large(detail: impl Into<String>) -> ApiError {
        ApiError::new(413, "too-large", "Payload too large", detail)
    }

    /// 422: well-formed but invalid values.
    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(422, "invalid-value", "Invalid value", detail)
    }

    /// 422: a setting outside its range, naming the field, the value and
    /// the range allowed (`allowed` may add why, in parentheses).
    pub fn out_of_range(
        field: &str,
        value: impl fmt::Display,
        allowed: impl fmt::Display,
    ) -> ApiError {
        ApiError::invalid(format!(
            "{field} {value} is out of range: allowed {allowed}"
        ))
    }

    /// 500: a bug or an unexpected failure on our side.
    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError::new(500, "internal", "Internal error", detail)
    }

    /// 501: the capability is not in this build or not built yet.
    pub fn not_implemented(detail: impl Into<String>) -> ApiError {
        ApiError::new(501, "not-implemented", "Not implemented", detail)
    }

    /// 503: too busy right now; retry after the given seconds.
    pub fn busy(detail: impl Into<String>, retry_after: u32) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(503, "busy", "Service busy", detail)
        }
    }

    /// 507: the model will not fit in memory.
    pub fn insufficient_memory(detail: impl Into<String>) -> ApiError {
        ApiError::new(507, "insufficient-memory", "Insufficient memory", detail)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status, self.detail)
    }
}

impl std::error::Error for ApiError {}
