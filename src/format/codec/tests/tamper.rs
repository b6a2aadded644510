//! Tamper detection: any changed byte of a block or its entry, blocks swapped with
//! their entries, a block from another file, a hole given data: exactly those blocks
//! fail authentication, and `verify` lists them.

use super::*;

const TAMPER_KEY: [u8; 32] = [0x42; 32];
const TAMPER_ID: [u8; 16] = [0xA1; 16];
/// 132 blocks across two groups, the last one short.
const TAMPER_SIZE: u64 = 131 * BLOCK + 100;
const TAMPER_BLOCKS: u64 = 132;
/// The blocks of the tamper file that hold data; the others are holes (which keeps the
/// tests fast in unoptimized builds and covers tampering with holes too).
const DATA_BLOCKS: [u64; 8] = [0, 1, 2, 126, 127, 128, 129, 131];

/// A codec and a pristine file of [`TAMPER_SIZE`] bytes; `plain` is its plaintext.
fn tamper_file(file_id: [u8; 16], seed: u64) -> (BlockCodec, MemBacking, Vec<u8>) {
    let c = BlockCodec::new(&Key::from_slice(&TAMPER_KEY).unwrap(), file_id);
    let b = empty_backing();
    let mut plain = vec![0u8; TAMPER_SIZE as usize];
    let mut size = 0;
    for (first, blocks) in [(0, 3), (126, 4), (131, 1)] {
        let r = (first * BLOCK) as usize..((first + blocks) * BLOCK).min(TAMPER_SIZE) as usize;
        plain[r.clone()].copy_from_slice(&bytes(seed ^ first, r.len()));
        size = c.write(&b, size, r.start as u64, &plain[r]).unwrap();
    }
    assert_eq!(size, TAMPER_SIZE);
    (c, b, plain)
}

/// The pristine tamper file of the property tests, built once: its backing bytes and
/// plaintext. Each case works on a copy.
fn pristine() -> (BlockCodec, MemBacking, &'static [u8]) {
    static FILE: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    let (backing, plain) = FILE.get_or_init(|| {
        let (_, b, plain) = tamper_file(TAMPER_ID, 9);
        (b.0.into_inner(), plain)
    });
    let c = BlockCodec::new(&Key::from_slice(&TAMPER_KEY).unwrap(), TAMPER_ID);
    (c, MemBacking(parking_lot::RwLock::new(backing.clone())), plain)
}

/// Mostly data blocks, sometimes any block (holes included).
fn tamper_block() -> impl Strategy<Value = u64> {
    prop_oneof![3 => prop::sample::select(DATA_BLOCKS.to_vec()), 1 => 0..TAMPER_BLOCKS]
}

fn block_range(block: u64) -> std::ops::Range<usize> {
    let start = (block * BLOCK) as usize;
    start..start + block_len(block, TAMPER_SIZE) as usize
}

/// Exactly the blocks in `bad` (sorted) are damaged: reads touching them fail naming
/// them, every other block reads its original plaintext, and `verify` lists them.
fn check_damage(c: &BlockCodec, b: &MemBacking, plain: &[u8], bad: &[u64]) {
    for block in 0..TAMPER_BLOCKS {
        let r = block_range(block);
        let got = read_range(c, b, TAMPER_SIZE, r.start as u64, r.len());
        if bad.contains(&block) {
            assert_corrupt(got, block);
            // a read covering the block only in part fails too
            assert_corrupt(read_range(c, b, TAMPER_SIZE, r.start as u64 + 1, 1), block);
        } else {
            assert_eq!(got.unwrap(), &plain[r], "block {block} should be intact");
        }
    }
    // a whole-file read stops at the first damaged block
    if let Some(&first) = bad.first() {
        assert_corrupt(read_all(c, b, TAMPER_SIZE), first);
    }
    assert_eq!(c.verify(b, TAMPER_SIZE).unwrap(), bad);
}

proptest! {
    #![proptest_config(cases(32))]

    /// Any changed byte of a block (a hole's included) fails reads of exactly that block.
    #[test]
    fn flipped_data_byte_is_detected(block in tamper_block(), pos in 0..BLOCK, mask in 1u8..=255) {
        let (c, b, plain) = pristine();
        let pos = pos % block_len(block, TAMPER_SIZE);
        flip(&b, data_offset(block) + pos, mask);
        check_damage(&c, &b, plain, &[block]);
    }

    /// Any changed byte of a block's entry (nonce or tag) likewise.
    #[test]
    fn flipped_entry_byte_is_detected(block in tamper_block(), pos in 0..ENTRY_LEN, mask in 1u8..=255) {
        let (c, b, plain) = pristine();
        flip(&b, entry_offset(block) + pos, mask);
        check_damage(&c, &b, plain, &[block]);
    }
}

#[test]
fn every_byte_of_a_short_block_and_its_entry_is_covered() {
    let (c, b, plain) = tamper_file(TAMPER_ID, 3);
    let last = TAMPER_BLOCKS - 1;
    let r = block_range(last);
    let at_positions = (0..r.len() as u64)
        .map(|p| data_offset(last) + p)
        .chain((0..ENTRY_LEN).map(|p| entry_offset(last) + p));
    for at in at_positions {
        flip(&b, at, 0x01);
        assert_corrupt(read_range(&c, &b, TAMPER_SIZE, r.start as u64, r.len()), last);
        flip(&b, at, 0x01);
    }
    check_damage(&c, &b, &plain, &[]);
}

fn swap_blocks(b: &MemBacking, i: u64, j: u64) {
    let mut v = b.0.write();
    for (at_i, at_j, len) in [
        (data_offset(i), data_offset(j), BLOCK),
        (entry_offset(i), entry_offset(j), ENTRY_LEN),
    ] {
        let (at_i, at_j, len) = (at_i as usize, at_j as usize, len as usize);
        let tmp = v[at_i..at_i + len].to_vec();
        v.copy_within(at_j..at_j + len, at_i);
        v[at_j..at_j + len].copy_from_slice(&tmp);
    }
}

#[test]
fn swapped_blocks_with_their_entries_are_detected() {
    // neighbours, within a group, and across the group boundary
    for (i, j) in [(0, 1), (2, 126), (127, 128), (1, 129)] {
        let (c, b, plain) = tamper_file(TAMPER_ID, 4);
        swap_blocks(&b, i, j);
        check_damage(&c, &b, &plain, &[i, j]);
        // swapping back restores the file
        swap_blocks(&b, i, j);
        check_damage(&c, &b, &plain, &[]);
    }
}

fn copy_block(from: &MemBacking, to: &MemBacking, block: u64) {
    let src = from.0.read();
    let mut dst = to.0.write();
    for (at, len) in [(data_offset(block), BLOCK), (entry_offset(block), ENTRY_LEN)] {
        let r = at as usize..(at + len) as usize;
        dst[r.clone()].copy_from_slice(&src[r]);
    }
}

#[test]
fn block_from_another_file_is_detected() {
    // same DEK, same position: only the file id tells the two files apart
    let (c, b, plain) = tamper_file(TAMPER_ID, 5);
    let (_, other, _) = tamper_file([0xB2; 16], 6);
    copy_block(&other, &b, 2);
    copy_block(&other, &b, 129);
    check_damage(&c, &b, &plain, &[2, 129]);

    // control: a file with the same id and key does decrypt there (so the failure above
    // is the file id's doing, not a broken copy)
    let (c, b, _) = tamper_file(TAMPER_ID, 5);
    let (_, twin, twin_plain) = tamper_file(TAMPER_ID, 6);
    copy_block(&twin, &b, 2);
    let r = block_range(2);
    assert_eq!(
        read_range(&c, &b, TAMPER_SIZE, r.start as u64, r.len()).unwrap(),
        &twin_plain[r]
    );
}

#[test]
fn verify_lists_exactly_the_damaged_blocks() {
    let (c, b, plain) = tamper_file(TAMPER_ID, 8);
    flip(&b, data_offset(2) + 17, 0x80); // ciphertext
    flip(&b, entry_offset(127) + 3, 0x01); // nonce
    flip(&b, entry_offset(128) + ENTRY_LEN - 1, 0x10); // tag
    {
        // an entry zeroed (a "hole") while its data is still there
        let mut v = b.0.write();
        let at = entry_offset(126) as usize;
        v[at..at + ENTRY_LEN as usize].fill(0);
    }
    flip(&b, data_offset(64) + 4095, 0x20); // a hole's data
    flip(&b, data_offset(TAMPER_BLOCKS - 1) + 99, 0x04); // last byte of the short block
    check_damage(&c, &b, &plain, &[2, 64, 126, 127, 128, TAMPER_BLOCKS - 1]);
}

#[test]
fn hole_with_data_is_corrupt() {
    let c = codec();
    let b = empty_backing();
    c.truncate(&b, 0, 3 * BLOCK).unwrap(); // three hole blocks
    assert_eq!(read_all(&c, &b, 3 * BLOCK).unwrap(), vec![0; 3 * BLOCK as usize]);
    b.0.write()[data_offset(1) as usize + 5] = 1;
    assert_corrupt(read_range(&c, &b, 3 * BLOCK, 0, 3 * BLOCK as usize), 1);
    assert_eq!(c.verify(&b, 3 * BLOCK).unwrap(), vec![1]);
}
