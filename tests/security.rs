//! Hostile local users against a root daemon serving an `--allow-other` mount: each
//! test is an attack that worked before ezfs resolved users' paths beneath the backing
//! root, decided zones by the authenticated registry, and checked who asks (issue 18).
//! The attackers run as unprivileged uids (setpriv); where an attack needs write
//! access to the backing dir, root plays that user.

mod common;

use common::*;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ALICE: u32 = 61001;
const BOB: u32 = 61002;

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

/// Runs `prog ARGS` as `uid` (its own group, no supplementary groups).
fn as_user(f: &Fixture, uid: u32, prog: &str, args: &[&str]) -> Output {
    let u = uid.to_string();
    let mut a = vec!["--reuid", &u, "--regid", &u, "--clear-groups", "--", prog];
    a.extend_from_slice(args);
    run_cmd(Command::new("setpriv").args(&a), &f.scratch())
}

/// `sh -c SCRIPT` as `uid`, with `$1`... set to `args`.
fn sh_as(f: &Fixture, uid: u32, script: &str, args: &[&str]) -> Output {
    let mut a = vec!["-c", script, "sh"];
    a.extend_from_slice(args);
    as_user(f, uid, "sh", &a)
}

/// `ezfs key grant KEY --user UID`.
fn grant(f: &Fixture, key: &str, uid: u32) {
    let o = f.run(&[
        "key",
        "grant",
        key,
        "--user",
        &uid.to_string(),
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, &format!("grant {key} to {uid}"));
}

/// A fixture whose mount (with `--allow-other`) other users can reach, and a
/// directory of the mount owned by each of alice and bob.
fn shared() -> (Fixture, Mount) {
    let f = Fixture::new();
    set_mode(&f.root, 0o755);
    let m = f.mount_opts(&["--allow-other"]);
    for (name, uid) in [("alice", ALICE), ("bob", BOB)] {
        fs::create_dir(f.m(name)).unwrap();
        chown(&f.m(name), uid);
    }
    (f, m)
}

/// The abstract name of the control socket of backing dir `b`.
fn socket_name(b: &Path) -> String {
    let m = fs::metadata(b).unwrap();
    format!("ezfs/{}/{}", m.dev(), m.ino())
}

/// A Python client that sends `request` (one line) on the control socket and prints
/// the answer line; `extra` bytes are sent before the request (no newline in them).
const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[3]))
s.connect("\0" + sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"#;

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Sends `request` as `uid` straight to the control socket (what a hostile user can
/// do without the ezfs command); the daemon's answer line.
fn raw_request(f: &Fixture, uid: u32, request: &str) -> String {
    let o = as_user(
        f,
        uid,
        python(),
        &["-c", CLIENT, &socket_name(&f.backing), request, "20"],
    );
    assert!(
        o.status.success(),
        "control request {request:.200} as uid {uid}: no answer within 20 s\n{}",
        stderr_of(&o)
    );
    stdout_of(&o)
}

fn no_error(answer: &str) -> bool {
    answer.contains("\"Ok\"")
}

/// Files and their contents under `dir`, for before/after comparisons.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let data = if m.is_file() {
            fs::read(e.path()).unwrap()
        } else {
            Vec::new()
        };
        out.push((e.path(), data, m.mode()));
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// 1. No privileged path operation follows a user's symlink or blocks on a FIFO.

#[test]
fn zone_create_through_a_symlink_and_a_fifo_touches_nothing() {
    let (f, _m) = shared();
    // a directory bob controls outside the backing dir, and a root file to aim at
    let outside = f.root.join("outside");
    fs::create_dir(&outside).unwrap();
    chown(&outside, BOB);
    let victim = f.root.join("victim");
    fs::write(&victim, b"precious root data").unwrap();
    let o = sh_as(
        &f,
        BOB,
        r#"mkdir "$1/sub" && mkfifo "$1/.ezfs-zone" && ln -s "$1" "$2""#,
        &[outside.to_str().unwrap(), f.m("bob/out").to_str().unwrap()],
    );
    ok(&o, "bob prepares the trap");
    // the request, while bob plants the temporary file's name and then feeds the FIFO
    // (which a daemon that follows the symlink and reads the FIFO is blocked on)
    let request = Command::new("setpriv")
        .args([
            "--reuid",
            "61002",
            "--regid",
            "61002",
            "--clear-groups",
            "--",
            python(),
            "-c",
            CLIENT,
        ])
        .arg(socket_name(&f.backing))
        .arg(r#"{"op":"zone_create","path":"bob/out/sub","key":"k1"}"#)
        .arg("30")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let o = sh_as(
        &f,
        BOB,
        r#"ln -s "$2" "$1/sub/..ezfs-zone.tmp"; timeout 5 sh -c 'echo "{}" > "$1/.ezfs-zone"' sh "$1"; true"#,
        &[outside.to_str().unwrap(), victim.to_str().unwrap()],
    );
    ok(&o, "bob springs the trap");
    let out = request.wait_with_output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"precious root data",
        "a root file was overwritten"
    );
    assert!(!answer.is_empty(), "no answer: the daemon hung on the FIFO");
    assert!(
        !no_error(&answer),
        "zone create through a symlink succeeded: {answer}"
    );
    assert!(answer.contains("symbolic link"), "{answer}");
    assert!(
        !outside.join("sub/.ezfs-zone").exists(),
        "a marker was written outside"
    );
    // the daemon still answers everyone
    ok(
        &f.run(&["zone", "list", f.mnt.to_str().unwrap()]),
        "zone list after",
    );
}

#[test]
fn a_fifo_named_like_a_marker_never_hangs_the_mount() {
    let (f, _m) = shared();
    // a user with write access to the backing dir plants FIFOs where markers go
    for i in 0..4 {
        let d = format!("bob/d{i}");
        fs::create_dir(f.m(&d)).unwrap();
        let c = CString::new(f.b(&d).join(".ezfs-zone").to_str().unwrap()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    }
    drop_caches();
    for i in 0..4 {
        let d = f.m(&format!("bob/d{i}"));
        let o = as_user(&f, BOB, "timeout", &["20", "stat", d.to_str().unwrap()]);
        ok(&o, "stat of a directory with a FIFO marker");
        // a broken zone: nothing can be created in it, nothing is plaintext
        let o = sh_as(
            &f,
            BOB,
            r#"timeout 20 sh -c 'echo x > "$1/new"'"#,
            &[d.to_str().unwrap()],
        );
        assert!(!o.status.success(), "a file was created in a broken zone");
        assert!(!f.b(&format!("bob/d{i}/new")).exists());
    }
    let o = as_user(&f, BOB, "timeout", &["20", "ls", f.m("bob").to_str().unwrap()]);
    ok(&o, "the mount still serves");
}

/// Watches a directory with inotify: anything done to it or its files is an event.
struct Watch(i32);

impl Watch {
    fn new(dir: &Path) -> Watch {
        // SAFETY: plain syscalls; the path is a valid C string.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0);
            let c = CString::new(dir.to_str().unwrap()).unwrap();
            assert!(libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_ALL_EVENTS) >= 0);
            Watch(fd)
        }
    }

    /// Number of bytes of events waiting (each event is at least 16 bytes).
    fn pending(&self) -> usize {
        let mut buf = vec![0u8; 65536];
        // SAFETY: reads into a buffer of its length.
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        n.max(0) as usize
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: our descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// Swaps directory `a` with symlink `b` (RENAME_EXCHANGE) in a loop, for `secs` at
/// most, until file `stop` exists.
const SWAPPER: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b, secs, stop = sys.argv[1].encode(), sys.argv[2].encode(), float(sys.argv[3]), sys.argv[4]
end = time.time() + secs
n = 0
while time.time() < end and not os.path.exists(stop):
    for _ in range(100):
        if libc.renameat2(-100, a, -100, b, 2) == 0:
            n += 1
print(n)
"#;

/// The reencryption job of a zone whose directories a user swaps with symlinks to an
/// outside directory, through the mount and in the backing dir: nothing outside the
/// zone is touched.
#[test]
fn reencrypt_data_never_follows_a_swapped_symlink() {
    let (f, m) = shared();
    let z = f.zone("bob/z", "k1");
    chown(&z, BOB);
    let standin = f.root.join("standin");
    fs::create_dir(&standin).unwrap();
    for i in 0..20 {
        fs::write(standin.join(format!("root{i}")), b"root-owned").unwrap();
    }
    for through_mount in [true, false] {
        let d = if through_mount {
            f.m("bob/z/d")
        } else {
            f.b("bob/z/d")
        };
        let s = if through_mount {
            f.m("bob/z/s")
        } else {
            f.b("bob/z/s")
        };
        fs::create_dir_all(f.m("bob/z/d")).unwrap();
        for i in 0..400 {
            fs::write(f.m(&format!("bob/z/d/f{i}")), vec![i as u8; 5000]).unwrap();
        }
        let _ = fs::remove_file(&s);
        std::os::unix::fs::symlink(&standin, &s).unwrap();
        if through_mount {
            chown(&f.m("bob/z/d"), BOB);
            std::os::unix::fs::lchown(&s, Some(BOB), Some(BOB)).unwrap();
        }
        let before = snapshot(&standin);
        ok(&f.key("roll", "k1"), "roll");
        let watch = Watch::new(&standin);
        let stop = f.root.join("stop");
        let _ = fs::remove_file(&stop);
        let swapper = Command::new(if through_mount { "setpriv" } else { python() })
            .args(if through_mount {
                vec![
                    "--reuid",
                    "61002",
                    "--regid",
                    "61002",
                    "--clear-groups",
                    "--",
                    python(),
                ]
            } else {
                vec![]
            })
            .args([
                "-c",
                SWAPPER,
                d.to_str().unwrap(),
                s.to_str().unwrap(),
                "60",
                stop.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let job = f.run(&["zone", "reencrypt", "--data", "--json", z.to_str().unwrap()]);
        fs::write(&stop, b"").unwrap();
        let out = swapper.wait_with_output().unwrap();
        let swaps: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        assert!(swaps > 100, "the swap loop hardly ran ({swaps})");
        eprintln!("job ({through_mount}): {}{}", stdout_of(&job), stderr_of(&job));
        assert_eq!(watch.pending(), 0, "something outside the zone was touched");
        assert_eq!(snapshot(&standin), before);
        // put the directory back where it was
        if fs::symlink_metadata(&d).unwrap().file_type().is_symlink() {
            let c = |p: &Path| CString::new(p.to_str().unwrap()).unwrap();
            // SAFETY: valid C strings.
            let r =
                unsafe { libc::renameat2(libc::AT_FDCWD, c(&d).as_ptr(), libc::AT_FDCWD, c(&s).as_ptr(), 2) };
            assert_eq!(r, 0);
        }
        fs::remove_dir_all(f.m("bob/z/d")).unwrap();
    }
    drop(m);
}

// ---------------------------------------------------------------------------
// 2. fsck --quarantine never follows a user's symlink.

#[test]
fn fsck_quarantine_never_follows_a_symlink() {
    let (f, m) = shared();
    grant(&f, "k1", BOB);
    let z = f.zone("bob/z", "k1");
    chown(&z, BOB);
    let standin = f.root.join("standin");
    fs::create_dir(&standin).unwrap();
    let o = sh_as(
        &f,
        BOB,
        r#"echo 'echo pwned' > "$1/evil.sh" && ln -s "$2" "$1/lost+found""#,
        &[z.to_str().unwrap(), standin.to_str().unwrap()],
    );
    ok(&o, "bob prepares the trap");
    drop(m);
    f.flip_raw("bob/z/evil.sh", data_offset(0) + 3, 0x10);
    let o = f.run(&[
        "fsck",
        "--quarantine",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    code(&o, 1, "fsck finds the damage");
    assert!(stdout_of(&o).contains("quarantine failed"), "{}", stdout_of(&o));
    assert!(
        fs::read_dir(&standin).unwrap().next().is_none(),
        "moved through the symlink"
    );
    assert!(
        f.b("bob/z/evil.sh").exists(),
        "the damaged file stays where it was"
    );
}

// ---------------------------------------------------------------------------
// 3. A file is decrypted only under its own zone's key.

#[test]
fn a_file_copied_from_another_zone_is_not_decrypted() {
    let (f, m) = shared();
    ok(&f.key("create", "ka"), "key create ka");
    ok(&f.key("create", "kb"), "key create kb");
    let keyc = |args: &[&str]| {
        let mut a = vec!["key"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[
            "--backing",
            f.backing.to_str().unwrap(),
            "--passphrase-file",
            f.pass.to_str().unwrap(),
        ]);
        f.run(&a)
    };
    ok(&keyc(&["grant", "ka", "--user", "61001"]), "grant alice ka");
    ok(&keyc(&["grant", "kb", "--user", "61002"]), "grant bob kb");
    let za = f.zone("alice/z", "ka");
    let zb = f.zone("bob/z", "kb");
    chown(&za, ALICE);
    chown(&zb, BOB);
    let secret = za.join("secret.txt");
    ok(
        &sh_as(
            &f,
            ALICE,
            r#"echo 'alice secret' > "$1" && chmod 644 "$1""#,
            &[secret.to_str().unwrap()],
        ),
        "alice writes",
    );
    let o = as_user(&f, BOB, "cat", &[secret.to_str().unwrap()]);
    assert!(!o.status.success(), "bob may not use ka");
    // bob, with write access to the backing dir, copies the ciphertext into his zone
    fs::copy(f.b("alice/z/secret.txt"), f.b("bob/z/stolen")).unwrap();
    chown(&f.b("bob/z/stolen"), BOB);
    drop_caches();
    let o = as_user(&f, BOB, "cat", &[zb.join("stolen").to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "decrypted under another zone: {}",
        stdout_of(&o)
    );
    assert!(!stdout_of(&o).contains("alice secret"));
    assert!(stderr_of(&o).contains("Input/output error"), "{}", stderr_of(&o));
    assert!(m.log().contains("belongs to zone"), "{}", m.log());
    // the re-wrap job never launders it into bob's zone either
    ok(&f.key("roll", "kb"), "roll kb");
    let o = f.run(&["zone", "reencrypt", "--json", zb.to_str().unwrap()]);
    code(&o, 1, "reencrypt reports the misplaced file");
    assert!(stderr_of(&o).contains("belongs to zone"), "{}", stderr_of(&o));
    assert_eq!(
        &f.raw("bob/z/stolen"),
        &f.raw("alice/z/secret.txt"),
        "left as it was"
    );
    drop(m);
    let o = f.run(&[
        "fsck",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    code(&o, 1, "fsck");
    assert!(
        stdout_of(&o).contains("/bob/z/stolen: misplaced"),
        "{}",
        stdout_of(&o)
    );
}

#[test]
fn an_old_marker_of_a_removed_zone_opens_nothing() {
    let (f, m) = shared();
    ok(&f.key("create", "old"), "key create old");
    let zo = f.zone("alice/zo", "old");
    fs::write(zo.join("f"), b"old zone data").unwrap();
    let old_marker = f.raw("alice/zo/.ezfs-zone");
    let zb = f.zone("bob/z", "k1");
    chown(&zb, BOB);
    // the old zone is emptied and removed; its key is deleted
    fs::remove_file(zo.join("f")).unwrap();
    fs::remove_dir(&zo).unwrap();
    ok(&f.key("delete", "old"), "key delete old");
    // bob (with backing access) puts the old marker on his zone: no zone's key check
    // may be skipped because its key is unknown
    fs::write(f.b("bob/z/.ezfs-zone"), &old_marker).unwrap();
    fs::write(f.b("bob/z/plain"), b"plaintext").unwrap();
    chown(&f.b("bob/z/plain"), BOB);
    drop_caches();
    let o = as_user(&f, BOB, "cat", &[zb.join("plain").to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "read through a swapped marker: {}",
        stdout_of(&o)
    );
    let o = sh_as(&f, BOB, r#"echo new > "$1""#, &[zb.join("new").to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "created a file in a zone with a foreign marker"
    );
    assert!(!f.b("bob/z/new").exists());
    drop(m);
}

// ---------------------------------------------------------------------------
// 4. Removing a marker never turns a zone into a plaintext directory.

#[test]
fn a_removed_marker_never_makes_a_plaintext_zone() {
    let (f, m) = shared();
    let z = f.zone("alice/z2", "k1");
    fs::write(z.join("old"), b"old secret").unwrap();
    // the kernel keeps the zone root cached while a descriptor of it is open, so the
    // daemon keeps the zone it decided: the marker goes behind its back
    let held = fs::File::open(&z).unwrap();
    fs::remove_file(f.b("alice/z2/.ezfs-zone")).unwrap();
    // until the daemon decides the zone again, a new file is still encrypted
    fs::write(z.join("early"), b"early secret").unwrap();
    assert!(!common::contains(
        &fs::read(f.b("alice/z2/early")).unwrap(),
        b"early secret"
    ));
    // a reload of the keystore (any key command does one) decides it again: broken
    ok(&f.key("create", "k2"), "key create k2");
    drop_caches();
    // new files are never written in plaintext, old ones never served as ciphertext
    let new = fs::write(z.join("new"), b"new secret");
    assert!(new.is_err(), "a file was created in a zone without its marker");
    assert!(!common::contains(
        &fs::read(f.b("alice/z2/old")).unwrap(),
        b"old secret"
    ));
    let old = fs::read(z.join("old"));
    assert_eq!(
        old.map_err(|e| errno(&e)),
        Err(libc::EIO),
        "ciphertext served as plaintext"
    );
    for e in fs::read_dir(f.b("alice/z2")).unwrap() {
        let data = fs::read(e.unwrap().path()).unwrap();
        assert!(
            !common::contains(&data, b"new secret"),
            "plaintext in the backing dir"
        );
    }
    drop(held);
    drop(m);
    // offline: marker gone and the directory renamed; mount refuses, naming the zone
    fs::rename(f.b("alice/z2"), f.b("alice/elsewhere")).unwrap();
    let (c, msg) = f.try_mount(&[]).err().expect("mount forgot the zone");
    assert_eq!(c, Some(1));
    assert!(msg.contains("/alice/z2") && msg.contains("zone"), "{msg}");
    let body = fs::read_to_string(f.b(".ezfs/keystore.json")).unwrap();
    assert!(body.contains("alice/z2"), "the keystore forgot the zone");
    // putting the marker back (the repair command) makes it a zone again
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["body"]["zones"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let o = f.run(&[
        "zone",
        "repair",
        "--id",
        &id,
        "/alice/elsewhere",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, "zone repair");
    let _m = f.mount();
    assert_eq!(fs::read(f.m("alice/elsewhere/old")).unwrap(), b"old secret");
}

#[test]
fn an_encrypted_file_outside_every_zone_is_not_served() {
    let (f, m) = shared();
    let z = f.zone("z", "k1");
    fs::write(z.join("s"), vec![7u8; 10000]).unwrap();
    fs::create_dir(f.m("plain")).unwrap();
    fs::copy(f.b("z/s"), f.b("plain/s")).unwrap();
    drop_caches();
    let r = fs::read(f.m("plain/s"));
    assert!(
        matches!(&r, Err(e) if errno(e) == libc::EIO),
        "served: {:?}",
        r.map(|d| d.len())
    );
    drop(m);
}

// ---------------------------------------------------------------------------
// 5. The backing dir is private.

#[test]
fn init_makes_the_backing_root_private_and_mount_warns_otherwise() {
    let f = Fixture::new();
    assert_eq!(fs::metadata(&f.backing).unwrap().mode() & 0o777, 0o700);
    set_mode(&f.root, 0o755);
    // other users still use an --allow-other mount: its root shows 0755
    let m = f.mount_opts(&["--allow-other"]);
    assert!(!m.log().contains("accessible to other users"), "{}", m.log());
    fs::create_dir(f.m("pub")).unwrap();
    set_mode(&f.m("pub"), 0o777);
    ok(
        &sh_as(&f, BOB, r#"echo hi > "$1""#, &[f.m("pub/x").to_str().unwrap()]),
        "a user writes",
    );
    let o = as_user(&f, BOB, "ls", &[f.backing.to_str().unwrap()]);
    assert!(!o.status.success(), "a user lists the backing dir");
    drop(m);
    set_mode(&f.backing, 0o755);
    let m = f.mount();
    assert!(m.log().contains("accessible to other users"), "{}", m.log());
}

// ---------------------------------------------------------------------------
// 6. The control socket cannot be abused.

#[test]
fn control_requests_are_bounded_and_served_in_parallel() {
    let (f, m) = shared();
    let pid = m.pid().unwrap();
    let rss = || {
        let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap()
    };
    // 200 MiB without a newline: refused after 64 KiB, memory stays put
    let flood = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect("\0" + sys.argv[1])
chunk = b"x" * (1 << 20)
try:
    for _ in range(200):
        s.sendall(chunk)
except OSError:
    pass
print(s.recv(4096).decode())
"#;
    let before = rss();
    let o = as_user(&f, BOB, python(), &["-c", flood, &socket_name(&f.backing)]);
    ok(&o, "flood");
    assert!(stdout_of(&o).contains("request longer"), "{}", stdout_of(&o));
    assert!(
        rss() < before + 20_000,
        "daemon grew from {before} to {} KiB",
        rss()
    );
    // a client that connects and says nothing holds no one up
    let idle = r#"
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect("\0" + sys.argv[1])
print("connected", flush=True)
time.sleep(15)
"#;
    let mut sleeper = Command::new("setpriv")
        .args([
            "--reuid",
            "61002",
            "--regid",
            "61002",
            "--clear-groups",
            "--",
            python(),
            "-c",
            idle,
        ])
        .arg(socket_name(&f.backing))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sleeper.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let t0 = Instant::now();
    ok(&f.run(&["zone", "list", f.mnt.to_str().unwrap()]), "zone list");
    let waited = t0.elapsed();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(
        waited < Duration::from_secs(8),
        "zone list waited {waited:?} behind an idle client"
    );
    // a huge path is not echoed back whole
    let long = "a/".repeat(20_000);
    let answer = raw_request(&f, BOB, &format!(r#"{{"op":"zone_info","path":"../{long}"}}"#));
    assert!(answer.len() < 4000, "answer of {} bytes", answer.len());
}

#[test]
fn a_squatter_on_the_control_socket_is_never_trusted() {
    let f = Fixture::new();
    set_mode(&f.root, 0o755);
    let squat = r#"
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0" + sys.argv[1])
s.listen(8)
s.settimeout(float(sys.argv[2]))
got = b""
while True:
    try:
        c, _ = s.accept()
    except OSError:
        break
    try:
        c.settimeout(2)
        d = c.recv(4096)
        got += d
        c.sendall(b'{"result":{"Ok":{"pid":1,"mountpoint":"/nowhere","backing":"/"}}}\n')
    except OSError:
        pass
    c.close()
sys.stdout.write(got.decode(errors="replace"))
"#;
    let out = f.scratch().join("squat.out");
    let mut squatter = Command::new("setpriv")
        .args([
            "--reuid",
            "61002",
            "--regid",
            "61002",
            "--clear-groups",
            "--",
            python(),
            "-c",
            squat,
        ])
        .arg(socket_name(&f.backing))
        .arg("12")
        .stdout(fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let r = f.try_mount(&[]);
    let Err((c, msg)) = r else {
        let _ = squatter.kill();
        panic!("mounted while the socket name was taken");
    };
    assert_eq!(c, Some(1));
    assert!(
        !msg.contains("/nowhere"),
        "the squatter's answer was believed: {msg}"
    );
    assert!(msg.contains("not an ezfs daemon"), "{msg}");
    // root's key commands send it nothing
    ok(&f.key("create", "k2"), "key create with a squatter");
    let _ = squatter.wait();
    let got = fs::read_to_string(&out).unwrap();
    assert!(!got.contains("reload"), "the squatter received: {got}");
}

#[test]
fn every_control_request_checks_the_caller() {
    let (f, _m) = shared();
    ok(&f.key("create", "ka"), "key create ka");
    // reload: root and the keystore's owner only
    let a = raw_request(&f, BOB, r#"{"op":"reload"}"#);
    assert!(!no_error(&a) && a.contains("only root"), "{a}");
    // a zone under alice's private directory is not listed to bob
    let z = f.zone("alice/private/z", "ka");
    set_mode(&f.m("alice"), 0o700);
    let _ = z;
    let a = raw_request(&f, BOB, r#"{"op":"zone_list"}"#);
    assert!(no_error(&a) && !a.contains("private"), "{a}");
    let a = raw_request(&f, ALICE, r#"{"op":"zone_list"}"#);
    assert!(a.contains("alice/private/z"), "{a}");
    // info through a symlink to root's files tells nothing about them
    ok(
        &sh_as(&f, BOB, r#"ln -s /root "$1""#, &[f.m("bob/l").to_str().unwrap()]),
        "bob's symlink",
    );
    let exists = raw_request(&f, BOB, r#"{"op":"zone_info","path":"bob/l/.bashrc"}"#);
    let missing = raw_request(&f, BOB, r#"{"op":"zone_info","path":"bob/l/no-such-file"}"#);
    assert_eq!(
        exists.replace(".bashrc", "X"),
        missing.replace("no-such-file", "X"),
        "the answers tell files apart"
    );
    // a zone bound to a key bob may not use
    fs::create_dir(f.m("bob/zz")).unwrap();
    chown(&f.m("bob/zz"), BOB);
    let o = as_user(
        &f,
        BOB,
        EZFS,
        &["zone", "create", "--key", "ka", f.m("bob/zz").to_str().unwrap()],
    );
    code(&o, 1, "zone create with someone else's key");
    assert!(stderr_of(&o).contains("may not use key ka"), "{}", stderr_of(&o));
}

// ---------------------------------------------------------------------------
// 7. passwd changes the passphrase or fails.

#[test]
fn passwd_never_takes_the_new_passphrase_from_the_environment() {
    let f = Fixture::new();
    let o = run_cmd(
        Command::new(EZFS)
            .args(["passwd", f.backing.to_str().unwrap()])
            .env("EZFS_PASSPHRASE_FILE", &f.pass),
        &f.scratch(),
    );
    assert!(
        !o.status.success(),
        "passwd without a new passphrase succeeded: {}",
        stdout_of(&o)
    );
    let same = f.run(&[
        "passwd",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
        "--new-passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    code(&same, 1, "passwd to the same passphrase");
    ok(&f.key("roll", "k1"), "the old passphrase still works");
}

#[test]
fn rotate_master_leaves_an_old_keystore_copy_useless() {
    let f = Fixture::new();
    {
        let _m = f.mount();
        f.zone("z", "k1");
        fs::write(f.m("z/f"), b"before rotation").unwrap();
    }
    let ks = f.b(".ezfs/keystore.json");
    let old: serde_json::Value = serde_json::from_slice(&fs::read(&ks).unwrap()).unwrap();
    let o = f.run(&[
        "passwd",
        "--rotate-master",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, "passwd --rotate-master");
    ok(&f.key("roll", "k1"), "roll after rotation");
    // the old sealed master (and its passphrase) with today's keystore: opens nothing
    let mut mixed: serde_json::Value = serde_json::from_slice(&fs::read(&ks).unwrap()).unwrap();
    mixed["kdf"] = old["kdf"].clone();
    mixed["master"] = old["master"].clone();
    let saved = fs::read(&ks).unwrap();
    fs::write(&ks, serde_json::to_vec(&mixed).unwrap()).unwrap();
    let unlocked = f.run(&[
        "key",
        "list",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    assert!(
        !unlocked.status.success(),
        "an old master key opened the rotated keystore"
    );
    fs::write(&ks, saved).unwrap();
    // markers were authenticated again: the zone works
    let _m = f.mount();
    assert_eq!(fs::read(f.m("z/f")).unwrap(), b"before rotation");
    fs::write(f.m("z/g"), b"after").unwrap();
    assert_eq!(f.zone_info("z/g")["key_version"], 2);
}

// ---------------------------------------------------------------------------
// 8. Re-encryption jobs are bounded, cancellable and end with the mount.

#[test]
fn reencrypt_data_skips_holes_of_a_huge_sparse_file() {
    let f = Fixture::new();
    let _m = f.mount();
    let z = f.zone("z", "k1");
    let big = z.join("big");
    {
        let fh = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&big)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&fh, b"start", 0).unwrap();
        fh.set_len(8 << 40).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&fh, b"end", (8 << 40) - 3).unwrap();
    }
    ok(&f.key("roll", "k1"), "roll");
    let t0 = Instant::now();
    ok(
        &f.run(&["zone", "reencrypt", "--data", z.to_str().unwrap()]),
        "reencrypt --data",
    );
    assert!(t0.elapsed() < Duration::from_secs(120), "took {:?}", t0.elapsed());
    assert_eq!(f.zone_info("z/big")["key_version"], 2);
    let fh = fs::File::open(&big).unwrap();
    let mut b = [0u8; 5];
    std::os::unix::fs::FileExt::read_exact_at(&fh, &mut b, 0).unwrap();
    assert_eq!(&b, b"start");
    std::os::unix::fs::FileExt::read_exact_at(&fh, &mut b[..3], (8 << 40) - 3).unwrap();
    assert_eq!(&b[..3], b"end");
    std::os::unix::fs::FileExt::read_exact_at(&fh, &mut b, 1 << 40).unwrap();
    assert_eq!(b, [0; 5]);
}

/// A zone with enough data for a `--data` job to run for seconds.
fn big_zone(f: &Fixture) -> PathBuf {
    let z = f.zone("z", "k1");
    let chunk = vec![0x5au8; 1 << 20];
    for i in 0..12 {
        let mut fh = fs::File::create(z.join(format!("f{i}"))).unwrap();
        for _ in 0..64 {
            std::io::Write::write_all(&mut fh, &chunk).unwrap();
        }
    }
    ok(&f.key("roll", "k1"), "roll");
    z
}

fn job_status(f: &Fixture, z: &Path) -> serde_json::Value {
    let o = f.run(&["zone", "reencrypt", "--status", "--json", z.to_str().unwrap()]);
    ok(&o, "status");
    serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).unwrap()[0].clone()
}

#[test]
fn a_data_job_can_be_cancelled_and_resumes_as_a_data_job() {
    let f = Fixture::new();
    let _m = f.mount();
    let z = big_zone(&f);
    let ids_before: Vec<String> = (0..12)
        .map(|i| {
            f.zone_info(&format!("z/f{i}"))["file_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut job = Command::new(EZFS)
        .args(["zone", "reencrypt", "--data", z.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(120), || job_status(&f, &z)
        ["state"]
        == "running"));
    let o = f.run(&["zone", "reencrypt", "--cancel", z.to_str().unwrap()]);
    let _ = job.wait();
    ok(&o, "cancel");
    let s = job_status(&f, &z);
    assert_eq!(s["state"], "cancelled", "{s}");
    assert_eq!(s["data"], true);
    // resumed without --data: still a --data job, every file gets a new data key
    let o = f.run(&["zone", "reencrypt", "--json", z.to_str().unwrap()]);
    ok(&o, "resume");
    assert!(stderr_of(&o).contains("--data"), "{}", stderr_of(&o));
    let s = job_status(&f, &z);
    assert_eq!(
        (s["state"].as_str(), s["data"].as_bool()),
        (Some("completed"), Some(true)),
        "{s}"
    );
    for (i, before) in ids_before.iter().enumerate() {
        let info = f.zone_info(&format!("z/f{i}"));
        assert_ne!(
            info["file_id"].as_str().unwrap(),
            before,
            "f{i} was only re-wrapped"
        );
        assert_eq!(info["key_version"], 2);
    }
}

#[test]
fn unmount_ends_a_running_job_as_interrupted() {
    let f = Fixture::new();
    let m = f.mount();
    let z = big_zone(&f);
    let pid = m.pid().unwrap();
    let mut job = Command::new(EZFS)
        .args(["zone", "reencrypt", "--data", z.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(120), || job_status(&f, &z)
        ["state"]
        == "running"));
    let o = f.run(&["umount", f.mnt.to_str().unwrap()]);
    ok(&o, "umount during a job");
    assert!(
        wait_until(Duration::from_secs(120), || !process_alive(pid)),
        "the daemon outlived its mount"
    );
    let _ = job.wait();
    drop(m);
    let _m = f.mount();
    let s = job_status(&f, &z);
    assert_eq!(
        (s["state"].as_str(), s["data"].as_bool()),
        (Some("interrupted"), Some(true)),
        "{s}"
    );
    // finished by a plain rerun, as a --data job
    ok(&f.run(&["zone", "reencrypt", z.to_str().unwrap()]), "rerun");
    let s = job_status(&f, &z);
    assert_eq!(
        (s["state"].as_str(), s["data"].as_bool()),
        (Some("completed"), Some(true)),
        "{s}"
    );
}

// ---------------------------------------------------------------------------
// 9. Key material stays out of core dumps.

#[test]
fn a_core_dump_of_the_daemon_holds_no_key() {
    let f = Fixture::new();
    let cores = f.root.join("cores");
    fs::create_dir(&cores).unwrap();
    let pattern = fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    if pattern.starts_with('|') {
        eprintln!("NOTE: core dumps go to a program here ({pattern}); not tested");
        return;
    }
    let m = f
        .try_mount_env(&[], &[("EZFS_TEST_CORE_DIR", cores.to_str().unwrap())])
        .unwrap_or_else(|(c, e)| panic!("mount: {c:?} {e}"));
    let z = f.zone("z", "k1");
    fs::write(z.join("closed"), vec![1u8; 100_000]).unwrap();
    fs::write(z.join("open"), vec![2u8; 100_000]).unwrap();
    let held = fs::File::open(z.join("open")).unwrap();
    let mut b = [0u8; 10];
    std::os::unix::fs::FileExt::read_exact_at(&held, &mut b, 50_000).unwrap();
    let _ = fs::read(z.join("closed")).unwrap();
    // the keys to look for
    let ks = ezfs::keys::Keystore::unlock(&f.backing, PASSPHRASE.as_bytes()).unwrap();
    let dek = |name: &str| {
        let fh = fs::File::open(f.b(&format!("z/{name}"))).unwrap();
        let h = ezfs::format::header::read_header(&fh).unwrap();
        let k = ks.material(&h.key_name, h.key_version).unwrap();
        k.cipher()
            .unwrap_key(&h.own_aad(), &h.edek)
            .unwrap()
            .expose()
            .to_vec()
    };
    let secrets = [
        ("the master key", ks.master_key().expose().to_vec()),
        ("k1@1", ks.material("k1", 1).unwrap().expose().to_vec()),
        ("the open file's DEK", dek("open")),
        ("the closed file's DEK", dek("closed")),
    ];
    let pid = m.pid().unwrap();
    // SAFETY: signals the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGABRT) };
    assert!(wait_until(Duration::from_secs(60), || !process_alive(pid)));
    drop(held);
    drop(m);
    let core = fs::read_dir(&cores)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("core"))
        .map(|e| e.path());
    let Some(core) = core else {
        panic!("no core dump was written in {}", cores.display());
    };
    let data = fs::read(&core).unwrap();
    assert!(data.len() > 1 << 20, "a core of {} bytes", data.len());
    for (what, key) in &secrets {
        assert!(!common::contains(&data, key), "{what} is in the core dump");
    }
}

// ---------------------------------------------------------------------------
// 10. Smaller items.

#[test]
fn key_acl_shows_only_an_authenticated_keystore() {
    let f = Fixture::new();
    let ks = f.b(".ezfs/keystore.json");
    let saved = fs::read(&ks).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&saved).unwrap();
    v["body"]["keys"]["k1"]["acl"] = serde_json::json!({"users": [4242]});
    fs::write(&ks, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let o = f.run(&[
        "key",
        "acl",
        "k1",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success(),
        "an edited keystore was shown: {}",
        stdout_of(&o)
    );
    assert!(!stdout_of(&o).contains("4242"));
    assert!(
        stderr_of(&o).contains("authentication failed"),
        "{}",
        stderr_of(&o)
    );
    // a running mount keeps the keystore it authenticated, and says so
    fs::write(&ks, &saved).unwrap();
    let _m = f.mount();
    fs::write(&ks, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let o = f.run(&["key", "acl", "k1", "--backing", f.backing.to_str().unwrap()]);
    ok(&o, "key acl from the mount");
    assert!(!stdout_of(&o).contains("4242"), "{}", stdout_of(&o));
}

#[test]
fn metadata_padding_is_checked() {
    let f = Fixture::new();
    {
        let _m = f.mount();
        f.zone("z", "k1");
        fs::write(f.m("z/f"), vec![3u8; 8192]).unwrap();
    }
    f.flip_raw("z/f", meta_offset(0) + 4000, 0x01);
    let o = f.run(&[
        "fsck",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    code(&o, 1, "fsck");
    assert!(stdout_of(&o).contains("padding"), "{}", stdout_of(&o));
    let _m = f.mount();
    assert_eq!(fs::read(f.m("z/f")).map_err(|e| errno(&e)), Err(libc::EIO));
}

#[test]
fn users_cannot_set_security_attributes_through_the_daemon() {
    let (f, _m) = shared();
    let p = f.m("bob/file");
    ok(
        &sh_as(&f, BOB, r#"echo x > "$1""#, &[p.to_str().unwrap()]),
        "bob's file",
    );
    for name in ["security.evil", "security.capability"] {
        let o = as_user(
            &f,
            BOB,
            "setfattr",
            &["-n", name, "-v", "0x01000002", p.to_str().unwrap()],
        );
        assert!(!o.status.success(), "{name} set by a user");
        assert!(
            get_xattr(&f.b("bob/file"), name).is_none(),
            "{name} on the backing file"
        );
    }
    ok(
        &as_user(
            &f,
            BOB,
            "setfattr",
            &["-n", "user.ok", "-v", "1", p.to_str().unwrap()],
        ),
        "user.* stays allowed",
    );
}
