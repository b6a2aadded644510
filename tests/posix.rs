//! POSIX behaviour as ext4 has it (issue 20): modes under every umask, rewinddir,
//! atime options, extended attributes of symlinks, POSIX ACLs, file handles, a zone
//! at the mount root, and mount options. Each runs in a zone and in a plain
//! directory of an `--allow-other` mount, as other users where it matters.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const USER: u32 = 61021;

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// An `--allow-other` mount with a zone `z` and a plain dir `p`, both mode 1777.
fn shared(extra: &[&str]) -> (Fixture, Mount) {
    let f = Fixture::new();
    set_mode(&f.root, 0o755);
    let mut opts = vec!["--allow-other"];
    opts.extend_from_slice(extra);
    let m = f.mount_opts(&opts);
    f.zone("z", "k1");
    fs::create_dir(f.m("p")).unwrap();
    for d in ["z", "p"] {
        set_mode(&f.m(d), 0o1777);
    }
    let o = f.run(&[
        "key",
        "grant",
        "k1",
        "--user",
        &USER.to_string(),
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, "grant");
    (f, m)
}

/// `sh -c SCRIPT` as the test user, `$1`... = `args`.
fn user_sh(f: &Fixture, script: &str, args: &[&str]) -> std::process::Output {
    let u = USER.to_string();
    let mut a = vec![
        "--reuid",
        &u,
        "--regid",
        &u,
        "--clear-groups",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ];
    a.extend_from_slice(args);
    run_cmd(Command::new("setpriv").args(&a), &f.scratch())
}

/// Compiles a C program into the scratch dir; its path.
fn cc(f: &Fixture, name: &str, src: &str) -> PathBuf {
    let c = f.scratch().join(format!("{name}.c"));
    let bin = f.scratch().join(name);
    fs::write(&c, src).unwrap();
    let o = run_cmd(
        Command::new("cc").arg("-O0").arg("-o").arg(&bin).arg(&c),
        &f.scratch(),
    );
    ok(&o, &format!("cc {name}"));
    bin
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

// ---------------------------------------------------------------------------
// 1. The caller's umask, not the daemon's.

#[test]
fn modes_follow_the_callers_umask_only() {
    let (f, _m) = shared(&[]);
    for dir in ["z", "p"] {
        for (umask, dmode, fmode) in [
            (0o000, 0o777, 0o666),
            (0o002, 0o775, 0o664),
            (0o022, 0o755, 0o644),
            (0o077, 0o700, 0o600),
        ] {
            let base = f.m(&format!("{dir}/u{umask:o}"));
            let o = user_sh(
                &f,
                &format!("umask {umask:o} && mkdir \"$1/d\" && touch \"$1/f\" && mkfifo \"$1/fifo\""),
                &[base.to_str().unwrap()],
            );
            let o2 = if o.status.success() {
                o
            } else {
                // the base dir first
                ok(
                    &user_sh(&f, "mkdir \"$1\"", &[base.to_str().unwrap()]),
                    "mkdir base",
                );
                user_sh(
                    &f,
                    &format!("umask {umask:o} && mkdir \"$1/d\" && touch \"$1/f\" && mkfifo \"$1/fifo\""),
                    &[base.to_str().unwrap()],
                )
            };
            ok(&o2, "create with umask");
            assert_eq!(
                mode_of(&base.join("d")),
                dmode,
                "{dir} mkdir under umask {umask:o}"
            );
            assert_eq!(
                mode_of(&base.join("f")),
                fmode,
                "{dir} touch under umask {umask:o}"
            );
            assert_eq!(
                mode_of(&base.join("fifo")),
                fmode,
                "{dir} mkfifo under umask {umask:o}"
            );
        }
        // set-user-id and set-group-id bits asked for at create are kept
        let p = f.m(&format!("{dir}/setid"));
        let o = user_sh(
            &f,
            "umask 0 && python3 -c 'import os,sys; os.close(os.open(sys.argv[1], os.O_CREAT|os.O_WRONLY, 0o6777))' \"$1\"",
            &[p.to_str().unwrap()],
        );
        ok(&o, "create with 06777");
        assert_eq!(mode_of(&p), 0o6777, "{dir}: set-id bits at create");
        assert_eq!(fs::metadata(&p).unwrap().uid(), USER);
    }
}

// ---------------------------------------------------------------------------
// 2. rewinddir sees names created after opendir.

const REWIND: &str = r#"
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static int has(DIR *d, const char *n) {
    struct dirent *e; int found = 0;
    while ((e = readdir(d))) if (!strcmp(e->d_name, n)) found = 1;
    return found;
}
int main(int argc, char **argv) {
    char path[4096];
    DIR *d = opendir(argv[1]);
    if (!d) return 2;
    if (has(d, "newfile")) return 3;
    snprintf(path, sizeof path, "%s/newfile", argv[1]);
    int fd = creat(path, 0644);
    if (fd < 0) return 4;
    close(fd);
    rewinddir(d);
    return has(d, "newfile") ? 0 : 1;
}
"#;

#[test]
fn rewinddir_sees_new_names() {
    let (f, _m) = shared(&[]);
    let bin = cc(&f, "rewind", REWIND);
    for dir in ["z", "p"] {
        let d = f.m(&format!("{dir}/r"));
        fs::create_dir(&d).unwrap();
        for i in 0..50 {
            fs::write(d.join(format!("old{i}")), b"").unwrap();
        }
        let o = run_cmd(Command::new(&bin).arg(&d), &f.scratch());
        assert_eq!(o.status.code(), Some(0), "{dir}: newfile missing after rewinddir");
    }
}

// ---------------------------------------------------------------------------
// 3. atime options.

fn atime(p: &Path) -> i64 {
    drop_caches();
    fs::metadata(p).unwrap().atime()
}

fn set_times(p: &Path, atime: i64, mtime: i64) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let t = [
        libc::timespec {
            tv_sec: atime,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and times.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), 0) },
        0
    );
}

#[test]
fn atime_options_are_honoured() {
    let day = 24 * 3600;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (opt, old_updates, fresh_updates, dir_updates) in [
        ("noatime", false, false, false),
        ("relatime", true, false, true),
        ("strictatime", true, true, true),
        ("nodiratime", true, false, false),
    ] {
        let (f, m) = shared(&["-o", opt]);
        for dir in ["z", "p"] {
            let file = f.m(&format!("{dir}/a"));
            fs::write(&file, b"read me").unwrap();
            // atime before mtime: relatime updates it; strictatime too; noatime never
            set_times(&file, now - 3 * day, now - 2 * day);
            let _ = fs::read(&file).unwrap();
            let a = atime(&file);
            assert_eq!(
                a > now - 10,
                old_updates,
                "-o {opt}, {dir}: atime {a} after reading an old one"
            );
            // an atime after mtime and ctime (setting it changes the ctime: one in the
            // future is after both), less than a day old: only strictatime moves it
            set_times(&file, now + 3600, now - 2 * day);
            let _ = fs::read(&file).unwrap();
            let a = atime(&file);
            assert_eq!(
                a != now + 3600,
                fresh_updates,
                "-o {opt}, {dir}: atime {a} after reading a fresh one"
            );
            // directories
            let d = f.m(&format!("{dir}/sub"));
            fs::create_dir_all(&d).unwrap();
            set_times(&d, now - 3 * day, now - 2 * day);
            let _ = fs::read_dir(&d).unwrap().count();
            let a = atime(&d);
            assert_eq!(a > now - 10, dir_updates, "-o {opt}, {dir}: directory atime {a}");
        }
        drop(m);
    }
}

// ---------------------------------------------------------------------------
// 4. Extended attributes of symlinks.

#[test]
fn symlinks_have_extended_attributes() {
    let (f, _m) = shared(&[]);
    for dir in ["z", "p"] {
        let l = f.m(&format!("{dir}/l"));
        std::os::unix::fs::symlink("target", &l).unwrap();
        let o = run_cmd(
            Command::new("setfattr")
                .args(["-h", "-n", "trusted.x", "-v", "1"])
                .arg(&l),
            &f.scratch(),
        );
        ok(&o, "setfattr -h on a symlink");
        let o = run_cmd(
            Command::new("getfattr").args(["-h", "-d", "-m", "-"]).arg(&l),
            &f.scratch(),
        );
        ok(&o, "getfattr -h");
        assert!(stdout_of(&o).contains("trusted.x=\"1\""), "{}", stdout_of(&o));
        // the target is not touched (it does not even exist)
        assert!(!f.m(&format!("{dir}/target")).exists());
        let o = run_cmd(
            Command::new("setfattr").args(["-h", "-x", "trusted.x"]).arg(&l),
            &f.scratch(),
        );
        ok(&o, "setfattr -h -x");
        let o = run_cmd(
            Command::new("getfattr").args(["-h", "-d", "-m", "-"]).arg(&l),
            &f.scratch(),
        );
        assert!(!stdout_of(&o).contains("trusted.x"), "{}", stdout_of(&o));
    }
}

// ---------------------------------------------------------------------------
// 6. POSIX ACLs.

#[test]
fn posix_acls_are_enforced_inherited_and_in_step_with_modes() {
    let (f, _m) = shared(&[]);
    for dir in ["z", "p"] {
        let file = f.m(&format!("{dir}/acl"));
        fs::write(&file, b"for one user").unwrap();
        set_mode(&file, 0o640);
        let cat = || user_sh(&f, "cat \"$1\"", &[file.to_str().unwrap()]);
        assert!(!cat().status.success(), "{dir}: read before the ACL");
        let o = run_cmd(
            Command::new("setfacl")
                .args(["-m", &format!("u:{USER}:rw")])
                .arg(&file),
            &f.scratch(),
        );
        ok(&o, "setfacl");
        // the mode shows the ACL mask at once
        assert_eq!(mode_of(&file), 0o660, "{dir}: mode after setfacl");
        let o = cat();
        ok(&o, "read through the ACL");
        assert_eq!(stdout_of(&o), "for one user");
        // chmod narrows the mask, and the ACL follows
        set_mode(&file, 0o600);
        assert!(!cat().status.success(), "{dir}: read after chmod 600");
        // default ACLs of a directory are inherited by new files
        let d = f.m(&format!("{dir}/inherit"));
        fs::create_dir(&d).unwrap();
        let o = run_cmd(
            Command::new("setfacl")
                .args(["-d", "-m", &format!("u:{USER}:rwx")])
                .arg(&d),
            &f.scratch(),
        );
        ok(&o, "setfacl -d");
        set_mode(&d, 0o777);
        fs::write(d.join("new"), b"inherited").unwrap();
        let o = run_cmd(Command::new("getfacl").arg("-c").arg(d.join("new")), &f.scratch());
        ok(&o, "getfacl");
        assert!(
            stdout_of(&o).contains(&format!("user:{USER}:rwx")),
            "{dir}: {}",
            stdout_of(&o)
        );
        let o = user_sh(&f, "cat \"$1\"", &[d.join("new").to_str().unwrap()]);
        ok(&o, "read through the inherited ACL");
    }
}

// ---------------------------------------------------------------------------
// 7. File handles survive the kernel's cache.

const HANDLES: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    /* argv[1]: the mount point, argv[2]: a file in it */
    struct file_handle *h = malloc(sizeof *h + 128);
    int mount_id;
    h->handle_bytes = 128;
    if (name_to_handle_at(AT_FDCWD, argv[2], h, &mount_id, 0) != 0) { perror("name_to_handle_at"); return 2; }
    int mfd = open(argv[1], O_RDONLY | O_DIRECTORY);
    FILE *dc = fopen("/proc/sys/vm/drop_caches", "w");
    sync(); fputs("3\n", dc); fclose(dc);
    int fd = open_by_handle_at(mfd, h, O_RDONLY);
    if (fd < 0) { perror("open_by_handle_at"); return 3; }
    char buf[64]; ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) { perror("read"); return 4; }
    buf[n] = 0; fputs(buf, stdout);
    return 0;
}
"#;

#[test]
fn file_handles_survive_cache_eviction() {
    let (f, _m) = shared(&[]);
    let bin = cc(&f, "handles", HANDLES);
    for dir in ["z", "p"] {
        let deep = f.m(&format!("{dir}/a/b"));
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("f"), format!("by handle in {dir}")).unwrap();
        let o = run_cmd(Command::new(&bin).arg(&f.mnt).arg(deep.join("f")), &f.scratch());
        ok(
            &o,
            &format!("{dir}: name_to_handle_at + open_by_handle_at after drop_caches"),
        );
        assert_eq!(stdout_of(&o), format!("by handle in {dir}"));
    }
}

// ---------------------------------------------------------------------------
// 9. A zone at the mount root.

#[test]
fn a_zone_at_the_mount_root() {
    let f = Fixture::new();
    let m = f.mount();
    ok(
        &f.run(&["zone", "create", "--key", "k1", f.mnt.to_str().unwrap()]),
        "zone create on the mount root",
    );
    fs::write(f.m("top"), b"encrypted at the root").unwrap();
    assert!(f.raw("top").starts_with(MAGIC), "a file at the root is encrypted");
    assert!(f.b(".ezfs/keystore.json").exists());
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("inner", "k2");
    fs::write(f.m("inner/x"), b"nested").unwrap();
    assert_eq!(f.zone_info("inner/x")["key"], "k2");
    assert_eq!(f.zone_info("top")["key"], "k1");
    let e = fs::rename(f.m("top"), f.m("inner/top")).unwrap_err();
    assert_eq!(errno(&e), libc::EXDEV);
    ok(&f.key("roll", "k1"), "roll");
    ok(
        &f.run(&["zone", "reencrypt", f.mnt.to_str().unwrap()]),
        "reencrypt the root zone",
    );
    assert_eq!(f.zone_info("top")["key_version"], 2);
    let zones = f.zone_paths();
    assert!(
        zones.contains(&f.mnt.to_str().unwrap().to_string()) || zones.iter().any(|z| z.ends_with("/m/")),
        "{zones:?}"
    );
    m.unmount();
    let o = f.run(&[
        "fsck",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&o, "fsck");
    let _m = f.mount();
    assert_eq!(fs::read(f.m("top")).unwrap(), b"encrypted at the root");
    fs::write(f.m("after"), b"still a zone").unwrap();
    assert!(f.raw("after").starts_with(MAGIC));
}

// ---------------------------------------------------------------------------
// 10. Mount options.

#[test]
fn mount_options_that_users_pass() {
    let f = Fixture::new();
    let m = f.mount_opts(&["-o", "dev,suid,relatime"]);
    let line = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.contains(&format!(" {} ", f.mnt.display())))
        .unwrap()
        .to_owned();
    assert!(!line.contains("nosuid") && !line.contains("nodev"), "{line}");
    drop(m);
    let (c, msg) = f
        .try_mount(&["-o", "frobnicate"])
        .err()
        .expect("an unknown option mounted");
    assert_eq!(c, Some(2), "{msg}");
    assert!(
        msg.contains("unknown mount option 'frobnicate'") && msg.trim().lines().count() == 1,
        "{msg}"
    );
}
