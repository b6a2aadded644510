//! What a user meets on day one (issue 19): a daemon that lets go of its caller, a CLI
//! that never panics and says one thing one way, mounts at boot through the mount
//! helper, `status`, recovery and backups, install, and `zone files`.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn b(f: &Fixture) -> &str {
    f.backing.to_str().unwrap()
}

fn pw(f: &Fixture) -> &str {
    f.pass.to_str().unwrap()
}

fn mnt(f: &Fixture) -> &str {
    f.mnt.to_str().unwrap()
}

/// Runs `bash -c SCRIPT` with a deadline; (exit code, stdout, stderr).
fn bash(f: &Fixture, script: &str, limit: Duration) -> (Option<i32>, String, String) {
    let o = try_run_cmd(
        Command::new("bash").args(["-c", script]).env("EZFS", EZFS),
        &f.scratch(),
        limit,
    )
    .unwrap_or_else(|| panic!("`{script}` did not finish within {limit:?}"));
    (o.status.code(), stdout_of(&o), stderr_of(&o))
}

// ---------------------------------------------------------------------------
// 1. The daemon lets go of its caller.

#[test]
fn mount_returns_to_callers_that_capture_its_output() {
    let f = Fixture::new();
    let t0 = Instant::now();
    let (code, out, err) = bash(
        &f,
        &format!(
            r#""$EZFS" mount {} {} --passphrase-file {} 2>&1 | cat"#,
            b(&f),
            mnt(&f),
            pw(&f)
        ),
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "waited {:?} for the daemon",
        t0.elapsed()
    );
    assert_eq!(out.matches("mounted").count(), 1, "the success line once: {out}");
    assert!(is_mounted(&f.mnt));
    ok(&f.run(&["umount", mnt(&f)]), "umount");
    // a captured subprocess
    let script = format!(
        "import subprocess, sys\n\
         r = subprocess.run([{EZFS:?}, 'mount', {:?}, {:?}, '--passphrase-file', {:?}], capture_output=True, timeout=100)\n\
         sys.stdout.write(r.stdout.decode())\n\
         sys.exit(r.returncode)\n",
        b(&f),
        mnt(&f),
        pw(&f)
    );
    let o = run_cmd(Command::new("python3").args(["-c", &script]), &f.scratch());
    ok(&o, "python subprocess.run with capture_output");
    assert!(stdout_of(&o).contains("mounted"));
    ok(&f.run(&["umount", mnt(&f)]), "umount");
    // the daemon's working directory keeps no filesystem busy
    let t = f.root.join("t");
    fs::create_dir(&t).unwrap();
    let tmp = MountOver::tmpfs(&t, "16m");
    let o = run_cmd(
        Command::new(EZFS)
            .args(["mount", b(&f), mnt(&f), "--passphrase-file", pw(&f)])
            .current_dir(&t),
        &f.scratch(),
    );
    ok(&o, "mount from inside a tmpfs");
    let o = run_cmd(Command::new("umount").arg(&t), &f.scratch());
    ok(&o, "the tmpfs the mount was started in unmounts (not busy)");
    std::mem::forget(tmp);
    ok(&f.run(&["umount", mnt(&f)]), "umount");
}

// ---------------------------------------------------------------------------
// 2. Listings end quietly on a closed pipe.

#[test]
fn listings_end_quietly_on_a_closed_pipe() {
    let f = Fixture::new();
    let _m = f.mount();
    let z = f.zone("z", "k1");
    for i in 0..1500 {
        fs::write(z.join(format!("a-file-with-a-rather-long-name-{i:05}")), b"x").unwrap();
    }
    for cmd in [
        format!("zone files {}", z.display()),
        format!("zone files --json {}", z.display()),
        format!("zone list {}", mnt(&f)),
        format!("key list --backing {}", b(&f)),
        "completions bash".to_string(),
    ] {
        let (_, out, err) = bash(
            &f,
            &format!(r#""$EZFS" {cmd} | head -c 1 >/dev/null; echo "${{PIPESTATUS[0]}}""#),
            Duration::from_secs(120),
        );
        let status: i32 = out.trim().parse().unwrap();
        assert!(
            status == 0 || status == 141,
            "ezfs {cmd} | head: exit {status}, {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "ezfs {cmd}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. -o allow_other lets other users in, as --allow-other does.

#[test]
fn o_allow_other_works_like_allow_other() {
    let f = Fixture::new();
    set_mode(&f.root, 0o755);
    let _m = f.mount_opts(&["-o", "allow_other"]);
    fs::write(f.m("hello"), b"hi").unwrap();
    set_mode(&f.m("hello"), 0o644);
    let o = run_cmd(
        Command::new("setpriv").args([
            "--reuid=61005",
            "--regid=61005",
            "--clear-groups",
            "cat",
            f.m("hello").to_str().unwrap(),
        ]),
        &f.scratch(),
    );
    ok(&o, "another user reads through -o allow_other");
    assert_eq!(stdout_of(&o), "hi");
}

// ---------------------------------------------------------------------------
// 4. A dead mount is named as such.

#[test]
fn a_dead_mount_is_reported_and_cleared() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let pid = m.pid().unwrap();
    // SAFETY: kills the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(60), || !process_alive(pid)));
    assert!(is_mounted(&f.mnt), "the kernel keeps the dead mount");
    assert!(wait_until(Duration::from_secs(60), || fs::metadata(&f.mnt)
        .is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))));
    for args in [
        vec!["zone", "list", mnt(&f)],
        vec!["zone", "info", f.m("z").to_str().unwrap()],
        vec!["zone", "reencrypt", f.m("z").to_str().unwrap()],
    ] {
        let o = f.run(&args);
        code(&o, 1, &format!("{args:?} on a dead mount"));
        let e = stderr_of(&o);
        assert!(
            e.contains("is dead") && e.contains("ezfs umount"),
            "{args:?}: {e}"
        );
    }
    let o = f.run(&["status", "--json"]);
    ok(&o, "status");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let me = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["mountpoint"] == mnt(&f))
        .cloned()
        .unwrap();
    assert_eq!(me["state"], "dead", "{me}");
    // mounting the same backing dir again clears the dead mount by itself
    let o = f.run(&["mount", b(&f), mnt(&f), "--passphrase-file", pw(&f)]);
    ok(&o, "mount over a dead mount of the same backing dir");
    assert!(stderr_of(&o).contains("was dead"), "{}", stderr_of(&o));
    ok(&f.run(&["zone", "list", mnt(&f)]), "zone list after the remount");
    drop(m);
}

// ---------------------------------------------------------------------------
// 5. A missing keystore is named, with the way back.

#[test]
fn a_missing_keystore_says_what_is_missing() {
    let f = Fixture::new();
    let ks = f.b(".ezfs/keystore.json");
    fs::remove_file(&ks).unwrap();
    let (c, msg) = f.try_mount(&[]).err().expect("mounted without a keystore");
    assert_eq!(c, Some(1));
    assert!(
        msg.contains("keystore.json is missing") && msg.contains("backup"),
        "{msg}"
    );
    let o = f.run(&["init", b(&f), "--passphrase-file", pw(&f), "--no-recovery-key"]);
    code(&o, 1, "init over a .ezfs without keystore");
    assert!(
        stderr_of(&o).contains("keystore.json is missing"),
        "{}",
        stderr_of(&o)
    );
}

// ---------------------------------------------------------------------------
// 6. A failed init leaves nothing behind.

#[test]
fn a_failed_init_leaves_nothing_behind() {
    let f = Fixture::bare();
    let empty = f.root.join("empty");
    fs::write(&empty, b"\n").unwrap();
    let new = f.root.join("new/backing");
    for pass in [empty.to_str().unwrap(), "/nonexistent/pass"] {
        let o = f.run(&["init", new.to_str().unwrap(), "--passphrase-file", pass]);
        code(&o, 1, "init with a bad passphrase file");
        assert!(!f.root.join("new").exists(), "init left {} behind", new.display());
    }
    // a recovery key file that exists already: refused before anything is made
    let rk = f.root.join("rk");
    fs::write(&rk, b"keep me").unwrap();
    let o = f.run(&[
        "init",
        new.to_str().unwrap(),
        "--passphrase-file",
        pw(&f),
        "--recovery-key-file",
        rk.to_str().unwrap(),
    ]);
    code(&o, 1, "init with an existing recovery key file");
    assert!(!f.root.join("new").exists());
    assert_eq!(fs::read(&rk).unwrap(), b"keep me");
}

// ---------------------------------------------------------------------------
// 7. One thing said one way.

#[test]
fn exit_codes_and_messages_are_consistent() {
    let f = Fixture::new();
    // no DIR and not in a mount: a usage error, as for the key commands
    let o = f.run_in(&f.root, &["zone", "reencrypt", "--status"]);
    code(&o, 2, "zone reencrypt --status outside a mount");
    let o = f.run_in(&f.root, &["key", "list"]);
    code(&o, 2, "key list outside a mount");
    // a 5,000-character key name is cut, and its control characters escaped
    let name = format!("{}\nevil", "x".repeat(5000));
    let o = f.key("create", &name);
    code(&o, 1, "bad key name");
    let e = stderr_of(&o);
    assert!(e.len() < 400 && e.trim().lines().count() == 1, "{e}");
    // errno words once, no "(os error N)"
    let o = f.run(&["zone", "list", "/nonexistent/dir"]);
    code(&o, 1, "zone list of a missing dir");
    assert!(!stderr_of(&o).contains("os error"), "{}", stderr_of(&o));
    let _m = f.mount();
    // zone list sorted, status columns aligned whatever the path lengths
    for d in ["zz", "aa", "a-much-longer-zone-name-that-pushes-columns/inner"] {
        f.zone(d, "k1");
    }
    let paths = f.zone_paths();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    let o = f.run_in(&f.mnt, &["zone", "reencrypt", "--status"]);
    ok(&o, "status");
    let text = stdout_of(&o);
    let col = |l: &str| l.find("none").or_else(|| l.find("STATE")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("none") || l.contains("STATE"))
        .collect();
    assert!(lines.len() >= 4, "{text}");
    assert!(
        lines.iter().all(|l| col(l) == col(lines[0])),
        "misaligned:\n{text}"
    );
    assert!(
        !text.contains("never"),
        "text and JSON name the state alike:\n{text}"
    );
    // key acl --json
    let o = f.run(&["key", "acl", "k1", "--json", "--backing", b(&f)]);
    ok(&o, "key acl --json");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["key"], "k1");
    assert_eq!(v["owner"]["id"], 0);
}

#[test]
fn a_failed_mount_says_so_once() {
    let f = Fixture::new();
    let o = f.run(&["mount", b(&f), "/nonexistent/mnt", "--passphrase-file", pw(&f)]);
    code(&o, 1, "mount on a missing mountpoint");
    assert_eq!(stderr_of(&o).trim().lines().count(), 1, "{}", stderr_of(&o));
    // a user's own backing dir on a mount point the user may not mount on: the
    // daemon's failure (reported through the parent) is printed once
    set_mode(&f.root, 0o755);
    let ub = f.root.join("userb");
    fs::create_dir(&ub).unwrap();
    std::os::unix::fs::chown(&ub, Some(61006), Some(61006)).unwrap();
    let upw = f.root.join("upw");
    fs::write(&upw, "user passphrase\n").unwrap();
    std::os::unix::fs::chown(&upw, Some(61006), Some(61006)).unwrap();
    let as_user = |args: &[&str]| {
        run_cmd(
            Command::new("setpriv")
                .args(["--reuid=61006", "--regid=61006", "--clear-groups", EZFS])
                .args(args),
            &f.scratch(),
        )
    };
    ok(
        &as_user(&[
            "init",
            ub.join("b").to_str().unwrap(),
            "--passphrase-file",
            upw.to_str().unwrap(),
            "--no-recovery-key",
        ]),
        "the user's init",
    );
    let o = as_user(&[
        "mount",
        ub.join("b").to_str().unwrap(),
        mnt(&f),
        "--passphrase-file",
        upw.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "a user mounted on root's directory");
    let e = stderr_of(&o);
    assert_eq!(e.matches("cannot mount").count(), 1, "{e}");
}

// ---------------------------------------------------------------------------
// 9. Mounting at boot: the mount helper, fstab, systemd units.

/// Installs `/usr/sbin/mount.fuse.ezfs` (a link to the binary under test) for the
/// test's duration, unless one is there already.
struct Helper(Option<PathBuf>);

impl Helper {
    fn install() -> Helper {
        let p = PathBuf::from("/usr/sbin/mount.fuse.ezfs");
        if fs::symlink_metadata(&p).is_ok() {
            return Helper(None);
        }
        std::os::unix::fs::symlink(EZFS, &p).unwrap();
        Helper(Some(p))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

#[test]
fn mount_t_fuse_ezfs_and_fstab_lines_work() {
    let f = Fixture::new();
    let _h = Helper::install();
    let opts = format!(
        "passphrase_file={},nofail,_netdev,x-systemd.automount,allow_other",
        pw(&f)
    );
    let o = run_cmd(
        Command::new("mount").args(["-t", "fuse.ezfs", b(&f), mnt(&f), "-o", &opts]),
        &f.scratch(),
    );
    ok(&o, "mount -t fuse.ezfs");
    assert!(is_mounted(&f.mnt));
    fs::write(f.m("x"), b"through mount(8)").unwrap();
    let o = run_cmd(Command::new("umount").arg(&f.mnt), &f.scratch());
    ok(&o, "umount");
    assert!(wait_until(Duration::from_secs(60), || !is_mounted(&f.mnt)));
    // a test-private fstab
    let fstab = f.root.join("fstab");
    fs::write(
        &fstab,
        format!(
            "# test\n{} {} fuse.ezfs passphrase_file={},noauto,nofail,x-systemd.requires=local-fs.target 0 0\n",
            b(&f),
            mnt(&f),
            pw(&f)
        ),
    )
    .unwrap();
    let o = run_cmd(
        Command::new("mount").arg("-T").arg(&fstab).arg(&f.mnt),
        &f.scratch(),
    );
    ok(&o, "mount -T fstab");
    assert_eq!(fs::read(f.m("x")).unwrap(), b"through mount(8)");
    let o = run_cmd(Command::new("umount").arg(&f.mnt), &f.scratch());
    ok(&o, "umount");
    // the passphrase never on a command line: a helper given none fails clearly
    let o = run_cmd(
        Command::new("mount").args(["-t", "fuse.ezfs", b(&f), mnt(&f), "-o", "nofail"]),
        &f.scratch(),
    );
    assert!(!o.status.success());
    assert!(stderr_of(&o).contains("passphrase"), "{}", stderr_of(&o));
}

#[test]
fn systemd_units_verify() {
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("NOTE: systemd-analyze is not installed; units not verified");
        return;
    }
    let f = Fixture::bare();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd");
    let bin = Path::new(EZFS).parent().unwrap();
    let service = fs::read_to_string(root.join("ezfs@.service"))
        .unwrap()
        .replace("@BINDIR@", bin.to_str().unwrap());
    fs::write(f.root.join("ezfs@.service"), service).unwrap();
    fs::copy(root.join("srv-ez.mount"), f.root.join("srv-ez.mount")).unwrap();
    for unit in ["ezfs@.service", "srv-ez.mount"] {
        let o = run_cmd(
            Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(f.root.join(unit)),
            &f.scratch(),
        );
        let e = stderr_of(&o);
        assert!(
            o.status.success() && !e.contains(unit.trim_end_matches("@.service")),
            "{unit}: {e}"
        );
    }
}

// ---------------------------------------------------------------------------
// 10. ezfs status.

#[test]
fn status_shows_each_mount_its_zones_jobs_and_counters() {
    let f = Fixture::new();
    let m = f.mount();
    let z = f.zone("z", "k1");
    fs::write(z.join("a"), vec![1u8; 100_000]).unwrap();
    let _ = fs::read(z.join("a")).unwrap();
    let held = fs::File::open(z.join("a")).unwrap();
    f.flip_raw("z/a", data_offset(3) + 1, 1);
    drop_caches();
    let _ = fs::read(z.join("a"));
    let o = f.run(&["status", mnt(&f), "--json"]);
    ok(&o, "status");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = &v[0];
    assert_eq!(e["state"], "live");
    let d = &e["daemon"];
    assert_eq!(d["pid"], m.pid().unwrap());
    assert_eq!(d["backing"], b(&f));
    assert!(d["open_handles"].as_u64().unwrap() >= 1);
    assert_eq!(d["zones"][0]["path"], "/z");
    assert_eq!(d["keys_in_use"][0], "k1");
    let c = &d["counters"];
    assert!(c["writes"].as_u64().unwrap() > 0 && c["bytes_written"].as_u64().unwrap() >= 100_000);
    assert!(c["reads"].as_u64().unwrap() > 0);
    assert!(
        c["auth_failures"].as_u64().unwrap() >= 1 && c["eio"].as_u64().unwrap() >= 1,
        "{c}"
    );
    let o = f.run(&["status"]);
    ok(&o, "status text");
    assert!(stdout_of(&o).contains(mnt(&f)) && stdout_of(&o).contains("live"));
    drop(held);
}

// ---------------------------------------------------------------------------
// 11. Recovery key and keystore backups.

#[test]
fn a_recovery_key_resets_a_lost_passphrase() {
    let f = Fixture::bare();
    let rk = f.root.join("recovery");
    ok(
        &f.run(&[
            "init",
            b(&f),
            "--passphrase-file",
            pw(&f),
            "--recovery-key-file",
            rk.to_str().unwrap(),
        ]),
        "init",
    );
    assert_eq!(fs::metadata(&rk).unwrap().permissions().mode() & 0o777, 0o600);
    ok(&f.key("create", "k1"), "key create");
    {
        let _m = f.mount();
        f.zone("z", "k1");
        fs::write(f.m("z/f"), b"kept").unwrap();
    }
    let newpw = f.root.join("newpw");
    fs::write(&newpw, "a new passphrase\n").unwrap();
    fs::remove_file(&f.pass).unwrap(); // lost
    let o = f.run(&[
        "passwd",
        b(&f),
        "--recovery-key-file",
        rk.to_str().unwrap(),
        "--new-passphrase-file",
        newpw.to_str().unwrap(),
    ]);
    ok(&o, "passwd with the recovery key");
    let m = f
        .try_mount_with(&[], &newpw)
        .expect("mount with the new passphrase");
    assert_eq!(fs::read(f.m("z/f")).unwrap(), b"kept");
    drop(m);
    // a wrong recovery key is refused
    let bad = f.root.join("bad");
    fs::write(
        &bad,
        "00000000-00000000-00000000-00000000-00000000-00000000-00000000-00000000\n",
    )
    .unwrap();
    let o = f.run(&[
        "passwd",
        b(&f),
        "--recovery-key-file",
        bad.to_str().unwrap(),
        "--new-passphrase-file",
        newpw.to_str().unwrap(),
    ]);
    code(&o, 1, "a wrong recovery key");
    // the recovery key survives a master-key rotation
    let o = f.run(&[
        "passwd",
        "--rotate-master",
        b(&f),
        "--passphrase-file",
        newpw.to_str().unwrap(),
    ]);
    ok(&o, "rotate");
    let o = f.run(&[
        "passwd",
        b(&f),
        "--recovery-key-file",
        rk.to_str().unwrap(),
        "--new-passphrase-file",
        pw_path(&f, "third").to_str().unwrap(),
    ]);
    ok(&o, "the recovery key after a rotation");
}

fn pw_path(f: &Fixture, text: &str) -> PathBuf {
    let p = f.root.join(text);
    fs::write(&p, format!("{text} passphrase\n")).unwrap();
    p
}

#[test]
fn keystore_backup_verify_and_what_a_restore_loses() {
    let f = Fixture::new();
    let backup = f.root.join("ks.backup");
    {
        let _m = f.mount();
        f.zone("z", "k1");
        fs::write(f.m("z/old"), b"on k1@1").unwrap();
    }
    ok(
        &f.run(&["keystore", "backup", backup.to_str().unwrap(), "--backing", b(&f)]),
        "backup",
    );
    assert_eq!(fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);
    ok(
        &f.run(&[
            "keystore",
            "verify",
            backup.to_str().unwrap(),
            "--passphrase-file",
            pw(&f),
        ]),
        "verify",
    );
    let o = f.run(&["keystore", "backup", backup.to_str().unwrap(), "--backing", b(&f)]);
    code(&o, 1, "a backup never overwrites a file");
    let bad = f.root.join("bad");
    fs::write(&bad, "wrong\n").unwrap();
    let o = f.run(&[
        "keystore",
        "verify",
        backup.to_str().unwrap(),
        "--passphrase-file",
        bad.to_str().unwrap(),
    ]);
    code(&o, 1, "verify with a wrong passphrase");
    // a key version made after the backup: restoring the backup loses it
    ok(&f.key("roll", "k1"), "roll");
    {
        let _m = f.mount();
        fs::write(f.m("z/new"), b"on k1@2").unwrap();
    }
    fs::copy(&backup, f.b(".ezfs/keystore.json")).unwrap();
    let o = f.run(&["fsck", b(&f), "--passphrase-file", pw(&f)]);
    code(&o, 1, "fsck after restoring an older keystore");
    let text = stdout_of(&o);
    assert!(text.contains("/z/new") && text.contains("k1@2"), "{text}");
    assert!(!text.contains("/z/old"), "{text}");
}

// ---------------------------------------------------------------------------
// 12. Install.

#[test]
fn install_puts_everything_in_place() {
    let f = Fixture::bare();
    let dest = f.root.join("dest");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let o = run_cmd(
        Command::new(&script)
            .args(["--no-build", "--prefix", "/usr/local", "--destdir"])
            .arg(&dest)
            .env("EZFS", EZFS),
        &f.scratch(),
    );
    ok(&o, "install.sh");
    for p in [
        "usr/local/bin/ezfs",
        "usr/local/share/man/man1/ezfs.1",
        "usr/local/share/man/man5/ezfs-format.5",
        "usr/local/share/bash-completion/completions/ezfs",
        "usr/local/share/zsh/site-functions/_ezfs",
        "usr/local/share/fish/vendor_completions.d/ezfs.fish",
        "etc/systemd/system/ezfs@.service",
    ] {
        let m = fs::metadata(dest.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(m.len() > 100, "{p} is nearly empty");
    }
    let helper = fs::read_link(dest.join("usr/sbin/mount.fuse.ezfs")).unwrap();
    assert_eq!(helper, Path::new("/usr/local/bin/ezfs"));
    let unit = fs::read_to_string(dest.join("etc/systemd/system/ezfs@.service")).unwrap();
    assert!(unit.contains("/usr/local/bin/ezfs mount") && !unit.contains("@BINDIR@"));
}

// ---------------------------------------------------------------------------
// 13. Which files use which key version.

#[test]
fn zone_files_lists_the_files_of_each_version() {
    let f = Fixture::new();
    let _m = f.mount();
    let z = f.zone("z", "k1");
    fs::write(z.join("one"), b"1").unwrap();
    fs::create_dir(z.join("sub")).unwrap();
    fs::write(z.join("sub/two"), b"2").unwrap();
    ok(&f.key("roll", "k1"), "roll");
    fs::write(z.join("three"), b"3").unwrap();
    let list = |extra: &[&str]| {
        let mut a = vec!["zone", "files", "--json", z.to_str().unwrap()];
        a.extend_from_slice(extra);
        let o = f.run(&a);
        ok(&o, "zone files");
        let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
        let mut out: Vec<(String, u64)> = v
            .iter()
            .map(|e| {
                (
                    e["path"].as_str().unwrap().rsplit('/').next().unwrap().to_owned(),
                    e["key_version"].as_u64().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(
        list(&[]),
        vec![("one".into(), 1), ("three".into(), 2), ("two".into(), 1)]
    );
    assert_eq!(
        list(&["--version", "1"]),
        vec![("one".into(), 1), ("two".into(), 1)]
    );
    // key prune points there
    let o = f.key("prune", "k1");
    code(&o, 1, "prune while @1 is used");
    assert!(
        stderr_of(&o).contains("k1@1 is still used by 2"),
        "{}",
        stderr_of(&o)
    );
}
