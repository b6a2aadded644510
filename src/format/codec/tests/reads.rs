//! Read paths beside the plain one: entries prefetched with their data, streaming
//! reads taken direct, small reads through their read-around windows.

use super::*;

/// A read whose entries are not cached yet prefetches its data before it reads them,
/// so that the two disk reads overlap; a read whose entries are cached does not.
#[test]
fn uncached_entries_prefetch_the_data() {
    let c = codec();
    let probe = Probe::new(empty_backing(), usize::MAX, u64::MAX, false);
    let data = bytes(17, 3 * G as usize);
    let size = c.write(&probe, 0, 0, &data).unwrap();
    let cache = MetaCache::default();
    let b = CachedMeta {
        inner: &probe,
        cache: &cache,
    };
    let block = GROUP_BLOCKS + 5;
    let got = read_range(&c, &b, size, block * BLOCK, 2 * BLOCK as usize).unwrap();
    assert_eq!(got, &data[(block * BLOCK) as usize..][..2 * BLOCK as usize]);
    let first = (data_offset(block), 2 * BLOCK as usize);
    assert_eq!(*probe.prefetched.lock(), [first]);
    // the same group again: its entries are in memory
    read_range(&c, &b, size, (block + 50) * BLOCK, 100).unwrap();
    assert_eq!(probe.prefetched.lock().len(), 1);
    // another group
    read_range(&c, &b, size, 2 * G, 10).unwrap();
    let second = (data_offset(2 * GROUP_BLOCKS), BLOCK as usize);
    assert_eq!(*probe.prefetched.lock(), [first, second]);
}

/// Runs of several chunks are read in one direct read and decrypted from it: the
/// plaintext, holes and the short last block come back, the entries come through the
/// metadata cache, and damage is found as on the buffered path.
#[test]
fn streaming_reads_decrypt_direct_reads() {
    let c = codec();
    let mem = empty_backing();
    let size = 3 * G + 5000;
    let plain = bytes(11, size as usize);
    c.write(&mem, HEADER_LEN, 0, &plain[..G as usize]).unwrap();
    // the second group stays a hole; the third and the tail are written
    c.write(&mem, G, 2 * G, &plain[2 * G as usize..]).unwrap();
    let mut want = plain.clone();
    want[G as usize..2 * G as usize].fill(0);
    let cache = MetaCache::default();
    let direct = TakesOffers::new(&mem);
    let b = CachedMeta {
        inner: &direct,
        cache: &cache,
    };
    assert_eq!(read_all(&c, &b, size).unwrap(), want);
    // every run longer than a chunk went direct: the three whole groups
    assert_eq!(direct.direct.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(
        read_range(&c, &b, size, 100 * BLOCK, 2 * G as usize).unwrap(),
        want[100 * BLOCK as usize..100 * BLOCK as usize + 2 * G as usize]
    );
    flip(&mem, data_offset(2 * GROUP_BLOCKS + 40) + 7, 0x20);
    assert_corrupt(read_all(&c, &b, size), 2 * GROUP_BLOCKS + 40);
    assert_eq!(
        read_range(&c, &b, size, 0, 2 * G as usize).unwrap(),
        want[..2 * G as usize],
        "the groups before the damage"
    );
}

/// The window and group offered around small runs: aligned windows of
/// [`AROUND_BLOCKS`] inside their group, cut at the end of the file; none for runs
/// that fill or cross their window.
#[test]
fn surroundings_of_small_runs() {
    let w = AROUND_BLOCKS;
    let size = 3 * G + 5000;
    let span = |a: u64, z: u64| data_offset(a)..data_offset(z) + block_len(z, size);
    let around = |a: u64, z: u64| {
        let g = a / GROUP_BLOCKS * GROUP_BLOCKS;
        Some(Around {
            window: span(a, z),
            area: span(g, (g + GROUP_BLOCKS - 1).min(3 * GROUP_BLOCKS + 1)),
        })
    };
    assert_eq!(surroundings(0, 0, size), around(0, w - 1));
    assert_eq!(surroundings(w + 2, w + 3, size), around(w, 2 * w - 1));
    let in_third = 2 * GROUP_BLOCKS + 3 * w + 1;
    assert_eq!(
        surroundings(in_third, in_third, size),
        around(in_third - 1, in_third + w - 2)
    );
    // the last group has two blocks, the second one short
    let tail = 3 * GROUP_BLOCKS;
    assert_eq!(surroundings(tail, tail, size), around(tail, tail + 1));
    assert_eq!(surroundings(tail + 1, tail + 1, size), around(tail, tail + 1));
    assert_eq!(surroundings(tail, tail + 1, size), None, "fills its window");
    assert_eq!(surroundings(0, w - 1, size), None, "fills its window");
    assert_eq!(surroundings(w - 1, w, size), None, "crosses two windows");
    assert_eq!(surroundings(0, 0, 0), None, "an empty file");
}

/// Small reads come back whole from a backing that reads their windows: the
/// plaintext, a hole, the short last block, damage in the block read found and damage
/// in a neighbour of its window not reported.
#[test]
fn small_reads_through_their_windows() {
    let c = codec();
    let mem = empty_backing();
    let size = G + 5000;
    let plain = bytes(12, size as usize);
    c.write(&mem, HEADER_LEN, 0, &plain[..2 * BLOCK as usize])
        .unwrap();
    c.write(&mem, 2 * BLOCK, 3 * BLOCK, &plain[3 * BLOCK as usize..])
        .unwrap();
    let mut want = plain.clone();
    want[2 * BLOCK as usize..3 * BLOCK as usize].fill(0);
    let around = TakesOffers::new(&mem);
    for off in [0, 2 * BLOCK + 7, 3 * BLOCK - 100, 77 * BLOCK, G, G + 4096] {
        let len = (size - off).min(BLOCK) as usize;
        assert_eq!(
            read_range(&c, &around, size, off, len).unwrap(),
            want[off as usize..off as usize + len],
            "at {off}"
        );
    }
    let windows = around.windows.lock().clone();
    assert_eq!(windows.len(), 6, "one window per read: {windows:?}");
    assert_eq!(
        windows[4],
        data_offset(GROUP_BLOCKS)..data_offset(GROUP_BLOCKS + 1) + 5000 - 4096
    );
    flip(&mem, data_offset(78) + 9, 1);
    assert_eq!(
        read_range(&c, &around, size, 77 * BLOCK, BLOCK as usize).unwrap(),
        want[77 * BLOCK as usize..78 * BLOCK as usize]
    );
    assert_corrupt(read_range(&c, &around, size, 78 * BLOCK, BLOCK as usize), 78);
}
