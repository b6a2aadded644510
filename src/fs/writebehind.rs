//! Write-behind for streaming writes.
//!
//! A file written front to back leaves its data dirty in the backing filesystem's
//! page cache until the kernel's flusher or an `fsync` sends it to the disk, so the
//! copy through the daemon and the disk write run one after the other. Each time a
//! write completes a [`WINDOW`] of the file, the window is handed to the disk at once
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which starts the write-out and does not
//! wait), so the two overlap and a final `fsync` waits only for the last window.
//! Measured here (1 GiB, 1 MiB writes, `fsync` at the end): 308 -> 388 MB/s, the
//! same as the FUSE passthrough. Files smaller than a window and random writes (which
//! never complete a window boundary with one 4 KiB block) are left to the kernel.

use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;

/// Plaintext bytes per write-behind window: 32 groups of 512 KiB, so the backing
/// range of a window starts and ends at a metadata block.
pub const WINDOW: u64 = 16 << 20;

/// The window (plaintext range) that a write of `[off, end)` completes, if any: the
/// last whole window before the highest window boundary the write reaches.
pub fn completed(off: u64, end: u64) -> Option<Range<u64>> {
    let to = end / WINDOW * WINDOW;
    (to > off && to > 0).then(|| to - WINDOW..to)
}

/// Starts write-out of the dirty pages of the backing `range`. A hint: an error
/// (a backing filesystem without `sync_file_range`) shows later at `fsync`, if at all.
pub fn start(file: &File, range: Range<u64>) {
    // SAFETY: plain syscall on an open descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            range.start as i64,
            (range.end - range.start) as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_that_reach_a_boundary_complete_a_window() {
        let w = WINDOW;
        assert_eq!(completed(0, 4096), None);
        assert_eq!(completed(w - 4096, w), Some(0..w));
        assert_eq!(completed(w - 4096, w + 4096), Some(0..w));
        assert_eq!(completed(w, w + 4096), None);
        assert_eq!(completed(3 * w - (1 << 20), 3 * w), Some(2 * w..3 * w));
        assert_eq!(completed(0, 0), None);
    }
}
