//! Zones whose file names are encrypted (`ezfs zone create --encrypt-names`): the
//! backing dir holds no plaintext name or symlink target (each directory has its own
//! `.ezfs-diriv`, long names are hashed with a `.name` sidecar), while the mount shows
//! the plaintext tree; directory renames move no child; copies of the backing dir
//! stay readable; the zone rules (EXDEV, reserved names, rmdir) hold; backing entries
//! that do not decrypt are left out of listings and logged once; `zone info` and
//! `zone list` say which zones encrypt names; symlink targets have a length limit.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The files the filesystem keeps in a backing directory of a name-encrypted zone.
const DIRIV: &str = ".ezfs-diriv";
const MARKER: &str = ".ezfs-zone";
const LONG: &str = ".ezfs-long.";

/// What one entry of a tree is, with its content (files) or target (symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(Vec<u8>),
    Fifo,
    Other,
}

/// Every entry under `root` (recursively, following no symlink), by path relative
/// to `root`.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    for p in walk(root) {
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = md.file_type();
        let node = if ft.is_dir() {
            Node::Dir
        } else if ft.is_file() {
            Node::File(fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
        } else if ft.is_symlink() {
            Node::Link(fs::read_link(&p).unwrap().into_os_string().into_vec())
        } else if ft.is_fifo() {
            Node::Fifo
        } else {
            Node::Other
        };
        out.insert(p.strip_prefix(root).unwrap().to_path_buf(), node);
    }
    out
}

/// Every path under `root`, recursively, sorted (symlinks are not followed).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let e = e.unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()));
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The names in directory `d`, sorted.
fn names(d: &Path) -> BTreeSet<OsString> {
    fs::read_dir(d)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()))
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// `names(d)` as strings, for comparing with expectations.
fn names_str(d: &Path) -> BTreeSet<String> {
    names(d)
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Whether `s` is unpadded base64url (what every encrypted name and target is).
fn is_b64url(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// Whether a backing entry is one the filesystem keeps (diriv, marker, long-name
/// entry or sidecar) rather than a short encrypted name.
fn is_housekeeping(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b == DIRIV.as_bytes() || b == MARKER.as_bytes() || b.starts_with(LONG.as_bytes())
}

/// The entries of backing directory `d` that stand for names: short encrypted names
/// and long-name entries (not their sidecars).
fn name_entries(d: &Path) -> BTreeSet<OsString> {
    names(d)
        .into_iter()
        .filter(|n| {
            let b = n.as_bytes();
            b != DIRIV.as_bytes() && b != MARKER.as_bytes() && !b.ends_with(b".name")
        })
        .collect()
}

/// Long-name entries and sidecars of backing directory `d`.
fn long_entries(d: &Path) -> (BTreeSet<OsString>, BTreeSet<OsString>) {
    let all: Vec<OsString> = names(d)
        .into_iter()
        .filter(|n| n.as_bytes().starts_with(LONG.as_bytes()))
        .collect();
    let (sidecars, entries): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|n| n.as_bytes().ends_with(b".name"));
    (entries.into_iter().collect(), sidecars.into_iter().collect())
}

/// The 16-byte diriv of backing directory `d`.
fn diriv_of(d: &Path) -> Vec<u8> {
    let p = d.join(DIRIV);
    let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: no diriv: {e}", d.display()));
    assert!(md.file_type().is_file(), "{} is no regular file", p.display());
    let v = fs::read(&p).unwrap();
    assert_eq!(v.len(), 16, "{} holds {} bytes, not 16", p.display(), v.len());
    v
}

/// The backing directory under `root` (itself included) whose diriv is `diriv`.
fn dir_with_diriv(root: &Path, diriv: &[u8]) -> PathBuf {
    let mut dirs = vec![root.to_path_buf()];
    dirs.extend(walk(root).into_iter().filter(|p| p.is_dir() && !p.is_symlink()));
    let found: Vec<PathBuf> = dirs
        .into_iter()
        .filter(|d| fs::read(d.join(DIRIV)).ok().as_deref() == Some(diriv))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "directories with that diriv under {}: {found:?}",
        root.display()
    );
    found.into_iter().next().unwrap()
}

/// The one entry of `after` not in `before`.
fn new_entry(before: &BTreeSet<OsString>, after: &BTreeSet<OsString>) -> OsString {
    let new: Vec<&OsString> = after.difference(before).collect();
    assert_eq!(new.len(), 1, "expected one new backing entry, got {new:?}");
    new[0].clone()
}

/// A name of exactly `len` bytes starting with `tag`.
fn long_name(tag: &str, len: usize) -> String {
    let mut s = tag.to_string();
    while s.len() < len {
        s.push(char::from(b'a' + (s.len() % 26) as u8));
    }
    s.truncate(len);
    s
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(
        r,
        0,
        "mkfifo {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// Runs a shell command line (`bash -c`), asserting it succeeds.
fn bash(f: &Fixture, script: &str) {
    let o = run_cmd(
        Command::new("bash")
            .arg("-c")
            .arg(format!("set -eo pipefail; {script}")),
        &f.scratch(),
    );
    ok(&o, script);
}

/// `ls -la DIR`, asserting it exits 0; its output.
fn ls(f: &Fixture, d: &Path) -> String {
    let o = run_cmd(Command::new("ls").arg("-la").arg(d), &f.scratch());
    ok(&o, &format!("ls -la {}", d.display()));
    stdout_of(&o)
}

/// Asserts that no backing name or symlink target under `root` contains any of
/// `secrets`, that every name that is no housekeeping file is base64url, and that
/// every directory holds a 16-byte diriv. Returns the backing directories.
#[track_caller]
fn assert_backing_encrypted(root: &Path, secrets: &[&str]) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    for p in walk(root) {
        let name = p.file_name().unwrap();
        for s in secrets {
            assert!(
                !contains(name.as_bytes(), s.as_bytes()),
                "plaintext {s:?} in backing name {}",
                p.display()
            );
        }
        if !is_housekeeping(name) {
            assert!(
                is_b64url(name.as_bytes()),
                "backing name {} is not unpadded base64url",
                p.display()
            );
        }
        let md = fs::symlink_metadata(&p).unwrap();
        if md.file_type().is_symlink() {
            let t = fs::read_link(&p).unwrap();
            for s in secrets {
                assert!(
                    !contains(t.as_os_str().as_bytes(), s.as_bytes()),
                    "plaintext {s:?} in backing symlink target of {}: {}",
                    p.display(),
                    t.display()
                );
            }
            assert!(
                is_b64url(t.as_os_str().as_bytes()),
                "backing symlink target of {} is not base64url: {}",
                p.display(),
                t.display()
            );
        }
        if md.file_type().is_dir() {
            dirs.push(p);
        }
    }
    for d in &dirs {
        diriv_of(d);
    }
    dirs
}

/// A name-encrypted zone's backing dir holds no plaintext name and no plaintext
/// symlink target: every name is base64url, every directory has a 16-byte diriv, and
/// the same name in two directories is stored differently; the mount shows exactly
/// the tree that was made, with the plaintext symlink target and its length, also
/// after a remount.
#[test]
fn backing_dir_holds_no_plaintext_names_or_targets() {
    let f = Fixture::new();
    let m = f.mount();
    f.names_zone("z", "k1");
    let z = |r: &str| f.m(&format!("z/{r}"));
    fs::write(z("alpha-distinct-file"), b"alpha contents").unwrap();
    fs::create_dir_all(z("bravo-nested-dir/charlie-deeper-dir")).unwrap();
    fs::write(z("bravo-nested-dir/charlie-deeper-dir/delta-in-deeper"), b"delta").unwrap();
    fs::write(z("samename-twice"), b"one").unwrap();
    fs::write(z("bravo-nested-dir/samename-twice"), b"two").unwrap();
    symlink("target-of-the-link", z("echo-symlink")).unwrap();
    mkfifo(&z("bravo-nested-dir/foxtrot-fifo"));
    fs::hard_link(z("alpha-distinct-file"), z("bravo-nested-dir/golf-hardlink")).unwrap();
    fs::create_dir(z("hotel-empty-dir")).unwrap();

    let expected: BTreeMap<PathBuf, Node> = [
        ("alpha-distinct-file", Node::File(b"alpha contents".to_vec())),
        ("bravo-nested-dir", Node::Dir),
        ("bravo-nested-dir/charlie-deeper-dir", Node::Dir),
        (
            "bravo-nested-dir/charlie-deeper-dir/delta-in-deeper",
            Node::File(b"delta".to_vec()),
        ),
        ("bravo-nested-dir/foxtrot-fifo", Node::Fifo),
        (
            "bravo-nested-dir/golf-hardlink",
            Node::File(b"alpha contents".to_vec()),
        ),
        ("bravo-nested-dir/samename-twice", Node::File(b"two".to_vec())),
        ("echo-symlink", Node::Link(b"target-of-the-link".to_vec())),
        ("hotel-empty-dir", Node::Dir),
        ("samename-twice", Node::File(b"one".to_vec())),
    ]
    .into_iter()
    .map(|(p, n)| (PathBuf::from(p), n))
    .collect();
    // (at least six characters each: a random base64url name never holds one by chance)
    let secrets = [
        "alpha-",
        "distinct",
        "bravo-",
        "nested",
        "charlie",
        "deeper",
        "delta-",
        "samename",
        "-twice",
        "echo-s",
        "symlink",
        "target-of-the-link",
        "target",
        "foxtrot",
        "-fifo",
        "golf-h",
        "hardlink",
        "hotel-",
        "empty-",
    ];

    let check_mount = |when: &str| {
        assert_eq!(snapshot(&f.m("z")), expected, "the mount's tree {when}");
        assert_eq!(
            fs::read_link(z("echo-symlink")).unwrap(),
            Path::new("target-of-the-link"),
            "readlink {when}"
        );
        assert_eq!(
            fs::symlink_metadata(z("echo-symlink")).unwrap().len(),
            "target-of-the-link".len() as u64,
            "lstat size of the symlink {when}"
        );
        assert_eq!(
            fs::metadata(z("alpha-distinct-file")).unwrap().nlink(),
            2,
            "{when}"
        );
    };
    check_mount("after creating it");

    let check_backing = || {
        let root = f.b("z");
        let dirs = assert_backing_encrypted(&root, &secrets);
        assert_eq!(dirs.len(), 4, "backing directories of the zone: {dirs:?}");
        // the entries of each backing directory: as many as the mount shows there
        let mut all: Vec<(PathBuf, BTreeSet<OsString>)> = Vec::new();
        let mut entries = 0;
        for d in &dirs {
            let e = name_entries(d);
            entries += e.len();
            all.push((d.clone(), e));
        }
        assert_eq!(
            entries,
            expected.len(),
            "backing entries that stand for names: {all:?}"
        );
        // two directories never share a stored name: "samename-twice" is in two
        for (i, (da, a)) in all.iter().enumerate() {
            for (db, b) in &all[i + 1..] {
                let common: Vec<_> = a.intersection(b).collect();
                assert!(
                    common.is_empty(),
                    "{} and {} store the same names {common:?}",
                    da.display(),
                    db.display()
                );
            }
        }
        // diriv values differ between directories
        let ivs: BTreeSet<Vec<u8>> = dirs.iter().map(|d| diriv_of(d)).collect();
        assert_eq!(ivs.len(), dirs.len(), "two directories share a diriv");
        // the kinds are all there: one symlink, one fifo, a hard-linked file
        let kinds: Vec<fs::FileType> = walk(&root)
            .iter()
            .filter(|p| !is_housekeeping(p.file_name().unwrap()))
            .map(|p| fs::symlink_metadata(p).unwrap().file_type())
            .collect();
        assert_eq!(kinds.iter().filter(|t| t.is_symlink()).count(), 1);
        assert_eq!(kinds.iter().filter(|t| t.is_fifo()).count(), 1);
        let linked = walk(&root)
            .iter()
            .filter(|p| !is_housekeeping(p.file_name().unwrap()))
            .filter(|p| {
                let md = fs::symlink_metadata(p).unwrap();
                md.is_file() && md.nlink() == 2
            })
            .count();
        assert_eq!(linked, 2, "the hard link's two backing names");
    };
    check_backing();

    // a fresh mount decrypts the same names from the backing dir
    m.unmount();
    let _m = f.mount();
    check_mount("after a remount");
    check_backing();
}

/// Names too long to store encrypted as themselves (200 and 255 bytes) are stored
/// hashed with a sidecar: they can be created, written, read, stat'ed, renamed to a
/// short name and back, hard-linked to another long name and unlinked, `ls` shows
/// them, each hashed entry has its sidecar while it exists and none is left after;
/// a 256-byte name is ENAMETOOLONG.
#[test]
fn long_names_are_stored_hashed_with_a_sidecar() {
    let f = Fixture::new();
    let m = f.mount();
    f.names_zone("z", "k1");
    let z = |r: &str| f.m(&format!("z/{r}"));
    let b = f.b("z");
    let n255 = long_name("first-long-name-", 255);
    let n200 = long_name("second-long-name-", 200);
    let n230 = long_name("linked-long-name-", 230);
    let d240 = long_name("long-directory-", 240);
    let (data255, data200) = (Rng::new(1).bytes(5000), Rng::new(2).bytes(123));

    #[track_caller]
    fn assert_longs(b: &Path, n: usize, when: &str) {
        let (entries, sidecars) = long_entries(b);
        assert_eq!(entries.len(), n, "long-name entries {when}: {entries:?}");
        let want: BTreeSet<OsString> = entries
            .iter()
            .map(|e| {
                let mut s = e.clone();
                s.push(".name");
                s
            })
            .collect();
        assert_eq!(sidecars, want, "sidecars {when}");
        for e in &entries {
            assert!(
                is_b64url(&e.as_bytes()[LONG.len()..]),
                "long entry {e:?} {when} is not {LONG}<base64url>"
            );
            let mut s = e.clone();
            s.push(".name");
            let encoded = fs::read(b.join(&s)).unwrap();
            assert!(
                encoded.len() > 255 && is_b64url(&encoded),
                "sidecar {s:?} {when} holds no long encoded name: {:?}",
                String::from_utf8_lossy(&encoded)
            );
        }
    }

    fs::write(z(&n255), &data255).unwrap();
    fs::write(z(&n200), &data200).unwrap();
    assert_longs(&b, 2, "after creating two long names");
    assert_eq!(fs::read(z(&n255)).unwrap(), data255);
    assert_eq!(fs::read(z(&n200)).unwrap(), data200);
    assert_eq!(fs::metadata(z(&n255)).unwrap().len(), 5000);
    assert_eq!(fs::metadata(z(&n200)).unwrap().len(), 123);
    assert_eq!(names_str(&f.m("z")), set(&[&n255, &n200]));
    let out = ls(&f, &f.m("z"));
    assert!(out.contains(&n255) && out.contains(&n200), "ls -la: {out}");
    assert_backing_encrypted(&b, &["first-long", "second-long", "long-name"]);

    // they survive a remount (the sidecars are read back)
    m.unmount();
    let m = f.mount();
    assert_eq!(names_str(&f.m("z")), set(&[&n255, &n200]));
    assert_eq!(fs::read(z(&n255)).unwrap(), data255);

    // rename to a short name and back
    fs::rename(z(&n255), z("short")).unwrap();
    assert_longs(&b, 1, "after renaming one to a short name");
    assert_eq!(names_str(&f.m("z")), set(&["short", &n200]));
    assert_eq!(fs::read(z("short")).unwrap(), data255);
    fs::rename(z("short"), z(&n255)).unwrap();
    assert_longs(&b, 2, "after renaming it back");
    assert_eq!(fs::read(z(&n255)).unwrap(), data255);
    // rename from one long name to another
    ok(&f.sh("mv", &[&z(&n200), &z(&n230)]), "mv long long");
    assert_longs(&b, 2, "after renaming a long name to another");
    fs::rename(z(&n230), z(&n200)).unwrap();

    // a hard link to another long name
    fs::hard_link(z(&n200), z(&n230)).unwrap();
    assert_longs(&b, 3, "after a hard link to a long name");
    assert_eq!(fs::read(z(&n230)).unwrap(), data200);
    assert_eq!(fs::metadata(z(&n230)).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(z(&n200)).unwrap().ino(),
        fs::metadata(z(&n230)).unwrap().ino()
    );
    assert_eq!(names_str(&f.m("z")), set(&[&n255, &n200, &n230]));

    // a long directory name, with a file in it
    fs::create_dir(z(&d240)).unwrap();
    fs::write(z(&format!("{d240}/inside")), b"in a long dir").unwrap();
    assert_longs(&b, 4, "after mkdir of a long name");
    assert_eq!(fs::read(z(&format!("{d240}/inside"))).unwrap(), b"in a long dir");
    assert_eq!(names_str(&z(&d240)), set(&["inside"]));

    // 256 bytes is too long, for every way of making a name
    let n256 = long_name("too-long-name-", 256);
    assert_errno(
        fs::write(z(&n256), b"x"),
        libc::ENAMETOOLONG,
        "create 256-byte name",
    );
    assert_errno(
        fs::create_dir(z(&n256)),
        libc::ENAMETOOLONG,
        "mkdir 256-byte name",
    );
    assert_errno(
        fs::rename(z(&n255), z(&n256)),
        libc::ENAMETOOLONG,
        "rename to 256-byte name",
    );
    assert_errno(
        fs::hard_link(z(&n255), z(&n256)),
        libc::ENAMETOOLONG,
        "link to 256-byte name",
    );
    assert_errno(
        symlink("t", z(&n256)),
        libc::ENAMETOOLONG,
        "symlink 256-byte name",
    );
    assert_longs(&b, 4, "after refused 256-byte names");

    // removing them all leaves no sidecar behind
    fs::remove_file(z(&n255)).unwrap();
    fs::remove_file(z(&n200)).unwrap();
    assert_longs(&b, 2, "after unlinking two");
    assert_eq!(fs::read(z(&n230)).unwrap(), data200, "the other link");
    fs::remove_file(z(&n230)).unwrap();
    fs::remove_file(z(&format!("{d240}/inside"))).unwrap();
    fs::remove_dir(z(&d240)).unwrap();
    assert_longs(&b, 0, "after removing every long name");
    assert!(names(&f.m("z")).is_empty(), "{:?}", names(&f.m("z")));
    let left: Vec<OsString> = names(&b)
        .into_iter()
        .filter(|n| n != DIRIV && n != MARKER)
        .collect();
    assert!(
        left.is_empty(),
        "backing entries left after removing everything: {left:?}"
    );
    drop(m);
}

/// Renaming a directory (to a new name, and into another directory of the same zone)
/// renames none of its children: the backing entries inside it, at every depth, stay
/// byte-identical, and the files read back through the new path.
#[test]
fn directory_rename_renames_no_child() {
    let f = Fixture::new();
    let _m = f.mount();
    f.names_zone("z", "k1");
    let z = |r: &str| f.m(&format!("z/{r}"));
    let b = f.b("z");
    fs::create_dir(z("sub")).unwrap();
    let mut files = BTreeMap::new();
    for i in 0..6 {
        let name = format!("file-{i}");
        let data = Rng::new(i).bytes(100 + 1000 * i as usize);
        fs::write(z(&format!("sub/{name}")), &data).unwrap();
        files.insert(name, data);
    }
    let long = long_name("long-child-", 220);
    fs::write(z(&format!("sub/{long}")), b"long child").unwrap();
    fs::create_dir(z("sub/inner")).unwrap();
    fs::write(z("sub/inner/deep"), b"deep child").unwrap();
    symlink("file-0", z("sub/to-file-0")).unwrap();
    fs::create_dir(z("other")).unwrap();

    // sub's backing dir: the one whose name entry holds file-0's siblings
    let entries = name_entries(&b);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let sub_b = entries
        .iter()
        .map(|e| b.join(e))
        .find(|p| name_entries(p).len() == 9)
        .expect("sub's backing dir");
    let old_name = sub_b.file_name().unwrap().to_owned();
    let diriv = diriv_of(&sub_b);
    let before = snapshot(&sub_b);
    assert!(before.len() > 10, "{before:?}");

    let check = |mount_dir: &str, depth: usize| {
        let now = dir_with_diriv(&b, &diriv);
        assert_eq!(
            now.strip_prefix(&b).unwrap().components().count(),
            depth,
            "{} is at the wrong depth",
            now.display()
        );
        assert_eq!(
            snapshot(&now),
            before,
            "the backing entries inside the directory changed when it moved to {mount_dir}"
        );
        for (name, data) in &files {
            assert_same(
                &fs::read(z(&format!("{mount_dir}/{name}"))).unwrap(),
                data,
                &format!("{mount_dir}/{name}"),
            );
        }
        assert_eq!(
            fs::read(z(&format!("{mount_dir}/{long}"))).unwrap(),
            b"long child"
        );
        assert_eq!(
            fs::read(z(&format!("{mount_dir}/inner/deep"))).unwrap(),
            b"deep child"
        );
        assert_eq!(
            fs::read(z(&format!("{mount_dir}/to-file-0"))).unwrap(),
            files["file-0"]
        );
        now
    };

    ok(&f.sh("mv", &[&z("sub"), &z("renamed")]), "mv sub renamed");
    let now = check("renamed", 1);
    assert_ne!(
        now.file_name().unwrap(),
        old_name,
        "the directory's own backing name"
    );
    assert!(!b.join(&old_name).exists(), "old backing name still there");
    assert_eq!(names_str(&f.m("z")), set(&["other", "renamed"]));

    ok(
        &f.sh("mv", &[&z("renamed"), &z("other/moved")]),
        "mv renamed other/moved",
    );
    check("other/moved", 2);
    assert_eq!(names_str(&f.m("z")), set(&["other"]));
    assert_eq!(names_str(&z("other")), set(&["moved"]));

    // and with rename(2) back to the zone root
    fs::rename(z("other/moved"), z("back")).unwrap();
    check("back", 1);
}

/// Copies of the backing dir made with `cp -a`, with `tar -c | tar -x` (no xattr
/// options) and with `rsync -aH` mount and show every name, content and symlink
/// target of the name-encrypted zone.
#[test]
fn copies_of_the_backing_dir_keep_the_zone_readable() {
    let f = Fixture::new();
    let m = f.mount();
    f.names_zone("z", "k1");
    let z = |r: &str| f.m(&format!("z/{r}"));
    let long = long_name("copied-long-name-", 250);
    fs::write(z("plain-file"), b"plain file").unwrap();
    fs::write(z(&long), Rng::new(9).bytes(9000)).unwrap();
    fs::create_dir_all(z("dir-one/dir-two")).unwrap();
    fs::write(z("dir-one/dir-two/deep-file"), Rng::new(10).bytes(70_000)).unwrap();
    fs::write(z("dir-one/same"), b"one").unwrap();
    fs::write(z("same"), b"root").unwrap();
    symlink("dir-one/dir-two/deep-file", z("link-to-deep")).unwrap();
    fs::hard_link(z("plain-file"), z("dir-one/hard")).unwrap();
    fs::create_dir(z("empty-dir")).unwrap();
    let expected = snapshot(&f.m("z"));
    assert_eq!(expected.len(), 10, "{:?}", expected.keys());
    m.unmount();

    let cp = f.root.join("copy-cp");
    let tar = f.root.join("copy-tar");
    let rsync = f.root.join("copy-rsync");
    ok(&f.sh("cp", &[Path::new("-a"), &f.backing, &cp]), "cp -a");
    bash(
        &f,
        // -H: hard links stay links (rsync -a alone copies them apart)
        &format!("rsync -aH '{}/' '{}/'", f.backing.display(), rsync.display()),
    );
    fs::create_dir(&tar).unwrap();
    bash(
        &f,
        &format!(
            "tar -C '{}' -cf - . | tar -C '{}' -xf -",
            f.backing.display(),
            tar.display()
        ),
    );

    for copy in [&cp, &tar, &rsync] {
        // the copy holds the same backing names (no plaintext) and every diriv
        assert_backing_encrypted(
            &copy.join("z"),
            &[
                "plain-file",
                "copied-long",
                "dir-one",
                "dir-two",
                "deep-file",
                "link-to-deep",
                "empty-dir",
            ],
        );
        let m = f
            .try_mount_backing(copy, &[])
            .unwrap_or_else(|(c, msg)| panic!("mount of {} failed (exit {c:?}): {msg}", copy.display()));
        assert!(
            m.log().contains(&format!("mounted {} at", copy.display())),
            "not the copy that was mounted: {}",
            m.log()
        );
        assert_eq!(snapshot(&f.m("z")), expected, "the zone in {}", copy.display());
        assert_eq!(
            fs::symlink_metadata(z("link-to-deep")).unwrap().len(),
            "dir-one/dir-two/deep-file".len() as u64
        );
        assert_eq!(
            fs::metadata(z("dir-one/hard")).unwrap().nlink(),
            2,
            "{}",
            copy.display()
        );
        // and it takes new names
        fs::write(z("dir-one/dir-two/new-after-copy"), b"new").unwrap();
        assert_eq!(fs::read(z("dir-one/dir-two/new-after-copy")).unwrap(), b"new");
        m.unmount();
    }
    // the original is untouched
    let _m = f.mount();
    assert_eq!(snapshot(&f.m("z")), expected, "the original zone");
}

/// The zone rules hold in a name-encrypted zone: rename and link out of it (to a plain
/// dir or a plain-name zone) and into it are EXDEV while `mv` copies with the plain
/// name; reserved names cannot be made (EPERM) and are never listed; rmdir of an empty
/// directory works and of a non-empty one is ENOTEMPTY; `mv -T` over an empty
/// directory works; zones of the other kind nest in either direction.
#[test]
fn zone_rules_hold_in_name_encrypted_zones() {
    let f = Fixture::new();
    let _m = f.mount();
    f.names_zone("ez", "k1");
    f.zone("pz", "k1");
    fs::create_dir(f.m("p")).unwrap();
    let e = |r: &str| f.m(&format!("ez/{r}"));
    fs::write(e("file-a"), b"content of a").unwrap();
    fs::write(f.m("p/plain-file"), b"plain").unwrap();
    fs::write(f.m("pz/pz-file"), b"in pz").unwrap();

    // rename and link across the boundary: EXDEV both ways
    for (from, to) in [
        ("ez/file-a", "p/file-a"),
        ("ez/file-a", "pz/file-a"),
        ("ez/file-a", "file-a"),
        ("p/plain-file", "ez/plain-file"),
        ("pz/pz-file", "ez/pz-file"),
    ] {
        assert_errno(
            fs::rename(f.m(from), f.m(to)),
            libc::EXDEV,
            &format!("rename {from} {to}"),
        );
        assert_errno(
            fs::hard_link(f.m(from), f.m(to)),
            libc::EXDEV,
            &format!("link {from} {to}"),
        );
        assert!(f.m(from).exists() && !f.m(to).exists(), "{from} -> {to}");
    }

    // mv copies: out of the zone to a plain dir, the backing name is the plain name
    ok(&f.sh("mv", &[&e("file-a"), &f.m("p/file-a")]), "mv ez/file-a p/");
    assert!(!e("file-a").exists());
    assert_eq!(fs::read(f.m("p/file-a")).unwrap(), b"content of a");
    assert_eq!(f.raw("p/file-a"), b"content of a", "backing p/file-a");
    // into the zone: a stored name that is no plain name
    ok(
        &f.sh("mv", &[&f.m("p/file-a"), &e("came-back")]),
        "mv p/file-a ez/",
    );
    assert_eq!(fs::read(e("came-back")).unwrap(), b"content of a");
    assert!(!f.b("ez/came-back").exists(), "plain backing name in ez");
    assert_backing_encrypted(&f.b("ez"), &["came-back", "file-a"]);
    // to a plain-name zone: plain backing name, encrypted content
    ok(
        &f.sh("mv", &[&e("came-back"), &f.m("pz/file-b")]),
        "mv ez/came-back pz/",
    );
    assert_eq!(fs::read(f.m("pz/file-b")).unwrap(), b"content of a");
    assert!(f.b("pz/file-b").exists(), "no plain backing name pz/file-b");
    assert!(!contains(&f.raw("pz/file-b"), b"content of a"));
    assert!(names(&f.m("ez")).is_empty(), "{:?}", names(&f.m("ez")));

    // reserved names: never made, never listed, not there when looked up
    fs::create_dir(e("sub")).unwrap();
    fs::write(e("f"), b"f").unwrap();
    for dir in ["", "sub/"] {
        for name in [
            ".ezfs-diriv",
            ".ezfs-long.x",
            ".ezfs-long.x.name",
            ".ezfs-zone",
            ".ezfs-tmp.x",
        ] {
            let p = e(&format!("{dir}{name}"));
            let what = format!("ez/{dir}{name}");
            assert_errno(fs::write(&p, b"x"), libc::EPERM, &format!("create {what}"));
            assert_errno(fs::create_dir(&p), libc::EPERM, &format!("mkdir {what}"));
            assert_errno(symlink("x", &p), libc::EPERM, &format!("symlink {what}"));
            assert_errno(fs::rename(e("f"), &p), libc::EPERM, &format!("rename to {what}"));
            assert_errno(fs::hard_link(e("f"), &p), libc::EPERM, &format!("link to {what}"));
        }
        // the diriv is there in the backing dir, yet not in the mount
        assert_errno(
            fs::symlink_metadata(e(&format!("{dir}.ezfs-diriv"))),
            libc::ENOENT,
            &format!("lstat ez/{dir}.ezfs-diriv"),
        );
    }
    assert_eq!(names_str(&f.m("ez")), set(&["f", "sub"]));
    assert!(names(&e("sub")).is_empty());
    let out = ls(&f, &f.m("ez"));
    assert!(!out.contains(".ezfs"), "ls -la ez: {out}");
    let out = ls(&f, &e("sub"));
    assert!(!out.contains(".ezfs"), "ls -la ez/sub: {out}");

    // rmdir: an empty directory goes, with its diriv; a non-empty one stays
    let dirs_before = name_entries(&f.b("ez")).len();
    fs::remove_dir(e("sub")).unwrap();
    assert!(!e("sub").exists());
    assert_eq!(
        name_entries(&f.b("ez")).len(),
        dirs_before - 1,
        "backing dir of ez/sub left behind"
    );
    fs::create_dir(e("full-dir")).unwrap();
    fs::write(e("full-dir/x"), b"x").unwrap();
    assert_errno(
        fs::remove_dir(e("full-dir")),
        libc::ENOTEMPTY,
        "rmdir ez/full-dir",
    );
    assert_eq!(names_str(&e("full-dir")), set(&["x"]));
    assert_eq!(fs::read(e("full-dir/x")).unwrap(), b"x");

    // mv -T over an empty directory
    fs::create_dir(e("empty-target")).unwrap();
    let before = name_entries(&f.b("ez")).len();
    ok(
        &run_cmd(
            Command::new("mv")
                .arg("-T")
                .arg(e("full-dir"))
                .arg(e("empty-target")),
            &f.scratch(),
        ),
        "mv -T ez/full-dir ez/empty-target",
    );
    assert!(!e("full-dir").exists());
    assert_eq!(fs::read(e("empty-target/x")).unwrap(), b"x");
    assert_eq!(names_str(&f.m("ez")), set(&["empty-target", "f"]));
    assert_eq!(name_entries(&f.b("ez")).len(), before - 1);
    assert_backing_encrypted(&f.b("ez"), &["empty-target", "full-dir"]);

    // a plain-name zone inside the name-encrypted zone
    f.zone("ez/inner-plain", "k1");
    fs::write(e("inner-plain/inner-file"), b"inner plain-name zone").unwrap();
    assert_eq!(names_str(&e("inner-plain")), set(&["inner-file"]));
    assert_eq!(
        fs::read(e("inner-plain/inner-file")).unwrap(),
        b"inner plain-name zone"
    );
    let inner_b: Vec<PathBuf> = walk(&f.b("ez"))
        .into_iter()
        .filter(|p| p.is_dir() && p.join(MARKER).exists())
        .collect();
    assert_eq!(inner_b.len(), 1, "{inner_b:?}");
    assert!(
        inner_b[0].join("inner-file").exists(),
        "the inner plain-name zone does not store its names in plain"
    );
    assert!(
        !contains(inner_b[0].file_name().unwrap().as_bytes(), b"inner"),
        "the inner zone's own name is plain in the outer zone"
    );
    assert_eq!(names_str(&f.m("ez")), set(&["empty-target", "f", "inner-plain"]));

    // a name-encrypted zone inside a plain-name zone
    f.names_zone("pz/inner-enc", "k1");
    fs::create_dir(f.m("pz/inner-enc/inner-dir")).unwrap();
    fs::write(f.m("pz/inner-enc/inner-dir/secret-name"), b"inner enc zone").unwrap();
    assert_eq!(names_str(&f.m("pz/inner-enc")), set(&["inner-dir"]));
    assert_eq!(names_str(&f.m("pz/inner-enc/inner-dir")), set(&["secret-name"]));
    assert_eq!(
        fs::read(f.m("pz/inner-enc/inner-dir/secret-name")).unwrap(),
        b"inner enc zone"
    );
    assert!(f.b("pz/inner-enc").is_dir(), "inner-enc's name is plain in pz");
    assert_backing_encrypted(&f.b("pz/inner-enc"), &["inner-dir", "secret-name"]);
    assert_errno(
        fs::rename(f.m("pz/inner-enc/inner-dir/secret-name"), f.m("pz/secret-name")),
        libc::EXDEV,
        "rename out of the inner name-encrypted zone",
    );
}

/// Backing entries that do not decrypt (a file moved to another directory, garbage
/// names, a long name whose sidecar holds another name) are left out of listings,
/// which still succeed and show every other file; each is logged once with "left out
/// of the listing", however often the directory is listed.
#[test]
fn undecryptable_entries_are_left_out_and_logged_once() {
    let f = Fixture::new();
    let m = f.mount();
    f.names_zone("z", "k1");
    let z = |r: &str| f.m(&format!("z/{r}"));
    let b = f.b("z");
    fs::write(z("keep-one"), b"keep one").unwrap();
    fs::write(z("keep-two"), b"keep two").unwrap();
    fs::create_dir(z("sub")).unwrap();
    fs::write(z("sub/in-sub"), b"in sub").unwrap();
    let dirs: Vec<PathBuf> = name_entries(&b)
        .into_iter()
        .map(|n| b.join(n))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let sub_b = dirs[0].clone();

    let e0 = name_entries(&b);
    fs::write(z("moved-away"), b"moved").unwrap();
    let e1 = name_entries(&b);
    let moved = new_entry(&e0, &e1);
    let long_a = long_name("long-a-", 200);
    let long_b = long_name("long-b-", 210);
    fs::write(z(&long_a), b"long a").unwrap();
    let e2 = name_entries(&b);
    let long_a_entry = new_entry(&e1, &e2);
    fs::write(z(&long_b), b"long b").unwrap();
    let long_b_entry = new_entry(&e2, &name_entries(&b));
    assert!(
        long_a_entry.as_bytes().starts_with(LONG.as_bytes()),
        "{long_a_entry:?}"
    );
    m.unmount();

    // (a) a file moved into another directory: sealed with the wrong diriv there
    fs::rename(b.join(&moved), sub_b.join(&moved)).unwrap();
    // (b) garbage names: not base64url, and base64url of 32 bytes that is no name
    let garbage = "notbase64!";
    let b64 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY"; // "ABC...Zabcdef", 32 bytes
    assert_eq!(b64.len(), 43);
    fs::write(b.join(garbage), b"garbage").unwrap();
    fs::write(b.join(b64), b"garbage").unwrap();
    // (c) long_a's sidecar made to hold long_b's encoded name
    let side = |e: &OsStr| {
        let mut s = e.to_owned();
        s.push(".name");
        b.join(s)
    };
    let other = fs::read(side(&long_b_entry)).unwrap();
    assert_ne!(fs::read(side(&long_a_entry)).unwrap(), other);
    let sp = side(&long_a_entry);
    let mut perm = fs::metadata(&sp).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
    fs::set_permissions(&sp, perm).unwrap();
    fs::write(&sp, &other).unwrap();

    let m = f.mount();
    for round in 0..2 {
        assert_eq!(
            names_str(&f.m("z")),
            set(&["keep-one", "keep-two", "sub", &long_b]),
            "listing of z, round {round}"
        );
        assert_eq!(
            names_str(&z("sub")),
            set(&["in-sub"]),
            "listing of z/sub, round {round}"
        );
        let out = ls(&f, &f.m("z"));
        assert!(
            out.contains("keep-one") && out.contains(&long_b),
            "ls -la z: {out}"
        );
        assert!(
            !out.contains("long-a-") && !out.contains("moved"),
            "ls -la z: {out}"
        );
        let out = ls(&f, &z("sub"));
        assert!(
            out.contains("in-sub") && !out.contains("moved"),
            "ls -la z/sub: {out}"
        );
        assert_eq!(fs::read(z("keep-one")).unwrap(), b"keep one");
        assert_eq!(fs::read(z("keep-two")).unwrap(), b"keep two");
        assert_eq!(fs::read(z("sub/in-sub")).unwrap(), b"in sub");
        assert_eq!(fs::read(z(&long_b)).unwrap(), b"long b");
        assert_errno(
            fs::symlink_metadata(z("moved-away")),
            libc::ENOENT,
            "lstat z/moved-away",
        );
        assert_errno(
            fs::symlink_metadata(z("sub/moved-away")),
            libc::ENOENT,
            "lstat z/sub/moved-away",
        );
        drop_caches();
    }

    let log = m.log();
    let left: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("left out of the listing"))
        .collect();
    for bad in [
        moved.to_string_lossy().into_owned(),
        garbage.to_string(),
        b64.to_string(),
        long_a_entry.to_string_lossy().into_owned(),
    ] {
        let n = left.iter().filter(|l| l.contains(&*bad)).count();
        assert_eq!(n, 1, "log lines for {bad:?} (want exactly one):\n{log}");
    }
    assert_eq!(left.len(), 4, "\"left out of the listing\" lines:\n{log}");
}

/// `zone create --encrypt-names` says "file names encrypted"; `zone info --json` and
/// `zone list --json` have "encrypt_names" true for such a zone and false for a plain
/// zone, and `zone list` shows it in its NAMES column.
#[test]
fn zone_info_and_list_show_encrypted_names() {
    let f = Fixture::new();
    let _m = f.mount();
    fs::create_dir(f.m("ez")).unwrap();
    fs::create_dir(f.m("pz")).unwrap();
    let ez = f.m("ez").to_str().unwrap().to_owned();
    let pz = f.m("pz").to_str().unwrap().to_owned();
    let o = f.run(&["zone", "create", "--key", "k1", "--encrypt-names", &ez]);
    ok(&o, "zone create --encrypt-names");
    assert!(
        stdout_of(&o).contains("file names encrypted"),
        "stdout: {}",
        stdout_of(&o)
    );
    let o = f.run(&["zone", "create", "--key", "k1", &pz]);
    ok(&o, "zone create");
    assert!(
        !stdout_of(&o).contains("file names encrypted"),
        "stdout: {}",
        stdout_of(&o)
    );
    fs::write(f.m("ez/file"), b"x").unwrap();
    fs::write(f.m("pz/file"), b"x").unwrap();

    for (rel, want) in [("ez", true), ("ez/file", true), ("pz", false), ("pz/file", false)] {
        let v = f.zone_info(rel);
        assert_eq!(
            v["encrypt_names"],
            serde_json::Value::Bool(want),
            "zone info {rel}: {v}"
        );
    }
    let zones = f.zone_list();
    for (path, want) in [(&ez, true), (&pz, false)] {
        let z = zones
            .iter()
            .find(|z| z["path"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("{path} not in zone list: {zones:?}"));
        assert_eq!(
            z["encrypt_names"],
            serde_json::Value::Bool(want),
            "zone list {path}: {z}"
        );
    }

    let o = f.run(&["zone", "list", f.mnt.to_str().unwrap()]);
    ok(&o, "zone list");
    let out = stdout_of(&o);
    let header = out.lines().next().unwrap_or("");
    assert!(
        header.split_whitespace().any(|w| w == "NAMES"),
        "zone list: {out}"
    );
    for (path, want) in [(&ez, "encrypted"), (&pz, "plain")] {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(path))
            .unwrap_or_else(|| panic!("{path} not in zone list: {out}"));
        assert!(row.split_whitespace().any(|w| w == want), "row of {path}: {row}");
    }
}

/// A symlink target of 3039 bytes is stored and read back (readlink and lstat size)
/// in a name-encrypted zone, also after a remount; 3040 bytes is ENAMETOOLONG there
/// (but fine outside any zone).
#[test]
fn symlink_targets_up_to_3039_bytes() {
    let f = Fixture::new();
    let m = f.mount();
    f.names_zone("z", "k1");
    let target = |len: usize| {
        let mut t = String::new();
        let mut i = 0;
        while t.len() < len {
            t += &format!("component-{i:04}/");
            i += 1;
        }
        t.truncate(len);
        t
    };
    let (t3039, t3040) = (target(3039), target(3040));
    symlink(&t3039, f.m("z/longest")).unwrap();
    assert_eq!(fs::read_link(f.m("z/longest")).unwrap(), Path::new(&t3039));
    assert_eq!(fs::symlink_metadata(f.m("z/longest")).unwrap().len(), 3039);
    assert_errno(
        symlink(&t3040, f.m("z/too-long")),
        libc::ENAMETOOLONG,
        "symlink of 3040 bytes",
    );
    assert_errno(
        fs::symlink_metadata(f.m("z/too-long")),
        libc::ENOENT,
        "lstat z/too-long",
    );
    assert_eq!(names_str(&f.m("z")), set(&["longest"]));
    assert_eq!(
        name_entries(&f.b("z")).len(),
        1,
        "backing entries: {:?}",
        names(&f.b("z"))
    );
    assert_backing_encrypted(&f.b("z"), &["component", "longest"]);
    symlink(&t3040, f.m("outside")).unwrap();
    assert_eq!(fs::read_link(f.m("outside")).unwrap(), Path::new(&t3040));

    m.unmount();
    let _m = f.mount();
    assert_eq!(fs::read_link(f.m("z/longest")).unwrap(), Path::new(&t3039));
    assert_eq!(fs::symlink_metadata(f.m("z/longest")).unwrap().len(), 3039);
}

/// Every stored name below `root` in the backing dir (housekeeping files and the
/// plain-named "nested-file" of a nested zone left out).
fn stored_names(root: &Path) -> BTreeSet<OsString> {
    walk(root)
        .iter()
        .filter_map(|p| p.file_name().map(OsStr::to_owned))
        .filter(|n| n != "nested-file")
        .filter(|n| {
            n != DIRIV
                && n != MARKER
                && !(n.as_bytes().starts_with(LONG.as_bytes()) && n.as_bytes().ends_with(b".name"))
        })
        .collect()
}

/// Key lifecycle of a name-encrypted zone: `zone reencrypt` re-wraps the name secret
/// (names stay) so that `key prune` can drop the old version; `zone reencrypt --data`
/// gives the zone a new secret and moves every name and symlink target to it. A move
/// stopped half way (as a crash would: `EZFS_FAULT_NAMES_AFTER`) leaves every entry
/// readable under its name, and the rerun finishes it.
#[test]
fn reencrypt_moves_names_to_a_new_secret_and_survives_an_interruption() {
    let f = Fixture::new();
    let m = f.mount();
    let z = f.names_zone("z", "k1");
    fs::create_dir_all(z.join("dir/deeper")).unwrap();
    for (i, p) in ["a", "dir/b", "dir/deeper/c", &long_name("L", 200)]
        .iter()
        .enumerate()
    {
        fs::write(z.join(p), format!("content {i}")).unwrap();
    }
    symlink("dir/deeper/c", z.join("link")).unwrap();
    // a nested zone (plain names) whose root's own name moves with the rest
    ok(&f.key("create", "k2"), "key create k2");
    let inner = f.zone("z/dir/inner", "k2");
    fs::write(inner.join("nested-file"), b"nested").unwrap();
    let tree = snapshot(&z);
    let names_v1 = stored_names(&f.b("z"));

    // re-wrap: no name changes, and the old version can go
    ok(&f.key("roll", "k1"), "roll");
    ok(&f.run(&["zone", "reencrypt", z.to_str().unwrap()]), "reencrypt");
    assert_eq!(stored_names(&f.b("z")), names_v1, "a re-wrap changes no name");
    ok(&f.key("prune", "k1"), "prune after the re-wrap");
    assert_eq!(snapshot(&z), tree);

    // --data, stopped after 3 names: every entry still readable, names mixed
    ok(&f.key("roll", "k1"), "roll");
    m.unmount();
    let m = f
        .try_mount_env(&[], &[("EZFS_FAULT_NAMES_AFTER", "3")])
        .unwrap_or_else(|e| panic!("mount: {e:?}"));
    let o = f.run(&["zone", "reencrypt", "--data", z.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "a stopped job fails: {}", stderr_of(&o));
    let mixed = stored_names(&f.b("z"));
    assert_eq!(
        mixed.intersection(&names_v1).count(),
        names_v1.len() - 3,
        "3 names moved"
    );
    assert_eq!(snapshot(&z), tree, "half way, the tree reads as before");
    let o = f.key("prune", "k1");
    assert_eq!(o.status.code(), Some(1), "the names still need the old version");
    assert!(stderr_of(&o).contains("file-name secret"), "{}", stderr_of(&o));
    drop(m);

    // the rerun finishes the move: no name under the old secret is left
    let _m = f.mount();
    assert_eq!(snapshot(&z), tree, "after a remount half way");
    ok(
        &f.run(&["zone", "reencrypt", z.to_str().unwrap()]),
        "rerun (resumes as --data)",
    );
    let moved = stored_names(&f.b("z"));
    assert!(moved.is_disjoint(&names_v1), "every name moved: {moved:?}");
    assert_eq!(moved.len(), names_v1.len());
    assert_eq!(snapshot(&z), tree, "after the move");
    ok(&f.key("prune", "k1"), "prune after the move");
    assert_eq!(snapshot(&z), tree, "after prune");
    // the registry followed the nested zone's root to its new backing name
    drop(_m);
    let _m = f.mount();
    assert_eq!(snapshot(&z), tree, "after a remount");
    let o = f.run(&["zone", "info", "--json", inner.to_str().unwrap()]);
    ok(&o, "zone info of the nested zone");
    assert!(
        stdout_of(&o).contains("\"encrypt_names\": false"),
        "{}",
        stdout_of(&o)
    );
    assert_backing_encrypted(&f.b("z"), &["content", "deeper", "link"]);
}

/// `ezfs fsck` reports, by its backing path, an entry of a name-encrypted zone whose
/// name does not decrypt there (planted, or moved in from another directory), exits 1,
/// and with `--quarantine` moves it into the zone's lost+found; the diriv and sidecar
/// files are never reported; afterwards fsck is clean and the mount lists the rest.
#[test]
fn fsck_reports_and_quarantines_names_that_do_not_decrypt() {
    let f = Fixture::new();
    let m = f.mount();
    let z = f.names_zone("z", "k1");
    fs::create_dir(z.join("sub")).unwrap();
    fs::write(z.join("keep"), b"keep").unwrap();
    fs::write(z.join("sub/moved"), b"moved").unwrap();
    fs::write(z.join(long_name("long-", 220)), b"long").unwrap();
    m.unmount();
    let fsck = |extra: &[&str]| {
        let mut args = vec!["fsck", "--passphrase-file", f.pass.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(f.backing.to_str().unwrap());
        f.run(&args)
    };
    ok(&fsck(&[]), "fsck of a clean zone");
    // a planted name, and a name moved from sub/ to the zone root
    fs::write(f.b("z").join("planted-name"), b"x").unwrap();
    let sub_backing = name_entries(&f.b("z"))
        .into_iter()
        .find(|n| f.b("z").join(n).is_dir())
        .expect("the backing name of sub");
    let moved = name_entries(&f.b("z").join(&sub_backing))
        .into_iter()
        .next()
        .expect("sub holds one name");
    fs::rename(f.b("z").join(&sub_backing).join(&moved), f.b("z").join(&moved)).unwrap();
    let o = fsck(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout_of(&o));
    let out = stdout_of(&o);
    for bad in [OsStr::new("planted-name"), moved.as_os_str()] {
        let line = format!("DAMAGED /z/{}: name:", bad.to_string_lossy());
        assert!(out.contains(&line), "no {line:?} in: {out}");
    }
    assert!(!out.contains(DIRIV) && !out.contains(".name:"), "{out}");
    let o = fsck(&["--quarantine"]);
    assert!(
        stdout_of(&o).contains("moved to /z/lost+found/"),
        "{}",
        stdout_of(&o)
    );
    assert!(!f.b("z/planted-name").exists());
    ok(&fsck(&[]), "fsck after the quarantine");
    let _m = f.mount();
    assert_eq!(names_str(&f.m("z/sub")), set(&[]));
    assert_eq!(fs::read(z.join("keep")).unwrap(), b"keep");
    assert_eq!(fs::read(z.join(long_name("long-", 220))).unwrap(), b"long");
}
