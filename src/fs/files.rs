//! Operations on file contents and attributes: open, create, read, write, sync,
//! allocate, setattr. A regular file in a zone goes through [`EncFile`] (header,
//! DEK, block codec), only for the key's users; any other file passes through, and
//! an encrypted file found outside every zone is refused rather than served as
//! plaintext.

use super::core::{Core, Handle};
use super::encfile::EncFile;
use super::error::{errno, FsError, FsResult};
use super::inode::{Inode, ROOT};
use super::names::Use;
use super::types::{Allocate, Attr, Opened, SetAttr};
use super::{atime, root_mode, stats, writebehind};
use crate::backdir::{sys, Caller};
use crate::format::Backing;
use crate::zone::Zone;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Core {
    /// The shared encrypted-file state of `ino`, opening it if no handle has.
    fn enc_file(&self, ino: &Inode) -> FsResult<Arc<EncFile>> {
        let _header = self.header_lock(ino.key.1).read();
        let mut slot = ino.enc.lock();
        if let Some(e) = slot.upgrade() {
            return Ok(e);
        }
        if ino.stale.load(Ordering::Acquire) {
            // re-encrypted into a new file under the same name: the kernel looks again
            return Err(errno::ESTALE);
        }
        let zone = ino.zone().ok_or(errno::EIO)?;
        let e = Arc::new(EncFile::open(
            ino.fd()?.as_fd(),
            &zone,
            &*self.keys,
            !self.read_only,
            self.sharing(),
        )?);
        *slot = Arc::downgrade(&e);
        Ok(e)
    }

    /// The handle for a file `create` just opened read-write as `file`.
    fn created_handle(&self, ino: &Inode, file: File, flags: i32) -> FsResult<Handle> {
        let Some(zone) = ino.zone() else {
            return Ok(Handle::plain(file));
        };
        let mut slot = ino.enc.lock();
        let enc = match slot.upgrade() {
            Some(e) => e,
            None => {
                let e = Arc::new(EncFile::from_file(
                    file,
                    &zone,
                    &*self.keys,
                    true,
                    self.sharing(),
                )?);
                *slot = Arc::downgrade(&e);
                e
            }
        };
        drop(slot);
        if flags & libc::O_TRUNC != 0 {
            enc.truncate(0)?;
        }
        Ok(Handle::enc(enc))
    }

    fn is_encrypted(ino: &Inode, st_mode: u32) -> bool {
        st_mode & libc::S_IFMT == libc::S_IFREG && ino.zone.read().is_some()
    }

    /// Key users (`ezfs key grant`): the caller may open files of a zone only if its
    /// key lets it; root and the key's owner always may. The key is the zone's, which
    /// is the key of every file the zone serves (a file whose header names another is
    /// refused: see [`EncFile::open`]). A key the keystore does not know lets no one but
    /// root in (root then gets EIO, with a log line, when the file is opened).
    pub(super) fn check_key_user(&self, caller: &Caller, zone: Option<&Zone>) -> FsResult<()> {
        let Some(zone) = zone.filter(|z| z.broken.is_none()) else {
            return Ok(());
        };
        if caller.is_root() {
            return Ok(());
        }
        if self
            .keys
            .may_use(&zone.key, caller.uid, caller.gid, &|| caller.groups())
            .unwrap_or(false)
        {
            return Ok(());
        }
        log::info!("uid {} may not use key {}: access denied", caller.uid, zone.key);
        Err(errno::EACCES)
    }

    /// OPEN of node `ino` with `flags` (`O_*`).
    pub fn open(&self, caller: &Caller, ino: u64, flags: i32) -> FsResult<Opened> {
        // a KMS unwrap this open makes is audited as the caller's
        let _audit = crate::keys::audit::acting_for(caller.uid, caller.pid);
        let i = self.inode(ino)?;
        let st = self.stat(&i)?;
        let h = self.open_backing(caller, &i, flags, &st)?;
        // an O_TRUNC open (sent only with atomic_o_trunc) just truncated the file
        let truncated = flags & libc::O_TRUNC != 0;
        // shared storage: another host may have written the file since (close-to-open)
        let keep_cache = i.unchanged_since_open(&st) && !truncated && !self.shared;
        i.open_count.fetch_add(1, Ordering::AcqRel);
        Ok(Opened {
            fh: self.add_handle(h),
            keep_cache,
        })
    }

    fn open_backing(&self, caller: &Caller, ino: &Inode, flags: i32, st: &libc::stat) -> FsResult<Handle> {
        let wants_write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if wants_write {
            self.writable_check()?;
        }
        if Self::is_encrypted(ino, st.st_mode) {
            self.check_key_user(caller, ino.zone().as_deref())?;
            let enc = self.enc_file(ino)?;
            if flags & libc::O_TRUNC != 0 && wants_write {
                enc.truncate(0)?;
            }
            return Ok(Handle::enc(enc));
        }
        // The kernel computes append offsets itself and, with the writeback cache, reads
        // pages of files opened write-only: the backing file is opened read-write.
        let strip = libc::O_APPEND
            | libc::O_DIRECT
            | libc::O_CREAT
            | libc::O_EXCL
            | libc::O_NOCTTY
            | libc::O_NOFOLLOW;
        let mut flags = flags & !strip;
        if self.writeback && flags & libc::O_ACCMODE == libc::O_WRONLY {
            flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR;
        }
        // passthrough: the kernel uses the first open's backing file for every later
        // open of the inode, so it is opened read-write where it can be
        // (and without O_NOATIME: the kernel reads it directly, so the backing file
        // system's own atime rules apply)
        let fd = ino.fd()?;
        let f = match self.passthrough && st.st_mode & libc::S_IFMT == libc::S_IFREG {
            true => sys::reopen(fd.as_fd(), (flags & !libc::O_ACCMODE) | libc::O_RDWR)
                .or_else(|_| sys::reopen(fd.as_fd(), flags)),
            false => sys::reopen_noatime(fd.as_fd(), flags),
        }?;
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            self.refuse_ciphertext(ino, st)?;
        }
        Ok(Handle::plain(f))
    }

    /// The backing file of the plain regular-file handle `fh`, for FUSE passthrough
    /// (`None` for any other handle, or when the mount does not pass through).
    pub fn passthrough_file<R>(&self, fh: u64, f: impl FnOnce(&File) -> R) -> Option<R> {
        if !self.passthrough {
            return None;
        }
        let h = self.handle(fh).ok()?;
        match &*h {
            Handle::Plain(file, ..) if file.metadata().is_ok_and(|m| m.is_file()) => Some(f(file)),
            _ => None,
        }
    }

    /// An encrypted file outside every zone (copied there in the backing dir, or left
    /// by a zone whose registration was lost) is not served as plaintext: its bytes
    /// are ciphertext, and writes would corrupt it. EIO, with a log line.
    fn refuse_ciphertext(&self, ino: &Inode, st: &libc::stat) -> FsResult<()> {
        if (st.st_size as u64) < crate::format::layout::HEADER_LEN {
            return Ok(());
        }
        let f = sys::reopen(ino.fd()?.as_fd(), libc::O_RDONLY | libc::O_NONBLOCK)?;
        let mut magic = [0u8; 8];
        if Backing::read_at(&f, &mut magic, 0)? == magic.len() && &magic == crate::format::header::MAGIC {
            log::error!(
                "{}: an encrypted file outside every encryption zone; not served as plaintext (EIO). \
                 See 'ezfs fsck'",
                Core::describe(ino)
            );
            return Err(errno::EIO);
        }
        Ok(())
    }

    /// CREATE: makes `name` in `parent` and opens it, read-write, keeping the
    /// descriptor (no second open of the new file).
    pub fn create(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> FsResult<(Attr, Opened)> {
        let p = self.parent_for_new(parent)?;
        let pfd = p.fd()?;
        let at = self.at(&p, &pfd, name, Use::New)?;
        let _gate = self.zone_gate.read();
        self.check_key_user(caller, p.zone().as_deref())?;
        let encrypted = p.zone().is_some();
        let keep = libc::O_EXCL | if encrypted { 0 } else { libc::O_TRUNC };
        let f = sys::with_umask(umask, |own| {
            let how = libc::O_CREAT | libc::O_RDWR | libc::O_NOFOLLOW | (flags & keep);
            let mode = (if own { mode } else { mode & !umask }) & 0o7777;
            // O_NOATIME where allowed: the mount decides access times
            match at.open(how | libc::O_NOATIME, mode) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => at.open(how, mode),
                other => other,
            }
        })?;
        let (ino, _) = self.created(caller, &p, &at)?;
        let h = match self.created_handle(&ino, File::from(f), flags) {
            Ok(h) => h,
            Err(e) => {
                self.inodes.forget(ino.id, 1);
                return Err(e);
            }
        };
        let attr = self.getattr_of(&ino)?;
        ino.open_count.fetch_add(1, Ordering::AcqRel);
        let opened = Opened {
            fh: self.add_handle(h),
            keep_cache: false,
        };
        Ok((attr, opened))
    }

    /// READ of up to `buf.len()` bytes at `offset` through handle `fh`; how many.
    pub fn read(&self, fh: u64, offset: u64, buf: &mut [u8]) -> FsResult<usize> {
        let h = self.handle(fh)?;
        let policy = self.atime.files;
        let n = match &*h {
            Handle::Enc(e, checked) => {
                let n = e.read_into(offset, buf);
                atime::file_read(policy, e.file(), checked);
                n
            }
            Handle::Plain(f, _, checked) => {
                if self.refetch {
                    // another host's writes, not this client's old pages
                    sys::drop_cached(f, offset, buf.len() as u64);
                }
                let n = Backing::read_at(f, buf, offset).map_err(FsError::from);
                atime::file_read(policy, f, checked);
                n
            }
            Handle::Dir(_) => Err(errno::EISDIR),
        };
        match &n {
            Ok(n) => stats::read(*n),
            Err(e) if e.is(libc::EIO) => stats::eio(),
            Err(_) => {}
        }
        n
    }

    /// WRITE of `data` at `offset` through handle `fh` of node `ino`; with
    /// `kill_suidgid` (an unprivileged writer) set-id bits are cleared first.
    ///
    /// On shared storage a write through a handle opened with `O_APPEND` (`append`)
    /// goes to the end of the file as the backing file has it: the kernel's end may
    /// be behind another host's appends.
    pub fn write(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill_suidgid: bool,
        append: bool,
    ) -> FsResult<usize> {
        let h = self.handle(fh)?;
        if kill_suidgid {
            self.kill_suidgid(&*self.inode(ino)?)?;
        }
        let append = append && self.shared;
        match &*h {
            Handle::Enc(e, _) if append => drop(e.append(data)?),
            Handle::Enc(e, _) => e.write(offset, data)?,
            Handle::Plain(f, _, _) if append => append_plain(f, data)?,
            Handle::Plain(f, frontier, _) => {
                f.write_all_at(data, offset)?;
                if let Some(w) = frontier.advance(offset, offset + data.len() as u64) {
                    writebehind::start(f, w);
                }
            }
            Handle::Dir(_) => return Err(errno::EISDIR),
        }
        stats::written(data.len());
        Ok(data.len())
    }

    /// RELEASE of handle `fh` of node `ino`.
    pub fn release(&self, ino: u64, fh: u64) {
        self.remove_handle(fh);
        if let Some(i) = self.inodes.get(ino) {
            let _ = i
                .open_count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// FSYNC through handle `fh`.
    pub fn fsync(&self, fh: u64, datasync: bool) -> FsResult<()> {
        match &*self.handle(fh)? {
            Handle::Enc(e, _) => e.sync(datasync),
            Handle::Plain(f, _, _) => Ok(if datasync { f.sync_data() } else { f.sync_all() }?),
            Handle::Dir(_) => Ok(()),
        }
    }

    /// FALLOCATE through handle `fh`. In a zone, space is reserved (plain mode) or
    /// zeros are written (punch hole, zero range), so the result authenticates.
    pub fn fallocate(&self, fh: u64, a: Allocate) -> FsResult<()> {
        self.writable_check()?;
        let keep = a.mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        match &*self.handle(fh)? {
            Handle::Plain(f, _, _) => Ok(sys::fallocate(f, a.mode, a.offset, a.length)?),
            Handle::Enc(e, _) => match a.mode & !libc::FALLOC_FL_KEEP_SIZE {
                0 => e.allocate(a.offset, a.length, keep),
                libc::FALLOC_FL_PUNCH_HOLE if keep => e.zero_range(a.offset, a.length, true),
                libc::FALLOC_FL_ZERO_RANGE => e.zero_range(a.offset, a.length, keep),
                _ => Err(errno::EOPNOTSUPP),
            },
            Handle::Dir(_) => Err(errno::EISDIR),
        }
    }

    /// SETATTR of node `ino`: mode, owner, size, times, in that order.
    pub fn setattr(&self, caller: &Caller, ino: u64, s: &SetAttr) -> FsResult<Attr> {
        let i = self.inode(ino)?;
        let changes_meta =
            s.mode.is_some() || s.uid.is_some() || s.gid.is_some() || s.atime.is_some() || s.mtime.is_some();
        if changes_meta {
            self.writable_check()?;
        }
        if let Some(mode) = s.mode {
            if i.id == ROOT {
                // recorded for the mount, the backing root untouched
                root_mode::store(&self.backing, mode & 0o7777)?;
                self.root_mode.store(mode & 0o7777, Ordering::Relaxed);
            } else {
                sys::chmod(i.fd()?.as_fd(), mode & 0o7777)?;
            }
        }
        if s.uid.is_some() || s.gid.is_some() {
            sys::chown(
                i.fd()?.as_fd(),
                s.uid.unwrap_or(u32::MAX),
                s.gid.unwrap_or(u32::MAX),
            )?;
        }
        if let Some(size) = s.size {
            self.set_size(caller, &i, size)?;
            // what the kernel does for a truncate by an unprivileged user
            if caller.uid != 0 && s.mode.is_none() {
                self.kill_suidgid(&i)?;
            }
        }
        if s.atime.is_some() || s.mtime.is_some() {
            sys::utimens(
                i.fd()?.as_fd(),
                s.atime.map(|t| t.timespec()),
                s.mtime.map(|t| t.timespec()),
            )?;
        }
        self.getattr_of(&i)
    }

    fn set_size(&self, caller: &Caller, ino: &Inode, size: u64) -> FsResult<()> {
        self.writable_check()?;
        let st = self.stat(ino)?;
        if Self::is_encrypted(ino, st.st_mode) {
            self.check_key_user(caller, ino.zone().as_deref())?;
            self.enc_file(ino)?.truncate(size)
        } else {
            Ok(sys::reopen(ino.fd()?.as_fd(), libc::O_WRONLY).and_then(|f| f.set_len(size))?)
        }
    }

    /// Clears set-user-id, and set-group-id when group-executable, as the kernel does
    /// when an unprivileged user writes or truncates a file (the adapter asks the
    /// kernel to leave this to us: FUSE_HANDLE_KILLPRIV_V2).
    fn kill_suidgid(&self, i: &Inode) -> FsResult<()> {
        let st = self.stat(i)?;
        let mut kill = libc::S_ISUID;
        if st.st_mode & libc::S_IXGRP != 0 {
            kill |= libc::S_ISGID;
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & kill != 0 {
            sys::chmod(i.fd()?.as_fd(), st.st_mode & 0o7777 & !kill)?;
        }
        Ok(())
    }

    /// READLINK.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.link_target(&*self.inode(ino)?)
    }
}

/// Shared storage: appends `data` to the plain file `f` at its end on disk, which
/// another host may have moved: the end is found and written under an exclusive lock
/// of the daemon's lock range (see `sharedlock`), which every appender through
/// ezfs takes.
fn append_plain(f: &File, data: &[u8]) -> FsResult<()> {
    use crate::backdir::ofd::{self, Kind};
    let lock = sys::reopen(f.as_fd(), libc::O_RDWR)?;
    ofd::set(lock.as_fd(), Kind::Write, super::sharedlock::HEADER, 1, true)?;
    let end = sys::stat_fresh(f.as_fd())?.st_size as u64;
    f.write_all_at(data, end)?;
    // closing `lock` releases the lock
    Ok(())
}
