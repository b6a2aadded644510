//! The filesystem core: its state, and what every operation shares (nodes, handles,
//! attributes). The operations themselves are in `namespace`, `files`, `dirs` and
//! `xattrs`; the zone requests in `zones`, `zonereq` and `reencrypt`. None of them
//! sees fuser: requests come in as a [`Caller`](crate::backdir::Caller) and plain values, answers go out as
//! the types of `fs::types` or an [`FsError`].

use super::encfile::EncFile;
use super::error::{errno, FsError, FsResult};
use super::inode::{Inode, InodeFd, InodeTable, ROOT};
use super::types::{system_time, Attr, FileKind};
use super::{atime, jobs, reencrypt, root_mode, writebehind, zones};
use crate::backdir::sys;
use crate::format::layout::plain_size;
use crate::keys::ZoneKeys;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// One open file or directory.
pub(super) enum Handle {
    /// A file outside zones, how far it has been written since it was opened, and
    /// whether its access time was looked at (see [`atime`]).
    Plain(File, writebehind::Frontier, AtomicBool),
    Enc(Arc<EncFile>, AtomicBool),
    /// A directory's entries as listed when it was opened, or read again from its
    /// start (`rewinddir`).
    Dir(Mutex<Vec<super::types::DirEntry>>),
}

impl Handle {
    pub(super) fn plain(f: File) -> Handle {
        Handle::Plain(f, Default::default(), AtomicBool::new(false))
    }

    pub(super) fn enc(e: Arc<EncFile>) -> Handle {
        Handle::Enc(e, AtomicBool::new(false))
    }
}

/// Tells the kernel to drop a cached name (the FUSE session's notifier, once the
/// session exists): a name that now leads to another file.
pub trait Invalidate: Send + Sync {
    /// Drops the entry `name` of directory node `parent`.
    fn entry(&self, parent: u64, name: &OsStr);
}

/// A zone's name ciphers with the registry's wrapped secrets they came from.
pub(super) type CachedCiphers = (
    crate::keys::keystore::NameKeys,
    Arc<crate::zone::names::NameCiphers>,
);

/// The filesystem state shared by the FUSE request loops and the control socket.
pub struct Core {
    /// The inodes the kernel knows, by node id.
    pub inodes: InodeTable,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// The keys: data-key wrapping, marker keys, key users, the zone registry.
    pub keys: Arc<dyn ZoneKeys>,
    /// The backing dir (canonical).
    pub backing: PathBuf,
    /// The mount is read-only (`ro`): requests that change files get EROFS.
    pub read_only: bool,
    /// Plain files do their I/O in the kernel (FUSE passthrough): the adapter hands the
    /// kernel each plain file's backing file. Excludes `writeback` (the kernel refuses
    /// both on one connection).
    pub passthrough: bool,
    /// Use the kernel's writeback cache: writes return once in the page cache and reach
    /// us in large batches; the kernel then owns the file size while pages are dirty.
    pub writeback: bool,
    /// Other daemons (other hosts) serve the same backing dir (`--shared-storage`):
    /// nothing another host can change is trusted from memory, encrypted files lock
    /// what they read and write on the backing file (see `sharedlock`), and
    /// applications' locks are forwarded to the backing files (see `applocks`).
    pub shared: bool,
    /// Shared storage through a client whose page cache may hold pages other hosts
    /// have since rewritten (a FUSE client, such as GlusterFS's): reads drop them.
    pub refetch: bool,
    /// How long the kernel may cache attributes and names. On a mount of its own this
    /// daemon sees every change, so the cache is only as stale as changes made behind
    /// the mount's back; on shared storage other hosts make changes all the time.
    pub ttl: std::time::Duration,
    /// Applications' locks forwarded to backing files (shared storage only).
    pub(super) app_locks: super::applocks::AppLocks,
    /// Shared storage: when the keystore was last read again for a zone another host
    /// made (see `Core::see_new_zone`).
    pub(super) zone_catch_up: Mutex<Option<std::time::Instant>>,
    /// Effective uid and gid of the daemon: files it creates for them need no chown.
    pub(super) me: (u32, u32),
    /// Re-encryption status records.
    pub jobs: jobs::Jobs,
    /// Running re-encryption jobs.
    pub(super) running: reencrypt::Running,
    /// Set once the mount is going away: jobs stopped then are interrupted, not cancelled.
    pub(super) unmounting: AtomicBool,
    /// Held shared by a rename from its backing `renameat` until it is noted above, and
    /// exclusively by a job reading the notes: it then sees every finished rename.
    pub(super) rename_gate: RwLock<()>,
    /// Held shared by every operation that adds a name to a directory, and exclusively
    /// while a directory becomes a zone: no plaintext file can slip into a new zone.
    pub(super) zone_gate: RwLock<()>,
    /// The registered zone roots, by inode.
    pub(super) zone_roots: zones::ZoneRoots,
    /// The permission bits the mount's root shows (see [`root_mode`]): the backing
    /// root itself stays private.
    pub(super) root_mode: AtomicU32,
    /// Serialize reading a header at open with rewriting it (striped by inode number).
    header_locks: [RwLock<()>; 64],
    /// Tells the kernel to drop cached names (set once the session exists).
    pub invalidate: OnceLock<Box<dyn Invalidate>>,
    /// Entries of name-encrypted directories that did not decrypt, logged once each:
    /// (directory, backing name).
    pub(super) undecryptable: Mutex<std::collections::HashSet<((u64, u64), std::ffi::OsString)>>,
    /// The name ciphers of name-encrypted zones, by zone id, with the registry's
    /// wrapped secrets they were unwrapped from.
    pub(super) name_ciphers: Mutex<HashMap<[u8; 16], CachedCiphers>>,
    /// When the mount started (for `ezfs status`).
    pub started: SystemTime,
    /// When reads set access times (the mount's atime options).
    pub atime: atime::Policy,
    /// The kernel checks permissions (`default_permissions`: other users get in), so
    /// it can enforce POSIX ACLs too.
    pub kernel_checks: bool,
}

impl Core {
    /// The core of a mount of `backing`, its zones not yet located (see
    /// [`Core::locate_zones`]).
    pub fn new(backing: PathBuf, keys: Arc<dyn ZoneKeys>, read_only: bool) -> io::Result<Core> {
        let root_fd = sys::open_at(
            sys::at_cwd(),
            backing.as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        let st = sys::stat_at(root_fd.as_fd(), OsStr::new(""))?;
        // SAFETY: geteuid/getegid cannot fail.
        let me = unsafe { (libc::geteuid(), libc::getegid()) };
        let jobs = jobs::Jobs::load(&crate::keys::keystore::ezfs_dir(&backing));
        let root_mode = root_mode::load(&backing);
        Ok(Core {
            inodes: InodeTable::new(root_fd, (st.st_dev, st.st_ino), None),
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            keys,
            backing,
            read_only,
            writeback: !read_only,
            passthrough: false,
            shared: false,
            refetch: false,
            ttl: std::time::Duration::from_secs(1),
            app_locks: Default::default(),
            zone_catch_up: Mutex::new(None),
            me,
            jobs,
            running: Default::default(),
            unmounting: Default::default(),
            rename_gate: RwLock::new(()),
            zone_gate: RwLock::new(()),
            zone_roots: Default::default(),
            root_mode: root_mode.into(),
            header_locks: std::array::from_fn(|_| RwLock::new(())),
            undecryptable: Default::default(),
            name_ciphers: Default::default(),
            invalidate: OnceLock::new(),
            started: SystemTime::now(),
            atime: atime::Policy::default(),
            kernel_checks: false,
        })
    }

    /// Open file and directory handles.
    pub fn open_handles(&self) -> usize {
        self.handles.read().len()
    }

    /// The node `id`; ESTALE if the kernel's node is not known (any more).
    pub(super) fn inode(&self, id: u64) -> FsResult<Arc<Inode>> {
        self.inodes.get(id).ok_or(errno::ESTALE)
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.handles.read().get(&fh).cloned().ok_or(errno::EBADF)
    }

    pub(super) fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.write().insert(fh, Arc::new(h));
        fh
    }

    /// Drops handle `fh`; the backing file closes outside the table's lock (closing
    /// can be slow).
    pub(super) fn remove_handle(&self, fh: u64) {
        let handle = self.handles.write().remove(&fh);
        drop(handle);
    }

    /// The attributes of `ino`, whose backing file is `st`.
    pub(super) fn attr(&self, ino: &Inode, st: &libc::stat) -> Attr {
        let kind = FileKind::of_mode(st.st_mode);
        let mut size = st.st_size as u64;
        if kind == FileKind::File && ino.zone.read().is_some() {
            // shared storage: the backing file's size is the truth (another host writes)
            size = match ino.enc.lock().upgrade().filter(|_| !self.shared) {
                Some(enc) => enc.size(),
                None => plain_size(size).unwrap_or(0),
            };
        } else if kind == FileKind::Symlink && ino.zone.read().as_ref().is_some_and(|z| z.names.is_some()) {
            // the target's length, not its stored (encrypted) length
            size = crate::format::names::target_len(size);
        }
        Attr {
            ino: ino.id,
            size,
            blocks: st.st_blocks as u64,
            atime: system_time(st.st_atime, st.st_atime_nsec),
            mtime: system_time(st.st_mtime, st.st_mtime_nsec),
            ctime: system_time(st.st_ctime, st.st_ctime_nsec),
            kind,
            perm: if ino.id == ROOT {
                self.root_mode.load(Ordering::Relaxed) as u16
            } else {
                (st.st_mode & 0o7777) as u16
            },
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
        }
    }

    /// The backing file of `ino` as it is now.
    pub(super) fn stat(&self, ino: &Inode) -> FsResult<libc::stat> {
        let fd = ino.fd()?;
        Ok(match self.shared {
            // as the shared file system has it, not as its client cached it
            true => sys::stat_fresh(fd.as_fd())?,
            false => sys::stat_at(fd.as_fd(), OsStr::new(""))?,
        })
    }

    /// How open encrypted files share their backing files (see `sharedlock`).
    pub(super) fn sharing(&self) -> super::sharedlock::Sharing {
        use super::sharedlock::Sharing;
        match (self.shared, self.refetch) {
            (false, _) => Sharing::Alone,
            (true, false) => Sharing::Shared,
            (true, true) => Sharing::SharedUncached,
        }
    }

    pub(super) fn getattr_of(&self, ino: &Inode) -> FsResult<Attr> {
        let st = self.stat(ino)?;
        Ok(self.attr(ino, &st))
    }

    /// GETATTR.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let i = self.inode(ino)?;
        self.getattr_of(&i)
    }

    /// FORGET: the kernel dropped `n` references to node `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    pub(super) fn writable_check(&self) -> FsResult<()> {
        if self.read_only {
            Err(FsError::Os(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// The lock that orders header reads at open against header rewrites.
    pub(super) fn header_lock(&self, ino: u64) -> &RwLock<()> {
        &self.header_locks[(ino % self.header_locks.len() as u64) as usize]
    }

    /// The backing root's descriptor.
    pub(crate) fn root_fd(&self) -> FsResult<InodeFd> {
        self.inodes.get(ROOT).ok_or(FsError::RootGone)?.fd()
    }

    /// The inode's descriptor as a backing path, for log lines only.
    pub(super) fn describe(ino: &Inode) -> String {
        ino.fd()
            .map_or_else(|_| format!("node {}", ino.id), |fd| sys::describe(fd.as_fd()))
    }
}
