//! Open-file-description byte-range locks (`F_OFD_SETLK`, `F_OFD_SETLKW`,
//! `F_OFD_GETLK`) on backing files.
//!
//! Why OFD locks and not classic POSIX ones: a POSIX lock belongs to the process, so
//! every thread of the daemon would share it and closing any descriptor of the file
//! would drop it. An OFD lock belongs to one open of the file: two opens conflict
//! even inside one process, and the lock lives exactly as long as that open (a
//! daemon killed with kill -9 loses its locks with its descriptors). Network file
//! systems that forward POSIX locks (NFS v4, CephFS, GlusterFS) carry them to the
//! other hosts.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// What a lock call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shared (`F_RDLCK`): needs a descriptor open for reading.
    Read,
    /// Exclusive (`F_WRLCK`): needs a descriptor open for writing.
    Write,
    /// Release (`F_UNLCK`).
    Unlock,
}

impl Kind {
    fn raw(self) -> libc::c_short {
        (match self {
            Kind::Read => libc::F_RDLCK,
            Kind::Write => libc::F_WRLCK,
            Kind::Unlock => libc::F_UNLCK,
        }) as libc::c_short
    }

    /// The kind of a raw `l_type`, if it is one.
    pub fn from_raw(t: i32) -> Option<Kind> {
        match t {
            libc::F_RDLCK => Some(Kind::Read),
            libc::F_WRLCK => Some(Kind::Write),
            libc::F_UNLCK => Some(Kind::Unlock),
            _ => None,
        }
    }
}

/// Bytes `[start, start + len)`; `len` 0 means to the end of every possible file.
fn flock(kind: Kind, start: u64, len: u64) -> io::Result<libc::flock> {
    let too_far = || io::Error::from_raw_os_error(libc::EINVAL);
    // SAFETY: flock is plain integers, for which zero is a value (l_pid must be 0 for
    // OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind.raw();
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = i64::try_from(start).map_err(|_| too_far())?;
    fl.l_len = i64::try_from(len).map_err(|_| too_far())?;
    Ok(fl)
}

/// Sets (or with [`Kind::Unlock`] releases) the lock of `fd`'s open file description
/// on `[start, start + len)`. With `wait` the call blocks until the range is free;
/// without, a conflicting lock gives `Ok(false)`.
pub fn set(fd: BorrowedFd<'_>, kind: Kind, start: u64, len: u64, wait: bool) -> io::Result<bool> {
    let fl = flock(kind, start, len)?;
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: a valid descriptor and a valid flock for the call to read.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &fl) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// A lock that conflicts with one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// Shared or exclusive.
    pub kind: Kind,
    /// First byte.
    pub start: u64,
    /// Bytes; 0 means to the end.
    pub len: u64,
    /// The holder's pid for a classic POSIX lock; -1 for an OFD lock.
    pub pid: i32,
}

/// The first lock held by another open file description that would block `kind` on
/// `[start, start + len)` through `fd`, if any (`F_OFD_GETLK`).
pub fn test(fd: BorrowedFd<'_>, kind: Kind, start: u64, len: u64) -> io::Result<Option<Conflict>> {
    let mut fl = flock(kind, start, len)?;
    // SAFETY: a valid descriptor and a valid flock for the call to read and fill.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let kind = Kind::from_raw(fl.l_type.into()).unwrap_or(Kind::Unlock);
    Ok((kind != Kind::Unlock).then_some(Conflict {
        kind,
        start: fl.l_start.max(0) as u64,
        len: fl.l_len.max(0) as u64,
        pid: fl.l_pid,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn two_opens() -> (tempfile::NamedTempFile, std::fs::File, std::fs::File) {
        let t = tempfile::NamedTempFile::new().unwrap();
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(t.path())
                .unwrap()
        };
        let (a, b) = (open(), open());
        (t, a, b)
    }

    #[test]
    fn two_opens_conflict_one_open_does_not() {
        let (_t, a, b) = two_opens();
        assert!(set(a.as_fd(), Kind::Write, 10, 5, false).unwrap());
        // the same open file description may lock again (it converts or merges)
        assert!(set(a.as_fd(), Kind::Write, 12, 1, false).unwrap());
        assert!(!set(b.as_fd(), Kind::Read, 14, 1, false).unwrap());
        assert!(
            set(b.as_fd(), Kind::Write, 15, 1, false).unwrap(),
            "next byte is free"
        );
        let c = test(b.as_fd(), Kind::Read, 0, 0)
            .unwrap()
            .expect("a's lock shows");
        assert_eq!((c.kind, c.start, c.len, c.pid), (Kind::Write, 10, 5, -1));
        assert!(set(a.as_fd(), Kind::Unlock, 0, 0, false).unwrap());
        assert!(set(b.as_fd(), Kind::Read, 14, 1, false).unwrap());
    }

    #[test]
    fn shared_locks_share_and_closing_releases() {
        let (_t, a, b) = two_opens();
        assert!(set(a.as_fd(), Kind::Read, 0, 0, false).unwrap());
        assert!(set(b.as_fd(), Kind::Read, 0, 0, false).unwrap());
        assert!(!set(b.as_fd(), Kind::Write, 0, 1, false).unwrap());
        drop(a);
        assert!(
            set(b.as_fd(), Kind::Write, 0, 1, false).unwrap(),
            "a's lock died with it"
        );
    }

    #[test]
    fn a_waiting_lock_is_granted_when_the_holder_lets_go() {
        let (_t, a, b) = two_opens();
        assert!(set(a.as_fd(), Kind::Write, 1 << 62, 1, false).unwrap());
        let waiter = std::thread::spawn(move || {
            set(b.as_fd(), Kind::Write, 1 << 62, 1, true).unwrap();
            b
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "waits while the lock is held");
        drop(a);
        let b = waiter.join().unwrap();
        assert!(test(b.as_fd(), Kind::Write, 0, 0).unwrap().is_none());
    }

    #[test]
    fn offsets_past_i64_are_refused() {
        let (_t, a, _b) = two_opens();
        assert!(set(a.as_fd(), Kind::Read, u64::MAX, 1, false).is_err());
    }
}
