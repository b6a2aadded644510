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
//! Memory is bounded twice: [`PER_FILE`] per open file (the entries of 1 GiB of data;
//! in a larger file, groups 1 GiB apart take turns) and [`TOTAL`] over all open files
//! (past it, reads of uncached groups just go to the file).
//!
//! A cached read copies one entry from one area among thousands, so three choices
//! keep that copy from stalling. The areas of all files come from one `Pool` backed
//! by huge pages, not from an allocation each: spread over 4 KiB pages, the copy
//! missed the TLB, which on this virtual machine means a nested page walk (perf:
//! `__memmove` stalled on its first load). A file finds its areas by indexing a table
//! (`Slots`), not by a hash probe and a pointer chase. And the codec asks whether the
//! entries are here before it reads the data ([`Hints::entries_in_memory`]), which
//! starts loading their cache lines, and copies them after. In a cached 4 KiB random
//! read, lookup and copy took 3.6-6.0 % of the daemon's samples before (8 runs),
//! 2.2-2.9 % after (4 runs): about 0.5 us less per read.

use super::backing::Backing;
use super::hints::{Around, Hints};
use super::layout::{meta_offset, BLOCK, ENTRY_LEN, GROUP_BLOCKS, GROUP_SPAN, HEADER_LEN};
use memmap2::{Advice, MmapMut};
use parking_lot::Mutex;
use std::io;
use std::sync::OnceLock;

/// Bytes of one group's entries.
const AREA: usize = (GROUP_BLOCKS * ENTRY_LEN) as usize;
/// Groups one open file's cache holds.
const SLOTS: usize = 2048;
/// Most bytes one open file's cache holds: 7 MiB, the entries of 1 GiB of data.
pub const PER_FILE: usize = SLOTS * AREA;
/// Most bytes all caches together hold: 32 MiB.
pub const TOTAL: usize = 32 << 20;

/// Room for one group's entries, lent by a [`Pool`].
type Area = &'static mut [u8; AREA];

/// Areas for the caches to hold entries in: one region, never freed, cut into areas
/// that caches take and give back.
struct Pool {
    free: Mutex<Vec<Area>>,
}

impl Pool {
    /// A pool of `bytes` bytes. Huge pages are asked for, not required; without
    /// memory for the region the pool is empty and caches hold nothing.
    fn new(bytes: usize) -> Pool {
        let Ok(region) = MmapMut::map_anon(bytes) else {
            return Pool {
                free: Mutex::default(),
            };
        };
        let _ = region.advise(Advice::HugePage);
        let region: &'static mut [u8] = &mut Box::leak(Box::new(region))[..];
        let mut free: Vec<Area> = region
            .chunks_exact_mut(AREA)
            .map(|a| a.try_into().expect("chunks of AREA bytes"))
            .collect();
        // areas are taken from the end: hand out the start of the region first, so
        // that few pages are in use while the caches are small
        free.reverse();
        Pool {
            free: Mutex::new(free),
        }
    }

    /// The pool of the process, of [`TOTAL`] bytes, made on first use.
    fn global() -> &'static Pool {
        static GLOBAL: OnceLock<Pool> = OnceLock::new();
        GLOBAL.get_or_init(|| Pool::new(TOTAL))
    }

    fn take(&self) -> Option<Area> {
        self.free.lock().pop()
    }

    fn give_back(&self, areas: impl IntoIterator<Item = Area>) {
        self.free.lock().extend(areas);
    }
}

/// The cached entry areas of one file.
pub struct MetaCache {
    slots: Mutex<Slots>,
    pool: &'static Pool,
}

impl Default for MetaCache {
    fn default() -> MetaCache {
        MetaCache::with_pool(Pool::global())
    }
}

/// A file's cached areas, group `g` in slot `g % len`. The table doubles (up to
/// [`SLOTS`]) when a group past its end comes in, so a small file keeps a small table;
/// doubling never makes two cached groups want one slot.
#[derive(Default)]
struct Slots(Vec<Option<(u64, Area)>>);

impl Slots {
    fn slot(&self, group: u64) -> Option<usize> {
        (!self.0.is_empty()).then(|| (group % self.0.len() as u64) as usize)
    }

    /// The slot holding `group`, if one does.
    fn find(&self, group: u64) -> Option<usize> {
        let slot = self.slot(group)?;
        matches!(self.0[slot], Some((g, _)) if g == group).then_some(slot)
    }

    fn get(&self, group: u64) -> Option<&[u8; AREA]> {
        let (_, area) = self.0[self.find(group)?].as_ref()?;
        Some(area)
    }

    fn get_mut(&mut self, group: u64) -> Option<&mut [u8; AREA]> {
        let slot = self.find(group)?;
        let (_, area) = self.0[slot].as_mut()?;
        Some(area)
    }

    /// The slot for `group`, after growing the table to reach it if it may.
    fn slot_for(&mut self, group: u64) -> usize {
        let want = (group + 1).min(SLOTS as u64) as usize;
        if self.0.len() < want {
            let len = want.next_power_of_two();
            let old = std::mem::replace(&mut self.0, (0..len).map(|_| None).collect());
            for (g, area) in old.into_iter().flatten() {
                self.0[(g % len as u64) as usize] = Some((g, area));
            }
        }
        self.slot(group).expect("the table has slots")
    }

    /// Empties the slots whose group `gone` names; returns their areas.
    fn take_out(&mut self, mut gone: impl FnMut(u64) -> bool) -> Vec<Area> {
        let taken = self
            .0
            .iter_mut()
            .filter(|s| s.as_ref().is_some_and(|(g, _)| gone(*g)));
        taken.filter_map(|s| s.take().map(|(_, area)| area)).collect()
    }
}

/// Bytes of a CPU cache line.
const LINE: usize = 64;

/// Asks the CPU to load the cache line at `p`: a hint, which never faults.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads no memory the program can observe, whatever `p` is.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
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
    /// A cache that never holds anything: every read goes to the file. For a file that
    /// other daemons may write meanwhile (shared storage), where a copy would go stale.
    pub fn off() -> MetaCache {
        static NONE: OnceLock<Pool> = OnceLock::new();
        MetaCache::with_pool(NONE.get_or_init(|| Pool {
            free: Mutex::default(),
        }))
    }

    fn with_pool(pool: &'static Pool) -> MetaCache {
        MetaCache {
            slots: Mutex::default(),
            pool,
        }
    }

    /// Copies the cached bytes at `off` into `buf`; false if the group is not cached.
    fn read(&self, group: u64, off: u64, buf: &mut [u8]) -> bool {
        let slots = self.slots.lock();
        let Some(area) = slots.get(group) else {
            return false;
        };
        let at = (off - meta_offset(group)) as usize;
        buf.copy_from_slice(&area[at..at + buf.len()]);
        true
    }

    /// Whether group `group` is cached; if so, starts loading the cache lines of
    /// `[off, off + len)`, which a read soon after then finds in the CPU cache.
    fn touch(&self, group: u64, off: u64, len: usize) -> bool {
        let slots = self.slots.lock();
        let Some(area) = slots.get(group) else {
            return false;
        };
        let at = (off - meta_offset(group)) as usize;
        // every line the range touches: a 28-byte entry may straddle two
        let start = area[at..at + len].as_ptr();
        let lead = start as usize % LINE;
        for i in (0..lead + len).step_by(LINE) {
            prefetch(start.wrapping_sub(lead).wrapping_add(i));
        }
        true
    }

    /// Keeps `entries` as group `group`'s, in the area of the group in its slot if
    /// there is one, else in one from the pool if it has any left.
    fn insert(&self, group: u64, entries: &[u8; AREA]) {
        let mut slots = self.slots.lock();
        let slot = slots.slot_for(group);
        let area = match slots.0[slot].take() {
            Some((_, area)) => area,
            None => match self.pool.take() {
                Some(area) => area,
                None => return,
            },
        };
        area.copy_from_slice(entries);
        slots.0[slot] = Some((group, area));
    }

    /// Applies a write of `data` at `off` to the cached groups it overlaps.
    fn written(&self, off: u64, data: &[u8]) {
        let mut slots = self.slots.lock();
        for group in groups_touched(off, data.len()) {
            let Some(area) = slots.get_mut(group) else {
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
        let freed = self.slots.lock().take_out(|g| !keep(g));
        self.pool.give_back(freed);
    }

    /// Number of cached groups.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.lock().0.iter().flatten().count()
    }

    /// Whether no group is cached.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every cached group equals the bytes of `b`.
    #[cfg(test)]
    pub fn matches(&self, b: &dyn Backing) -> io::Result<bool> {
        for (group, area) in self.slots.lock().0.iter().flatten() {
            let mut disk = [0u8; AREA];
            let n = b.read_at(&mut disk, meta_offset(*group))?;
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
        self.pool.give_back(self.slots.get_mut().take_out(|_| true));
    }
}

/// A backing file whose metadata entries are read through a [`MetaCache`].
pub struct CachedMeta<'a, B: Backing> {
    /// The file read.
    pub inner: B,
    /// The cache its entry areas are read through.
    pub cache: &'a MetaCache,
}

impl<B: Backing> Backing for CachedMeta<'_, B> {
    /// Reads inside one entry area come from the cache (filled on first use) and, like
    /// the area's bytes past end of file, read as zeros there; others go to the file.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let Some(group) = group_of(off, buf.len()) else {
            return self.inner.read_at(buf, off);
        };
        if self.cache.read(group, off, buf) {
            return Ok(buf.len());
        }
        // the whole metadata block: its padding after the entries must be zeros (a
        // changed byte there is damage, as anywhere else), and it is the same page
        let mut block = [0u8; BLOCK as usize];
        let n = self.inner.read_at(&mut block, meta_offset(group))?;
        block[n..].fill(0);
        if block[AREA..].iter().any(|&b| b != 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the padding of metadata block {group} is not zero"),
            ));
        }
        let area: &[u8; AREA] = block[..AREA].try_into().expect("AREA bytes");
        let at = (off - meta_offset(group)) as usize;
        buf.copy_from_slice(&area[at..at + buf.len()]);
        self.cache.insert(group, area);
        Ok(buf.len())
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

    /// The cache holds no state of its own to make durable: the file's sync.
    fn sync(&self, data_only: bool) -> io::Result<()> {
        self.inner.sync(data_only)
    }
}

/// The hints of the file, but for entries, which are in memory when cached.
impl<B: Backing + Hints> Hints for CachedMeta<'_, B> {
    fn writes_direct(&self) -> bool {
        self.inner.writes_direct()
    }

    /// Data reads the codec is about to make after reading entries that are not cached.
    fn prefetch(&self, off: u64, len: usize) {
        self.inner.prefetch(off, len)
    }

    fn entries_in_memory(&self, off: u64, len: usize) -> bool {
        group_of(off, len).is_some_and(|g| self.cache.touch(g, off, len))
    }

    /// Straight to the file: the cache writes through, so the file holds what it holds.
    fn read_direct(&self, buf: &mut [u8], off: u64) -> Option<io::Result<usize>> {
        self.inner.read_direct(buf, off)
    }

    /// Data reads only, so straight to the file, like [`Hints::read_direct`].
    fn read_around(&self, buf: &mut [u8], off: u64, around: &Around) -> Option<io::Result<usize>> {
        self.inner.read_around(buf, off, around)
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
    fn entries_in_memory_only_when_cached() {
        let mem = MemBacking::default();
        let cache = MetaCache::default();
        let b = CachedMeta {
            inner: &mem,
            cache: &cache,
        };
        assert!(!b.entries_in_memory(entry_offset(3), 28 * 4));
        let mut e = [0u8; 28];
        b.read_at(&mut e, entry_offset(0)).unwrap();
        assert!(b.entries_in_memory(entry_offset(3), 28 * 4));
        assert!(
            !b.entries_in_memory(entry_offset(GROUP_BLOCKS), 28),
            "another group"
        );
        assert!(!b.entries_in_memory(meta_offset(0) + 4096, 4096), "a data block");
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
            fn sync(&self, _: bool) -> io::Result<()> {
                Ok(())
            }
        }
        impl Hints for Failing {}
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
    fn a_cache_that_is_off_holds_nothing() {
        let mem = MemBacking::default();
        mem.write_at(&[7u8; 28], entry_offset(0)).unwrap();
        mem.set_len(HEADER_LEN + GROUP_SPAN).unwrap();
        let cache = MetaCache::off();
        let b = CachedMeta {
            inner: &mem,
            cache: &cache,
        };
        let mut buf = [0u8; ENTRY_LEN as usize];
        b.read_at(&mut buf, meta_offset(0)).unwrap();
        assert_eq!(buf, [7u8; ENTRY_LEN as usize]);
        b.read_at(&mut buf, meta_offset(0)).unwrap();
        assert!(cache.is_empty());
        assert!(!b.entries_in_memory(meta_offset(0), buf.len()));
    }

    #[test]
    fn one_file_holds_at_most_its_share() {
        let mem = MemBacking::default();
        let cache = MetaCache::with_pool(Box::leak(Box::new(Pool::new(2 * PER_FILE))));
        let b = CachedMeta {
            inner: &mem,
            cache: &cache,
        };
        let mut e = [0u8; 28];
        for g in 0..SLOTS as u64 + 10 {
            b.read_at(&mut e, meta_offset(g)).unwrap();
        }
        assert_eq!(cache.len(), SLOTS, "the cache stays full");
        assert_eq!(cache.pool.free.lock().len(), 2 * SLOTS - cache.len());
        // groups past the table took the slots of the groups 1 GiB before them
        let slots = cache.slots.lock();
        assert!(slots.get(9).is_none() && slots.get(SLOTS as u64 + 9).is_some());
        assert!(slots.get(10).is_some());
    }

    #[test]
    fn areas_go_back_to_the_pool() {
        let mem = MemBacking::default();
        let pool: &'static Pool = Box::leak(Box::new(Pool::new(3 * AREA + 100)));
        assert_eq!(pool.free.lock().len(), 3);
        let (one, two) = (MetaCache::with_pool(pool), MetaCache::with_pool(pool));
        let mut e = [0u8; 28];
        for g in 0..2 {
            CachedMeta {
                inner: &mem,
                cache: &one,
            }
            .read_at(&mut e, meta_offset(g))
            .unwrap();
        }
        let second = CachedMeta {
            inner: &mem,
            cache: &two,
        };
        for g in 0..2 {
            // past the pool's size, reads still work, from the file
            mem.write_at(&[7u8; 28], meta_offset(g)).unwrap();
            second.read_at(&mut e, meta_offset(g)).unwrap();
            assert_eq!(e, [7u8; 28]);
        }
        assert_eq!((one.len(), two.len()), (2, 1));
        // truncating gives the areas past the end back
        CachedMeta {
            inner: &mem,
            cache: &one,
        }
        .set_len(meta_offset(1))
        .unwrap();
        assert_eq!((one.len(), pool.free.lock().len()), (1, 1));
        drop(one);
        assert_eq!(pool.free.lock().len(), 2);
        second.read_at(&mut e, meta_offset(1)).unwrap();
        assert_eq!((two.len(), pool.free.lock().len()), (2, 1));
        assert!(two.matches(&mem).unwrap());
    }
}
