//! Crash safety: `kill -9` of the mount daemon (and of a running `ezfs key` command)
//! at random points while a writer does writes, truncates, renames, creates and
//! unlinks, each followed by fsync, in a zone and in a plain directory.
//!
//! After every kill, with the daemon dead and its mount detached:
//! - `ezfs fsck` finds damage only in blocks that the one operation in flight at the
//!   kill could have touched (a block is two writes, data and tag: a kill between them
//!   legitimately fails authentication for that block, never for another one, and
//!   never in a header);
//! - the keystore unlocks (the remount), and every `key roll` that exited 0 is there;
//! - every file not touched by the operation in flight reads back exactly as it was
//!   fsynced (after a remount, with cold caches).
//!
//! `EZFS_CRASH_ITERS` sets the number of kill points (default 20), `EZFS_CRASH_SEED`
//! the seed (default: from the clock; printed either way).

mod common;

use common::*;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Directories the writer works in: a zone and a plain directory.
const DIRS: [&str; 2] = ["z", "p"];
/// File names per directory.
const NAMES: u64 = 12;
/// Files stay below this size (so some cross the first 512 KiB group boundary).
const MAX_SIZE: u64 = 700 * 1024;

/// What the writer knows: the fsynced contents of every file, keyed by "dir/name".
#[derive(Default, Clone)]
struct Model {
    files: BTreeMap<String, Vec<u8>>,
}

/// The operation in flight when the daemon died: the paths it may have changed, and
/// per path the block range it may have left torn (`None`: no data written).
#[derive(Default, Clone, Debug)]
struct InFlight {
    paths: BTreeMap<String, Option<(u64, u64)>>,
}

/// Blocks an operation on a file of `old` bytes may rewrite when it writes plaintext
/// `[lo, hi)` (`hi > lo`) or changes the size to `new`: the blocks covered, and the
/// old and new last blocks, which a size change re-encrypts.
fn touched(old: u64, lo: u64, hi: u64, new: u64) -> (u64, u64) {
    let last = |s: u64| s.saturating_sub(1) / BLOCK;
    let a = (lo / BLOCK).min(last(old)).min(last(new));
    let b = ((hi.max(lo + 1) - 1) / BLOCK).max(last(old)).max(last(new));
    (a, b)
}

struct Writer<'a> {
    root: &'a std::path::Path,
    rng: Rng,
    model: Model,
    flight: Arc<Mutex<InFlight>>,
}

impl Writer<'_> {
    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.root.join(rel)
    }

    fn begin(&self, paths: &[(&str, Option<(u64, u64)>)]) {
        let mut f = self.flight.lock();
        f.paths = paths.iter().map(|(p, r)| (p.to_string(), *r)).collect();
    }

    fn end(&self) {
        self.flight.lock().paths.clear();
    }

    fn fsync_dir(&self, dir: &str) -> std::io::Result<()> {
        std::fs::File::open(self.path(dir))?.sync_all()
    }

    /// One random operation, fsynced; the model changes only once it succeeded.
    fn step(&mut self) -> std::io::Result<()> {
        let dir = DIRS[self.rng.below(2) as usize];
        let name = format!("{dir}/f{}", self.rng.below(NAMES));
        let old = self.model.files.get(&name).cloned();
        let old_len = old.as_ref().map_or(0, |v| v.len() as u64);
        match self.rng.below(10) {
            // write at a random offset (often past the end, often unaligned)
            0..=4 => {
                let off = self.rng.below((old_len + 8192).min(MAX_SIZE));
                let len = 1 + self.rng.below(70_000.min(MAX_SIZE - off));
                let data = self.rng.bytes(len as usize);
                let mut new = old.clone().unwrap_or_default();
                let end = (off + len) as usize;
                if new.len() < end {
                    new.resize(end, 0);
                }
                new[off as usize..end].copy_from_slice(&data);
                self.begin(&[(&name, Some(touched(old_len, off, off + len, new.len() as u64)))]);
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(self.path(&name))?;
                f.write_all_at(&data, off)?;
                f.sync_all()?;
                drop(f);
                self.fsync_dir(dir)?;
                self.model.files.insert(name, new);
            }
            // truncate, either way
            5 | 6 if old.is_some() => {
                let new_len = self.rng.below((old_len + 20_000).min(MAX_SIZE));
                let mut new = old.unwrap();
                new.resize(new_len as usize, 0);
                self.begin(&[(
                    &name,
                    Some(touched(
                        old_len,
                        new_len.min(old_len),
                        old_len.max(new_len),
                        new_len,
                    )),
                )]);
                let f = OpenOptions::new().write(true).open(self.path(&name))?;
                f.set_len(new_len)?;
                f.sync_all()?;
                self.model.files.insert(name, new);
            }
            // replace atomically: write a temporary file, fsync, rename it over the name
            7 => {
                let tmp = format!("{dir}/tmp");
                let n = self.rng.below(100_000) as usize;
                let data = self.rng.bytes(n);
                self.begin(&[
                    (&tmp, Some(touched(0, 0, data.len() as u64, data.len() as u64))),
                    (&name, None),
                ]);
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(self.path(&tmp))?;
                f.write_all_at(&data, 0)?;
                f.sync_all()?;
                drop(f);
                std::fs::rename(self.path(&tmp), self.path(&name))?;
                self.fsync_dir(dir)?;
                self.model.files.remove(&tmp);
                self.model.files.insert(name, data);
            }
            // rename to another name in the same directory (replacing it)
            8 if old.is_some() => {
                let to = format!("{dir}/f{}", self.rng.below(NAMES));
                if to == name {
                    return Ok(());
                }
                self.begin(&[(&name, None), (&to, None)]);
                std::fs::rename(self.path(&name), self.path(&to))?;
                self.fsync_dir(dir)?;
                let v = self.model.files.remove(&name).unwrap();
                self.model.files.insert(to, v);
            }
            9 if old.is_some() => {
                self.begin(&[(&name, None)]);
                std::fs::remove_file(self.path(&name))?;
                self.fsync_dir(dir)?;
                self.model.files.remove(&name);
            }
            _ => return Ok(()),
        }
        self.end();
        Ok(())
    }
}

/// Runs `ezfs key roll k1` and `ezfs key create` in a loop until `stop`; the child
/// running at the kill is killed too. Counts the rolls that exited 0.
struct KeyOps {
    child: Arc<Mutex<Option<Child>>>,
    stop: Arc<AtomicBool>,
    acked_rolls: Arc<AtomicU32>,
}

impl KeyOps {
    fn start(f: &Fixture, iter: u64, acked_rolls: Arc<AtomicU32>) -> (KeyOps, std::thread::JoinHandle<()>) {
        let ops = KeyOps {
            child: Arc::new(Mutex::new(None)),
            stop: Arc::new(AtomicBool::new(false)),
            acked_rolls,
        };
        let (child, stop, acked) = (ops.child.clone(), ops.stop.clone(), ops.acked_rolls.clone());
        let (backing, pass) = (f.backing.clone(), f.pass.clone());
        let t = std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (sub, name) = if n % 3 == 2 {
                    ("create", format!("c{iter}x{n}"))
                } else {
                    ("roll", "k1".into())
                };
                n += 1;
                let spawned = Command::new(EZFS)
                    .args(["key", sub, &name, "--backing"])
                    .arg(&backing)
                    .arg("--passphrase-file")
                    .arg(&pass)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn ezfs key");
                *child.lock() = Some(spawned);
                let status = loop {
                    let mut slot = child.lock();
                    let Some(c) = slot.as_mut() else { break None };
                    if let Some(s) = c.try_wait().expect("try_wait") {
                        slot.take();
                        break Some(s);
                    }
                    drop(slot);
                    std::thread::sleep(Duration::from_millis(5));
                };
                if sub == "roll" && status.is_some_and(|s| s.success()) {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        (ops, t)
    }

    /// Stops the loop, `kill -9`ing the command that is running now.
    fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut c) = self.child.lock().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

/// fsck's damage report: path -> damaged block ranges (empty: the header or size).
fn fsck_damage(f: &Fixture) -> BTreeMap<String, Vec<(u64, u64)>> {
    let o = f.run(&[
        "fsck",
        "--json",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("fsck --json: {e}\n{}\n{}", stdout_of(&o), stderr_of(&o)));
    assert_eq!(
        rep["zone_problems"].as_array().map(Vec::len),
        Some(0),
        "fsck zone problems: {rep}"
    );
    let mut out = BTreeMap::new();
    for d in rep["damaged"].as_array().unwrap() {
        let blocks = d["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()));
        out.insert(d["path"].as_str().unwrap().to_owned(), blocks.collect::<Vec<_>>());
        eprintln!("crash: fsck: {d}");
    }
    assert_eq!(
        o.status.code(),
        Some(if out.is_empty() { 0 } else { 1 }),
        "fsck exit status"
    );
    out
}

fn k1_version(f: &Fixture) -> u64 {
    let keys = f.key_list();
    let k1 = keys.iter().find(|k| k["name"] == "k1").expect("key k1 listed");
    k1["current_version"].as_u64().unwrap()
}

#[test]
fn kill_9_at_random_points_loses_nothing_fsynced() {
    let iters = env_u64("EZFS_CRASH_ITERS").unwrap_or(20);
    let seed = env_u64("EZFS_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            % 1_000_000
    });
    eprintln!("crash: seed {seed} ({iters} kill points); reproduce with EZFS_CRASH_SEED={seed}");
    let f = Fixture::new();
    {
        let _m = f.mount();
        f.zone("z", "k1");
        std::fs::create_dir(f.m("p")).unwrap();
    }
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let acked_rolls = Arc::new(AtomicU32::new(0));
    let (mut total_ops, mut torn) = (0u64, 0u64);
    for iter in 0..iters {
        let m = f.mount();
        let pid = m.pid().expect("daemon pid");
        let flight = Arc::new(Mutex::new(InFlight::default()));
        let (keys, key_thread) = KeyOps::start(&f, iter, acked_rolls.clone());
        let writer_seed = rng.next_u64();
        let (mnt, fl, start_model) = (f.mnt.clone(), flight.clone(), model.clone());
        let writer = std::thread::spawn(move || {
            let mut w = Writer {
                root: &mnt,
                rng: Rng::new(writer_seed),
                model: start_model,
                flight: fl,
            };
            let mut ops = 0u64;
            // runs until the kill makes an operation fail
            let err = loop {
                match w.step() {
                    Ok(()) => ops += 1,
                    Err(e) => break e,
                }
            };
            (w.model, ops, err)
        });
        std::thread::sleep(Duration::from_millis(100 + rng.below(600)));
        // SAFETY: kill(2) of the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill -9 {pid}");
        keys.kill();
        key_thread.join().unwrap();
        let (new_model, ops, err) = writer.join().unwrap();
        // a dead daemon's mount answers ENOTCONN (or ECONNABORTED while aborting)
        assert!(
            [libc::ENOTCONN, libc::ECONNABORTED].contains(&errno(&err)),
            "the writer failed with {err} before or other than by the kill"
        );
        assert!(
            wait_until(Duration::from_secs(60), || !process_alive(pid)),
            "daemon survived kill -9"
        );
        // detach the dead mount (the guard would too; this keeps the order explicit)
        ok(
            &f.sh("fusermount3", &[std::path::Path::new("-uz"), &f.mnt]),
            "fusermount3 -uz",
        );
        drop(m);
        model = new_model;
        total_ops += ops;
        let flight = flight.lock().clone();
        eprintln!(
            "crash: kill point {iter}: {ops} operations done, in flight: {:?}",
            flight.paths
        );

        // offline: damage only where the operation in flight wrote, never in a header
        for (path, ranges) in fsck_damage(&f) {
            let allowed = flight.paths.get(&path).copied().flatten();
            let (lo, hi) =
                allowed.unwrap_or_else(|| panic!("fsck: {path} is damaged but was not being written"));
            assert!(
                !ranges.is_empty(),
                "fsck: {path}: header or size damaged (torn header)"
            );
            for (a, b) in ranges {
                assert!(
                    lo <= a && b <= hi,
                    "fsck: {path} blocks {a}-{b} damaged, outside {lo}-{hi}"
                );
                torn += b - a + 1;
            }
        }

        // the keystore unlocks (the mount) and keeps every acknowledged roll
        let _m = f.mount();
        drop_caches();
        let v = k1_version(&f);
        assert!(
            v > u64::from(acked_rolls.load(Ordering::SeqCst)),
            "k1 is at version {v} but {} rolls were acknowledged",
            acked_rolls.load(Ordering::SeqCst)
        );
        acked_rolls.store(v as u32 - 1, Ordering::SeqCst);

        // every file not in flight reads back exactly; files in flight read back whole
        // or are removed (a torn block is allowed there), and become the model
        for dir in DIRS {
            let mut seen = BTreeSet::new();
            for e in std::fs::read_dir(f.m(dir)).unwrap() {
                let name = format!("{dir}/{}", e.unwrap().file_name().to_string_lossy());
                if flight.paths.contains_key(&name) {
                    continue;
                }
                assert!(
                    model.files.contains_key(&name),
                    "{name} exists but was never fsynced there"
                );
                seen.insert(name);
            }
            for (name, want) in model
                .files
                .iter()
                .filter(|(n, _)| n.starts_with(&format!("{dir}/")))
            {
                if flight.paths.contains_key(name) {
                    continue;
                }
                assert!(seen.contains(name), "{name} was fsynced but is gone");
                let got = std::fs::read(f.m(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
                assert_same(&got, want, name);
            }
        }
        for name in flight.paths.keys() {
            match std::fs::read(f.m(name)) {
                Ok(data) => {
                    model.files.insert(name.clone(), data);
                }
                Err(e) if errno(&e) == libc::ENOENT => {
                    model.files.remove(name);
                }
                Err(e) => {
                    assert_eq!(errno(&e), libc::EIO, "read {name}: {e}");
                    std::fs::remove_file(f.m(name)).unwrap();
                    model.files.remove(name);
                }
            }
        }
    }
    eprintln!(
        "crash: {iters} kill points survived, {total_ops} fsynced operations, {torn} torn block(s) in flight, k1 rolled to version {}",
        acked_rolls.load(Ordering::SeqCst) + 1
    );
    assert!(
        total_ops > iters,
        "the writer hardly ran ({total_ops} operations)"
    );
}
