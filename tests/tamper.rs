//! Tampering with the backing dir is detected, not silently used: a changed data block
//! gives EIO for reads that touch it (other blocks stay readable), a changed header
//! makes the file unreadable, an edited zone marker makes the zone's files EIO.

mod common;

use common::*;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

const BS: usize = 4096;

/// Reads block `b` (4 KiB, or the tail) of an open file.
fn read_block(fh: &File, b: u64, size: usize) -> std::io::Result<Vec<u8>> {
    let off = b as usize * BS;
    let len = (size - off).min(BS);
    let mut buf = vec![0u8; len];
    fh.read_exact_at(&mut buf, off as u64)?;
    Ok(buf)
}

/// Asserts that exactly the blocks in `bad` give EIO and all others read correctly.
#[track_caller]
fn check_blocks(path: &std::path::Path, data: &[u8], bad: &[u64]) {
    let fh = File::open(path).expect("open of a file with a damaged block");
    let blocks = data.len().div_ceil(BS) as u64;
    for b in 0..blocks {
        let r = read_block(&fh, b, data.len());
        if bad.contains(&b) {
            assert_errno(
                r,
                libc::EIO,
                &format!("{}: read of damaged block {b}", path.display()),
            );
        } else {
            let got = r.unwrap_or_else(|e| panic!("{}: read of intact block {b}: {e}", path.display()));
            let off = b as usize * BS;
            assert_same(
                &got,
                &data[off..off + got.len()],
                &format!("{}: block {b}", path.display()),
            );
        }
    }
    // reads that straddle a bad block fail too; so does reading the whole file
    for &b in bad {
        let mut buf = vec![0u8; 3 * BS];
        let start = (b as usize * BS).saturating_sub(100) as u64;
        assert_errno(
            fh.read_exact_at(&mut buf[..200], start),
            libc::EIO,
            &format!("read straddling block {b}"),
        );
    }
    assert_errno(
        fs::read(path),
        libc::EIO,
        &format!("{}: read of the whole file", path.display()),
    );
}

#[test]
fn flipped_data_block_gives_eio_only_there() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let mut rng = Rng::new(77);
    // 200 blocks: two groups; last block partial
    let data = rng.bytes(199 * BS + 1234);
    for name in ["d2", "d130", "last", "meta5", "meta140", "intact"] {
        fs::write(f.m(&format!("z/{name}")), &data).unwrap();
    }
    m.unmount();
    f.flip_raw("z/d2", data_offset(2) + 100, 0x01); // ciphertext, first group
    f.flip_raw("z/d130", data_offset(130), 0x80); // ciphertext, second group
    f.flip_raw("z/last", data_offset(199) + 1000, 0x10); // the partial last block
    f.flip_raw("z/meta5", entry_offset(5) + 3, 0x01); // block 5's nonce
    f.flip_raw("z/meta140", entry_offset(140) + 12 + 5, 0x01); // block 140's tag
    let m = f.mount();
    check_blocks(&f.m("z/d2"), &data, &[2]);
    check_blocks(&f.m("z/d130"), &data, &[130]);
    check_blocks(&f.m("z/last"), &data, &[199]);
    check_blocks(&f.m("z/meta5"), &data, &[5]);
    check_blocks(&f.m("z/meta140"), &data, &[140]);
    assert_same(&fs::read(f.m("z/intact")).unwrap(), &data, "untouched file");
    assert!(
        m.log().contains("failed authentication"),
        "daemon log: {}",
        m.log()
    );
    // rewriting the damaged block in full repairs it
    let fh = OpenOptions::new().write(true).open(f.m("z/d2")).unwrap();
    fh.write_all_at(&data[2 * BS..3 * BS], 2 * BS as u64).unwrap();
    drop(fh);
    assert_same(
        &fs::read(f.m("z/d2")).unwrap(),
        &data,
        "after rewriting the damaged block",
    );
}

#[test]
fn flipped_data_block_while_mounted_after_drop_caches() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    let data = Rng::new(78).bytes(20 * BS);
    fs::write(f.m("z/f"), &data).unwrap();
    assert_same(&fs::read(f.m("z/f")).unwrap(), &data, "before tampering");
    f.flip_raw("z/f", data_offset(7) + 4095, 0x40);
    drop_caches();
    check_blocks(&f.m("z/f"), &data, &[7]);
}

#[test]
fn flipped_header_byte_makes_the_file_unreadable() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let data = Rng::new(79).bytes(3 * BS + 10);
    // magic, format version, suite, file id, zone id, EDEK (key "k1": EDEK at 55..115),
    // padding after the EDEK
    let offsets = [0u64, 8, 10, 12, 20, 40, 60, 110, 2000, 4095];
    for off in offsets {
        fs::write(f.m(&format!("z/h{off}")), &data).unwrap();
    }
    fs::write(f.m("z/intact"), &data).unwrap();
    fs::write(f.m("z/short"), &data).unwrap();
    m.unmount();
    for off in offsets {
        f.flip_raw(&format!("z/h{off}"), off, 0x04);
    }
    // a backing file cut inside its header
    OpenOptions::new()
        .write(true)
        .open(f.b("z/short"))
        .unwrap()
        .set_len(100)
        .unwrap();
    let m = f.mount();
    for off in offsets
        .iter()
        .map(|o| format!("z/h{o}"))
        .chain(["z/short".to_string()])
    {
        let p = f.m(&off);
        match File::open(&p) {
            Err(e) => assert_eq!(errno(&e), libc::EIO, "{off}: open failed with {e}, expected EIO"),
            Ok(fh) => {
                let mut buf = vec![0u8; BS];
                assert_errno(fh.read_at(&mut buf, 0), libc::EIO, &format!("{off}: read"));
            }
        }
        assert_errno(fs::read(&p), libc::EIO, &format!("{off}: fs::read"));
        // nor can it be silently overwritten with a fresh header
        assert_errno(
            OpenOptions::new().write(true).open(&p),
            libc::EIO,
            &format!("{off}: open for writing"),
        );
    }
    assert_same(
        &fs::read(f.m("z/intact")).unwrap(),
        &data,
        "untouched file next to damaged ones",
    );
    fs::write(f.m("z/new"), b"new files still work").unwrap();
    assert_eq!(fs::read(f.m("z/new")).unwrap(), b"new files still work");
    assert!(
        m.log().contains("/z/h20"),
        "the log names the damaged file: {}",
        m.log()
    );
}

/// The key-version and key-name fields of the header: a changed byte names a key
/// version (or key) the keystore does not have. Checked first from a child process
/// with a deadline (an unknown key used to hang the daemon), then in-process.
#[test]
fn header_naming_an_unknown_key_or_version_gives_eio() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    // offset 48: key version (1 -> 5); 53: first byte of the key name ('k' -> 'o')
    for off in [48u64, 53] {
        fs::write(f.m(&format!("z/h{off}")), b"some secret data").unwrap();
    }
    fs::write(f.m("z/intact"), b"intact").unwrap();
    m.unmount();
    f.flip_raw("z/h48", 48, 0x04);
    f.flip_raw("z/h53", 53, 0x04);
    let _m = f.mount();
    for off in [48u64, 53] {
        let p = f.m(&format!("z/h{off}"));
        let o = try_run_cmd(Command::new("cat").arg(&p), &f.scratch(), Duration::from_secs(15))
            .unwrap_or_else(|| panic!("reading z/h{off} hung (daemon deadlock?)"));
        assert!(!o.status.success(), "cat z/h{off} succeeded: {:?}", stdout_of(&o));
        assert!(
            stderr_of(&o).contains("Input/output error"),
            "cat z/h{off}: {}",
            stderr_of(&o)
        );
        assert_errno(fs::read(&p), libc::EIO, &format!("z/h{off}"));
    }
    assert_eq!(fs::read(f.m("z/intact")).unwrap(), b"intact");
}

/// Edits the key name in a zone marker (a well-formed edit to another existing key).
fn edit_marker(f: &Fixture, rel: &str) -> Vec<u8> {
    let p = f.b(&format!("{rel}/.ezfs-zone"));
    let orig = fs::read(&p).unwrap();
    let text = String::from_utf8(orig.clone()).unwrap();
    let edited = text.replace("\"k1\"", "\"k2\"");
    assert_ne!(edited, text, "marker format changed? {text}");
    fs::write(&p, edited).unwrap();
    orig
}

#[test]
fn edited_zone_marker_while_mounted_makes_zone_files_eio() {
    let f = Fixture::new();
    let _m = f.mount();
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("z", "k1");
    f.zone("other", "k1");
    fs::create_dir(f.m("plain")).unwrap();
    fs::write(f.m("z/f"), b"zone file").unwrap();
    fs::write(f.m("other/g"), b"other zone").unwrap();
    fs::write(f.m("plain/h"), b"plain").unwrap();
    let orig = edit_marker(&f, "z");
    // the mount re-reads the marker once the kernel has dropped the zone's inode and
    // the daemon has processed the FORGET (asynchronous: retry for a while)
    let eio = || fs::read(f.m("z/f")).err().map(|e| errno(&e)) == Some(libc::EIO);
    let seen = wait_until(Duration::from_secs(60), || {
        drop_caches();
        std::thread::sleep(Duration::from_millis(50));
        eio()
    });
    assert!(
        seen,
        "read in a zone with an edited marker: {:?}",
        fs::read(f.m("z/f"))
    );
    assert_errno(
        fs::write(f.m("z/new"), b"x"),
        libc::EIO,
        "create in a zone with an edited marker",
    );
    assert!(
        !f.b("z/new").exists(),
        "a file was created in a zone whose marker is edited"
    );
    assert_eq!(fs::read(f.m("other/g")).unwrap(), b"other zone");
    assert_eq!(fs::read(f.m("plain/h")).unwrap(), b"plain");
    // restored marker: readable again
    fs::write(f.b("z/.ezfs-zone"), orig).unwrap();
    let back = wait_until(Duration::from_secs(60), || {
        drop_caches();
        std::thread::sleep(Duration::from_millis(50));
        fs::read(f.m("z/f")).is_ok()
    });
    assert!(
        back,
        "zone still unreadable after restoring its marker: {:?}",
        fs::read(f.m("z/f"))
    );
    assert_eq!(fs::read(f.m("z/f")).unwrap(), b"zone file");
}

/// With the marker edited while unmounted, the mount should either come up with the
/// zone's files giving EIO (other zones usable), or refuse with a message that says
/// what is wrong (the marker fails authentication).
#[test]
fn edited_zone_marker_while_unmounted() {
    let f = Fixture::new();
    let m = f.mount();
    ok(&f.key("create", "k2"), "key create k2");
    f.zone("z", "k1");
    f.zone("other", "k1");
    fs::write(f.m("z/f"), b"zone file").unwrap();
    fs::write(f.m("other/g"), b"other zone").unwrap();
    m.unmount();
    edit_marker(&f, "z");
    match f.try_mount(&[]) {
        Ok(_m) => {
            assert_errno(
                fs::read(f.m("z/f")),
                libc::EIO,
                "read in a zone with an edited marker",
            );
            assert_errno(
                fs::write(f.m("z/new"), b"x"),
                libc::EIO,
                "create in a zone with an edited marker",
            );
            assert_eq!(fs::read(f.m("other/g")).unwrap(), b"other zone");
        }
        Err((c, msg)) => {
            assert_eq!(c, Some(1), "{msg}");
            assert!(
                !msg.contains("lost its marker") && (msg.contains("authentic") || msg.contains("edited")),
                "the refusal should say the marker fails authentication: {msg}"
            );
        }
    }
}

/// Copies `len` bytes within or between backing files.
fn copy_raw(f: &Fixture, from: &str, from_off: u64, to: &str, to_off: u64, len: usize) {
    let src = File::open(f.b(from)).unwrap();
    let mut buf = vec![0u8; len];
    src.read_exact_at(&mut buf, from_off).unwrap();
    let dst = OpenOptions::new().write(true).open(f.b(to)).unwrap();
    dst.write_all_at(&buf, to_off).unwrap();
    dst.sync_all().unwrap();
}

#[test]
fn moved_replayed_or_zeroed_blocks() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let mut rng = Rng::new(80);
    let data = rng.bytes(12 * BS);
    let other = rng.bytes(12 * BS);
    for name in ["moved", "foreign", "entry0", "zeroed", "replay"] {
        fs::write(f.m(&format!("z/{name}")), &data).unwrap();
    }
    fs::write(f.m("z/other"), &other).unwrap();
    let raw_replay = f.raw("z/replay");
    // an old version of block 6 (data and entry) to replay later
    let mut newer = data.clone();
    newer[6 * BS..7 * BS].fill(0x5A);
    fs::write(f.m("z/replay"), &newer).unwrap();
    m.unmount();
    let e = ENTRY_LEN as usize;
    // block 3 (data and entry) copied over block 4 of the same file
    copy_raw(&f, "z/moved", data_offset(3), "z/moved", data_offset(4), BS);
    copy_raw(&f, "z/moved", entry_offset(3), "z/moved", entry_offset(4), e);
    // block 2 of another file (same index, other file id / DEK)
    copy_raw(&f, "z/other", data_offset(2), "z/foreign", data_offset(2), BS);
    copy_raw(&f, "z/other", entry_offset(2), "z/foreign", entry_offset(2), e);
    // only the entry (nonce, tag) of block 8 zeroed: not a hole, since the data is not
    let zeros = vec![0u8; BS];
    OpenOptions::new()
        .write(true)
        .open(f.b("z/entry0"))
        .unwrap()
        .write_all_at(&zeros[..e], entry_offset(8))
        .unwrap();
    // data and entry of block 9 zeroed: a hole by design (SPEC section 3), reads zeros
    let z = OpenOptions::new().write(true).open(f.b("z/zeroed")).unwrap();
    z.write_all_at(&zeros, data_offset(9)).unwrap();
    z.write_all_at(&zeros[..e], entry_offset(9)).unwrap();
    drop(z);
    let _m = f.mount();
    check_blocks(&f.m("z/moved"), &data, &[4]);
    check_blocks(&f.m("z/foreign"), &data, &[2]);
    check_blocks(&f.m("z/entry0"), &data, &[8]);
    let mut holed = data.clone();
    holed[9 * BS..10 * BS].fill(0);
    assert_same(
        &fs::read(f.m("z/zeroed")).unwrap(),
        &holed,
        "zeroed block reads as a hole",
    );
    // replaying an old block with its old entry: same file id and index, so it
    // authenticates (per-block AEAD without a file-level MAC cannot see a rollback)
    drop(_m);
    copy_raw_bytes(&f, "z/replay", &raw_replay, data_offset(6), BS);
    copy_raw_bytes(&f, "z/replay", &raw_replay, entry_offset(6), e);
    let _m = f.mount();
    assert_same(
        &fs::read(f.m("z/replay")).unwrap(),
        &data,
        "replayed old block (undetected by design)",
    );
}

fn copy_raw_bytes(f: &Fixture, to: &str, src: &[u8], off: u64, len: usize) {
    let dst = OpenOptions::new().write(true).open(f.b(to)).unwrap();
    dst.write_all_at(&src[off as usize..off as usize + len], off)
        .unwrap();
    dst.sync_all().unwrap();
}

/// A file read cold and front to back reaches ezfs as large reads, which it takes
/// from the disk straight into its buffer (direct I/O, when the backing page cache
/// lacks them): a damaged block there gives EIO for that block only too.
#[test]
fn flipped_data_block_in_a_cold_stream() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let data = Rng::new(79).bytes(3 * 128 * BS + 5000);
    fs::write(f.m("z/f"), &data).unwrap();
    fs::write(f.m("z/intact"), &data).unwrap();
    m.unmount();
    f.flip_raw("z/f", data_offset(200) + 9, 0x04);
    drop_caches();
    let _m = f.mount();
    assert_same(&fs::read(f.m("z/intact")).unwrap(), &data, "a cold stream");
    assert_errno(fs::read(f.m("z/f")), libc::EIO, "a cold stream over the damage");
    drop_caches();
    check_blocks(&f.m("z/f"), &data, &[200]);
}

/// A file read cold in random order reaches ezfs as single-block reads, which bring
/// in the rest of their 32 KiB window once the group is read densely (read-around):
/// the damaged block, read after its neighbours brought it into the backing page
/// cache, gives EIO, and every other block its bytes.
#[test]
fn flipped_data_block_in_a_cold_random_pass() {
    use std::os::unix::fs::OpenOptionsExt;
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let data = Rng::new(83).bytes(2 * 128 * BS + 3000);
    fs::write(f.m("z/f"), &data).unwrap();
    m.unmount();
    let bad = 128 + 22;
    f.flip_raw("z/f", data_offset(bad) + 300, 0x10);
    drop_caches();
    let _m = f.mount();
    // direct: each read below reaches ezfs as it is, once (a buffered read that
    // fails is sent again, and would find its block cached by then)
    let fh = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(f.m("z/f"))
        .unwrap();
    let mut order: Vec<u64> = (0..data.len().div_ceil(BS) as u64)
        .filter(|&b| b != bad)
        .collect();
    let mut rng = Rng::new(5);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut mem = vec![0u8; 2 * BS];
    let at = mem.as_ptr().align_offset(BS);
    let buf = &mut mem[at..at + BS];
    for &b in order.iter().chain([&bad]) {
        let off = b as usize * BS;
        let r = fh.read_at(buf, off as u64);
        if b == bad {
            assert_errno(r, libc::EIO, "the damaged block, read last");
        } else {
            let n = r.unwrap_or_else(|e| panic!("block {b}: {e}"));
            assert_same(
                &buf[..n],
                &data[off..(off + BS).min(data.len())],
                &format!("block {b}"),
            );
        }
    }
}

/// What a crash can leave: a metadata entry written past the end of the file, whose
/// length change never reached the disk. Growing the file over it must read zeros
/// (the file is put right when it is next opened for writing), not EIO.
#[test]
fn an_entry_a_crash_left_past_the_end_does_not_break_growth() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let data = Rng::new(5).bytes(10 * BS);
    fs::write(f.m("z/f"), &data).unwrap();
    m.unmount();
    f.flip_raw("z/f", entry_offset(20) + 3, 0x55); // block 20's nonce, past the end
    let m = f.mount();
    let fh = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.m("z/f"))
        .unwrap();
    fh.set_len(30 * BS as u64).unwrap();
    let mut got = vec![0xffu8; 20 * BS];
    fh.read_exact_at(&mut got, 10 * BS as u64)
        .expect("the grown part reads (block 20 had a stale entry)");
    assert!(got.iter().all(|&b| b == 0), "the grown part reads zeros");
    assert_same(&fs::read(f.m("z/f")).unwrap()[..10 * BS], &data, "the old part");
    assert!(
        m.log().contains("cleared metadata entries"),
        "daemon log: {}",
        m.log()
    );
}
