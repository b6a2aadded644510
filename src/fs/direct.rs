//! Direct I/O for large reads and writes of an encrypted file's backing file.
//!
//! A buffered write copies the ciphertext into the backing filesystem's page cache,
//! and the kernel writes it to the disk later. For a stream of large writes that copy
//! was the biggest single cost in the daemon (a quarter to a third of its CPU on a
//! sequential write to ext4), and the data is not read back soon. A buffered read
//! pays the same twice over: the disk fills the backing page cache, then the kernel
//! copies it into the daemon's buffer (the two copies of a sequential read, this one
//! and the copy of the plaintext into the mount's page cache, were three quarters of
//! the daemon's CPU). Runs of at least [`MIN`] bytes, aligned to 4 KiB in memory,
//! length and offset, go through a second descriptor opened with `O_DIRECT` instead:
//! the disk reads them from, or writes them into, the daemon's buffer. Smaller I/O
//! (random 4 KiB reads and overwrites, metadata entries) stays buffered, where the
//! page cache absorbs rewrites and serves the neighbours that readahead and
//! read-around ([`super::readaround`]) bring in.
//!
//! A large read goes direct only when the page cache holds none of its range: what
//! is cached (written and not yet on the disk, or read before) is cheaper to copy
//! than to read again, and a direct read would first have to write dirty pages back.
//!
//! The two descriptors never race on a range: the caller holds the range's group
//! lock, and the kernel writes back and drops cached pages of a range before it
//! writes that range directly. A direct write waits for the disk under the file's
//! write lock, as ext4 itself holds its inode lock through an extending one. A
//! backing filesystem without direct I/O (the open or the first I/O fails with
//! `EINVAL`), or a kernel without `cachestat(2)` for reads, keeps all I/O buffered.

use crate::backdir::sys;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Smallest write sent direct: each direct write to ext4 costs about 60 us of fixed
/// work (measured: 64 KiB direct writes took more CPU per GiB than buffered ones,
/// 512 KiB ones a third).
pub const MIN: usize = 256 << 10;
/// Alignment of memory, offset and length that direct I/O needs: one block, which is
/// how the codec aligns its sealing buffer and lays out data blocks.
const ALIGN: usize = crate::format::layout::BLOCK as usize;

/// The `O_DIRECT` descriptor of one backing file, opened on first use.
#[derive(Default)]
pub struct Direct {
    file: OnceLock<Option<File>>,
    unsupported: AtomicBool,
}

impl Direct {
    /// Whether large writes may go direct (not yet found unsupported).
    pub fn enabled(&self) -> bool {
        !self.unsupported.load(Ordering::Relaxed)
    }

    /// Writes `buf` at `off` directly if it qualifies; `None` if the caller must
    /// write it buffered.
    pub fn write(&self, file: &File, buf: &[u8], off: u64) -> Option<io::Result<()>> {
        if !self.qualifies(buf, off) {
            return None;
        }
        match self.descriptor(file)?.write_all_at(buf, off) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.refused(file, &e),
            result => Some(result),
        }
    }

    /// Reads up to `buf.len()` bytes at `off` (fewer only at end of file) directly if
    /// the read qualifies and the page cache holds none of its range; `None` if the
    /// caller must read it buffered.
    pub fn read(&self, file: &File, buf: &mut [u8], off: u64) -> Option<io::Result<usize>> {
        if !self.qualifies(buf, off) || sys::cached_pages(file, off, buf.len() as u64)? != 0 {
            return None;
        }
        let direct = self.descriptor(file)?;
        let mut done = 0;
        while done < buf.len() {
            match direct.read_at(&mut buf[done..], off + (done as u64)) {
                Ok(0) => break,
                // a read that ends inside a block has reached the end of the file
                Ok(n) if n % ALIGN != 0 => return Some(Ok(done + n)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && done == 0 => {
                    return self.refused(file, &e)
                }
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(done))
    }

    /// Whether I/O of `buf` at `off` may go direct: large, aligned, not found unsupported.
    fn qualifies(&self, buf: &[u8], off: u64) -> bool {
        buf.len() >= MIN
            && buf.len() % ALIGN == 0
            && off % ALIGN as u64 == 0
            && buf.as_ptr().align_offset(ALIGN) == 0
            && self.enabled()
    }

    /// The `O_DIRECT` descriptor, opened on first use; `None` (and no more tries) if
    /// it cannot be.
    fn descriptor(&self, file: &File) -> Option<&File> {
        let direct = self.file.get_or_init(|| {
            sys::reopen(file.as_fd(), libc::O_RDWR | libc::O_DIRECT)
                .inspect_err(|e| log::debug!("no direct I/O on {}: {e}", sys::describe(file.as_fd())))
                .ok()
        });
        if direct.is_none() {
            self.unsupported.store(true, Ordering::Relaxed);
        }
        direct.as_ref()
    }

    /// Notes that the backing filesystem refused direct I/O: the caller goes buffered.
    fn refused<T>(&self, file: &File, e: &io::Error) -> Option<T> {
        log::debug!("direct I/O refused on {}: {e}", sys::describe(file.as_fd()));
        self.unsupported.store(true, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;

    /// A 4 KiB-aligned buffer of `len` bytes of `byte`.
    fn aligned(byte: u8, len: usize) -> (Vec<u8>, usize) {
        let v = vec![byte; len + ALIGN];
        let at = v.as_ptr().align_offset(ALIGN);
        (v, at)
    }

    fn backing_file() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap();
        (dir, f)
    }

    #[test]
    fn only_large_aligned_writes_qualify() {
        let (_dir, f) = backing_file();
        let d = Direct::default();
        let (v, at) = aligned(1, MIN + ALIGN);
        assert!(d.write(&f, &v[at..at + MIN - ALIGN], 0).is_none(), "too small");
        assert!(
            d.write(&f, &v[at + 1..at + 1 + MIN], 0).is_none(),
            "unaligned memory"
        );
        assert!(d.write(&f, &v[at..at + MIN], 512).is_none(), "unaligned offset");
        assert!(d.write(&f, &v[at..at + MIN - 1], 0).is_none(), "unaligned length");
        assert_eq!(f.metadata().unwrap().len(), 0, "nothing was written");
    }

    /// A direct write over cached, dirty pages of the same range wins, and a buffered
    /// read afterwards sees it: the kernel writes back and drops the cached pages.
    #[test]
    fn direct_write_replaces_cached_pages() {
        let (_dir, f) = backing_file();
        let d = Direct::default();
        f.write_all_at(&vec![7u8; 2 * MIN], 0).unwrap();
        let (v, at) = aligned(9, MIN);
        match d.write(&f, &v[at..at + MIN], ALIGN as u64) {
            Some(r) => r.unwrap(),
            // no direct I/O where the tests run: the caller writes buffered
            None => assert!(!d.enabled()),
        }
        let mut back = vec![0u8; 2 * MIN];
        f.read_exact_at(&mut back, 0).unwrap();
        if d.enabled() {
            assert!(back[..ALIGN].iter().all(|&b| b == 7));
            assert!(back[ALIGN..ALIGN + MIN].iter().all(|&b| b == 9));
            assert!(back[ALIGN + MIN..].iter().all(|&b| b == 7));
        }
    }

    /// A large read goes direct only where the page cache holds none of its range,
    /// returns what the file holds, and stops short at its end.
    #[test]
    fn reads_direct_only_what_the_page_cache_lacks() {
        let (_dir, f) = backing_file();
        let d = Direct::default();
        let data: Vec<u8> = (0..2 * MIN + 100).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all_at(&data, 0).unwrap();
        let (mut v, at) = aligned(0, MIN + ALIGN);
        let buf = &mut v[at..at + MIN];
        assert!(d.read(&f, buf, MIN as u64).is_none(), "dirty pages: buffered");
        f.sync_all().unwrap();
        // SAFETY: plain syscall on an open descriptor
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if sys::cached_pages(&f, 0, data.len() as u64) != Some(0) {
            return; // tmpfs, or no cachestat(2): nothing goes direct here
        }
        match d.read(&f, buf, MIN as u64) {
            Some(r) => assert_eq!(r.unwrap(), MIN),
            None => return assert!(!d.enabled(), "no direct I/O where the tests run"),
        }
        assert!(buf[..] == data[MIN..2 * MIN]);
        assert_eq!(
            sys::cached_pages(&f, 0, data.len() as u64),
            Some(0),
            "nothing cached"
        );
        let (mut v, at) = aligned(0, MIN + 2 * ALIGN);
        let buf = &mut v[at..at + MIN + ALIGN];
        assert_eq!(
            d.read(&f, buf, MIN as u64).unwrap().unwrap(),
            MIN + 100,
            "end of file"
        );
        assert!(buf[..MIN + 100] == data[MIN..]);
        // one page read buffered: that read goes buffered too
        f.read_exact_at(&mut [0u8; 1], MIN as u64 + 5).unwrap();
        assert!(d.read(&f, &mut buf[..MIN], MIN as u64).is_none());
    }
}
