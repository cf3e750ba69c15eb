//! What can go wrong in the store, and how each failure reads over the API
//! (a problem's status and type).

use std::fmt;
use std::path::PathBuf;

use super::SCHEMA_VERSION;
use crate::error::ApiError;

/// What can go wrong in the store.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file was written by a newer tabagent than this one.
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// The database cannot be opened or created (read-only or missing dir, not a database).
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The disk (or the size limit of the database) is full.
    Full(String),
    /// The data dir or the database file is read-only.
    ReadOnly(String),
    /// Another process held the write lock longer than the busy timeout.
    Busy(String),
    /// The thing named does not exist.
    NotFound(String),
    /// The request conflicts with what is stored (e.g. another embedding model).
    Conflict(String),
    /// A value is out of range.
    Invalid(String),
    /// The writer thread is gone (the host is shutting down).
    Closed,
    /// Any other database failure.
    Sqlite(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::TooNew { path, found } => write!(
                f,
                "the database {} has schema version {found}, newer than this tabagent understands \
                 ({SCHEMA_VERSION}); it was left untouched: upgrade tabagent, or move the file away",
                path.display()
            ),
            StoreError::Open { path, reason } => {
                write!(f, "cannot open the database {}: {reason}", path.display())
            }
            StoreError::Full(detail) => write!(f, "the disk is full: {detail}"),
            StoreError::ReadOnly(detail) => write!(f, "the database is read-only: {detail}"),
            StoreError::Busy(detail) => write!(f, "the database is busy: {detail}"),
            StoreError::NotFound(detail)
            | StoreError::Conflict(detail)
            | StoreError::Invalid(detail) => f.write_str(detail),
            StoreError::Closed => f.write_str("the store is shutting down"),
            StoreError::Sqlite(detail) => write!(f, "database error: {detail}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full(error.to_string()),
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(error.to_string()),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Busy(error.to_string())
            }
            _ => StoreError::Sqlite(error.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        let detail = error.to_string();
        match error {
            StoreError::NotFound(_) => ApiError::not_found(detail),
            StoreError::Conflict(_) => ApiError::conflict(detail),
            StoreError::Invalid(_) => ApiError::invalid(detail),
            StoreError::Busy(_) => ApiError::busy(detail, 1),
            StoreError::Full(_) => {
                ApiError::new(507, "storage-full", "Insufficient storage", detail)
            }
            StoreError::TooNew { .. }
            | StoreError::Open { .. }
            | StoreError::ReadOnly(_)
            | StoreError::Closed => {
                ApiError::new(503, "store-unavailable", "Store unavailable", detail)
            }
            StoreError::Sqlite(_) => ApiError::internal(detail),
        }
    }
}
