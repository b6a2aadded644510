//! Shared storage without a kernel: several cores (daemons, standing in for hosts)
//! on one backing dir, writing one file at once through the core's operations. What
//! they write must come out as some serial order of the writes: no block torn, no
//! write lost, every block authentic.

use super::{name, root, ROOT};
use ezfs::fs::applocks::LockRange;
use ezfs::fs::{Core, SetAttr};
use ezfs::keys::{Keystore, LocalProvider};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

struct Shared {
    _dir: tempfile::TempDir,
    backing: PathBuf,
    cores: Vec<Arc<Core>>,
}

/// A shared core on `backing` (the keystore unlocked for it alone, as another host's
/// daemon would).
fn core_on(backing: &Path) -> Arc<Core> {
    let ks = Keystore::unlock(backing, b"passphrase").unwrap();
    let mut core = Core::new(backing.to_path_buf(), Arc::new(LocalProvider::new(ks)), false).unwrap();
    core.shared = true;
    core.writeback = false;
    let core = Arc::new(core);
    core.locate_zones().unwrap();
    core
}

/// `n` shared cores on one backing dir that has a zone `z` (key `k1`).
fn shared(n: usize) -> Shared {
    let (dir, backing, ks) = super::backing_with_k1();
    drop(ks);
    let first = core_on(&backing);
    first.mkdir(&root(), ROOT, name("z"), 0o777, 0).unwrap();
    first.zone_create("z", "k1", false, &root()).unwrap();
    let mut cores = vec![first];
    cores.extend((1..n).map(|_| core_on(&backing)));
    Shared {
        _dir: dir,
        backing,
        cores,
    }
}

impl Shared {
    /// Node id of `z/file` in core `i` (created by the first core if missing).
    fn node(&self, i: usize, file: &str) -> u64 {
        let z = self.cores[i].lookup(ROOT, name("z")).unwrap().ino;
        match self.cores[i].lookup(z, name(file)) {
            Ok(a) => a.ino,
            Err(_) => {
                let (a, o) = self.cores[i]
                    .create(&root(), z, name(file), 0o666, 0, libc::O_RDWR)
                    .unwrap();
                self.cores[i].release(a.ino, o.fh);
                a.ino
            }
        }
    }

    /// The whole of `z/file` as core `i` reads it.
    fn read(&self, i: usize, file: &str) -> Vec<u8> {
        let c = &self.cores[i];
        let ino = self.node(i, file);
        let o = c.open(&root(), ino, libc::O_RDONLY).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = c.read(o.fh, out.len() as u64, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        c.release(ino, o.fh);
        out
    }

    /// Runs `work(core index, core, node of z/file, handle)` on every core at once.
    fn each<F>(&self, file: &str, flags: i32, work: F)
    where
        F: Fn(usize, &Core, u64, u64) + Sync,
    {
        let nodes: Vec<u64> = (0..self.cores.len()).map(|i| self.node(i, file)).collect();
        let start = Barrier::new(self.cores.len());
        std::thread::scope(|s| {
            for (i, c) in self.cores.iter().enumerate() {
                let (start, work, ino) = (&start, &work, nodes[i]);
                s.spawn(move || {
                    let o = c.open(&root(), ino, flags).unwrap();
                    start.wait();
                    work(i, c, ino, o.fh);
                    c.release(ino, o.fh);
                });
            }
        });
    }

    fn fsck_clean(&self) {
        let bin = env!("CARGO_BIN_EXE_ezfs");
        let pw = self._dir.path().join("pw");
        std::fs::write(&pw, "passphrase").unwrap();
        let o = std::process::Command::new(bin)
            .args(["fsck", self.backing.to_str().unwrap(), "--passphrase-file"])
            .arg(&pw)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "fsck: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn writers_of_neighbouring_bytes_of_one_block_lose_nothing() {
    const BLOCKS: u64 = 8;
    const ROUNDS: u8 = 60;
    let s = shared(3);
    // each core writes its own 100 bytes of every block, round after round
    s.each("f", libc::O_RDWR, |i, c, ino, fh| {
        for round in 0..ROUNDS {
            for b in 0..BLOCKS {
                let byte = [b'a' + i as u8 * 8 + round % 8; 100];
                c.write(ino, fh, b * 4096 + i as u64 * 100, &byte, false, false)
                    .unwrap();
            }
        }
    });
    let data = s.read(1, "f");
    assert_eq!(data.len() as u64, (BLOCKS - 1) * 4096 + 300);
    for b in 0..BLOCKS as usize {
        for i in 0..3 {
            let last = b'a' + i as u8 * 8 + (ROUNDS - 1) % 8;
            let at = b * 4096 + i * 100;
            assert!(
                data[at..at + 100].iter().all(|&x| x == last),
                "block {b}: writer {i}'s last bytes are lost"
            );
        }
    }
    s.fsck_clean();
}

#[test]
fn appends_from_several_cores_all_land_whole() {
    const RECORDS: usize = 150;
    let s = shared(2);
    s.each("log", libc::O_WRONLY | libc::O_APPEND, |i, c, ino, fh| {
        for r in 0..RECORDS {
            let mut rec = format!("core {i} record {r:05} ").into_bytes();
            rec.resize(99, b'.');
            rec.push(b'\n');
            // the offset the kernel would send is this core's stale idea of the end
            c.write(ino, fh, 0, &rec, false, true).unwrap();
        }
    });
    let data = s.read(0, "log");
    assert_eq!(data.len(), 2 * RECORDS * 100, "every append is there");
    let mut seen = std::collections::HashSet::new();
    for rec in data.chunks(100) {
        let text = String::from_utf8_lossy(rec);
        assert!(
            text.starts_with("core ") && text.ends_with(".\n"),
            "torn record {text:?}"
        );
        assert!(seen.insert(text.into_owned()), "a record twice");
    }
    s.fsck_clean();
}

#[test]
fn files_grown_by_several_cores_at_once_keep_every_block() {
    const BLOCKS: u64 = 120;
    let s = shared(2);
    // core 0 writes the even blocks, core 1 the odd ones, each growing the file; a
    // short tail (grown over by the next block) is rewritten by whoever grows past it
    s.each("grow", libc::O_RDWR, |i, c, ino, fh| {
        for b in (i as u64..BLOCKS).step_by(2) {
            let fill = [(b % 251) as u8 + 1; 4096];
            let len = if b % 3 == 0 { 1000 } else { 4096 };
            c.write(ino, fh, b * 4096, &fill[..len], false, false).unwrap();
        }
    });
    let data = s.read(1, "grow");
    for b in 0..BLOCKS {
        let at = (b * 4096) as usize;
        let len = if b % 3 == 0 { 1000 } else { 4096 };
        let want = (b % 251) as u8 + 1;
        if b + 1 == BLOCKS {
            assert_eq!(data.len(), at + len, "the size is the last block's end");
        }
        assert!(
            data[at..at + len].iter().all(|&x| x == want),
            "block {b} holds the wrong bytes"
        );
    }
    s.fsck_clean();
}

#[test]
fn one_cores_truncate_and_anothers_reads_never_see_a_torn_block() {
    let s = shared(2);
    s.each("t", libc::O_RDWR, |i, c, ino, fh| {
        let _ = fh;
        let mut buf = vec![0u8; 3 * 4096];
        for round in 0..200u32 {
            if i == 0 {
                let fill = vec![(round % 200) as u8 + 1; (round as usize % 3 + 1) * 4096 - 7];
                c.write(ino, fh, 0, &fill, false, false).unwrap();
                let cut = SetAttr {
                    size: Some((round as u64 * 977) % 9000),
                    ..Default::default()
                };
                c.setattr(&root(), ino, &cut).unwrap();
            } else {
                // EIO here would be a block read while another core rewrote it
                let n = c.read(fh, 0, &mut buf).unwrap();
                assert!(n <= buf.len());
            }
        }
    });
    s.fsck_clean();
}

#[test]
fn application_locks_of_one_core_are_seen_by_another() {
    let s = shared(2);
    let (a, b) = (&s.cores[0], &s.cores[1]);
    let (ia, ib) = (s.node(0, "db"), s.node(1, "db"));
    let wr = |start, end| LockRange {
        start,
        end,
        typ: libc::F_WRLCK,
    };
    a.setlk(ia, 7, wr(0, 99), false, std::process::id()).unwrap();
    let e = b.setlk(ib, 9, wr(50, 60), false, std::process::id()).unwrap_err();
    assert_eq!(e.errno(), libc::EAGAIN);
    b.setlk(ib, 9, wr(100, 200), false, std::process::id()).unwrap();
    let c = b
        .getlk(ib, 9, wr(0, i64::MAX as u64))
        .unwrap()
        .expect("a's lock shows");
    assert_eq!((c.start, c.end, c.typ), (0, 99, libc::F_WRLCK));
    // the owner closes the file: its locks go
    a.drop_locks(ia, 7);
    b.setlk(ib, 9, wr(0, i64::MAX as u64), false, std::process::id())
        .unwrap();
    // an application's lock to the end never blocks the cores' own reads and writes
    let (attr, o) = a
        .create(
            &root(),
            a.lookup(ROOT, name("z")).unwrap().ino,
            name("x"),
            0o666,
            0,
            libc::O_RDWR,
        )
        .unwrap();
    a.release(attr.ino, o.fh);
    let o = a.open(&root(), ia, libc::O_RDWR).unwrap();
    a.write(ia, o.fh, 0, b"still writable", false, false).unwrap();
    a.release(ia, o.fh);
}
