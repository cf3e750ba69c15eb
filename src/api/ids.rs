//! The ids on the wire: the client's own request id (a label it picks) and
//! the server's job id (unguessable, given to every job).

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::json_kind;
use crate::error::ApiError;

/// The client's id of a request: a string or a number, echoed verbatim; `null`
/// when the message had none or could not be parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RequestId(Value);

impl RequestId {
    /// The id of a message that carried none (or could not be read).
    pub const NONE: RequestId = RequestId(Value::Null);

    /// The longest id a client may give, in bytes: every reply echoes it,
    /// and a native messaging reply must stay within 1 MiB.
    pub const MAX_LEN: usize = 256;

    /// Takes the `id` member of a parsed message; anything but a string, a
    /// number or null is rejected, and so is a string over [`Self::MAX_LEN`].
    pub(super) fn from_value(value: Value) -> Result<RequestId, ApiError> {
        match value {
            Value::String(text) if text.len() > Self::MAX_LEN => {
                Err(ApiError::bad_request(format!(
                    "`id` is {} bytes long; at most {} are allowed",
                    text.len(),
                    Self::MAX_LEN
                )))
            }
            Value::Null | Value::String(_) | Value::Number(_) => Ok(RequestId(value)),
            other => Err(ApiError::bad_request(format!(
                "`id` must be a string or a number, not {}",
                json_kind(&other)
            ))),
        }
    }

    /// A string id, for transports that number their own requests.
    pub fn text(text: impl Into<String>) -> RequestId {
        RequestId(Value::String(text.into()))
    }

    /// Whether the message carried no id.
    pub fn is_none(&self) -> bool {
        self.0.is_null()
    }

    /// A key for looking the request up by id (StopGeneration); `"7"` and `7`
    /// name the same request, as a user typing either would expect.
    pub fn key(&self) -> String {
        match &self.0 {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }
}

/// A running job's server-given id: 64 random bits, shown as 16 hex digits
/// (a string on the wire: JavaScript numbers cannot hold 64 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobId(u64);

impl JobId {
    /// A fresh id no client can predict.
    pub fn random() -> JobId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // RandomState is keyed from the OS once per thread and stepped on
        // every call: the hash of a counter under a secret key is unguessable.
        let mut hasher = std::hash::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        JobId(hasher.finish())
    }

    /// Reads the hex form a client sends back.
    pub fn parse(text: &str) -> Option<JobId> {
        (text.len() == 16)
            .then(|| u64::from_str_radix(text, 16).ok())
            .flatten()
            .map(JobId)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl serde::Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        RequestId::from_value(value).map_err(|e| serde::de::Error::custom(e.detail))
    }
}
