//! The inode table: FUSE node ids to backing files.
//!
//! A node id is the backing file's inode number (so `ls -i` is stable across mounts
//! and hard links share it); the root is 1. Each known inode holds an `O_PATH`
//! descriptor of its backing file, which follows the file through renames, and the
//! zone it belongs to, fixed at lookup (renames never change a zone: crossing one is
//! refused).

use super::encfile::EncFile;
use crate::zone::Zone;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Node id of the mount's root.
pub const ROOT: u64 = 1;
/// Node ids at or above this are made up (files on other devices, or backing inode 1).
const SYNTHETIC_BASE: u64 = 1 << 63;

/// One known backing file.
pub struct Inode {
    pub id: u64,
    pub fd: OwnedFd,
    /// (st_dev, st_ino) of the backing file.
    pub key: (u64, u64),
    pub is_dir: bool,
    /// The zone this entry's contents (file) or children (directory) belong to.
    pub zone: RwLock<Option<Arc<Zone>>>,
    nlookup: AtomicU64,
    /// Shared state of an encrypted regular file while any handle has it open.
    pub enc: Mutex<Weak<EncFile>>,
    /// `zone reencrypt --data` replaced this backing file by a new one under the same
    /// name; opening this inode gives ESTALE, so the kernel looks the name up again.
    /// (The descriptor pins the old inode number, so it cannot be reused meanwhile.)
    pub stale: AtomicBool,
}

impl Inode {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn zone(&self) -> Option<Arc<Zone>> {
        self.zone.read().clone()
    }

    /// The zone id, for boundary checks.
    pub fn zone_id(&self) -> Option<[u8; 16]> {
        self.zone.read().as_ref().map(|z| z.id)
    }
}

#[derive(Default)]
struct Tables {
    by_id: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<(u64, u64), u64>,
}

/// All inodes the kernel currently knows.
pub struct InodeTable {
    t: RwLock<Tables>,
    root_dev: u64,
    next_synthetic: AtomicU64,
}

impl InodeTable {
    /// A table holding the root (never forgotten).
    pub fn new(root_fd: OwnedFd, root_key: (u64, u64), root_zone: Option<Arc<Zone>>) -> InodeTable {
        let root = Arc::new(Inode {
            id: ROOT,
            fd: root_fd,
            key: root_key,
            is_dir: true,
            zone: RwLock::new(root_zone),
            nlookup: AtomicU64::new(2),
            enc: Mutex::new(Weak::new()),
            stale: AtomicBool::new(false),
        });
        let mut t = Tables::default();
        t.by_key.insert(root_key, ROOT);
        t.by_id.insert(ROOT, root);
        InodeTable {
            t: RwLock::new(t),
            root_dev: root_key.0,
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
        }
    }

    pub fn get(&self, id: u64) -> Option<Arc<Inode>> {
        self.t.read().by_id.get(&id).cloned()
    }

    /// The known inode for a backing file, with its lookup count raised.
    pub fn find_and_ref(&self, key: (u64, u64)) -> Option<Arc<Inode>> {
        let t = self.t.read();
        let ino = t.by_key.get(&key).and_then(|id| t.by_id.get(id))?;
        ino.nlookup.fetch_add(1, Ordering::Relaxed);
        Some(ino.clone())
    }

    /// Adds a looked-up inode (lookup count 1), or refs the one another thread added
    /// meanwhile. `make` builds the descriptor and zone only when needed.
    pub fn insert(
        &self,
        key: (u64, u64),
        is_dir: bool,
        make: impl FnOnce() -> std::io::Result<(OwnedFd, Option<Arc<Zone>>)>,
    ) -> std::io::Result<Arc<Inode>> {
        if let Some(i) = self.find_and_ref(key) {
            return Ok(i);
        }
        let (fd, zone) = make()?;
        let mut t = self.t.write();
        if let Some(id) = t.by_key.get(&key) {
            let i = t.by_id[id].clone();
            i.nlookup.fetch_add(1, Ordering::Relaxed);
            return Ok(i);
        }
        let id = if key.0 == self.root_dev && key.1 != ROOT && key.1 < SYNTHETIC_BASE {
            key.1
        } else {
            self.next_synthetic.fetch_add(1, Ordering::Relaxed)
        };
        let ino = Arc::new(Inode {
            id,
            fd,
            key,
            is_dir,
            zone: RwLock::new(zone),
            nlookup: AtomicU64::new(1),
            enc: Mutex::new(Weak::new()),
            stale: AtomicBool::new(false),
        });
        t.by_key.insert(key, id);
        t.by_id.insert(id, ino.clone());
        Ok(ino)
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
            t.by_id.remove(&id)
        };
        // closed outside the lock: the last close of an unlinked file frees its blocks,
        // which must not hold up every other lookup
        drop(gone);
    }
}
