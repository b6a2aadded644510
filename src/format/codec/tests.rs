//! Unit tests of the block codec: model-based property tests against a plain `Vec<u8>`,
//! holes on a real sparse file, tamper detection, truncate edge cases and known-answer
//! tests pinning the on-disk format (cipher, associated data, layout).

use super::*;
use crate::crypto::AuthError;
use crate::format::backing::{Backing, MemBacking};
use crate::format::hints::Hints;
use crate::format::layout;
use crate::format::metacache::{CachedMeta, MetaCache};
use proptest::prelude::*;
use std::ops::Range;

const G: u64 = GROUP_BLOCKS * BLOCK;

fn codec() -> BlockCodec {
    BlockCodec::new(&Key::random(), [7u8; 16])
}

/// An empty encrypted file: just its header region.
fn empty_backing() -> MemBacking {
    let b = MemBacking::default();
    b.set_len(HEADER_LEN).unwrap();
    b
}

/// Deterministic pseudo-random bytes (splitmix64), so that proptest generates and
/// shrinks a seed rather than tens of kilobytes of individual bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Reads the whole file (and a little past its end).
fn read_all(c: &BlockCodec, b: &dyn Storage, size: u64) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![0xEEu8; size as usize + 100];
    let n = c.read(b, size, 0, &mut out)?;
    assert_eq!(n as u64, size, "a full read returns the size");
    out.truncate(n);
    Ok(out)
}

/// Reads `len` bytes at `off`, expecting no short read before end of file.
fn read_range(
    c: &BlockCodec,
    b: &dyn Storage,
    size: u64,
    off: u64,
    len: usize,
) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![0xEEu8; len];
    let n = c.read(b, size, off, &mut out)?;
    out.truncate(n);
    Ok(out)
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None; // memcmp: the slow path below is for reporting only
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then_some(a.len().min(b.len())))
}

fn check_eq(what: &str, got: &[u8], want: &[u8]) -> Result<(), TestCaseError> {
    if let Some(i) = first_diff(got, want) {
        return Err(TestCaseError::fail(format!(
            "{what}: lengths {} vs {} (model), first difference at byte {i} (block {}): got {:?}, model {:?}",
            got.len(),
            want.len(),
            i as u64 / BLOCK,
            got.get(i),
            want.get(i)
        )));
    }
    Ok(())
}

#[test]
fn write_then_read_small() {
    let c = codec();
    let b = MemBacking::default();
    b.set_len(HEADER_LEN).unwrap();
    let size = c.write(&b, 0, 0, b"hello").unwrap();
    assert_eq!(size, 5);
    assert_eq!(b.len().unwrap(), backing_size(5));
    let mut out = [0u8; 10];
    assert_eq!(c.read(&b, size, 0, &mut out).unwrap(), 5);
    assert_eq!(&out[..5], b"hello");
}

// ---------------------------------------------------------------------------------
// Model-based property tests
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Writes `len` pseudo-random bytes (from `seed`) at `off`.
    Write { off: u64, len: usize, seed: u64 },
    /// Truncates to an absolute size.
    Truncate(u64),
    /// Truncates to the current size plus `delta` (clamped at 0).
    TruncateBy(i64),
    /// Reads at an absolute offset.
    Read { off: u64, len: usize },
    /// Reads at `permille`/1000 of the current size.
    ReadRel { permille: u16, len: usize },
}

/// Offsets in `0..max`: `spread` parts uniform, one part within 6000 bytes of a block
/// or group boundary.
fn offset(max: u64, spread: u32) -> BoxedStrategy<u64> {
    let edges: Vec<u64> = [0, BLOCK, 127 * BLOCK, G, 129 * BLOCK, 255 * BLOCK, 2 * G, 3 * G]
        .into_iter()
        .filter(|&e| e < max)
        .collect();
    prop_oneof![
        spread => 0..max,
        1 => (prop::sample::select(edges), -6000i64..6000).prop_map(|(base, d)| base.saturating_add_signed(d)),
    ]
    .boxed()
}

/// Lengths: mostly small, some around a block, some up to `max` (~70 KB is 18 blocks).
fn length(max: usize) -> BoxedStrategy<usize> {
    let bs = BLOCK as usize;
    prop_oneof![
        4 => 0..64usize,
        3 => 0..9000usize,
        1 => prop::sample::select(vec![bs - 1, bs, bs + 1, 2 * bs, (16 * bs).min(max)]),
        1 => 0..max,
    ]
    .boxed()
}

fn op(off: BoxedStrategy<u64>, max_len: usize) -> impl Strategy<Value = Op> {
    let d = max_len as i64;
    prop_oneof![
        5 => (off.clone(), length(max_len), any::<u64>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        1 => off.clone().prop_map(Op::Truncate),
        2 => (-d..d).prop_map(Op::TruncateBy),
        1 => (off, length(max_len)).prop_map(|(off, len)| Op::Read { off, len }),
        2 => (0u16..1100, length(max_len)).prop_map(|(permille, len)| Op::ReadRel { permille, len }),
    ]
}

/// Op sequences at one of four scales per case. Every full read after an op costs the
/// whole file (AES-GCM runs at a few MB/s in an unoptimized build, and holes are
/// scanned), so large files get fewer ops and most cases stay small.
fn op_sequences() -> impl Strategy<Value = Vec<Op>> {
    const BIG: usize = 70_000;
    prop_oneof![
        // a few blocks: dense overwrites, short last blocks, shrink and regrow
        4 => prop::collection::vec(op(offset(4 * BLOCK, 1), 2 * BLOCK as usize), 1..40),
        // around the first group boundary (blocks 127/128), and the first blocks
        3 => prop::collection::vec(op(offset(G + 8 * BLOCK, 0), 20_000), 1..24),
        // up to three groups and a bit
        2 => prop::collection::vec(op(offset(3 * G + 3 * BLOCK, 1), BIG), 1..16),
        // sparse, far beyond the end: up to 2 MiB
        1 => prop::collection::vec(op(offset(2 << 20, 1), BIG), 1..16),
    ]
}

/// `ProptestConfig::with_cases(n)`, unless `PROPTEST_CASES` asks for another number
/// (for thorough runs, e.g. `PROPTEST_CASES=2000 cargo test --release --lib format::codec`).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig::with_cases(n)
}

/// How the codec sees the file in a model test.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// The in-memory file itself.
    Plain,
    /// The metadata cache the filesystem reads with, which must equal the file throughout.
    Cache,
    /// A file that writes large runs direct: whole group runs in one aligned buffer.
    Direct,
    /// A file that takes every read offered: direct reads, windows around small ones.
    Offers,
}

/// A `MemBacking` that asks for direct-I/O-sized writes and checks that runs of
/// whole blocks (what could go direct) come aligned.
struct DirectLike<'a>(&'a MemBacking, std::sync::atomic::AtomicUsize);

impl Backing for DirectLike<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.0.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if off % BLOCK == 0 && buf.len() as u64 % BLOCK == 0 && buf.len() as u64 > BLOCK {
            let aligned = buf.as_ptr().align_offset(BLOCK as usize) == 0;
            assert!(aligned, "whole blocks come from an aligned buffer");
        }
        self.1.fetch_max(buf.len(), std::sync::atomic::Ordering::Relaxed);
        self.0.write_at(buf, off)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn sync(&self, data_only: bool) -> io::Result<()> {
        self.0.sync(data_only)
    }
}

impl Hints for DirectLike<'_> {
    fn writes_direct(&self) -> bool {
        true
    }
}

/// Applies `ops` to a codec on a `MemBacking` (seen `via` one of the ways the
/// filesystem uses) and to a `Vec<u8>` model, checking after every op the backing
/// length and a full read against the model.
fn run_model(ops: &[Op], via: Via) -> Result<(), TestCaseError> {
    let c = codec();
    let mem = empty_backing();
    let cache = MetaCache::default();
    let through_cache = CachedMeta {
        inner: &mem,
        cache: &cache,
    };
    let direct = DirectLike(&mem, Default::default());
    let offers = TakesOffers::new(&mem);
    let b: &dyn Storage = match via {
        Via::Plain => &mem,
        Via::Cache => &through_cache,
        Via::Direct => &direct,
        Via::Offers => &offers,
    };
    let mut model: Vec<u8> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let size = model.len() as u64;
        let ctx = |what: &str| format!("step {step} {op:?}: {what}");
        match *op {
            Op::Write { off, len, seed } => {
                let data = bytes(seed, len);
                let new_size = c
                    .write(b, size, off, &data)
                    .map_err(|e| TestCaseError::fail(ctx(&e.to_string())))?;
                if len > 0 {
                    let end = off as usize + len;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[off as usize..end].copy_from_slice(&data);
                }
                prop_assert_eq!(new_size, model.len() as u64, "{}", ctx("returned size"));
            }
            Op::Truncate(_) | Op::TruncateBy(_) => {
                let new_size = match *op {
                    Op::Truncate(n) => n,
                    Op::TruncateBy(d) => size.saturating_add_signed(d),
                    _ => unreachable!(),
                };
                c.truncate(b, size, new_size)
                    .map_err(|e| TestCaseError::fail(ctx(&e.to_string())))?;
                model.resize(new_size as usize, 0);
            }
            Op::Read { .. } | Op::ReadRel { .. } => {
                let (off, len) = match *op {
                    Op::Read { off, len } => (off, len),
                    Op::ReadRel { permille, len } => (size * permille as u64 / 1000, len),
                    _ => unreachable!(),
                };
                let got = read_range(&c, b, size, off, len)
                    .map_err(|e| TestCaseError::fail(ctx(&e.to_string())))?;
                let from = (off as usize).min(model.len());
                let to = (off as usize).saturating_add(len).min(model.len());
                check_eq(&ctx("ranged read"), &got, &model[from..to])?;
            }
        }
        prop_assert_eq!(
            b.len().unwrap(),
            layout::backing_size(model.len() as u64),
            "{}",
            ctx("backing length")
        );
        let all =
            read_all(&c, b, model.len() as u64).map_err(|e| TestCaseError::fail(ctx(&e.to_string())))?;
        check_eq(&ctx("full read"), &all, &model)?;
        prop_assert!(cache.matches(&mem).unwrap(), "{}", ctx("cache equals the file"));
    }
    // a healthy file has no damaged blocks, holes included
    prop_assert_eq!(c.verify(b, model.len() as u64).unwrap(), Vec::<u64>::new());
    Ok(())
}

proptest! {
    #![proptest_config(cases(64))]

    /// Random writes, truncates and reads over up to ~3 groups, with sparse writes up to 2 MiB.
    #[test]
    fn model_random_ops(ops in op_sequences()) {
        run_model(&ops, Via::Plain)?;
    }

    /// The same, through the metadata cache the filesystem reads with.
    #[test]
    fn model_random_ops_cached(ops in op_sequences()) {
        run_model(&ops, Via::Cache)?;
    }

    /// The same, with whole group runs per write, as for direct I/O.
    #[test]
    fn model_random_ops_direct(ops in op_sequences()) {
        run_model(&ops, Via::Direct)?;
    }

    /// The same, with every direct read and read-around window taken.
    #[test]
    fn model_random_ops_offers(ops in op_sequences()) {
        run_model(&ops, Via::Offers)?;
    }
}

#[test]
fn direct_writes_get_whole_group_runs() {
    let c = codec();
    let mem = empty_backing();
    let direct = DirectLike(&mem, Default::default());
    let data = bytes(3, 1 << 20);
    c.write(&direct, 0, 0, &data).unwrap();
    let largest = direct.1.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(largest as u64, G, "one write per group");
    assert_eq!(read_all(&c, &mem, 1 << 20).unwrap(), data);
}

proptest! {
    #![proptest_config(cases(16))]

    /// Every offset and absolute size within a few blocks of the first group boundary
    /// (blocks 125..=131), where runs are split and entries change metadata block.
    #[test]
    fn model_group_boundary(ops in prop::collection::vec(op((125 * BLOCK..132 * BLOCK).boxed(), 20_000), 1..30), via in prop_oneof![Just(Via::Plain), Just(Via::Cache), Just(Via::Direct)]) {
        run_model(&ops, via)?;
    }
}

#[test]
fn write_straddling_group_boundary() {
    let c = codec();
    let b = empty_backing();
    let data = bytes(1, 3 * BLOCK as usize);
    let off = 127 * BLOCK - 1000; // blocks 126..=129
    let size = c.write(&b, 0, off, &data).unwrap();
    assert_eq!(size, off + data.len() as u64);
    assert_eq!(b.len().unwrap(), backing_size(size));
    let all = read_all(&c, &b, size).unwrap();
    assert!(all[..off as usize].iter().all(|&x| x == 0));
    assert_eq!(&all[off as usize..], &data[..]);
    // a read from the end of block 127 into block 128
    let got = read_range(&c, &b, size, G - 10, 20).unwrap();
    assert_eq!(got, &data[(G - 10 - off) as usize..][..20]);
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());
}

#[test]
fn sparse_write_far_past_end_reads_zeros() {
    let c = codec();
    let b = empty_backing();
    let size = c.write(&b, 0, 0, b"head").unwrap();
    let far = 2 << 20;
    let size = c.write(&b, size, far, b"tail").unwrap();
    assert_eq!(size, far + 4);
    assert_eq!(b.len().unwrap(), backing_size(size));
    let all = read_all(&c, &b, size).unwrap();
    assert_eq!(&all[..4], b"head");
    assert!(all[4..far as usize].iter().all(|&x| x == 0));
    assert_eq!(&all[far as usize..], b"tail");
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());
}

#[test]
fn reads_past_end_and_empty() {
    let c = codec();
    let b = empty_backing();
    let size = c.write(&b, 0, 0, &bytes(2, 5000)).unwrap();
    let mut buf = [0u8; 10];
    assert_eq!(c.read(&b, size, size, &mut buf).unwrap(), 0);
    assert_eq!(c.read(&b, size, size + 1, &mut buf).unwrap(), 0);
    assert_eq!(c.read(&b, size, 0, &mut []).unwrap(), 0);
    assert_eq!(c.read(&b, size, size - 3, &mut buf).unwrap(), 3);
    // an empty write changes nothing, even far past the end
    assert_eq!(c.write(&b, size, 1 << 20, &[]).unwrap(), size);
    assert_eq!(b.len().unwrap(), backing_size(size));
}

// ---------------------------------------------------------------------------------
// Holes on a real (sparse) file
// ---------------------------------------------------------------------------------

#[test]
fn one_byte_at_1gib_leaves_a_hole() {
    use std::os::unix::fs::MetadataExt;
    let c = codec();
    let f = tempfile::tempfile().unwrap();
    f.set_len(HEADER_LEN).unwrap();
    let off = 1u64 << 30;
    let size = c.write(&f, 0, off, b"\x5a").unwrap();
    assert_eq!(size, off + 1);
    assert_eq!(Backing::len(&f).unwrap(), backing_size(size));
    let allocated = f.metadata().unwrap().blocks() * 512;
    assert!(
        allocated < 1 << 20,
        "{allocated} bytes allocated for a 1 GiB hole"
    );

    // the gap reads as zeros: its start, a group boundary, the middle, just before the byte
    for (at, len) in [
        (0, 3 * G as usize),
        (G - 100, 200),
        (off / 2 - 5000, 70_000),
        (off - 2 * G, 2 * G as usize),
    ] {
        let got = read_range(&c, &f, size, at, len).unwrap();
        assert_eq!(got.len(), len);
        assert!(got.iter().all(|&x| x == 0), "non-zero in the gap at {at}");
    }
    let got = read_range(&c, &f, size, off - 3, 10).unwrap();
    assert_eq!(got, b"\0\0\0\x5a");
    // reading did not allocate anything either
    assert_eq!(f.metadata().unwrap().blocks() * 512, allocated);
}

// ---------------------------------------------------------------------------------
// Tamper detection
// ---------------------------------------------------------------------------------

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

fn flip(b: &MemBacking, at: u64, mask: u8) {
    b.0.write()[at as usize] ^= mask;
}

fn block_range(block: u64) -> std::ops::Range<usize> {
    let start = (block * BLOCK) as usize;
    start..start + block_len(block, TAMPER_SIZE) as usize
}

fn assert_corrupt<T: std::fmt::Debug>(r: Result<T, CodecError>, want: u64) {
    match r {
        Err(CodecError::Corrupt { block }) => assert_eq!(block, want),
        other => panic!("expected block {want} to be corrupt, got {other:?}"),
    }
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

// ---------------------------------------------------------------------------------
// Truncate edge cases
// ---------------------------------------------------------------------------------

/// Truncates, checks the backing length and returns the new size.
fn truncate(c: &BlockCodec, b: &MemBacking, size: u64, new_size: u64) -> u64 {
    c.truncate(b, size, new_size).unwrap();
    assert_eq!(b.len().unwrap(), backing_size(new_size), "{size} -> {new_size}");
    new_size
}

#[test]
fn shrink_mid_block_then_grow_reads_zeros() {
    let c = codec();
    let b = empty_backing();
    let data = bytes(10, 3 * BLOCK as usize);
    let size = c.write(&b, 0, 0, &data).unwrap();
    let size = truncate(&c, &b, size, 5000);
    assert_eq!(read_all(&c, &b, size).unwrap(), &data[..5000]);
    let size = truncate(&c, &b, size, 3 * BLOCK + 10);
    let all = read_all(&c, &b, size).unwrap();
    assert_eq!(&all[..5000], &data[..5000]);
    assert!(all[5000..].iter().all(|&x| x == 0));
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());

    // shrinking within one block, then growing by a write past the end
    let size = truncate(&c, &b, size, 4500);
    let size = c.write(&b, size, 9000, b"x").unwrap();
    let all = read_all(&c, &b, size).unwrap();
    assert_eq!(&all[..4500], &data[..4500]);
    assert!(all[4500..9000].iter().all(|&x| x == 0));
    assert_eq!(all[9000], b'x');
}

#[test]
fn shrink_to_group_boundary_then_grow() {
    let c = codec();
    let b = empty_backing();
    let data = bytes(11, 200 * BLOCK as usize);
    let size = c.write(&b, 0, 0, &data).unwrap();
    let size = truncate(&c, &b, size, G);
    // the second group's metadata block is gone entirely
    assert_eq!(b.len().unwrap(), meta_offset(1));
    let size = truncate(&c, &b, size, 131 * BLOCK);
    let all = read_all(&c, &b, size).unwrap();
    assert_eq!(&all[..G as usize], &data[..G as usize]);
    assert!(all[G as usize..].iter().all(|&x| x == 0));
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());

    // just past the boundary: block 128 is one byte long
    let size = truncate(&c, &b, size, G + 1);
    let size = c.write(&b, size, G + 1, &data[..10]).unwrap();
    let size = truncate(&c, &b, size, G + 2 * BLOCK);
    let all = read_all(&c, &b, size).unwrap();
    assert_eq!(all[G as usize], 0);
    assert_eq!(&all[G as usize + 1..][..10], &data[..10]);
    assert!(all[G as usize + 11..].iter().all(|&x| x == 0));
}

#[test]
fn shrink_mid_group_clears_cut_entries() {
    let c = codec();
    let b = empty_backing();
    let data = bytes(12, 100 * BLOCK as usize);
    let size = c.write(&b, 0, 0, &data).unwrap();
    let size = truncate(&c, &b, size, 10 * BLOCK + 5);
    // the cut blocks' entries are zero, so growing reads holes, not stale data
    let v = b.0.read();
    assert!(v[entry_offset(11) as usize..entry_offset(100) as usize]
        .iter()
        .all(|&x| x == 0));
    drop(v);
    let size = truncate(&c, &b, size, 100 * BLOCK);
    let all = read_all(&c, &b, size).unwrap();
    let kept = 10 * BLOCK as usize + 5;
    assert_eq!(&all[..kept], &data[..kept]);
    assert!(all[kept..].iter().all(|&x| x == 0));
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());
}

#[test]
fn truncate_to_zero_and_regrow() {
    let c = codec();
    let b = empty_backing();
    let size = c.write(&b, 0, 0, &bytes(13, 150 * BLOCK as usize + 7)).unwrap();
    let size = truncate(&c, &b, size, 0);
    assert_eq!(b.len().unwrap(), HEADER_LEN);
    assert_eq!(read_all(&c, &b, size).unwrap(), Vec::<u8>::new());
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());
    let size = truncate(&c, &b, size, 130 * BLOCK + 1);
    assert!(read_all(&c, &b, size).unwrap().iter().all(|&x| x == 0));
    let size = c.write(&b, size, 3, b"abc").unwrap();
    let all = read_all(&c, &b, size).unwrap();
    assert_eq!(&all[..6], b"\0\0\0abc");
    assert!(all[6..].iter().all(|&x| x == 0));
    // no-op truncates
    let size = truncate(&c, &b, size, size);
    let size = truncate(&c, &b, size, 0);
    assert_eq!(truncate(&c, &b, size, 0), 0);
}

// ---------------------------------------------------------------------------------
// A probing backing: prefetches, and failures while growing (the file stays as the
// caller believes it is)
// ---------------------------------------------------------------------------------

/// A `MemBacking` that misbehaves on request, like a full or size-capped backing
/// filesystem: it fails one chosen write (counting from 0) with ENOSPC, then works
/// again, and refuses lengths past `max_len` with EFBIG. With `direct` it answers like
/// a backing with direct I/O, so the codec hands it whole group runs. It records the
/// ranges it is asked to prefetch.
struct Probe {
    inner: MemBacking,
    fail_write: std::sync::atomic::AtomicUsize,
    max_len: u64,
    direct: bool,
    prefetched: parking_lot::Mutex<Vec<(u64, usize)>>,
}

impl Probe {
    fn new(inner: MemBacking, fail_write: usize, max_len: u64, direct: bool) -> Probe {
        Probe {
            inner,
            fail_write: fail_write.into(),
            max_len,
            direct,
            prefetched: Default::default(),
        }
    }
}

impl Backing for Probe {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.fail_write.fetch_sub(1, Relaxed) == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if off + buf.len() as u64 > self.max_len {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        self.inner.write_at(buf, off)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > self.max_len {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn sync(&self, data_only: bool) -> io::Result<()> {
        self.inner.sync(data_only)
    }
}

impl Hints for Probe {
    fn writes_direct(&self) -> bool {
        self.direct
    }
    fn prefetch(&self, off: u64, len: usize) {
        self.prefetched.lock().push((off, len));
    }
}

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

#[test]
fn a_refused_grow_changes_nothing() {
    let c = codec();
    let data = bytes(14, 5000);
    let mem = empty_backing();
    let size = c.write(&mem, 0, 0, &data).unwrap();
    let b = Probe::new(mem, usize::MAX, 1 << 30, false);
    // the short last block must grow, and the backing refuses the new length
    assert!(c.truncate(&b, size, 1 << 40).is_err());
    assert_eq!(b.len().unwrap(), backing_size(size));
    assert_eq!(read_all(&c, &b, size).unwrap(), data);
    assert!(c.write(&b, size, 1 << 31, b"x").is_err());
    assert_eq!(b.len().unwrap(), backing_size(size));
    assert_eq!(read_all(&c, &b, size).unwrap(), data);
    // what does fit still works
    c.truncate(&b, size, 3 * BLOCK).unwrap();
    let all = read_all(&c, &b, 3 * BLOCK).unwrap();
    assert_eq!(&all[..5000], &data[..]);
    assert!(all[5000..].iter().all(|&x| x == 0));
}

/// Writes that grow a file with a short last block by two groups, one starting inside
/// that block and one past it, fail at each of their backing writes in turn. Every
/// time, the backing length is the old one; the blocks before the old last block are
/// intact; the old last block either reads (its old bytes outside the write, old or
/// new ones inside) or, if the failure fell between its data and its entry, fails
/// authentication as a crash there would leave it; and growing the file afterwards
/// reads zeros past the old end, never stale blocks or EIO.
#[test]
fn a_failed_write_past_the_end_is_undone() {
    let c = codec();
    let old = bytes(15, (2 * G + 5000) as usize);
    let size = old.len() as u64;
    let last = size / BLOCK;
    let before = (last * BLOCK) as usize;
    let new = bytes(16, 2 * G as usize);
    for off in [size - 500, size + 3 * BLOCK] {
        for direct in [false, true] {
            for n in 0.. {
                let mem = empty_backing();
                c.write(&mem, 0, 0, &old).unwrap();
                let b = &Probe::new(mem, n, u64::MAX, direct);
                if c.write(b, size, off, &new).is_ok() {
                    assert!(n >= 6, "a write of two groups makes at least 6 backing writes");
                    break;
                }
                let case = format!("write at {off}, direct {direct}, failing write {n}");
                assert_eq!(b.len().unwrap(), backing_size(size), "{case}");
                assert_eq!(
                    read_range(&c, b, size, 0, before).unwrap(),
                    &old[..before],
                    "{case}"
                );
                let tail = match read_range(&c, b, size, before as u64, size as usize - before) {
                    Ok(tail) => tail,
                    Err(e) => {
                        assert_corrupt(Err::<(), _>(e), last);
                        continue;
                    }
                };
                for (i, &x) in tail.iter().enumerate() {
                    let at = before + i;
                    let written = (at as u64).checked_sub(off).map(|k| new[k as usize]);
                    assert!(x == old[at] || Some(x) == written, "{case}: byte {at}");
                }
                let grown = size + 3 * G;
                c.truncate(b, size, grown).unwrap();
                let past = read_range(&c, b, grown, size, 3 * G as usize).unwrap();
                assert!(past.iter().all(|&x| x == 0), "{case}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Known answers: these pin the format. If one fails, the on-disk format changed.
// ---------------------------------------------------------------------------------

const KAT_KEY: [u8; 32] = [0x11; 32];
const KAT_FILE_ID: [u8; 16] = *b"ezfs-kat-file-id";
const KAT_NONCE: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

/// The documented associated data of a block: file id (16 bytes) || block index (u64 LE).
fn documented_aad(file_id: &[u8; 16], block: u64) -> Vec<u8> {
    let mut a = file_id.to_vec();
    a.extend_from_slice(&block.to_le_bytes());
    a
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Plaintext of the full-block vector: bytes 0, 1, .., 255, 0, 1, ...
fn kat_block() -> Vec<u8> {
    (0..BLOCK).map(|i| i as u8).collect()
}

/// Full block 1 (a realistic position): first 32 ciphertext bytes and the tag.
const KAT1_CT_PREFIX: &str = "13e2b4107fa633f31cb1d994c8a2f929d9b0127b01604438b1f9a564e15d7d31";
const KAT1_TAG: &str = "0fa3ce24e52d6cc53f79144885343bbb";
/// A short block at an index using all eight bytes of the u64 (catches width/endianness).
const KAT2_BLOCK: u64 = 0x0807_0605_0403_0201;
const KAT2_PLAIN: &[u8] = b"ezfs known-answer block";
const KAT2_CT: &str = "7699d0605bc85b9b63d6fefeaadc8043bb8162047a1639";
const KAT2_TAG: &str = "163db73a22d17220bfa5eee7336f3237";

#[test]
fn aes_gcm_reference_vector() {
    // The GCM specification's test case 14 (AES-256, zero key and IV, one zero block):
    // anchors the cipher itself, independently of anything ezfs chooses.
    let c = Key::from_slice(&[0; 32]).unwrap().cipher();
    let mut buf = [0u8; 16];
    let tag = c.seal_with_nonce(&[0; 12], &[], &mut buf);
    assert_eq!(hex(&buf), "cea7403d4d606b6e074ec5d3baf39d18");
    assert_eq!(hex(&tag), "d0d1c8a799996bf0265b98b5d48ab919");
}

fn hex(b: &[u8]) -> String {
    crate::format::header::hex(b)
}

#[test]
fn known_answer_vectors() {
    let cipher = Key::from_slice(&KAT_KEY).unwrap().cipher();
    let mut buf = kat_block();
    let tag = cipher.seal_with_nonce(&KAT_NONCE, &documented_aad(&KAT_FILE_ID, 1), &mut buf);
    assert_eq!(hex(&buf[..32]), KAT1_CT_PREFIX);
    assert_eq!(hex(&tag), KAT1_TAG);

    let mut buf = KAT2_PLAIN.to_vec();
    let tag = cipher.seal_with_nonce(&KAT_NONCE, &documented_aad(&KAT_FILE_ID, KAT2_BLOCK), &mut buf);
    assert_eq!(hex(&buf), KAT2_CT);
    assert_eq!(hex(&tag), KAT2_TAG);
}

/// The codec opens the known-answer blocks: its associated data is the documented one.
#[test]
fn codec_opens_known_answer_blocks() {
    let c = BlockCodec::new(&Key::from_slice(&KAT_KEY).unwrap(), KAT_FILE_ID);
    let mut entry = KAT_NONCE.to_vec();
    entry.extend_from_slice(&unhex(KAT2_TAG));
    let mut buf = unhex(KAT2_CT);
    c.open_block(KAT2_BLOCK, &entry, &mut buf).unwrap();
    assert_eq!(buf, KAT2_PLAIN);
    // the same bytes at any other index, or under another file id, fail
    let mut buf = unhex(KAT2_CT);
    assert_corrupt(
        c.open_block(KAT2_BLOCK.swap_bytes(), &entry, &mut buf),
        KAT2_BLOCK.swap_bytes(),
    );
    let other = BlockCodec::new(&Key::from_slice(&KAT_KEY).unwrap(), [0; 16]);
    let mut buf = unhex(KAT2_CT);
    assert_corrupt(other.open_block(KAT2_BLOCK, &entry, &mut buf), KAT2_BLOCK);
}

/// Installs the full-block vector at block 1 of a backing file by hand (entry = nonce ||
/// tag at `entry_offset`, ciphertext at `data_offset`): the codec reads it back, which
/// pins the layout together with the cipher and associated data.
#[test]
fn codec_reads_hand_made_known_answer_file() {
    let cipher = Key::from_slice(&KAT_KEY).unwrap().cipher();
    let mut ct = kat_block();
    let tag = cipher.seal_with_nonce(&KAT_NONCE, &documented_aad(&KAT_FILE_ID, 1), &mut ct);
    assert_eq!(hex(&tag), KAT1_TAG);

    let size = 2 * BLOCK; // block 0 a hole, block 1 the vector
    let b = MemBacking::default();
    b.set_len(backing_size(size)).unwrap();
    b.write_at(&ct, 3 * BLOCK).unwrap(); // data_offset(1): header, meta 0, data 0
    b.write_at(&KAT_NONCE, HEADER_LEN + ENTRY_LEN).unwrap(); // entry_offset(1)
    b.write_at(&tag, HEADER_LEN + ENTRY_LEN + 12).unwrap();
    assert_eq!(
        (data_offset(1), entry_offset(1)),
        (3 * BLOCK, HEADER_LEN + ENTRY_LEN)
    );

    let c = BlockCodec::new(&Key::from_slice(&KAT_KEY).unwrap(), KAT_FILE_ID);
    let all = read_all(&c, &b, size).unwrap();
    assert!(all[..BLOCK as usize].iter().all(|&x| x == 0));
    assert_eq!(&all[BLOCK as usize..], &kat_block()[..]);
    assert_eq!(c.verify(&b, size).unwrap(), Vec::<u64>::new());
}

/// The other direction: a block the codec wrote opens by hand with `Cipher::open`, the
/// entry read at `entry_offset` and the documented associated data.
#[test]
fn codec_writes_documented_format() {
    let key = Key::from_slice(&KAT_KEY).unwrap();
    let c = BlockCodec::new(&key, KAT_FILE_ID);
    let b = empty_backing();
    let block = 130; // second group, so the entry sits in metadata block 1
    let plain = bytes(14, BLOCK as usize + 33); // blocks 130 (full) and 131 (short)
    let size = c.write(&b, 0, block * BLOCK, &plain).unwrap();
    assert_eq!(size, 131 * BLOCK + 33);

    let v = b.0.read();
    for (i, want) in [
        (block, &plain[..BLOCK as usize]),
        (block + 1, &plain[BLOCK as usize..]),
    ] {
        let at = entry_offset(i) as usize;
        let nonce: [u8; 12] = v[at..at + 12].try_into().unwrap();
        let tag: [u8; 16] = v[at + 12..at + 28].try_into().unwrap();
        let at = data_offset(i) as usize;
        let ct = &v[at..at + want.len()];
        assert_ne!(ct, want);
        let mut buf = ct.to_vec();
        key.cipher()
            .open(&nonce, &tag, &documented_aad(&KAT_FILE_ID, i), &mut buf)
            .unwrap();
        assert_eq!(buf, want);
        // and not under another index
        let mut buf = ct.to_vec();
        assert_eq!(
            key.cipher()
                .open(&nonce, &tag, &documented_aad(&KAT_FILE_ID, i + 1), &mut buf),
            Err(AuthError)
        );
    }
    // all other entries of the file are zero (holes)
    for i in (0..block).chain([block + 2]) {
        let at = entry_offset(i) as usize;
        assert!(
            v.get(at..at + ENTRY_LEN as usize)
                .is_none_or(|e| e.iter().all(|&x| x == 0)),
            "entry {i}"
        );
    }
}

/// A backing that takes every read it is offered: large runs as direct reads (as a
/// real one does when the page cache lacks the range), counted, and the whole window
/// of every small read (as a real one does in a densely read group), recorded.
struct TakesOffers<'a> {
    mem: &'a MemBacking,
    direct: std::sync::atomic::AtomicUsize,
    windows: parking_lot::Mutex<Vec<Range<u64>>>,
}

impl<'a> TakesOffers<'a> {
    fn new(mem: &'a MemBacking) -> Self {
        TakesOffers {
            mem,
            direct: Default::default(),
            windows: Default::default(),
        }
    }
}

impl Backing for TakesOffers<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.mem.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.mem.write_at(buf, off)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.mem.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.mem.len()
    }
    fn sync(&self, data_only: bool) -> io::Result<()> {
        self.mem.sync(data_only)
    }
}

impl Hints for TakesOffers<'_> {
    fn read_direct(&self, buf: &mut [u8], off: u64) -> Option<io::Result<usize>> {
        self.direct.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(self.mem.read_at(buf, off))
    }
    fn read_around(&self, buf: &mut [u8], off: u64, around: &Around) -> Option<io::Result<usize>> {
        let w = &around.window;
        assert!(
            w.start <= off && off + buf.len() as u64 <= w.end,
            "{off} in {around:?}"
        );
        assert!(
            around.area.start <= w.start && w.end <= around.area.end,
            "{around:?}"
        );
        let mut window = vec![0u8; (w.end - w.start) as usize];
        let got = match self.mem.read_at(&mut window, w.start) {
            Ok(got) => got,
            Err(e) => return Some(Err(e)),
        };
        let at = (off - w.start) as usize;
        let n = got.saturating_sub(at).min(buf.len());
        buf[..n].copy_from_slice(&window[at..at + n]);
        self.windows.lock().push(w.clone());
        Some(Ok(n))
    }
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
