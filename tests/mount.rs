//! Mounting and unmounting: remount, refusals with clear messages, read-only mounts,
//! signals, passphrase changes, lost zone markers and command-line usage errors.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

#[test]
fn remount_keeps_everything_readable() {
    let f = Fixture::new();
    let m = f.mount();
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("z", "k1");
    f.zone("z/inner", "k2");
    fs::create_dir_all(f.m("plain/deep/er")).unwrap();
    let mut rng = Rng::new(21);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("z/a", rng.bytes(10_000)),
        ("z/empty", Vec::new()),
        ("z/inner/b", rng.bytes(600_000)),
        ("plain/c", rng.bytes(5000)),
        ("plain/deep/er/d", b"deep".to_vec()),
        ("top", b"top".to_vec()),
    ];
    for (rel, data) in &files {
        fs::write(f.m(rel), data).unwrap();
    }
    fs::set_permissions(f.m("z/a"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("inner/b", f.m("z/link")).unwrap();
    // an explicit mtime (utimensat) is stored in the backing file and survives remount
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    fs::File::options()
        .write(true)
        .open(f.m("z/inner/b"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    let mtime = 1_500_000_000;
    m.unmount();
    assert!(
        fs::read_dir(&f.mnt).unwrap().next().is_none(),
        "mountpoint not empty after umount"
    );
    for round in 0..2 {
        let m = f.mount();
        for (rel, data) in &files {
            assert_same(
                &fs::read(f.m(rel)).unwrap(),
                data,
                &format!("{rel} after remount {round}"),
            );
            assert_eq!(
                fs::metadata(f.m(rel)).unwrap().len(),
                data.len() as u64,
                "{rel}: size"
            );
        }
        assert_eq!(
            fs::metadata(f.m("z/a")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_link(f.m("z/link")).unwrap(),
            std::path::Path::new("inner/b")
        );
        assert_eq!(fs::read(f.m("z/link")).unwrap(), files[2].1);
        assert_eq!(fs::metadata(f.m("z/inner/b")).unwrap().mtime(), mtime);
        let mut zones = f.zone_paths();
        zones.sort();
        assert_eq!(
            zones,
            vec![
                f.m("z").to_str().unwrap().to_owned(),
                f.m("z/inner").to_str().unwrap().to_owned()
            ]
        );
        m.unmount();
    }
}

/// `/proc/self/mountinfo` lists the mount as type `fuse.ezfs` with the backing dir as
/// its source, as `df -t fuse.ezfs`, `findmnt` and the CLI's own lookup see it.
#[test]
fn mount_lists_as_fuse_ezfs_from_the_backing_dir() {
    let f = Fixture::new();
    let _m = f.mount();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = f.mnt.to_str().unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mnt))
        .unwrap_or_else(|| panic!("{mnt} not in mountinfo:\n{info}"));
    let (_, after) = line.split_once(" - ").expect("mountinfo separator");
    let mut fields = after.split(' ');
    assert_eq!(fields.next(), Some("fuse.ezfs"), "{line}");
    assert_eq!(fields.next(), f.backing.to_str(), "{line}");
}

#[test]
fn wrong_passphrase_is_refused() {
    let f = Fixture::new();
    let wrong = f.root.join("wrong");
    fs::write(&wrong, "not the passphrase\n").unwrap();
    let (c, msg) = f
        .try_mount_with(&[], &wrong)
        .err()
        .expect("mount with a wrong passphrase succeeded");
    assert_eq!(c, Some(1), "exit code; message: {msg}");
    assert!(msg.contains("wrong passphrase"), "message: {msg}");
    assert!(!is_mounted(&f.mnt), "something is mounted after a refused mount");
    assert!(
        daemon_pid(&f.mnt).is_none(),
        "a daemon is running after a refused mount"
    );
    // key commands refuse it the same way
    let o = f.run(&[
        "key",
        "create",
        "k2",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
    ]);
    code(&o, 2, "--passphrase-file without a value");
    let o = f.run(&[
        "key",
        "create",
        "k2",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        wrong.to_str().unwrap(),
    ]);
    code(&o, 1, "key create with a wrong passphrase");
    assert!(stderr_of(&o).contains("wrong passphrase"), "{}", stderr_of(&o));
    // an empty or missing passphrase file is an error too, and there is no prompt
    let empty = f.root.join("empty");
    fs::write(&empty, "").unwrap();
    let (c, msg) = f
        .try_mount_with(&[], &empty)
        .err()
        .expect("mount with an empty passphrase file");
    assert_eq!(c, Some(1), "{msg}");
    assert!(msg.contains("empty"), "message: {msg}");
    let (c, msg) = f
        .try_mount_with(&[], &f.root.join("nonexistent"))
        .err()
        .expect("mount without passphrase file");
    assert_eq!(c, Some(1), "{msg}");
    assert!(!is_mounted(&f.mnt));
    // and the right one still works
    let _m = f.mount();
}

#[test]
fn bad_mount_targets_fail_clearly() {
    let f = Fixture::new();
    let pw = f.pass.clone();
    // a non-empty mountpoint
    fs::write(f.mnt.join("stray"), b"x").unwrap();
    let (c, msg) = f
        .try_mount(&[])
        .err()
        .expect("mount on a non-empty mountpoint succeeded");
    assert_eq!(c, Some(1), "{msg}");
    assert!(msg.contains("not empty"), "message: {msg}");
    assert!(!is_mounted(&f.mnt));
    assert_eq!(fs::read(f.mnt.join("stray")).unwrap(), b"x");
    fs::remove_file(f.mnt.join("stray")).unwrap();

    // the backing dir already mounted (elsewhere), and the mountpoint already mounted
    let m = f.mount();
    let m2 = f.root.join("m2");
    fs::create_dir(&m2).unwrap();
    let (c, msg) = f
        .try_mount_at(&m2, &[], &pw)
        .err()
        .expect("second mount of one backing dir succeeded");
    assert_eq!(c, Some(1), "{msg}");
    assert!(msg.contains("already mounted"), "message: {msg}");
    assert!(!is_mounted(&m2), "second mount of one backing dir is mounted");
    let (c, msg) = f
        .try_mount(&[])
        .err()
        .expect("mount on a mounted mountpoint succeeded");
    assert_eq!(c, Some(1), "{msg}");
    assert!(msg.contains("already"), "message: {msg}");
    assert!(is_mounted(&f.mnt), "the refused mount disturbed the existing one");
    fs::write(f.m("still-works"), b"yes").unwrap();
    m.unmount();

    // a backing dir without .ezfs, a missing one, a mountpoint inside the backing dir
    let bare = Fixture::bare();
    let (c, msg) = bare
        .try_mount(&[])
        .err()
        .expect("mount of an uninitialized dir succeeded");
    assert_eq!(c, Some(1), "{msg}");
    assert!(
        msg.contains("not an ezfs backing directory") && msg.contains("ezfs init"),
        "message: {msg}"
    );
    assert!(!is_mounted(&bare.mnt));
    let missing = f.root.join("nope");
    let o = f.run(&[
        "mount",
        missing.to_str().unwrap(),
        f.mnt.to_str().unwrap(),
        "--passphrase-file",
        pw.to_str().unwrap(),
    ]);
    code(&o, 1, "mount of a missing backing dir");
    assert!(stderr_of(&o).contains("nope"), "{}", stderr_of(&o));
    let inner = f.b("inside");
    fs::create_dir(&inner).unwrap();
    let (c, msg) = f
        .try_mount_at(&inner, &[], &pw)
        .err()
        .expect("mount inside the backing dir succeeded");
    assert_eq!(c, Some(1), "{msg}");
    assert!(!is_mounted(&inner));
    let o = f.run(&[
        "mount",
        f.backing.to_str().unwrap(),
        missing.to_str().unwrap(),
        "--passphrase-file",
        pw.to_str().unwrap(),
    ]);
    code(&o, 1, "mount on a missing mountpoint");
    // umount of something that is not an ezfs mount
    let o = f.run(&["umount", f.mnt.to_str().unwrap()]);
    code(&o, 1, "umount of a directory that is not mounted");
    assert!(stderr_of(&o).contains("not an ezfs mount"), "{}", stderr_of(&o));
}

#[test]
fn read_only_mount_gives_erofs() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    fs::create_dir(f.m("plain")).unwrap();
    fs::write(f.m("z/f"), b"zone file").unwrap();
    fs::write(f.m("plain/g"), b"plain file").unwrap();
    fs::create_dir(f.m("z/emptydir")).unwrap();
    m.unmount();
    let raw_before = (f.raw("z/f"), f.raw("plain/g"));
    let _m = f.mount_opts(&["--read-only"]);
    assert_eq!(fs::read(f.m("z/f")).unwrap(), b"zone file");
    assert_eq!(fs::read(f.m("plain/g")).unwrap(), b"plain file");
    let erofs = libc::EROFS;
    for rel in ["z/f", "plain/g"] {
        assert_errno(
            fs::OpenOptions::new().write(true).open(f.m(rel)),
            erofs,
            &format!("open {rel} for writing"),
        );
        assert_errno(
            fs::OpenOptions::new().append(true).open(f.m(rel)),
            erofs,
            &format!("open {rel} for append"),
        );
        assert_errno(fs::remove_file(f.m(rel)), erofs, &format!("unlink {rel}"));
        assert_errno(
            fs::set_permissions(f.m(rel), fs::Permissions::from_mode(0o600)),
            erofs,
            &format!("chmod {rel}"),
        );
        let c = std::ffi::CString::new(f.m(rel).to_str().unwrap()).unwrap();
        // SAFETY: valid C string.
        let r = unsafe { libc::truncate(c.as_ptr(), 1) };
        assert_eq!(
            (r, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(erofs)),
            "truncate {rel}"
        );
    }
    assert_errno(fs::write(f.m("z/new"), b"x"), erofs, "create in a zone");
    assert_errno(fs::write(f.m("plain/new"), b"x"), erofs, "create in a plain dir");
    assert_errno(fs::create_dir(f.m("newdir")), erofs, "mkdir");
    assert_errno(fs::remove_dir(f.m("z/emptydir")), erofs, "rmdir");
    assert_errno(fs::rename(f.m("z/f"), f.m("z/f2")), erofs, "rename");
    assert_errno(
        std::os::unix::fs::symlink("x", f.m("plain/sym")),
        erofs,
        "symlink",
    );
    assert_errno(fs::hard_link(f.m("plain/g"), f.m("plain/g2")), erofs, "link");
    let o = f.run(&[
        "zone",
        "create",
        "--key",
        "k1",
        f.m("z/emptydir").to_str().unwrap(),
    ]);
    code(&o, 1, "zone create on a read-only mount");
    assert!(stderr_of(&o).contains("read-only"), "{}", stderr_of(&o));
    assert_eq!(
        (f.raw("z/f"), f.raw("plain/g")),
        raw_before,
        "backing changed under a read-only mount"
    );
    assert!(!f.b("z/emptydir/.ezfs-zone").exists());
}

#[test]
fn sigterm_unmounts_cleanly() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    fs::write(f.m("z/f"), b"survives SIGTERM").unwrap();
    let pid = m.pid().expect("daemon pid from /proc");
    // pgrep -f finds the same process
    let o = f.sh("pgrep", &[std::path::Path::new("-f"), &f.mnt]);
    let pids: Vec<i32> = stdout_of(&o)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(
        pids.contains(&pid),
        "pgrep -f {}: {pids:?}, /proc says {pid}",
        f.mnt.display()
    );
    // SAFETY: signalling the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(
        wait_until(Duration::from_secs(60), || !is_mounted(&f.mnt)),
        "still mounted 10 s after SIGTERM"
    );
    assert!(
        wait_until(Duration::from_secs(60), || !process_alive(pid)),
        "daemon alive 10 s after SIGTERM"
    );
    // no "Transport endpoint is not connected": the mountpoint is an ordinary empty dir
    let entries: Vec<_> = fs::read_dir(&f.mnt)
        .expect("read_dir of the mountpoint after SIGTERM")
        .collect();
    assert!(entries.is_empty(), "mountpoint not empty: {entries:?}");
    fs::metadata(&f.mnt).expect("stat of the mountpoint after SIGTERM");
    assert!(m.log().contains("signal"), "daemon log: {}", m.log());
    drop(m);

    // and with a file open: the daemon detaches lazily and exits once it is closed
    let m = f.mount();
    assert_eq!(fs::read(f.m("z/f")).unwrap(), b"survives SIGTERM");
    let open = fs::File::open(f.m("z/f")).unwrap();
    let pid = m.pid().unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert!(
        wait_until(Duration::from_secs(60), || !is_mounted(&f.mnt)),
        "busy mount not detached after SIGTERM"
    );
    let mut buf = [0u8; 64];
    let n = std::os::unix::fs::FileExt::read_at(&open, &mut buf, 0).expect("read through a handle kept open");
    assert_eq!(&buf[..n], b"survives SIGTERM");
    drop(open);
    assert!(
        wait_until(Duration::from_secs(60), || !process_alive(pid)),
        "daemon alive after the last close"
    );
    assert!(fs::read_dir(&f.mnt).unwrap().next().is_none());
    drop(m);
    let _m = f.mount();
    assert_eq!(fs::read(f.m("z/f")).unwrap(), b"survives SIGTERM");
}

#[test]
fn passwd_changes_the_passphrase() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    fs::write(f.m("z/f"), b"before passwd").unwrap();
    m.unmount();
    let b = f.backing.to_str().unwrap().to_owned();
    let new = f.root.join("newpw");
    fs::write(&new, "a brand new passphrase\n").unwrap();
    let wrong = f.root.join("wrong");
    fs::write(&wrong, "nope\n").unwrap();
    let o = f.run(&[
        "passwd",
        &b,
        "--passphrase-file",
        wrong.to_str().unwrap(),
        "--new-passphrase-file",
        new.to_str().unwrap(),
    ]);
    code(&o, 1, "passwd with a wrong old passphrase");
    assert!(stderr_of(&o).contains("wrong passphrase"), "{}", stderr_of(&o));
    let o = f.run(&[
        "passwd",
        &b,
        "--passphrase-file",
        f.pass.to_str().unwrap(),
        "--new-passphrase-file",
        new.to_str().unwrap(),
    ]);
    ok(&o, "passwd");
    let (c, msg) = f.try_mount(&[]).err().expect("the old passphrase still mounts");
    assert_eq!(c, Some(1));
    assert!(msg.contains("wrong passphrase"), "{msg}");
    assert!(!is_mounted(&f.mnt));
    let m = f
        .try_mount_with(&[], &new)
        .expect("mount with the new passphrase");
    assert_eq!(fs::read(f.m("z/f")).unwrap(), b"before passwd");
    // key commands use the new passphrase, the running mount sees the new key at once
    let o = f.run(&[
        "key",
        "create",
        "k2",
        "--backing",
        &b,
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    code(&o, 1, "key create with the old passphrase");
    let o = f.run(&[
        "key",
        "create",
        "k2",
        "--backing",
        &b,
        "--passphrase-file",
        new.to_str().unwrap(),
    ]);
    ok(&o, "key create with the new passphrase");
    f.zone("z2", "k2");
    fs::write(f.m("z2/g"), b"under k2").unwrap();
    assert_eq!(f.zone_info("z2/g")["key"], "k2");
    // passwd while mounted: the mount keeps working and later key commands reload fine
    let newer = f.root.join("newerpw");
    fs::write(&newer, "third passphrase\n").unwrap();
    let o = f.run(&[
        "passwd",
        &b,
        "--passphrase-file",
        new.to_str().unwrap(),
        "--new-passphrase-file",
        newer.to_str().unwrap(),
    ]);
    ok(&o, "passwd while mounted");
    let o = f.run(&[
        "key",
        "roll",
        "k2",
        "--backing",
        &b,
        "--passphrase-file",
        newer.to_str().unwrap(),
    ]);
    ok(&o, "key roll after passwd while mounted");
    fs::write(f.m("z2/h"), b"under k2@2").unwrap();
    assert_eq!(f.zone_info("z2/h")["key_version"], 2);
    assert_eq!(fs::read(f.m("z2/g")).unwrap(), b"under k2");
    m.unmount();
    let _m = f
        .try_mount_with(&[], &newer)
        .expect("mount with the newest passphrase");
    assert_eq!(fs::read(f.m("z2/h")).unwrap(), b"under k2@2");
    assert_eq!(fs::read(f.m("z/f")).unwrap(), b"before passwd");
}

#[test]
fn lost_zone_marker_refuses_mount() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    f.zone("gone", "k1");
    fs::write(f.m("z/f"), b"zone data").unwrap();
    let gone_id = f.zone_info("gone")["zone_id"].as_str().unwrap().to_owned();
    m.unmount();
    let marker = f.b("z/.ezfs-zone");
    let saved = fs::read(&marker).unwrap();
    fs::remove_file(&marker).unwrap();
    let (c, msg) = f
        .try_mount(&[])
        .err()
        .expect("mount with a zone marker missing succeeded");
    assert_eq!(c, Some(1), "{msg}");
    assert!(
        msg.contains("/z") && msg.contains("marker") && msg.contains("zone repair"),
        "message: {msg}"
    );
    assert!(!is_mounted(&f.mnt));
    assert!(daemon_pid(&f.mnt).is_none());
    // restoring the marker makes it mountable again; a zone removed with its directory
    // is never forgotten silently: mount names it and the command that forgets it
    fs::write(&marker, &saved).unwrap();
    fs::remove_dir_all(f.b("gone")).unwrap();
    let (c, msg) = f.try_mount(&[]).err().expect("mount with a zone gone succeeded");
    assert_eq!(c, Some(1), "{msg}");
    assert!(
        msg.contains(&gone_id) && msg.contains("zone forget"),
        "message: {msg}"
    );
    let o = f.run(&[
        "zone",
        "forget",
        &gone_id,
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, "zone forget");
    let _m = f.mount();
    assert_eq!(fs::read(f.m("z/f")).unwrap(), b"zone data");
    assert_eq!(f.zone_paths(), vec![f.m("z").to_str().unwrap().to_owned()]);
}

#[test]
fn bad_usage_exits_2() {
    let f = Fixture::new();
    let b = f.backing.to_str().unwrap();
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["mount", b],
        vec!["mount", b, "/tmp", "--no-such-flag"],
        vec!["zone"],
        vec!["zone", "create", "/tmp"],
        vec!["zone", "info"],
        vec!["key", "create"],
        vec!["key", "list", "--backing"],
        vec!["init"],
        vec!["umount"],
    ] {
        let o = f.run(&args);
        code(&o, 2, &format!("ezfs {args:?}"));
        assert!(!o.stderr.is_empty(), "ezfs {args:?}: no message on stderr");
    }
    // key commands outside a mount without --backing: a usage error too
    let o = f.run_in(&f.root, &["key", "list"]);
    code(&o, 2, "key list outside a mount without --backing");
    assert!(stderr_of(&o).contains("--backing"), "{}", stderr_of(&o));
    for args in [
        vec!["--help"],
        vec!["mount", "--help"],
        vec!["zone", "create", "--help"],
        vec!["key", "--help"],
    ] {
        let o = f.run(&args);
        ok(&o, &format!("ezfs {args:?}"));
        assert!(
            stdout_of(&o).contains("Usage"),
            "ezfs {args:?}: {}",
            stdout_of(&o)
        );
    }
    // an operation that fails is 1, not 2
    code(
        &f.run(&["zone", "list", f.root.to_str().unwrap()]),
        1,
        "zone list outside a mount",
    );
    let o = f.run(&["key", "list", "--backing", b]);
    code(&o, 1, "key list with no passphrase and no mount to ask");
    let o = f.run(&[
        "key",
        "list",
        "--backing",
        b,
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, "key list");
    assert!(stdout_of(&o).contains("k1"));
}

#[test]
fn umount_of_a_busy_mount_is_refused_then_works() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    fs::write(f.m("z/f"), b"busy").unwrap();
    let open = fs::File::open(f.m("z/f")).unwrap();
    let o = f.run(&["umount", f.mnt.to_str().unwrap()]);
    code(&o, 1, "umount with a file open");
    assert!(stderr_of(&o).contains("busy"), "{}", stderr_of(&o));
    assert!(is_mounted(&f.mnt), "a refused umount unmounted anyway");
    let mut buf = [0u8; 8];
    let n = std::os::unix::fs::FileExt::read_at(&open, &mut buf, 0).unwrap();
    assert_eq!(
        &buf[..n],
        b"busy",
        "the mount stopped working after a refused umount"
    );
    drop(open);
    m.unmount();
}

/// A hold on the mount that ends within moments (here a process that closes its file
/// after half a second; in tests, a child forked by another thread before it execs)
/// does not make `ezfs umount` fail.
#[test]
fn umount_waits_out_a_hold_that_ends_at_once() {
    let f = Fixture::new();
    let m = f.mount();
    fs::write(f.m("f"), b"x").unwrap();
    let mut holder = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec 3<\"$1\"; echo held; sleep 0.5")
        .arg("sh")
        .arg(f.m("f"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "held\n");
    // asserts that ezfs umount succeeds, the mount is gone and the daemon exited
    m.unmount();
    let _ = holder.wait();
}

/// The backing tree copied with `cp -a` or `tar` (zone markers included) mounts and
/// reads like the original, even while the original is mounted.
#[test]
fn copied_backing_dir_mounts() {
    let f = Fixture::new();
    let m = f.mount();
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("z", "k1");
    f.zone("z/inner", "k2");
    let data = Rng::new(31).bytes(70_000);
    fs::write(f.m("z/f"), &data).unwrap();
    fs::write(f.m("z/inner/g"), b"inner").unwrap();
    let copy = f.root.join("copy");
    let o = f.sh("cp", &[std::path::Path::new("-a"), &f.backing, &copy]);
    ok(&o, "cp -a backing");
    let tarball = f.root.join("b.tar");
    ok(
        &f.sh(
            "tar",
            &[
                std::path::Path::new("-C"),
                &f.backing,
                std::path::Path::new("-cf"),
                &tarball,
                std::path::Path::new("."),
            ],
        ),
        "tar c",
    );
    let untar = f.root.join("untar");
    fs::create_dir(&untar).unwrap();
    ok(
        &f.sh(
            "tar",
            &[
                std::path::Path::new("-C"),
                &untar,
                std::path::Path::new("-xpf"),
                &tarball,
            ],
        ),
        "tar x",
    );
    for (i, backing) in [copy, untar].into_iter().enumerate() {
        let mnt = f.root.join(format!("m-copy{i}"));
        fs::create_dir(&mnt).unwrap();
        let mut cmd = std::process::Command::new(EZFS);
        cmd.arg("mount")
            .arg(&backing)
            .arg(&mnt)
            .arg("--passphrase-file")
            .arg(&f.pass);
        let log = f.root.join(format!("copy{i}.log"));
        cmd.stderr(fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null());
        let status = cmd.status().unwrap();
        // a guard for this extra mount: unmounts even if an assertion below fails
        struct Guard(std::path::PathBuf, std::path::PathBuf);
        impl Drop for Guard {
            fn drop(&mut self) {
                force_unmount(&self.0, &self.1);
            }
        }
        let _g = Guard(mnt.clone(), f.scratch());
        assert!(
            status.success(),
            "mount of the copy: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        assert_same(&fs::read(mnt.join("z/f")).unwrap(), &data, "z/f in the copy");
        assert_eq!(fs::read(mnt.join("z/inner/g")).unwrap(), b"inner");
        fs::write(mnt.join("z/inner/new"), b"new in copy").unwrap();
        assert_eq!(
            &fs::read(backing.join("z/inner/new")).unwrap()[..8],
            MAGIC,
            "new file in the copy's zone"
        );
    }
    assert_same(&fs::read(f.m("z/f")).unwrap(), &data, "original still fine");
    m.unmount();
}

/// `-o ro` makes the kernel mount read-only, but the daemon is not told: it still
/// writes to the backing dir.
#[test]
fn dash_o_ro_is_as_read_only_as_read_only() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    fs::create_dir(f.m("z/emptydir")).unwrap();
    fs::create_dir(f.m("plaindir")).unwrap();
    m.unmount();
    // an empty file without a header (as a crash, or a copy tool, may leave it)
    fs::write(f.b("z/empty"), b"").unwrap();
    let _m = f.mount_opts(&["-o", "ro"]);
    assert_errno(fs::write(f.m("plaindir/x"), b"x"), libc::EROFS, "create on -o ro");
    assert_eq!(fs::read(f.m("z/empty")).unwrap(), b"");
    assert_eq!(
        fs::metadata(f.b("z/empty")).unwrap().len(),
        0,
        "reading an empty file on -o ro wrote to it"
    );
    let o = f.run(&["zone", "create", "--key", "k1", f.m("plaindir").to_str().unwrap()]);
    code(&o, 1, "zone create on a -o ro mount");
    assert!(
        !f.b("plaindir/.ezfs-zone").exists(),
        "zone create wrote a marker under a -o ro mount"
    );
}
