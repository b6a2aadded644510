//! Unit tests of the block codec, one file per subject:
//! - [`model`]: random operations against a plain `Vec<u8>` model, through each kind
//!   of backing the filesystem uses, and holes on a real sparse file;
//! - [`tamper`]: every changed, swapped or transplanted byte fails authentication;
//! - [`truncate`]: truncate edge cases, and growth that fails half-way;
//! - [`reads`]: prefetches, direct reads and read-around windows;
//! - [`known_answers`]: vectors pinning the on-disk format (cipher, associated data,
//!   layout);
//! - [`crash`]: what a re-open finds after a crash at any point (see `format::crash`).
//!
//! This file holds what they share: helpers and test backings.

use super::*;
use crate::format::backing::{Backing, MemBacking};
use crate::format::hints::Hints;
use crate::format::metacache::{CachedMeta, MetaCache};
use proptest::prelude::*;
use std::ops::Range;

const G: u64 = GROUP_BLOCKS * BLOCK;

fn codec() -> BlockCodec {
    BlockCodec::new(&Key::random(), [7u8; 16])
}

/// An empty encrypted file: just its header region.
fn empty_backing() -> MemBacking {
    let b = MemBacking::default();
    b.set_len(HEADER_LEN).unwrap();
    b
}

/// Deterministic pseudo-random bytes (splitmix64), so that proptest generates and
/// shrinks a seed rather than tens of kilobytes of individual bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Reads the whole file (and a little past its end).
fn read_all(c: &BlockCodec, b: &dyn Storage, size: u64) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![0xEEu8; size as usize + 100];
    let n = c.read(b, size, 0, &mut out)?;
    assert_eq!(n as u64, size, "a full read returns the size");
    out.truncate(n);
    Ok(out)
}

/// Reads `len` bytes at `off`, expecting no short read before end of file.
fn read_range(
    c: &BlockCodec,
    b: &dyn Storage,
    size: u64,
    off: u64,
    len: usize,
) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![0xEEu8; len];
    let n = c.read(b, size, off, &mut out)?;
    out.truncate(n);
    Ok(out)
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None; // memcmp: the slow path below is for reporting only
    }
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then_some(a.len().min(b.len())))
}

fn check_eq(what: &str, got: &[u8], want: &[u8]) -> Result<(), TestCaseError> {
    if let Some(i) = first_diff(got, want) {
        return Err(TestCaseError::fail(format!(
            "{what}: lengths {} vs {} (model), first difference at byte {i} (block {}): got {:?}, model {:?}",
            got.len(),
            want.len(),
            i as u64 / BLOCK,
            got.get(i),
            want.get(i)
        )));
    }
    Ok(())
}

/// `ProptestConfig::with_cases(n)`, unless `PROPTEST_CASES` asks for another number
/// (for thorough runs, e.g. `PROPTEST_CASES=2000 cargo test --release --lib format::codec`).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig::with_cases(n)
}

fn flip(b: &MemBacking, at: u64, mask: u8) {
    b.0.write()[at as usize] ^= mask;
}

fn assert_corrupt<T: std::fmt::Debug>(r: Result<T, CodecError>, want: u64) {
    match r {
        Err(CodecError::Corrupt { block }) => assert_eq!(block, want),
        other => panic!("expected block {want} to be corrupt, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// Test backings
// ---------------------------------------------------------------------------------

/// A `MemBacking` that asks for direct-I/O-sized writes and checks that runs of
/// whole blocks (what could go direct) come aligned.
struct DirectLike<'a>(&'a MemBacking, std::sync::atomic::AtomicUsize);

impl Backing for DirectLike<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.0.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if off % BLOCK == 0 && buf.len() as u64 % BLOCK == 0 && buf.len() as u64 > BLOCK {
            let aligned = buf.as_ptr().align_offset(BLOCK as usize) == 0;
            assert!(aligned, "whole blocks come from an aligned buffer");
        }
        self.1.fetch_max(buf.len(), std::sync::atomic::Ordering::Relaxed);
        self.0.write_at(buf, off)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn sync(&self, data_only: bool) -> io::Result<()> {
        self.0.sync(data_only)
    }
}

impl Hints for DirectLike<'_> {
    fn writes_direct(&self) -> bool {
        true
    }
}

/// A `MemBacking` that misbehaves on request, like a full or size-capped backing
/// filesystem: it fails one chosen write (counting from 0) with ENOSPC, then works
/// again, and refuses lengths past `max_len` with EFBIG. With `direct` it answers like
/// a backing with direct I/O, so the codec hands it whole group runs. It records the
/// ranges it is asked to prefetch.
struct Probe {
    inner: MemBacking,
    fail_write: std::sync::atomic::AtomicUsize,
    max_len: u64,
    direct: bool,
    prefetched: parking_lot::Mutex<Vec<(u64, usize)>>,
}

impl Probe {
    fn new(inner: MemBacking, fail_write: usize, max_len: u64, direct: bool) -> Probe {
        Probe {
            inner,
            fail_write: fail_write.into(),
            max_len,
            direct,
            prefetched: Default::default(),
        }
    }
}

impl Backing for Probe {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.fail_write.fetch_sub(1, Relaxed) == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if off + buf.len() as u64 > self.max_len {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        self.inner.write_at(buf, off)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > self.max_len {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn sync(&self, data_only: bool) -> io::Result<()> {
        self.inner.sync(data_only)
    }
}

impl Hints for Probe {
    fn writes_direct(&self) -> bool {
        self.direct
    }
    fn prefetch(&self, off: u64, len: usize) {
        self.prefetched.lock().push((off, len));
    }
}

/// A backing that takes every read it is offered: large runs as direct reads (as a
/// real one does when the page cache lacks the range), counted, and the whole window
/// of every small read (as a real one does in a densely read group), recorded.
struct TakesOffers<'a> {
    mem: &'a MemBacking,
    direct: std::sync::atomic::AtomicUsize,
    windows: parking_lot::Mutex<Vec<Range<u64>>>,
}

impl<'a> TakesOffers<'a> {
    fn new(mem: &'a MemBacking) -> Self {
        TakesOffers {
            mem,
            direct: Default::default(),
            windows: Default::default(),
        }
    }
}

impl Backing for TakesOffers<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.mem.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.mem.write_at(buf, off)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.mem.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.mem.len()
    }
    fn sync(&self, data_only: bool) -> io::Result<()> {
        self.mem.sync(data_only)
    }
}

impl Hints for TakesOffers<'_> {
    fn read_direct(&self, buf: &mut [u8], off: u64) -> Option<io::Result<usize>> {
        self.direct.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(self.mem.read_at(buf, off))
    }
    fn read_around(&self, buf: &mut [u8], off: u64, around: &Around) -> Option<io::Result<usize>> {
        let w = &around.window;
        assert!(
            w.start <= off && off + buf.len() as u64 <= w.end,
            "{off} in {around:?}"
        );
        assert!(
            around.area.start <= w.start && w.end <= around.area.end,
            "{around:?}"
        );
        let mut window = vec![0u8; (w.end - w.start) as usize];
        let got = match self.mem.read_at(&mut window, w.start) {
            Ok(got) => got,
            Err(e) => return Some(Err(e)),
        };
        let at = (off - w.start) as usize;
        let n = got.saturating_sub(at).min(buf.len());
        buf[..n].copy_from_slice(&window[at..at + n]);
        self.windows.lock().push(w.clone());
        Some(Ok(n))
    }
}

mod crash;
mod known_answers;
mod model;
mod reads;
mod tamper;
mod truncate;
