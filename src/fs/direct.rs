//! Direct I/O for large writes to an encrypted file's backing file.
//!
//! A buffered write copies the ciphertext into the backing filesystem's page cache,
//! and the kernel writes it to the disk later. For a stream of large writes that copy
//! was the biggest single cost in the daemon (a quarter to a third of its CPU on a
//! sequential write to ext4), and the data is not read back soon. Runs of at least
//! [`MIN`] bytes, aligned to 4 KiB in memory, length and offset, are written through
//! a second descriptor opened with `O_DIRECT` instead: the disk reads them straight
//! from the daemon's buffer. Smaller writes (random 4 KiB overwrites, metadata
//! entries) stay buffered, where the page cache absorbs rewrites.
//!
//! The two descriptors never race on a range: the caller holds the range's group
//! lock, and the kernel writes back and drops cached pages of a range before it
//! writes that range directly. A direct write waits for the disk under the file's
//! write lock, as ext4 itself holds its inode lock through an extending one. A
//! backing filesystem without direct I/O (the open or the first write fails with
//! `EINVAL`) just keeps every write buffered.

use super::sys;
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
        let qualifies = buf.len() >= MIN
            && buf.len() % ALIGN == 0
            && off % ALIGN as u64 == 0
            && buf.as_ptr().align_offset(ALIGN) == 0;
        if !qualifies || !self.enabled() {
            return None;
        }
        let direct = self.file.get_or_init(|| {
            sys::reopen(file.as_fd(), libc::O_RDWR | libc::O_DIRECT)
                .inspect_err(|e| log::debug!("no direct I/O on {}: {e}", sys::describe(file.as_fd())))
                .ok()
        });
        let Some(direct) = direct else {
            self.unsupported.store(true, Ordering::Relaxed);
            return None;
        };
        match direct.write_all_at(buf, off) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::debug!("direct write refused on {}: {e}", sys::describe(file.as_fd()));
                self.unsupported.store(true, Ordering::Relaxed);
                None
            }
            result => Some(result),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
