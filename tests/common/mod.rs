//! Test harness for integration tests that mount real ezfs filesystems.
//!
//! A [`Fixture`] is a short temporary directory under /tmp holding a backing dir
//! (`b`), a mountpoint (`m`) and a passphrase file (`pw`); `Fixture::new()` runs
//! `ezfs init` and `ezfs key create k1`. [`Fixture::mount`] returns a [`Mount`]
//! guard whose Drop always unmounts (`ezfs umount`, then `fusermount3 -u -z`, then
//! `umount -l`) and waits for the daemon, even when the test panics; the Fixture's
//! own Drop does the same before the temporary directory is removed, so no mount is
//! ever left behind. Every child process runs with a deadline and its output goes to
//! files (the mount daemon inherits stderr, so a pipe would never close).

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const EZFS: &str = env!("CARGO_BIN_EXE_ezfs");
/// Passphrase written by `Fixture::new`.
pub const PASSPHRASE: &str = "correct horse battery staple";
/// Deadline for one command (a hung daemon must not hang the suite).
const CMD_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------
// On-disk layout of an encrypted file (src/format/layout.rs, restated here so the
// tests check the documented format rather than reuse the code under test).

pub const BLOCK: u64 = 4096;
pub const HEADER_LEN: u64 = 4096;
pub const GROUP_BLOCKS: u64 = 128;
pub const ENTRY_LEN: u64 = 28;
pub const MAGIC: &[u8; 8] = b"EZFSENC\0";

pub fn meta_offset(group: u64) -> u64 {
    HEADER_LEN + group * (GROUP_BLOCKS + 1) * BLOCK
}
pub fn data_offset(block: u64) -> u64 {
    meta_offset(block / GROUP_BLOCKS) + BLOCK * (1 + block % GROUP_BLOCKS)
}
pub fn entry_offset(block: u64) -> u64 {
    meta_offset(block / GROUP_BLOCKS) + ENTRY_LEN * (block % GROUP_BLOCKS)
}
/// Backing size of an encrypted file of `size` plaintext bytes.
pub fn backing_size(size: u64) -> u64 {
    if size == 0 {
        return HEADER_LEN;
    }
    let last = size.div_ceil(BLOCK) - 1;
    data_offset(last) + (size - last * BLOCK).min(BLOCK)
}

// ---------------------------------------------------------------------------
// Small utilities.

/// A tiny deterministic PRNG (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// The errno of an I/O error (0 if it has none).
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Asserts that `r` failed with `expected` errno.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, expected: i32, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected errno {expected}, got success {v:?}"),
        Err(e) => assert_eq!(errno(&e), expected, "{what}: expected errno {expected}, got {e}"),
    }
}

/// Index of the first differing byte, for readable assertion messages.
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or(if a.len() != b.len() {
            Some(a.len().min(b.len()))
        } else {
            None
        })
}

#[track_caller]
pub fn assert_same(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    if let Some(i) = first_diff(actual, expected) {
        panic!(
            "{what}: contents differ at byte {i} (actual len {}, expected len {}); actual {:?} expected {:?}",
            actual.len(),
            expected.len(),
            actual.get(i..(i + 16).min(actual.len())),
            expected.get(i..(i + 16).min(expected.len())),
        );
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Drops the kernel's page, dentry and inode caches (so a mount forgets what it saw).
pub fn drop_caches() {
    // SAFETY: sync() has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").expect("write /proc/sys/vm/drop_caches (needs root)");
}

/// Mount points currently in this process's mount namespace.
pub fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split(' ')
                .nth(4)
                .map(|p| PathBuf::from(p.replace("\\040", " ")))
        })
        .collect()
}

pub fn is_mounted(mnt: &Path) -> bool {
    mount_points().iter().any(|p| p == mnt)
}

/// Runs a command with a deadline; stdout and stderr go to files in `scratch`
/// (never pipes: a daemon that inherits them would keep a pipe open forever).
/// Panics if the command cannot be run or does not finish in time.
pub fn run_cmd(cmd: &mut Command, scratch: &Path) -> Output {
    let desc = format!("{cmd:?}");
    try_run_cmd(cmd, scratch, CMD_TIMEOUT)
        .unwrap_or_else(|| panic!("{desc} could not be run or did not finish within {CMD_TIMEOUT:?}"))
}

/// Like [`run_cmd`] but never panics (for cleanup paths): `None` if the command could
/// not be started or was killed at the deadline.
pub fn try_run_cmd(cmd: &mut Command, scratch: &Path, limit: Duration) -> Option<Output> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let out_p = scratch.join(format!("cmd{n}.out"));
    let err_p = scratch.join(format!("cmd{n}.err"));
    // (if the scratch dir is gone, run anyway with the output discarded: cleanup must run)
    let out = File::create(&out_p)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let err = File::create(&err_p)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env_remove("EZFS_PASSPHRASE_FILE");
    let mut child = cmd.spawn().ok()?;
    let status = wait_deadline(&mut child, limit);
    if status.is_none() {
        eprintln!("harness: {cmd:?} did not finish within {limit:?}; killed");
        let _ = child.kill();
        let _ = child.wait();
    }
    let o = status.map(|status| Output {
        status,
        stdout: std::fs::read(&out_p).unwrap_or_default(),
        stderr: std::fs::read(&err_p).unwrap_or_default(),
    });
    let _ = std::fs::remove_file(&out_p);
    let _ = std::fs::remove_file(&err_p);
    o
}

fn wait_deadline(child: &mut std::process::Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
pub fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a command exited 0, showing its output otherwise.
#[track_caller]
pub fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout_of(o),
        stderr_of(o)
    );
}

/// Asserts a command exited with `code`.
#[track_caller]
pub fn code(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: expected exit {code}\nstdout: {}\nstderr: {}",
        stdout_of(o),
        stderr_of(o)
    );
}

/// Pid of the ezfs daemon serving `mnt`, found in /proc by its command line.
pub fn daemon_pid(mnt: &Path) -> Option<i32> {
    let want = mnt.as_os_str().as_encoded_bytes();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_ezfs = args.first().is_some_and(|a| a.ends_with(b"ezfs"));
        if is_ezfs && args.contains(&&b"mount"[..]) && args.contains(&want) {
            // skip zombies and other states of a dead process
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or("");
            if state != "Z" && state != "X" {
                return Some(pid);
            }
        }
    }
    None
}

pub fn process_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("");
    !stat.is_empty() && state != "Z" && state != "X"
}

/// Waits until `cond` holds (true) or the deadline passes (false).
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts `mnt` by every means available and waits for its daemon to exit;
/// a daemon that does not exit after the mount is gone is killed (by its pid).
pub fn force_unmount(mnt: &Path, scratch: &Path) {
    let pid = daemon_pid(mnt);
    let limit = Duration::from_secs(60);
    if is_mounted(mnt) {
        let _ = try_run_cmd(Command::new(EZFS).arg("umount").arg(mnt), scratch, limit);
    }
    if is_mounted(mnt) {
        let _ = try_run_cmd(
            Command::new("fusermount3").arg("-u").arg("-z").arg(mnt),
            scratch,
            limit,
        );
    }
    if is_mounted(mnt) {
        let _ = try_run_cmd(Command::new("umount").arg("-l").arg(mnt), scratch, limit);
    }
    if is_mounted(mnt) {
        eprintln!(
            "harness: WARNING: {} is still mounted after every unmount attempt",
            mnt.display()
        );
    }
    if let Some(pid) = pid {
        if !wait_until(Duration::from_secs(60), || !process_alive(pid)) {
            eprintln!("harness: daemon {pid} did not exit after unmount; killing it");
            // SAFETY: plain kill(2) of a process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

// ---------------------------------------------------------------------------
// Filesystems under the backing dir.

/// A filesystem mounted over a directory for one test, detached on drop (after the
/// fixture's mount is gone or not: a lazy unmount never fails on a busy filesystem).
pub struct MountOver(PathBuf);

impl MountOver {
    /// `mount -t FSTYPE -o OPTIONS SOURCE DIR`.
    pub fn new(fstype: &str, source: &str, options: &str, dir: &Path) -> MountOver {
        let o = Command::new("mount")
            .args(["-t", fstype, "-o", options, source])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "mount -t {fstype} on {}: {}",
            dir.display(),
            stderr_of(&o)
        );
        MountOver(dir.to_owned())
    }

    pub fn tmpfs(dir: &Path, size: &str) -> MountOver {
        MountOver::new("tmpfs", "tmpfs", &format!("size={size}"), dir)
    }

    /// An overlay whose layers are made in `layers`: without `nfs_export` it gives no
    /// file handles, so the daemon must do without them there.
    pub fn overlay(dir: &Path, layers: &Path) -> MountOver {
        let [lower, upper, work] = ["lower", "upper", "work"].map(|l| layers.join(l));
        for d in [&lower, &upper, &work] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        MountOver::new("overlay", "overlay", &options, dir)
    }
}

impl Drop for MountOver {
    fn drop(&mut self) {
        let p = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: umount2 of a path this test mounted.
        unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    }
}

// ---------------------------------------------------------------------------
// The fixture.

/// A temporary ezfs setup: `root/b` (backing), `root/m` (mountpoint), `root/pw`.
pub struct Fixture {
    pub root: PathBuf,
    pub backing: PathBuf,
    pub mnt: PathBuf,
    pub pass: PathBuf,
    mounts: AtomicU32,
    // declared last: removed after Drop has unmounted
    _tmp: tempfile::TempDir,
}

impl Fixture {
    /// Temporary directory with backing dir, mountpoint and passphrase file, nothing run.
    pub fn bare() -> Fixture {
        let tmp = tempfile::Builder::new()
            .prefix("ez")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical tempdir");
        let (backing, mnt, pass) = (root.join("b"), root.join("m"), root.join("pw"));
        std::fs::create_dir(&backing).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
        std::fs::create_dir(root.join("scratch")).unwrap();
        Fixture {
            root,
            backing,
            mnt,
            pass,
            mounts: AtomicU32::new(0),
            _tmp: tmp,
        }
    }

    /// An initialized backing dir with key `k1`.
    pub fn new() -> Fixture {
        let f = Fixture::bare();
        f.init();
        f
    }

    /// `ezfs init` on the backing dir and key `k1` (what [`Fixture::new`] does; after
    /// [`Fixture::bare`], once something is mounted under the backing dir).
    pub fn init(&self) {
        let b = self.backing.to_str().unwrap().to_owned();
        let pw = self.pass.to_str().unwrap().to_owned();
        ok(&self.run(&["init", &b, "--passphrase-file", &pw]), "ezfs init");
        ok(&self.key("create", "k1"), "ezfs key create k1");
    }

    pub fn scratch(&self) -> PathBuf {
        self.root.join("scratch")
    }

    /// Runs `ezfs ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        run_cmd(Command::new(EZFS).args(args), &self.scratch())
    }

    /// Runs `ezfs ARGS` in directory `cwd`.
    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Output {
        run_cmd(Command::new(EZFS).args(args).current_dir(cwd), &self.scratch())
    }

    /// Runs any program (a shell tool such as `mv` or `ln`).
    pub fn sh(&self, prog: &str, args: &[&Path]) -> Output {
        run_cmd(Command::new(prog).args(args), &self.scratch())
    }

    /// `ezfs key SUB NAME --backing B --passphrase-file PW` (create, roll, delete).
    pub fn key(&self, sub: &str, name: &str) -> Output {
        self.run(&[
            "key",
            sub,
            name,
            "--backing",
            self.backing.to_str().unwrap(),
            "--passphrase-file",
            self.pass.to_str().unwrap(),
        ])
    }

    /// `ezfs key list --json` of the backing dir, parsed: one object per key.
    pub fn key_list(&self) -> Vec<serde_json::Value> {
        let o = self.run(&[
            "key",
            "list",
            "--json",
            "--backing",
            self.backing.to_str().unwrap(),
            "--passphrase-file",
            self.pass.to_str().unwrap(),
        ]);
        ok(&o, "key list --json");
        serde_json::from_slice(&o.stdout).expect("key list --json is a JSON array")
    }

    /// Path in the mount.
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Path in the backing dir.
    pub fn b(&self, rel: &str) -> PathBuf {
        self.backing.join(rel)
    }

    /// The raw bytes of a backing file.
    pub fn raw(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.b(rel)).unwrap_or_else(|e| panic!("read backing {rel}: {e}"))
    }

    /// XORs byte `off` of backing file `rel` with `mask`.
    pub fn flip_raw(&self, rel: &str, off: u64, mask: u8) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.b(rel))
            .unwrap();
        let mut b = [0u8; 1];
        assert_eq!(f.read_at(&mut b, off).unwrap(), 1, "{rel} has no byte at {off}");
        b[0] ^= mask;
        f.write_all_at(&b, off).unwrap();
        f.sync_all().unwrap();
    }

    /// Mounts with `extra` arguments; `Ok(guard)` on exit 0, `Err((code, stderr))`
    /// otherwise (if a failed mount left something mounted, it is unmounted here).
    pub fn try_mount(&self, extra: &[&str]) -> Result<Mount, (Option<i32>, String)> {
        self.try_mount_with(extra, &self.pass)
    }

    pub fn try_mount_with(&self, extra: &[&str], pass: &Path) -> Result<Mount, (Option<i32>, String)> {
        self.try_mount_at(&self.mnt, extra, pass)
    }

    /// Mounts with `extra` arguments and environment variables `env` for the daemon.
    pub fn try_mount_env(
        &self,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Mount, (Option<i32>, String)> {
        self.mount_impl(&self.mnt, extra, &self.pass, env)
    }

    /// Mounts the backing dir at `mnt` (any directory) with `extra` arguments and the
    /// passphrase file `pass`.
    pub fn try_mount_at(
        &self,
        mnt: &Path,
        extra: &[&str],
        pass: &Path,
    ) -> Result<Mount, (Option<i32>, String)> {
        self.mount_impl(mnt, extra, pass, &[])
    }

    /// Mounts another backing dir, `backing` (a copy of this fixture's), at this
    /// fixture's mountpoint with `extra` arguments and this fixture's passphrase.
    pub fn try_mount_backing(&self, backing: &Path, extra: &[&str]) -> Result<Mount, (Option<i32>, String)> {
        self.mount_backing_impl(backing, &self.mnt, extra, &self.pass, &[])
    }

    /// Mounts another backing dir, `backing`, at `mnt` with `extra` arguments and this
    /// fixture's passphrase.
    pub fn try_mount_backing_at(
        &self,
        backing: &Path,
        mnt: &Path,
        extra: &[&str],
    ) -> Result<Mount, (Option<i32>, String)> {
        self.mount_backing_impl(backing, mnt, extra, &self.pass, &[])
    }

    fn mount_impl(
        &self,
        mnt: &Path,
        extra: &[&str],
        pass: &Path,
        env: &[(&str, &str)],
    ) -> Result<Mount, (Option<i32>, String)> {
        self.mount_backing_impl(&self.backing, mnt, extra, pass, env)
    }

    fn mount_backing_impl(
        &self,
        backing: &Path,
        mnt: &Path,
        extra: &[&str],
        pass: &Path,
        env: &[(&str, &str)],
    ) -> Result<Mount, (Option<i32>, String)> {
        let n = self.mounts.fetch_add(1, Ordering::Relaxed);
        let log = self.root.join(format!("mount{n}.log"));
        let logf = File::create(&log).expect("create mount log");
        let was_mounted = is_mounted(mnt);
        let mut cmd = Command::new(EZFS);
        cmd.arg("mount")
            .arg(backing)
            .arg(mnt)
            .arg("--passphrase-file")
            .arg(pass)
            .args(extra);
        cmd.stdout(Stdio::null())
            .stderr(logf)
            .stdin(Stdio::null())
            .env_remove("EZFS_PASSPHRASE_FILE")
            .envs(env.iter().copied());
        let mut child = cmd.spawn().expect("spawn ezfs mount");
        let status = wait_deadline(&mut child, CMD_TIMEOUT);
        let guard = Mount {
            mnt: mnt.to_path_buf(),
            log: log.clone(),
            scratch: self.scratch(),
            done: was_mounted,
        };
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            drop(guard);
            panic!("ezfs mount did not return within {CMD_TIMEOUT:?}");
        };
        if status.success() && !was_mounted {
            assert!(
                is_mounted(mnt),
                "ezfs mount exited 0 but {} is not mounted",
                mnt.display()
            );
            Ok(guard)
        } else {
            let msg = std::fs::read_to_string(&log).unwrap_or_default();
            // a failed mount must leave nothing mounted; if it did, the guard cleans up
            // (but never touches a mount that existed before this attempt)
            drop(guard);
            Err((status.code(), msg))
        }
    }

    /// Mounts (asserting success).
    pub fn mount(&self) -> Mount {
        self.mount_opts(&[])
    }

    pub fn mount_opts(&self, extra: &[&str]) -> Mount {
        match self.try_mount(extra) {
            Ok(m) => m,
            Err((c, msg)) => panic!("ezfs mount {extra:?} failed (exit {c:?}): {msg}"),
        }
    }

    /// `mkdir M/dir` (with parents) and `ezfs zone create --key KEY M/dir`.
    pub fn zone(&self, dir: &str, key: &str) -> PathBuf {
        let p = self.m(dir);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        ok(
            &self.run(&["zone", "create", "--key", key, p.to_str().unwrap()]),
            &format!("zone create {dir}"),
        );
        p
    }

    /// `mkdir M/dir` (with parents) and `ezfs zone create --key KEY --encrypt-names
    /// M/dir`: a zone whose file names and symlink targets are encrypted too.
    pub fn names_zone(&self, dir: &str, key: &str) -> PathBuf {
        let p = self.m(dir);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        ok(
            &self.run(&[
                "zone",
                "create",
                "--key",
                key,
                "--encrypt-names",
                p.to_str().unwrap(),
            ]),
            &format!("zone create --encrypt-names {dir}"),
        );
        p
    }

    /// `ezfs zone info M/rel --json`, parsed.
    pub fn zone_info(&self, rel: &str) -> serde_json::Value {
        let o = self.run(&["zone", "info", "--json", self.m(rel).to_str().unwrap()]);
        ok(&o, &format!("zone info {rel}"));
        serde_json::from_slice(&o.stdout).expect("zone info --json is JSON")
    }

    /// `ezfs zone list M --json`, parsed.
    pub fn zone_list(&self) -> Vec<serde_json::Value> {
        let o = self.run(&["zone", "list", "--json", self.mnt.to_str().unwrap()]);
        ok(&o, "zone list");
        serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).expect("zone list --json is a JSON array")
    }

    /// Zone paths from `zone list` (as absolute mount paths).
    pub fn zone_paths(&self) -> Vec<String> {
        self.zone_list()
            .iter()
            .map(|z| z["path"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every daemon log this fixture produced.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in 0..self.mounts.load(Ordering::Relaxed) {
            let p = self.root.join(format!("mount{n}.log"));
            s += &format!(
                "--- {} ---\n{}\n",
                p.display(),
                std::fs::read_to_string(&p).unwrap_or_default()
            );
        }
        s
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        force_unmount(&self.mnt, &self.scratch());
        if std::thread::panicking() {
            eprintln!(
                "harness: daemon logs of {}:\n{}",
                self.root.display(),
                self.logs()
            );
        }
    }
}

/// A mounted ezfs; dropping it unmounts (always, even while panicking).
pub struct Mount {
    pub mnt: PathBuf,
    pub log: PathBuf,
    scratch: PathBuf,
    done: bool,
}

impl Mount {
    /// The daemon's log (its stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<i32> {
        daemon_pid(&self.mnt)
    }

    /// `ezfs umount`, asserting it succeeds, the mount is gone and the daemon exited.
    pub fn unmount(mut self) {
        let pid = self.pid();
        let o = try_run_cmd(
            Command::new(EZFS).arg("umount").arg(&self.mnt),
            &self.scratch,
            Duration::from_secs(30),
        );
        let o = o.expect("ezfs umount did not finish within 30 s");
        ok(&o, "ezfs umount");
        assert!(!is_mounted(&self.mnt), "still mounted after ezfs umount");
        if let Some(pid) = pid {
            assert!(
                wait_until(Duration::from_secs(60), || !process_alive(pid)),
                "daemon {pid} still running"
            );
        }
        self.done = true;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("harness: daemon log {}:\n{}", self.log.display(), self.log());
        }
        if !self.done {
            force_unmount(&self.mnt, &self.scratch);
        }
    }
}

fn cstring(b: &[u8]) -> std::ffi::CString {
    std::ffi::CString::new(b).expect("no NUL in test paths and names")
}

/// `setxattr(2)` on `p`, asserting success.
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let (cp, cn) = (
        cstring(p.as_os_str().as_encoded_bytes()),
        cstring(name.as_bytes()),
    );
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::setxattr(cp.as_ptr(), cn.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    let e = io::Error::last_os_error();
    assert_eq!(r, 0, "setxattr {name} on {}: {e}", p.display());
}

/// `getxattr(2)` on `p`; `None` when it fails.
pub fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let (cp, cn) = (
        cstring(p.as_os_str().as_encoded_bytes()),
        cstring(name.as_bytes()),
    );
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::getxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

/// `fgetxattr(2)` on an open file: the value, or the errno.
pub fn fget_xattr(f: &File, name: &str) -> Result<Vec<u8>, i32> {
    use std::os::fd::AsRawFd;
    let cn = cstring(name.as_bytes());
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid fd, C string and buffer.
    let r = unsafe { libc::fgetxattr(f.as_raw_fd(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(r as usize);
    Ok(buf)
}
