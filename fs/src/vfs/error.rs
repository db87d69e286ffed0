//! Errors of the VFS core and the one table that turns them into errno values.

use crate::backend::BackendError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VfsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("read-only: {0}")]
    ReadOnly(&'static str),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Quota(String),
    #[error("no space left: {0}")]
    NoSpace(String),
    #[error("permission denied: {0}")]
    Access(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("not supported here")]
    NotSupported,
    #[error("cannot move across targets")]
    CrossDevice,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("busy: {0}")]
    Busy(String),
    #[error("no such attribute")]
    NoAttr,
    #[error("buffer too small")]
    Range,
    #[error("name too long")]
    NameTooLong,
    /// The process waiting for the answer was killed; nobody reads it.
    #[error("interrupted: the caller was killed")]
    Interrupted,
}

impl VfsError {
    /// The errno the file system returns for this error (DESIGN §10).
    pub fn errno(&self) -> i32 {
        match self {
            VfsError::NotFound => libc::ENOENT,
            VfsError::ReadOnly(_) => libc::EROFS,
            VfsError::InvalidName(_) => libc::EINVAL,
            VfsError::Exists(_) => libc::EEXIST,
            VfsError::Quota(_) => libc::EDQUOT,
            VfsError::NoSpace(_) => libc::ENOSPC,
            VfsError::Access(_) => libc::EACCES,
            VfsError::Io(_) => libc::EIO,
            VfsError::NotSupported => libc::ENOTSUP,
            VfsError::CrossDevice => libc::EXDEV,
            VfsError::NotDir => libc::ENOTDIR,
            VfsError::IsDir => libc::EISDIR,
            VfsError::NotEmpty => libc::ENOTEMPTY,
            VfsError::Busy(_) => libc::EBUSY,
            VfsError::NoAttr => libc::ENODATA,
            VfsError::Range => libc::ERANGE,
            VfsError::NameTooLong => libc::ENAMETOOLONG,
            VfsError::Interrupted => libc::EINTR,
        }
    }

    /// Whether this is an everyday outcome (a miss, a refused write) rather than a fault worth a
    /// warning in the log.
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            VfsError::NotFound
                | VfsError::ReadOnly(_)
                | VfsError::NoAttr
                | VfsError::Range
                | VfsError::NotSupported
                | VfsError::NotEmpty
                | VfsError::Exists(_)
                | VfsError::NameTooLong
                | VfsError::Interrupted
        )
    }
}

impl From<BackendError> for VfsError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::NotFound(_) => VfsError::NotFound,
            BackendError::AlreadyExists(_) => VfsError::Exists(e.to_string()),
            BackendError::InvalidName { .. } => VfsError::InvalidName(e.to_string()),
            BackendError::Quota(_) => VfsError::Quota(e.to_string()),
            BackendError::PermissionDenied(_) => VfsError::Access(e.to_string()),
            BackendError::NoSpace(_) => VfsError::NoSpace(e.to_string()),
            BackendError::Unsupported(_) => VfsError::NotSupported,
            BackendError::Corrupt(_) | BackendError::Unavailable(_) | BackendError::Other(_) => {
                VfsError::Io(e.to_string())
            }
        }
    }
}

impl From<std::io::Error> for VfsError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOENT) => VfsError::NotFound,
            Some(libc::EEXIST) => VfsError::Exists(e.to_string()),
            Some(libc::ENOSPC) => VfsError::NoSpace(e.to_string()),
            Some(libc::EDQUOT) => VfsError::Quota(e.to_string()),
            Some(libc::ENOTDIR) => VfsError::NotDir,
            Some(libc::EISDIR) => VfsError::IsDir,
            Some(libc::ENOTEMPTY) => VfsError::NotEmpty,
            Some(libc::EACCES) | Some(libc::EPERM) => VfsError::Access(e.to_string()),
            Some(libc::EINVAL) => VfsError::InvalidName(e.to_string()),
            Some(libc::EXDEV) => VfsError::CrossDevice,
            Some(libc::ENAMETOOLONG) => VfsError::NameTooLong,
            _ => VfsError::Io(e.to_string()),
        }
    }
}

pub type VfsResult<T> = Result<T, VfsError>;
