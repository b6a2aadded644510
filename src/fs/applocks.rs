//! Applications' own locks (`fcntl` byte-range locks and `flock`) taken through a
//! shared-storage mount, forwarded to the backing file so that processes on other
//! hosts, going through their own daemons, see them (`--shared-storage` only; a mount
//! of its own leaves locks to the kernel, which is faster and exact).
//!
//! The kernel names each lock's owner (a process's POSIX locks, or one open file's
//! `flock`). Each owner of each file gets an open file description of the backing
//! file of its own and its locks become OFD locks on it: owners conflict with each
//! other as processes do, one owner's locks merge and split as POSIX says, and they
//! all go when the owner closes the file (FLUSH, or RELEASE for `flock`) or when the
//! description is closed because the daemon died.
//!
//! Applications' ranges are kept below the daemon's own lock bytes
//! ([`sharedlock::INTERNAL`]): a lock "to the end of the file" ends there, so an
//! application lock never blocks the daemon's reads and writes of the same file.
//! Like NFS, `flock` is carried as a lock of the whole file: between hosts it also
//! conflicts with `fcntl` locks of the same file, which it does not locally.

use super::core::Core;
use super::error::{errno, FsError, FsResult};
use super::sharedlock;
use crate::backdir::ofd::{self, Kind};
use crate::backdir::sys;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The last byte an application lock can cover.
const LAST: u64 = sharedlock::INTERNAL - 1;
/// What the kernel sends as "to the end of the file".
const OFFSET_MAX: u64 = i64::MAX as u64;

/// The forwarded locks of the mount: (node, owner) to the owner's description.
#[derive(Default)]
pub struct AppLocks(Mutex<HashMap<(u64, u64), Arc<Owner>>>);

/// One owner's description of one backing file.
struct Owner {
    file: File,
    /// The owner closed the file: a wait for a lock gives up.
    gone: AtomicBool,
}

/// A lock as the kernel describes it: inclusive range and `F_*LCK` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRange {
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive (`i64::MAX`: to the end).
    pub end: u64,
    /// `F_RDLCK`, `F_WRLCK` or `F_UNLCK`.
    pub typ: i32,
}

/// The backing range `(start, len)` of the application range `[start, end]`.
fn backing_range(start: u64, end: u64) -> FsResult<(u64, u64)> {
    if end < start {
        return Err(errno::EINVAL);
    }
    let (s, e) = (start.min(LAST), end.min(LAST));
    Ok((s, e - s + 1))
}

impl Core {
    fn lock_owner(&self, ino: u64, owner: u64) -> FsResult<Arc<Owner>> {
        if let Some(o) = self.app_locks.0.lock().get(&(ino, owner)) {
            return Ok(o.clone());
        }
        let fd = self.inode(ino)?.fd()?;
        let file =
            sys::reopen(fd.as_fd(), libc::O_RDWR).or_else(|_| sys::reopen(fd.as_fd(), libc::O_RDONLY))?;
        let o = Arc::new(Owner {
            file,
            gone: AtomicBool::new(false),
        });
        Ok(self.app_locks.0.lock().entry((ino, owner)).or_insert(o).clone())
    }

    /// GETLK: the first lock of another owner that would block `lock`, or `None`.
    pub fn getlk(&self, ino: u64, owner: u64, lock: LockRange) -> FsResult<Option<LockRange>> {
        let kind = Kind::from_raw(lock.typ).ok_or(errno::EINVAL)?;
        let (start, len) = backing_range(lock.start, lock.end)?;
        let o = self.lock_owner(ino, owner)?;
        let conflict = ofd::test(o.file.as_fd(), kind, start, len)?;
        Ok(conflict.map(|c| LockRange {
            start: c.start,
            end: match c.len {
                0 => OFFSET_MAX,
                n if c.start + n > LAST => OFFSET_MAX,
                n => c.start + n - 1,
            },
            typ: match c.kind {
                Kind::Read => libc::F_RDLCK,
                _ => libc::F_WRLCK,
            },
        }))
    }

    /// SETLK (`wait` false: EAGAIN if another owner holds a conflicting lock) or
    /// SETLKW (`wait`: until it is free, or the waiting process has a fatal signal
    /// pending or its owner closed the file, which give EINTR). `pid` is the process
    /// asking.
    ///
    /// A wait polls (at most 50 ms apart) instead of blocking in `F_OFD_SETLKW`: the
    /// kernel does not let a process waiting on a FUSE request die until the request
    /// is answered, so the daemon must notice a kill itself.
    pub fn setlk(&self, ino: u64, owner: u64, lock: LockRange, wait: bool, pid: u32) -> FsResult<()> {
        let kind = Kind::from_raw(lock.typ).ok_or(errno::EINVAL)?;
        let (start, len) = backing_range(lock.start, lock.end)?;
        if kind == Kind::Unlock {
            let o = self.app_locks.0.lock().get(&(ino, owner)).cloned();
            if let Some(o) = o {
                ofd::set(o.file.as_fd(), Kind::Unlock, start, len, false)?;
            }
            return Ok(());
        }
        let o = self.lock_owner(ino, owner)?;
        let mut pause = Duration::from_millis(1);
        loop {
            if ofd::set(o.file.as_fd(), kind, start, len, false).map_err(FsError::from)? {
                return Ok(());
            }
            if !wait {
                return Err(FsError::Os(libc::EAGAIN));
            }
            if o.gone.load(Ordering::Acquire) || fatal_signal_pending(pid) || self.unmounting() {
                return Err(FsError::Os(libc::EINTR));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The owner `owner` closed node `ino` (FLUSH: its POSIX locks go; RELEASE with
    /// a `flock` owner: its `flock` goes).
    pub fn drop_locks(&self, ino: u64, owner: u64) {
        if let Some(o) = self.app_locks.0.lock().remove(&(ino, owner)) {
            o.gone.store(true, Ordering::Release);
            // closing the description (when the last user lets go) releases its locks
        }
    }

    fn unmounting(&self) -> bool {
        self.unmounting.load(Ordering::Acquire)
    }
}

/// Whether process `pid` has a signal pending that will kill it (SIGKILL, SIGINT,
/// SIGTERM, SIGHUP, SIGQUIT), or is gone.
fn fatal_signal_pending(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let fatal = [
        libc::SIGKILL,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
    ]
    .iter()
    .fold(0u64, |m, s| m | 1 << (s - 1));
    let mask = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    // a signal the process blocks or ignores does not kill it
    pending & fatal & !mask("SigBlk:") & !mask("SigIgn:") != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_ranges_stay_below_the_daemons_locks() {
        assert_eq!(backing_range(0, OFFSET_MAX).unwrap(), (0, LAST + 1));
        assert_eq!(backing_range(100, 199).unwrap(), (100, 100));
        assert_eq!(backing_range(1 << 30, 1 << 30).unwrap(), (1 << 30, 1));
        assert_eq!(backing_range(OFFSET_MAX, OFFSET_MAX).unwrap(), (LAST, 1));
        assert!(backing_range(5, 4).is_err());
        const { assert!(LAST < sharedlock::HEADER) };
    }

    #[test]
    fn a_pending_kill_is_seen_a_blocked_one_is_not() {
        // this process has nothing fatal pending
        assert!(!fatal_signal_pending(std::process::id()));
        assert!(fatal_signal_pending(u32::MAX), "no such process");
    }
}
