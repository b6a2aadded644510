//! Per-file steps of zone re-encryption, each crash-safe on its own:
//! - re-wrap: the DEK is unwrapped with the old key version and wrapped with the new
//!   one; only the header's first sector changes, in one write, so after a crash the
//!   file holds the old EDEK or the new one, never a mix (both versions stay in the
//!   keystore until `key prune`);
//! - re-encrypt (`--data`): a new DEK and file id, every block holding data re-sealed
//!   into a new backing file next to the old one (holes skipped), synced, then swapped
//!   in by one exchange; after a crash the old file is intact and at most a temporary
//!   file is left, which the next run removes.
//!
//! A file is changed only where the job finds it inside its zone right then (see
//! [`Core::locate`]), and only if its header says it belongs to the zone: a file copied
//! in from another zone is never re-wrapped into this one.

use super::core::Core;
use super::names::At;
use super::reencrypt::Root;
use super::sharedlock;
use crate::backdir::ofd::{self, Kind};
use crate::backdir::sys;
use crate::crypto::Key;
use crate::format::header::read_header;
use crate::format::layout::{self, plain_size};
use crate::format::{BlockCodec, Header};
use crate::keys::KeyProvider;
use crate::text::hex;
use crate::zone::Zone;
use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// The header's first sector: every meaningful byte of it (see format::header).
const SECTOR: usize = 512;

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its EDEK (or, with `--data`, its DEK and blocks) now uses the target version.
    Done,
    /// It already used the target version (and, with `--data`, was re-encrypted by an
    /// earlier run of the same job).
    Current,
    /// Empty, without a header: it gets the newest version when first written.
    Empty,
    /// It was renamed or deleted meanwhile, or is no longer inside the zone.
    Gone,
    /// This job already handled it (under another name).
    Seen,
}

/// Why a file's step did not complete.
#[derive(Debug)]
pub enum JobError {
    /// Open in the mount: retried later.
    Busy,
    /// The job was told to stop.
    Stopped,
    /// The file could not be brought to the target version: why.
    Failed(String),
    /// Something the job cannot leave behind went wrong: the job stops.
    Fatal(String),
}

impl From<String> for JobError {
    fn from(s: String) -> JobError {
        JobError::Failed(s)
    }
}

fn failed(e: impl std::fmt::Display) -> JobError {
    JobError::Failed(e.to_string())
}

fn unwrap_dek(keys: &dyn KeyProvider, h: &Header) -> Result<Key, JobError> {
    crate::keys::dek::unwrap(keys, h).map_err(failed)
}

/// Refuses a header that does not belong to `zone`: its EDEK must never be re-wrapped
/// (or its data re-encrypted) under this zone's key.
fn check_belongs(h: &Header, zone: &Zone) -> Result<(), JobError> {
    if h.zone_id == zone.id && h.key_name == zone.key {
        return Ok(());
    }
    Err(JobError::Failed(format!(
        "belongs to zone {} (key {}), not to this zone: left as it is (see ezfs fsck)",
        hex(&h.zone_id),
        h.key_name
    )))
}

fn wrapped_header(
    keys: &dyn KeyProvider,
    zone: &Zone,
    version: u32,
    file_id: [u8; 16],
    dek: &Key,
) -> Result<Header, JobError> {
    crate::keys::dek::rewrap(keys, file_id, zone.id, &zone.key, version, dek).map_err(failed)
}

/// What [`Core::copy_reencrypted`] did.
enum Copied {
    /// Nothing (the file already used the target version, or went away).
    Skipped(Outcome),
    /// The re-encrypted copy replaced the file, in directory `dir` (its inode) under
    /// `name`; `new` is its inode.
    Swapped {
        dir: (u64, u64),
        name: OsString,
        new: (u64, u64),
    },
}

/// A file a job works on: found at `rel` from the zone root, and, where the
/// filesystem gives file handles, reachable by its handle wherever a rename in the
/// zone moves it meanwhile.
#[derive(Debug, Clone)]
pub struct Target {
    pub rel: PathBuf,
    pub handle: Option<Box<[u8]>>,
    /// Backing (device, inode) where it was found: it stays the file's id across renames.
    pub id: (u64, u64),
}

/// A file's place, checked: its directory (reached beneath the zone root) and name.
struct Place {
    dir: OwnedFd,
    name: OsString,
}

fn st_key(st: &libc::stat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

impl Core {
    /// Opens a target read-write; `None` if it is gone. By its handle, else through the
    /// mount's inode for it (which followed it through renames in the mount), else by
    /// its path beneath the zone root. Where it is opened does not matter yet: it is
    /// changed only once [`Core::locate`] finds it inside the zone.
    fn open_target(&self, root: &Root, t: &Target) -> Result<Option<File>, JobError> {
        let flags = libc::O_RDWR | libc::O_NONBLOCK | libc::O_NOCTTY;
        let opened = match &t.handle {
            Some(h) => self.inodes.open_handle(h, flags),
            None => self
                .inodes
                .open_known(t.id, flags)
                .unwrap_or_else(|| root.open(&t.rel, flags | libc::O_NOFOLLOW).map(File::from)),
        };
        let f = match opened {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)) => {
                return Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        let meta = f.metadata().map_err(failed)?;
        // unlinked (though something still holds it open), or not a regular file any
        // more: gone for the zone
        if meta.nlink() == 0 || !meta.is_file() {
            return Ok(None);
        }
        Ok(Some(f))
    }

    /// Where open file `f` (of `meta`) is now, if that is inside the zone: its current
    /// name (from its `/proc` link, else the path it was found at), resolved again
    /// beneath the zone root through no symlink, must lead to this very file. Renames
    /// in the mount must wait meanwhile (the caller holds the rename gate); a rename in
    /// the backing dir can only move it to another place inside the zone, or make it
    /// gone.
    fn locate(&self, root: &Root, f: &File, meta: &std::fs::Metadata, t: &Target) -> Option<Place> {
        let id = (meta.dev(), meta.ino());
        let from_link = || {
            let now = sys::path_of(f.as_fd()).ok()?;
            let root_now = root.path()?;
            Some(now.strip_prefix(root_now).ok()?.to_path_buf())
        };
        for rel in [from_link(), Some(t.rel.clone())].into_iter().flatten() {
            let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                continue;
            };
            let Ok(dir) = root.open(parent, libc::O_PATH | libc::O_DIRECTORY) else {
                continue;
            };
            if At::backing(dir.as_fd(), name)
                .stat()
                .is_ok_and(|st| st_key(&st) == id)
            {
                return Some(Place {
                    dir,
                    name: name.to_owned(),
                });
            }
        }
        None
    }

    /// Whether directory `dir` is still beneath the zone root (a temporary file's
    /// directory, checked before the swap).
    fn still_inside(&self, root: &Root, dir: BorrowedFd<'_>) -> bool {
        let (Ok(now), Some(root_now), Ok(st)) =
            (sys::path_of(dir), root.path(), sys::stat_at(dir, OsStr::new("")))
        else {
            return false;
        };
        let Ok(rel) = now.strip_prefix(root_now) else {
            return false;
        };
        root.open(rel, libc::O_PATH | libc::O_DIRECTORY)
            .is_ok_and(|d| sys::stat_at(d.as_fd(), OsStr::new("")).is_ok_and(|s| st_key(&s) == st_key(&st)))
    }

    /// Brings target `t` (in `zone`) to `zone.key@version`: re-wraps its EDEK, or with
    /// `data` re-encrypts it under a new DEK. `seen` holds the backing inodes this job
    /// has handled, so a file met again under another name is not done or counted twice;
    /// a busy file is left out of it (to be retried) unless this is the `last` try.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rekey(
        &self,
        root: &Root,
        t: &Target,
        zone: &Zone,
        version: u32,
        data: bool,
        last: bool,
        seen: &mut HashSet<(u64, u64)>,
        stop: &AtomicBool,
    ) -> Result<Outcome, JobError> {
        let Some(f) = self.open_target(root, t)? else {
            return Ok(Outcome::Gone);
        };
        let meta = f.metadata().map_err(failed)?;
        let id = (meta.dev(), meta.ino());
        if seen.contains(&id) {
            return Ok(Outcome::Seen);
        }
        let result = if data {
            self.reencrypt_data(root, f, &meta, t, zone, version, seen, stop)
        } else {
            self.rewrap(root, &f, &meta, t, zone, version)
        };
        match &result {
            Ok(Outcome::Gone) | Err(JobError::Stopped | JobError::Fatal(_)) => {}
            Err(JobError::Busy) if !last => {}
            _ => {
                seen.insert(id);
            }
        }
        result
    }

    /// Re-wraps the EDEK of file `f` with `zone.key@version`.
    fn rewrap(
        &self,
        root: &Root,
        f: &File,
        meta: &std::fs::Metadata,
        t: &Target,
        zone: &Zone,
        version: u32,
    ) -> Result<Outcome, JobError> {
        if meta.len() == 0 {
            return Ok(Outcome::Empty);
        }
        // an open in the mount reads the header under the same lock: it never sees a
        // half-written sector (on shared storage, an open on another host neither:
        // it reads the header under a shared lock of it on the backing file)
        let _g = self.header_lock(meta.ino()).write();
        if self.shared {
            ofd::set(f.as_fd(), Kind::Write, sharedlock::HEADER, 1, true).map_err(failed)?;
        }
        let h = read_header(f)?;
        check_belongs(&h, zone)?;
        if h.key_version == version {
            return Ok(Outcome::Current);
        }
        let dek = unwrap_dek(&*self.keys, &h)?;
        let new = wrapped_header(&*self.keys, zone, version, h.file_id, &dek)?;
        let _gate = self.rename_gate.write();
        if self.locate(root, f, meta, t).is_none() {
            return Ok(Outcome::Gone);
        }
        f.write_all_at(&new.encode()[..SECTOR], 0).map_err(failed)?;
        Ok(Outcome::Done)
    }

    /// Re-encrypts file `old` (in `zone`) under a new DEK wrapped with
    /// `zone.key@version`, unless it already uses that version: then its DEK was never
    /// wrapped by an older version (new file, or re-encrypted by an earlier run of this
    /// job). The replacement goes into `seen`.
    #[allow(clippy::too_many_arguments)]
    fn reencrypt_data(
        &self,
        root: &Root,
        old: File,
        meta: &std::fs::Metadata,
        t: &Target,
        zone: &Zone,
        version: u32,
        seen: &mut HashSet<(u64, u64)>,
        stop: &AtomicBool,
    ) -> Result<Outcome, JobError> {
        if meta.len() == 0 {
            return Ok(Outcome::Empty);
        }
        if meta.nlink() > 1 {
            return Err(JobError::Failed(format!(
                "has {} hard links; re-encrypting its data would split them (copy it instead)",
                meta.nlink()
            )));
        }
        let _g = self.header_lock(meta.ino()).write();
        // a file open in the mount keeps its key and inode while open: retried later;
        // on shared storage so is a file open on any host (the lock is held until
        // `old` is closed, after the swap)
        let known = self.inodes.find_and_ref((meta.dev(), meta.ino()));
        let slot = known.as_ref().map(|i| i.enc.lock());
        let open_elsewhere =
            self.shared && !ofd::set(old.as_fd(), Kind::Write, sharedlock::OPEN, 1, false).map_err(failed)?;
        let busy = open_elsewhere || slot.as_ref().is_some_and(|s| s.upgrade().is_some());
        let result = if busy {
            Err(JobError::Busy)
        } else {
            self.copy_reencrypted(root, &old, meta, t, zone, version, stop)
        };
        if let Ok(Copied::Swapped { .. }) = result {
            // under the header lock: no open of the old inode can start after the swap
            self.mark_replaced((meta.dev(), meta.ino()));
        }
        drop(slot);
        drop(_g);
        if let Some(i) = known {
            self.inodes.forget(i.id, 1);
        }
        match result? {
            Copied::Skipped(outcome) => Ok(outcome),
            Copied::Swapped { dir, name, new } => {
                seen.insert(new);
                // only once no lock is held: the kernel may need a lookup answered (by
                // a request that takes those locks) before it can drop the name
                self.invalidate_name(dir, &name);
                Ok(Outcome::Done)
            }
        }
    }

    /// Copies `old` re-encrypted into a new file in the directory where it is found,
    /// then swaps the new file in under the name `old` has by then.
    #[allow(clippy::too_many_arguments)]
    fn copy_reencrypted(
        &self,
        root: &Root,
        old: &File,
        meta: &std::fs::Metadata,
        t: &Target,
        zone: &Zone,
        version: u32,
        stop: &AtomicBool,
    ) -> Result<Copied, JobError> {
        let h = read_header(old)?;
        check_belongs(&h, zone)?;
        if h.key_version == version {
            return Ok(Copied::Skipped(Outcome::Current));
        }
        let size =
            plain_size(meta.len()).map_err(|_| failed("backing size is not a valid encrypted size"))?;
        let old_codec = BlockCodec::new(&unwrap_dek(&*self.keys, &h)?, h.file_id);
        let dek = Key::random();
        let file_id = crate::crypto::random_bytes::<16>();
        let header = wrapped_header(&*self.keys, zone, version, file_id, &dek)?;
        let codec = BlockCodec::new(&dek, file_id);

        // the temporary file goes into the directory the file is in now, held open:
        // renames of it during the copy do not matter
        let place = {
            let _gate = self.rename_gate.read();
            self.locate(root, old, meta, t)
        };
        let Some(Place { dir: tmp_dir, .. }) = place else {
            return Ok(Copied::Skipped(Outcome::Gone));
        };
        let tmp_name: OsString = format!(
            "{}{}",
            crate::zone::REKEY_TEMP_PREFIX,
            hex(&crate::crypto::random_bytes::<16>())
        )
        .into();
        let tmp = At::backing(tmp_dir.as_fd(), &tmp_name);
        let new = File::from(
            tmp.open(
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
            )
            .map_err(|e| failed(format!("cannot create a temporary file: {e}")))?,
        );
        let cleanup = |e: JobError| {
            let _ = tmp.unlink();
            e
        };
        (|| -> Result<(), JobError> {
            new.write_all_at(&header.encode(), 0).map_err(failed)?;
            let new_size = copy_blocks(old, &old_codec, size, &new, &codec, stop)?;
            codec
                .truncate(&new, new_size, size)
                .map_err(|e| failed(format!("{e:?}")))?;
            copy_metadata(old, &new, meta)?;
            new.sync_all().map_err(failed)
        })()
        .map_err(cleanup)?;
        let new = new.metadata().map_err(|e| cleanup(failed(e)))?;
        match self.swap_in(root, old, meta, t, (new.dev(), new.ino()), &tmp_dir, &tmp_name) {
            Ok(swapped @ Copied::Swapped { .. }) => Ok(swapped),
            // the new file was not swapped in
            other => {
                let _ = tmp.unlink();
                other
            }
        }
    }

    /// Swaps the new file `new`, named `tmp_name` in `tmp_dir`, with `old` (of `meta`)
    /// wherever `old` is now inside the zone, and removes `old`; unless it says
    /// `Swapped`, the new file is left at `tmp_name`. Renames in the mount wait
    /// meanwhile: a file renamed over and over during its copy is still swapped at the
    /// name it has. A rename from outside the mount just before the exchange is caught
    /// after it, and the exchange undone; if undoing fails, the job stops (a fatal
    /// error names what is where).
    #[allow(clippy::too_many_arguments)]
    fn swap_in(
        &self,
        root: &Root,
        old: &File,
        meta: &std::fs::Metadata,
        t: &Target,
        new: (u64, u64),
        tmp_dir: &OwnedFd,
        tmp_name: &OsStr,
    ) -> Result<Copied, JobError> {
        let gate = self.rename_gate.write();
        if !self.still_inside(root, tmp_dir.as_fd()) {
            return Ok(Copied::Skipped(Outcome::Gone));
        }
        let Some(at) = self.locate(root, old, meta, t) else {
            return Ok(Copied::Skipped(Outcome::Gone));
        };
        let tmp = At::backing(tmp_dir.as_fd(), tmp_name);
        let exchange = || tmp.rename_to(&At::backing(at.dir.as_fd(), &at.name), libc::RENAME_EXCHANGE);
        match exchange() {
            Ok(()) => {}
            // renamed from outside the mount just now: met again under its new name
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Copied::Skipped(Outcome::Gone)),
            Err(e) => return Err(failed(format!("cannot swap in the new file: {e}"))),
        }
        let swapped_old = tmp.stat().is_ok_and(|st| st.st_ino == meta.ino());
        if !swapped_old {
            // the name held another file by then: put it back
            if let Err(e) = exchange() {
                return Err(JobError::Fatal(format!(
                    "a file was renamed into {:?} as the re-encrypted copy was swapped in, and swapping \
                     back failed ({e}): the re-encrypted copy is at that name and the other file at {:?} \
                     in the same directory",
                    at.name, tmp_name
                )));
            }
            return Ok(Copied::Skipped(Outcome::Gone));
        }
        drop(gate);
        if let Err(e) = tmp.unlink() {
            // the next walk of the zone removes it
            log::warn!("cannot remove the replaced file {tmp_name:?}: {e}");
        }
        let dir = sys::stat_at(at.dir.as_fd(), OsStr::new("")).map(|st| st_key(&st));
        let tmp = sys::stat_at(tmp_dir.as_fd(), OsStr::new("")).map(|st| st_key(&st));
        // one directory in the common case: one fsync of it
        let _ = crate::backdir::resolve::sync_dir(at.dir.as_fd());
        if dir.as_ref().ok() != tmp.as_ref().ok() {
            let _ = crate::backdir::resolve::sync_dir(tmp_dir.as_fd());
        }
        Ok(Copied::Swapped {
            dir: dir.unwrap_or_default(),
            name: at.name,
            new,
        })
    }

    /// The kernel may still know the replaced inode: opening it gives ESTALE from now
    /// on, so the kernel looks the name up again. Looked up after the swap, so a
    /// lookup that raced with the copy is caught too.
    fn mark_replaced(&self, old: (u64, u64)) {
        if let Some(i) = self.inodes.find_and_ref(old) {
            i.stale.store(true, Ordering::Release);
            self.inodes.forget(i.id, 1);
        }
    }

    /// Tells the kernel to drop its cached entry `name` in directory `dir` (backing
    /// inode): it names a new file now.
    fn invalidate_name(&self, dir: (u64, u64), name: &OsStr) {
        if let Some(parent) = self.inodes.find_and_ref(dir) {
            if let Some(n) = self.invalidate.get() {
                n.entry(parent.id, name);
            }
            self.inodes.forget(parent.id, 1);
        }
    }
}

/// Where the next data of backing file `f` at or after `off` is (`SEEK_DATA`); `None`
/// when only holes follow. A filesystem without the call reports everything as data.
fn next_data(f: &File, off: u64) -> Option<u64> {
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return (e.raw_os_error() != Some(libc::ENXIO)).then_some(off);
    }
    Some(r as u64)
}

/// The first data block whose ciphertext or metadata entry lies at or after backing
/// offset `off` (a metadata block stands for its group's first block).
fn block_at_or_after(off: u64) -> u64 {
    let rest = off.saturating_sub(layout::HEADER_LEN);
    let (group, within) = (rest / layout::GROUP_SPAN, rest % layout::GROUP_SPAN);
    group * layout::GROUP_BLOCKS + within.saturating_sub(layout::BLOCK) / layout::BLOCK
}

/// Re-seals the plaintext of `old` (`size` bytes, under `old_codec`) into `new` under
/// `codec`; returns the size written. Holes of the backing file are skipped without
/// being read (`SEEK_DATA`), and all-zero blocks stay holes, so a sparse file costs
/// what it holds, not its size. Checks `stop` between steps.
fn copy_blocks(
    old: &File,
    old_codec: &BlockCodec,
    size: u64,
    new: &File,
    codec: &BlockCodec,
    stop: &AtomicBool,
) -> Result<u64, JobError> {
    const STEP: u64 = 1 << 20;
    let blk = layout::BLOCK as usize;
    let mut buf = vec![0u8; STEP as usize];
    let mut new_size = 0;
    let mut off = 0;
    while off < size {
        if stop.load(Ordering::Acquire) {
            return Err(JobError::Stopped);
        }
        // from the start of the group holding `off`: its metadata block tells
        let group_start = off / layout::BLOCK / layout::GROUP_BLOCKS;
        let Some(data) = next_data(old, layout::meta_offset(group_start)) else {
            break;
        };
        off = off.max(block_at_or_after(data) * layout::BLOCK);
        if off >= size {
            break;
        }
        let n = (size - off).min(STEP) as usize;
        old_codec
            .read(old, size, off, &mut buf[..n])
            .map_err(|e| match e {
                crate::format::CodecError::Corrupt { block } => failed(format!(
                    "block {block} fails authentication; left as it was (see ezfs fsck)"
                )),
                crate::format::CodecError::Io(e) => failed(e),
            })?;
        // all-zero blocks stay holes: only runs of blocks holding data are written
        let zero = |j: usize| buf[j..(j + blk).min(n)].iter().all(|&b| b == 0);
        let mut i = 0;
        while i < n {
            if zero(i) {
                i += blk;
                continue;
            }
            let mut j = i;
            while j < n && !zero(j) {
                j += blk;
            }
            let j = j.min(n);
            new_size = codec
                .write(new, new_size, off + i as u64, &buf[i..j])
                .map_err(|e| failed(format!("{e:?}")))?;
            i = j;
        }
        off += n as u64;
    }
    Ok(new_size)
}

/// Mode, owner, times and extended attributes of `old` onto `new` (both open files).
fn copy_metadata(old: &File, new: &File, meta: &std::fs::Metadata) -> Result<(), JobError> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = sys::listxattr(old.as_fd(), &mut buf).unwrap_or(0);
    let names: Vec<CString> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| CString::new(s).ok())
        .collect();
    let mut val = vec![0u8; 64 * 1024];
    for name in names {
        if let Ok(len) = sys::getxattr(old.as_fd(), &name, &mut val) {
            sys::setxattr(new.as_fd(), &name, &val[..len], 0).map_err(failed)?;
        }
    }
    sys::chown(new.as_fd(), meta.uid(), meta.gid()).map_err(failed)?;
    sys::chmod_fd(new, meta.mode() & 0o7777).map_err(failed)?;
    let ts = |s: i64, ns: i64| libc::timespec {
        tv_sec: s,
        tv_nsec: ns,
    };
    sys::utimens(
        new.as_fd(),
        Some(Some(ts(meta.atime(), meta.atime_nsec()))),
        Some(Some(ts(meta.mtime(), meta.mtime_nsec()))),
    )
    .map_err(failed)
}

const _: () = assert!(layout::HEADER_LEN as usize >= SECTOR);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_offsets_map_to_blocks() {
        assert_eq!(block_at_or_after(0), 0);
        assert_eq!(block_at_or_after(layout::meta_offset(0)), 0);
        assert_eq!(block_at_or_after(layout::data_offset(5)), 5);
        assert_eq!(block_at_or_after(layout::data_offset(5) + 1), 5);
        assert_eq!(
            block_at_or_after(layout::meta_offset(3)),
            3 * layout::GROUP_BLOCKS
        );
        assert_eq!(block_at_or_after(layout::data_offset(300)), 300);
    }
}
