//! Data written through a mount reads back identically: in a zone (encrypted) at
//! block and group edges, under random overwrites, appends, truncation, sparse
//! writes and mmap; and outside zones, where backing files are the plaintext itself.

mod common;

use common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::Duration;

const GROUP: usize = 128 * 4096;

/// Sizes at every block and group edge, and a large odd size.
const SIZES: [usize; 8] = [0, 1, 4095, 4096, 4097, GROUP, GROUP + 1, 10 * 1024 * 1024 + 3];

#[test]
fn sizes_at_block_and_group_edges_survive_remount() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let mut rng = Rng::new(1);
    let files: Vec<(String, Vec<u8>)> = SIZES.iter().map(|&n| (format!("z/f{n}"), rng.bytes(n))).collect();
    for (rel, data) in &files {
        fs::write(f.m(rel), data).unwrap();
    }
    for (rel, data) in &files {
        assert_same(&fs::read(f.m(rel)).unwrap(), data, rel);
        assert_eq!(
            fs::metadata(f.m(rel)).unwrap().len(),
            data.len() as u64,
            "{rel}: st_size"
        );
        let raw = fs::metadata(f.b(rel)).unwrap().len();
        if data.is_empty() {
            assert!(
                raw == 0 || raw == HEADER_LEN,
                "{rel}: empty file stored as {raw} bytes"
            );
        } else {
            assert_eq!(raw, backing_size(data.len() as u64), "{rel}: backing size");
            assert_eq!(&f.raw(rel)[..8], MAGIC, "{rel}: header magic");
        }
    }
    m.unmount();
    let _m = f.mount();
    for (rel, data) in &files {
        assert_eq!(
            fs::metadata(f.m(rel)).unwrap().len(),
            data.len() as u64,
            "{rel}: st_size after remount"
        );
        assert_same(
            &fs::read(f.m(rel)).unwrap(),
            data,
            &format!("{rel} after remount"),
        );
    }
    // reads that straddle block and group edges, through pread
    let (rel, data) = &files[7];
    let fh = File::open(f.m(rel)).unwrap();
    for (off, len) in [
        (4090usize, 12usize),
        (GROUP - 5, 10),
        (GROUP - 4096, 8192),
        (data.len() - 7, 100),
        (3, 1 << 20),
    ] {
        let mut buf = vec![0u8; len];
        let n = fh.read_at(&mut buf, off as u64).unwrap();
        let end = (off + len).min(data.len());
        assert_eq!(n, end - off, "short read at {off}");
        assert_same(&buf[..n], &data[off..end], &format!("pread {off}+{len}"));
    }
}

/// Random writes, reads and truncations against an in-memory model.
#[test]
fn random_overwrites_match_model() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let p = f.m("z/random");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    let mut model: Vec<u8> = Vec::new();
    let mut rng = Rng::new(0xC0FFEE);
    // offsets up to ~1.3 groups so that group boundaries and metadata blocks get hit
    let span = (GROUP + GROUP / 3) as u64;
    for op in 0..300 {
        match rng.below(10) {
            0..=5 => {
                let off = rng.below(span) as usize;
                let len = match rng.below(4) {
                    0 => 1 + rng.below(16) as usize,
                    1 => 4096,
                    2 => 1 + rng.below(3 * 4096) as usize,
                    _ => 1 + rng.below(70_000) as usize,
                };
                let data = rng.bytes(len);
                file.write_all_at(&data, off as u64).unwrap();
                if model.len() < off + len {
                    model.resize(off + len, 0);
                }
                model[off..off + len].copy_from_slice(&data);
            }
            6..=8 => {
                let off = rng.below(span) as usize;
                let len = 1 + rng.below(20_000) as usize;
                let mut buf = vec![0u8; len];
                let n = file.read_at(&mut buf, off as u64).unwrap();
                let end = (off + len).min(model.len()).max(off);
                let expect = model.get(off..end).unwrap_or(&[]);
                // a single pread may legally return less; it never returns wrong bytes
                assert!(
                    n <= expect.len(),
                    "op {op}: read {n} bytes past EOF (size {})",
                    model.len()
                );
                assert_same(&buf[..n], &expect[..n], &format!("op {op}: pread {off}+{len}"));
                if n < expect.len() {
                    let mut rest = vec![0u8; expect.len() - n];
                    file.read_exact_at(&mut rest, (off + n) as u64).unwrap();
                    assert_same(&rest, &expect[n..], &format!("op {op}: pread rest"));
                }
            }
            _ => {
                let n = rng.below(span) as usize;
                file.set_len(n as u64).unwrap();
                model.resize(n, 0);
            }
        }
        if op % 50 == 49 {
            assert_eq!(
                file.metadata().unwrap().len(),
                model.len() as u64,
                "op {op}: size"
            );
        }
    }
    drop(file);
    assert_same(&fs::read(&p).unwrap(), &model, "whole file after random ops");
    m.unmount();
    let _m = f.mount();
    assert_same(&fs::read(&p).unwrap(), &model, "whole file after remount");
}

fn append_two_handles(f: &Fixture, rel: &str) {
    let p = f.m(rel);
    fs::write(&p, b"start:").unwrap();
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    let mut expect = b"start:".to_vec();
    let mut rng = Rng::new(7);
    for i in 0..60 {
        let len = [1usize, 100, 4095, 4097, 9000][i % 5];
        let chunk = rng.bytes(len);
        let h = if rng.below(2) == 0 { &mut a } else { &mut b };
        h.write_all(&chunk).unwrap();
        expect.extend_from_slice(&chunk);
    }
    // an append handle's writes go to the end even after seeking
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"END").unwrap();
    expect.extend_from_slice(b"END");
    drop((a, b));
    assert_same(&fs::read(&p).unwrap(), &expect, &format!("{rel} after appends"));
}

#[test]
fn append_from_two_handles() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    append_two_handles(&f, "z/appended");
    fs::create_dir(f.m("plain")).unwrap();
    append_two_handles(&f, "plain/appended");
    assert_eq!(f.raw("plain/appended"), fs::read(f.m("plain/appended")).unwrap());
}

/// Growing a file past what the backing filesystem allows (ext4: 16 TiB) fails and
/// changes nothing: the short last block, re-sealed only after the backing length is
/// set, still reads, also after a remount. Where the backing allows it, the file
/// grows with zeros.
#[test]
fn a_refused_grow_keeps_the_file() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let p = f.m("z/big");
    let data = Rng::new(7).bytes(5000);
    fs::write(&p, &data).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let huge = 20u64 << 40;
    let mut head = vec![0xEEu8; 6000];
    match file.set_len(huge) {
        Err(e) => {
            assert_eq!(errno(&e), libc::EFBIG, "{e}");
            assert_eq!(file.metadata().unwrap().len(), 5000);
            drop_caches(); // read through ezfs, not the kernel's cached pages
            assert_eq!(file.read_at(&mut head, 0).unwrap(), 5000);
            assert_same(&head[..5000], &data, "after the refused grow");
            file.set_len(6000).unwrap();
            file.read_exact_at(&mut head, 0).unwrap();
            assert_same(&head[..5000], &data, "after growing within limits");
            assert!(head[5000..].iter().all(|&x| x == 0));
            file.set_len(5000).unwrap();
        }
        Ok(()) => {
            assert_eq!(file.metadata().unwrap().len(), huge);
            file.read_exact_at(&mut head, 0).unwrap();
            assert_same(&head[..5000], &data, "after growing to 20 TiB");
            assert!(head[5000..].iter().all(|&x| x == 0));
            file.set_len(5000).unwrap();
        }
    }
    drop(file);
    m.unmount();
    let _m = f.mount();
    assert_same(&fs::read(&p).unwrap(), &data, "after remount");
}

#[test]
fn truncate_down_and_up_reads_zeros() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    let p = f.m("z/trunc");
    let mut rng = Rng::new(99);
    let data = rng.bytes(GROUP + 3 * 4096 + 17);
    fs::write(&p, &data).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let mut model = data.clone();
    // down into the middle of a block, then up: the old bytes must not come back
    for (n, what) in [
        (5000usize, "down mid-block"),
        (20_000, "up"),
        (GROUP + 10, "up past a group edge"),
        (GROUP - 1, "down just before the group edge"),
        (GROUP + 2 * 4096, "up again"),
        (4096, "down to one block"),
        (0, "down to zero"),
        (3 * 4096 + 1, "up from zero"),
    ] {
        file.set_len(n as u64).unwrap();
        model.resize(n, 0);
        assert_eq!(file.metadata().unwrap().len(), n as u64, "{what}: size");
        let mut buf = vec![0xEEu8; n];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_same(&buf, &model, &format!("truncate {what} to {n}"));
        // and write a little after each step so the tail block is rewritten
        let tail = rng.bytes(7);
        let off = n / 2;
        file.write_all_at(&tail, off as u64).unwrap();
        if model.len() < off + 7 {
            model.resize(off + 7, 0);
        }
        model[off..off + 7].copy_from_slice(&tail);
    }
    // truncate by path (setattr without a handle) and via O_TRUNC
    drop(file);
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(100)
        .unwrap();
    model.truncate(100);
    assert_same(
        &fs::read(&p).unwrap(),
        &model,
        "after set_len 100 on a new handle",
    );
    let q = f.m("z/otrunc");
    fs::write(&q, rng.bytes(50_000)).unwrap();
    fs::write(&q, b"short").unwrap();
    assert_eq!(fs::read(&q).unwrap(), b"short");
    m.unmount();
    let _m = f.mount();
    assert_same(&fs::read(&p).unwrap(), &model, "after remount");
    assert_eq!(fs::read(&q).unwrap(), b"short");
}

#[test]
fn sparse_file_stays_sparse() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    let p = f.m("z/sparse");
    const GIB: u64 = 1 << 30;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    file.write_all_at(b"X", GIB).unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(fs::metadata(&p).unwrap().len(), GIB + 1);
    let raw = fs::metadata(f.b("z/sparse")).unwrap();
    assert_eq!(
        raw.len(),
        backing_size(GIB + 1),
        "backing size of a 1 GiB + 1 file"
    );
    let allocated = raw.blocks() * 512;
    assert!(
        allocated < 4 << 20,
        "backing file of a sparse file allocates {allocated} bytes"
    );
    let file = File::open(&p).unwrap();
    for off in [0u64, 4096 * 127, GROUP as u64, GIB / 2, GIB - 65536] {
        let mut buf = vec![0xAAu8; 65536];
        file.read_exact_at(&mut buf, off).unwrap();
        assert!(
            buf.iter().all(|&b| b == 0),
            "hole at {off} does not read as zeros"
        );
    }
    let mut last = [0u8; 2];
    assert_eq!(file.read_at(&mut last, GIB).unwrap(), 1);
    assert_eq!(last[0], b'X');
    let mut tail = [0xAAu8; 4096];
    file.read_exact_at(&mut tail, GIB - 4095).unwrap();
    assert!(tail[..4095].iter().all(|&b| b == 0));
    assert_eq!(tail[4095], b'X');
}

/// Maps `len` bytes of `file` shared and read-write.
fn map(file: &File, len: usize) -> &'static mut [u8] {
    // SAFETY: a fresh shared mapping of an open file; the slice is only used while
    // the mapping exists (unmapped by `unmap` below before anything else).
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        std::slice::from_raw_parts_mut(p.cast::<u8>(), len)
    }
}

fn unmap(s: &'static mut [u8]) {
    // SAFETY: `s` is exactly a mapping made by `map`.
    unsafe {
        assert_eq!(
            libc::msync(s.as_mut_ptr().cast(), s.len(), libc::MS_SYNC),
            0,
            "msync"
        );
        assert_eq!(libc::munmap(s.as_mut_ptr().cast(), s.len()), 0, "munmap");
    }
}

fn mmap_roundtrip(f: &Fixture, rel: &str) {
    let p = f.m(rel);
    let len = 3 * 4096 + 100;
    let mut rng = Rng::new(5);
    let data = rng.bytes(len);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    file.set_len(len as u64).unwrap();
    let s = map(&file, len);
    s.copy_from_slice(&data);
    unmap(s);
    drop(file);
    assert_same(
        &fs::read(&p).unwrap(),
        &data,
        &format!("{rel}: read after mmap write"),
    );
    // read through a mapping, and modify a few bytes in the middle of it
    let file = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let s = map(&file, len);
    assert_same(s, &data, &format!("{rel}: mmap read"));
    s[5000..5010].copy_from_slice(b"0123456789");
    unmap(s);
    drop(file);
    let mut expect = data.clone();
    expect[5000..5010].copy_from_slice(b"0123456789");
    drop_caches();
    let mut got = Vec::new();
    File::open(&p).unwrap().read_to_end(&mut got).unwrap();
    assert_same(&got, &expect, &format!("{rel}: read after mmap modify"));
}

/// Extended attributes read the same through an open encrypted file (answered on the
/// file's own descriptor) as through its path, and both are the backing file's.
#[test]
fn xattrs_of_open_encrypted_files() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    let p = f.m("z/f");
    fs::write(&p, b"data").unwrap();
    set_xattr(&p, "user.before", b"1");

    let file = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    assert_eq!(fget_xattr(&file, "user.before"), Ok(b"1".to_vec()));
    assert_eq!(fget_xattr(&file, "user.missing"), Err(libc::ENODATA));
    // what the kernel asks at the first write of a new file
    assert_eq!(fget_xattr(&file, "security.capability"), Err(libc::ENODATA));
    set_xattr(&p, "user.while_open", b"22");
    assert_eq!(fget_xattr(&file, "user.while_open"), Ok(b"22".to_vec()));
    assert_eq!(get_xattr(&p, "user.while_open").as_deref(), Some(&b"22"[..]));
    // a size query (empty buffer) gives the value's length
    let cn = std::ffi::CString::new("user.while_open").unwrap();
    // SAFETY: valid fd and C string; a null buffer of size 0 asks for the length.
    let len = unsafe { libc::fgetxattr(file.as_raw_fd(), cn.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(len, 2);
    file.write_all_at(b"more", 4).unwrap();
    drop(file);

    assert_eq!(get_xattr(&p, "user.while_open").as_deref(), Some(&b"22"[..]));
    assert_eq!(
        get_xattr(&f.b("z/f"), "user.while_open").as_deref(),
        Some(&b"22"[..])
    );
    assert_eq!(fs::read(&p).unwrap(), b"datamore");
}

/// Pages of `path` in the kernel's cache, and pages in all, as a fresh open of it
/// finds them (`mincore` of a mapping).
fn cached_pages_after_open(path: &std::path::Path) -> (usize, usize) {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let pages = len.div_ceil(4096);
    let mut resident = vec![0u8; pages];
    // SAFETY: a fresh read-only shared mapping, unmapped before returning; mincore
    // fills one byte per page of it into `resident`.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        let r = libc::mincore(p, len, resident.as_mut_ptr());
        let err = std::io::Error::last_os_error();
        libc::munmap(p, len);
        assert_eq!(r, 0, "mincore: {err}");
    }
    (resident.iter().filter(|&&b| b & 1 != 0).count(), pages)
}

/// An open keeps what the kernel cached of a file (no reads reach the daemon again)
/// while the backing file is unchanged, and drops it once anything changed the
/// backing file, here a program writing to the backing dir directly.
#[test]
fn reopen_keeps_the_page_cache_of_an_unchanged_file() {
    let f = Fixture::new();
    let _m = f.mount();
    f.zone("z", "k1");
    for rel in ["z/a", "plain"] {
        fs::write(f.m(rel), vec![7u8; 1 << 20]).unwrap();
        // the write's timestamps settle (a change within the same clock tick could
        // look like none), then one read fills the cache
        std::thread::sleep(Duration::from_millis(50));
        drop_caches();
        assert_eq!(fs::read(f.m(rel)).unwrap(), vec![7u8; 1 << 20]);
        let (cached, pages) = cached_pages_after_open(&f.m(rel));
        assert_eq!(
            cached, pages,
            "{rel}: an open of an unchanged file keeps its cached pages"
        );
    }
    fs::write(f.b("plain"), vec![9u8; 1 << 20]).unwrap();
    assert_eq!(
        cached_pages_after_open(&f.m("plain")).0,
        0,
        "an open after a write to the backing file drops the cached pages"
    );
    assert_eq!(
        fs::read(f.m("plain")).unwrap(),
        vec![9u8; 1 << 20],
        "the new bytes are read"
    );
    // a write through the mount is a change too: the next open drops the cache (which
    // the write kept current anyway)
    OpenOptions::new()
        .write(true)
        .open(f.m("z/a"))
        .unwrap()
        .write_all_at(b"x", 0)
        .unwrap();
    assert_eq!(
        cached_pages_after_open(&f.m("z/a")).0,
        0,
        "z/a after a write through the mount"
    );
}

#[test]
fn mmap_write_then_read() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1");
    mmap_roundtrip(&f, "z/mapped");
    fs::create_dir(f.m("plain")).unwrap();
    mmap_roundtrip(&f, "plain/mapped");
    let expect = fs::read(f.m("z/mapped")).unwrap();
    m.unmount();
    let _m = f.mount();
    assert_same(
        &fs::read(f.m("z/mapped")).unwrap(),
        &expect,
        "mapped file after remount",
    );
}

#[test]
fn plain_directory_is_byte_identical_in_backing() {
    let f = Fixture::new();
    let m = f.mount();
    f.zone("z", "k1"); // a zone elsewhere must not affect plain files
    fs::create_dir_all(f.m("plain/sub")).unwrap();
    let mut rng = Rng::new(3);
    let mut files = Vec::new();
    for (i, &n) in [0usize, 1, 4097, GROUP + 1, (1 << 20) + 5].iter().enumerate() {
        let rel = if i % 2 == 0 {
            format!("plain/f{n}")
        } else {
            format!("plain/sub/f{n}")
        };
        let data = rng.bytes(n);
        fs::write(f.m(&rel), &data).unwrap();
        files.push((rel, data));
    }
    fs::write(f.m("top-level"), b"at the root").unwrap();
    files.push(("top-level".into(), b"at the root".to_vec()));
    // partial overwrite keeps identity too
    let fh = OpenOptions::new().write(true).open(f.m(&files[3].0)).unwrap();
    fh.write_all_at(b"patch", 4000).unwrap();
    drop(fh);
    files[3].1[4000..4005].copy_from_slice(b"patch");
    for (rel, data) in &files {
        assert_same(&f.raw(rel), data, &format!("backing {rel}"));
        assert_same(&fs::read(f.m(rel)).unwrap(), data, &format!("mount {rel}"));
    }
    m.unmount();
    for (rel, data) in &files {
        assert_same(&f.raw(rel), data, &format!("backing {rel} unmounted"));
    }
    // and files put into the backing dir directly show up unchanged
    fs::write(f.b("plain/direct"), b"written behind the mount").unwrap();
    let _m = f.mount();
    assert_eq!(
        fs::read(f.m("plain/direct")).unwrap(),
        b"written behind the mount"
    );
}

/// Writes `total` bytes to `path` in 1 MiB writes and closes it; the first error.
fn write_then_close(path: &std::path::Path, total: usize) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..total / chunk.len() {
        file.write_all(&chunk)?;
    }
    // close(2) reports what the writeback cache deferred; File's drop would ignore it
    let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
    // SAFETY: closing a descriptor this function owns, once.
    match unsafe { libc::close(fd) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// A backing filesystem that fills up: the writer gets ENOSPC at the latest from
/// close(2) (the writeback cache defers it from write(2)), in a zone and outside, and
/// the mount keeps working once space is freed.
#[test]
fn full_backing_dir_reports_enospc_by_close() {
    let f = Fixture::bare();
    let _tmpfs = MountOver::tmpfs(&f.backing, "6m");
    f.init();
    let _m = f.mount();
    f.zone("z", "k1");
    for rel in ["z/big", "big"] {
        let r = write_then_close(&f.m(rel), 16 << 20);
        assert_errno(r, libc::ENOSPC, &format!("16 MiB into 6 MiB: {rel}"));
        fs::remove_file(f.m(rel)).unwrap();
        // the space comes back once the daemon has the file released (asynchronously)
        assert!(
            wait_until(Duration::from_secs(60), || free_bytes(&f.backing) > 4 << 20),
            "{rel}: backing space not freed after unlink"
        );
        let data = Rng::new(7).bytes(100_000);
        let mut file = File::create(f.m(rel)).unwrap();
        file.write_all(&data).unwrap();
        file.sync_all().unwrap();
        drop(file);
        assert_same(&fs::read(f.m(rel)).unwrap(), &data, rel);
        fs::remove_file(f.m(rel)).unwrap();
    }
}

/// Free bytes of the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> u64 {
    let p = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: statvfs fills the zeroed struct it is given.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(p.as_ptr(), &mut s) }, 0, "statvfs");
    s.f_bavail * s.f_frsize
}
