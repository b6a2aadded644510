//! File handles that outlive the kernel's cache (`name_to_handle_at`/
//! `open_by_handle_at` on the mount, an NFS export of it).
//!
//! A FUSE file handle holds the node id, which is the backing inode number (stable
//! across mounts). To turn a handle back into a file the kernel asks the daemon to
//! look up "." in that node id, and ".." of a directory to connect it to the tree; it
//! may have forgotten the node long ago. The inode table remembers the backing file
//! handles of the inodes it forgets (a bounded number, see `inode`), so such a node
//! is opened again from its backing handle: a backing file deleted meanwhile (its
//! number perhaps reused) fails to open, ESTALE, rather than reaching another file.
//! The zone of a node found again this way is decided from its place in the tree,
//! up to the backing root, exactly as a lookup from the root would; a file whose
//! place cannot be told gives ESTALE, never plaintext in a zone.

use super::core::Core;
use super::error::{errno, FsResult};
use super::inode::{Inode, ROOT};
use super::types::Attr;
use crate::backdir::sys;
use crate::zone::Zone;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// Directories walked up at most to find the zone of a node found by handle.
const MAX_DEPTH: usize = 4096;

fn key_of(fd: BorrowedFd<'_>) -> FsResult<((u64, u64), libc::stat)> {
    let st = sys::stat_at(fd, OsStr::new(""))?;
    Ok(((st.st_dev, st.st_ino), st))
}

impl Core {
    /// LOOKUP of "." in node `id`: the node itself, found again from its backing
    /// handle if the kernel had forgotten it.
    pub(super) fn lookup_dot(&self, id: u64) -> FsResult<(Arc<Inode>, Attr)> {
        let r = self.lookup_dot_inner(id);
        if let Err(e) = &r {
            log::debug!("node {id} asked for by handle: {e:?}");
        }
        r
    }

    fn lookup_dot_inner(&self, id: u64) -> FsResult<(Arc<Inode>, Attr)> {
        // known, unless a FORGET takes it away meanwhile: then it is remembered
        if let Some(ino) = self.inodes.get(id).and_then(|i| self.inodes.find_and_ref(i.key)) {
            if ino.id == id {
                let attr = self.getattr_of(&ino)?;
                return Ok((ino, attr));
            }
            self.inodes.forget(ino.id, 1);
        }
        let kept = self.inodes.remembered(id).ok_or_else(|| {
            log::debug!("node {id} is asked for by handle, but it is not remembered");
            errno::ESTALE
        })?;
        let fd = OwnedFd::from(
            self.inodes
                .open_handle(&kept.handle, libc::O_PATH | libc::O_NOFOLLOW)
                .map_err(|e| {
                    log::debug!("node {id}: its backing handle does not open: {e}");
                    errno::ESTALE
                })?,
        );
        let (key, st) = key_of(fd.as_fd())?;
        if key.1 != id {
            log::debug!("node {id}: its backing handle opens inode {}", key.1);
            return Err(errno::ESTALE);
        }
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let zone = match (is_dir, &kept.place) {
            (true, _) => self.zone_by_ancestry(fd.as_fd())?,
            (false, Some((dir, name))) => self.zone_of_placed_file(dir, name, key)?,
            (false, None) => return Err(errno::ESTALE),
        };
        let ino = self.inodes.insert(key, is_dir, || Ok((fd, zone)))?;
        let attr = self.attr(&ino, &st);
        Ok((ino, attr))
    }

    /// LOOKUP of ".." in directory `dir`: its parent (the root's is the root).
    pub(super) fn lookup_dotdot(&self, dir: &Inode) -> FsResult<(Arc<Inode>, Attr)> {
        if dir.id == ROOT {
            return self.lookup_dot(ROOT);
        }
        let fd = sys::open_at(
            dir.fd()?.as_fd(),
            OsStr::new(".."),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        let (key, st) = key_of(fd.as_fd())?;
        if let Some(root) = self.inodes.get(ROOT) {
            if root.key == key {
                return self.lookup_dot(ROOT);
            }
        }
        let zone = self.zone_by_ancestry(fd.as_fd())?;
        let ino = self.inodes.insert(key, true, || Ok((fd, zone)))?;
        let attr = self.attr(&ino, &st);
        Ok((ino, attr))
    }

    /// The zone the directory `dir` is in (or roots), found by walking up to the
    /// backing root; ESTALE if the walk never meets it (not in the backing dir).
    fn zone_by_ancestry(&self, dir: BorrowedFd<'_>) -> FsResult<Option<Arc<Zone>>> {
        let root_key = self.inodes.get(ROOT).ok_or(errno::ESTALE)?.key;
        let mut cur = sys::open_at(dir, OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)?;
        for _ in 0..MAX_DEPTH {
            let (key, _) = key_of(cur.as_fd())?;
            if let Some(z) = self.dir_zone(cur.as_fd(), key) {
                return Ok(Some(z));
            }
            if key == root_key {
                return Ok(None);
            }
            let up = sys::open_at(cur.as_fd(), OsStr::new(".."), libc::O_PATH | libc::O_DIRECTORY, 0)?;
            if key_of(up.as_fd())?.0 == key {
                // the filesystem's root, above the backing root: not ours
                return Err(errno::ESTALE);
            }
            cur = up;
        }
        Err(errno::ESTALE)
    }

    /// The zone of a non-directory found by handle: that of the directory it was in
    /// (opened by its own handle), if it is still there under the same name.
    fn zone_of_placed_file(&self, dir: &[u8], name: &OsStr, key: (u64, u64)) -> FsResult<Option<Arc<Zone>>> {
        let dir = OwnedFd::from(
            self.inodes
                .open_handle(dir, libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|_| errno::ESTALE)?,
        );
        let here = sys::stat_at(dir.as_fd(), name).map_err(|_| errno::ESTALE)?;
        if (here.st_dev, here.st_ino) != key {
            return Err(errno::ESTALE);
        }
        self.zone_by_ancestry(dir.as_fd())
    }
}
