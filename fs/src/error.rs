//! The client's error type and the one place errno is chosen.
//!
//! Every failure that reaches the kernel passes through [`FsError::errno`], an exhaustive
//! match over every variant (including the metadata layer's [`MetaError`]), so adding a
//! variant anywhere forces a decision here.

use crate::blocks::BlockError;
use meridian_proto::MetaError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FsError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("no such open file handle {0}")]
    BadHandle(u64),
    #[error("file handle {0} is not open for {1}")]
    WrongMode(u64, &'static str),
    #[error("result does not fit the caller's buffer")]
    Range,
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    #[error("block upload failed: {0}")]
    Upload(String),
    #[error(
        "inode {0} is open in passthrough by readers; it cannot be opened for writing until they close it (or mount with passthrough = false)"
    )]
    PassthroughBusy(u64),
    #[error(
        "a blocking lock request on inode {0} was abandoned: its owner closed the file while waiting"
    )]
    LockAbandoned(u64),
    #[error("a blocking lock request on inode {0} was interrupted by a signal")]
    Interrupted(u64),
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// The errno the kernel reports for this error.
    pub fn errno(&self) -> i32 {
        use libc::*;
        match self {
            FsError::Meta(m) => match m {
                MetaError::NotFound => ENOENT,
                MetaError::Exists => EEXIST,
                MetaError::NotDirectory => ENOTDIR,
                MetaError::IsDirectory => EISDIR,
                MetaError::NotEmpty => ENOTEMPTY,
                MetaError::AccessDenied => EACCES,
                MetaError::NotPermitted => EPERM,
                MetaError::NameTooLong => ENAMETOOLONG,
                MetaError::Invalid(_) => EINVAL,
                MetaError::TooManyLinks => EMLINK,
                MetaError::NoAttribute => ENODATA,
                MetaError::AttributeTooLarge => E2BIG,
                MetaError::FileTooLarge => EFBIG,
                MetaError::WouldBlock => EAGAIN,
                MetaError::Unsupported(_) => EOPNOTSUPP,
                MetaError::Store(_) | MetaError::Corrupt(_) => EIO,
            },
            FsError::Block(b) => match b {
                BlockError::NotFound(_)
                | BlockError::Corrupt(_)
                | BlockError::Io { .. }
                | BlockError::S3 { .. }
                | BlockError::Shared(_) => EIO,
                BlockError::Config(_) => EINVAL,
            },
            FsError::BadHandle(_) | FsError::WrongMode(..) => EBADF,
            FsError::Range => ERANGE,
            FsError::Unsupported(_) => EOPNOTSUPP,
            FsError::Upload(_) => EIO,
            FsError::PassthroughBusy(_) => ETXTBSY,
            FsError::LockAbandoned(_) | FsError::Interrupted(_) => EINTR,
        }
    }
}
