//! Concurrent writers through separate handles: disjoint ranges of one file (stripes
//! that share 4 KiB blocks, so the daemon's read-modify-write of partial blocks must
//! not lose a neighbour's bytes), several files at once, and readers alongside.

mod common;

use common::*;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

const GROUP: u64 = 128 * 4096;

/// `threads` writers, each with its own handle, write every `threads`-th stripe of
/// `stripe` bytes starting at `base`, in a shuffled order; returns the expected file.
fn striped_write(
    path: &Path,
    threads: usize,
    stripe: usize,
    stripes: usize,
    base: u64,
    seed: u64,
) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let data = rng.bytes(stripe * stripes);
    std::thread::scope(|s| {
        for t in 0..threads {
            let data = &data;
            s.spawn(move || {
                let fh = OpenOptions::new().write(true).open(path).unwrap();
                let mut mine: Vec<usize> = (t..stripes).step_by(threads).collect();
                let mut rng = Rng::new(seed ^ ((t as u64 + 1) * 0x1234_5678));
                for i in (1..mine.len()).rev() {
                    mine.swap(i, rng.below(i as u64 + 1) as usize);
                }
                for i in mine {
                    let off = i * stripe;
                    fh.write_all_at(&data[off..off + stripe], base + off as u64)
                        .unwrap_or_else(|e| panic!("thread {t}: write stripe {i}: {e}"));
                }
            });
        }
    });
    let mut expect = vec![0u8; base as usize];
    expect.extend_from_slice(&data);
    expect
}

fn check_stripes(
    f: &Fixture,
    rel: &str,
    threads: usize,
    stripe: usize,
    stripes: usize,
    base: u64,
    seed: u64,
) -> Vec<u8> {
    let p = f.m(rel);
    File::create(&p).unwrap();
    let expect = striped_write(&p, threads, stripe, stripes, base, seed);
    assert_same(
        &fs::read(&p).unwrap(),
        &expect,
        &format!("{rel}: {threads} writers, {stripe}-byte stripes"),
    );
    expect
}

#[test]
fn threads_write_disjoint_stripes_of_one_file() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    fs::create_dir(f.m("plain")).unwrap();
    let cases: Vec<(&str, usize, usize, usize, u64, u64)> = vec![
        // (file, threads, stripe bytes, stripes, base offset, seed)
        ("z/s1000", 4, 1000, 400, 0, 1), // 4 stripes share most blocks
        ("z/s333", 6, 333, 600, GROUP - 100_000, 2), // across the group boundary
        ("z/s4096", 4, 4096, 64, 10, 3), // block-sized but unaligned
        ("z/s1", 3, 1, 3000, 4000, 4),   // single bytes
        ("plain/s1000", 4, 1000, 400, 0, 5),
    ];
    let mut expected = Vec::new();
    for &(rel, threads, stripe, stripes, base, seed) in &cases {
        expected.push((rel, check_stripes(&f, rel, threads, stripe, stripes, base, seed)));
    }
    drop_caches();
    for (rel, e) in &expected {
        assert_same(
            &fs::read(f.m(rel)).unwrap(),
            e,
            &format!("{rel} after drop_caches"),
        );
    }
    assert_same(
        &f.raw("plain/s1000"),
        &expected[4].1,
        "plain striped file in the backing dir",
    );
    m.unmount();
    let _m = f.mount();
    for (rel, e) in &expected {
        assert_same(&fs::read(f.m(rel)).unwrap(), e, &format!("{rel} after remount"));
    }
}

/// Each thread runs random writes and truncations on its own file against its own model.
#[test]
fn several_files_at_once() {
    let f = Fixture::new();
    let m = f.mount();
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("z", "k1");
    f.zone("z/inner", "k2");
    fs::create_dir(f.m("plain")).unwrap();
    let files = ["z/a", "z/b", "z/inner/c", "plain/d", "z/e", "z/inner/g"];
    let models: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(t, rel)| {
                let p = f.m(rel);
                s.spawn(move || {
                    let fh = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&p)
                        .unwrap();
                    let mut rng = Rng::new(100 + t as u64);
                    let mut model = Vec::new();
                    for op in 0..60 {
                        if rng.below(8) == 0 {
                            let n = rng.below(GROUP + 20_000) as usize;
                            fh.set_len(n as u64).unwrap();
                            model.resize(n, 0);
                        } else {
                            let off = rng.below(GROUP + 20_000) as usize;
                            let len = 1 + rng.below(20_000) as usize;
                            let data = rng.bytes(len);
                            fh.write_all_at(&data, off as u64)
                                .unwrap_or_else(|e| panic!("{rel} op {op}: {e}"));
                            if model.len() < off + data.len() {
                                model.resize(off + data.len(), 0);
                            }
                            model[off..off + data.len()].copy_from_slice(&data);
                        }
                    }
                    model
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rel, model) in files.iter().zip(&models) {
        assert_same(&fs::read(f.m(rel)).unwrap(), model, rel);
    }
    assert_same(&f.raw("plain/d"), &models[3], "plain/d in the backing dir");
    assert_eq!(f.zone_info("z/inner/c")["key"], "k2");
    m.unmount();
    let _m = f.mount();
    for (rel, model) in files.iter().zip(&models) {
        assert_same(
            &fs::read(f.m(rel)).unwrap(),
            model,
            &format!("{rel} after remount"),
        );
    }
}

/// Readers in other threads never see an error (e.g. a block whose data and nonce/tag
/// are caught half-written) while writers rewrite the file, and each block they read
/// holds bytes some writer wrote there.
#[test]
fn readers_alongside_writers_see_no_errors() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    let p = f.m("z/shared");
    const BLOCKS: u64 = 40;
    // block b holds bytes of value (b * 7 + round) % 251 + 1 for some round; 0 never
    fs::write(&p, vec![1u8; (BLOCKS * 4096) as usize]).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..2u64 {
            let (p, done) = (&p, &done);
            s.spawn(move || {
                let fh = OpenOptions::new().write(true).open(p).unwrap();
                let mut rng = Rng::new(500 + w);
                for _ in 0..150 {
                    let b = rng.below(BLOCKS);
                    let v = ((b * 7 + rng.below(1000)) % 251 + 1) as u8;
                    // partial-block and whole-block writes
                    let (off, len) = if rng.below(2) == 0 {
                        (0, 4096)
                    } else {
                        (rng.below(4000), 1 + rng.below(96))
                    };
                    fh.write_all_at(&vec![v; len as usize], b * 4096 + off).unwrap();
                }
                if w == 0 {
                    done.store(true, Ordering::SeqCst);
                }
            });
        }
        for r in 0..2u64 {
            let (p, done) = (&p, &done);
            s.spawn(move || {
                let mut rng = Rng::new(900 + r);
                let mut reads = 0;
                while !done.load(Ordering::SeqCst) || reads < 20 {
                    // a fresh handle now and then, so the page cache is dropped
                    let fh = File::open(p).unwrap();
                    for _ in 0..10 {
                        let b = rng.below(BLOCKS);
                        let mut buf = vec![0u8; 4096];
                        fh.read_exact_at(&mut buf, b * 4096)
                            .unwrap_or_else(|e| panic!("reader {r}: block {b} while writers run: {e}"));
                        assert!(
                            buf.iter().all(|&x| x != 0),
                            "reader {r}: block {b} holds bytes nobody wrote"
                        );
                        reads += 1;
                    }
                }
            });
        }
    });
    let all = fs::read(&p).unwrap();
    assert_eq!(all.len() as u64, BLOCKS * 4096);
    assert!(all.iter().all(|&x| x != 0));
}
