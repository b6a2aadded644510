//! The locks an encrypted file takes on its backing file when several daemons share
//! the backing dir (`--shared-storage`), so that writers on different hosts never
//! tear a block or lose a write.
//!
//! The daemon's locks live in a range of the backing file no application lock
//! reaches ([`INTERNAL`] and up: applications' locks forwarded through the mount are
//! kept below it, see `applocks`), one byte per thing:
//! - [`OPEN`]: held shared by every daemon that has the file open, exclusively by a
//!   `--data` job that replaces the file (a file open anywhere is retried later);
//! - [`HEADER`]: held shared while a header is read, exclusively while one is
//!   written (a new file's, or a re-wrap's), so no host reads half a header;
//! - block `b` at `INTERNAL + 2 + b`: shared by a read of the block, exclusive by a
//!   write of it (the block and its metadata entry change together). A write that
//!   changes the file's size holds every block from the old last one to the end of
//!   all files (the "tail"), so size changes are serialized with each other and with
//!   everything that reads or writes a block whose length they change.
//!
//! One open file description of the backing file holds the locks of one operation at
//! a time: OFD locks of one description merge and never conflict, so two operations of
//! this daemon on one description would undo each other's locks (a reader releasing
//! its range would release another reader's). Each operation therefore borrows a
//! description from a small pool and gives it back with its locks released.

use crate::backdir::ofd::{self, Kind};
use crate::backdir::sys;
use crate::format::layout::BLOCK;
use parking_lot::Mutex;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;

/// First byte of the daemon's own locks; applications' locks stay below it.
pub const INTERNAL: u64 = 1 << 62;
/// The lock byte of "open somewhere".
pub const OPEN: u64 = INTERNAL;
/// The header's lock byte.
pub const HEADER: u64 = INTERNAL + 1;

/// The lock byte of data block `b` (its data and metadata entry).
pub const fn block_byte(b: u64) -> u64 {
    INTERNAL + 2 + b
}

/// Whether other daemons use an open file's backing file too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// No: this daemon is the only one (a mount of its own).
    Alone,
    /// Yes (shared storage), through a file system whose page cache follows other
    /// hosts' writes (a local one, NFS, CephFS).
    Shared,
    /// Yes, through a client whose page cache may hold pages other hosts have since
    /// rewritten (a FUSE client such as GlusterFS's): what is read under a lock is
    /// dropped from it first.
    SharedUncached,
}

/// Descriptions of one backing file to lock with, reused between operations.
pub struct LockPool {
    /// The descriptor new descriptions are opened from.
    source: File,
    /// `O_RDWR` when the file is open for writing, else `O_RDONLY`.
    mode: i32,
    idle: Mutex<Vec<File>>,
}

/// The locks of one operation: released, and the description given back, on drop.
pub struct Held<'a> {
    pool: &'a LockPool,
    file: Option<File>,
}

impl LockPool {
    /// A pool for the backing file `file` (a descriptor of its own is kept).
    pub fn new(file: &File, writable: bool) -> io::Result<LockPool> {
        let mode = if writable { libc::O_RDWR } else { libc::O_RDONLY };
        Ok(LockPool {
            source: sys::reopen(file.as_fd(), mode)?,
            mode,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn borrow(&self) -> io::Result<Held<'_>> {
        let file = match self.idle.lock().pop() {
            Some(f) => f,
            None => sys::reopen(self.source.as_fd(), self.mode)?,
        };
        Ok(Held {
            pool: self,
            file: Some(file),
        })
    }

    /// Locks blocks `first..=last` (`None`: to the end of all files), shared for
    /// reading or exclusively for writing, waiting for other holders.
    pub fn blocks(&self, first: u64, last: Option<u64>, write: bool) -> io::Result<Held<'_>> {
        let held = self.borrow()?;
        held.lock(first, last, write)?;
        Ok(held)
    }

    /// Takes the lock of "open somewhere" (see [`OPEN`]) on the pool's own
    /// descriptor, held until the pool is dropped.
    pub fn hold_open(&self) -> io::Result<()> {
        ofd::set(self.source.as_fd(), Kind::Read, OPEN, 1, true).map(drop)
    }

    /// Locks the header, shared to read it or exclusively to write it.
    pub fn header(&self, write: bool) -> io::Result<Held<'_>> {
        let held = self.borrow()?;
        let kind = if write { Kind::Write } else { Kind::Read };
        ofd::set(held.fd(), kind, HEADER, 1, true)?;
        Ok(held)
    }
}

impl Held<'_> {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_ref().expect("held until drop").as_fd()
    }

    fn lock(&self, first: u64, last: Option<u64>, write: bool) -> io::Result<()> {
        let len = last.map_or(0, |l| l.saturating_sub(first) + 1);
        let kind = if write { Kind::Write } else { Kind::Read };
        ofd::set(self.fd(), kind, block_byte(first), len, true).map(drop)
    }

    /// Releases what is held and locks blocks `first..` to the end of all files
    /// exclusively instead (the tail).
    pub fn relock_tail(&self, first: u64) -> io::Result<()> {
        self.release()?;
        self.lock(first, None, true)
    }

    fn release(&self) -> io::Result<()> {
        ofd::set(self.fd(), Kind::Unlock, INTERNAL, 0, false).map(drop)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // a description whose release failed keeps its locks: close it, which drops them
        if self.release().is_ok() {
            if let Some(f) = self.file.take() {
                self.pool.idle.lock().push(f);
            }
        }
    }
}

/// The block whose length a change of the size from `size` would alter first: the
/// last, short block, or the first block past the end.
pub fn tail_block(size: u64) -> u64 {
    size / BLOCK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools() -> (tempfile::NamedTempFile, LockPool, LockPool) {
        let t = tempfile::NamedTempFile::new().unwrap();
        let f = File::options().read(true).write(true).open(t.path()).unwrap();
        let (a, b) = (LockPool::new(&f, true).unwrap(), LockPool::new(&f, true).unwrap());
        (t, a, b)
    }

    fn free(p: &LockPool, block: u64, write: bool) -> bool {
        let f = p.borrow().unwrap();
        let kind = if write { Kind::Write } else { Kind::Read };
        ofd::test(f.file.as_ref().unwrap().as_fd(), kind, block_byte(block), 1)
            .unwrap()
            .is_none()
    }

    #[test]
    fn two_operations_of_one_daemon_keep_their_own_locks() {
        let (_t, a, b) = pools();
        let r1 = a.blocks(0, Some(3), false).unwrap();
        let r2 = a.blocks(2, Some(5), false).unwrap();
        drop(r1);
        // r2 still holds blocks 2..=5 shared, though r1 covered 2 and 3 too
        assert!(!free(&b, 2, true));
        assert!(free(&b, 0, true));
        drop(r2);
        assert!(free(&b, 2, true));
    }

    #[test]
    fn a_tail_lock_covers_every_later_block_and_the_header_is_apart() {
        let (_t, a, b) = pools();
        let w = a.blocks(7, Some(7), true).unwrap();
        w.relock_tail(5).unwrap();
        assert!(free(&b, 4, true));
        assert!(!free(&b, 5, false) && !free(&b, 1 << 40, false));
        a.hold_open().unwrap();
        let h = a.header(true).unwrap();
        drop(w);
        assert!(free(&b, 5, true));
        let hb = b.borrow().unwrap();
        assert!(!ofd::set(hb.fd(), Kind::Write, OPEN, 1, false).unwrap());
        assert!(ofd::set(hb.fd(), Kind::Read, OPEN, 1, false).unwrap());
        assert!(!ofd::set(hb.fd(), Kind::Read, HEADER, 1, false).unwrap());
        drop(h);
        assert!(ofd::set(hb.fd(), Kind::Read, HEADER, 1, false).unwrap());
    }

    #[test]
    fn tail_block_is_the_block_a_size_change_touches_first() {
        assert_eq!(tail_block(0), 0);
        assert_eq!(tail_block(4095), 0);
        assert_eq!(tail_block(4096), 1);
        assert_eq!(tail_block(8193), 2);
    }
}
