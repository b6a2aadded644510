//! The filesystem core driven directly, without a kernel mount: the second tier of
//! tests, between the unit tests and the mounts. Each test makes a backing dir with a
//! keystore, builds a `Core` on it, and calls its operations as the FUSE adapter
//! would, as root or as another user. `model` compares the core with a reference
//! model over random operation sequences.

#[path = "core/model.rs"]
mod model;
#[path = "core/shared.rs"]
mod shared;

use ezfs::backdir::Caller;
use ezfs::fs::{Core, FileKind, SetAttr};
use ezfs::keys::keystore::Principal;
use ezfs::keys::{KdfParams, Keystore, LocalProvider};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;

const ROOT: u64 = 1;

/// A backing dir with keys `k1` and `k2` (`k2` granted to uid 60001 and gid 60010), and
/// a core on it.
struct Fixture {
    _dir: tempfile::TempDir,
    backing: PathBuf,
    core: Arc<Core>,
}

/// A new backing dir in a temporary directory, with a keystore (passphrase
/// "passphrase", a fast KDF) that has key `k1`.
fn backing_with_k1() -> (tempfile::TempDir, PathBuf, Keystore) {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    std::fs::create_dir(&backing).unwrap();
    let backing = backing.canonicalize().unwrap();
    let fast = KdfParams {
        m_kib: 1024,
        t: 1,
        p: 1,
    };
    let mut ks = Keystore::init(&backing, b"passphrase", fast).unwrap();
    ks.create_key("k1", 0).unwrap();
    (dir, backing, ks)
}

fn fixture(read_only: bool) -> Fixture {
    let (dir, backing, mut ks) = backing_with_k1();
    ks.create_key("k2", 0).unwrap();
    ks.grant("k2", Principal::User(60001)).unwrap();
    ks.grant("k2", Principal::Group(60010)).unwrap();
    let keys = Arc::new(LocalProvider::new(ks));
    let core = Arc::new(Core::new(backing.clone(), keys, read_only).unwrap());
    core.locate_zones().unwrap();
    Fixture {
        _dir: dir,
        backing,
        core,
    }
}

fn root() -> Caller {
    Caller::with_groups(0, 0, std::process::id(), vec![])
}

fn user(uid: u32) -> Caller {
    Caller::with_groups(uid, uid, std::process::id(), vec![])
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

impl Fixture {
    /// A directory `path` under the root (made), as a zone under `key` if given.
    fn dir(&self, path: &str, key: Option<&str>) -> u64 {
        let attr = self.core.mkdir(&root(), ROOT, name(path), 0o777, 0).unwrap();
        if let Some(key) = key {
            self.core.zone_create(path, key, false, &root()).unwrap();
        }
        attr.ino
    }

    /// Creates `file` in directory node `dir` holding `data`; its node id.
    fn file(&self, dir: u64, file: &str, data: &[u8]) -> u64 {
        let (attr, o) = self
            .core
            .create(&root(), dir, name(file), 0o666, 0, libc::O_RDWR)
            .unwrap();
        assert_eq!(
            self.core.write(attr.ino, o.fh, 0, data, false, false).unwrap(),
            data.len()
        );
        self.core.release(attr.ino, o.fh);
        attr.ino
    }

    /// The whole contents of node `ino`, read as `who`.
    fn read(&self, who: &Caller, ino: u64) -> Result<Vec<u8>, i32> {
        let o = self.core.open(who, ino, libc::O_RDONLY).map_err(|e| e.errno())?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.core.read(o.fh, out.len() as u64, &mut buf);
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.core.release(ino, o.fh);
                    return Err(e.errno());
                }
            };
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        self.core.release(ino, o.fh);
        Ok(out)
    }

    /// The names directory node `dir` lists (without "." and "..").
    fn names(&self, dir: u64) -> Vec<String> {
        let fh = self.core.opendir(dir).unwrap();
        let mut out = Vec::new();
        self.core
            .readdir(dir, fh, 0, &mut |e, _| {
                out.push(e.name.to_string_lossy().into_owned());
                false
            })
            .unwrap();
        self.core.releasedir(fh);
        out.retain(|n| n != "." && n != "..");
        out.sort();
        out
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn lookups_listings_and_attributes() {
    let f = fixture(false);
    let z = f.dir("z", Some("k1"));
    let plain = f.dir("plain", None);
    let data = b"attribute test data".repeat(1000);
    let fz = f.file(z, "a", &data);
    f.file(plain, "b", b"plain");
    let a = f.core.lookup(z, name("a")).unwrap();
    assert_eq!((a.ino, a.size, a.kind), (fz, data.len() as u64, FileKind::File));
    assert_eq!(f.core.getattr(fz).unwrap().size, data.len() as u64);
    assert_eq!(f.core.lookup(ROOT, name("z")).unwrap().kind, FileKind::Dir);
    // the marker and .ezfs are not part of the mount
    assert_eq!(f.names(z), ["a"]);
    assert_eq!(f.names(ROOT), ["plain", "z"]);
    assert_eq!(
        f.core.lookup(z, name(".ezfs-zone")).unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(
        f.core.lookup(ROOT, name(".ezfs")).unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(
        f.core.lookup(z, name("missing")).unwrap_err().errno(),
        libc::ENOENT
    );
    // ".." of a zone's subdirectory is the zone root
    let sub = f.core.mkdir(&root(), z, name("sub"), 0o755, 0).unwrap();
    assert_eq!(f.core.lookup(sub.ino, name("..")).unwrap().ino, z);
    // truncate through setattr shows the plaintext size
    let s = SetAttr {
        size: Some(10),
        ..SetAttr::default()
    };
    assert_eq!(f.core.setattr(&root(), fz, &s).unwrap().size, 10);
    assert_eq!(f.read(&root(), fz).unwrap(), &data[..10]);
}

#[test]
fn files_in_a_zone_are_ciphertext_in_the_backing_dir() {
    let f = fixture(false);
    let z = f.dir("z", Some("k1"));
    let secret = b"the plaintext must not reach the disk; ".repeat(300);
    let ino = f.file(z, "secret", &secret);
    let on_disk = std::fs::read(f.backing.join("z/secret")).unwrap();
    assert!(on_disk.starts_with(ezfs::format::header::MAGIC));
    assert!(!contains(&on_disk, b"the plaintext must not"));
    assert!(
        f.read(&root(), ino).unwrap() == secret,
        "read back what was written"
    );
    // writes in the middle, across a block boundary, and past the end
    let o = f.core.open(&root(), ino, libc::O_RDWR).unwrap();
    f.core
        .write(ino, o.fh, 4090, b"0123456789", false, false)
        .unwrap();
    f.core.write(ino, o.fh, 20_000, b"tail", false, false).unwrap();
    f.core.release(ino, o.fh);
    let mut want = secret.clone();
    want[4090..4100].copy_from_slice(b"0123456789");
    want.resize(20_000, 0);
    want.extend_from_slice(b"tail");
    assert!(
        f.read(&root(), ino).unwrap() == want,
        "read back what was written"
    );
}

#[test]
fn rename_and_link_across_zones_are_exdev() {
    let f = fixture(false);
    let z1 = f.dir("z1", Some("k1"));
    let z2 = f.dir("z2", Some("k2"));
    let plain = f.dir("plain", None);
    let sub = f.core.mkdir(&root(), z1, name("sub"), 0o755, 0).unwrap().ino;
    let a = f.file(z1, "a", b"aaaa");
    f.file(plain, "p", b"pppp");
    let xdev = |r: Result<(), ezfs::fs::FsError>| r.unwrap_err().errno();
    assert_eq!(xdev(f.core.rename(z1, name("a"), z2, name("a"), 0)), libc::EXDEV);
    assert_eq!(
        xdev(f.core.rename(z1, name("a"), plain, name("a"), 0)),
        libc::EXDEV
    );
    assert_eq!(
        xdev(f.core.rename(plain, name("p"), z1, name("p"), 0)),
        libc::EXDEV
    );
    assert_eq!(f.core.link(a, z2, name("l")).unwrap_err().errno(), libc::EXDEV);
    assert_eq!(f.core.link(a, plain, name("l")).unwrap_err().errno(), libc::EXDEV);
    // inside the zone, both work, and the file still decrypts
    f.core.rename(z1, name("a"), sub, name("b"), 0).unwrap();
    let b = f.core.lookup(sub, name("b")).unwrap().ino;
    f.core.link(b, z1, name("again")).unwrap();
    assert_eq!(f.read(&root(), b).unwrap(), b"aaaa");
    let again = f.core.lookup(z1, name("again")).unwrap().ino;
    assert_eq!(f.read(&root(), again).unwrap(), b"aaaa");
    // a zone root moves with its registration
    f.core.rename(ROOT, name("z2"), plain, name("moved"), 0).unwrap();
    let zones = f.core.zone_list(&root());
    assert!(
        zones.iter().any(|z| z.path == "/plain/moved" && z.key == "k2"),
        "{zones:?}"
    );
}

#[test]
fn key_users_only() {
    let f = fixture(false);
    let z1 = f.dir("z1", Some("k1"));
    let z2 = f.dir("z2", Some("k2"));
    let one = f.file(z1, "one", b"k1 data");
    let two = f.file(z2, "two", b"k2 data");
    // k1 has no users but root and its owner (root); k2 lets uid 60001 in
    assert_eq!(f.read(&user(60001), one), Err(libc::EACCES));
    assert_eq!(f.read(&user(60001), two).unwrap(), b"k2 data");
    assert_eq!(f.read(&user(60002), two), Err(libc::EACCES));
    let create = f
        .core
        .create(&user(60002), z2, name("new"), 0o644, 0, libc::O_RDWR);
    assert_eq!(create.unwrap_err().errno(), libc::EACCES);
    // membership of a granted group counts
    let member = Caller::with_groups(60003, 60003, std::process::id(), vec![60010]);
    assert_eq!(f.read(&member, two).unwrap(), b"k2 data");
    let outsider = Caller::with_groups(60003, 60003, std::process::id(), vec![60011]);
    assert_eq!(f.read(&outsider, two), Err(libc::EACCES));
    // zone creation needs the key too
    let d = f.core.mkdir(&user(60002), ROOT, name("mine"), 0o755, 0).unwrap();
    assert_eq!(d.uid, 60002, "new entries belong to their creator");
    let e = f.core.zone_create("mine", "k1", false, &user(60002)).unwrap_err();
    assert_eq!(e.to_string(), "uid 60002 may not use key k1");
    assert_eq!(e.errno(), libc::EACCES);
}

#[test]
fn reserved_names_and_read_only_mounts() {
    let f = fixture(false);
    let z = f.dir("z", Some("k1"));
    for reserved in [".ezfs-zone", ".ezfs-tmp.abc", ".ezfs-rekey.1"] {
        let r = f.core.create(&root(), z, name(reserved), 0o644, 0, libc::O_RDWR);
        assert_eq!(r.unwrap_err().errno(), libc::EPERM, "{reserved}");
    }
    assert_eq!(
        f.core
            .mkdir(&root(), ROOT, name(".ezfs"), 0o755, 0)
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    assert_eq!(
        f.core.unlink(z, name(".ezfs-zone")).unwrap_err().errno(),
        libc::ENOENT
    );
    f.file(z, "f", b"x");
    let ro = Core::new(f.backing.clone(), f.core.keys.clone(), true).unwrap();
    ro.locate_zones().unwrap();
    let zr = ro.lookup(ROOT, name("z")).unwrap().ino;
    assert_eq!(
        ro.create(&root(), zr, name("g"), 0o644, 0, libc::O_RDWR)
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
    assert_eq!(ro.unlink(zr, name("f")).unwrap_err().errno(), libc::EROFS);
    let ino = ro.lookup(zr, name("f")).unwrap().ino;
    assert_eq!(
        ro.open(&root(), ino, libc::O_RDWR).unwrap_err().errno(),
        libc::EROFS
    );
    assert!(ro.open(&root(), ino, libc::O_RDONLY).is_ok());
}

#[test]
fn ciphertext_moved_behind_the_mount_is_refused() {
    let f = fixture(false);
    let z1 = f.dir("z1", Some("k1"));
    let z2 = f.dir("z2", Some("k1"));
    let plain = f.dir("plain", None);
    f.file(z1, "secret", b"zone one only");
    // copied in the backing dir into another zone of the same key, and out of zones
    std::fs::copy(f.backing.join("z1/secret"), f.backing.join("z2/copy")).unwrap();
    std::fs::copy(f.backing.join("z1/secret"), f.backing.join("plain/copy")).unwrap();
    let c2 = f.core.lookup(z2, name("copy")).unwrap().ino;
    let cp = f.core.lookup(plain, name("copy")).unwrap().ino;
    assert_eq!(f.read(&root(), c2), Err(libc::EIO));
    assert_eq!(f.read(&root(), cp), Err(libc::EIO));
}

#[test]
fn zone_requests_answer_with_typed_errors() {
    let f = fixture(false);
    f.dir("z", Some("k1"));
    f.dir("plain", None);
    let e = f.core.zone_create("z", "k1", false, &root()).unwrap_err();
    assert_eq!(
        (e.errno(), e.to_string()),
        (libc::EEXIST, "/z is already an encryption zone".into())
    );
    let p = f.core.lookup(ROOT, name("plain")).unwrap().ino;
    f.file(p, "x", b"");
    let e = f.core.zone_create("plain", "k1", false, &root()).unwrap_err();
    assert_eq!(e.errno(), libc::ENOTEMPTY);
    let e = f.core.zone_create("../etc", "k1", false, &root()).unwrap_err();
    assert_eq!(e.to_string(), "invalid path '../etc' in the mount");
    let e = f.core.zone_create("nope", "k1", false, &root()).unwrap_err();
    assert_eq!(
        (e.errno(), e.to_string()),
        (libc::ENOENT, "/nope: No such file or directory".into())
    );
    let e = f.core.zone_info("plain/x", &root()).unwrap_err();
    assert_eq!(e.to_string(), "/plain/x is not in an encryption zone");
    f.dir("empty", None);
    let e = f.core.zone_create("empty", "nokey", false, &root()).unwrap_err();
    assert_eq!(e.to_string(), "no key named 'nokey'");
    std::os::unix::fs::symlink("/etc", f.backing.join("plain/link")).unwrap();
    let e = f.core.zone_info("plain/link/passwd", &root()).unwrap_err();
    assert_eq!(
        (e.errno(), e.to_string()),
        (
            libc::ELOOP,
            "/plain/link/passwd: a symbolic link is in the way".into()
        )
    );
}

/// The kernel may look a node up by file handle (LOOKUP of ".") while its FORGET is
/// still being handled on another thread: the node is found, in the table or among
/// the remembered ones, never ESTALE in between.
#[test]
fn a_node_looked_up_by_handle_while_being_forgotten_is_found() {
    let f = fixture(false);
    let p = f.dir("p", None);
    let ino = f.file(p, "f", b"x");
    let mut stale = 0;
    for _ in 0..3000 {
        // one lookup is held (from create, then from each "." lookup): forget it on
        // another thread while "." is looked up here
        let core = f.core.clone();
        let forget = std::thread::spawn(move || core.forget(ino, 1));
        let r = f.core.lookup(ino, name("."));
        forget.join().unwrap();
        match r {
            Ok(a) => assert_eq!(a.ino, ino),
            Err(e) if e.errno() == libc::ESTALE => {
                stale += 1;
                // put the lookup back for the next round
                f.core.lookup(ino, name(".")).unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(stale, 0, "lookups of \".\" that found the node nowhere");
}
