//! Names resolved in the backing dir for users: beneath a directory descriptor, through
//! no symlink, never blocking on a FIFO, and replaced without a predictable temporary.

use super::sys;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// Prefix of the temporary files [`replace_at`] creates (reserved: never shown in the
/// mount, never created by users).
pub const TEMP_PREFIX: &str = ".ezfs-tmp.";

/// Opens `rel` beneath `root` with `flags`: the walk never leaves `root` (no `..` above
/// it, no absolute path), follows no symlink in any component (`ELOOP`), and with
/// `same_fs` crosses no mount point (`EXDEV`). An empty `rel` opens `root` itself.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &Path, flags: i32, same_fs: bool) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    if same_fs {
        resolve |= libc::RESOLVE_NO_XDEV;
    }
    match openat2(root, rel, flags, resolve) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => walk_nofollow(root, rel, flags, same_fs),
        other => other,
    }
}

fn openat2(dir: BorrowedFd<'_>, rel: &Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let path = CString::new(rel.as_os_str().as_bytes()).map_err(|_| einval())?;
    // SAFETY: open_how is plain integers, for which zero is a value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: valid descriptor, NUL-terminated path, `how` lives across the call and its
    // size is passed; the returned descriptor is new and ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// [`open_beneath`] for kernels without `openat2` (before 5.6): one `O_NOFOLLOW` open
/// per component, refusing `..` and absolute paths.
fn walk_nofollow(root: BorrowedFd<'_>, rel: &Path, flags: i32, same_fs: bool) -> io::Result<OwnedFd> {
    let names: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::CurDir => None,
            _ => Some(Err(io::Error::from_raw_os_error(libc::EXDEV))),
        })
        .collect::<io::Result<_>>()?;
    let dev = sys::stat_at(root, OsStr::new(""))?.st_dev;
    let mut cur = sys::open_at(root, OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)?;
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let f = if last {
            flags
        } else {
            libc::O_PATH | libc::O_DIRECTORY
        };
        let next = sys::open_at(std::os::fd::AsFd::as_fd(&cur), name, f | libc::O_NOFOLLOW, 0)?;
        // O_PATH | O_NOFOLLOW opens a final symlink itself: only if the caller asked
        let st = sys::stat_at(std::os::fd::AsFd::as_fd(&next), OsStr::new(""))?;
        if last && flags & libc::O_NOFOLLOW == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        if same_fs && st.st_dev != dev {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        cur = next;
    }
    if names.is_empty() {
        cur = sys::open_at(root, OsStr::new("."), flags, 0)?;
    }
    Ok(cur)
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// Why a small control file (zone marker, keystore, status) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SmallFileError {
    /// No file has the name.
    #[error("missing")]
    Missing,
    /// The name is a symlink, FIFO, device or directory.
    #[error("not a regular file")]
    NotRegular,
    /// The file is larger than the limit given, in bytes.
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    /// Opening, checking or reading the file failed.
    #[error("{0}")]
    Io(io::Error),
}

/// Reads the regular file `dir/name` of at most `max` bytes. A symlink, FIFO, device
/// or directory there is refused without being opened for reading: the open uses
/// `O_NOFOLLOW | O_NONBLOCK`, so it neither follows a link nor waits for a writer.
pub fn read_small(dir: BorrowedFd<'_>, name: &OsStr, max: u64) -> Result<Vec<u8>, SmallFileError> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let fd = match sys::open_at(dir, name, flags, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(SmallFileError::Missing),
        // O_NOFOLLOW on a symlink
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(SmallFileError::NotRegular),
        Err(e) => return Err(SmallFileError::Io(e)),
    };
    let f = std::fs::File::from(fd);
    let st = sys::stat_at(std::os::fd::AsFd::as_fd(&f), OsStr::new("")).map_err(SmallFileError::Io)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(SmallFileError::NotRegular);
    }
    if st.st_size as u64 > max {
        return Err(SmallFileError::TooLarge(max));
    }
    let mut out = Vec::with_capacity(st.st_size as usize);
    io::Read::read_to_end(&mut io::Read::take(&f, max + 1), &mut out).map_err(SmallFileError::Io)?;
    if out.len() as u64 > max {
        return Err(SmallFileError::TooLarge(max));
    }
    Ok(out)
}

/// A fresh temporary name for [`replace_at`]: unpredictable, so no one can plant
/// anything under it in advance.
pub fn temp_name() -> OsString {
    OsString::from(format!(
        "{TEMP_PREFIX}{}",
        crate::text::hex(&crate::crypto::random_bytes::<12>())
    ))
}

/// Whether `name` is a temporary file of [`replace_at`].
pub fn is_temp(name: &[u8]) -> bool {
    name.starts_with(TEMP_PREFIX.as_bytes())
}

/// Replaces `dir/name` with `data` (mode `mode`): written to a new temporary file
/// created exclusively in `dir` (never an existing file, never through a link), synced,
/// renamed over `name` and the directory synced. A crash leaves the old or the new file.
pub fn replace_at(dir: BorrowedFd<'_>, name: &OsStr, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_name();
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let f = std::fs::File::from(sys::open_at(dir, &tmp, flags, mode & 0o7777)?);
    let written = (|| {
        // the process umask must not narrow the mode asked for
        sys::chmod_fd(&f, mode & 0o7777)?;
        io::Write::write_all(&mut &f, data)?;
        f.sync_all()?;
        sys::rename_at(dir, &tmp, dir, name, 0)
    })();
    if let Err(e) = written {
        let _ = sys::unlink_at(dir, &tmp, 0);
        return Err(e);
    }
    sync_dir(dir)
}

/// `fsync` of a directory given by any descriptor (an `O_PATH` one included).
pub fn sync_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    let d = sys::open_at(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    std::fs::File::from(d).sync_all()
}

/// The directory `dir/name`, created (mode `mode`) if missing; an existing entry that
/// is not a directory (a symlink to one included) is refused with `ENOTDIR`.
pub fn ensure_dir(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<OwnedFd> {
    match sys::mkdir_at(dir, name, mode) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e),
    }
    sys::open_at(dir, name, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::from_raw_os_error(libc::ENOTDIR),
            _ => e,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;

    fn dir_fd(p: &Path) -> OwnedFd {
        sys::open_at(sys::at_cwd(), p.as_os_str(), libc::O_PATH | libc::O_DIRECTORY, 0).unwrap()
    }

    #[test]
    fn beneath_refuses_links_and_escapes() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("a/out")).unwrap();
        std::os::unix::fs::symlink("b", r.join("a/in")).unwrap();
        let root = dir_fd(r);
        let open = |p: &str| open_beneath(root.as_fd(), Path::new(p), libc::O_PATH, false);
        assert!(open("a/b").is_ok());
        assert!(open("").is_ok());
        let errno = |p: &str| open(p).unwrap_err().raw_os_error();
        assert_eq!(errno("a/out"), Some(libc::ELOOP), "a symlink out");
        assert_eq!(errno("a/out/passwd"), Some(libc::ELOOP));
        assert_eq!(errno("a/in"), Some(libc::ELOOP), "even a symlink within");
        assert_eq!(errno("../x"), Some(libc::EXDEV));
        assert_eq!(errno("/etc"), Some(libc::EXDEV));
        assert_eq!(errno("a/b/../../.."), Some(libc::EXDEV));
        // the fallback walk behaves the same
        let walk = |p: &str| walk_nofollow(root.as_fd(), Path::new(p), libc::O_PATH, false);
        assert!(walk("a/b").is_ok());
        assert_eq!(walk("a/out").unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(walk("../x").unwrap_err().raw_os_error(), Some(libc::EXDEV));
    }

    #[test]
    fn small_files_never_follow_or_block() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::write(r.join("f"), b"data").unwrap();
        std::fs::write(r.join("big"), vec![1u8; 100]).unwrap();
        std::os::unix::fs::symlink(r.join("f"), r.join("link")).unwrap();
        let c = CString::new(r.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let d = dir_fd(r);
        let read = |n: &str| read_small(d.as_fd(), OsStr::new(n), 64);
        assert_eq!(read("f").unwrap(), b"data");
        assert!(matches!(read("link"), Err(SmallFileError::NotRegular)));
        assert!(matches!(read("fifo"), Err(SmallFileError::NotRegular)), "no hang");
        assert!(matches!(read("big"), Err(SmallFileError::TooLarge(64))));
        assert!(matches!(read("none"), Err(SmallFileError::Missing)));
    }

    #[test]
    fn replace_creates_no_predictable_temp_and_keeps_links_alone() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let victim = r.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // a symlink under the name being replaced is replaced, not written through
        std::os::unix::fs::symlink(&victim, r.join("m")).unwrap();
        let d = dir_fd(r);
        replace_at(d.as_fd(), OsStr::new("m"), b"new", 0o640).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let m = std::fs::symlink_metadata(r.join("m")).unwrap();
        assert!(m.is_file());
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read(r.join("m")).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(r)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary left: {names:?}");
        assert_ne!(temp_name(), temp_name());
        assert!(is_temp(temp_name().as_bytes()));
    }

    #[test]
    fn ensure_dir_refuses_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::os::unix::fs::symlink("/tmp", r.join("l")).unwrap();
        let d = dir_fd(r);
        assert_eq!(
            ensure_dir(d.as_fd(), OsStr::new("l"), 0o700)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOTDIR)
        );
        ensure_dir(d.as_fd(), OsStr::new("new"), 0o700).unwrap();
        ensure_dir(d.as_fd(), OsStr::new("new"), 0o700).unwrap();
        assert!(r.join("new").is_dir());
    }
}
