//! Throughput of the block codec: one 4 KiB block sealed and opened, and 1 MiB written
//! and read through `BlockCodec` on an in-memory backing file.
//!
//! Run with `cargo bench --bench codec` (add `-- --quick` for a short run).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ezfs::crypto::Key;
use ezfs::format::layout::HEADER_LEN;
use ezfs::format::{Backing, BlockCodec, MemBacking};
use std::hint::black_box;

const BLOCK: usize = 4096;
const MIB: usize = 1 << 20;

fn codec() -> BlockCodec {
    BlockCodec::new(&Key::from_slice(&[0x5a; 32]).unwrap(), [7; 16])
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn block(c: &mut Criterion) {
    let codec = codec();
    let mut g = c.benchmark_group("block");
    g.throughput(Throughput::Bytes(BLOCK as u64));

    let mut buf = pattern(BLOCK);
    g.bench_function("seal 4KiB", |b| {
        // sealing in place again and again: the cost does not depend on the bytes
        b.iter(|| black_box(codec.seal_block(black_box(3), &mut buf)))
    });

    let plain = pattern(BLOCK);
    let mut sealed = plain.clone();
    let entry = codec.seal_block(3, &mut sealed);
    // checked here, not after the bench: a filter may skip the bench
    let mut check = sealed.clone();
    codec.open_block(3, &entry, &mut check).unwrap();
    assert_eq!(check, plain);
    g.bench_function("open 4KiB", |b| {
        // each iteration opens a fresh copy of the sealed block; the copy is made
        // outside the timing (copying it in the loop measured glibc's memmove at 2/3
        // of the time, whose speed depends on how the two buffers happen to align)
        b.iter_batched_ref(
            || sealed.clone(),
            |buf| codec.open_block(black_box(3), &entry, buf).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn file(c: &mut Criterion) {
    let codec = codec();
    let data = pattern(MIB);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(MIB as u64));

    // an overwrite of a whole 1 MiB file at offset 0 (every block sealed, no read-back)
    let backing = MemBacking::default();
    backing.set_len(HEADER_LEN).unwrap();
    let size = codec.write(&backing, 0, 0, &data).unwrap();
    g.bench_function("write 1MiB", |b| {
        b.iter(|| codec.write(&backing, size, 0, black_box(&data)).unwrap())
    });

    // the same into a fresh (empty) file: includes growing the backing buffer
    g.bench_function("write 1MiB new file", |b| {
        b.iter_batched(
            || {
                let fresh = MemBacking::default();
                fresh.set_len(HEADER_LEN).unwrap();
                fresh
            },
            |fresh| codec.write(&fresh, 0, 0, black_box(&data)).unwrap(),
            BatchSize::LargeInput,
        )
    });

    // checked here, not after the bench: a filter may skip the bench
    let mut out = vec![0u8; MIB];
    codec.read(&backing, size, 0, &mut out).unwrap();
    assert_eq!(out, data);
    g.bench_function("read 1MiB", |b| {
        b.iter(|| codec.read(&backing, size, 0, black_box(&mut out)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, block, file);
criterion_main!(benches);
