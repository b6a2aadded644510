//! The zone rules of SPEC.md section 4, through real syscalls and through the shell
//! tools a user would run (`mv`, `ln`).

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// (key name, key version, zone path) of `rel` according to `ezfs zone info --json`.
fn info(f: &Fixture, rel: &str) -> (String, u64, String) {
    let v = f.zone_info(rel);
    (
        v["key"].as_str().expect("key").to_owned(),
        v["key_version"].as_u64().expect("key_version"),
        v["zone"].as_str().expect("zone").to_owned(),
    )
}

fn file_id(f: &Fixture, rel: &str) -> String {
    f.zone_info(rel)["file_id"].as_str().expect("file_id").to_owned()
}

fn mp(f: &Fixture, rel: &str) -> String {
    f.m(rel).to_str().unwrap().to_owned()
}

/// Key name stored in an encrypted backing file's header (offset 53, length at 52).
fn header_key(raw: &[u8]) -> String {
    assert_eq!(&raw[..8], MAGIC, "not an encrypted file");
    let n = raw[52] as usize;
    String::from_utf8(raw[53..53 + n].to_vec()).unwrap()
}

/// Two zones (za: k1, zb: k2), a nested zone za/inner (k1) and a plain dir p.
fn two_zones(f: &Fixture) {
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("za", "k1");
    f.zone("zb", "k2");
    f.zone("za/inner", "k1");
    fs::create_dir(f.m("p")).unwrap();
}

#[test]
fn rename_across_boundaries_is_exdev() {
    let f = Fixture::new();
    let _m = f.mount();
    two_zones(&f);
    fs::write(f.m("za/f"), b"in za").unwrap();
    fs::write(f.m("zb/g"), b"in zb").unwrap();
    fs::write(f.m("p/h"), b"plain").unwrap();
    fs::write(f.m("top"), b"plain at root").unwrap();
    fs::create_dir(f.m("za/d")).unwrap();
    fs::write(f.m("za/d/x"), b"in za/d").unwrap();
    fs::create_dir(f.m("p/pd")).unwrap();
    for (from, to) in [
        ("za/f", "zb/f"),         // zone -> other zone
        ("za/f", "za/inner/f"),   // zone -> nested zone (same key, other zone)
        ("za/inner", "zb/inner"), // a nested zone root out of its parent zone
        ("za/f", "p/f"),          // zone -> plain
        ("za/f", "f"),            // zone -> plain root
        ("zb/g", "za/g"),
        ("p/h", "za/h"), // plain -> zone
        ("top", "zb/top"),
        ("za/d", "p/d"), // directories too
        ("p/pd", "zb/pd"),
    ] {
        assert_errno(
            fs::rename(f.m(from), f.m(to)),
            libc::EXDEV,
            &format!("rename {from} -> {to}"),
        );
        assert!(f.m(from).exists(), "{from} vanished after a refused rename");
        assert!(!f.m(to).exists(), "{to} appeared after a refused rename");
    }
    // renameat2 with RENAME_EXCHANGE and RENAME_NOREPLACE across a boundary: EXDEV too
    let a = std::ffi::CString::new(mp(&f, "za/f")).unwrap();
    let b = std::ffi::CString::new(mp(&f, "p/h")).unwrap();
    let c = std::ffi::CString::new(mp(&f, "p/new")).unwrap();
    for (to, flags) in [(&b, libc::RENAME_EXCHANGE), (&c, libc::RENAME_NOREPLACE)] {
        // SAFETY: valid C strings and AT_FDCWD.
        let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
        assert_eq!(r, -1, "renameat2 flags {flags} across a zone boundary succeeded");
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EXDEV));
    }
    assert_eq!(fs::read(f.m("za/f")).unwrap(), b"in za");
    assert_eq!(fs::read(f.m("p/h")).unwrap(), b"plain");
}

#[test]
fn mv_across_boundaries_copies_and_reencrypts() {
    let f = Fixture::new();
    let _m = f.mount();
    two_zones(&f);
    let mut rng = Rng::new(11);
    let secret = rng.bytes(3 * 4096 + 5);
    let zb = mp(&f, "zb");
    let za = mp(&f, "za");

    // zone -> other zone: new file under zb's key (k2), fresh file id
    fs::write(f.m("za/f"), &secret).unwrap();
    let id_before = file_id(&f, "za/f");
    ok(&f.sh("mv", &[&f.m("za/f"), &f.m("zb/f")]), "mv za/f zb/f");
    assert!(
        !f.m("za/f").exists() && !f.b("za/f").exists(),
        "mv left the source behind"
    );
    assert_same(&fs::read(f.m("zb/f")).unwrap(), &secret, "zb/f after mv");
    assert_eq!(info(&f, "zb/f"), ("k2".into(), 1, zb.clone()));
    assert_ne!(
        file_id(&f, "zb/f"),
        id_before,
        "mv across zones kept the file id: not re-encrypted"
    );
    let raw = f.raw("zb/f");
    assert_eq!(header_key(&raw), "k2");
    assert!(!contains(&raw, &secret[..64]), "plaintext in zb/f's backing file");

    // zone -> nested zone (same key k1, other zone)
    fs::write(f.m("za/n"), &secret).unwrap();
    ok(
        &f.sh("mv", &[&f.m("za/n"), &f.m("za/inner/n")]),
        "mv za/n za/inner/n",
    );
    assert_eq!(info(&f, "za/inner/n").2, mp(&f, "za/inner"));
    assert_same(&fs::read(f.m("za/inner/n")).unwrap(), &secret, "za/inner/n");

    // zone -> plain: the backing file is the plaintext
    ok(&f.sh("mv", &[&f.m("zb/f"), &f.m("p/f")]), "mv zb/f p/f");
    assert_same(&f.raw("p/f"), &secret, "backing p/f after mv out of a zone");
    assert!(!f.m("zb/f").exists());
    let o = f.run(&["zone", "info", &mp(&f, "p/f")]);
    code(&o, 1, "zone info of a plain file");

    // plain -> zone: encrypted under the zone's key
    ok(&f.sh("mv", &[&f.m("p/f"), &f.m("za/f2")]), "mv p/f za/f2");
    assert_same(&fs::read(f.m("za/f2")).unwrap(), &secret, "za/f2");
    assert_eq!(info(&f, "za/f2"), ("k1".into(), 1, za.clone()));
    let raw = f.raw("za/f2");
    assert_eq!(header_key(&raw), "k1");
    assert!(
        !contains(&raw, &secret[..64]),
        "plaintext in za/f2's backing file"
    );
    assert!(!f.b("p/f").exists());

    // a directory tree from zone to zone, and from plain to zone
    fs::create_dir_all(f.m("za/tree/sub")).unwrap();
    fs::write(f.m("za/tree/a"), &secret[..100]).unwrap();
    fs::write(f.m("za/tree/sub/b"), &secret).unwrap();
    ok(
        &f.sh("mv", &[&f.m("za/tree"), &f.m("zb/tree")]),
        "mv za/tree zb/tree",
    );
    assert!(!f.m("za/tree").exists());
    assert_eq!(fs::read(f.m("zb/tree/a")).unwrap(), &secret[..100]);
    assert_same(&fs::read(f.m("zb/tree/sub/b")).unwrap(), &secret, "zb/tree/sub/b");
    assert_eq!(info(&f, "zb/tree/sub/b").0, "k2");
    assert_eq!(header_key(&f.raw("zb/tree/sub/b")), "k2");
    fs::create_dir_all(f.m("p/ptree")).unwrap();
    fs::write(f.m("p/ptree/c"), &secret).unwrap();
    ok(
        &f.sh("mv", &[&f.m("p/ptree"), &f.m("zb/ptree")]),
        "mv p/ptree zb/ptree",
    );
    assert_eq!(header_key(&f.raw("zb/ptree/c")), "k2");
    assert_same(&fs::read(f.m("zb/ptree/c")).unwrap(), &secret, "zb/ptree/c");
}

#[test]
fn rename_within_zone_and_of_nested_zone_root() {
    let f = Fixture::new();
    let m = f.mount();
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("z", "k1");
    f.zone("z/inner", "k2");
    fs::create_dir(f.m("z/sub")).unwrap();
    fs::write(f.m("z/f"), b"zone data").unwrap();
    fs::write(f.m("z/inner/g"), b"inner data").unwrap();
    let id = file_id(&f, "z/f");

    // a file within its zone, into a subdirectory: a real rename (same file id)
    fs::rename(f.m("z/f"), f.m("z/sub/f2")).unwrap();
    assert_eq!(fs::read(f.m("z/sub/f2")).unwrap(), b"zone data");
    assert_eq!(file_id(&f, "z/sub/f2"), id);
    // a directory within its zone
    fs::rename(f.m("z/sub"), f.m("z/sub2")).unwrap();
    assert_eq!(fs::read(f.m("z/sub2/f2")).unwrap(), b"zone data");
    // the shell does the same with mv
    ok(
        &f.sh("mv", &[&f.m("z/sub2/f2"), &f.m("z/f3")]),
        "mv within a zone",
    );
    assert_eq!(
        file_id(&f, "z/f3"),
        id,
        "mv within a zone copied instead of renaming"
    );

    // the nested zone root within its parent zone
    fs::rename(f.m("z/inner"), f.m("z/inner2")).unwrap();
    assert_eq!(fs::read(f.m("z/inner2/g")).unwrap(), b"inner data");
    assert_eq!(info(&f, "z/inner2/g"), ("k2".into(), 1, mp(&f, "z/inner2")));
    fs::write(f.m("z/inner2/h"), b"new in renamed zone").unwrap();
    assert_eq!(info(&f, "z/inner2/h").0, "k2");
    let zones = f.zone_paths();
    assert!(
        zones.contains(&mp(&f, "z/inner2")),
        "zone list after rename: {zones:?}"
    );
    assert!(
        !zones.contains(&mp(&f, "z/inner")),
        "zone list still shows the old path: {zones:?}"
    );

    // a top-level zone root within the plain root context, with mv
    fs::create_dir(f.m("plain")).unwrap();
    ok(
        &f.sh("mv", &[&f.m("z"), &f.m("plain/z")]),
        "mv zone root within plain context",
    );
    assert_eq!(fs::read(f.m("plain/z/f3")).unwrap(), b"zone data");
    assert_eq!(file_id(&f, "plain/z/f3"), id);
    assert_eq!(info(&f, "plain/z/inner2/g").0, "k2");
    let zones = f.zone_paths();
    assert!(
        zones.contains(&mp(&f, "plain/z")) && zones.contains(&mp(&f, "plain/z/inner2")),
        "{zones:?}"
    );

    // the moved zones survive a remount (registry follows the markers)
    m.unmount();
    let _m = f.mount();
    assert_eq!(fs::read(f.m("plain/z/f3")).unwrap(), b"zone data");
    assert_eq!(fs::read(f.m("plain/z/inner2/h")).unwrap(), b"new in renamed zone");
    fs::write(f.m("plain/z/new"), b"still encrypted").unwrap();
    assert_eq!(header_key(&f.raw("plain/z/new")), "k1");
}

#[test]
fn hard_links_across_boundary_are_exdev() {
    let f = Fixture::new();
    let _m = f.mount();
    two_zones(&f);
    fs::write(f.m("za/f"), b"zone a").unwrap();
    fs::write(f.m("p/h"), b"plain").unwrap();
    for (from, to) in [
        ("za/f", "p/l"),
        ("za/f", "zb/l"),
        ("za/f", "za/inner/l"),
        ("za/f", "l"),
        ("p/h", "za/l"),
    ] {
        assert_errno(
            fs::hard_link(f.m(from), f.m(to)),
            libc::EXDEV,
            &format!("link {from} {to}"),
        );
        assert!(!f.m(to).exists());
        let o = f.sh("ln", &[&f.m(from), &f.m(to)]);
        assert!(!o.status.success(), "ln {from} {to} succeeded");
        assert!(
            stderr_of(&o).contains("Invalid cross-device link"),
            "ln {from} {to}: {}",
            stderr_of(&o)
        );
        assert!(!f.m(to).exists());
    }
    // within one zone, and within plain, links work and share data
    ok(
        &f.sh("ln", &[&f.m("za/f"), &f.m("za/f-link")]),
        "ln within a zone",
    );
    assert_eq!(fs::read(f.m("za/f-link")).unwrap(), b"zone a");
    fs::write(f.m("za/f-link"), b"changed via link").unwrap();
    assert_eq!(fs::read(f.m("za/f")).unwrap(), b"changed via link");
    assert_eq!(fs::metadata(f.m("za/f")).unwrap().nlink(), 2);
    fs::hard_link(f.m("p/h"), f.m("p/h2")).unwrap();
    assert_eq!(fs::read(f.m("p/h2")).unwrap(), b"plain");
    // symlinks are names, not data: allowed across zones
    std::os::unix::fs::symlink(f.m("za/f"), f.m("p/sym")).unwrap();
    assert_eq!(fs::read(f.m("p/sym")).unwrap(), b"changed via link");
}

#[test]
fn zone_create_refuses_nonempty_missing_and_bad_keys() {
    let f = Fixture::new();
    let _m = f.mount();
    fs::create_dir(f.m("full")).unwrap();
    fs::write(f.m("full/x"), b"x").unwrap();
    let o = f.run(&["zone", "create", "--key", "k1", &mp(&f, "full")]);
    code(&o, 1, "zone create on a non-empty dir");
    assert!(stderr_of(&o).contains("not empty"), "message: {}", stderr_of(&o));
    assert_eq!(
        stderr_of(&o).trim().lines().count(),
        1,
        "one sentence: {}",
        stderr_of(&o)
    );
    assert!(
        !f.b("full/.ezfs-zone").exists(),
        "marker written for a refused zone"
    );
    assert_eq!(f.raw("full/x"), b"x", "file in refused zone changed");
    // non-empty only because of a subdirectory
    fs::create_dir_all(f.m("withdir/sub")).unwrap();
    code(
        &f.run(&["zone", "create", "--key", "k1", &mp(&f, "withdir")]),
        1,
        "zone create on dir with subdir",
    );

    let o = f.run(&["zone", "create", "--key", "k1", &mp(&f, "missing")]);
    code(&o, 1, "zone create on a missing dir");
    let msg = stderr_of(&o);
    assert!(
        msg.contains("missing") && msg.contains("No such file"),
        "message: {msg}"
    );
    assert!(!f.m("missing").exists(), "zone create made the missing directory");

    fs::write(f.m("afile"), b"").unwrap();
    code(
        &f.run(&["zone", "create", "--key", "k1", &mp(&f, "afile")]),
        1,
        "zone create on a file",
    );
    // (an unknown key: see zone_create_with_unknown_key_is_refused_and_mount_stays_usable)
    f.zone("twice", "k1");
    let o = f.run(&["zone", "create", "--key", "k1", &mp(&f, "twice")]);
    code(&o, 1, "zone create on a zone");
    // outside any mount
    let o = f.run(&["zone", "create", "--key", "k1", f.root.to_str().unwrap()]);
    code(&o, 1, "zone create outside a mount");
    assert!(
        stderr_of(&o).contains("not inside an ezfs mount"),
        "message: {}",
        stderr_of(&o)
    );
    assert_eq!(f.zone_paths(), vec![mp(&f, "twice")]);
}

/// `zone create --key UNKNOWN` must be refused (exit 1) and leave the mount usable.
/// (Regression test: this used to deadlock the daemon in LocalProvider::with_reload,
/// fixed in 68c3680.) Everything here runs in child processes with deadlines, because a hung daemon
/// would block this test's own threads in the kernel.
#[test]
fn zone_create_with_unknown_key_is_refused_and_mount_stays_usable() {
    use std::process::Command;
    use std::time::Duration;
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    fs::write(f.m("z/f"), b"still readable").unwrap();
    fs::create_dir(f.m("nokey")).unwrap();
    let mut cmd = Command::new(EZFS);
    cmd.args(["zone", "create", "--key", "nosuchkey", &mp(&f, "nokey")]);
    let o = try_run_cmd(&mut cmd, &f.scratch(), Duration::from_secs(15));
    let o = o.expect("`ezfs zone create --key nosuchkey` did not return within 15 s (daemon hung)");
    code(&o, 1, "zone create with an unknown key");
    assert!(stderr_of(&o).contains("nosuchkey"), "message: {}", stderr_of(&o));
    let o = try_run_cmd(
        Command::new("cat").arg(f.m("z/f")),
        &f.scratch(),
        Duration::from_secs(10),
    );
    let o = o.expect("reading a zone file hangs after `zone create` with an unknown key");
    ok(&o, "cat z/f");
    assert_eq!(o.stdout, b"still readable");
}

#[test]
fn nested_zone_files_use_innermost_key() {
    let f = Fixture::new();
    let _m = f.mount();
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("outer", "k1");
    fs::create_dir(f.m("outer/d")).unwrap();
    f.zone("outer/d/inner", "k2");
    fs::create_dir(f.m("outer/d/inner/sub")).unwrap();
    for rel in ["outer/a", "outer/d/b", "outer/d/inner/c", "outer/d/inner/sub/e"] {
        fs::write(f.m(rel), rel.as_bytes()).unwrap();
    }
    let outer = mp(&f, "outer");
    let inner = mp(&f, "outer/d/inner");
    assert_eq!(info(&f, "outer/a"), ("k1".into(), 1, outer.clone()));
    assert_eq!(info(&f, "outer/d/b"), ("k1".into(), 1, outer.clone()));
    assert_eq!(info(&f, "outer/d/inner/c"), ("k2".into(), 1, inner.clone()));
    assert_eq!(info(&f, "outer/d/inner/sub/e"), ("k2".into(), 1, inner.clone()));
    assert_eq!(info(&f, "outer/d/inner/sub"), ("k2".into(), 1, inner.clone()));
    assert_eq!(header_key(&f.raw("outer/d/inner/sub/e")), "k2");
    assert_eq!(header_key(&f.raw("outer/d/b")), "k1");
    for rel in ["outer/a", "outer/d/b", "outer/d/inner/c", "outer/d/inner/sub/e"] {
        assert_eq!(fs::read(f.m(rel)).unwrap(), rel.as_bytes());
    }
    // zone info --json has the documented fields
    let v = f.zone_info("outer/d/inner/c");
    assert_eq!(v["cipher_suite"], "AES-256-GCM/4KiB");
    assert_eq!(v["edek"].as_str().unwrap().len(), 120, "EDEK hex: {v}");
    assert_eq!(v["file_id"].as_str().unwrap().len(), 32);
    let mut zones = f.zone_paths();
    zones.sort();
    assert_eq!(zones, vec![outer, inner]);
}

#[test]
fn rmdir_of_empty_zone_root_removes_the_zone() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("zr", "k1");
    f.zone("keep", "k1");
    fs::write(f.m("zr/f"), b"data").unwrap();
    assert_errno(
        fs::remove_dir(f.m("zr")),
        libc::ENOTEMPTY,
        "rmdir of a non-empty zone",
    );
    assert!(f.b("zr/.ezfs-zone").exists(), "refused rmdir lost the marker");
    assert_eq!(fs::read(f.m("zr/f")).unwrap(), b"data");
    fs::remove_file(f.m("zr/f")).unwrap();
    fs::remove_dir(f.m("zr")).unwrap();
    assert!(!f.b("zr").exists());
    assert_eq!(f.zone_paths(), vec![mp(&f, "keep")]);
    let keys = f.run(&[
        "key",
        "list",
        "--json",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    ok(&keys, "key list");
    let v: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    assert_eq!(v[0]["zones"][0]["path"], "/keep", "key list: {v}");
    assert_eq!(v[0]["zones"].as_array().map(Vec::len), Some(1), "key list: {v}");
    // the same name again is a plain directory
    fs::create_dir(f.m("zr")).unwrap();
    fs::write(f.m("zr/f"), b"plain now").unwrap();
    assert_eq!(f.raw("zr/f"), b"plain now");
    code(
        &f.run(&["zone", "info", &mp(&f, "zr/f")]),
        1,
        "zone info of a file in a removed zone",
    );
}

#[test]
fn key_delete_refused_while_a_zone_uses_it() {
    let f = Fixture::new();
    let _m = f.mount();
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("z2", "k2");
    fs::write(f.m("z2/f"), b"x").unwrap();
    let o = f.key("delete", "k2");
    code(&o, 1, "key delete of a used key");
    assert!(stderr_of(&o).contains("still used"), "message: {}", stderr_of(&o));
    assert_eq!(
        fs::read(f.m("z2/f")).unwrap(),
        b"x",
        "file unreadable after refused key delete"
    );
    fs::remove_file(f.m("z2/f")).unwrap();
    fs::remove_dir(f.m("z2")).unwrap();
    ok(&f.key("delete", "k2"), "key delete after the zone is gone");
    let keys = f.run(&[
        "key",
        "list",
        "--json",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["k1"]);
    code(&f.key("delete", "k2"), 1, "deleting a deleted key");
}

#[test]
fn zone_backing_files_contain_no_plaintext() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    fs::create_dir(f.m("plain")).unwrap();
    let marker = b"EZFS-PLAINTEXT-MARKER-0123456789:";
    let body: Vec<u8> = marker
        .iter()
        .copied()
        .cycle()
        .take(marker.len() * 40_000)
        .collect();
    for (i, len) in [marker.len(), 4096, 100_000, body.len()].into_iter().enumerate() {
        fs::write(f.m(&format!("z/f{i}")), &body[..len]).unwrap();
        fs::write(f.m(&format!("plain/f{i}")), &body[..len]).unwrap();
    }
    // small scattered writes too
    let fh = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(f.m("z/scattered"))
        .unwrap();
    for i in 0..200u64 {
        std::os::unix::fs::FileExt::write_all_at(&fh, marker, i * 3001).unwrap();
    }
    drop(fh);
    let mut checked = 0;
    fn walk(d: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in fs::read_dir(d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut files = Vec::new();
    walk(&f.b("z"), &mut files);
    for p in &files {
        if p.file_name().unwrap() == ".ezfs-zone" {
            continue;
        }
        let raw = fs::read(p).unwrap();
        assert!(
            !contains(&raw, &marker[..16]),
            "plaintext found in backing file {}",
            p.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
    // the search itself works: the plain copies do contain it
    assert!(contains(&f.raw("plain/f3"), marker));
    assert_same(&fs::read(f.m("z/f3")).unwrap(), &body, "z/f3");
    // nor does the keystore hold the passphrase
    let ks = f.raw(".ezfs/keystore.json");
    assert!(
        !contains(&ks, PASSPHRASE.as_bytes()),
        "passphrase in keystore.json"
    );
}

#[test]
fn reserved_names_are_hidden_and_cannot_be_created() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    fs::create_dir(f.m("plain")).unwrap();
    let names = |rel: &str| -> Vec<String> {
        fs::read_dir(f.m(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    assert!(
        !names("").contains(&".ezfs".to_string()),
        "root lists .ezfs: {:?}",
        names("")
    );
    assert!(
        !names("z").contains(&".ezfs-zone".to_string()),
        "zone lists its marker: {:?}",
        names("z")
    );
    assert!(f.b(".ezfs").is_dir() && f.b("z/.ezfs-zone").is_file());
    assert_errno(fs::metadata(f.m(".ezfs")), libc::ENOENT, "stat .ezfs");
    assert_errno(
        fs::metadata(f.m(".ezfs/keystore.json")),
        libc::ENOENT,
        "stat .ezfs/keystore.json",
    );
    assert_errno(
        fs::metadata(f.m("z/.ezfs-zone")),
        libc::ENOENT,
        "stat z/.ezfs-zone",
    );
    assert_errno(fs::read(f.m("z/.ezfs-zone")), libc::ENOENT, "read z/.ezfs-zone");
    let marker_before = f.raw("z/.ezfs-zone");
    let ks_before = f.raw(".ezfs/keystore.json");

    for rel in [".ezfs", "z/.ezfs-zone", "plain/.ezfs-zone", ".ezfs-zone"] {
        let r = fs::write(f.m(rel), b"evil");
        assert!(r.is_err(), "created {rel}");
        let r = fs::create_dir(f.m(rel));
        assert!(r.is_err(), "mkdir {rel}");
        let r = std::os::unix::fs::symlink("/etc/passwd", f.m(rel));
        assert!(r.is_err(), "symlink {rel}");
    }
    assert_errno(
        fs::write(f.m("z/.ezfs-zone"), b"evil"),
        libc::EPERM,
        "create z/.ezfs-zone",
    );
    fs::write(f.m("z/f"), b"f").unwrap();
    fs::write(f.m("plain/g"), b"g").unwrap();
    assert!(
        fs::rename(f.m("z/f"), f.m("z/.ezfs-zone")).is_err(),
        "renamed onto the marker"
    );
    assert!(
        fs::rename(f.m("plain/g"), f.m("plain/.ezfs-zone")).is_err(),
        "renamed to a marker name"
    );
    assert!(
        fs::rename(f.m("plain/g"), f.m(".ezfs")).is_err(),
        "renamed onto .ezfs"
    );
    assert!(
        fs::hard_link(f.m("plain/g"), f.m("plain/.ezfs-zone")).is_err(),
        "linked to a marker name"
    );
    assert!(
        fs::remove_file(f.m("z/.ezfs-zone")).is_err(),
        "unlinked the marker"
    );
    assert!(fs::remove_dir_all(f.m(".ezfs")).is_err(), "removed .ezfs");
    assert_eq!(f.raw("z/.ezfs-zone"), marker_before, "marker changed");
    assert_eq!(f.raw(".ezfs/keystore.json"), ks_before, "keystore changed");
    assert!(
        !f.b("plain/.ezfs-zone").exists(),
        "a marker appeared in a plain dir"
    );
    assert!(!f.b(".ezfs-zone").exists());
    // the shell sees the same
    let o = f.sh("ls", &[&f.m("z")]);
    assert!(!stdout_of(&o).contains(".ezfs-zone"));
    let o = f.sh("touch", &[&f.m("plain/.ezfs-zone")]);
    assert!(!o.status.success(), "touch of a marker name succeeded");
    // a regular file in the zone is still encrypted
    assert_eq!(header_key(&f.raw("z/f")), "k1");
}

#[test]
fn key_roll_while_mounted_new_files_use_new_version() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    fs::write(f.m("z/old"), b"written under k1@1").unwrap();
    assert_eq!(info(&f, "z/old").1, 1);
    let o = f.key("roll", "k1");
    ok(&o, "key roll k1");
    assert!(stdout_of(&o).contains("k1@2"), "roll output: {}", stdout_of(&o));
    fs::write(f.m("z/new"), b"written under k1@2").unwrap();
    assert_eq!(info(&f, "z/new"), ("k1".into(), 2, mp(&f, "z")));
    assert_eq!(info(&f, "z/old").1, 1, "old file's EDEK changed version");
    assert_eq!(info(&f, "z").1, 2, "zone dir shows the newest version");
    assert_eq!(fs::read(f.m("z/old")).unwrap(), b"written under k1@1");
    // the old file stays writable (its DEK is already unwrapped)
    fs::write(f.m("z/old"), b"rewritten").unwrap();
    assert_eq!(fs::read(f.m("z/old")).unwrap(), b"rewritten");
    assert_eq!(f.zone_list()[0]["key_version"], 2);
    m.unmount();
    let _m = f.mount();
    assert_eq!(fs::read(f.m("z/old")).unwrap(), b"rewritten");
    assert_eq!(fs::read(f.m("z/new")).unwrap(), b"written under k1@2");
    fs::write(f.m("z/newer"), b"x").unwrap();
    assert_eq!(info(&f, "z/newer").1, 2);
}

#[test]
fn key_create_while_mounted_then_zone_create() {
    let f = Fixture::new();
    let _m = f.mount();
    ok(&f.key("create", "fresh"), "key create while mounted");
    let z = f.zone("zf", "fresh");
    fs::write(z.join("f"), b"under a fresh key").unwrap();
    assert_eq!(info(&f, "zf/f"), ("fresh".into(), 1, mp(&f, "zf")));
    assert_eq!(fs::read(z.join("f")).unwrap(), b"under a fresh key");
    // key commands find the backing dir from a current directory inside the mount
    let pw = f.pass.to_str().unwrap().to_owned();
    ok(
        &f.run_in(
            &f.m("zf"),
            &["key", "create", "fromcwd", "--passphrase-file", &pw],
        ),
        "key create from cwd",
    );
    let z = f.zone("zc", "fromcwd");
    fs::write(z.join("g"), b"g").unwrap();
    assert_eq!(info(&f, "zc/g").0, "fromcwd");
    // a key created with the same name is refused
    code(&f.key("create", "fresh"), 1, "key create of an existing name");
}

/// `ezfs key grant k1 --user 65534`: lets nobody use zones of key k1.
fn grant_nobody(f: &Fixture) -> std::process::Output {
    f.run(&[
        "key",
        "grant",
        "k1",
        "--user",
        "65534",
        "--backing",
        f.backing.to_str().unwrap(),
        "--passphrase-file",
        f.pass.to_str().unwrap(),
    ])
}

/// Runs `args` as user nobody (uid/gid 65534).
fn as_nobody(f: &Fixture, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(args);
    run_cmd(&mut cmd, &f.scratch())
}

/// With --allow-other, another user works in zones under the usual permissions;
/// without it, other users cannot enter the mount at all.
#[test]
fn other_users_and_allow_other() {
    let f = Fixture::new();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&f.root, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let m = f.mount();
    f.zone("z", "k1");
    fs::write(f.m("z/private"), b"root only").unwrap();
    let o = as_nobody(&f, &["ls", f.mnt.to_str().unwrap()]);
    assert!(
        !o.status.success() && stderr_of(&o).contains("Permission denied"),
        "nobody entered a mount without --allow-other: {o:?}"
    );
    m.unmount();
    let _m = f.mount_opts(&["--allow-other"]);
    ok(&as_nobody(&f, &["true"]), "setpriv works");
    // zone keys decide who may open zone files (tests/lifecycle.rs covers refusals)
    ok(&grant_nobody(&f), "key grant k1 --user 65534");
    let sh = |script: &str| as_nobody(&f, &["sh", "-c", script]);
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(f.m("z/private"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(f.m("z"), fs::Permissions::from_mode(0o777)).unwrap();
    }
    let o = sh(&format!("cat {}", mp(&f, "z/private")));
    assert!(
        !o.status.success() && stderr_of(&o).contains("Permission denied"),
        "nobody read a 0600 file: {o:?}"
    );
    let o = sh(&format!("echo mine > {0} && cat {0}", mp(&f, "z/nobodys")));
    ok(&o, "nobody writes in a zone");
    assert_eq!(stdout_of(&o), "mine\n");
    let meta = fs::metadata(f.b("z/nobodys")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "owner of a file nobody created"
    );
    assert_eq!(
        header_key(&f.raw("z/nobodys")),
        "k1",
        "nobody's file is encrypted"
    );
    assert_eq!(fs::read(f.m("z/nobodys")).unwrap(), b"mine\n");
}

/// Without --allow-other only the mounting user gets in, and the kernel leaves the
/// permission checks of access(2) to the daemon, which asks the backing file: an
/// immutable file is not writable even for root. Exec bits are checked by the kernel.
#[test]
fn access_without_allow_other_asks_the_backing_file() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    for (rel, mode) in [("z/script", 0o755), ("z/data", 0o644), ("z/frozen", 0o644)] {
        fs::write(f.m(rel), b"#!/bin/sh\necho ran\n").unwrap();
        fs::set_permissions(f.m(rel), fs::Permissions::from_mode(mode)).unwrap();
    }
    let frozen = Immutable::set(&f.b("z/frozen"));
    let sh = |script: &str| {
        run_cmd(
            std::process::Command::new("sh").args(["-c", script]),
            &f.scratch(),
        )
    };
    let test = |op: &str, rel: &str| sh(&format!("test {op} {}", mp(&f, rel))).status.success();
    assert!(test("-w", "z/data"), "root may write a 0644 file");
    assert!(
        !test("-w", "z/frozen"),
        "an immutable backing file shows as writable"
    );
    assert!(
        test("-r", "z/frozen"),
        "an immutable backing file shows as unreadable"
    );
    assert!(test("-x", "z/script") && !test("-x", "z/data"), "exec bits");
    let o = sh(&mp(&f, "z/script"));
    ok(&o, "run a script in a zone");
    assert_eq!(stdout_of(&o), "ran\n");
    let o = sh(&mp(&f, "z/data"));
    assert!(
        !o.status.success() && stderr_of(&o).contains("Permission denied"),
        "ran a file without exec bits: {o:?}"
    );
    drop(frozen);
    assert!(test("-w", "z/frozen"), "writable again once no longer immutable");
}

/// `chattr +i` on a backing file, undone on drop (the temporary dir must be removable).
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        let o = run_cmd(
            std::process::Command::new("chattr").arg("+i").arg(path),
            Path::new("/"),
        );
        ok(&o, &format!("chattr +i {}", path.display()));
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .output();
    }
}

/// A user who owns a directory in a mount may make it a zone (`zone_create` checks
/// caller == owner), and may run `zone info`/`zone list`.
#[test]
fn directory_owner_can_create_a_zone() {
    let f = Fixture::new();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&f.root, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let _m = f.mount_opts(&["--allow-other"]);
    fs::create_dir(f.m("pub")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(f.m("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    }
    ok(&as_nobody(&f, &["mkdir", &mp(&f, "pub/mine")]), "nobody mkdir");
    ok(&grant_nobody(&f), "key grant k1 --user 65534");
    let o = as_nobody(&f, &[EZFS, "zone", "create", "--key", "k1", &mp(&f, "pub/mine")]);
    ok(&o, "zone create by the directory's owner");
    ok(
        &as_nobody(&f, &["sh", "-c", &format!("echo x > {}", mp(&f, "pub/mine/f"))]),
        "write",
    );
    assert_eq!(header_key(&f.raw("pub/mine/f")), "k1");
    ok(
        &as_nobody(&f, &[EZFS, "zone", "info", &mp(&f, "pub/mine/f")]),
        "zone info by a user",
    );
    ok(
        &as_nobody(&f, &[EZFS, "zone", "list", f.mnt.to_str().unwrap()]),
        "zone list by a user",
    );
    // but not on someone else's directory
    fs::create_dir(f.m("pub/roots")).unwrap();
    let o = as_nobody(&f, &[EZFS, "zone", "create", "--key", "k1", &mp(&f, "pub/roots")]);
    code(&o, 1, "zone create on a directory nobody does not own");
    assert!(stderr_of(&o).contains("owner"), "{}", stderr_of(&o));
}
