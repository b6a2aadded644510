//! Per-file steps of zone re-encryption, each crash-safe on its own:
//! - re-wrap: the DEK is unwrapped with the old key version and wrapped with the new
//!   one; only the header's first sector changes, in one write, so after a crash the
//!   file holds the old EDEK or the new one, never a mix (both versions stay in the
//!   keystore until `key prune`);
//! - re-encrypt (`--data`): a new DEK and file id, every block re-sealed into a new
//!   backing file next to the old one, synced, then swapped in by one rename; after a
//!   crash the old file is intact and at most a temporary file is left, which the
//!   next run removes.

use super::sys;
use super::Core;
use crate::crypto::Key;
use crate::format::header::read_header;
use crate::format::layout::{self, plain_size};
use crate::format::{BlockCodec, Header};
use crate::keys::KeyProvider;
use crate::zone::Zone;
use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
    /// It was renamed or deleted meanwhile.
    Gone,
    /// This job already handled it (under another name).
    Seen,
}

fn unwrap_dek(keys: &dyn KeyProvider, h: &Header) -> Result<Key, String> {
    keys.unwrap(&h.key_name, h.key_version, &h.own_aad(), &h.edek)
        .map_err(|e| e.to_string())
}

fn wrapped_header(
    keys: &dyn KeyProvider,
    zone: &Zone,
    version: u32,
    file_id: [u8; 16],
    dek: &Key,
) -> Result<Header, String> {
    let aad = Header::aad(&file_id, &zone.id, &zone.key, version);
    let edek = keys
        .wrap(&zone.key, version, &aad, dek)
        .map_err(|e| e.to_string())?;
    Ok(Header {
        file_id,
        zone_id: zone.id,
        key_name: zone.key.clone(),
        key_version: version,
        edek,
    })
}

/// What [`Core::copy_reencrypted`] did.
enum Copied {
    /// Nothing (the file already used the target version, or went away).
    Skipped(Outcome),
    /// The re-encrypted copy replaced the file, at name `at`; `new` is its inode.
    Swapped { at: PathBuf, new: (u64, u64) },
}

/// A file a job works on: found at `path`, and, where the filesystem gives file
/// handles, reachable by its handle wherever a rename in the zone moves it meanwhile.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub handle: Option<Box<[u8]>>,
    /// Backing (device, inode) where it was found: it stays the file's id across renames.
    pub id: (u64, u64),
}

impl Core {
    /// Opens a target read-write and says where it is now; `None` if it is gone.
    /// Where the filesystem has no file handles, a file the mount knows is opened
    /// through its inode's descriptor, so renames in the mount since it was found do
    /// not lose it (files renamed thousands of times a second were, after 5 walks);
    /// only a file the mount never looked up is opened by its path.
    /// The path is `None` when the file's current name is not known for sure: a file
    /// opened by handle can come back with a dentry detached from the tree, whose
    /// `/proc` link is not a usable path.
    fn open_target(&self, t: &Target) -> Result<Option<(File, Option<PathBuf>)>, String> {
        let opened = match &t.handle {
            Some(h) => self.inodes.open_handle(h, libc::O_RDWR),
            None => self.inodes.open_known(t.id, libc::O_RDWR).unwrap_or_else(|| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&t.path)
            }),
        };
        let f = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let meta = f.metadata().map_err(|e| e.to_string())?;
        if meta.nlink() == 0 {
            // unlinked, though something still holds it open: gone for the zone
            return Ok(None);
        }
        let now = self
            .current_name(&f, &meta)
            .or_else(|| self.names(&t.path, &meta).then(|| t.path.clone()));
        Ok(Some((f, now)))
    }

    /// Whether `p` is in the backing dir and names the very file `meta` is of.
    fn names(&self, p: &Path, meta: &std::fs::Metadata) -> bool {
        p.starts_with(&self.backing)
            && std::fs::symlink_metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
    }

    /// The name open file `f` (of `meta`) has now, if its `/proc` link gives one.
    fn current_name(&self, f: &File, meta: &std::fs::Metadata) -> Option<PathBuf> {
        sys::path_of(f.as_fd()).ok().filter(|p| self.names(p, meta))
    }

    /// Brings target `t` (in `zone`) to `zone.key@version`: re-wraps its EDEK, or with
    /// `data` re-encrypts it under a new DEK. `seen` holds the backing inodes this job
    /// has handled, so a file met again under another name is not done or counted twice;
    /// a busy file is left out of it (to be retried) unless this is the `last` try.
    pub(super) fn rekey(
        &self,
        t: &Target,
        zone: &Zone,
        version: u32,
        data: bool,
        last: bool,
        seen: &mut HashSet<(u64, u64)>,
    ) -> Result<Outcome, String> {
        let Some((f, path)) = self.open_target(t)? else {
            return Ok(Outcome::Gone);
        };
        let meta = f.metadata().map_err(|e| e.to_string())?;
        let id = (meta.dev(), meta.ino());
        if seen.contains(&id) {
            return Ok(Outcome::Seen);
        }
        let result = if data {
            // renamed to where we cannot see it: the next walk finds it by its new name
            let Some(path) = &path else {
                return Ok(Outcome::Gone);
            };
            self.reencrypt_data(f, path, &meta, zone, version, seen)
        } else {
            self.rewrap(&f, &meta, zone, version)
        };
        match &result {
            Ok(Outcome::Gone) => {}
            Err(e) if e.starts_with("busy") && !last => {}
            _ => {
                seen.insert(id);
            }
        }
        result
    }

    /// Re-wraps the EDEK of file `f` with `zone.key@version`.
    fn rewrap(
        &self,
        f: &File,
        meta: &std::fs::Metadata,
        zone: &Zone,
        version: u32,
    ) -> Result<Outcome, String> {
        if meta.len() == 0 {
            return Ok(Outcome::Empty);
        }
        // an open in the mount reads the header under the same lock: it never sees a
        // half-written sector
        let _g = self.header_lock(meta.ino()).write();
        let h = read_header(f)?;
        if h.key_name == zone.key && h.key_version == version {
            return Ok(Outcome::Current);
        }
        let dek = unwrap_dek(&*self.keys, &h)?;
        let new = wrapped_header(&*self.keys, zone, version, h.file_id, &dek)?;
        f.write_all_at(&new.encode()[..SECTOR], 0)
            .map_err(|e| e.to_string())?;
        Ok(Outcome::Done)
    }

    /// Re-encrypts file `old`, found at `path` (in `zone`), under a new DEK wrapped with
    /// `zone.key@version`, unless it already uses that version: then its DEK was never
    /// wrapped by an older version (new file, or re-encrypted by an earlier run of this
    /// job). The replacement goes into `seen`.
    fn reencrypt_data(
        &self,
        old: File,
        path: &Path,
        meta: &std::fs::Metadata,
        zone: &Zone,
        version: u32,
        seen: &mut HashSet<(u64, u64)>,
    ) -> Result<Outcome, String> {
        if meta.len() == 0 {
            return Ok(Outcome::Empty);
        }
        if meta.nlink() > 1 {
            return Err(format!(
                "has {} hard links; re-encrypting its data would split them (copy it instead)",
                meta.nlink()
            ));
        }
        let _g = self.header_lock(meta.ino()).write();
        // a file open in the mount keeps its key and inode while open: retried later
        let known = self.inodes.find_and_ref((meta.dev(), meta.ino()));
        let slot = known.as_ref().map(|i| i.enc.lock());
        let busy = slot.as_ref().is_some_and(|s| s.upgrade().is_some());
        let result = if busy {
            Err("busy: open in the mount".to_string())
        } else {
            self.copy_reencrypted(path, &old, meta, zone, version)
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
            Copied::Swapped { at, new } => {
                seen.insert(new);
                // only once no lock is held: the kernel may need a lookup answered (by
                // a request that takes those locks) before it can drop the name
                if let (Some(dir), Some(name)) = (at.parent(), at.file_name()) {
                    self.invalidate_name(dir, name);
                }
                Ok(Outcome::Done)
            }
        }
    }

    /// Copies `old` (found at `path`) re-encrypted into a new file next to it, then
    /// swaps the new file in under the name `old` has by then.
    fn copy_reencrypted(
        &self,
        path: &Path,
        old: &File,
        meta: &std::fs::Metadata,
        zone: &Zone,
        version: u32,
    ) -> Result<Copied, String> {
        let h = read_header(old)?;
        if h.key_name == zone.key && h.key_version == version {
            return Ok(Copied::Skipped(Outcome::Current));
        }
        let size =
            plain_size(meta.len()).map_err(|_| "backing size is not a valid encrypted size".to_string())?;
        let old_codec = BlockCodec::new(&unwrap_dek(&*self.keys, &h)?, h.file_id);
        let dek = Key::random();
        let file_id = crate::crypto::random_bytes::<16>();
        let header = wrapped_header(&*self.keys, zone, version, file_id, &dek)?;
        let codec = BlockCodec::new(&dek, file_id);

        // the directory is held open: renames of it during the copy do not matter
        let dir = path.parent().ok_or("no parent directory")?;
        let tmp_dir = File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp_name: OsString = format!(
            "{}{}",
            crate::zone::REKEY_TEMP_PREFIX,
            crate::format::header::hex(&file_id)
        )
        .into();
        let new = File::from(
            sys::open_at(
                tmp_dir.as_fd(),
                &tmp_name,
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
            )
            .map_err(|e| format!("cannot create {}: {e}", dir.join(&tmp_name).display()))?,
        );
        let cleanup = |e: String| {
            let _ = sys::unlink_at(tmp_dir.as_fd(), &tmp_name, 0);
            e
        };
        (|| -> Result<(), String> {
            new.write_all_at(&header.encode(), 0).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 1 << 20];
            let mut new_size = 0;
            let mut off = 0;
            while off < size {
                let n = ((size - off) as usize).min(buf.len());
                old_codec
                    .read(old, size, off, &mut buf[..n])
                    .map_err(|e| match e {
                        crate::format::CodecError::Corrupt { block } => {
                            format!("block {block} fails authentication; left as it was (see ezfs fsck)")
                        }
                        crate::format::CodecError::Io(e) => e.to_string(),
                    })?;
                // all-zero blocks stay holes: only runs of blocks holding data are written
                let blk = layout::BLOCK as usize;
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
                        .write(&new, new_size, off + i as u64, &buf[i..j])
                        .map_err(|e| format!("{e:?}"))?;
                    i = j;
                }
                off += n as u64;
            }
            codec
                .truncate(&new, new_size, size)
                .map_err(|e| format!("{e:?}"))?;
            copy_metadata(old, &new, meta)?;
            new.sync_all().map_err(|e| e.to_string())
        })()
        .map_err(cleanup)?;
        let new = new.metadata().map_err(|e| cleanup(e.to_string()))?;
        match self.swap_in(old, meta, path, (new.dev(), new.ino()), &tmp_dir, &tmp_name) {
            Ok(swapped @ Copied::Swapped { .. }) => Ok(swapped),
            // the new file was not swapped in
            other => {
                let _ = sys::unlink_at(tmp_dir.as_fd(), &tmp_name, 0);
                other
            }
        }
    }

    /// Swaps the new file `new`, named `tmp_name` in `tmp_dir`, with `old` (of `meta`,
    /// found at `path`) wherever `old` is now, and removes `old`; unless it says
    /// `Swapped`, the new file is left at `tmp_name`. Renames in the mount wait
    /// meanwhile: a file renamed over and over during its copy is still swapped at the
    /// name it has (it was missed round after round when the swap went to the name it
    /// had before the copy). A rename from outside the mount is caught after the swap,
    /// which is then undone.
    fn swap_in(
        &self,
        old: &File,
        meta: &std::fs::Metadata,
        path: &Path,
        new: (u64, u64),
        tmp_dir: &File,
        tmp_name: &OsStr,
    ) -> Result<Copied, String> {
        let gate = self.rename_gate.write();
        // unlinked, or renamed to where its link does not show (a file opened by
        // handle may have no connected name): the job meets it again
        let at = self
            .current_name(old, meta)
            .or_else(|| self.names(path, meta).then(|| path.to_path_buf()));
        let Some(at) = at else {
            return Ok(Copied::Skipped(Outcome::Gone));
        };
        let at_dir = at
            .parent()
            .and_then(|d| File::open(d).ok())
            .ok_or_else(|| format!("cannot open the directory of {}", at.display()))?;
        let name = at.file_name().ok_or("no file name")?;
        let exchange = || {
            sys::rename_at(
                tmp_dir.as_fd(),
                tmp_name,
                at_dir.as_fd(),
                name,
                libc::RENAME_EXCHANGE,
            )
        };
        match exchange() {
            Ok(()) => {}
            // renamed from outside the mount just now: met again under its new name
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Copied::Skipped(Outcome::Gone)),
            Err(e) => return Err(format!("cannot swap in the new file: {e}")),
        }
        let swapped_old = sys::stat_at(tmp_dir.as_fd(), tmp_name).is_ok_and(|st| st.st_ino == meta.ino());
        if !swapped_old {
            // the name held another file by then: put it back
            let _ = exchange();
            return Ok(Copied::Skipped(Outcome::Gone));
        }
        drop(gate);
        if let Err(e) = sys::unlink_at(tmp_dir.as_fd(), tmp_name, 0) {
            // the next walk of the zone removes it
            log::warn!("cannot remove the replaced file {:?}: {e}", tmp_name);
        }
        // one directory in the common case: one fsync of it
        let _ = at_dir.sync_all();
        let same_dir = match (tmp_dir.metadata(), at_dir.metadata()) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        };
        if !same_dir {
            let _ = tmp_dir.sync_all();
        }
        Ok(Copied::Swapped { at, new })
    }

    /// The kernel may still know the replaced inode: opening it gives ESTALE from now
    /// on, so the kernel looks the name up again. Looked up after the swap, so a
    /// lookup that raced with the copy is caught too.
    fn mark_replaced(&self, old: (u64, u64)) {
        if let Some(i) = self.inodes.find_and_ref(old) {
            i.stale.store(true, std::sync::atomic::Ordering::Release);
            self.inodes.forget(i.id, 1);
        }
    }

    /// Tells the kernel to drop its cached entry `dir/name` (it names a new file now).
    fn invalidate_name(&self, dir: &Path, name: &OsStr) {
        let Ok(dm) = std::fs::metadata(dir) else { return };
        if let Some(parent) = self.inodes.find_and_ref((dm.dev(), dm.ino())) {
            if let Some(n) = self.notifier.get() {
                let _ = n.inval_entry(fuser::INodeNo(parent.id), name);
            }
            self.inodes.forget(parent.id, 1);
        }
    }
}

/// Mode, owner, times and extended attributes of `old` onto `new`.
fn copy_metadata(old: &File, new: &File, meta: &std::fs::Metadata) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
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
            sys::setxattr(new.as_fd(), &name, &val[..len], 0).map_err(e)?;
        }
    }
    sys::chown(new.as_fd(), meta.uid(), meta.gid()).map_err(e)?;
    sys::chmod(new.as_fd(), meta.mode() & 0o7777).map_err(e)?;
    let ts = |s: i64, ns: i64| libc::timespec {
        tv_sec: s,
        tv_nsec: ns,
    };
    sys::utimens(
        new.as_fd(),
        Some(Some(ts(meta.atime(), meta.atime_nsec()))),
        Some(Some(ts(meta.mtime(), meta.mtime_nsec()))),
    )
    .map_err(e)
}

const _: () = assert!(layout::HEADER_LEN as usize >= SECTOR);
