//! Model-based property tests: random writes, truncates and reads applied to the codec
//! and to a plain `Vec<u8>`, through each kind of backing the filesystem uses; writes
//! at the edges (group boundary, far past the end); holes on a real sparse file.

use super::*;
use crate::format::layout;

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

/// One byte written 1 GiB into a new file leaves the gap unallocated in the backing
/// file, and the gap reads as zeros.
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
