//! Where each piece of an encrypted file lives in its backing file.
//!
//! ```text
//! [ header 4096 ][ meta 0 ][ data 0 .. data 127 ][ meta 1 ][ data 128 .. 255 ] ...
//! ```
//! Data blocks hold exactly the AES-GCM ciphertext of 4096 plaintext bytes (the last
//! block may be short), so every ciphertext block stays 4 KiB-aligned in the backing
//! file and a 4 KiB overwrite never makes the backing filesystem read a page first.
//! Each group of [`GROUP_BLOCKS`] data blocks is preceded by one metadata block that
//! holds the group's per-block nonce and tag ([`ENTRY_LEN`] bytes each).
//!
//! All functions here are pure: they map plaintext sizes and ranges to backing
//! positions and back, and are unit-tested at the edges.

/// Plaintext bytes per block.
pub const BLOCK: u64 = 4096;
/// Bytes reserved for the header at the start of the backing file.
pub const HEADER_LEN: u64 = 4096;
/// Data blocks per group (one metadata block each).
pub const GROUP_BLOCKS: u64 = 128;
/// One metadata entry: nonce (12) then tag (16).
pub const ENTRY_LEN: u64 = 28;
/// Backing bytes taken by one full group: its metadata block and its data blocks.
pub const GROUP_SPAN: u64 = (GROUP_BLOCKS + 1) * BLOCK;

/// The backing size is not one an encrypted file can have (only a partial header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncatedHeader;

/// Backing offset of metadata block `group`.
pub const fn meta_offset(group: u64) -> u64 {
    HEADER_LEN + group * GROUP_SPAN
}

/// Backing offset of data block `block`.
pub const fn data_offset(block: u64) -> u64 {
    meta_offset(block / GROUP_BLOCKS) + BLOCK * (1 + block % GROUP_BLOCKS)
}

/// Backing offset of the metadata entry (nonce, tag) of data block `block`.
pub const fn entry_offset(block: u64) -> u64 {
    meta_offset(block / GROUP_BLOCKS) + ENTRY_LEN * (block % GROUP_BLOCKS)
}

/// Plaintext length of block `block` in a file of `size` plaintext bytes (0 past the end).
pub fn block_len(block: u64, size: u64) -> u64 {
    size.saturating_sub(block * BLOCK).min(BLOCK)
}

/// Number of blocks that hold a file of `size` plaintext bytes.
pub const fn block_count(size: u64) -> u64 {
    size.div_ceil(BLOCK)
}

/// Backing size of an encrypted file of `size` plaintext bytes (header included).
///
/// ```
/// use ezfs::format::layout::{backing_size, plain_size};
/// // header, one metadata block, then the 5 ciphertext bytes
/// assert_eq!(backing_size(5), 4096 + 4096 + 5);
/// assert_eq!(plain_size(backing_size(5)), Ok(5));
/// ```
pub fn backing_size(size: u64) -> u64 {
    if size == 0 {
        return HEADER_LEN;
    }
    let last = block_count(size) - 1;
    data_offset(last) + block_len(last, size)
}

/// Plaintext size of an encrypted file whose backing file has `backing` bytes.
///
/// A zero-length backing file is an empty file whose header is not written yet.
/// A trailing metadata block with no data after it (left by a crash between the two
/// writes of an extending write) counts as no data.
pub fn plain_size(backing: u64) -> Result<u64, TruncatedHeader> {
    if backing == 0 {
        return Ok(0);
    }
    if backing < HEADER_LEN {
        return Err(TruncatedHeader);
    }
    let rest = backing - HEADER_LEN;
    let (groups, within) = (rest / GROUP_SPAN, rest % GROUP_SPAN);
    let full = groups * GROUP_BLOCKS * BLOCK;
    Ok(full + within.saturating_sub(BLOCK))
}

/// The inclusive block range that covers plaintext bytes `[off, off + len)`; `len > 0`.
pub fn blocks_covering(off: u64, len: u64) -> (u64, u64) {
    debug_assert!(len > 0);
    (off / BLOCK, (off + len - 1) / BLOCK)
}

/// Splits the inclusive block range `[first, last]` into runs that share a group,
/// so that each run's data blocks are contiguous in the backing file and its
/// metadata entries are contiguous in one metadata block.
pub fn group_runs(first: u64, last: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut next = first;
    std::iter::from_fn(move || {
        if next > last {
            return None;
        }
        let lo = next;
        let group_end = (lo / GROUP_BLOCKS + 1) * GROUP_BLOCKS - 1;
        let hi = group_end.min(last);
        next = hi + 1;
        Some((lo, hi))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_at_the_edges() {
        for (plain, backing) in [
            (0, 4096),
            (1, 8192 + 1),
            (4095, 8192 + 4095),
            (4096, 8192 + 4096),
            (4097, 8192 + 4096 + 1),
            (128 * 4096, 8192 + 128 * 4096),
            (128 * 4096 + 1, 4096 + GROUP_SPAN + 4096 + 1),
        ] {
            assert_eq!(backing_size(plain), backing, "plain {plain}");
            assert_eq!(plain_size(backing), Ok(plain), "backing {backing}");
        }
        assert_eq!(plain_size(0), Ok(0));
        assert_eq!(plain_size(1), Err(TruncatedHeader));
        assert_eq!(plain_size(4095), Err(TruncatedHeader));
        // a metadata block with no data after it counts as no data
        assert_eq!(plain_size(8192), Ok(0));
        assert_eq!(plain_size(4096 + GROUP_SPAN + 100), Ok(128 * 4096));
    }

    #[test]
    fn round_trip_many_sizes() {
        let huge = 1u64 << 50;
        for plain in (0..3 * GROUP_BLOCKS * BLOCK + 10)
            .step_by(997)
            .chain([huge, huge + 1, huge - 1])
        {
            assert_eq!(plain_size(backing_size(plain)), Ok(plain));
        }
    }

    #[test]
    fn data_blocks_stay_aligned() {
        for b in [0, 1, 127, 128, 129, 1 << 30] {
            assert_eq!(data_offset(b) % BLOCK, 0);
            assert!(entry_offset(b) < data_offset(b));
            assert_eq!(entry_offset(b) / BLOCK, meta_offset(b / GROUP_BLOCKS) / BLOCK);
        }
        assert_eq!(data_offset(127) + BLOCK, meta_offset(1));
        const { assert!(ENTRY_LEN * GROUP_BLOCKS <= BLOCK) };
    }

    #[test]
    fn coverage_and_runs() {
        assert_eq!(blocks_covering(0, 1), (0, 0));
        assert_eq!(blocks_covering(4095, 2), (0, 1));
        assert_eq!(blocks_covering(4096, 4096), (1, 1));
        let runs: Vec<_> = group_runs(120, 300).collect();
        assert_eq!(runs, vec![(120, 127), (128, 255), (256, 300)]);
        assert_eq!(group_runs(5, 5).collect::<Vec<_>>(), vec![(5, 5)]);
        assert_eq!(block_len(0, 0), 0);
        assert_eq!(block_len(1, 4097), 1);
        assert_eq!(block_len(0, 4097), 4096);
    }
}
