//! Read-around: small reads of a file read densely at random bring in their neighbours.
//!
//! A random 4 KiB read that misses the backing page cache costs a disk request, and
//! the kernel reads only that page, since it sees no stream. When the file is being
//! read densely in random order (lookups all over a table, a random pass over a whole
//! file), a fair part of the read's group is by then cached. There the read brings in
//! the window the codec gives with it ([`Backing::read_around`], 32 KiB) in the same
//! request: on the disk measured here a random 32 KiB read took 1.5x the time of a
//! 4 KiB one, and each neighbour it brings in is later read at the cost of a
//! page-cache hit instead of a disk request. Where a file is read sparsely its groups
//! stay cold and reads stay the size asked. This is the kernel's own read-around for
//! page faults on a mapping (which reads 128 KiB), made conditional on density.
//!
//! A read the page cache holds is read as asked, after one `cachestat(2)` that tells
//! so. Only a miss, which waits for the disk anyway, looks at its group. Without
//! `cachestat` (before Linux 6.5) every read is read as asked.
//!
//! [`Backing::read_around`]: crate::format::Backing::read_around

use crate::backdir::sys;
use crate::format::{Around, Backing};
use std::fs::File;
use std::io;

/// Largest window read around a read; larger ones are not.
const MAX_WINDOW: usize = 32 << 10;
/// A group counts as read densely once this fraction of its pages is cached: one in
/// sixteen, 8 pages of a full group (512 KiB). Random reads over a file read once
/// from end to end reach it after a sixteenth of the pass; sparse reads of a large
/// file never do.
const DENSE: u64 = 16;
const PAGE: u64 = 4096;

/// Reads up to `buf.len()` bytes at `off` of `file` (fewer only at end of file). On a
/// page-cache miss in a densely read area, reads all of the window in the same request.
pub fn read(file: &File, buf: &mut [u8], off: u64, around: &Around) -> io::Result<usize> {
    let (w, area) = (&around.window, &around.area);
    debug_assert!(w.start <= off && off + buf.len() as u64 <= w.end);
    debug_assert!(area.start <= w.start && w.end <= area.end);
    let size = (w.end - w.start) as usize;
    if size > MAX_WINDOW || !missing(file, off, buf.len()) || !dense(file, area) {
        return Backing::read_at(file, buf, off);
    }
    let mut window = [0u8; MAX_WINDOW];
    let window = &mut window[..size];
    let got = Backing::read_at(file, window, w.start)?;
    let at = (off - w.start) as usize;
    let n = got.saturating_sub(at).min(buf.len());
    buf[..n].copy_from_slice(&window[at..at + n]);
    Ok(n)
}

/// Whether the page cache lacks a page of `[off, off + len)` of `file`.
fn missing(file: &File, off: u64, len: usize) -> bool {
    let pages = (off + len as u64).div_ceil(PAGE) - off / PAGE;
    sys::cached_pages(file, off, len as u64).is_some_and(|c| c < pages)
}

/// Whether at least one in [`DENSE`] pages of `area` of `file` is in the page cache.
fn dense(file: &File, area: &std::ops::Range<u64>) -> bool {
    let pages = (area.end - area.start).div_ceil(PAGE);
    sys::cached_pages(file, area.start, area.end - area.start).is_some_and(|c| c > 0 && c * DENSE >= pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;

    const AREA: u64 = 128 * PAGE;

    /// A synced file of `AREA` bytes whose pages are out of the page cache; `None`
    /// where that cannot be had (tmpfs, or no `cachestat(2)`).
    fn cold_file(data: &[u8]) -> Option<(tempfile::TempDir, File)> {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        f.write_all_at(data, 0).unwrap();
        f.sync_all().unwrap();
        // SAFETY: plain syscall on an open descriptor
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        (sys::cached_pages(&f, 0, AREA) == Some(0)).then_some((dir, f))
    }

    fn cached(f: &File, off: u64, len: u64) -> u64 {
        sys::cached_pages(f, off, len).unwrap()
    }

    /// A miss in a cold group reads only its page; once the group is read densely a
    /// miss brings in its window; a hit reads as asked. Every read returns the file's bytes.
    #[test]
    fn a_miss_brings_in_its_window_once_the_group_is_dense() {
        let data: Vec<u8> = (0..AREA).map(|i| (i * 13 % 251) as u8).collect();
        let Some((_dir, f)) = cold_file(&data) else {
            return;
        };
        let window = |p: u64| (p - p % 8) * PAGE..(p - p % 8 + 8) * PAGE;
        let mut buf = [0u8; PAGE as usize];
        let mut read_page = |p: u64| {
            let around = Around {
                window: window(p),
                area: 0..AREA,
            };
            let n = read(&f, &mut buf, p * PAGE, &around).unwrap();
            assert_eq!(n, PAGE as usize);
            assert!(buf[..] == data[(p * PAGE) as usize..((p + 1) * PAGE) as usize]);
        };
        // cold: page by page, until one page in sixteen is cached
        for p in (3..128).step_by(16) {
            read_page(p);
            assert_eq!(cached(&f, window(p).start, 8 * PAGE), 1, "page {p} alone");
        }
        assert_eq!(cached(&f, 0, AREA), 8);
        // dense: a miss reads its window
        read_page(42);
        assert_eq!(cached(&f, window(42).start, 8 * PAGE), 8, "the window of page 42");
        // a hit: nothing more is read
        read_page(41);
        assert_eq!(cached(&f, 0, AREA), 8 + 8);
    }

    /// At the end of the file the window ends there, as does the last block's read.
    #[test]
    fn a_window_at_the_end_of_the_file() {
        let len = AREA - PAGE / 2;
        let data: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
        let Some((_dir, f)) = cold_file(&data) else {
            return;
        };
        let mut buf = [0u8; PAGE as usize];
        let around = |window| Around { window, area: 0..len };
        for p in (0..128).step_by(16) {
            read(&f, &mut buf, p * PAGE, &around(p * PAGE..(p + 1) * PAGE)).unwrap();
        }
        let last = &mut buf[..(PAGE / 2) as usize];
        assert_eq!(
            read(&f, last, 127 * PAGE, &around(120 * PAGE..len)).unwrap(),
            last.len()
        );
        assert!(last[..] == data[(127 * PAGE) as usize..]);
        assert_eq!(cached(&f, 120 * PAGE, 8 * PAGE), 8);
    }
}
