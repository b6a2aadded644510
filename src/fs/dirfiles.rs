//! The files the filesystem keeps in directories of a name-encrypted zone: each
//! directory's diriv and the sidecars of long names (see [`crate::format::names`]),
//! and, for `rmdir`, a zone root's marker. Written by root, never shown in the mount.

use crate::backdir::resolve::{self, read_small, SmallFileError};
use crate::backdir::sys;
use crate::format::names::{self as encnames, DIRIV_FILE, DIRIV_LEN};
use crate::zone::names::NameCiphers;
use crate::zone::MARKER_FILE;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Gives the new directory `dir` a random diriv, on disk before the directory gets
/// its name (a crash must not leave a named directory without one).
pub fn write_diriv(dir: BorrowedFd<'_>) -> io::Result<()> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let mut f = std::fs::File::from(sys::open_at(dir, OsStr::new(DIRIV_FILE), flags, 0o444)?);
    f.write_all(&crate::crypto::random_bytes::<DIRIV_LEN>())?;
    f.sync_data()
}

/// Why a directory's diriv, or a backing entry's name, cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirFileError {
    /// The diriv file is missing, no regular file, or too large.
    #[error("its {DIRIV_FILE} is unusable: {0}")]
    Diriv(SmallFileError),
    /// The diriv file holds another number of bytes.
    #[error("its {DIRIV_FILE} holds {0} bytes, not {DIRIV_LEN}")]
    DirivLength(usize),
    /// A long name's sidecar is missing, no regular file, or too large.
    #[error("its long-name file is unusable: {0}")]
    Sidecar(SmallFileError),
    /// A long name's sidecar holds the encoded name of another entry.
    #[error("its long-name file belongs to another name")]
    SidecarMismatch,
    /// The entry's name does not decrypt in this directory.
    #[error("no name of this directory: {0}")]
    Name(encnames::NameError),
}

/// The diriv of directory `dir`; `Err` says why there is none.
pub fn read_diriv(dir: BorrowedFd<'_>) -> Result<[u8; DIRIV_LEN], DirFileError> {
    let bytes = read_small(dir, OsStr::new(DIRIV_FILE), DIRIV_LEN as u64).map_err(DirFileError::Diriv)?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| DirFileError::DirivLength(b.len()))
}

/// Writes the sidecar of the long-name entry `entry` of `dir`: the whole encoded name,
/// synced before the entry is made (the entry is useless without it). Its content is
/// fixed by its name, so writing it again changes nothing.
pub fn write_sidecar(dir: BorrowedFd<'_>, entry: &OsStr, encoded: &str) -> io::Result<()> {
    let name = encnames::sidecar(&entry.to_string_lossy());
    resolve::replace_at(dir, OsStr::new(&name), encoded.as_bytes(), 0o444)
}

/// Removes the sidecar of the long-name entry `entry` of `dir` (the entry is gone).
pub fn remove_sidecar(dir: BorrowedFd<'_>, entry: &OsStr) {
    let name = encnames::sidecar(&entry.to_string_lossy());
    let _ = sys::unlink_at(dir, OsStr::new(&name), 0);
}

/// The name in the mount of the backing entry `name` of the name-encrypted directory
/// `dir` (diriv `diriv`): `Ok(None)` for the files the filesystem keeps there,
/// `Err` for an entry that is no name of this directory.
pub fn decrypt_entry(
    dir: BorrowedFd<'_>,
    ciphers: &NameCiphers,
    diriv: &[u8; DIRIV_LEN],
    name: &OsStr,
) -> Result<Option<OsString>, DirFileError> {
    let bytes = name.as_bytes();
    if bytes == DIRIV_FILE.as_bytes()
        || bytes.starts_with(encnames::LONG_PREFIX.as_bytes()) && !encnames::is_long_entry(bytes)
    {
        return Ok(None);
    }
    let encoded;
    let encoded: &[u8] = if encnames::is_long_entry(bytes) {
        let side = encnames::sidecar(&name.to_string_lossy());
        encoded = read_small(dir, OsStr::new(&side), 4096).map_err(DirFileError::Sidecar)?;
        if encnames::long_entry(&String::from_utf8_lossy(&encoded)) != name.to_string_lossy() {
            return Err(DirFileError::SidecarMismatch);
        }
        &encoded
    } else {
        bytes
    };
    let plain = encnames::decrypt_name(&ciphers.current, diriv, encoded)
        .or_else(|e| {
            ciphers
                .next
                .as_ref()
                .map_or(Err(e), |n| encnames::decrypt_name(n, diriv, encoded))
        })
        .map_err(DirFileError::Name)?;
    Ok(Some(OsString::from_vec(plain)))
}

/// The files the filesystem keeps in a directory, taken out of `dir` so that it can
/// be removed: (name, content) of each that was there. Fails with ENOTEMPTY if `dir`
/// holds anything else.
pub fn take_housekeeping(dir: BorrowedFd<'_>) -> io::Result<Vec<(&'static str, Vec<u8>)>> {
    const KEPT: [&str; 2] = [MARKER_FILE, DIRIV_FILE];
    let entries = sys::read_dir(dir)?;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    if entries.iter().any(|(n, _, _)| !KEPT.iter().any(|k| n == k)) {
        return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
    }
    let mut taken = Vec::new();
    for k in KEPT {
        if entries.iter().any(|(n, _, _)| n == k) {
            let bytes = read_small(dir, OsStr::new(k), 4096).map_err(|e| io::Error::other(e.to_string()))?;
            sys::unlink_at(dir, OsStr::new(k), 0)?;
            taken.push((k, bytes));
        }
    }
    Ok(taken)
}

/// A rename over the directory `dir`, which must be empty: its diriv is taken out if
/// that is all it holds (`None` otherwise, and nothing is changed).
pub fn take_diriv_if_alone(dir: BorrowedFd<'_>) -> Option<Vec<(&'static str, Vec<u8>)>> {
    let entries = sys::read_dir(dir).ok()?;
    if entries.len() != 1 || entries[0].0 != DIRIV_FILE {
        return None;
    }
    let bytes = read_small(dir, OsStr::new(DIRIV_FILE), DIRIV_LEN as u64).ok()?;
    sys::unlink_at(dir, OsStr::new(DIRIV_FILE), 0).ok()?;
    Some(vec![(DIRIV_FILE, bytes)])
}

/// Puts back what [`take_housekeeping`] took (the directory stays after all).
pub fn restore_housekeeping(dir: BorrowedFd<'_>, taken: &[(&'static str, Vec<u8>)]) {
    for (name, bytes) in taken {
        let mode = if *name == MARKER_FILE { 0o644 } else { 0o444 };
        if let Err(e) = resolve::replace_at(dir, OsStr::new(name), bytes, mode) {
            log::error!("{}: could not restore {name}: {e}", sys::describe(dir));
        }
    }
}
