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
        /// The path as the caller named it.
        path: String,
        /// What the system call returned.
        #[source]
        source: io::Error,
    },
    /// The key provider refused or failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A change was asked of a read-only mount.
    #[error("the mount is read-only")]
    ReadOnly,
    /// A request's path is not a path inside the mount (`..`, a reserved name).
    #[error("invalid path '{}' in the mount", shorten(.0, 200))]
    InvalidPath(String),
    /// Resolving a request's path met a symbolic link.
    #[error("{0}: a symbolic link is in the way")]
    SymlinkInPath(String),
    /// A request's path leads out of the backing dir.
    #[error("{0}: not inside the mount")]
    OutsideMount(String),
    /// A path that must name a directory names something else.
    #[error("{0} is not a directory")]
    NotADirectory(String),
    /// Only the owner of the directory (or root) may do `what` to it.
    #[error("{path}: only its owner or root may {what}")]
    NotOwner {
        /// The directory, as the caller named it.
        path: String,
        /// The change refused, in words ("make it a zone").
        what: &'static str,
    },
    /// The caller is not among the key's users (`ezfs key grant`).
    #[error("uid {uid} may not use key {key}")]
    KeyDenied {
        /// The caller's uid.
        uid: u32,
        /// The key's name.
        key: String,
    },
    /// A keystore change was asked by someone neither root nor the keystore's owner.
    #[error("only root and the keystore's owner may do that")]
    NotAdmin,
    /// `ezfs zone create` named a directory that is already a zone, or holds a marker.
    #[error("{0} is already an encryption zone")]
    AlreadyZone(String),
    /// `ezfs zone create` named a directory that has entries.
    #[error("{0} is not empty; a zone can only be created on an empty directory")]
    NotEmpty(String),
    /// A zone request named a path under no zone root.
    #[error("{0} is not in an encryption zone")]
    NotInZone(String),
    /// A zone request named a directory that is not itself a zone's root.
    #[error("{0} is not an encryption zone root")]
    NotZoneRoot(String),
    /// The zone cannot be used (its files give EIO): why.
    #[error("{at}: {why}")]
    BrokenZone {
        /// The zone (or path in it), as shown to the caller.
        at: String,
        /// Why the zone is broken.
        why: String,
    },
    /// A re-encryption of the zone was asked while one is running.
    #[error("{0} is already being re-encrypted; see 'ezfs zone reencrypt --status'")]
    JobRunning(String),
    /// A stop was asked for a zone that has no running re-encryption.
    #[error("no re-encryption job is running on {0}")]
    NoJobRunning(String),
    /// No record of a re-encryption of the zone is kept (or the caller cannot reach it).
    #[error("no re-encryption job of {0} is on record")]
    NoJobRecord(String),
    /// The thread of a re-encryption job could not be spawned.
    #[error("cannot start the job: {}", io_words(.0))]
    CannotStart(io::Error),
    /// The backing root's inode is no longer in the inode table.
    #[error("the backing root is gone")]
    RootGone,
    /// Writing the marker of a new zone failed; the zone is not created.
    #[error("{at}: cannot write the zone marker: {}", io_words(.source))]
    CannotWriteMarker {
        /// The directory that was to become the zone, as shown to the caller.
        at: String,
        /// Why the write failed.
        #[source]
        source: io::Error,
    },
    /// A file's header could not be read (damaged, or not an encrypted file).
    #[error("{at}: {why}")]
    BadHeader {
        /// The file, as the caller named it.
        at: String,
        /// What is wrong with the header.
        why: String,
    },
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
    /// No such file or directory.
    pub const ENOENT: FsError = FsError::Os(libc::ENOENT);
    /// The operation is not permitted.
    pub const EPERM: FsError = FsError::Os(libc::EPERM);
    /// An I/O error, also for damaged or unreadable encrypted data.
    pub const EIO: FsError = FsError::Os(libc::EIO);
    /// Permission denied.
    pub const EACCES: FsError = FsError::Os(libc::EACCES);
    /// The handle cannot serve the request (e.g. it holds no cipher).
    pub const EBADF: FsError = FsError::Os(libc::EBADF);
    /// The file an inode refers to is gone (or cannot be told from another).
    pub const ESTALE: FsError = FsError::Os(libc::ESTALE);
    /// A rename or link would cross a zone boundary.
    pub const EXDEV: FsError = FsError::Os(libc::EXDEV);
    /// A directory is where a file is required.
    pub const EISDIR: FsError = FsError::Os(libc::EISDIR);
    /// A file is where a directory is required.
    pub const ENOTDIR: FsError = FsError::Os(libc::ENOTDIR);
    /// An argument is invalid.
    pub const EINVAL: FsError = FsError::Os(libc::EINVAL);
    /// A directory to remove has entries.
    pub const ENOTEMPTY: FsError = FsError::Os(libc::ENOTEMPTY);
    /// The operation is not supported.
    pub const EOPNOTSUPP: FsError = FsError::Os(libc::EOPNOTSUPP);
    /// The mount is read-only.
    pub const EROFS: FsError = FsError::Os(libc::EROFS);
    /// A name over 255 bytes, or a link target too long to store encrypted.
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
