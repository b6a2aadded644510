//! An encrypted regular file while it is open: backing descriptor, header, unwrapped
//! data key and plaintext size, shared by every handle of the inode so the key is
//! unwrapped once per open file, not per request.

use super::error::{errno, FsError, FsResult};
use super::sharedlock::{tail_block, Held, LockPool, Sharing};
use super::{direct, readaround, writebehind};
use crate::backdir::sys;
use crate::format::header::read_header;
use crate::format::layout::{self, plain_size};
use crate::format::{Around, BlockCodec, CachedMeta, CodecError, Header, MetaCache};
use crate::keys::{KeyError, KeyProvider};
use crate::zone::Zone;
use parking_lot::RwLock;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared state of one open encrypted file.
///
/// Locking: `layout` is taken exclusively by truncates and by writes that must read a
/// block back (partial blocks, growing a short last block), so a read-modify-write
/// never loses a concurrent writer's bytes; reads and whole-block writes take it
/// shared and then lock the stripes of the block groups they touch (shared to read,
/// exclusive to write), so writes to different groups proceed in parallel and a read
/// never sees a block whose data and tag are half written, nor fills the metadata
/// cache from entries being written.
pub struct EncFile {
    file: File,
    /// `None` only for an empty file without header opened where it cannot be written.
    cipher: Option<(Header, BlockCodec)>,
    size: AtomicU64,
    layout: RwLock<()>,
    stripes: [RwLock<()>; STRIPES],
    /// Serializes writes to the backing file (see [`SerialWrites`]).
    writes: parking_lot::Mutex<()>,
    direct: direct::Direct,
    frontier: writebehind::Frontier,
    /// The metadata entries read so far, so that a read costs one backing read, not two.
    meta: MetaCache,
    /// Shared storage (other daemons write the backing file too): the locks taken on
    /// the backing file (see [`super::sharedlock`]); the size is then read from the
    /// backing file under them, and no metadata entry is kept in memory.
    shared: Option<LockPool>,
    /// Shared storage through a client whose page cache may be stale: what a read or
    /// write uses of the backing file is dropped from that cache under the lock.
    refetch: bool,
}

/// The backing file with its writes taken one at a time. The backing filesystem
/// serializes writes to one file on its inode lock anyway, and its waiters spin on
/// the CPU while the holder copies: measured here, 4 request threads writing one
/// file spent a sixth of the daemon's CPU spinning there. Waiting here parks the
/// thread instead, leaving the core to the threads that are sealing.
/// Large aligned writes, and large reads of what the page cache lacks, go past it
/// (see [`direct`]); small reads that miss it may bring in their neighbours (see
/// [`readaround`]).
struct SerialWrites<'a> {
    file: &'a File,
    lock: &'a parking_lot::Mutex<()>,
    direct: &'a direct::Direct,
}

impl crate::format::Backing for SerialWrites<'_> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        crate::format::Backing::read_at(self.file, buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let _g = self.lock.lock();
        match self.direct.write(self.file, buf, off) {
            Some(result) => result,
            None => crate::format::Backing::write_at(self.file, buf, off),
        }
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        crate::format::Backing::set_len(self.file, len)
    }
    fn len(&self) -> io::Result<u64> {
        crate::format::Backing::len(self.file)
    }
    fn sync(&self, data_only: bool) -> io::Result<()> {
        crate::format::Backing::sync(self.file, data_only)
    }
}

impl crate::format::Hints for SerialWrites<'_> {
    fn writes_direct(&self) -> bool {
        self.direct.enabled()
    }
    fn prefetch(&self, off: u64, len: usize) {
        sys::will_need(self.file, off, len as u64);
    }
    fn read_direct(&self, buf: &mut [u8], off: u64) -> Option<io::Result<usize>> {
        self.direct.read(self.file, buf, off)
    }
    fn read_around(&self, buf: &mut [u8], off: u64, around: &Around) -> Option<io::Result<usize>> {
        Some(readaround::read(self.file, buf, off, around))
    }
}

/// Lock stripes over block groups (a group is 512 KiB of plaintext).
const STRIPES: usize = 32;
const _: () = assert!(STRIPES <= u32::BITS as usize, "a stripe set is a u32");

/// Holds the stripe locks of a range of groups, taken in ascending order and released
/// on drop. A bit set of the stripes held, not a `Vec` of guards: every read and write
/// takes these, and two allocations per request showed in the daemon's profile of
/// random reads (malloc, free and collect: about 0.5 µs per read).
struct StripeGuards<'a> {
    stripes: &'a [RwLock<()>; STRIPES],
    held: u32,
    exclusive: bool,
}

impl<'a> StripeGuards<'a> {
    /// Locks the stripes whose bits are set in `wanted`, lowest first.
    fn lock(stripes: &'a [RwLock<()>; STRIPES], wanted: u32, exclusive: bool) -> Self {
        for i in Self::indices(wanted) {
            // released in Drop, which unlocks exactly the stripes in `held`
            if exclusive {
                std::mem::forget(stripes[i].write());
            } else {
                std::mem::forget(stripes[i].read());
            }
        }
        StripeGuards {
            stripes,
            held: wanted,
            exclusive,
        }
    }

    fn indices(mut bits: u32) -> impl Iterator<Item = usize> {
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                i
            })
        })
    }
}

impl Drop for StripeGuards<'_> {
    fn drop(&mut self) {
        for i in Self::indices(self.held) {
            // SAFETY: `lock` took stripe i in this mode and forgot its guard; only this
            // value releases it, once.
            unsafe {
                if self.exclusive {
                    self.stripes[i].force_unlock_write();
                } else {
                    self.stripes[i].force_unlock_read();
                }
            }
        }
    }
}

/// Creates a header for a new file in `zone`: a fresh DEK wrapped by the zone key's
/// newest version (by the KMS, for a zone whose key is there).
pub fn new_header(zone: &Zone, keys: &dyn KeyProvider) -> Result<(Header, BlockCodec), KeyError> {
    let (header, dek) = crate::keys::dek::new_file(keys, zone.id, &zone.key)?;
    let codec = BlockCodec::new(&dek, header.file_id);
    Ok((header, codec))
}

impl EncFile {
    /// Opens the encrypted file behind `fd`. An empty file gets its header now when
    /// `writable`; `keys` unwraps the DEK. `sharing` says whether other daemons may use
    /// the file at the same time (see [`super::sharedlock`]). Failures are logged with
    /// the path.
    pub fn open(
        fd: BorrowedFd<'_>,
        zone: &Zone,
        keys: &dyn KeyProvider,
        writable: bool,
        sharing: Sharing,
    ) -> FsResult<EncFile> {
        if let Some(why) = &zone.broken {
            log::error!("{}: zone unusable: {why}", sys::describe(fd));
            return Err(errno::EIO);
        }
        let file = match writable {
            true => {
                sys::reopen_noatime(fd, libc::O_RDWR).or_else(|_| sys::reopen_noatime(fd, libc::O_RDONLY))
            }
            false => sys::reopen_noatime(fd, libc::O_RDONLY),
        }?;
        Self::from_file(file, zone, keys, writable, sharing)
    }

    /// Like [`EncFile::open`], on a backing file already open (read-write when `writable`).
    pub fn from_file(
        file: File,
        zone: &Zone,
        keys: &dyn KeyProvider,
        writable: bool,
        sharing: Sharing,
    ) -> FsResult<EncFile> {
        let fail = |file: &File, what: String| {
            log::error!("{}: {what}", sys::describe(file.as_fd()));
            super::stats::eio();
            errno::EIO
        };
        if let Some(why) = &zone.broken {
            return Err(fail(&file, format!("zone unusable: {why}")));
        }
        let pool = match sharing {
            // "open here": no other daemon replaces the file meanwhile
            Sharing::Alone => None,
            _ => Some(LockPool::new(&file, writable).and_then(|p| p.hold_open().map(|_| p))?),
        };
        let refetch = sharing == Sharing::SharedUncached;
        if refetch {
            sys::drop_cached(&file, 0, 0);
        }
        // another daemon may be giving an empty file its header (one of them does), or
        // re-wrapping it; a writer also clears entries past the end (below), alone
        let (tail, header_lock) = match &pool {
            Some(p) if writable => (Some(p.blocks(0, None, true)?), Some(p.header(true)?)),
            Some(p) => (None, Some(p.header(false)?)),
            None => (None, None),
        };
        let len = match pool {
            Some(_) => sys::stat_fresh(file.as_fd())?.st_size as u64,
            None => file.metadata()?.len(),
        };
        if len == 0 {
            let cipher = if writable {
                let (header, codec) = new_header(zone, keys).map_err(|e| fail(&file, e.to_string()))?;
                std::os::unix::fs::FileExt::write_all_at(&file, &header.encode(), 0)?;
                Some((header, codec))
            } else {
                None
            };
            drop((header_lock, tail));
            return Ok(EncFile::new(file, cipher, 0, pool, refetch));
        }
        let size = plain_size(len)
            .map_err(|_| fail(&file, format!("backing size {len} is too short for a header")))?;
        let header = read_header(&file).map_err(|e| fail(&file, e))?;
        drop(header_lock);
        if header.zone_id != zone.id || header.key_name != zone.key {
            return Err(fail(
                &file,
                format!(
                    "belongs to zone {} (key {}), not to the zone it is in ({}, key {}): a file copied \
                     or moved here in the backing dir is not decrypted (see ezfs fsck)",
                    crate::text::hex(&header.zone_id),
                    header.key_name,
                    crate::text::hex(&zone.id),
                    zone.key
                ),
            ));
        }
        let dek = crate::keys::dek::unwrap(keys, &header).map_err(|e| fail(&file, e.to_string()))?;
        let codec = BlockCodec::new(&dek, header.file_id);
        // before any write: entries a crash left past the end would turn holes into EIO
        // (only a file opened for writing can grow; a failure here fails no read)
        match writable.then(|| codec.clear_entries_past_end(&file, size)) {
            Some(Ok(true)) => log::warn!(
                "{}: cleared metadata entries a crash left past the end of the file",
                sys::describe(file.as_fd())
            ),
            Some(Err(e)) => log::warn!(
                "{}: cannot clear metadata entries past the end of the file: {e}",
                sys::describe(file.as_fd())
            ),
            _ => {}
        }
        drop(tail);
        Ok(EncFile::new(file, Some((header, codec)), size, pool, refetch))
    }

    fn codec_error(&self, e: CodecError) -> FsError {
        match e {
            CodecError::Io(e) => {
                if e.raw_os_error().is_none() {
                    // not the disk's: the format's own damage (see the codec)
                    log::error!("{}: {e}; reads of it get EIO", sys::describe(self.file.as_fd()));
                }
                FsError::Io(e)
            }
            CodecError::Corrupt { block } => {
                super::stats::auth_failure();
                log::error!(
                    "{}: block {block} failed authentication; reads of it get EIO",
                    sys::describe(self.file.as_fd())
                );
                errno::EIO
            }
        }
    }

    fn codec(&self) -> FsResult<&BlockCodec> {
        self.cipher.as_ref().map(|(_, c)| c).ok_or(errno::EBADF)
    }

    fn new(
        file: File,
        cipher: Option<(Header, BlockCodec)>,
        size: u64,
        shared: Option<LockPool>,
        refetch: bool,
    ) -> EncFile {
        EncFile {
            file,
            cipher,
            size: AtomicU64::new(size),
            layout: RwLock::new(()),
            stripes: std::array::from_fn(|_| RwLock::new(())),
            writes: parking_lot::Mutex::new(()),
            direct: Default::default(),
            frontier: writebehind::Frontier::default(),
            meta: match shared {
                Some(_) => MetaCache::off(),
                None => MetaCache::default(),
            },
            shared,
            refetch,
        }
    }

    /// Shared storage through a stale-prone client: drops what the client caches of
    /// blocks `first..=last` and their metadata entries (under their lock), so they
    /// are read as the file system has them now.
    fn refetch(&self, first: u64, last: u64) {
        if self.refetch {
            let from = layout::meta_offset(first / layout::GROUP_BLOCKS);
            let to = layout::data_offset(last) + layout::BLOCK;
            sys::drop_cached(&self.file, from, to - from);
        }
    }

    /// Shared storage: the plaintext size as the backing file has it now (kept as the
    /// current size too).
    fn size_on_disk(&self) -> FsResult<u64> {
        let len = sys::stat_fresh(self.file.as_fd())?.st_size as u64;
        let size = plain_size(len).map_err(|_| {
            log::error!(
                "{}: backing size {len} is too short for a header",
                sys::describe(self.file.as_fd())
            );
            errno::EIO
        })?;
        self.size.store(size, Ordering::Release);
        Ok(size)
    }

    /// Shared storage: locks blocks `from..` to the end (the tail), lowered to the
    /// tail of the size found, and returns that size: nobody else changes it while
    /// the lock is held. `held` (if any) is given up for it.
    fn lock_tail<'a>(
        &self,
        pool: &'a LockPool,
        held: Option<Held<'a>>,
        mut from: u64,
    ) -> FsResult<(Held<'a>, u64)> {
        let held = match held {
            Some(h) => {
                h.relock_tail(from)?;
                h
            }
            None => pool.blocks(from, None, true)?,
        };
        loop {
            let size = self.size_on_disk()?;
            if tail_block(size) >= from {
                return Ok((held, size));
            }
            from = tail_block(size);
            held.relock_tail(from)?;
        }
    }

    /// Locks the stripes of the groups holding plaintext bytes `[off, end)`.
    fn stripes(&self, off: u64, end: u64, exclusive: bool) -> StripeGuards<'_> {
        let span = layout::BLOCK * layout::GROUP_BLOCKS;
        let (g0, g1) = (off / span, end.saturating_sub(1).max(off) / span);
        let wanted = (g0..=g1.min(g0 + STRIPES as u64)).fold(0u32, |m, g| m | 1 << (g % STRIPES as u64));
        StripeGuards::lock(&self.stripes, wanted, exclusive)
    }

    /// The backing file as the codec sees it: every access to its blocks goes through
    /// here, which keeps the metadata cache equal to the disk.
    fn backing(&self) -> CachedMeta<'_, SerialWrites<'_>> {
        CachedMeta {
            inner: SerialWrites {
                file: &self.file,
                lock: &self.writes,
                direct: &self.direct,
            },
            cache: &self.meta,
        }
    }

    /// The backing file (open for I/O, unlike the inode's `O_PATH` descriptor).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Current plaintext size (shared storage: as of this daemon's last look; see
    /// [`EncFile::current_size`]).
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// The plaintext size now: from the backing file on shared storage, where other
    /// daemons may have changed it.
    pub fn current_size(&self) -> FsResult<u64> {
        match self.shared {
            Some(_) => self.size_on_disk(),
            None => Ok(self.size()),
        }
    }

    /// Reads up to `out.len()` bytes at `off` into `out`; returns how many.
    pub fn read_into(&self, off: u64, out: &mut [u8]) -> FsResult<usize> {
        if let Some(pool) = &self.shared {
            return self.read_shared(pool, off, out);
        }
        let _layout = self.layout.read();
        // the size is read under the stripe locks: a whole-block write that grew a short
        // last block while we waited must not be read with the old, shorter length
        let _g = self.stripes(off, off + out.len() as u64, false);
        let size = self.size();
        if off >= size {
            return Ok(0);
        }
        self.codec()?
            .read(&self.backing(), size, off, out)
            .map_err(|e| self.codec_error(e))
    }

    /// Shared storage: [`EncFile::read_into`] with the blocks read locked shared on
    /// the backing file, and the size read under that lock.
    fn read_shared(&self, pool: &LockPool, off: u64, out: &mut [u8]) -> FsResult<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // the byte-range locks order this read with every other operation, this
        // daemon's too (each holds its own description); the layout lock only keeps
        // it apart from a truncate here
        let _layout = self.layout.read();
        let end = off + out.len() as u64;
        let (first, last) = (off / layout::BLOCK, (end - 1) / layout::BLOCK);
        let _held = pool.blocks(first, Some(last), false)?;
        let size = self.size_on_disk()?;
        if off >= size {
            return Ok(0);
        }
        self.refetch(first, last.min(size.saturating_sub(1) / layout::BLOCK));
        self.codec()?
            .read(&self.backing(), size, off, out)
            .map_err(|e| self.codec_error(e))
    }

    /// Shared storage: [`EncFile::write`] with the blocks written locked exclusively
    /// on the backing file, and the tail too when the write changes the size. Those
    /// locks keep this daemon's operations apart too (each holds its own description),
    /// so writes of disjoint blocks run in parallel.
    fn write_shared(&self, pool: &LockPool, off: u64, data: &[u8]) -> FsResult<()> {
        let end = off + data.len() as u64;
        let _layout = self.layout.read();
        let mut held = pool.blocks(off / layout::BLOCK, Some((end - 1) / layout::BLOCK), true)?;
        let mut size = self.size_on_disk()?;
        if end > size {
            (held, size) = self.lock_tail(pool, Some(held), (off / layout::BLOCK).min(tail_block(size)))?;
        }
        self.refetch(
            (off / layout::BLOCK).min(tail_block(size)),
            (end - 1) / layout::BLOCK,
        );
        let new_size = self
            .codec()?
            .write(&self.backing(), size, off, data)
            .map_err(|e| self.codec_error(e))?;
        self.size.store(new_size, Ordering::Release);
        drop(held);
        Ok(())
    }

    /// Shared storage: appends `data` at the end of the file as it is on disk (the
    /// kernel's idea of the end may be another daemon's write behind); returns where.
    pub fn append(&self, data: &[u8]) -> FsResult<u64> {
        let Some(pool) = &self.shared else {
            let at = self.size();
            self.write(at, data)?;
            return Ok(at);
        };
        let _layout = self.layout.read();
        let (_held, size) = self.lock_tail(pool, None, tail_block(self.size()))?;
        self.refetch(
            tail_block(size),
            (size + data.len() as u64).saturating_sub(1) / layout::BLOCK,
        );
        let new_size = self
            .codec()?
            .write(&self.backing(), size, size, data)
            .map_err(|e| self.codec_error(e))?;
        self.size.store(new_size, Ordering::Release);
        Ok(size)
    }

    /// Writes `data` at `off`.
    pub fn write(&self, off: u64, data: &[u8]) -> FsResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        if let Some(pool) = &self.shared {
            return self.write_shared(pool, off, data);
        }
        let end = off + data.len() as u64;
        let whole_blocks = off % layout::BLOCK == 0 && data.len() as u64 % layout::BLOCK == 0;
        if whole_blocks {
            let _layout = self.layout.read();
            let size = self.size();
            // a short last block before the write would have to grow: exclusive path
            let grows_short_block = size % layout::BLOCK != 0 && size < off;
            if !grows_short_block {
                let _g = self.stripes(off, end, true);
                let new_size = self
                    .codec()?
                    .write(&self.backing(), size, off, data)
                    .map_err(|e| self.codec_error(e))?;
                self.size.fetch_max(new_size, Ordering::AcqRel);
                drop(_g);
                self.write_behind(off, end);
                return Ok(());
            }
        }
        let _layout = self.layout.write();
        let size = self.size();
        let new_size = self
            .codec()?
            .write(&self.backing(), size, off, data)
            .map_err(|e| self.codec_error(e))?;
        self.size.store(new_size, Ordering::Release);
        drop(_layout);
        self.write_behind(off, end);
        Ok(())
    }

    /// Starts the disk write of the window that a write of `[off, end)` completed, if any.
    fn write_behind(&self, off: u64, end: u64) {
        if let Some(w) = self.frontier.advance(off, end) {
            let group = |plain: u64| plain / (layout::BLOCK * layout::GROUP_BLOCKS);
            let range = layout::meta_offset(group(w.start))..layout::meta_offset(group(w.end));
            writebehind::start(&self.file, range);
        }
    }

    /// Sets the plaintext size.
    pub fn truncate(&self, new_size: u64) -> FsResult<()> {
        self.resize(new_size, false)
    }

    /// Sets the plaintext size, or with `grow_only` raises it to `new_size` if it is
    /// below. The comparison is made under the layout lock: a write that grew the file
    /// meanwhile is never cut back.
    fn resize(&self, new_size: u64, grow_only: bool) -> FsResult<()> {
        let _layout = self.layout.write();
        let (_held, size) = match &self.shared {
            Some(pool) => {
                let (h, s) = self.lock_tail(pool, None, tail_block(new_size.min(self.size())))?;
                self.refetch(tail_block(new_size.min(s)), tail_block(new_size.max(s)));
                (Some(h), s)
            }
            None => (None, self.size()),
        };
        if (new_size == size || (grow_only && new_size < size)) && self.cipher.is_some() {
            return Ok(());
        }
        self.codec()?
            .truncate(&self.backing(), size, new_size)
            .map_err(|e| self.codec_error(e))?;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }

    /// Makes every range in `[off, off+len)` read as zeros (punch hole / zero range):
    /// the plaintext zeros are encrypted, so the result authenticates like any data.
    pub fn zero_range(&self, off: u64, len: u64, keep_size: bool) -> FsResult<()> {
        let size = self.current_size()?;
        let end = if keep_size {
            (off + len).min(size)
        } else {
            off + len
        };
        let zeros = vec![0u8; 1 << 20];
        let mut at = off;
        while at < end {
            let n = (end - at).min(zeros.len() as u64) as usize;
            self.write(at, &zeros[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    /// Reserves backing space for `[off, off+len)` (plain `fallocate`): the new
    /// backing blocks read as zeros, which the codec reads as holes.
    pub fn allocate(&self, off: u64, len: u64, keep_size: bool) -> FsResult<()> {
        if !keep_size {
            self.resize(off + len, true)?;
        }
        let start = layout::data_offset(off / layout::BLOCK) - layout::BLOCK;
        let end = layout::backing_size(off + len);
        Ok(sys::fallocate(
            &self.file,
            libc::FALLOC_FL_KEEP_SIZE,
            start,
            end - start,
        )?)
    }

    /// Flushes the backing file to disk: its data only (`fdatasync`) or with its metadata.
    pub fn sync(&self, data_only: bool) -> FsResult<()> {
        Ok(if data_only {
            self.file.sync_data()
        } else {
            self.file.sync_all()
        }?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(stripes: &[RwLock<()>; STRIPES]) -> Vec<usize> {
        (0..STRIPES)
            .filter(|&i| stripes[i].try_write().is_some())
            .collect()
    }

    /// The stripes set are held in the mode asked, the others are free, and all are
    /// released on drop.
    #[test]
    fn stripe_guards_hold_exactly_their_stripes() {
        let stripes: [RwLock<()>; STRIPES] = std::array::from_fn(|_| RwLock::new(()));
        let all: Vec<usize> = (0..STRIPES).collect();
        let wanted = 1 << 0 | 1 << 5 | 1 << 31;
        {
            let _g = StripeGuards::lock(&stripes, wanted, false);
            let f = free(&stripes);
            assert_eq!(
                f,
                all.iter()
                    .copied()
                    .filter(|i| ![0, 5, 31].contains(i))
                    .collect::<Vec<_>>()
            );
            // shared: other readers get in
            assert!(stripes[5].try_read().is_some());
        }
        assert_eq!(free(&stripes), all);
        {
            let _g = StripeGuards::lock(&stripes, 1 << 7, true);
            assert!(stripes[7].try_read().is_none());
            assert_eq!(free(&stripes).len(), STRIPES - 1);
        }
        assert_eq!(free(&stripes), all);
    }
}
