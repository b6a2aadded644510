//! `ezfs mount --passthrough`: plain files (outside zones) do their I/O in the kernel
//! (FUSE passthrough), so their reads and writes never reach the daemon, while they
//! keep what plain files have (append, mmap, fallocate, truncate, xattrs, hard links,
//! renames) and files in zones keep working through the daemon.

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// The daemon's read and write request counters (`ezfs status --json`).
fn counters(f: &Fixture) -> (u64, u64) {
    let o = f.run(&["status", f.mnt.to_str().unwrap(), "--json"]);
    ok(&o, "status");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &v[0]["daemon"]["counters"];
    (c["reads"].as_u64().unwrap(), c["writes"].as_u64().unwrap())
}

/// 8 MiB written, read back, appended to, read again: `(reads, writes)` the daemon
/// served meanwhile.
fn plain_io(f: &Fixture, p: &Path) -> (u64, u64) {
    let before = counters(f);
    let data = Rng::new(3).bytes(8 << 20);
    fs::write(p, &data).unwrap();
    drop_caches();
    assert_same(&fs::read(p).unwrap(), &data, "read back");
    OpenOptions::new()
        .append(true)
        .open(p)
        .unwrap()
        .write_all(b"tail")
        .unwrap();
    let all = fs::read(p).unwrap();
    assert_eq!(&all[data.len()..], b"tail");
    let after = counters(f);
    (after.0 - before.0, after.1 - before.1)
}

/// With --passthrough, plain files' data never goes through the daemon; without it,
/// it does (so the counters tell the two apart). Files in a zone still go through
/// the daemon, encrypted.
#[test]
fn plain_files_pass_through_and_zone_files_do_not() {
    let f = Fixture::new();
    {
        let _m = f.mount();
        fs::create_dir(f.m("p")).unwrap();
        let (r, w) = plain_io(&f, &f.m("p/usual"));
        assert!(
            r > 0 && w > 0,
            "without passthrough the daemon serves them: {r} {w}"
        );
    }
    let m = f.mount_opts(&["--passthrough"]);
    assert!(m.log().contains("FUSE passthrough"), "{}", m.log());
    assert_eq!(plain_io(&f, &f.m("p/fast")), (0, 0), "the daemon saw plain I/O");
    let z = f.zone("z", "k1");
    let before = counters(&f);
    fs::write(z.join("secret"), b"through the daemon").unwrap();
    drop_caches();
    assert_eq!(fs::read(z.join("secret")).unwrap(), b"through the daemon");
    let after = counters(&f);
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "zone I/O: {before:?} -> {after:?}"
    );
    assert_eq!(&f.raw("z/secret")[..8], MAGIC, "the zone file is encrypted");
    // -o passthrough is the same option
    drop(m);
    let m = f.mount_opts(&["-o", "passthrough"]);
    assert!(m.log().contains("FUSE passthrough"), "{}", m.log());
    assert_eq!(plain_io(&f, &f.m("p/again")), (0, 0));
}

/// What plain files can do stays the same with --passthrough: repeated opens (read-only
/// and read-write at once), mmap writes, truncate, fallocate, xattrs, hard links and
/// renames; the backing file holds exactly what the mount shows.
#[test]
fn plain_files_keep_their_features_with_passthrough() {
    let f = Fixture::new();
    let _m = f.mount_opts(&["--passthrough"]);
    fs::create_dir(f.m("p")).unwrap();
    let p = f.m("p/f");
    fs::write(&p, vec![7u8; 100_000]).unwrap();
    // a reader and a writer open together, then a third open after both closed
    let r = fs::File::open(&p).unwrap();
    let w = OpenOptions::new().write(true).open(&p).unwrap();
    w.write_all_at(b"WRITER", 10).unwrap();
    let mut buf = [0u8; 6];
    r.read_exact_at(&mut buf, 10).unwrap();
    assert_eq!(&buf, b"WRITER");
    drop((r, w));
    for _ in 0..3 {
        assert_eq!(&fs::read(&p).unwrap()[10..16], b"WRITER", "a later open");
    }
    // mmap
    let ok_py = |script: &str| {
        ok(
            &std::process::Command::new("python3")
                .args(["-c", script])
                .output()
                .unwrap(),
            script,
        )
    };
    ok_py(&format!(
        "import mmap\nf=open('{}','r+b')\nm=mmap.mmap(f.fileno(),0)\nm[0:5]=b'MMAP!'\nm.flush()",
        p.display()
    ));
    assert_eq!(
        &fs::read(f.b("p/f")).unwrap()[..5],
        b"MMAP!",
        "mmap writes reach the backing file"
    );
    // truncate and fallocate
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(50_000)
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 50_000);
    ok(
        &f.sh("fallocate", &[Path::new("-l"), Path::new("1048576"), &p]),
        "fallocate",
    );
    assert_eq!(fs::metadata(&p).unwrap().len(), 1 << 20);
    assert_eq!(fs::metadata(f.b("p/f")).unwrap().len(), 1 << 20);
    // xattrs, hard links, renames
    ok(
        &f.sh(
            "setfattr",
            &[
                Path::new("-n"),
                Path::new("user.k"),
                Path::new("-v"),
                Path::new("v"),
                &p,
            ],
        ),
        "setfattr",
    );
    fs::hard_link(&p, f.m("p/link")).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().nlink(), 2);
    fs::rename(f.m("p/link"), f.m("p/renamed")).unwrap();
    OpenOptions::new()
        .append(true)
        .open(f.m("p/renamed"))
        .unwrap()
        .write_all(b"END")
        .unwrap();
    let all = fs::read(&p).unwrap();
    assert_eq!(&all[all.len() - 3..], b"END", "written through the other name");
    assert_eq!(
        fs::read(f.b("p/f")).unwrap(),
        all,
        "the backing file is what the mount shows"
    );
}
