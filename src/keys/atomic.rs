//! Crash-safe replacement of small files in `.ezfs` (keystore, job status), and the
//! keystore lock.
//!
//! Root runs the key commands and the daemon, and a backing dir may belong to a user:
//! the directory is opened without following a final symlink, and the file is replaced
//! through it with an unpredictable, exclusively created temporary (see
//! [`crate::backdir::resolve::replace_at`]), so nothing planted in `.ezfs` can redirect
//! the write.

use crate::backdir::{resolve, sys};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// The directory holding `path`, opened without following it if it is a symlink, and
/// the file's name.
fn parent_of(path: &Path) -> io::Result<(OwnedFd, &std::ffi::OsStr)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io::Error::other("no file name"))?;
    let fd = sys::open_at(
        sys::at_cwd(),
        dir.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    Ok((fd, name))
}

/// Replaces `path` with `data` (mode `mode`): a new temporary file, synced, renamed over
/// `path`, the directory synced. A crash at any point leaves the old or the new file.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = parent_of(path)?;
    resolve::replace_at(dir.as_fd(), name, data, mode)
}

/// Reads the small regular file `path` (at most `max` bytes), not following a symlink
/// in its last two components nor waiting on a FIFO.
pub fn read_file(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let (dir, name) = parent_of(path)?;
    resolve::read_small(dir.as_fd(), name, max).map_err(|e| match e {
        resolve::SmallFileError::Missing => io::ErrorKind::NotFound.into(),
        resolve::SmallFileError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    })
}

/// Opens `path` for appending, creating it with `mode`: not through a symlink in its
/// last two components, never waiting on a FIFO, and only a regular file (the audit
/// log).
pub fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    let (dir, name) = parent_of(path)?;
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let f = File::from(sys::open_at(dir.as_fd(), name, flags, mode)?);
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// Renames `from` to `to`, two names in the directory of `path` (opened as
/// [`open_append`] does), replacing `to`.
pub fn rename_beside(path: &Path, from: &std::ffi::OsStr, to: &std::ffi::OsStr) -> io::Result<()> {
    let (dir, _) = parent_of(path)?;
    sys::rename_at(dir.as_fd(), from, dir.as_fd(), to, 0)
}

/// Opens (creating it with mode 0600) the lock file `path` read-write, for byte-range
/// locks: not through a symlink in its last two components, never waiting on a FIFO,
/// and only a regular file.
pub fn open_lock_file(path: &Path) -> io::Result<File> {
    let (dir, name) = parent_of(path)?;
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let f = File::from(sys::open_at(dir.as_fd(), name, flags, 0o600)?);
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// An exclusive advisory lock on a file, released on drop (serializes keystore updates
/// between the mount daemon and the command line).
pub struct FileLock(File);

impl FileLock {
    /// Opens (creating if needed) the lock file `path` and waits for the lock.
    pub fn acquire(path: &Path) -> io::Result<FileLock> {
        let f = open_lock_file(path)?;
        loop {
            // SAFETY: flock on a valid, owned descriptor.
            let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
            if r == 0 {
                return Ok(FileLock(f));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own descriptor; closing it would release the lock anyway.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&self.0), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_with_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ks");
        write_file(&p, b"one", 0o600).unwrap();
        write_file(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "no temp file left");
        assert_eq!(read_file(&p, 10).unwrap(), b"two");
        assert!(read_file(&p, 2).is_err(), "bounded");
    }

    #[test]
    fn a_planted_symlink_redirects_nothing() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let sub = d.path().join("sub");
        fs::create_dir(&sub).unwrap();
        // the old fixed temporary name, and the lock, pointing at the victim
        std::os::unix::fs::symlink(&victim, sub.join(".ks.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, sub.join("lock")).unwrap();
        write_file(&sub.join("ks"), b"new", 0o600).unwrap();
        assert!(FileLock::acquire(&sub.join("lock")).is_err());
        // a symlinked directory is not written through
        std::os::unix::fs::symlink(&sub, d.path().join("link")).unwrap();
        assert!(write_file(&d.path().join("link/ks"), b"x", 0o600).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(sub.join("ks")).unwrap(), b"new");
    }
}
