//! The inode table: FUSE node ids to backing files.
//!
//! A node id is the backing file's inode number (so `ls -i` is stable across mounts
//! and hard links share it); the root is 1. Each known inode holds an `O_PATH`
//! descriptor of its backing file, which follows the file through renames, and the
//! zone it belongs to, fixed at lookup (renames never change a zone: crossing one is
//! refused).
//!
//! The kernel may cache far more inodes than a process may hold descriptors (a tree
//! of 100,000 files walked once), so the descriptors of idle inodes are closed once
//! more than half the open-file limit is in use, and reopened from the file handle
//! (`name_to_handle_at`, taken just before closing) when needed again. A handle names the inode
//! and its generation: if the file was deleted and its number reused meanwhile, the
//! reopen fails instead of reaching the wrong file.

use super::encfile::EncFile;
use super::error::{errno, FsError, FsResult};
use crate::backdir::sys;
use crate::zone::Zone;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

/// Node id of the mount's root.
pub const ROOT: u64 = 1;
/// Node ids at or above this are made up (files on other devices, or backing inode 1).
const SYNTHETIC_BASE: u64 = 1 << 63;
/// Room for a `struct file_handle` (MAX_HANDLE_SZ is 128 bytes of handle).
const HANDLE_BUF: usize = 8 + 128;

/// What all inodes share: a descriptor on the backing filesystem for reopening
/// handles, and the count of inode descriptors held against the budget.
struct Shared {
    mount_fd: OwnedFd,
    open: AtomicUsize,
    budget: usize,
}

/// One known backing file.
pub struct Inode {
    /// Node id the kernel knows the file by.
    pub id: u64,
    /// (st_dev, st_ino) of the backing file.
    pub key: (u64, u64),
    /// Whether the backing file is a directory.
    pub is_dir: bool,
    /// The zone this entry's contents (file) or children (directory) belong to.
    pub zone: RwLock<Option<Arc<Zone>>>,
    /// A directory of a name-encrypted zone: its diriv, read once (see `fs::names`).
    pub diriv: std::sync::OnceLock<[u8; 16]>,
    nlookup: AtomicU64,
    /// Shared state of an encrypted regular file while any handle has it open.
    pub enc: Mutex<Weak<EncFile>>,
    /// `zone reencrypt --data` replaced this backing file by a new one under the same
    /// name; opening this inode gives ESTALE, so the kernel looks the name up again.
    pub stale: AtomicBool,
    /// Open file handles of this inode (its descriptor stays open meanwhile: an
    /// unlinked open file cannot be reopened by handle everywhere).
    pub open_count: AtomicU32,
    /// The backing file as the last open found it (see [`Inode::unchanged_since_open`]).
    opened_as: Mutex<Option<Stamp>>,
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// `struct file_handle` bytes, taken when the descriptor is first closed; `None`
    /// inside where the filesystem has none (the descriptor then stays open).
    handle: std::sync::OnceLock<Option<Box<[u8]>>>,
    /// On the backing root's filesystem (handles reopen through its root).
    closable: bool,
    shared: Arc<Shared>,
}

/// An inode's `O_PATH` descriptor, valid while this value lives.
pub struct InodeFd(Arc<OwnedFd>);

impl AsFd for InodeFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// What a change to a file's contents changes: its size, mtime and ctime. ctime
/// cannot be set back by anyone, so a write from outside the mount shows here too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// How old a file's ctime must be for its stamp to be trusted. Filesystems take
/// timestamps from a clock that ticks every few milliseconds (10 ms at most), so a
/// change in the same tick as the last one can leave size, mtime and ctime as they
/// were. Once the tick of the ctime seen is over, any later change shows.
const SETTLED: std::time::Duration = std::time::Duration::from_millis(20);

impl Stamp {
    /// The stamp of `st` seen at `now`; `None` if its ctime is too recent to tell a
    /// later change from it (see [`SETTLED`]).
    fn of(st: &libc::stat, now: std::time::SystemTime) -> Option<Stamp> {
        let ctime = std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(
            st.st_ctime.try_into().ok()?,
            st.st_ctime_nsec.try_into().ok()?,
        ))?;
        now.duration_since(ctime)
            .is_ok_and(|age| age >= SETTLED)
            .then_some(Stamp {
                size: st.st_size,
                mtime: (st.st_mtime, st.st_mtime_nsec),
                ctime: (st.st_ctime, st.st_ctime_nsec),
            })
    }
}

impl Inode {
    /// Whether the backing file, now `st`, is unchanged since the last open of this
    /// inode, as far as its size, mtime and ctime tell (a ctime too recent to tell
    /// counts as a change); `st` is kept for the next one.
    ///
    /// Then the kernel may keep the pages it cached for the file (`FOPEN_KEEP_CACHE`):
    /// they are what the file held at that open, plus this mount's own writes since,
    /// which go through the same cache. Measured: a second `cat` of a 256 MiB file in a
    /// zone took 0.06-0.08 s instead of 0.25 s. Any change to the backing file, by the
    /// mount or from outside it, makes the next open drop the cache, as every open did
    /// before: what another program wrote to the backing dir is seen at the next open.
    pub fn unchanged_since_open(&self, st: &libc::stat) -> bool {
        let now = Stamp::of(st, std::time::SystemTime::now());
        let before = std::mem::replace(&mut *self.opened_as.lock(), now);
        now.is_some() && before == now
    }

    /// The backing file's `O_PATH` descriptor, reopened from its handle if it was
    /// closed to save descriptors; ESTALE if the file is gone.
    pub fn fd(&self) -> FsResult<InodeFd> {
        let mut slot = self.fd.lock();
        if let Some(fd) = &*slot {
            return Ok(InodeFd(fd.clone()));
        }
        let handle = self.handle.get().and_then(Option::as_ref).ok_or(errno::ESTALE)?;
        let mut buf = handle.to_vec();
        // SAFETY: buf holds a struct file_handle as name_to_handle_at filled it.
        let r = unsafe {
            libc::open_by_handle_at(
                self.shared.mount_fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ESTALE) => errno::ESTALE,
                _ => FsError::Io(e),
            });
        }
        // SAFETY: r is a new descriptor we own.
        let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(r) });
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        *slot = Some(fd.clone());
        Ok(InodeFd(fd))
    }

    /// The zone this entry's contents or children belong to, if any.
    pub fn zone(&self) -> Option<Arc<Zone>> {
        self.zone.read().clone()
    }

    /// The zone id, for boundary checks.
    pub fn zone_id(&self) -> Option<[u8; 16]> {
        self.zone.read().as_ref().map(|z| z.id)
    }

    /// Closes the descriptor if nothing uses it and it can be reopened.
    fn try_close(&self) -> bool {
        if self.id == ROOT || !self.closable || self.open_count.load(Ordering::Acquire) > 0 {
            return false;
        }
        let Some(mut slot) = self.fd.try_lock() else {
            return false;
        };
        let idle = slot.as_ref().filter(|fd| Arc::strong_count(fd) == 1);
        let reopenable = idle.is_some_and(|fd| self.handle.get_or_init(|| handle_of(fd.as_fd())).is_some());
        if reopenable {
            *slot = None;
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        if self.fd.get_mut().is_some() {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The file handle of the file behind `fd`, if its filesystem gives one.
fn handle_of(fd: BorrowedFd<'_>) -> Option<Box<[u8]>> {
    handle_raw(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

/// The file handle of `dir/name` (not following a final symlink; an empty name is
/// `dir` itself).
pub fn handle_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> Option<Box<[u8]>> {
    let c = std::ffi::CString::new(name.as_encoded_bytes()).ok()?;
    let flags = if name.is_empty() { libc::AT_EMPTY_PATH } else { 0 };
    handle_raw(dir.as_raw_fd(), &c, flags)
}

fn handle_raw(dir: libc::c_int, name: &std::ffi::CStr, flags: libc::c_int) -> Option<Box<[u8]>> {
    let mut buf = vec![0u8; HANDLE_BUF];
    buf[..4].copy_from_slice(&((HANDLE_BUF - 8) as u32).to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: buf has room for the header and 128 handle bytes, as declared in it.
    let r =
        unsafe { libc::name_to_handle_at(dir, name.as_ptr(), buf.as_mut_ptr().cast(), &mut mount_id, flags) };
    if r != 0 {
        return None;
    }
    let len = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    buf.truncate(8 + len.min(HANDLE_BUF - 8));
    Some(buf.into_boxed_slice())
}

/// Descriptors for cached inodes: `EZFS_INODE_FDS` if set, else half the open-file
/// limit (the rest is for open files, sockets and the kernel).
fn fd_budget() -> usize {
    if let Some(n) = std::env::var("EZFS_INODE_FDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return n.max(64);
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur as usize
    } else {
        1024
    };
    (soft / 2).max(64)
}

#[derive(Default)]
struct Tables {
    by_id: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<(u64, u64), u64>,
}

/// How many forgotten inodes' backing handles are remembered (for file handles the
/// kernel gave out, see `fs::export`): about 100 bytes each.
const REMEMBERED: usize = 1 << 16;

/// Backing file handles of forgotten inodes, by node id, oldest evicted first.
#[derive(Default)]
struct Remembered {
    by_id: HashMap<u64, Forgotten>,
    order: std::collections::VecDeque<u64>,
}

/// What is kept of a forgotten inode: its backing handle and, for a non-directory,
/// the handle of the directory it was in and its name there (a file has no way back
/// to its directory of its own).
#[derive(Clone)]
pub struct Forgotten {
    /// The backing file's handle (`name_to_handle_at`).
    pub handle: Box<[u8]>,
    /// For a non-directory: its directory's handle, and its name there.
    pub place: Option<(Box<[u8]>, std::ffi::OsString)>,
}

/// All inodes the kernel currently knows.
pub struct InodeTable {
    t: RwLock<Tables>,
    remembered: Mutex<Remembered>,
    /// Nodes between leaving the table and being remembered: a lookup of one of them
    /// waits for its record instead of finding it nowhere.
    forgetting: Mutex<std::collections::HashSet<u64>>,
    root_dev: u64,
    next_synthetic: AtomicU64,
    shared: Arc<Shared>,
}

impl InodeTable {
    /// A table holding the root (never forgotten).
    pub fn new(root_fd: OwnedFd, root_key: (u64, u64), root_zone: Option<Arc<Zone>>) -> InodeTable {
        let shared = Arc::new(Shared {
            // open_by_handle_at refuses O_PATH descriptors: a real one of the root
            mount_fd: sys::reopen(root_fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)
                .map(OwnedFd::from)
                .or_else(|_| root_fd.try_clone())
                .expect("a descriptor of the backing root"),
            open: AtomicUsize::new(0),
            budget: fd_budget(),
        });
        let root = Arc::new(Self::make(
            ROOT, root_key, true, root_fd, false, root_zone, &shared,
        ));
        root.nlookup.store(2, Ordering::Relaxed);
        let mut t = Tables::default();
        t.by_key.insert(root_key, ROOT);
        t.by_id.insert(ROOT, root);
        InodeTable {
            t: RwLock::new(t),
            remembered: Mutex::default(),
            forgetting: Mutex::default(),
            root_dev: root_key.0,
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
            shared,
        }
    }

    fn make(
        id: u64,
        key: (u64, u64),
        is_dir: bool,
        fd: OwnedFd,
        closable: bool,
        zone: Option<Arc<Zone>>,
        shared: &Arc<Shared>,
    ) -> Inode {
        shared.open.fetch_add(1, Ordering::Relaxed);
        Inode {
            id,
            key,
            is_dir,
            zone: RwLock::new(zone),
            nlookup: AtomicU64::new(1),
            enc: Mutex::new(Weak::new()),
            stale: AtomicBool::new(false),
            open_count: AtomicU32::new(0),
            opened_as: Mutex::new(None),
            fd: Mutex::new(Some(Arc::new(fd))),
            handle: std::sync::OnceLock::new(),
            diriv: std::sync::OnceLock::new(),
            closable,
            shared: shared.clone(),
        }
    }

    /// The inode with node id `id`. Every request passes here, so this is also where
    /// descriptors reopened by earlier requests are trimmed back to the budget.
    pub fn get(&self, id: u64) -> Option<Arc<Inode>> {
        self.trim();
        self.t.read().by_id.get(&id).cloned()
    }

    /// The known inode for a backing file, in the locked table `t`.
    fn find_in(t: &Tables, key: (u64, u64)) -> Option<&Arc<Inode>> {
        t.by_key.get(&key).and_then(|id| t.by_id.get(id))
    }

    /// The known inode for a backing file, with its lookup count raised (under the
    /// table lock, so that a concurrent forget cannot drop it meanwhile).
    pub fn find_and_ref(&self, key: (u64, u64)) -> Option<Arc<Inode>> {
        let t = self.t.read();
        let ino = Self::find_in(&t, key)?;
        ino.nlookup.fetch_add(1, Ordering::Relaxed);
        Some(ino.clone())
    }

    /// Opens backing file `key` anew through the `O_PATH` descriptor of its inode, which
    /// followed it through every rename; `None` if the mount does not know the inode
    /// (or its descriptor was closed and cannot be reopened).
    pub fn open_known(&self, key: (u64, u64), flags: libc::c_int) -> Option<std::io::Result<std::fs::File>> {
        let ino = Self::find_in(&self.t.read(), key)?.clone();
        let fd = ino.fd().ok()?;
        Some(sys::reopen(fd.as_fd(), flags))
    }

    /// Adds a looked-up inode (lookup count 1), or refs the one another thread added
    /// meanwhile. `make` builds the descriptor and zone only when needed.
    pub fn insert(
        &self,
        key: (u64, u64),
        is_dir: bool,
        make: impl FnOnce() -> std::io::Result<(OwnedFd, Option<Arc<Zone>>)>,
    ) -> std::io::Result<Arc<Inode>> {
        // a known inode whose descriptor was closed and cannot be reopened is a file
        // deleted behind the mount whose number now belongs to a new file
        let mut dead = None;
        if let Some(i) = self.find_and_ref(key) {
            if i.fd().is_ok() {
                self.trim();
                return Ok(i);
            }
            dead = Some(i.id);
            self.forget(i.id, 1);
        }
        let (fd, zone) = make()?;
        let ino = {
            let mut t = self.t.write();
            if let Some(&id) = t.by_key.get(&key) {
                if Some(id) != dead {
                    let i = t.by_id[&id].clone();
                    i.nlookup.fetch_add(1, Ordering::Relaxed);
                    return Ok(i);
                }
            }
            let id = if key.0 == self.root_dev && key.1 != ROOT && key.1 < SYNTHETIC_BASE && dead.is_none() {
                key.1
            } else {
                self.next_synthetic.fetch_add(1, Ordering::Relaxed)
            };
            let ino = Arc::new(Self::make(
                id,
                key,
                is_dir,
                fd,
                key.0 == self.root_dev,
                zone,
                &self.shared,
            ));
            t.by_key.insert(key, id);
            t.by_id.insert(id, ino.clone());
            ino
        };
        self.trim();
        Ok(ino)
    }

    /// Beyond the budget, closes idle descriptors down to three quarters of it.
    fn trim(&self) {
        let s = &self.shared;
        if s.open.load(Ordering::Relaxed) <= s.budget {
            return;
        }
        let target = s.budget * 3 / 4;
        let t = self.t.read();
        for ino in t.by_id.values() {
            if s.open.load(Ordering::Relaxed) <= target {
                break;
            }
            ino.try_close();
        }
    }

    /// Hands every cached inode whose zone is `old` the zone `new` (a zone root whose
    /// state changed: repaired, or broken).
    pub fn replace_zone(&self, old: &Arc<Zone>, new: &Arc<Zone>) {
        let t = self.t.read();
        for ino in t.by_id.values() {
            let mut z = ino.zone.write();
            if z.as_ref().is_some_and(|z| Arc::ptr_eq(z, old)) {
                *z = Some(new.clone());
            }
        }
    }

    /// Opens the backing file named by `handle` (from [`handle_at`]) wherever it
    /// is now; `NotFound` if it was deleted.
    pub fn open_handle(&self, handle: &[u8], flags: libc::c_int) -> std::io::Result<std::fs::File> {
        let mut buf = handle.to_vec();
        // SAFETY: buf holds a struct file_handle as name_to_handle_at filled it.
        let r = unsafe {
            libc::open_by_handle_at(
                self.shared.mount_fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                flags | libc::O_CLOEXEC,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESTALE) {
                return Err(std::io::ErrorKind::NotFound.into());
            }
            return Err(e);
        }
        // SAFETY: r is a new descriptor we own.
        Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(r) }))
    }

    /// The kernel dropped `n` references; the inode goes when none are left.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT {
            return;
        }
        let gone = {
            let mut t = self.t.write();
            let Some(ino) = t.by_id.get(&id) else { return };
            let prev = ino
                .nlookup
                .fetch_sub(n.min(ino.nlookup.load(Ordering::Relaxed)), Ordering::Relaxed);
            if prev > n {
                return;
            }
            let key = ino.key;
            if t.by_key.get(&key) == Some(&id) {
                t.by_key.remove(&key);
            }
            self.forgetting.lock().insert(id);
            t.by_id.remove(&id)
        };
        // closed outside the lock: the last close of an unlinked file frees its blocks,
        // which must not hold up every other lookup
        if let Some(ino) = &gone {
            self.remember(ino);
        }
        self.forgetting.lock().remove(&id);
        drop(gone);
    }

    /// Keeps the backing handle of a forgotten inode on the backing root's filesystem
    /// (bounded, oldest out first).
    fn remember(&self, ino: &Inode) {
        if !ino.closable || ino.id >= SYNTHETIC_BASE {
            return;
        }
        let fd = ino.fd.lock().clone();
        let handle = match (ino.handle.get(), &fd) {
            (Some(h), _) => h.clone(),
            (None, Some(fd)) => handle_of(fd.as_fd()),
            (None, None) => None,
        };
        let Some(handle) = handle else { return };
        // a file's directory, while its descriptor still says where it is
        let place = match (&fd, ino.is_dir) {
            (Some(fd), false) => sys::path_of(fd.as_fd()).ok().and_then(|p| {
                let name = p.file_name()?.to_owned();
                let dir = sys::open_at(
                    sys::at_cwd(),
                    p.parent()?.as_os_str(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .ok()?;
                Some((handle_of(dir.as_fd())?, name))
            }),
            _ => None,
        };
        let mut r = self.remembered.lock();
        if r.by_id.insert(ino.id, Forgotten { handle, place }).is_none() {
            r.order.push_back(ino.id);
            while r.order.len() > REMEMBERED {
                if let Some(old) = r.order.pop_front() {
                    r.by_id.remove(&old);
                }
            }
        }
    }

    /// What is remembered of forgotten node `id`.
    /// A node being forgotten right now is waited for: the kernel may send the
    /// lookup of a node it just evicted before its FORGET is done with.
    pub fn remembered(&self, id: u64) -> Option<Forgotten> {
        loop {
            if let Some(f) = self.remembered.lock().by_id.get(&id) {
                return Some(f.clone());
            }
            if !self.forgetting.lock().contains(&id) {
                return None;
            }
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn stat(size: i64, ctime: Duration) -> libc::stat {
        // SAFETY: libc::stat is plain integers, for which zero is a value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_size = size;
        (st.st_mtime, st.st_mtime_nsec) = (ctime.as_secs() as i64, ctime.subsec_nanos() as i64);
        (st.st_ctime, st.st_ctime_nsec) = (ctime.as_secs() as i64, ctime.subsec_nanos() as i64);
        st
    }

    #[test]
    fn a_stamp_counts_once_its_ctime_has_settled() {
        let now = Duration::from_secs(1_700_000_000);
        let at = |age_ms: i64| {
            let ctime = if age_ms >= 0 {
                now - Duration::from_millis(age_ms as u64)
            } else {
                now + Duration::from_millis(age_ms.unsigned_abs())
            };
            Stamp::of(&stat(4096, ctime), UNIX_EPOCH + now)
        };
        assert_eq!(
            at(5),
            None,
            "changed in the last tick or two: a change now could look the same"
        );
        assert_eq!(
            at(-1000),
            None,
            "a ctime in the future (clock stepped back) settles nothing"
        );
        let settled = at(25).expect("settled");
        assert_eq!(at(25), Some(settled));
        assert_ne!(at(26), Some(settled), "another ctime");
        let resized = Stamp::of(&stat(4097, now - Duration::from_millis(25)), UNIX_EPOCH + now);
        assert_ne!(resized, Some(settled), "another size");
    }
}
