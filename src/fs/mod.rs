//! The FUSE adapter: a stacked filesystem over the backing directory.
//!
//! Outside zones it passes everything through. Inside a zone, regular files' contents
//! go through [`EncFile`] (header, DEK, block codec); names, sizes, modes and times
//! stay visible, as in HDFS. Zone boundaries are enforced here: rename and link across
//! them get EXDEV. The zone marker and `.ezfs` are hidden and reserved.

mod atime;
mod direct;
pub mod encfile;
mod export;
pub mod inode;
mod readaround;
pub mod reencrypt;
mod rekey;
mod root_mode;
pub mod stats;
mod writebehind;
pub mod zones;

pub use crate::backdir::sys;
pub use atime::{is_option as atime_option, Policy as AtimePolicy};

use encfile::{errno, EncFile};
use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use inode::{Inode, InodeTable, ROOT};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backdir::Caller;
use crate::format::layout::plain_size;
use crate::format::Backing;
use crate::keys::LocalProvider;
use crate::zone::{self, Zone, MARKER_FILE};

/// How long the kernel may cache attributes and names. Everything goes through this
/// daemon, so the cache is only as stale as changes made behind the mount's back.
const TTL: Duration = Duration::from_secs(1);

/// One open file or directory.
enum Handle {
    /// A file outside zones, how far it has been written since it was opened, and
    /// whether its access time was looked at (see [`atime`]).
    Plain(File, writebehind::Frontier, AtomicBool),
    Enc(Arc<EncFile>, AtomicBool),
    /// A directory's entries as listed when it was opened, or read again from its
    /// start (`rewinddir`).
    Dir(Mutex<Vec<(OsString, u64, u8)>>),
}

impl Handle {
    fn plain(f: File) -> Handle {
        Handle::Plain(f, Default::default(), AtomicBool::new(false))
    }

    fn enc(e: Arc<EncFile>) -> Handle {
        Handle::Enc(e, AtomicBool::new(false))
    }
}

/// The filesystem state shared by the FUSE request loops and the control socket.
pub struct Core {
    pub inodes: InodeTable,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    pub keys: Arc<LocalProvider>,
    /// The backing dir (canonical).
    pub backing: PathBuf,
    pub read_only: bool,
    /// Use the kernel's writeback cache: writes return once in the page cache and reach
    /// us in large batches; the kernel then owns the file size while pages are dirty.
    pub writeback: bool,
    /// Effective uid and gid of the daemon: files it creates for them need no chown.
    me: (u32, u32),
    /// Re-encryption status records.
    pub jobs: reencrypt::Jobs,
    /// Running re-encryption jobs.
    running: reencrypt::Running,
    /// Set once the mount is going away: jobs stopped then are interrupted, not cancelled.
    unmounting: std::sync::atomic::AtomicBool,
    /// Held shared by a rename from its backing `renameat` until it is noted above, and
    /// exclusively by a job reading the notes: it then sees every finished rename.
    rename_gate: RwLock<()>,
    /// Held shared by every operation that adds a name to a directory, and exclusively
    /// while a directory becomes a zone: no plaintext file can slip into a new zone.
    zone_gate: RwLock<()>,
    /// The registered zone roots, by inode.
    zone_roots: zones::ZoneRoots,
    /// The permission bits the mount's root shows (see [`root_mode`]): the backing
    /// root itself stays private.
    root_mode: std::sync::atomic::AtomicU32,
    /// Serialize reading a header at open with rewriting it (striped by inode number).
    header_locks: [RwLock<()>; 64],
    /// Tells the kernel to drop cached names (set once the session exists).
    pub notifier: std::sync::OnceLock<fuser::Notifier>,
    /// When the mount started (for `ezfs status`).
    pub started: SystemTime,
    /// When reads set access times (the mount's atime options).
    pub atime: atime::Policy,
    /// The kernel checks permissions (`default_permissions`: other users get in), so
    /// it can enforce POSIX ACLs too.
    pub kernel_checks: bool,
}

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The object handed to fuser.
pub struct EzFs(pub Arc<Core>);

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn dtype_to_file_type(d: u8) -> FileType {
    match d {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn timespec(t: TimeOrNow) -> Option<libc::timespec> {
    match t {
        TimeOrNow::Now => None,
        TimeOrNow::SpecificTime(t) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    let (s, n) = (-(d.as_secs() as i64), d.subsec_nanos() as i64);
                    if n == 0 {
                        (s, 0)
                    } else {
                        (s - 1, 1_000_000_000 - n)
                    }
                }
            };
            Some(libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            })
        }
    }
}

type FsResult<T> = Result<T, Errno>;

fn io_err(e: io::Error) -> Errno {
    errno(&e)
}

impl Core {
    pub fn new(backing: PathBuf, keys: Arc<LocalProvider>, read_only: bool) -> io::Result<Core> {
        let root_fd = sys::open_at(
            sys::at_cwd(),
            backing.as_os_str(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        let st = sys::stat_at(std::os::fd::AsFd::as_fd(&root_fd), OsStr::new(""))?;
        // SAFETY: geteuid/getegid cannot fail.
        let me = unsafe { (libc::geteuid(), libc::getegid()) };
        let jobs = reencrypt::Jobs::load(&crate::keys::keystore::ezfs_dir(&backing));
        let root_mode = root_mode::load(&backing);
        let core = Core {
            inodes: InodeTable::new(root_fd, (st.st_dev, st.st_ino), None),
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            keys,
            backing,
            read_only,
            writeback: !read_only,
            me,
            jobs,
            running: Default::default(),
            unmounting: Default::default(),
            rename_gate: RwLock::new(()),
            zone_gate: RwLock::new(()),
            zone_roots: Default::default(),
            root_mode: root_mode.into(),
            header_locks: std::array::from_fn(|_| RwLock::new(())),
            notifier: std::sync::OnceLock::new(),
            started: SystemTime::now(),
            atime: atime::Policy::default(),
            kernel_checks: false,
        };
        Ok(core)
    }

    /// Open file and directory handles.
    pub fn open_handles(&self) -> usize {
        self.handles.read().len()
    }

    fn inode(&self, id: INodeNo) -> FsResult<Arc<Inode>> {
        self.inodes.get(id.0).ok_or(Errno::ESTALE)
    }

    fn handle(&self, fh: FileHandle) -> FsResult<Arc<Handle>> {
        self.handles.read().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn add_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.write().insert(fh, Arc::new(h));
        FileHandle(fh)
    }

    fn attr(&self, ino: &Inode, st: &libc::stat) -> FileAttr {
        let kind = file_type(st.st_mode);
        let mut size = st.st_size as u64;
        if kind == FileType::RegularFile && ino.zone.read().is_some() {
            size = match ino.enc.lock().upgrade() {
                Some(enc) => enc.size(),
                None => plain_size(size).unwrap_or(0),
            };
        }
        FileAttr {
            ino: INodeNo(ino.id),
            size,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
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
            blksize: 4096,
            flags: 0,
        }
    }

    fn getattr_of(&self, ino: &Inode) -> FsResult<FileAttr> {
        let st = sys::stat_at(ino.fd()?.as_fd(), OsStr::new("")).map_err(io_err)?;
        Ok(self.attr(ino, &st))
    }

    /// Looks up `name` in `parent`, adding the inode to the table (lookup count +1).
    fn lookup_child(&self, parent: &Inode, name: &OsStr) -> FsResult<(Arc<Inode>, FileAttr)> {
        if zone::is_reserved(name.as_bytes(), parent.id == ROOT) {
            return Err(Errno::ENOENT);
        }
        let parent_fd = parent.fd()?;
        let st = sys::stat_at(parent_fd.as_fd(), name).map_err(io_err)?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let ino = self
            .inodes
            .insert((st.st_dev, st.st_ino), is_dir, || {
                let fd = sys::open_at(parent_fd.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
                let own = if is_dir {
                    self.dir_zone(std::os::fd::AsFd::as_fd(&fd), (st.st_dev, st.st_ino))
                } else {
                    None
                };
                Ok((fd, own.or_else(|| parent.zone())))
            })
            .map_err(io_err)?;
        let attr = self.attr(&ino, &st);
        Ok((ino, attr))
    }

    /// Gives a new entry the requester's ownership (the daemon created it as itself).
    /// In a set-group-id directory the group is the directory's, as the kernel does.
    fn chown_new(&self, req: &Request, parent: &Inode, ino: &Inode) -> FsResult<()> {
        if (req.uid(), req.gid()) == self.me {
            return Ok(());
        }
        let pst = sys::stat_at(parent.fd()?.as_fd(), OsStr::new("")).map_err(io_err)?;
        let gid = if pst.st_mode & libc::S_ISGID != 0 {
            pst.st_gid
        } else {
            req.gid()
        };
        let fd = ino.fd()?;
        let before = sys::stat_at(fd.as_fd(), OsStr::new("")).map_err(io_err)?;
        sys::chown(fd.as_fd(), req.uid(), gid).map_err(io_err)?;
        // chown clears set-user/group-id bits of a regular file; the creator asked for
        // them (the kernel already dropped any the caller may not have)
        if before.st_mode & libc::S_IFMT == libc::S_IFREG && before.st_mode & 0o6000 != 0 {
            sys::chmod(fd.as_fd(), before.st_mode & 0o7777).map_err(io_err)?;
        }
        Ok(())
    }

    /// Finishes a create-like operation: lookup, ownership, fresh attributes.
    fn created(&self, req: &Request, parent: &Inode, name: &OsStr) -> FsResult<(Arc<Inode>, FileAttr)> {
        let (ino, attr) = self.lookup_child(parent, name)?;
        if (req.uid(), req.gid()) == self.me {
            return Ok((ino, attr));
        }
        self.chown_new(req, parent, &ino)?;
        let attr = self.getattr_of(&ino)?;
        Ok((ino, attr))
    }

    /// `chmod` of the mount's root: recorded for the mount, the backing root untouched.
    fn set_root_mode(&self, mode: u32) -> FsResult<()> {
        root_mode::store(&self.backing, mode).map_err(io_err)?;
        self.root_mode.store(mode, Ordering::Relaxed);
        Ok(())
    }

    fn writable_check(&self) -> FsResult<()> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// The directory `parent`, checked for creating `name` in it: writable mount, no
    /// reserved name, usable zone.
    fn parent_for_new(&self, parent: INodeNo, name: &OsStr) -> FsResult<Arc<Inode>> {
        self.writable_check()?;
        let p = self.inode(parent)?;
        Self::check_new_name(&p, name)?;
        Ok(p)
    }

    fn check_new_name(parent: &Inode, name: &OsStr) -> FsResult<()> {
        if zone::is_reserved(name.as_bytes(), parent.id == ROOT) {
            return Err(Errno::EPERM);
        }
        if let Some(z) = parent.zone() {
            if z.broken.is_some() {
                return Err(Errno::EIO);
            }
        }
        Ok(())
    }

    /// The lock that orders header reads at open against header rewrites.
    pub(crate) fn header_lock(&self, backing_ino: u64) -> &RwLock<()> {
        &self.header_locks[(backing_ino % self.header_locks.len() as u64) as usize]
    }

    /// The shared encrypted-file state of `ino`, opening it if no handle has.
    fn enc_file(&self, ino: &Inode) -> FsResult<Arc<EncFile>> {
        let _header = self.header_lock(ino.key.1).read();
        let mut slot = ino.enc.lock();
        if let Some(e) = slot.upgrade() {
            return Ok(e);
        }
        if ino.stale.load(Ordering::Acquire) {
            // re-encrypted into a new file under the same name: the kernel looks again
            return Err(Errno::ESTALE);
        }
        let zone = ino.zone().ok_or(Errno::EIO)?;
        let e = Arc::new(EncFile::open(
            ino.fd()?.as_fd(),
            &zone,
            &*self.keys,
            !self.read_only,
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
                let e = Arc::new(EncFile::from_file(file, &zone, &*self.keys, true)?);
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
    fn check_key_user(&self, req: &Request, zone: Option<&Zone>) -> FsResult<()> {
        let Some(zone) = zone.filter(|z| z.broken.is_none()) else {
            return Ok(());
        };
        let caller = Caller::new(req.uid(), req.gid(), req.pid());
        if caller.is_root() {
            return Ok(());
        }
        if crate::keys::KeyProvider::current_version(&*self.keys, &zone.key).is_ok() {
            let store = self.keys.store().read();
            if store
                .key(&zone.key)
                .is_ok_and(|key| key.allows(caller.uid, caller.gid, || caller.groups()))
            {
                return Ok(());
            }
        }
        log::info!("uid {} may not use key {}: access denied", req.uid(), zone.key);
        Err(Errno::EACCES)
    }

    /// Opens `ino` for a handle; also says whether the kernel may keep the pages it has
    /// cached for the file (see [`Inode::unchanged_since_open`]).
    fn open_file(&self, req: &Request, ino: &Inode, flags: i32) -> FsResult<(Handle, bool)> {
        let st = sys::stat_at(ino.fd()?.as_fd(), OsStr::new("")).map_err(io_err)?;
        let h = self.open_backing(req, ino, flags, &st)?;
        // an O_TRUNC open (sent only with atomic_o_trunc) just truncated the file
        let truncated = flags & libc::O_TRUNC != 0;
        Ok((h, ino.unchanged_since_open(&st) && !truncated))
    }

    fn open_backing(&self, req: &Request, ino: &Inode, flags: i32, st: &libc::stat) -> FsResult<Handle> {
        let wants_write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if wants_write {
            self.writable_check()?;
        }
        if Self::is_encrypted(ino, st.st_mode) {
            self.check_key_user(req, ino.zone().as_deref())?;
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
        let f = sys::reopen_noatime(ino.fd()?.as_fd(), flags).map_err(io_err)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            self.refuse_ciphertext(ino, st)?;
        }
        Ok(Handle::plain(f))
    }

    /// An encrypted file outside every zone (copied there in the backing dir, or left
    /// by a zone whose registration was lost) is not served as plaintext: its bytes
    /// are ciphertext, and writes would corrupt it. EIO, with a log line.
    fn refuse_ciphertext(&self, ino: &Inode, st: &libc::stat) -> FsResult<()> {
        if (st.st_size as u64) < crate::format::layout::HEADER_LEN {
            return Ok(());
        }
        let f = sys::reopen(ino.fd()?.as_fd(), libc::O_RDONLY | libc::O_NONBLOCK).map_err(io_err)?;
        let mut magic = [0u8; 8];
        if Backing::read_at(&f, &mut magic, 0).map_err(io_err)? == magic.len()
            && &magic == crate::format::header::MAGIC
        {
            log::error!(
                "{}: an encrypted file outside every encryption zone; not served as plaintext (EIO). \
                 See 'ezfs fsck'",
                sys::describe(ino.fd()?.as_fd())
            );
            return Err(Errno::EIO);
        }
        Ok(())
    }

    fn set_size(&self, req: &Request, ino: &Inode, size: u64) -> FsResult<()> {
        self.writable_check()?;
        let st = sys::stat_at(ino.fd()?.as_fd(), OsStr::new("")).map_err(io_err)?;
        if Self::is_encrypted(ino, st.st_mode) {
            self.check_key_user(req, ino.zone().as_deref())?;
            self.enc_file(ino)?.truncate(size)
        } else {
            sys::reopen(ino.fd()?.as_fd(), libc::O_WRONLY)
                .and_then(|f| f.set_len(size))
                .map_err(io_err)
        }
    }

    fn rmdir(&self, parent: &Inode, name: &OsStr) -> FsResult<()> {
        let pfd = parent.fd()?;
        let dir = sys::open_at(
            pfd.as_fd(),
            name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(io_err)?;
        let dirfd = std::os::fd::AsFd::as_fd(&dir);
        let st = sys::stat_at(dirfd, OsStr::new("")).map_err(io_err)?;
        let key = (st.st_dev, st.st_ino);
        let marker = crate::backdir::resolve::read_small(dirfd, OsStr::new(MARKER_FILE), 4096);
        let has_marker = crate::zone::walk::has_marker(dirfd);
        if !has_marker {
            sys::unlink_at(pfd.as_fd(), name, libc::AT_REMOVEDIR).map_err(io_err)?;
            self.forget_zone_root(key);
            return Ok(());
        }
        // A zone root: empty but for its marker. Remove the marker, then the directory;
        // if that fails (a file appeared), put the marker back.
        if sys::read_dir(dirfd)
            .map_err(io_err)?
            .iter()
            .any(|(n, _, _)| n != MARKER_FILE)
        {
            return Err(Errno::ENOTEMPTY);
        }
        sys::unlink_at(dirfd, OsStr::new(MARKER_FILE), 0).map_err(io_err)?;
        if let Err(e) = sys::unlink_at(pfd.as_fd(), name, libc::AT_REMOVEDIR) {
            if let Ok(bytes) = marker {
                let restored =
                    crate::backdir::resolve::replace_at(dirfd, OsStr::new(MARKER_FILE), &bytes, 0o644);
                if let Err(e2) = restored {
                    log::error!(
                        "{}: could not restore the zone marker: {e2}",
                        sys::describe(dirfd)
                    );
                }
            }
            return Err(io_err(e));
        }
        self.forget_zone_root(key);
        Ok(())
    }

    /// The entries of an open directory for a read at `offset`. A read from the start
    /// (the first, or after `rewinddir`) lists the directory again, as POSIX wants;
    /// later offsets index that same listing, so `telldir`/`seekdir` stay stable.
    fn dir_page(
        &self,
        dir: &Inode,
        entries: &Mutex<Vec<(OsString, u64, u8)>>,
        offset: u64,
    ) -> FsResult<Vec<(OsString, u64, u8)>> {
        let mut e = entries.lock();
        if offset == 0 {
            *e = self.dir_entries(dir)?;
            atime::dir_listed(self.atime.dirs, dir.fd()?.as_fd());
        }
        Ok(e.get(offset as usize..).map(<[_]>::to_vec).unwrap_or_default())
    }

    fn dir_entries(&self, ino: &Inode) -> FsResult<Vec<(OsString, u64, u8)>> {
        let mut v = vec![
            (OsString::from("."), ino.key.1, libc::DT_DIR),
            (OsString::from(".."), ino.key.1, libc::DT_DIR),
        ];
        for e in sys::read_dir(ino.fd()?.as_fd()).map_err(io_err)? {
            if !zone::is_reserved(e.0.as_bytes(), ino.id == ROOT) {
                v.push(e);
            }
        }
        Ok(v)
    }
}

macro_rules! tri {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(e),
        }
    };
}

impl Filesystem for EzFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        if self.0.writeback
            && config
                .add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            log::warn!("the kernel offers no writeback cache; small writes will be slower");
        }
        // We clear set-user/group-id bits on write and truncate ourselves, which lets the
        // kernel mark inodes "no security xattrs" instead of asking for
        // security.capability on every write(2) (a request per write otherwise).
        // file handles survive cache eviction (see export)
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
        let c = &self.0;
        // "." and ".." come from the kernel turning file handles back into files
        if name == "." {
            let (_, attr) = tri!(reply, c.lookup_dot(parent.0));
            return reply.entry(&TTL, &attr, Generation(0));
        }
        let p = tri!(reply, c.inode(parent));
        let (_, attr) = if name == ".." {
            tri!(reply, c.lookup_dotdot(&p))
        } else {
            tri!(reply, c.lookup_child(&p, name))
        };
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.0.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let i = tri!(reply, self.0.inode(ino));
        let attr = tri!(reply, self.0.getattr_of(&i));
        reply.attr(&TTL, &attr);
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
        let c = &self.0;
        let i = tri!(reply, c.inode(ino));
        if mode.is_some() || uid.is_some() || gid.is_some() || atime.is_some() || mtime.is_some() {
            tri!(reply, c.writable_check());
        }
        if let Some(mode) = mode {
            if i.id == ROOT {
                tri!(reply, c.set_root_mode(mode & 0o7777));
            } else {
                tri!(
                    reply,
                    sys::chmod(tri!(reply, i.fd()).as_fd(), mode & 0o7777).map_err(io_err)
                );
            }
        }
        if uid.is_some() || gid.is_some() {
            tri!(
                reply,
                sys::chown(
                    tri!(reply, i.fd()).as_fd(),
                    uid.unwrap_or(u32::MAX),
                    gid.unwrap_or(u32::MAX)
                )
                .map_err(io_err)
            );
        }
        if let Some(size) = size {
            tri!(reply, c.set_size(req, &i, size));
            // what the kernel does for a truncate by an unprivileged user
            if req.uid() != 0 && mode.is_none() {
                tri!(reply, kill_suidgid(&i));
            }
        }
        if atime.is_some() || mtime.is_some() {
            tri!(
                reply,
                sys::utimens(
                    tri!(reply, i.fd()).as_fd(),
                    atime.map(timespec),
                    mtime.map(timespec)
                )
                .map_err(io_err)
            );
        }
        let attr = tri!(reply, c.getattr_of(&i));
        reply.attr(&TTL, &attr);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let i = tri!(reply, self.0.inode(ino));
        let target = tri!(reply, sys::readlink(tri!(reply, i.fd()).as_fd()).map_err(io_err));
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
        let c = &self.0;
        let p = tri!(reply, c.parent_for_new(parent, name));
        let _gate = c.zone_gate.read();
        let pfd = tri!(reply, p.fd());
        tri!(
            reply,
            sys::with_umask(umask, |own| {
                sys::mknod_at(
                    pfd.as_fd(),
                    name,
                    if own { mode } else { mode & !umask },
                    rdev as u64,
                )
            })
            .map_err(io_err)
        );
        let (_, attr) = tri!(reply, c.created(req, &p, name));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let c = &self.0;
        let p = tri!(reply, c.parent_for_new(parent, name));
        let _gate = c.zone_gate.read();
        let pfd = tri!(reply, p.fd());
        tri!(
            reply,
            sys::with_umask(umask, |own| {
                sys::mkdir_at(
                    pfd.as_fd(),
                    name,
                    (if own { mode } else { mode & !umask }) & 0o7777,
                )
            })
            .map_err(io_err)
        );
        let (_, attr) = tri!(reply, c.created(req, &p, name));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let c = &self.0;
        tri!(reply, c.writable_check());
        let p = tri!(reply, c.inode(parent));
        if zone::is_reserved(name.as_bytes(), p.id == ROOT) {
            return reply.error(Errno::ENOENT);
        }
        tri!(
            reply,
            sys::unlink_at(tri!(reply, p.fd()).as_fd(), name, 0).map_err(io_err)
        );
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let c = &self.0;
        tri!(reply, c.writable_check());
        let p = tri!(reply, c.inode(parent));
        if zone::is_reserved(name.as_bytes(), p.id == ROOT) {
            return reply.error(Errno::ENOENT);
        }
        tri!(reply, c.rmdir(&p, name));
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
        let c = &self.0;
        let p = tri!(reply, c.parent_for_new(parent, link_name));
        let _gate = c.zone_gate.read();
        tri!(
            reply,
            sys::symlink_at(target.as_os_str(), tri!(reply, p.fd()).as_fd(), link_name).map_err(io_err)
        );
        let (_, attr) = tri!(reply, c.created(req, &p, link_name));
        reply.entry(&TTL, &attr, Generation(0));
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
        let c = &self.0;
        tri!(reply, c.writable_check());
        let p = tri!(reply, c.inode(parent));
        let np = tri!(reply, c.inode(newparent));
        if zone::is_reserved(name.as_bytes(), p.id == ROOT) {
            return reply.error(Errno::ENOENT);
        }
        let _zone_gate = c.zone_gate.read();
        tri!(reply, Core::check_new_name(&np, newname));
        if zone::check_rename(p.zone_id(), np.zone_id()).is_err() {
            return reply.error(Errno::EXDEV);
        }
        let gate = c.rename_gate.read();
        // where the two names are, for the registry, if it has zones that could move
        let places = c
            .zones_may_move()
            .then(|| (c.rel_of(&p, name), c.rel_of(&np, newname)));
        tri!(
            reply,
            sys::rename_at(
                tri!(reply, p.fd()).as_fd(),
                name,
                tri!(reply, np.fd()).as_fd(),
                newname,
                flags.bits()
            )
            .map_err(io_err)
        );
        if let Some((Some(from), Some(to))) = places {
            c.note_moved_zones(&from, &to, flags.contains(RenameFlags::RENAME_EXCHANGE));
        }
        c.note_renamed(&np, newname);
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            c.note_renamed(&p, name);
        }
        drop(gate);
        reply.ok();
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let c = &self.0;
        tri!(reply, c.writable_check());
        let i = tri!(reply, c.inode(ino));
        let np = tri!(reply, c.inode(newparent));
        let _gate = c.zone_gate.read();
        tri!(reply, Core::check_new_name(&np, newname));
        if zone::check_link(i.zone_id(), np.zone_id()).is_err() {
            return reply.error(Errno::EXDEV);
        }
        tri!(
            reply,
            sys::link_at(tri!(reply, i.fd()).as_fd(), tri!(reply, np.fd()).as_fd(), newname).map_err(io_err)
        );
        let (_, attr) = tri!(reply, c.lookup_child(&np, newname));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let c = &self.0;
        let i = tri!(reply, c.inode(ino));
        let (h, keep_cache) = tri!(reply, c.open_file(req, &i, flags.0));
        i.open_count.fetch_add(1, Ordering::AcqRel);
        let flags = if keep_cache {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        reply.opened(c.add_handle(h), flags);
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
        let h = tri!(reply, self.0.handle(fh));
        // a per-thread buffer: no allocation or zeroing per request; page-aligned, so
        // that the kernel copies a 4 KiB block in and out of one page, not two
        READ_BUF.with_borrow_mut(|buf| {
            let buf = crate::format::codec::aligned(buf, size as usize);
            let policy = self.0.atime.files;
            let n = match &*h {
                Handle::Enc(e, checked) => {
                    let n = e.read_into(offset, buf);
                    atime::file_read(policy, e.file(), checked);
                    n
                }
                Handle::Plain(f, _, checked) => {
                    let n = Backing::read_at(f, buf, offset).map_err(io_err);
                    atime::file_read(policy, f, checked);
                    n
                }
                Handle::Dir(_) => Err(Errno::EISDIR),
            };
            match n {
                Ok(n) => {
                    stats::read(n);
                    reply.data(&buf[..n])
                }
                Err(e) => {
                    if e == Errno::EIO {
                        stats::eio();
                    }
                    reply.error(e)
                }
            }
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
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let h = tri!(reply, self.0.handle(fh));
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            let i = tri!(reply, self.0.inode(ino));
            tri!(reply, kill_suidgid(&i));
        }
        match &*h {
            Handle::Enc(e, _) => tri!(reply, e.write(offset, data)),
            Handle::Plain(f, frontier, _) => {
                tri!(reply, f.write_all_at(data, offset).map_err(io_err));
                if let Some(w) = frontier.advance(offset, offset + data.len() as u64) {
                    writebehind::start(f, w);
                }
            }
            Handle::Dir(_) => return reply.error(Errno::EISDIR),
        }
        stats::written(data.len());
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do at close, and ENOSYS tells the kernel so: it stops sending
        // FLUSH, saving a round trip per close(2), and still writes back the file's dirty
        // pages at close and reports their errors there.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // dropped after the lock is released: closing a backing file can be slow
        let handle = self.0.handles.write().remove(&fh.0);
        drop(handle);
        if let Some(i) = self.0.inodes.get(ino.0) {
            let _ = i
                .open_count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let h = tri!(reply, self.0.handle(fh));
        let r = match &*h {
            Handle::Enc(e, _) => e.sync(datasync),
            Handle::Plain(f, _, _) => if datasync { f.sync_data() } else { f.sync_all() }.map_err(io_err),
            Handle::Dir(_) => Ok(()),
        };
        tri!(reply, r);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let c = &self.0;
        let i = tri!(reply, c.inode(ino));
        // listed by the first read, from offset 0
        tri!(reply, i.fd());
        reply.opened(
            c.add_handle(Handle::Dir(Mutex::new(Vec::new()))),
            FopenFlags::empty(),
        );
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let c = &self.0;
        let h = tri!(reply, c.handle(fh));
        let Handle::Dir(entries) = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        let dir = tri!(reply, c.inode(ino));
        let entries = tri!(reply, c.dir_page(&dir, entries, offset));
        for (i, (name, ino, t)) in entries.iter().enumerate() {
            if reply.add(INodeNo(*ino), offset + i as u64 + 1, dtype_to_file_type(*t), name) {
                break;
            }
        }
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
        let c = &self.0;
        let h = tri!(reply, c.handle(fh));
        let dir = tri!(reply, c.inode(ino));
        let Handle::Dir(entries) = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        let entries = tri!(reply, c.dir_page(&dir, entries, offset));
        for (i, (name, _, _)) in entries.iter().enumerate() {
            let next = offset + i as u64 + 1;
            if name == "." || name == ".." {
                // the kernel links no dentry for these, so no lookup is counted
                let attr = tri!(reply, c.getattr_of(&dir));
                if reply.add(INodeNo(dir.id), next, name, &Duration::ZERO, &attr, Generation(0)) {
                    break;
                }
                continue;
            }
            let Ok((child, attr)) = c.lookup_child(&dir, name) else {
                continue;
            };
            if reply.add(INodeNo(child.id), next, name, &TTL, &attr, Generation(0)) {
                c.inodes.forget(child.id, 1);
                break;
            }
        }
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
        // dropped after the lock is released: closing a backing file can be slow
        let handle = self.0.handles.write().remove(&fh.0);
        drop(handle);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let i = tri!(reply, self.0.inode(ino));
        tri!(
            reply,
            sys::reopen(tri!(reply, i.fd()).as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)
                .and_then(|f| f.sync_all())
                .map_err(io_err)
        );
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let root = tri!(reply, self.0.inode(INodeNo(ROOT)));
        let s = tri!(
            reply,
            sys::statvfs(tri!(reply, root.fd()).as_fd()).map_err(io_err)
        );
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
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
        let c = &self.0;
        tri!(reply, c.writable_check());
        tri!(reply, xattr_allowed(req, name));
        let i = tri!(reply, xattr_target(c, ino));
        let name = tri!(reply, CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL));
        tri!(
            reply,
            sys::setxattr(tri!(reply, i.fd()).as_fd(), &name, value, flags).map_err(io_err)
        );
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = tri!(reply, CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL));
        let mut buf = vec![0u8; size as usize];
        let n = tri!(reply, get_xattr(&self.0, ino, &name, &mut buf));
        if size == 0 {
            reply.size(n as u32);
        } else {
            reply.data(&buf[..n]);
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let i = tri!(reply, xattr_target(&self.0, ino));
        let mut buf = vec![0u8; size as usize];
        let n = tri!(
            reply,
            sys::listxattr(tri!(reply, i.fd()).as_fd(), &mut buf).map_err(io_err)
        );
        if size == 0 {
            reply.size(n as u32);
        } else {
            reply.data(&buf[..n]);
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let c = &self.0;
        tri!(reply, c.writable_check());
        tri!(reply, xattr_allowed(req, name));
        let i = tri!(reply, xattr_target(c, ino));
        let name = tri!(reply, CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL));
        tri!(
            reply,
            sys::removexattr(tri!(reply, i.fd()).as_fd(), &name).map_err(io_err)
        );
        reply.ok();
    }

    /// Asked only without `default_permissions`, that is for the mounting user alone,
    /// whose rights the daemon has: the backing file answers.
    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let i = tri!(reply, self.0.inode(ino));
        tri!(
            reply,
            sys::access(tri!(reply, i.fd()).as_fd(), mask.bits()).map_err(io_err)
        );
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
        let c = &self.0;
        let p = tri!(reply, c.parent_for_new(parent, name));
        let _gate = c.zone_gate.read();
        tri!(reply, c.check_key_user(req, p.zone().as_deref()));
        // Create read-write and keep the descriptor: no second open of the new file.
        let encrypted = p.zone().is_some();
        let keep = libc::O_EXCL | if encrypted { 0 } else { libc::O_TRUNC };
        let pfd = tri!(reply, p.fd());
        let f = tri!(
            reply,
            sys::with_umask(umask, |own| {
                let how = libc::O_CREAT | libc::O_RDWR | libc::O_NOFOLLOW | (flags & keep);
                let mode = (if own { mode } else { mode & !umask }) & 0o7777;
                // O_NOATIME where allowed: the mount decides access times
                match sys::open_at(pfd.as_fd(), name, how | libc::O_NOATIME, mode) {
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        sys::open_at(pfd.as_fd(), name, how, mode)
                    }
                    other => other,
                }
            })
            .map_err(io_err)
        );
        let (ino, _) = tri!(reply, c.created(req, &p, name));
        let h = match c.created_handle(&ino, File::from(f), flags) {
            Ok(h) => h,
            Err(e) => {
                c.inodes.forget(ino.id, 1);
                return reply.error(e);
            }
        };
        let attr = tri!(reply, c.getattr_of(&ino));
        ino.open_count.fetch_add(1, Ordering::AcqRel);
        reply.created(&TTL, &attr, Generation(0), c.add_handle(h), FopenFlags::empty());
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
        tri!(reply, self.0.writable_check());
        let h = tri!(reply, self.0.handle(fh));
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let r = match &*h {
            Handle::Plain(f, _, _) => sys::fallocate(f, mode, offset, length).map_err(io_err),
            Handle::Enc(e, _) => match mode & !libc::FALLOC_FL_KEEP_SIZE {
                0 => e.allocate(offset, length, keep),
                libc::FALLOC_FL_PUNCH_HOLE if keep => e.zero_range(offset, length, true),
                libc::FALLOC_FL_ZERO_RANGE => e.zero_range(offset, length, keep),
                _ => Err(Errno::EOPNOTSUPP),
            },
            Handle::Dir(_) => Err(Errno::EISDIR),
        };
        tri!(reply, r);
        reply.ok();
    }
}

/// Clears set-user-id, and set-group-id when group-executable, as the kernel does when
/// an unprivileged user writes or truncates a file (we asked for FUSE_HANDLE_KILLPRIV_V2).
fn kill_suidgid(i: &Inode) -> FsResult<()> {
    let st = sys::stat_at(i.fd()?.as_fd(), OsStr::new("")).map_err(io_err)?;
    let mut kill = libc::S_ISUID;
    if st.st_mode & libc::S_IXGRP != 0 {
        kill |= libc::S_ISGID;
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & kill != 0 {
        sys::chmod(i.fd()?.as_fd(), st.st_mode & 0o7777 & !kill).map_err(io_err)?;
    }
    Ok(())
}

/// Reads xattr `name` of `ino`. The kernel asks for `security.capability` at the
/// first write of every new file, so an open encrypted file answers on its own
/// descriptor: a regular file, so no type check, and no walk through `/proc`.
fn get_xattr(c: &Core, ino: INodeNo, name: &CStr, buf: &mut [u8]) -> FsResult<usize> {
    let i = c.inode(ino)?;
    let open = i.enc.lock().upgrade();
    if let Some(e) = open {
        return sys::fgetxattr(e.file(), name, buf).map_err(io_err);
    }
    sys::getxattr(i.fd()?.as_fd(), name, buf).map_err(io_err)
}

/// The daemon changes extended attributes as root: names that only a privileged
/// process may set (`security.*`: CAP_SYS_ADMIN, CAP_SETFCAP for capabilities, as the
/// kernel's capability checks want on a local filesystem) are refused to everyone else
/// here, whatever the kernel's security modules let through to the mount.
fn xattr_allowed(req: &Request, name: &OsStr) -> FsResult<()> {
    if req.uid() != 0 && name.as_bytes().starts_with(b"security.") {
        return Err(Errno::EPERM);
    }
    Ok(())
}

/// The inode whose extended attributes a request names. They go through its
/// descriptor's `/proc/self/fd` link, which leads to the file itself, a symlink
/// included (the link in `/proc` is followed, the symlink it names is not): so
/// symlinks have `trusted.*` and `security.*` attributes as on the backing
/// filesystem (the kernel refuses `user.*` on them itself).
fn xattr_target(c: &Core, ino: INodeNo) -> FsResult<Arc<Inode>> {
    c.inode(ino)
}
