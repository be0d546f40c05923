//! The metadata layer's error type.
//!
//! Variants name POSIX conditions in words; the mapping to errno numbers lives in the client
//! (`meridian_fs::error`), in one exhaustive match.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Every failure a [`crate::Namespace`] operation can report.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDirectory,
    #[error("is a directory")]
    IsDirectory,
    #[error("directory not empty")]
    NotEmpty,
    #[error("permission denied")]
    AccessDenied,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("too many links")]
    TooManyLinks,
    #[error("no such attribute")]
    NoAttribute,
    #[error("attribute value too large")]
    AttributeTooLarge,
    #[error("file too large")]
    FileTooLarge,
    #[error("operation not supported: {0}")]
    Unsupported(String),
    #[error("a conflicting lock is held")]
    WouldBlock,
    #[error("metadata store failure: {0}")]
    Store(String),
    #[error("metadata corrupt: {0}")]
    Corrupt(String),
}

pub type MetaResult<T> = Result<T, MetaError>;
