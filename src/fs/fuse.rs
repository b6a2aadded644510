//! The FUSE adapter: translation only. Each fuser method turns its arguments into the
//! core's, calls one core operation, and turns `Result<T, FsError>` into a reply; the
//! only decisions here are about the protocol (capabilities asked at init, what to
//! cache for how long, FLUSH not needed, the backing ids of plain files the kernel
//! serves itself with `--passthrough`). This is the one module of `fs` that sees
//! fuser.

use super::applocks::LockRange;
use super::core::{Core, Invalidate};
use super::error::FsError;
use super::types::{Allocate, Attr, FileKind, SetAttr, SetTime};
use crate::backdir::Caller;
use fuser::BackingId;
use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

thread_local! {
    /// A per-thread read buffer: no allocation or zeroing per request.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The object handed to fuser: the core, and the kernel's handles of plain files
/// opened with FUSE passthrough.
pub struct EzFs(pub Arc<Core>, Passthrough);

impl EzFs {
    /// The adapter of `core`.
    pub fn new(core: Arc<Core>) -> EzFs {
        EzFs(core, Passthrough::default())
    }
}

/// FUSE passthrough of plain files (`Core::passthrough`): the kernel wants one backing
/// id per inode, shared by all its open handles, until the last is released.
#[derive(Default)]
struct Passthrough {
    /// Whether the kernel agreed at init.
    on: std::sync::atomic::AtomicBool,
    /// Logged once: the kernel refused a backing file (it then takes the usual path).
    refused: std::sync::OnceLock<()>,
    /// Node id to its backing id and the number of handles using it.
    ids: Mutex<HashMap<u64, (Arc<BackingId>, usize)>>,
    /// Handles opened with passthrough, to their node id.
    handles: Mutex<HashMap<u64, u64>>,
}

impl Passthrough {
    /// The backing id for handle `fh` of node `ino`: the node's, or one made with
    /// `open` from the handle's backing file; `None` if the handle cannot pass through.
    fn acquire(
        &self,
        core: &Core,
        ino: u64,
        fh: u64,
        open: impl FnOnce(&std::fs::File) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if !self.on.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let mut ids = self.ids.lock();
        let id = match ids.get_mut(&ino) {
            Some((id, n)) => {
                *n += 1;
                id.clone()
            }
            None => match core.passthrough_file(fh, open)? {
                Ok(id) => {
                    let id = Arc::new(id);
                    ids.insert(ino, (id.clone(), 1));
                    id
                }
                Err(e) => {
                    self.refused.get_or_init(|| {
                        log::warn!("FUSE passthrough refused ({e}); plain files take the usual path")
                    });
                    return None;
                }
            },
        };
        self.handles.lock().insert(fh, ino);
        Some(id)
    }

    /// Handle `fh` is released: its node's backing id goes with the last handle.
    fn release(&self, fh: u64) {
        let Some(ino) = self.handles.lock().remove(&fh) else {
            return;
        };
        let mut ids = self.ids.lock();
        if let Some((_, n)) = ids.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                ids.remove(&ino);
            }
        }
    }
}

impl Invalidate for fuser::Notifier {
    fn entry(&self, parent: u64, name: &OsStr) {
        let _ = self.inval_entry(INodeNo(parent), name);
    }
}

impl EzFs {
    /// How files are opened when the kernel keeps no pages of them: on shared storage
    /// with direct I/O, so that every read and write reaches the daemon (which reads
    /// under a lock what other hosts wrote) without a GETATTR before each read to
    /// decide whether cached pages are still good, and writes to one file run in
    /// parallel (the daemon's byte-range locks order them).
    fn uncached(&self) -> FopenFlags {
        if self.0.shared {
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
        } else {
            FopenFlags::empty()
        }
    }
}

fn caller(req: &Request) -> Caller {
    Caller::new(req.uid(), req.gid(), req.pid())
}

fn errno(e: FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: UNIX_EPOCH,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(t),
    }
}

macro_rules! tri {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(errno(e)),
        }
    };
}

impl Filesystem for EzFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        if self.0.passthrough {
            // backing files on an ordinary file system (stack depth 1 above it)
            let on = config.set_max_stack_depth(1).is_ok()
                && config
                    .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                    .is_ok();
            if on {
                log::info!("plain files use FUSE passthrough (no writeback cache on this mount)");
            } else {
                log::warn!("the kernel offers no FUSE passthrough; plain files take the usual path");
            }
            self.1.on.store(on, std::sync::atomic::Ordering::Relaxed);
        }
        if self.0.shared {
            // Files are opened with direct I/O here (see `uncached`); DIRECT_IO_ALLOW_MMAP
            // keeps mmap working on them, through pages that AUTO_INVAL_DATA drops when
            // the file's size or mtime shows another host changed it. Applications'
            // locks go to the backing files, where other hosts see them.
            for flag in [
                fuser::InitFlags::FUSE_AUTO_INVAL_DATA,
                fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
                fuser::InitFlags::FUSE_POSIX_LOCKS,
                fuser::InitFlags::FUSE_FLOCK_LOCKS,
            ] {
                if config.add_capabilities(flag).is_err() {
                    log::warn!(
                        "the kernel does not offer {flag:?}: other hosts' changes or locks may be missed"
                    );
                }
            }
        }
        if self.0.writeback
            && config
                .add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            log::warn!("the kernel offers no writeback cache; small writes will be slower");
        }
        // HANDLE_KILLPRIV_V2: the core clears set-user/group-id bits on write and
        // truncate itself, which lets the kernel mark inodes "no security xattrs"
        // instead of asking for security.capability on every write(2).
        // EXPORT_SUPPORT: file handles survive cache eviction (see fs::export).
        for flag in [
            fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2,
            fuser::InitFlags::FUSE_DO_READDIRPLUS,
            fuser::InitFlags::FUSE_READDIRPLUS_AUTO,
            fuser::InitFlags::FUSE_PARALLEL_DIROPS,
            fuser::InitFlags::FUSE_EXPORT_SUPPORT,
        ] {
            let _ = config.add_capabilities(flag);
        }
        // POSIX ACLs where the kernel checks permissions (other users get in): it
        // enforces them and sends the creator's umask, which the backing filesystem
        // applies unless the directory has a default ACL (see sys::with_umask)
        if self.0.kernel_checks && config.add_capabilities(fuser::InitFlags::FUSE_POSIX_ACL).is_err() {
            log::warn!("the kernel offers no POSIX ACLs on FUSE; setfacl on the mount will fail");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let attr = tri!(reply, self.0.lookup(parent.0, name));
        reply.entry(&self.0.ttl, &file_attr(&attr), Generation(0));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.0.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let attr = tri!(reply, self.0.getattr(ino.0));
        reply.attr(&self.0.ttl, &file_attr(&attr));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let s = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
        };
        let attr = tri!(reply, self.0.setattr(&caller(req), ino.0, &s));
        reply.attr(&self.0.ttl, &file_attr(&attr));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = tri!(reply, self.0.readlink(ino.0));
        reply.data(&target);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let attr = tri!(
            reply,
            self.0.mknod(&caller(req), parent.0, name, mode, umask, rdev)
        );
        reply.entry(&self.0.ttl, &file_attr(&attr), Generation(0));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let attr = tri!(reply, self.0.mkdir(&caller(req), parent.0, name, mode, umask));
        reply.entry(&self.0.ttl, &file_attr(&attr), Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        tri!(reply, self.0.unlink(parent.0, name));
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        tri!(reply, self.0.rmdir(parent.0, name));
        reply.ok();
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let attr = tri!(reply, self.0.symlink(&caller(req), parent.0, link_name, target));
        reply.entry(&self.0.ttl, &file_attr(&attr), Generation(0));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        tri!(
            reply,
            self.0.rename(parent.0, name, newparent.0, newname, flags.bits())
        );
        reply.ok();
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let attr = tri!(reply, self.0.link(ino.0, newparent.0, newname));
        reply.entry(&self.0.ttl, &file_attr(&attr), Generation(0));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let o = tri!(reply, self.0.open(&caller(req), ino.0, flags.0));
        let flags = if o.keep_cache {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            self.uncached()
        };
        match self.1.acquire(&self.0, ino.0, o.fh, |f| reply.open_backing(f)) {
            // no KEEP_CACHE: a passthrough file has no page cache of its own, and the
            // kernel (6.18 here) fails such an open with EIO
            Some(id) => reply.opened_passthrough(FileHandle(o.fh), FopenFlags::empty(), &id),
            None => reply.opened(FileHandle(o.fh), flags),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // page-aligned, so that the kernel copies a 4 KiB block in and out of one
        // page, not two
        READ_BUF.with_borrow_mut(|buf| {
            let buf = crate::format::codec::aligned(buf, size as usize);
            let n = tri!(reply, self.0.read(fh.0, offset, buf));
            reply.data(&buf[..n])
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let append = flags.0 & libc::O_APPEND != 0;
        let n = tri!(reply, self.0.write(ino.0, fh.0, offset, data, kill, append));
        reply.written(n as u32);
    }

    fn flush(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        if self.0.shared {
            // a close by a lock owner ends its forwarded POSIX locks of the file
            self.0.drop_locks(ino.0, lock_owner.0);
            return reply.ok();
        }
        // Nothing to do at close, and ENOSYS tells the kernel so: it stops sending
        // FLUSH, saving a round trip per close(2), and still writes back the file's dirty
        // pages at close and reports their errors there.
        reply.error(Errno::ENOSYS);
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: fuser::ReplyLock,
    ) {
        let asked = LockRange { start, end, typ };
        match tri!(reply, self.0.getlk(ino.0, lock_owner.0, asked)) {
            // the holder is on another host or another owner here: no pid to give
            Some(l) => reply.locked(l.start, l.end, l.typ, 0),
            None => reply.locked(start, end, libc::F_UNLCK, pid),
        }
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let lock = LockRange { start, end, typ };
        let (core, pid) = (self.0.clone(), req.pid());
        let set = move || match core.setlk(ino.0, lock_owner.0, lock, sleep, pid) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        };
        if !sleep {
            return set();
        }
        // a wait must not hold one of the few request threads
        if let Err(e) = std::thread::Builder::new()
            .name("ezfs-lock-wait".into())
            .spawn(set)
        {
            log::error!("cannot start a thread to wait for a lock: {e}");
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(owner) = lock_owner.filter(|_| self.0.shared) {
            // the last close of a file that holds a flock
            self.0.drop_locks(ino.0, owner.0);
        }
        self.1.release(fh.0);
        self.0.release(ino.0, fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        tri!(reply, self.0.fsync(fh.0, datasync));
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = tri!(reply, self.0.opendir(ino.0));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let r = self.0.readdir(ino.0, fh.0, offset, &mut |e, next| {
            reply.add(INodeNo(e.ino), next, file_type(e.kind), &e.name)
        });
        tri!(reply, r);
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self
            .0
            .readdirplus(ino.0, fh.0, offset, &mut |e, next, attr, counted| {
                let ttl = if counted { self.0.ttl } else { Duration::ZERO };
                reply.add(
                    INodeNo(attr.ino),
                    next,
                    &e.name,
                    &ttl,
                    &file_attr(attr),
                    Generation(0),
                )
            });
        tri!(reply, r);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.0.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        tri!(reply, self.0.fsyncdir(ino.0));
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = tri!(reply, self.0.statfs());
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        tri!(reply, self.0.setxattr(&caller(req), ino.0, name, value, flags));
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let mut buf = vec![0u8; size as usize];
        let n = tri!(reply, self.0.getxattr(ino.0, name, &mut buf));
        if size == 0 {
            reply.size(n as u32);
        } else {
            reply.data(&buf[..n]);
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut buf = vec![0u8; size as usize];
        let n = tri!(reply, self.0.listxattr(ino.0, &mut buf));
        if size == 0 {
            reply.size(n as u32);
        } else {
            reply.data(&buf[..n]);
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        tri!(reply, self.0.removexattr(&caller(req), ino.0, name));
        reply.ok();
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        tri!(reply, self.0.access(ino.0, mask.bits()));
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (attr, o) = tri!(
            reply,
            self.0.create(&caller(req), parent.0, name, mode, umask, flags)
        );
        let (ttl, attr, fh) = (&self.0.ttl, &file_attr(&attr), FileHandle(o.fh));
        match self
            .1
            .acquire(&self.0, attr.ino.0, o.fh, |f| reply.open_backing(f))
        {
            Some(id) => reply.created_passthrough(ttl, attr, Generation(0), fh, FopenFlags::empty(), &id),
            None => reply.created(ttl, attr, Generation(0), fh, self.uncached()),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let a = Allocate { offset, length, mode };
        tri!(reply, self.0.fallocate(fh.0, a));
        reply.ok();
    }
}
