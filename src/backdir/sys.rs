//! Thin, safe wrappers over the `*at` system calls made on backing files. Every inode
//! is held as an `O_PATH` descriptor, so operations never depend on a path that a
//! rename could have changed.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// AT_FDCWD as a borrowed descriptor, for opening a path given by the user of a command.
pub fn at_cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a valid "descriptor" for *at calls for the whole program.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

/// `fchmod` of an open (not `O_PATH`) file.
pub fn chmod_fd(f: &File, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    check(unsafe { libc::fchmod(f.as_raw_fd(), mode) }).map(drop)
}

/// `/proc/self/fd/N`: reopens or names an `O_PATH` descriptor's file, and leads
/// through it wherever renames took it.
pub fn fd_link(fd: RawFd) -> std::path::PathBuf {
    format!("/proc/self/fd/{fd}").into()
}

/// [`fd_link`] for the C calls.
pub fn proc_path(fd: RawFd) -> CString {
    CString::new(fd_link(fd).into_os_string().into_encoded_bytes()).expect("no NUL")
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dir` itself.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
    let name = cstr(name)?;
    // SAFETY: stat is plain integers, for which zero is a value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = libc::AT_SYMLINK_NOFOLLOW | if name.is_empty() { libc::AT_EMPTY_PATH } else { 0 };
    // SAFETY: valid fd, NUL-terminated name, st is a valid out pointer.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// `openat(dir, name, flags, mode)` with `O_CLOEXEC`.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let name = cstr(name)?;
    // SAFETY: valid fd and name; the returned fd is owned by us.
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: openat just returned fd, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the file behind an `O_PATH` descriptor for I/O.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<File> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: valid path; the fd is owned by the File.
    let fd = check(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: open just returned fd, which nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// [`reopen`] with `O_NOATIME` where the daemon may use it (it owns the file, or is
/// root): the mount, not the backing filesystem, decides access times.
pub fn reopen_noatime(fd: BorrowedFd<'_>, flags: i32) -> io::Result<File> {
    match reopen(fd, flags | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => reopen(fd, flags),
        other => other,
    }
}

/// `access(2)` of a descriptor's file (`R_OK`, `W_OK`, `X_OK` or `F_OK`) with the
/// daemon's real ids.
pub fn access(fd: BorrowedFd<'_>, mode: i32) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: valid path.
    check(unsafe { libc::access(p.as_ptr(), mode) }).map(drop)
}

/// Path of a descriptor's file, for log messages only.
pub fn describe(fd: BorrowedFd<'_>) -> String {
    path_of(fd)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "<unknown>".into())
}

/// Where the directory open as `dir` is now, wherever renames took it; `None` once it was
/// removed. (The kernel's name for a removed directory ends in " (deleted)", which a
/// live one could also be named: the path counts only if it leads back to `dir`.)
pub fn dir_path(dir: &File) -> Option<std::path::PathBuf> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let p = path_of(dir.as_fd()).ok()?;
    let here = std::fs::symlink_metadata(&p).ok()?;
    let it = dir.metadata().ok()?;
    (here.is_dir() && (here.dev(), here.ino()) == (it.dev(), it.ino())).then_some(p)
}

/// The path the kernel has for a descriptor's file now (for a removed file it ends
/// in " (deleted)"; for one opened by handle it may name no place in the tree).
pub fn path_of(fd: BorrowedFd<'_>) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(fd_link(fd.as_raw_fd()))
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: a valid descriptor and a NUL-terminated name that outlive the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// `mknodat(dir, name, mode, rdev)`.
pub fn mknod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: a valid descriptor and a NUL-terminated name that outlive the call.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

/// `symlinkat(target, dir, name)`: `dir/name` becomes a link to `target`.
pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let (target, name) = (cstr(target)?, cstr(name)?);
    // SAFETY: a valid descriptor and NUL-terminated strings that outlive the call.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `unlinkat(dir, name, flags)`; `AT_REMOVEDIR` removes a directory.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr, flags: i32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: a valid descriptor and a NUL-terminated name that outlive the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `renameat2(old_dir, old, new_dir, new, flags)` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
pub fn rename_at(
    old_dir: BorrowedFd<'_>,
    old: &OsStr,
    new_dir: BorrowedFd<'_>,
    new: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let (old, new) = (cstr(old)?, cstr(new)?);
    // SAFETY: plain syscall with valid fds and names.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Hard-links the file behind an `O_PATH` descriptor as `dir/name`.
pub fn link_at(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let (src, name) = (proc_path(fd.as_raw_fd()), cstr(name)?);
    // SAFETY: NUL-terminated paths and a valid descriptor that outlive the call.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// The target of the symbolic link behind a descriptor (`O_PATH` included).
pub fn readlink(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    let empty = c"";
    // SAFETY: buf is writable for its length.
    let n = unsafe { libc::readlinkat(fd.as_raw_fd(), empty.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// chown of the file behind a descriptor, not following symlinks. `u32::MAX` keeps a value.
pub fn chown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    let empty = c"";
    // SAFETY: a valid descriptor and an empty NUL-terminated name (AT_EMPTY_PATH).
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            empty.as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// chmod of the file behind a descriptor (`O_PATH` included), through `/proc/self/fd/N`.
pub fn chmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: a NUL-terminated path that outlives the call.
    check(unsafe { libc::chmod(p.as_ptr(), mode) }).map(drop)
}

/// Sets atime/mtime (each `None` = leave, `Some(None)` = now).
pub fn utimens(
    fd: BorrowedFd<'_>,
    atime: Option<Option<libc::timespec>>,
    mtime: Option<Option<libc::timespec>>,
) -> io::Result<()> {
    let conv = |t: Option<Option<libc::timespec>>| match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(None) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(Some(ts)) => ts,
    };
    let times = [conv(atime), conv(mtime)];
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: a NUL-terminated path and an array of two timespecs, as utimensat wants.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) }).map(drop)
}

/// `fstatvfs` of the filesystem holding a descriptor's file.
pub fn statvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    // SAFETY: statvfs is plain integers, for which zero is a value.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid out pointer.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut s) })?;
    Ok(s)
}

/// `fallocate(f, mode, off, len)`.
pub fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: a valid descriptor; no memory is passed.
    check(unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) }).map(drop)
}

/// Starts reading `[off, off + len)` of `f` into the page cache and returns without
/// waiting (`POSIX_FADV_WILLNEED`). A hint: a failure only means no head start.
pub fn will_need(f: &File, off: u64, len: u64) {
    // SAFETY: plain syscall on an open descriptor; no memory is passed.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), off as i64, len as i64, libc::POSIX_FADV_WILLNEED) };
}

/// Drops the clean cached pages of `[off, off + len)` of `f` (`POSIX_FADV_DONTNEED`),
/// so the next read asks the file system. For a backing file another host writes
/// through a client whose page cache does not see it (a FUSE client such as
/// GlusterFS's); a failure only means the cache stays.
pub fn drop_cached(f: &File, off: u64, len: u64) {
    // SAFETY: plain syscall on an open descriptor; no memory is passed.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), off as i64, len as i64, libc::POSIX_FADV_DONTNEED) };
}

/// `fstat` of `fd`'s file as the file system has it now, not as a client cached it
/// (`statx` with `AT_STATX_FORCE_SYNC`: NFS and FUSE file systems ask their server).
/// Only the fields `stat` has are filled.
pub fn stat_fresh(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: statx is plain integers, for which zero is a value.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_FORCE_SYNC;
    // SAFETY: valid fd, an empty NUL-terminated path, sx is a valid out pointer.
    check(unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            libc::STATX_BASIC_STATS,
            &mut sx,
        )
    })?;
    // SAFETY: stat is plain integers, for which zero is a value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_dev = libc::makedev(sx.stx_dev_major, sx.stx_dev_minor);
    st.st_ino = sx.stx_ino;
    st.st_mode = sx.stx_mode as libc::mode_t;
    st.st_nlink = sx.stx_nlink as libc::nlink_t;
    st.st_uid = sx.stx_uid;
    st.st_gid = sx.stx_gid;
    st.st_rdev = libc::makedev(sx.stx_rdev_major, sx.stx_rdev_minor);
    st.st_size = sx.stx_size as i64;
    st.st_blksize = sx.stx_blksize as libc::blksize_t;
    st.st_blocks = sx.stx_blocks as i64;
    st.st_atime = sx.stx_atime.tv_sec;
    st.st_atime_nsec = sx.stx_atime.tv_nsec.into();
    st.st_mtime = sx.stx_mtime.tv_sec;
    st.st_mtime_nsec = sx.stx_mtime.tv_nsec.into();
    st.st_ctime = sx.stx_ctime.tv_sec;
    st.st_ctime_nsec = sx.stx_ctime.tv_nsec.into();
    Ok(st)
}

/// Whether `fd`'s file lies on a FUSE file system (statfs magic `FUSE_SUPER_MAGIC`).
pub fn on_fuse(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: statfs is plain integers, for which zero is a value.
    let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    let r = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sf) };
    r == 0 && sf.f_type as u64 == 0x6573_5546
}

/// How many pages of `[off, off + len)` of `f` the page cache holds (`cachestat(2)`,
/// Linux 6.5); `None` where the kernel lacks the call.
pub fn cached_pages(f: &File, off: u64, len: u64) -> Option<u64> {
    /// `cachestat`'s number, the same on every architecture (the shared syscall table);
    /// the `libc` crate names it only for some targets.
    const SYS_CACHESTAT: libc::c_long = 451;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    let range = Range { off, len };
    // struct cachestat: nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted
    let mut stat = [0u64; 5];
    // SAFETY: both are live and laid out as the kernel's structs; the call only reads
    // `range` and writes `stat`.
    let r = unsafe { libc::syscall(SYS_CACHESTAT, f.as_raw_fd(), &range, stat.as_mut_ptr(), 0u32) };
    (r == 0).then_some(stat[0])
}

fn xattr_result(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `fgetxattr` on a descriptor opened for I/O (not `O_PATH`).
pub fn fgetxattr(f: &File, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: valid fd, NUL-terminated name, buf is valid for buf.len() bytes.
    xattr_result(unsafe { libc::fgetxattr(f.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// Extended attributes go through `/proc/self/fd/N` (O_PATH descriptors refuse f*xattr).
pub fn getxattr(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: NUL-terminated strings, and buf's pointer with its own length.
    xattr_result(unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `setxattr` through `/proc/self/fd/N`, like [`getxattr`].
pub fn setxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: NUL-terminated strings, and value's pointer with its own length.
    xattr_result(unsafe {
        libc::setxattr(
            p.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    } as isize)
    .map(drop)
}

/// `listxattr` through `/proc/self/fd/N`: the names, each NUL-terminated, into `buf`.
pub fn listxattr(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: a NUL-terminated path, and buf's pointer with its own length.
    xattr_result(unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `removexattr` through `/proc/self/fd/N`.
pub fn removexattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: NUL-terminated strings that outlive the call.
    xattr_result(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) } as isize).map(drop)
}

/// Directory entries of a directory descriptor (`O_PATH` included): (name, inode,
/// d_type), "." and ".." left out. The directory is read through a new descriptor
/// opened with `O_NOATIME` where the daemon may (its owner, or root): listing a
/// directory for the mount does not change its access time on the backing
/// filesystem, whose access times follow the mount's policy instead (see `fs::atime`).
pub fn read_dir(fd: BorrowedFd<'_>) -> io::Result<Vec<(std::ffi::OsString, u64, u8)>> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let d = match open_at(fd, OsStr::new("."), flags | libc::O_NOATIME, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_at(fd, OsStr::new("."), flags, 0)?,
        other => other?,
    };
    // SAFETY: fdopendir takes ownership of the descriptor (into_raw_fd gives it up);
    // closedir below releases both.
    let dir = unsafe { libc::fdopendir(std::os::fd::IntoRawFd::into_raw_fd(d)) };
    if dir.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; cleared to tell the end from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dir` is an open DIR*; the entry stays valid until the next call.
        let e = unsafe { libc::readdir64(dir) };
        if e.is_null() {
            let err = io::Error::last_os_error();
            break if err.raw_os_error().unwrap_or(0) == 0 {
                Ok(())
            } else {
                Err(err)
            };
        }
        // SAFETY: a non-null entry from readdir64, with a NUL-terminated name.
        let (name, ino, d_type) = unsafe {
            let e = &*e;
            (
                CStr::from_ptr(e.d_name.as_ptr()).to_bytes().to_vec(),
                e.d_ino,
                e.d_type,
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        let name = std::ffi::OsString::from(OsStr::from_bytes(&name));
        let d_type = if d_type == libc::DT_UNKNOWN {
            // SAFETY: dirfd of an open DIR* is a valid descriptor while it is open.
            let dfd = unsafe { BorrowedFd::borrow_raw(libc::dirfd(dir)) };
            match stat_at(dfd, &name) {
                Ok(st) => mode_to_dtype(st.st_mode),
                Err(_) => continue,
            }
        } else {
            d_type
        };
        out.push((name, ino, d_type));
    };
    // SAFETY: closes the DIR* (and its descriptor) once.
    unsafe { libc::closedir(dir) };
    result.map(|()| out)
}

/// The `d_type` of a file mode.
fn mode_to_dtype(mode: u32) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFLNK => libc::DT_LNK,
        libc::S_IFREG => libc::DT_REG,
        libc::S_IFIFO => libc::DT_FIFO,
        libc::S_IFSOCK => libc::DT_SOCK,
        libc::S_IFCHR => libc::DT_CHR,
        _ => libc::DT_BLK,
    }
}

thread_local! {
    /// Whether this thread has a file-system context (umask) of its own.
    static OWN_FS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's umask set to `mask`: a file created in `f` gets the
/// mode asked for less `mask`, unless its directory has a default POSIX ACL, which
/// then decides, exactly as for the process that asked (the FUSE request carries its
/// umask). The first call gives the thread its own umask (`unshare(CLONE_FS)`), so
/// other request threads are not affected; where that fails, the mask is applied to
/// `mode` by the caller instead and `mask` is ignored here (returns false to say so).
pub fn with_umask<R>(mask: u32, f: impl FnOnce(bool) -> R) -> R {
    let own = OWN_FS.with(|o| {
        if !o.get() {
            // SAFETY: unshare(CLONE_FS) affects only the calling thread's umask, root
            // and working directory.
            o.set(unsafe { libc::unshare(libc::CLONE_FS) } == 0);
        }
        o.get()
    });
    if !own {
        return f(false);
    }
    // SAFETY: umask cannot fail; the thread's own fs context is changed and restored.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    let r = f(true);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    r
}
