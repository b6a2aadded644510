//! The key lifecycle of issue 6 through real mounts: key roll and per-version usage
//! counts, `zone reencrypt` (re-wrap and `--data`), its crash safety under `kill -9`,
//! renames during a job, `key prune`, and key users (`key grant|revoke|acl`) checked
//! by processes running as other uids.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers.

fn mp(f: &Fixture, rel: &str) -> String {
    f.m(rel).to_str().unwrap().to_owned()
}

/// `ezfs key ARGS… --backing B --passphrase-file PW`.
fn keyc(f: &Fixture, args: &[&str]) -> Output {
    let mut a: Vec<&str> = vec!["key"];
    a.extend_from_slice(args);
    a.extend_from_slice(&[
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    f.run(&a)
}

/// `ezfs key list --json`, parsed.
fn key_list(f: &Fixture) -> Vec<Value> {
    f.key_list()
}

fn key_entry(f: &Fixture, name: &str) -> Value {
    key_list(f)
        .into_iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("key {name} not in key list"))
}

/// version -> files, from `key list --json`.
fn key_files(f: &Fixture, name: &str) -> BTreeMap<u64, u64> {
    key_entry(f, name)["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["files"].as_u64().unwrap()))
        .collect()
}

/// zone path ("/z") -> version -> files, from `key list --json`.
fn key_zones(f: &Fixture, name: &str) -> BTreeMap<String, BTreeMap<u64, u64>> {
    key_entry(f, name)["zones"]
        .as_array()
        .expect("zones")
        .iter()
        .map(|z| {
            let per = z["files_by_version"]
                .as_object()
                .expect("files_by_version")
                .iter()
                .map(|(k, v)| (k.parse::<u64>().expect("version key"), v.as_u64().unwrap()))
                .collect();
            (z["path"].as_str().unwrap().to_owned(), per)
        })
        .collect()
}

/// A "files_by_version" JSON object as a map.
fn by_version(v: &Value) -> BTreeMap<String, u64> {
    v["files_by_version"]
        .as_object()
        .unwrap_or_else(|| panic!("no files_by_version in {v}"))
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// `zone info` of a zone root: "key@version" -> files.
fn zone_counts(f: &Fixture, rel: &str) -> BTreeMap<String, u64> {
    by_version(&f.zone_info(rel))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileInfo {
    key: String,
    version: u64,
    file_id: String,
    edek: String,
}

fn finfo(f: &Fixture, rel: &str) -> FileInfo {
    let v = f.zone_info(rel);
    FileInfo {
        key: v["key"].as_str().expect("key").to_owned(),
        version: v["key_version"].as_u64().expect("key_version"),
        file_id: v["file_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{rel}: no file_id in {v}"))
            .to_owned(),
        edek: v["edek"]
            .as_str()
            .unwrap_or_else(|| panic!("{rel}: no edek in {v}"))
            .to_owned(),
    }
}

fn reencrypt_args(dir: &str, data: bool) -> Vec<&str> {
    let mut a = vec!["zone", "reencrypt", "--json"];
    if data {
        a.push("--data");
    }
    a.push(dir);
    a
}

/// `ezfs zone reencrypt [--data] --json M/rel`: the output and the final job status.
fn reencrypt(f: &Fixture, rel: &str, data: bool) -> (Output, Value) {
    let dir = mp(f, rel);
    let o = f.run(&reencrypt_args(&dir, data));
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "zone reencrypt --json printed no JSON ({e}); exit {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            stdout_of(&o),
            stderr_of(&o)
        )
    });
    (o, v)
}

/// `ezfs zone reencrypt --status M/rel --json`: the zone's record.
fn status(f: &Fixture, rel: &str) -> Value {
    let o = f.run(&["zone", "reencrypt", "--status", "--json", &mp(f, rel)]);
    ok(&o, "zone reencrypt --status");
    let v: Vec<Value> = serde_json::from_slice(&o.stdout).expect("--status --json is a JSON array");
    assert_eq!(v.len(), 1, "--status of one zone: {v:?}");
    v.into_iter().next().unwrap()
}

/// A finished job with no failures, bringing files to `key@version`.
#[track_caller]
fn assert_job_clean(job: &Value, key: &str, version: u64, what: &str) {
    assert_eq!(job["state"], "completed", "{what}: {job:#}");
    assert_eq!(job["key"], key, "{what}: {job:#}");
    assert_eq!(job["target_version"], version, "{what}: {job:#}");
    assert_eq!(job["files_failed"], 0, "{what}: {job:#}");
    assert_eq!(
        job["failures"].as_array().map(Vec::len),
        Some(0),
        "{what}: {job:#}"
    );
}

fn n(job: &Value, field: &str) -> u64 {
    job[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {job:#}"))
}

/// Every file of a job counted once: done + current + failed == total (for jobs with
/// no renames or deletions), and no failure listed twice.
#[track_caller]
fn assert_job_counts_consistent(job: &Value, what: &str) {
    let seen = n(job, "files_done") + n(job, "files_current") + n(job, "files_failed");
    let failures: Vec<&str> = job["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = failures.iter().copied().collect();
    assert!(
        seen == n(job, "files_total") && unique.len() == failures.len(),
        "{what}: job counts are inconsistent: done {} + current {} + failed {} = {seen} for {} files; \
         failures ({} listed, {} distinct): {failures:#?}",
        n(job, "files_done"),
        n(job, "files_current"),
        n(job, "files_failed"),
        n(job, "files_total"),
        failures.len(),
        unique.len(),
    );
}

/// Roll `name` and check the version the command reports.
#[track_caller]
fn roll(f: &Fixture, name: &str, expect: u64) {
    let o = f.key("roll", name);
    ok(&o, &format!("key roll {name}"));
    assert!(
        stdout_of(&o).contains(&format!("{name}@{expect}")),
        "key roll {name}: expected version {expect}: {}",
        stdout_of(&o)
    );
}

/// Reads every `(rel, content)` through the mount.
#[track_caller]
fn verify_all(f: &Fixture, files: &[(String, Vec<u8>)], what: &str) {
    for (rel, want) in files {
        let got = fs::read(f.m(rel)).unwrap_or_else(|e| panic!("{what}: read {rel}: {e}"));
        assert_same(&got, want, &format!("{what}: {rel}"));
    }
}

/// Backing files whose name starts with the re-encryption temporary prefix.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name() == ".ezfs" {
            continue;
        }
        if e.file_name().to_string_lossy().starts_with(".ezfs-rekey.") {
            out.push(p.clone());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(temp_files(&p));
        }
    }
    out
}

/// `ezfs fsck B --json` exits 0 and reports no damage.
#[track_caller]
fn fsck_clean(f: &Fixture, what: &str) {
    let o = f.run(&[
        "fsck",
        "--json",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, &format!("{what}: fsck"));
    let v: Value = serde_json::from_slice(&o.stdout).expect("fsck --json");
    assert_eq!(
        v["damaged"].as_array().map(Vec::len),
        Some(0),
        "{what}: fsck: {v:#}"
    );
    assert_eq!(
        v["zone_problems"].as_array().map(Vec::len),
        Some(0),
        "{what}: fsck: {v:#}"
    );
}

/// A command running in the background (output in files, never pipes), killed if it
/// is dropped unwaited.
struct Bg {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    desc: String,
}

fn spawn_bg(f: &Fixture, args: &[&str]) -> Bg {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let k = SEQ.fetch_add(1, Ordering::Relaxed);
    let out = f.scratch().join(format!("bg{k}.out"));
    let err = f.scratch().join(format!("bg{k}.err"));
    let mut cmd = Command::new(EZFS);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .env_remove("EZFS_PASSPHRASE_FILE");
    let desc = format!("{cmd:?}");
    Bg {
        child: Some(cmd.spawn().expect("spawn ezfs")),
        out,
        err,
        desc,
    }
}

impl Bg {
    fn wait(self) -> Output {
        let desc = self.desc.clone();
        self.wait_for(Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("{desc} did not finish within 60 s"))
    }

    /// The output, or the still running command back if it does not finish in time.
    fn wait_for(mut self, limit: Duration) -> Result<Output, Bg> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                return Err(self);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.child = None;
        Ok(Output {
            status,
            stdout: fs::read(&self.out).unwrap_or_default(),
            stderr: fs::read(&self.err).unwrap_or_default(),
        })
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The FUSE connection number (its directory in fusectl) of the mount at `mnt`: the
/// minor number of the mount's device.
fn fuse_conn(mnt: &Path) -> u64 {
    let dev = fs::metadata(mnt).expect("stat mountpoint").dev();
    (dev & 0xff) | ((dev >> 12) & 0xfff00)
}

/// Aborts FUSE connection `conn` (a deadlocked daemon would otherwise keep processes,
/// this test's threads included, in uninterruptible sleep forever). fusectl is mounted
/// on a private directory for this when /sys/fs/fuse/connections is not mounted.
fn fuse_abort(f: &Fixture, conn: u64) -> bool {
    let abort = |dir: &Path| fs::write(dir.join(conn.to_string()).join("abort"), "1").is_ok();
    if abort(Path::new("/sys/fs/fuse/connections")) {
        return true;
    }
    let ctl = f.root.join("fusectl");
    let _ = fs::create_dir(&ctl);
    let mounted = run_cmd(
        Command::new("mount").args(["-t", "fusectl", "none"]).arg(&ctl),
        &f.scratch(),
    )
    .status
    .success();
    let done = mounted && abort(&ctl);
    if mounted {
        let _ = run_cmd(Command::new("umount").arg(&ctl), &f.scratch());
    }
    done
}

/// Each thread of process `pid`: name, state and what it waits in (for a hang report).
fn thread_states(pid: i32) -> String {
    let mut s = String::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = t.path();
        let comm = fs::read_to_string(p.join("comm")).unwrap_or_default();
        let stat = fs::read_to_string(p.join("stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|x| x.split_whitespace().next());
        let wchan = fs::read_to_string(p.join("wchan")).unwrap_or_default();
        let stack = fs::read_to_string(p.join("stack")).unwrap_or_default();
        s += &format!(
            "  {} {} state {} wchan {wchan}\n{stack}",
            t.file_name().to_string_lossy(),
            comm.trim(),
            state.unwrap_or("?")
        );
    }
    s
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

// ---------------------------------------------------------------------------
// 1. key roll and per-version counts.

#[test]
fn roll_new_files_use_new_version_and_counts_are_exact() {
    let f = Fixture::new();
    let m = f.mount();
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("a", "k1");
    f.zone("b", "k1");
    f.zone("a/inner", "k2");
    for r in ["a/f1", "a/f2", "a/f3", "b/g1", "a/inner/x1", "a/inner/x2"] {
        fs::write(f.m(r), format!("old {r}")).unwrap();
    }
    for r in ["a/f1", "b/g1", "a/inner/x1"] {
        let i = finfo(&f, r);
        assert_eq!(i.version, 1, "{r} before any roll: {i:?}");
    }

    roll(&f, "k1", 2);
    // new files (also in a subdirectory) get the new version
    fs::create_dir(f.m("a/sub")).unwrap();
    for r in ["a/n1", "a/sub/n2", "b/n3"] {
        fs::write(f.m(r), format!("new {r}")).unwrap();
        let i = finfo(&f, r);
        assert_eq!(
            (i.key.as_str(), i.version),
            ("k1", 2),
            "{r} created after the roll"
        );
    }
    // existing files keep theirs, even when written to
    {
        let fh = OpenOptions::new().write(true).open(f.m("a/f1")).unwrap();
        fh.write_all_at(b"appended after the roll", 4096 * 3).unwrap();
    }
    for r in ["a/f1", "a/f2", "b/g1"] {
        assert_eq!(finfo(&f, r).version, 1, "{r} was created before the roll");
    }
    // the nested zone's key was not rolled
    fs::write(f.m("a/inner/x3"), b"new inner").unwrap();
    let i = finfo(&f, "a/inner/x3");
    assert_eq!((i.key.as_str(), i.version), ("k2", 1), "a/inner/x3");

    let check = |when: &str| {
        // key list: files per version, zones per version
        assert_eq!(
            key_files(&f, "k1"),
            BTreeMap::from([(1, 4), (2, 3)]),
            "{when}: key list k1 versions"
        );
        assert_eq!(key_entry(&f, "k1")["current_version"], 2, "{when}");
        assert_eq!(
            key_zones(&f, "k1"),
            BTreeMap::from([
                ("/a".to_string(), BTreeMap::from([(1, 3), (2, 2)])),
                ("/b".to_string(), BTreeMap::from([(1, 1), (2, 1)])),
            ]),
            "{when}: key list k1 zones"
        );
        assert_eq!(key_files(&f, "k2"), BTreeMap::from([(1, 3)]), "{when}: k2");
        assert_eq!(
            key_zones(&f, "k2"),
            BTreeMap::from([("/a/inner".to_string(), BTreeMap::from([(1, 3)]))]),
            "{when}: key list k2 zones"
        );
        // zone info on the roots
        let za = f.zone_info("a");
        assert_eq!(za["key_version"], 2, "{when}: zone info a: {za:#}");
        assert_eq!(
            by_version(&za),
            counts(&[("k1@1", 3), ("k1@2", 2)]),
            "{when}: zone info a"
        );
        assert_eq!(
            zone_counts(&f, "b"),
            counts(&[("k1@1", 1), ("k1@2", 1)]),
            "{when}: b"
        );
        assert_eq!(
            zone_counts(&f, "a/inner"),
            counts(&[("k2@1", 3)]),
            "{when}: a/inner"
        );
        // zone list
        let list: BTreeMap<String, (u64, BTreeMap<String, u64>, u64)> = f
            .zone_list()
            .iter()
            .map(|z| {
                (
                    z["path"].as_str().unwrap().to_owned(),
                    (
                        z["files"].as_u64().unwrap(),
                        by_version(z),
                        z["key_version"].as_u64().unwrap(),
                    ),
                )
            })
            .collect();
        assert_eq!(
            list,
            BTreeMap::from([
                (mp(&f, "a"), (5, counts(&[("k1@1", 3), ("k1@2", 2)]), 2)),
                (mp(&f, "b"), (2, counts(&[("k1@1", 1), ("k1@2", 1)]), 2)),
                (mp(&f, "a/inner"), (3, counts(&[("k2@1", 3)]), 1)),
            ]),
            "{when}: zone list"
        );
    };
    check("after the roll");

    // a deleted file leaves the counts
    fs::remove_file(f.m("a/f2")).unwrap();
    fs::write(f.m("a/f2"), b"recreated").unwrap();
    assert_eq!(finfo(&f, "a/f2").version, 2, "a/f2 recreated after the roll");
    assert_eq!(
        zone_counts(&f, "a"),
        counts(&[("k1@1", 2), ("k1@2", 3)]),
        "after recreating a/f2"
    );
    assert_eq!(key_files(&f, "k1"), BTreeMap::from([(1, 3), (2, 4)]));

    m.unmount();
    let _m = f.mount();
    assert_eq!(
        zone_counts(&f, "a"),
        counts(&[("k1@1", 2), ("k1@2", 3)]),
        "after remount"
    );
    assert_eq!(
        key_files(&f, "k1"),
        BTreeMap::from([(1, 3), (2, 4)]),
        "after remount"
    );
    let mut want = b"old a/f1".to_vec();
    want.resize(4096 * 3, 0);
    want.extend_from_slice(b"appended after the roll");
    assert_same(&fs::read(f.m("a/f1")).unwrap(), &want, "a/f1 after remount");
    assert_eq!(fs::read(f.m("a/sub/n2")).unwrap(), b"new a/sub/n2");
}

// ---------------------------------------------------------------------------
// 2. zone reencrypt: re-wrap only.

#[test]
fn reencrypt_rewraps_edeks_and_leaves_blocks_alone() {
    let f = Fixture::new();
    let m = f.mount();
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("z", "k1");
    fs::create_dir(f.m("z/sub")).unwrap();
    f.zone("z/inner", "k2");
    let mut rng = Rng::new(2);
    let files: Vec<(String, Vec<u8>)> = vec![
        ("z/a".into(), b"ten bytes!".to_vec()),
        ("z/b".into(), rng.bytes(3 * 4096 + 17)),
        ("z/sub/c".into(), rng.bytes(600 * 1024 + 3)), // crosses a metadata group
        ("z/e".into(), Vec::new()),
        ("z/inner/x".into(), rng.bytes(5000)),
        ("z/inner/y".into(), b"inner".to_vec()),
    ];
    for (r, c) in &files {
        fs::write(f.m(r), c).unwrap();
    }
    let outer = ["z/a", "z/b", "z/sub/c", "z/e"];
    let inner = ["z/inner/x", "z/inner/y"];
    let before: BTreeMap<&str, (FileInfo, Vec<u8>)> = files
        .iter()
        .map(|(r, _)| (r.as_str(), (finfo(&f, r), f.raw(r))))
        .collect();
    for r in outer {
        assert_eq!(before[r].0.version, 1);
    }

    roll(&f, "k1", 2);
    // a descriptor open across the job, written to afterwards
    let held = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.m("z/b"))
        .unwrap();

    let (o, job) = reencrypt(&f, "z", false);
    ok(&o, "zone reencrypt z");
    assert_job_clean(&job, "k1", 2, "reencrypt z");
    assert_eq!(job["data"], false);
    assert_eq!(
        n(&job, "files_total"),
        4,
        "nested zone files are not the job's: {job:#}"
    );
    assert_eq!(n(&job, "files_done") + n(&job, "files_current"), 4, "{job:#}");
    assert!(n(&job, "files_done") >= 3, "{job:#}");

    let after: BTreeMap<&str, FileInfo> = outer.iter().map(|r| (*r, finfo(&f, r))).collect();
    for r in outer {
        let (b, a) = (&before[r].0, &after[r]);
        assert_eq!((a.key.as_str(), a.version), ("k1", 2), "{r} after reencrypt");
        assert_eq!(a.file_id, b.file_id, "{r}: re-wrap changed the file id");
        assert_ne!(a.edek, b.edek, "{r}: EDEK unchanged by re-wrap");
        let raw = f.raw(r);
        assert_eq!(raw.len(), before[r].1.len(), "{r}: backing size changed");
        assert!(
            raw[4096..] == before[r].1[4096..],
            "{r}: backing bytes after the header changed (data blocks must be untouched)"
        );
        assert!(raw[..4096] != before[r].1[..4096], "{r}: header unchanged");
    }
    for r in inner {
        assert_eq!(finfo(&f, r), before[r].0, "{r} (nested zone, key k2) was touched");
        assert!(f.raw(r) == before[r].1, "{r}: nested zone backing file changed");
    }
    assert_eq!(zone_counts(&f, "z"), counts(&[("k1@2", 4)]));
    assert_eq!(zone_counts(&f, "z/inner"), counts(&[("k2@1", 2)]));
    assert_eq!(key_files(&f, "k1"), BTreeMap::from([(1, 0), (2, 4)]));
    verify_all(&f, &files, "after re-wrap");

    // the descriptor opened before the job still works, and its writes keep the new EDEK
    let mut b_want = files[1].1.clone();
    assert_same(
        &{
            let mut buf = vec![0u8; b_want.len()];
            held.read_exact_at(&mut buf, 0).unwrap();
            buf
        },
        &b_want,
        "z/b through a descriptor opened before the job",
    );
    held.write_all_at(b"written after the re-wrap", 5000).unwrap();
    b_want[5000..5000 + 25].copy_from_slice(b"written after the re-wrap");
    held.write_all_at(b"and past the end", 20000).unwrap();
    b_want.resize(20000, 0);
    b_want.extend_from_slice(b"and past the end");
    held.sync_all().unwrap();
    drop(held);
    let mut files = files;
    files[1].1 = b_want;

    // status
    let st = status(&f, "z");
    assert_job_clean(&st, "k1", 2, "--status z");
    assert_eq!(st["data"], false);
    assert_eq!(status(&f, "z/inner")["state"], "none");

    // a second run finds nothing to do
    let (o, job2) = reencrypt(&f, "z", false);
    ok(&o, "second reencrypt");
    assert_job_clean(&job2, "k1", 2, "second reencrypt");
    assert_eq!(
        (n(&job2, "files_done"), n(&job2, "files_current")),
        (0, 4),
        "{job2:#}"
    );

    // a remount (cold caches) reads everything with the new EDEKs
    m.unmount();
    drop_caches();
    let _m = f.mount();
    verify_all(&f, &files, "after remount");
    for r in outer {
        assert_eq!(finfo(&f, r), after[r], "{r} after remount");
    }
    assert_eq!(zone_counts(&f, "z"), counts(&[("k1@2", 4)]), "after remount");
    assert_eq!(status(&f, "z")["state"], "completed", "status survives a remount");
    fsck_clean(&f, "after re-wrap");
}

// ---------------------------------------------------------------------------
// 3. zone reencrypt --data.

#[test]
fn reencrypt_data_replaces_deks_and_keeps_everything_else() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let mut rng = Rng::new(3);
    let big = rng.bytes(3 * 1024 * 1024 + 123);
    // sparse: 5 MiB with two written islands
    let mut sparse = vec![0u8; 5 * 1024 * 1024];
    sparse[1024 * 1024..1024 * 1024 + 4096].copy_from_slice(&rng.bytes(4096));
    sparse[4 * 1024 * 1024 + 7..4 * 1024 * 1024 + 107].copy_from_slice(&rng.bytes(100));
    {
        let s = File::create(f.m("z/sparse")).unwrap();
        s.set_len(sparse.len() as u64).unwrap();
        s.write_all_at(&sparse[1024 * 1024..1024 * 1024 + 4096], 1024 * 1024)
            .unwrap();
        s.write_all_at(
            &sparse[4 * 1024 * 1024 + 7..4 * 1024 * 1024 + 107],
            4 * 1024 * 1024 + 7,
        )
        .unwrap();
    }
    fs::write(f.m("z/big"), &big).unwrap();
    fs::write(f.m("z/empty"), b"").unwrap();
    fs::write(f.m("z/moded"), b"mode 0640 and an old mtime").unwrap();
    set_mode(&f.m("z/moded"), 0o640);
    std::os::unix::fs::chown(f.m("z/moded"), Some(60001), Some(60002)).unwrap();
    let mtime = std::time::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    File::options()
        .write(true)
        .open(f.m("z/moded"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::write(f.m("z/xattr"), b"has a user xattr").unwrap();
    set_xattr(&f.m("z/xattr"), "user.note", b"keep me");
    let files: Vec<(String, Vec<u8>)> = vec![
        ("z/sparse".into(), sparse),
        ("z/big".into(), big),
        ("z/empty".into(), Vec::new()),
        ("z/moded".into(), b"mode 0640 and an old mtime".to_vec()),
        ("z/xattr".into(), b"has a user xattr".to_vec()),
    ];
    verify_all(&f, &files, "before");
    let before: BTreeMap<String, (FileInfo, Vec<u8>)> = files
        .iter()
        .map(|(r, _)| (r.clone(), (finfo(&f, r), f.raw(r))))
        .collect();
    let sparse_alloc = fs::metadata(f.b("z/sparse")).unwrap().blocks() * 512;
    let moded_meta = fs::metadata(f.b("z/moded")).unwrap();
    assert_eq!(moded_meta.mtime(), 1_000_000_000, "mtime set through the mount");

    roll(&f, "k1", 2);
    let (o, job) = reencrypt(&f, "z", true);
    ok(&o, "zone reencrypt --data");
    assert_job_clean(&job, "k1", 2, "--data");
    assert_eq!(job["data"], true);
    assert_eq!(n(&job, "files_total"), 5, "{job:#}");
    assert_job_counts_consistent(&job, "--data");

    let check = |when: &str| {
        for (r, _) in &files {
            let (b, braw) = &before[r];
            let a = finfo(&f, r);
            assert_eq!((a.key.as_str(), a.version), ("k1", 2), "{when}: {r}");
            assert_ne!(a.file_id, b.file_id, "{when}: {r}: --data kept the file id");
            assert_ne!(a.edek, b.edek, "{when}: {r}: --data kept the EDEK");
            let raw = f.raw(r);
            assert_eq!(raw.len(), braw.len(), "{when}: {r}: backing size changed");
            if r == "z/big" {
                assert!(
                    raw[4096..] != braw[4096..],
                    "{when}: {r}: blocks not re-encrypted"
                );
            }
        }
        verify_all(&f, &files, when);
        // mode, owner, mtime, xattrs
        for p in [f.b("z/moded"), f.m("z/moded")] {
            let md = fs::metadata(&p).unwrap();
            assert_eq!(md.mode() & 0o7777, 0o640, "{when}: mode of {}", p.display());
            assert_eq!(
                (md.uid(), md.gid()),
                (60001, 60002),
                "{when}: owner of {}",
                p.display()
            );
            assert_eq!(
                (md.mtime(), md.mtime_nsec()),
                (moded_meta.mtime(), moded_meta.mtime_nsec()),
                "{when}: mtime of {}",
                p.display()
            );
        }
        assert_eq!(
            get_xattr(&f.m("z/xattr"), "user.note").as_deref(),
            Some(&b"keep me"[..]),
            "{when}: user.note through the mount"
        );
    };
    check("after --data");
    assert!(temp_files(&f.backing).is_empty(), "{:?}", temp_files(&f.backing));
    assert_eq!(zone_counts(&f, "z"), counts(&[("k1@2", 5)]));

    // a new write lands in the re-encrypted file
    fs::OpenOptions::new()
        .write(true)
        .open(f.m("z/moded"))
        .unwrap()
        .write_all_at(b"MODE", 0)
        .unwrap();
    let mut files = files;
    files[3].1[..4].copy_from_slice(b"MODE");
    assert_eq!(fs::read(f.m("z/moded")).unwrap(), files[3].1);

    m.unmount();
    drop_caches();
    let _m = f.mount();
    verify_all(&f, &files, "after remount");
    for (r, _) in &files {
        assert_eq!(finfo(&f, r).version, 2, "{r} after remount");
    }
    assert_eq!(
        get_xattr(&f.m("z/xattr"), "user.note").as_deref(),
        Some(&b"keep me"[..]),
        "user.note after remount"
    );
    assert_eq!(fs::metadata(f.m("z/moded")).unwrap().mode() & 0o7777, 0o640);
    fsck_clean(&f, "after --data");
    // the holes stay holes (SPEC: sparse files stay sparse)
    let alloc = fs::metadata(f.b("z/sparse")).unwrap().blocks() * 512;
    assert!(
        alloc <= sparse_alloc + 64 * 1024,
        "--data: the sparse file's backing allocation grew from {sparse_alloc} to {alloc} bytes \
         (zero blocks written out instead of left as holes)"
    );
}

#[test]
fn reencrypt_data_with_an_open_file() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    let mut rng = Rng::new(4);
    let mut files: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| (format!("z/f{i:02}"), rng.bytes(1000 + 300 * i)))
        .collect();
    for (r, c) in &files {
        fs::write(f.m(r), c).unwrap();
    }
    let busy = "z/f07";
    let bi = 7;
    let ids: BTreeMap<String, FileInfo> = files.iter().map(|(r, _)| (r.clone(), finfo(&f, r))).collect();

    // open for the whole job: reported busy, left as it was
    roll(&f, "k1", 2);
    let fd = OpenOptions::new().read(true).write(true).open(f.m(busy)).unwrap();
    let (o, job1) = reencrypt(&f, "z", true);
    code(&o, 1, "reencrypt --data with a file held open");
    let err = stderr_of(&o);
    assert!(
        err.contains("f07") && err.contains("busy"),
        "stderr should name the busy file: {err}"
    );
    assert_eq!(job1["state"], "completed", "{job1:#}");
    assert!(
        job1["failures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains("/z/f07") && s.as_str().unwrap().contains("busy")),
        "{job1:#}"
    );
    assert_eq!(finfo(&f, busy), ids[busy], "the busy file was changed");
    for (r, _) in files.iter().filter(|(r, _)| r != busy) {
        let i = finfo(&f, r);
        assert_eq!(i.version, 2, "{r}");
        assert_ne!(i.file_id, ids[r].file_id, "{r} not re-encrypted");
    }
    let mut buf = vec![0u8; files[bi].1.len()];
    fd.read_exact_at(&mut buf, 0).unwrap();
    assert_same(&buf, &files[bi].1, "the open descriptor after the job");
    verify_all(&f, &files, "after the job with a busy file");
    fd.write_all_at(b"written through the held descriptor", 100)
        .unwrap();
    files[bi].1[100..135].copy_from_slice(b"written through the held descriptor");
    drop(fd);

    // once closed, a rerun handles it
    let (o, job2) = reencrypt(&f, "z", true);
    ok(&o, "rerun after close");
    assert_job_clean(&job2, "k1", 2, "rerun after close");
    assert_eq!(n(&job2, "files_done"), 1, "{job2:#}");
    let i = finfo(&f, busy);
    assert_eq!(i.version, 2);
    assert_ne!(i.file_id, ids[busy].file_id);
    drop_caches();
    verify_all(&f, &files, "after the rerun");

    // closed while the job runs: either handled after the close or reported busy,
    // consistently with the exit code
    roll(&f, "k1", 3);
    let held_id = finfo(&f, busy).file_id;
    let fd = File::open(f.m(busy)).unwrap();
    let dir = mp(&f, "z");
    let bg = spawn_bg(&f, &reencrypt_args(&dir, true));
    std::thread::sleep(Duration::from_millis(150));
    let mut buf = vec![0u8; files[bi].1.len()];
    fd.read_exact_at(&mut buf, 0).unwrap();
    assert_same(&buf, &files[bi].1, "descriptor during the job");
    drop(fd);
    let o = bg.wait();
    let i = finfo(&f, busy);
    if o.status.success() {
        assert_eq!(i.version, 3, "job succeeded but {busy} is at {i:?}");
        assert_ne!(i.file_id, held_id);
    } else {
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr_of(&o).contains("busy"), "{}", stderr_of(&o));
        assert_eq!(
            (i.version, i.file_id.as_str()),
            (2, held_id.as_str()),
            "{busy} reported busy"
        );
    }
    verify_all(&f, &files, "after the job with a closing descriptor");
    let (o, job3) = reencrypt(&f, "z", true);
    ok(&o, "final rerun");
    assert_job_clean(&job3, "k1", 3, "final rerun");
    assert_eq!(zone_counts(&f, "z"), counts(&[("k1@3", 60)]));

    // every file is counted once in a job that retried a busy file
    assert_job_counts_consistent(&job1, "job with a busy file");
}

#[test]
fn reencrypt_data_refuses_hard_links() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    fs::write(f.m("z/h1"), b"linked twice").unwrap();
    fs::hard_link(f.m("z/h1"), f.m("z/h2")).unwrap();
    fs::write(f.m("z/o1"), b"other one").unwrap();
    fs::write(f.m("z/o2"), b"other two").unwrap();
    let before = finfo(&f, "z/h1");
    let o1 = finfo(&f, "z/o1");
    let raw = f.raw("z/h1");
    roll(&f, "k1", 2);
    let (o, job) = reencrypt(&f, "z", true);
    code(&o, 1, "--data with a hard-linked file");
    let err = stderr_of(&o);
    assert!(err.contains("hard link"), "stderr: {err}");
    assert!(err.contains("/z/h1") || err.contains("/z/h2"), "stderr: {err}");
    assert!(n(&job, "files_failed") >= 1, "{job:#}");
    assert_job_counts_consistent(&job, "--data with a hard link");
    // left intact: same key, id, bytes and link count
    for r in ["z/h1", "z/h2"] {
        assert_eq!(finfo(&f, r), before, "{r}");
        assert_eq!(fs::read(f.m(r)).unwrap(), b"linked twice", "{r}");
        assert_eq!(fs::metadata(f.m(r)).unwrap().nlink(), 2, "{r} nlink");
        assert_eq!(fs::metadata(f.b(r)).unwrap().nlink(), 2, "{r} backing nlink");
    }
    assert!(f.raw("z/h1") == raw, "backing h1 changed");
    assert_eq!(
        fs::metadata(f.b("z/h1")).unwrap().ino(),
        fs::metadata(f.b("z/h2")).unwrap().ino()
    );
    // still one file
    fs::write(f.m("z/h1"), b"changed via h1").unwrap();
    assert_eq!(fs::read(f.m("z/h2")).unwrap(), b"changed via h1");
    // the others were done
    let i = finfo(&f, "z/o1");
    assert_eq!(i.version, 2);
    assert_ne!(i.file_id, o1.file_id);
    assert_eq!(fs::read(f.m("z/o2")).unwrap(), b"other two");
    // a plain re-wrap handles the linked file
    let (o, job) = reencrypt(&f, "z", false);
    ok(&o, "re-wrap with a hard link");
    assert_job_clean(&job, "k1", 2, "re-wrap with a hard link");
    assert_eq!(finfo(&f, "z/h2").version, 2);
    assert_eq!(fs::read(f.m("z/h2")).unwrap(), b"changed via h1");
    assert!(temp_files(&f.backing).is_empty());
}

// ---------------------------------------------------------------------------
// 4. crash safety.

#[test]
fn reencrypt_survives_kill_9_at_random_points() {
    let iters = env_u64("EZFS_LIFECYCLE_KILLS", 15);
    let seed = env_u64("EZFS_LIFECYCLE_SEED", 0x5eed);
    eprintln!("crash test: {iters} kill points, seed {seed} (EZFS_LIFECYCLE_KILLS / EZFS_LIFECYCLE_SEED)");
    let f = Fixture::new();
    let mut m = f.mount();
    f.zone("z", "k1");
    fs::create_dir(f.m("z/sub")).unwrap();
    let mut rng = Rng::new(seed);
    let nfiles = 300;
    let files: Vec<(String, Vec<u8>)> = (0..nfiles)
        .map(|i| {
            let rel = if i % 3 == 0 {
                format!("z/sub/f{i:03}")
            } else {
                format!("z/f{i:03}")
            };
            let len = match i {
                7 => 300 * 1024,
                _ if i % 10 == 0 => 0,
                _ if i % 10 == 1 => 4096 * 3 + rng.below(4096) as usize,
                _ => 1 + rng.below(6000) as usize,
            };
            (rel, rng.bytes(len))
        })
        .collect();
    for (r, c) in &files {
        fs::write(f.m(r), c).unwrap();
    }
    let dir = mp(&f, "z");
    let all_at = |v: u64| counts(&[(&format!("k1@{v}"), nfiles as u64)]);

    // calibration: how long an uninterrupted job of each kind takes here
    let mut version = 1;
    let mut elapsed = [0u64; 2];
    for data in [false, true] {
        version += 1;
        roll(&f, "k1", version);
        let (o, job) = reencrypt(&f, "z", data);
        ok(&o, "calibration job");
        assert_job_clean(&job, "k1", version, "calibration job");
        elapsed[data as usize] = n(&job, "elapsed_ms");
    }
    assert_eq!(zone_counts(&f, "z"), all_at(version));
    eprintln!("crash test: uninterrupted jobs took {elapsed:?} ms (re-wrap, --data)");

    let mut outcomes = BTreeMap::<String, u32>::new();
    for it in 0..iters {
        let data = it % 2 == 1;
        let what = format!("kill point {it} ({})", if data { "--data" } else { "re-wrap" });
        version += 1;
        roll(&f, "k1", version);
        let pid = m.pid().expect("daemon pid");
        let delay = rng.below(elapsed[data as usize] * 5 / 4 + 20);
        let bg = spawn_bg(&f, &reencrypt_args(&dir, data));
        std::thread::sleep(Duration::from_millis(delay));
        // SAFETY: kill(2) of the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill daemon {pid}");
        assert!(
            wait_until(Duration::from_secs(60), || !process_alive(pid)),
            "{what}: daemon {pid} survived SIGKILL"
        );
        let cli = bg.wait();
        ok(
            &f.sh("fusermount3", &[Path::new("-u"), Path::new("-z"), &f.mnt]),
            "fusermount3 -u -z of the dead mount",
        );
        drop(m);
        assert!(!is_mounted(&f.mnt), "{what}: dead mount still there");
        m = f.mount();

        // every file reads back exactly
        verify_all(&f, &files, &format!("{what}, after remount"));
        let st = status(&f, "z");
        let state = st["state"].as_str().unwrap().to_owned();
        let target = n(&st, "target_version");
        if target == version {
            assert!(
                state == "interrupted" || state == "completed",
                "{what}: state {state}: {st:#}"
            );
        } else {
            // killed before the daemon took the request: the previous job's record
            assert_eq!(
                (target, state.as_str()),
                (version - 1, "completed"),
                "{what}: {st:#}"
            );
        }
        *outcomes
            .entry(format!(
                "{state}{}",
                if target == version { "" } else { " (earlier job)" }
            ))
            .or_default() += 1;
        if cli.status.success() {
            assert_eq!(
                (target, state.as_str()),
                (version, "completed"),
                "{what}: CLI exit 0"
            );
        }
        // each file has its old or its new EDEK
        let c = zone_counts(&f, "z");
        let allowed = [format!("k1@{}", version - 1), format!("k1@{version}")];
        assert!(
            c.keys().all(|k| allowed.contains(k)) && c.values().sum::<u64>() >= nfiles as u64,
            "{what}: files by version {c:?}"
        );
        if state == "completed" && target == version {
            assert_eq!(c, all_at(version), "{what}: completed job");
        }

        // a rerun finishes the job
        let (o, job) = reencrypt(&f, "z", data);
        ok(&o, &format!("{what}: rerun"));
        assert_job_clean(&job, "k1", version, &format!("{what}: rerun"));
        assert_eq!(zone_counts(&f, "z"), all_at(version), "{what}: after the rerun");
        let left = temp_files(&f.backing);
        assert!(
            left.is_empty(),
            "{what}: temporary files left after the rerun: {left:?}"
        );
        if data {
            verify_all(&f, &files, &format!("{what}, after the rerun"));
        }
        fsck_clean(&f, &what);
    }
    eprintln!("crash test: states seen after the kills: {outcomes:?}");
    m.unmount();
    let _m = f.mount();
    verify_all(&f, &files, "final remount");
}

/// A temporary file left by a killed `--data` job is invisible in the mount, is not
/// counted as a zone file, and is removed by the next run.
#[test]
fn leftover_rekey_temp_file_is_hidden_and_removed() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    fs::create_dir(f.m("z/d")).unwrap();
    for r in ["z/a", "z/b", "z/d/c"] {
        fs::write(f.m(r), format!("content of {r}")).unwrap();
    }
    roll(&f, "k1", 2);
    // what a kill between the copy and the swap leaves: a complete copy under the temp name
    let temps = [
        "z/.ezfs-rekey.00112233445566778899aabbccddeeff",
        "z/d/.ezfs-rekey.ffeeddccbbaa99887766554433221100",
    ];
    fs::copy(f.b("z/a"), f.b(temps[0])).unwrap();
    fs::copy(f.b("z/d/c"), f.b(temps[1])).unwrap();
    drop_caches();
    let names: BTreeSet<String> = fs::read_dir(f.m("z"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["a".into(), "b".into(), "d".into()]),
        "ls z"
    );
    // observed now, asserted at the end (after the cleanup checks)
    let zone_files = f.zone_list()[0]["files"].as_u64().unwrap();
    let zone_by_version = zone_counts(&f, "z");
    let key_by_version = key_files(&f, "k1");

    let (o, job) = reencrypt(&f, "z", true);
    ok(&o, "reencrypt --data");
    assert_job_clean(&job, "k1", 2, "reencrypt --data");
    for t in temps {
        assert!(!f.b(t).exists(), "{t} survived the next run");
    }
    assert_eq!(zone_counts(&f, "z"), counts(&[("k1@2", 3)]));
    for r in ["z/a", "z/b", "z/d/c"] {
        assert_eq!(fs::read(f.m(r)).unwrap(), format!("content of {r}").as_bytes());
    }
    fsck_clean(&f, "after the rerun");

    assert_eq!(
        (zone_files, zone_by_version, key_by_version),
        (3, counts(&[("k1@1", 3)]), BTreeMap::from([(1, 3), (2, 0)])),
        "zone list / zone info / key list count a leftover .ezfs-rekey.* temporary file \
         (invisible in the mount) as a zone file"
    );
}

// ---------------------------------------------------------------------------
// 5. renames during a job.

/// Renames random files of `zone` (indices into `names`) until `stop`; returns errors.
fn rename_loop(
    mnt: PathBuf,
    zone: &'static str,
    names: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    seed: u64,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut errors = Vec::new();
        let mut k = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut names = names.lock().unwrap();
            let i = rng.below(names.len() as u64) as usize;
            let new = match k % 3 {
                0 => format!("{zone}/r{i}_{k}"),
                1 => format!("{zone}/d{}/r{i}_{k}", k % 4),
                _ => format!("{zone}/d{}/deep/r{i}_{k}", k % 4),
            };
            match fs::rename(mnt.join(&names[i]), mnt.join(&new)) {
                Ok(()) => names[i] = new,
                Err(e) => errors.push(format!("rename {} -> {new}: {e}", names[i])),
            }
            k += 1;
            count.fetch_add(1, Ordering::Relaxed);
        }
        errors
    })
}

fn renames_during(f: &Fixture, zone: &'static str, nfiles: usize, data: bool, version: u64) {
    let what = format!(
        "{zone} ({} files, {})",
        nfiles,
        if data { "--data" } else { "re-wrap" }
    );
    for d in 0..4 {
        fs::create_dir_all(f.m(&format!("{zone}/d{d}/deep"))).unwrap();
    }
    let content = |i: usize| format!("file {i} of {zone};").repeat(1 + i % 40).into_bytes();
    let mut names = Vec::new();
    for i in 0..nfiles {
        let r = format!("{zone}/f{i}");
        fs::write(f.m(&r), content(i)).unwrap();
        names.push(r);
    }
    roll(f, "k1", version);
    let names = Arc::new(Mutex::new(names));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let t = rename_loop(
        f.mnt.clone(),
        zone,
        names.clone(),
        stop.clone(),
        count.clone(),
        version,
    );
    // the loop is running before the job starts and until it has finished
    assert!(wait_until(Duration::from_secs(120), || count
        .load(Ordering::Relaxed)
        >= 20));
    let c0 = count.load(Ordering::Relaxed);
    let dir = mp(f, zone);
    let conn = fuse_conn(&f.mnt);
    let pid = daemon_pid(&f.mnt).expect("daemon pid");
    // a hang detector, not a performance limit: the job takes seconds
    let o = match spawn_bg(f, &reencrypt_args(&dir, data)).wait_for(Duration::from_secs(180)) {
        Ok(o) => o,
        Err(bg) => {
            let daemon = thread_states(pid);
            let me = thread_states(std::process::id() as i32);
            stop.store(true, Ordering::Relaxed);
            let aborted = fuse_abort(f, conn);
            drop(bg);
            let _ = t.join();
            panic!(
                "{what}: the job did not finish within 45 s while files were renamed: deadlock \
                 (FUSE connection {conn} aborted: {aborted}; {} renames so far)\n\
                 daemon threads:\n{daemon}\ntest threads:\n{me}",
                count.load(Ordering::Relaxed)
            );
        }
    };
    let during = count.load(Ordering::Relaxed) - c0;
    stop.store(true, Ordering::Relaxed);
    let errors = t.join().expect("rename thread");
    eprintln!("{what}: {during} renames during the job");
    assert!(
        errors.is_empty(),
        "{what}: renames failed during the job: {errors:#?}"
    );
    assert!(during > 0, "{what}: no rename overlapped the job");
    let job: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
        panic!(
            "{what}: no JSON; exit {:?} stderr {}",
            o.status.code(),
            stderr_of(&o)
        )
    });
    let names = names.lock().unwrap().clone();
    // every file under its new name reads back
    for (i, r) in names.iter().enumerate() {
        let got = fs::read(f.m(r)).unwrap_or_else(|e| panic!("{what}: read {r}: {e}"));
        assert_same(&got, &content(i), &format!("{what}: {r}"));
    }
    assert!(temp_files(&f.b(zone)).is_empty(), "{what}: temp files left");
    ok(&o, &format!("{what}: reencrypt with renames"));
    assert_job_clean(&job, "k1", version, &what);
    assert_eq!(
        zone_counts(f, zone),
        counts(&[(&format!("k1@{version}"), nfiles as u64)]),
        "{what}: every file at the target version after the job, which reported {job:#}"
    );
}

#[test]
fn renames_keep_working_during_reencrypt() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    renames_during(&f, "z", 2000, false, 2);
    fsck_clean(&f, "after renames");
}

/// Many short jobs over small zones: each ends soon after renames it must not miss, so
/// the moment a job decides it has found every file is raced far more often.
fn short_jobs_with_renames(f: &Fixture) {
    const ZONES: [&str; 10] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];
    let _m = f.mount();
    for (i, z) in ZONES.into_iter().enumerate() {
        f.zone(z, "k1");
        renames_during(f, z, 200, false, 2 + i as u64);
    }
    fsck_clean(f, "after renames");
}

#[test]
fn short_jobs_miss_no_renamed_file() {
    short_jobs_with_renames(&Fixture::new());
}

/// The same on a backing filesystem without file handles: a job then opens files by
/// name only, and a file renamed before the job reaches it must be found again.
#[test]
fn short_jobs_miss_no_renamed_file_without_file_handles() {
    let f = Fixture::bare();
    let _overlay = init_without_file_handles(&f);
    short_jobs_with_renames(&f);
}

/// A job whose zone root, and the directory above it, are renamed over and over while
/// it runs, on a backing without file handles (files are found by path only): the job
/// follows the root, the waiting command follows the job, and every file ends at the
/// new version.
#[test]
fn zone_root_renamed_during_reencrypt_without_file_handles() {
    const FILES: usize = 1500;
    let f = Fixture::bare();
    let _overlay = init_without_file_handles(&f);
    let _m = f.mount();
    fs::create_dir(f.m("p")).unwrap();
    f.zone("p/zr", "k1");
    for d in 0..4 {
        fs::create_dir(f.m(&format!("p/zr/d{d}"))).unwrap();
    }
    for i in 0..FILES {
        fs::write(f.m(&format!("p/zr/d{}/f{i}", i % 4)), format!("file {i}")).unwrap();
    }
    roll(&f, "k1", 2);
    // the root and its parent move in turn: p/zr -> p/zs -> q/zs -> q/zr -> p/zr ...
    let steps = [("p/zr", "p/zs"), ("p", "q"), ("q/zs", "q/zr"), ("q", "p")];
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let mover = {
        let (mnt, stop, moved) = (f.mnt.clone(), stop.clone(), moved.clone());
        std::thread::spawn(move || {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) || k % steps.len() != 0 {
                let (from, to) = steps[k % steps.len()];
                fs::rename(mnt.join(from), mnt.join(to))
                    .unwrap_or_else(|e| panic!("rename {from} -> {to}: {e}"));
                k += 1;
                moved.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // started at p/zr, which is there a quarter of the time: a start that finds it
    // gone (the command's or the daemon's lookup, the daemon's marker check, or the
    // root moving between its open and that check) is refused and tried again
    let started = Instant::now();
    let o = loop {
        let o = spawn_bg(&f, &reencrypt_args(&mp(&f, "p/zr"), false)).wait();
        let err = stderr_of(&o);
        let raced = [
            "No such file",
            "not an encryption zone",
            "renamed while the job started",
        ]
        .iter()
        .any(|e| err.contains(e));
        if o.status.success() || !raced || started.elapsed() > Duration::from_secs(30) {
            break o;
        }
    };
    let during = moved.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    mover.join().expect("renames of the zone root");
    assert!(during > 4, "the zone root was renamed {during} times only");
    ok(&o, "reencrypt while the zone root moves");
    let job: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    eprintln!("{during} renames of the zone root or its parent; job: {job}");
    assert_job_clean(&job, "k1", 2, "zone root renamed during the job");
    assert_eq!(
        zone_counts(&f, "p/zr"),
        counts(&[("k1@2", FILES as u64)]),
        "every file at the new version after a job that reported {job:#}"
    );
    fsck_clean(&f, "after the zone root moved");
}

/// A few files renamed nonstop, each by its own thread, on a backing without file
/// handles, among files that stay put: the job brings them all to the new version,
/// though each moving file is elsewhere by the time any walk's path to it is used.
/// Re-wrapping reaches them through the mount's own inodes, which follow renames;
/// `--data` swaps the new file in at the name the old one has at that moment.
fn files_renamed_nonstop(data: bool) {
    const STILL: usize = 1000;
    const MOVING: usize = 4;
    let what = if data { "--data" } else { "re-wrap" };
    let f = Fixture::bare();
    let _overlay = init_without_file_handles(&f);
    let _m = f.mount();
    f.zone("z", "k1");
    // a walk lists the root's files, then the directory of files that stay: what it
    // found of the moving ones is stale by the time it ends
    fs::create_dir(f.m("z/still")).unwrap();
    for i in 0..STILL {
        fs::write(f.m(&format!("z/still/s{i}")), format!("still {i}")).unwrap();
    }
    for i in 0..MOVING {
        fs::write(f.m(&format!("z/m{i}_0")), format!("moving {i}")).unwrap();
    }
    roll(&f, "k1", 2);
    let stop = Arc::new(AtomicBool::new(false));
    let movers: Vec<_> = (0..MOVING)
        .map(|i| {
            let (mnt, stop) = (f.mnt.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut at = mnt.join(format!("z/m{i}_0"));
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let to = mnt.join(format!("z/m{i}_{k}"));
                    fs::rename(&at, &to).unwrap_or_else(|e| panic!("rename {at:?}: {e}"));
                    at = to;
                }
                (at, k)
            })
        })
        .collect();
    let o = f.run(&reencrypt_args(&mp(&f, "z"), data));
    stop.store(true, Ordering::Relaxed);
    let mut renames = 0;
    for (i, m) in movers.into_iter().enumerate() {
        let (at, k) = m.join().expect("mover");
        renames += k;
        assert_same(
            &fs::read(&at).unwrap(),
            format!("moving {i}").as_bytes(),
            "moved file",
        );
    }
    ok(&o, &format!("{what} while files move nonstop"));
    let job: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    eprintln!("{what}: {renames} renames during the job; job: {job}");
    assert_job_clean(&job, "k1", 2, what);
    if data {
        assert!(temp_files(&f.b("z")).is_empty(), "{what}: temp files left");
    }
    assert_eq!(
        zone_counts(&f, "z"),
        counts(&[("k1@2", (STILL + MOVING) as u64)]),
        "{what}: every file at the new version after a job that reported {job:#}"
    );
    fsck_clean(&f, &format!("{what}: after files moved nonstop"));
}

#[test]
fn files_renamed_nonstop_are_rewrapped_without_file_handles() {
    files_renamed_nonstop(false);
}

#[test]
fn files_renamed_nonstop_are_reencrypted_with_data_without_file_handles() {
    files_renamed_nonstop(true);
}

/// Puts an overlay (which gives no file handles) on the bare fixture's backing dir and
/// initializes it there; the overlay is unmounted when the value is dropped.
fn init_without_file_handles(f: &Fixture) -> MountOver {
    let overlay = MountOver::overlay(&f.backing, &f.scratch().join("layers"));
    f.init();
    assert!(
        !has_file_handle(&f.backing.join(".ezfs")),
        "the overlay gives file handles here: the test would not test what it says"
    );
    overlay
}

/// Whether `name_to_handle_at(2)` gives `path` a handle.
fn has_file_handle(path: &Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // struct file_handle: handle_bytes, handle_type, then up to 128 bytes
    let mut buf = [0u8; 8 + 128];
    buf[..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id = 0;
    // SAFETY: buf holds the header and the 128 bytes it declares.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut mount_id,
            0,
        )
    };
    r == 0
}

#[test]
fn renames_keep_working_during_reencrypt_data() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("zd", "k1");
    renames_during(&f, "zd", 300, true, 2);
    fsck_clean(&f, "after renames");
}

// ---------------------------------------------------------------------------
// 6. key prune.

#[test]
fn prune_refused_while_used_then_drops_old_versions() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("z/f{i}"), format!("file {i}").into_bytes()))
        .collect();
    for (r, c) in &files {
        fs::write(f.m(r), c).unwrap();
    }
    roll(&f, "k1", 2);
    fs::write(f.m("z/new"), b"at version 2").unwrap();
    let mut files = files;
    files.push(("z/new".into(), b"at version 2".to_vec()));

    let o = f.key("prune", "k1");
    code(&o, 1, "prune while k1@1 is used");
    let err = stderr_of(&o);
    assert!(err.contains("k1@1"), "prune should name the version: {err}");
    assert!(err.contains("/z/f"), "prune should name a file using k1@1: {err}");
    assert_eq!(
        key_files(&f, "k1"),
        BTreeMap::from([(1, 5), (2, 1)]),
        "nothing pruned"
    );
    verify_all(&f, &files, "after a refused prune");

    let (o, job) = reencrypt(&f, "z", false);
    ok(&o, "reencrypt");
    assert_job_clean(&job, "k1", 2, "reencrypt");
    let o = f.key("prune", "k1");
    ok(&o, "prune after reencrypt");
    assert!(stdout_of(&o).contains("k1@1"), "{}", stdout_of(&o));
    assert_eq!(
        key_files(&f, "k1"),
        BTreeMap::from([(2, 6)]),
        "only the newest version left"
    );
    assert_eq!(key_entry(&f, "k1")["current_version"], 2);
    drop_caches();
    verify_all(&f, &files, "after prune");
    // nothing left to prune: exit 0
    ok(&f.key("prune", "k1"), "second prune");

    // versions are never reused
    roll(&f, "k1", 3);
    fs::write(f.m("z/v3"), b"at version 3").unwrap();
    files.push(("z/v3".into(), b"at version 3".to_vec()));
    assert_eq!(finfo(&f, "z/v3").version, 3);
    m.unmount();
    drop_caches();
    let _m = f.mount();
    verify_all(&f, &files, "after remount");
    assert_eq!(key_files(&f, "k1"), BTreeMap::from([(2, 6), (3, 1)]));
    fsck_clean(&f, "after prune");
}

// ---------------------------------------------------------------------------
// 7. key users.

/// Runs `prog ARGS` as `uid`/`gid` with no supplementary groups.
fn as_user(f: &Fixture, uid: u32, gid: u32, prog: &str, args: &[&str]) -> Output {
    run_cmd(Command::new(prog).args(args).uid(uid).gid(gid), &f.scratch())
}

fn have_setpriv() -> bool {
    Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `prog ARGS` as `uid`/`gid` with supplementary `groups` (through setpriv).
fn as_user_groups(f: &Fixture, uid: u32, gid: u32, groups: &[u32], prog: &str, args: &[&str]) -> Output {
    let g: Vec<String> = groups.iter().map(u32::to_string).collect();
    let (u, gs) = (uid.to_string(), gid.to_string());
    let mut a = vec!["--reuid", &u, "--regid", &gs];
    let joined = g.join(",");
    a.extend_from_slice(&["--groups", &joined, "--", prog]);
    a.extend_from_slice(args);
    run_cmd(Command::new("setpriv").args(&a), &f.scratch())
}

#[track_caller]
fn denied(o: &Output, what: &str) {
    assert!(
        !o.status.success() && stderr_of(o).contains("Permission denied"),
        "{what}: expected 'Permission denied'; exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout_of(o),
        stderr_of(o)
    );
}

#[test]
fn key_users_decide_who_opens_zone_files() {
    let f = Fixture::new();
    set_mode(&f.root, 0o755); // other uids must reach the mountpoint
    let _m = f.mount_opts(&["--allow-other"]);
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("z", "k1");
    f.zone("z2", "k2");
    fs::create_dir(f.m("p")).unwrap();
    for d in ["z", "z2", "p"] {
        set_mode(&f.m(d), 0o777);
    }
    for (r, c) in [("z/a", "secret a"), ("z2/b", "secret b"), ("p/c", "plain c")] {
        fs::write(f.m(r), c).unwrap();
        set_mode(&f.m(r), 0o666);
    }
    let a = mp(&f, "z/a");
    let b = mp(&f, "z2/b");
    let z = mp(&f, "z");
    let (u1, u2, u3) = (60001, 60002, 60003);
    let (g1, g2, g3) = (60011, 60012, 60013);
    let cat = |uid, gid, p: &str| as_user(&f, uid, gid, "cat", &[p]);
    let write = |uid, gid, p: &str, text: &str| {
        as_user(
            &f,
            uid,
            gid,
            "sh",
            &["-c", &format!("echo '{text}' > \"$1\""), "sh", p],
        )
    };

    // not a key user: zone files cannot be opened, although the mode bits allow it
    denied(&cat(u1, g1, &a), "cat as a non-user");
    denied(&write(u1, g1, &a, "overwrite"), "write as a non-user");
    denied(&write(u1, g1, &format!("{z}/new"), "x"), "create as a non-user");
    denied(
        &as_user(&f, u1, g1, "truncate", &["-s", "0", &a]),
        "truncate as a non-user",
    );
    assert_eq!(fs::read(f.m("z/a")).unwrap(), b"secret a", "root reads");
    assert!(!f.m("z/new").exists(), "a denied create left a file");
    // listing and stat stay allowed, and plain files are not affected
    let o = as_user(&f, u1, g1, "ls", &[&z]);
    ok(&o, "ls of the zone as a non-user");
    assert_eq!(stdout_of(&o).split_whitespace().collect::<Vec<_>>(), ["a"]);
    let o = as_user(&f, u1, g1, "stat", &["-c", "%s", &a]);
    ok(&o, "stat as a non-user");
    assert_eq!(stdout_of(&o).trim(), "8");
    let o = cat(u1, g1, &mp(&f, "p/c"));
    ok(&o, "plain file as a non-user");
    assert_eq!(stdout_of(&o), "plain c");

    // the owner (root created the keys) and root are users
    assert_eq!(key_entry(&f, "k1")["owner"], 0);
    let acl = stdout_of(&{
        let o = f.run(&[
            "key",
            "acl",
            "k1",
            "--backing",
            f.backing.to_str().unwrap(),
            "--passphrase-file",
            f.pass.to_str().unwrap(),
        ]);
        ok(&o, "key acl");
        o
    });
    assert!(acl.contains("owner:") && acl.contains("root"), "{acl}");
    assert!(!acl.contains("60001"), "{acl}");

    // grant a user
    ok(&keyc(&f, &["grant", "k1", "--user", "60001"]), "grant --user");
    let o = cat(u1, g1, &a);
    ok(&o, "cat after grant");
    assert_eq!(stdout_of(&o), "secret a");
    ok(&write(u1, g1, &a, "written by 60001"), "write after grant");
    assert_eq!(fs::read(f.m("z/a")).unwrap(), b"written by 60001\n");
    ok(
        &write(u1, g1, &format!("{z}/new"), "new by 60001"),
        "create after grant",
    );
    assert_eq!(fs::read(f.m("z/new")).unwrap(), b"new by 60001\n");
    set_mode(&f.m("z/new"), 0o666);
    denied(&cat(u2, g2, &a), "another uid is still denied");
    denied(&cat(u1, g1, &b), "a grant on k1 does not open k2's zone");
    let acl = stdout_of(&f.run(&[
        "key",
        "acl",
        "k1",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]));
    assert!(acl.contains("user:") && acl.contains("60001"), "{acl}");

    // revoke it
    ok(&keyc(&f, &["revoke", "k1", "--user", "60001"]), "revoke --user");
    denied(&cat(u1, g1, &a), "cat after revoke");
    denied(
        &cat(u1, g1, &mp(&f, "z/new")),
        "cat of its own new file after revoke",
    );
    let acl = stdout_of(&f.run(&[
        "key",
        "acl",
        "k1",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]));
    assert!(!acl.contains("60001"), "{acl}");

    // grant a group: its primary members may use the key
    ok(&keyc(&f, &["grant", "k1", "--group", "60012"]), "grant --group");
    let o = cat(u3, g2, &a);
    ok(&o, "cat with the granted primary group");
    assert_eq!(stdout_of(&o), "written by 60001\n");
    denied(&cat(u3, g3, &a), "cat with another primary group");
    let acl = stdout_of(&f.run(&[
        "key",
        "acl",
        "k1",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]));
    assert!(acl.contains("group:") && acl.contains("60012"), "{acl}");
    // and supplementary members
    if have_setpriv() {
        let o = as_user_groups(&f, u3, g3, &[60020, g2], "cat", &[&a]);
        ok(&o, "cat with the granted group as a supplementary group");
        assert_eq!(stdout_of(&o), "written by 60001\n");
        denied(
            &as_user_groups(&f, u3, g3, &[60020, 60021], "cat", &[&a]),
            "cat with other supplementary groups",
        );
    } else {
        eprintln!("NOTE: setpriv not installed; supplementary-group grant not tested");
    }
    ok(&keyc(&f, &["revoke", "k1", "--group", "60012"]), "revoke --group");
    denied(&cat(u3, g2, &a), "cat after the group was revoked");
    // root was never refused
    assert_eq!(fs::read(f.m("z/a")).unwrap(), b"written by 60001\n");
    assert_eq!(fs::read(f.m("z2/b")).unwrap(), b"secret b");
}
