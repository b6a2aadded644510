//! An in-memory copy of an open file's metadata entries (per-block nonce and tag).
//!
//! Without it every read costs two backing reads: the group's entries, then the data.
//! A 4 KiB random read is latency-bound, and the extra `pread` was an eighth of the
//! daemon's CPU per read. [`CachedMeta`] wraps the file's [`Backing`]: reads that lie
//! in a group's entries are answered from memory (the whole entry area is read once),
//! and every write and length change goes through to the file and then updates the
//! copy, so the copy always equals the bytes on disk.
//!
//! Coherence needs one rule from the caller: a group's entries are not read while
//! another thread writes them (the filesystem's group locks give this). Only writes
//! made through the wrapper are seen: nothing else may write an open file's backing.
//!
//! Memory is bounded twice: [`PER_FILE`] per open file (enough for a 1 GiB file,
//! beyond that an arbitrary cached group makes room) and [`TOTAL`] over all open files
//! (past it, reads of uncached groups just go to the file).

use super::backing::Backing;
use super::layout::{meta_offset, ENTRY_LEN, GROUP_BLOCKS, GROUP_SPAN, HEADER_LEN};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of one group's entries.
const AREA: usize = (GROUP_BLOCKS * ENTRY_LEN) as usize;
/// What one cached group costs, with the map's and allocator's share.
const COST: usize = AREA + 64;
/// Most bytes one open file's cache holds: 8 MiB, the entries of about 1.1 GiB of data.
pub const PER_FILE: usize = 8 << 20;
/// Most bytes all caches together hold: 32 MiB.
pub const TOTAL: usize = 32 << 20;

/// Bytes held by all caches of the process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// The cached entry areas of one file, by group.
#[derive(Default)]
pub struct MetaCache {
    inner: Mutex<Groups>,
}

/// The cached areas, and the order they came in (the oldest makes room first).
#[derive(Default)]
struct Groups {
    areas: HashMap<u64, Box<[u8; AREA]>, BuildHasherDefault<GroupHash>>,
    order: VecDeque<u64>,
}

/// Hashes a group number with one multiply. Every read looks its group up, and the
/// keys are a file's own block-group numbers, so SipHash's resistance to chosen keys
/// buys nothing here; the odd constant keeps distinct numbers distinct.
#[derive(Default)]
struct GroupHash(u64);

impl Hasher for GroupHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The group whose entry area holds all of `[off, off + len)`, if one does.
fn group_of(off: u64, len: usize) -> Option<u64> {
    let rel = off.checked_sub(HEADER_LEN)?;
    let (group, within) = (rel / GROUP_SPAN, rel % GROUP_SPAN);
    (within + len as u64 <= AREA as u64).then_some(group)
}

/// The groups whose entry areas `[off, off + len)` may overlap.
fn groups_touched(off: u64, len: usize) -> std::ops::RangeInclusive<u64> {
    let first = off.saturating_sub(HEADER_LEN) / GROUP_SPAN;
    let last = (off + len as u64).saturating_sub(HEADER_LEN) / GROUP_SPAN;
    first..=last
}

impl MetaCache {
    /// Copies the cached bytes at `off` into `buf`; false if the group is not cached.
    fn read(&self, group: u64, off: u64, buf: &mut [u8]) -> bool {
        let groups = self.inner.lock();
        let Some(area) = groups.areas.get(&group) else {
            return false;
        };
        let at = (off - meta_offset(group)) as usize;
        buf.copy_from_slice(&area[at..at + buf.len()]);
        true
    }

    /// Keeps `area` as group `group`'s entries, if the budgets allow.
    fn insert(&self, group: u64, area: Box<[u8; AREA]>) {
        let mut groups = self.inner.lock();
        if groups.areas.contains_key(&group) {
            return;
        }
        if (groups.areas.len() + 1) * COST > PER_FILE {
            let oldest = groups.order.pop_front().expect("a full cache has groups");
            groups.areas.remove(&oldest);
            HELD.fetch_sub(COST, Ordering::Relaxed);
        }
        let reserved = HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            (held + COST <= TOTAL).then_some(held + COST)
        });
        if reserved.is_ok() {
            groups.areas.insert(group, area);
            groups.order.push_back(group);
        }
    }

    /// Applies a write of `data` at `off` to the cached groups it overlaps.
    fn written(&self, off: u64, data: &[u8]) {
        let mut groups = self.inner.lock();
        for group in groups_touched(off, data.len()) {
            let Some(area) = groups.areas.get_mut(&group) else {
                continue;
            };
            let start = meta_offset(group);
            let (from, to) = (off.max(start), (off + data.len() as u64).min(start + AREA as u64));
            if from < to {
                area[(from - start) as usize..(to - start) as usize]
                    .copy_from_slice(&data[(from - off) as usize..(to - off) as usize]);
            }
        }
    }

    /// Forgets the groups for which `keep` says false.
    fn forget(&self, mut keep: impl FnMut(u64) -> bool) {
        let mut groups = self.inner.lock();
        let before = groups.areas.len();
        groups.areas.retain(|&g, _| keep(g));
        groups.order.retain(|&g| keep(g));
        HELD.fetch_sub((before - groups.areas.len()) * COST, Ordering::Relaxed);
    }

    /// Number of cached groups.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().areas.len()
    }

    /// Whether no group is cached.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every cached group equals the bytes of `b`.
    #[cfg(test)]
    pub fn matches(&self, b: &dyn Backing) -> io::Result<bool> {
        for (&group, area) in self.inner.lock().areas.iter() {
            let mut disk = [0u8; AREA];
            let n = b.read_at(&mut disk, meta_offset(group))?;
            disk[n..].fill(0);
            if disk != **area {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Drop for MetaCache {
    fn drop(&mut self) {
        HELD.fetch_sub(self.inner.get_mut().areas.len() * COST, Ordering::Relaxed);
    }
}

/// A backing file whose metadata entries are read through a [`MetaCache`].
pub struct CachedMeta<'a, B: Backing> {
    pub inner: B,
    pub cache: &'a MetaCache,
}

impl<B: Backing> CachedMeta<'_, B> {
    /// [`Backing::read_at`], prefetching the data of `then` when the entries must come
    /// from the file.
    fn read_through(&self, buf: &mut [u8], off: u64, then: Option<(u64, usize)>) -> io::Result<usize> {
        let Some(group) = group_of(off, buf.len()) else {
            return self.inner.read_at(buf, off);
        };
        if self.cache.read(group, off, buf) {
            return Ok(buf.len());
        }
        if let Some((data_at, data_len)) = then {
            self.inner.prefetch(data_at, data_len);
        }
        let mut area = Box::new([0u8; AREA]);
        let n = self.inner.read_at(&mut area[..], meta_offset(group))?;
        area[n..].fill(0);
        let at = (off - meta_offset(group)) as usize;
        buf.copy_from_slice(&area[at..at + buf.len()]);
        self.cache.insert(group, area);
        Ok(buf.len())
    }
}

impl<B: Backing> Backing for CachedMeta<'_, B> {
    /// Reads inside one entry area come from the cache (filled on first use) and, like
    /// the area's bytes past end of file, read as zeros there; others go to the file.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.read_through(buf, off, None)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        match self.inner.write_at(buf, off) {
            Ok(()) => {
                self.cache.written(off, buf);
                Ok(())
            }
            Err(e) => {
                // part of it may be on disk: what the cache holds there is unknown
                let touched = groups_touched(off, buf.len());
                self.cache.forget(|g| !touched.contains(&g));
                Err(e)
            }
        }
    }

    /// Groups whose entry area reaches past the new length are forgotten: past the end
    /// the file now reads as zeros (shrink), or as what was there before (a failure).
    fn set_len(&self, len: u64) -> io::Result<()> {
        let result = self.inner.set_len(len);
        self.cache.forget(|g| meta_offset(g) + AREA as u64 <= len);
        result
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn writes_direct(&self) -> bool {
        self.inner.writes_direct()
    }

    fn prefetch(&self, off: u64, len: usize) {
        self.inner.prefetch(off, len)
    }

    /// Entries not in memory come from the file: the data read starts first.
    fn read_entries(&self, buf: &mut [u8], off: u64, data_at: u64, data_len: usize) -> io::Result<usize> {
        self.read_through(buf, off, Some((data_at, data_len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::layout::entry_offset;
    use crate::format::MemBacking;

    #[test]
    fn reads_inside_an_entry_area_only() {
        assert_eq!(group_of(entry_offset(0), 28), Some(0));
        assert_eq!(group_of(entry_offset(127), 28), Some(0));
        assert_eq!(group_of(entry_offset(127) + 1, 28), None);
        assert_eq!(group_of(entry_offset(130), 28 * 126), Some(1));
        assert_eq!(group_of(0, 28), None, "the header");
        assert_eq!(group_of(meta_offset(1) + 4096, 4096), None, "a data block");
    }

    #[test]
    fn a_cached_area_follows_writes_and_truncation() {
        let mem = MemBacking::default();
        mem.write_at(&[1u8; 28], entry_offset(5)).unwrap();
        let cache = MetaCache::default();
        let b = CachedMeta {
            inner: &mem,
            cache: &cache,
        };
        let mut e = [0u8; 28];
        b.read_at(&mut e, entry_offset(5)).unwrap();
        assert_eq!(e, [1u8; 28]);
        assert_eq!(cache.len(), 1);
        // a read past the end of the file reads zeros from the cached area
        assert_eq!(b.read_at(&mut e, entry_offset(100)).unwrap(), 28);
        assert_eq!(e, [0u8; 28]);
        b.write_at(&[2u8; 28], entry_offset(100)).unwrap();
        b.read_at(&mut e, entry_offset(100)).unwrap();
        assert_eq!(e, [2u8; 28]);
        assert!(cache.matches(&mem).unwrap());
        b.set_len(entry_offset(6)).unwrap();
        assert!(cache.is_empty(), "the area now ends past the file");
        b.read_at(&mut e, entry_offset(100)).unwrap();
        assert_eq!(e, [0u8; 28]);
        assert!(cache.matches(&mem).unwrap());
    }

    #[test]
    fn a_failed_write_forgets_the_area() {
        struct Failing(MemBacking);
        impl Backing for Failing {
            fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
                self.0.read_at(buf, off)
            }
            fn write_at(&self, _: &[u8], _: u64) -> io::Result<()> {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn set_len(&self, len: u64) -> io::Result<()> {
                self.0.set_len(len)
            }
            fn len(&self) -> io::Result<u64> {
                self.0.len()
            }
        }
        let cache = MetaCache::default();
        let b = CachedMeta {
            inner: Failing(MemBacking::default()),
            cache: &cache,
        };
        let mut e = [0u8; 28];
        b.read_at(&mut e, entry_offset(0)).unwrap();
        assert_eq!(cache.len(), 1);
        assert!(b.write_at(&[3u8; 28], entry_offset(0)).is_err());
        assert!(cache.is_empty());
    }

    #[test]
    fn one_file_holds_at_most_its_share() {
        let mem = MemBacking::default();
        let cache = MetaCache::default();
        let b = CachedMeta {
            inner: &mem,
            cache: &cache,
        };
        let mut e = [0u8; 28];
        for g in 0..(PER_FILE / COST + 10) as u64 {
            b.read_at(&mut e, meta_offset(g)).unwrap();
        }
        assert!(cache.len() * COST <= PER_FILE);
        assert!(cache.len() >= PER_FILE / COST - 1, "the cache stays full");
    }
}
