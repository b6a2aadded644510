//! What can go wrong in the filesystem, and the one place where that becomes an errno.
//!
//! Kernel requests need an errno; control requests (`ezfs zone …`) need a sentence.
//! [`FsError`] carries both: each variant displays as one clear line for the command
//! line and maps to one errno in [`FsError::errno`], so no layer turns an error into a
//! string to pass it on, and no `KeyError` becomes EIO by accident.

use crate::keys::KeyError;
use crate::text::{io_words, shorten};
use std::io;

/// A result of the filesystem core.
pub type FsResult<T> = Result<T, FsError>;

/// An error of a filesystem operation or control request.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An errno for the kernel: the words are the C library's.
    #[error("{}", io_words(&io::Error::from_raw_os_error(*.0)))]
    Os(i32),
    /// A system call in the backing dir failed.
    #[error("{}", io_words(.0))]
    Io(#[from] io::Error),
    /// A system call on a path the caller named failed.
    #[error("{path}: {}", io_words(.source))]
    At {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The key provider refused or failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the mount is read-only")]
    ReadOnly,
    /// A request's path is not a path inside the mount (`..`, a reserved name).
    #[error("invalid path '{}' in the mount", shorten(.0, 200))]
    InvalidPath(String),
    #[error("{0}: a symbolic link is in the way")]
    SymlinkInPath(String),
    #[error("{0}: not inside the mount")]
    OutsideMount(String),
    #[error("{0} is not a directory")]
    NotADirectory(String),
    /// Only the owner of the directory (or root) may do `what` to it.
    #[error("{path}: only its owner or root may {what}")]
    NotOwner { path: String, what: &'static str },
    /// The caller is not among the key's users (`ezfs key grant`).
    #[error("uid {uid} may not use key {key}")]
    KeyDenied { uid: u32, key: String },
    #[error("only root and the keystore's owner may do that")]
    NotAdmin,
    #[error("{0} is already an encryption zone")]
    AlreadyZone(String),
    #[error("{0} is not empty; a zone can only be created on an empty directory")]
    NotEmpty(String),
    #[error("{0} is not in an encryption zone")]
    NotInZone(String),
    #[error("{0} is not an encryption zone root")]
    NotZoneRoot(String),
    /// The zone cannot be used (its files give EIO): why.
    #[error("{at}: {why}")]
    BrokenZone { at: String, why: String },
    #[error("{0} is already being re-encrypted; see 'ezfs zone reencrypt --status'")]
    JobRunning(String),
    #[error("no re-encryption job is running on {0}")]
    NoJobRunning(String),
    #[error("no re-encryption job of {0} is on record")]
    NoJobRecord(String),
    #[error("cannot start the job: {}", io_words(.0))]
    CannotStart(io::Error),
    #[error("the backing root is gone")]
    RootGone,
    #[error("{at}: cannot write the zone marker: {}", io_words(.source))]
    CannotWriteMarker {
        at: String,
        #[source]
        source: io::Error,
    },
    /// A file's header could not be read (damaged, or not an encrypted file).
    #[error("{at}: {why}")]
    BadHeader { at: String, why: String },
}

impl FsError {
    /// The errno the kernel (or a caller that wants one) should see.
    pub fn errno(&self) -> i32 {
        use FsError::*;
        match self {
            Os(n) => *n,
            Io(e) | At { source: e, .. } => e.raw_os_error().unwrap_or(libc::EIO),
            // a file whose key cannot be had cannot be read: as for damage, EIO
            Key(_) => libc::EIO,
            ReadOnly => libc::EROFS,
            InvalidPath(_) => libc::EINVAL,
            SymlinkInPath(_) => libc::ELOOP,
            OutsideMount(_) => libc::EXDEV,
            NotADirectory(_) => libc::ENOTDIR,
            NotOwner { .. } | NotAdmin => libc::EPERM,
            KeyDenied { .. } => libc::EACCES,
            AlreadyZone(_) => libc::EEXIST,
            NotEmpty(_) => libc::ENOTEMPTY,
            NotInZone(_) | NotZoneRoot(_) => libc::EINVAL,
            BrokenZone { .. } => libc::EIO,
            JobRunning(_) => libc::EBUSY,
            NoJobRunning(_) | NoJobRecord(_) => libc::ENOENT,
            CannotStart(e) => e.raw_os_error().unwrap_or(libc::EAGAIN),
            RootGone => libc::ESTALE,
            CannotWriteMarker { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            BadHeader { .. } => libc::EIO,
        }
    }

    /// An OS error on the path `path` the caller named (shown in the message).
    pub fn at(path: &str) -> impl FnOnce(io::Error) -> FsError + '_ {
        move |source| FsError::At {
            path: path.to_owned(),
            source,
        }
    }

    /// Whether this is the errno `n`.
    pub fn is(&self, n: i32) -> bool {
        self.errno() == n
    }
}

/// The errnos the core returns most, by name.
pub mod errno {
    use super::FsError;
    pub const ENOENT: FsError = FsError::Os(libc::ENOENT);
    pub const EPERM: FsError = FsError::Os(libc::EPERM);
    pub const EIO: FsError = FsError::Os(libc::EIO);
    pub const EACCES: FsError = FsError::Os(libc::EACCES);
    pub const EBADF: FsError = FsError::Os(libc::EBADF);
    pub const ESTALE: FsError = FsError::Os(libc::ESTALE);
    pub const EXDEV: FsError = FsError::Os(libc::EXDEV);
    pub const EISDIR: FsError = FsError::Os(libc::EISDIR);
    pub const ENOTDIR: FsError = FsError::Os(libc::ENOTDIR);
    pub const EINVAL: FsError = FsError::Os(libc::EINVAL);
    pub const ENOTEMPTY: FsError = FsError::Os(libc::ENOTEMPTY);
    pub const EOPNOTSUPP: FsError = FsError::Os(libc::EOPNOTSUPP);
    pub const EROFS: FsError = FsError::Os(libc::EROFS);
    pub const ENAMETOOLONG: FsError = FsError::Os(libc::ENAMETOOLONG);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_errno_and_one_line() {
        let cases: Vec<(FsError, i32)> = vec![
            (FsError::Os(libc::ENOENT), libc::ENOENT),
            (io::Error::from_raw_os_error(libc::ENOSPC).into(), libc::ENOSPC),
            (io::Error::other("format damage").into(), libc::EIO),
            (KeyError::NoSuchKey("k".into()).into(), libc::EIO),
            (KeyError::WrongPassphrase.into(), libc::EIO),
            (FsError::ReadOnly, libc::EROFS),
            (FsError::NotEmpty("/z".into()), libc::ENOTEMPTY),
            (
                FsError::KeyDenied {
                    uid: 7,
                    key: "k".into(),
                },
                libc::EACCES,
            ),
            (
                FsError::at("/a")(io::Error::from_raw_os_error(libc::EACCES)),
                libc::EACCES,
            ),
            (FsError::InvalidPath("x\n".repeat(500)), libc::EINVAL),
        ];
        for (e, n) in cases {
            assert_eq!(e.errno(), n, "{e:?}");
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n') && s.len() < 300, "{s}");
            assert!(!s.contains("os error"), "{s}");
        }
        assert_eq!(
            FsError::at("/a")(io::Error::from_raw_os_error(libc::EACCES)).to_string(),
            "/a: Permission denied"
        );
    }
}
