//! Operations on names: lookup, create a node, remove, rename, link. Zone boundaries
//! are enforced here (rename and link across them get EXDEV), and so is the rule
//! that no plaintext file slips into a directory while it becomes a zone (the zone
//! gate).

use super::core::Core;
use super::error::{errno, FsResult};
use super::inode::Inode;
use super::names::{At, Use};
use super::types::{Attr, DirEntry};
use crate::backdir::{sys, Caller};
use crate::zone;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

impl Core {
    /// LOOKUP of `name` in directory node `parent` (lookup count +1). "." and ".."
    /// come from the kernel turning file handles back into files (see `export`).
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Attr> {
        if name == "." {
            return Ok(self.lookup_dot(parent)?.1);
        }
        let p = self.inode(parent)?;
        if name == ".." {
            return Ok(self.lookup_dotdot(&p)?.1);
        }
        Ok(self.lookup_child(&p, name)?.1)
    }

    /// Looks up `name` in `parent`, adding the inode to the table (lookup count +1).
    pub(super) fn lookup_child(&self, parent: &Inode, name: &OsStr) -> FsResult<(Arc<Inode>, Attr)> {
        let parent_fd = parent.fd()?;
        self.lookup_at(parent, &self.at(parent, &parent_fd, name, Use::Existing)?)
    }

    /// Looks up the listed entry `e` of `parent` (by its backing name: no encryption).
    pub(super) fn lookup_listed(&self, parent: &Inode, e: &DirEntry) -> FsResult<(Arc<Inode>, Attr)> {
        let Some(backing) = &e.backing else {
            return self.lookup_child(parent, &e.name);
        };
        let parent_fd = parent.fd()?;
        self.lookup_at(parent, &At::backing(parent_fd.as_fd(), backing))
    }

    /// Looks up the backing entry `at` of `parent`, adding the inode to the table.
    pub(super) fn lookup_at(&self, parent: &Inode, at: &At<'_>) -> FsResult<(Arc<Inode>, Attr)> {
        let st = at.stat()?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if self.shared && is_dir {
            self.see_new_zone(at);
        }
        let ino = self.inodes.insert((st.st_dev, st.st_ino), is_dir, || {
            let fd = at.open_path()?;
            let own = if is_dir {
                self.dir_zone(fd.as_fd(), (st.st_dev, st.st_ino))
            } else {
                None
            };
            Ok((fd, own.or_else(|| parent.zone())))
        })?;
        let attr = self.attr(&ino, &st);
        Ok((ino, attr))
    }

    /// Gives a new entry the requester's ownership (the daemon created it as itself).
    /// In a set-group-id directory the group is the directory's, as the kernel does.
    fn chown_new(&self, caller: &Caller, parent: &Inode, ino: &Inode) -> FsResult<()> {
        let pst = self.stat(parent)?;
        let gid = if pst.st_mode & libc::S_ISGID != 0 {
            pst.st_gid
        } else {
            caller.gid
        };
        let fd = ino.fd()?;
        let before = sys::stat_at(fd.as_fd(), OsStr::new(""))?;
        sys::chown(fd.as_fd(), caller.uid, gid)?;
        // chown clears set-user/group-id bits of a regular file; the creator asked for
        // them (the kernel already dropped any the caller may not have)
        if before.st_mode & libc::S_IFMT == libc::S_IFREG && before.st_mode & 0o6000 != 0 {
            sys::chmod(fd.as_fd(), before.st_mode & 0o7777)?;
        }
        Ok(())
    }

    /// Finishes a create-like operation: lookup, ownership, fresh attributes.
    /// `at` is the entry just made: looked up by its backing name, not encrypted again.
    pub(super) fn created(
        &self,
        caller: &Caller,
        parent: &Inode,
        at: &At<'_>,
    ) -> FsResult<(Arc<Inode>, Attr)> {
        let (ino, attr) = self.lookup_at(parent, at)?;
        if (caller.uid, caller.gid) == self.me {
            return Ok((ino, attr));
        }
        self.chown_new(caller, parent, &ino)?;
        let attr = self.getattr_of(&ino)?;
        Ok((ino, attr))
    }

    /// The directory `parent`, checked for creating names in it: a writable mount.
    pub(super) fn parent_for_new(&self, parent: u64) -> FsResult<Arc<Inode>> {
        self.writable_check()?;
        let p = self.inode(parent)?;
        self.zone_made_elsewhere(&p)?;
        Ok(p)
    }

    /// MKNOD (with the creator's `umask`, see [`sys::with_umask`]).
    pub fn mknod(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> FsResult<Attr> {
        let p = self.parent_for_new(parent)?;
        let pfd = p.fd()?;
        let at = self.at(&p, &pfd, name, Use::New)?;
        let _gate = self.zone_gate.read();
        sys::with_umask(umask, |own| {
            at.mknod(if own { mode } else { mode & !umask }, rdev as u64)
        })?;
        Ok(self.created(caller, &p, &at)?.1)
    }

    /// MKDIR.
    pub fn mkdir(&self, caller: &Caller, parent: u64, name: &OsStr, mode: u32, umask: u32) -> FsResult<Attr> {
        let p = self.parent_for_new(parent)?;
        let pfd = p.fd()?;
        let at = self.at(&p, &pfd, name, Use::New)?;
        let _gate = self.zone_gate.read();
        sys::with_umask(umask, |own| {
            at.mkdir((if own { mode } else { mode & !umask }) & 0o7777)
        })?;
        Ok(self.created(caller, &p, &at)?.1)
    }

    /// SYMLINK.
    pub fn symlink(&self, caller: &Caller, parent: u64, name: &OsStr, target: &Path) -> FsResult<Attr> {
        let p = self.parent_for_new(parent)?;
        let pfd = p.fd()?;
        let at = self.at(&p, &pfd, name, Use::New)?;
        let _gate = self.zone_gate.read();
        at.symlink(target.as_os_str())?;
        Ok(self.created(caller, &p, &at)?.1)
    }

    /// UNLINK.
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.writable_check()?;
        let p = self.inode(parent)?;
        let pfd = p.fd()?;
        self.at(&p, &pfd, name, Use::Existing)?.unlink()?;
        Ok(())
    }

    /// RMDIR. A zone root goes with its marker (and a directory of a name-encrypted
    /// zone with its diriv: see `At::rmdir`), and the registry forgets it.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.writable_check()?;
        let p = self.inode(parent)?;
        let pfd = p.fd()?;
        let at = self.at(&p, &pfd, name, Use::Existing)?;
        let dir = at.open(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
        let st = sys::stat_at(dir.as_fd(), OsStr::new(""))?;
        at.rmdir()?;
        self.forget_zone_root((st.st_dev, st.st_ino));
        Ok(())
    }

    /// RENAME (`RENAME_*` flags): not across a zone boundary (EXDEV); a zone root
    /// that moves keeps its registration, and a running re-encryption job of the zone
    /// is told where the name went.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        self.writable_check()?;
        let p = self.inode(parent)?;
        let np = self.inode(newparent)?;
        let (pfd, npfd) = (p.fd()?, np.fd()?);
        let from = self.at(&p, &pfd, name, Use::Existing)?;
        self.zone_made_elsewhere(&np)?;
        let _zone_gate = self.zone_gate.read();
        let to = self.at(&np, &npfd, newname, Use::New)?;
        if zone::check_rename(p.zone_id(), np.zone_id()).is_err() {
            return Err(errno::EXDEV);
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let gate = self.rename_gate.read();
        // where the two names are, for the registry, if it has zones that could move
        let places = self
            .zones_may_move()
            .then(|| (self.rel_of(&p, from.name()), self.rel_of(&np, to.name())));
        from.rename_to(&to, flags)?;
        if let Some((Some(from), Some(to))) = places {
            self.note_moved_zones(&from, &to, exchange);
        }
        self.note_renamed(&np, newname);
        if exchange {
            self.note_renamed(&p, name);
        }
        drop(gate);
        Ok(())
    }

    /// LINK: a new name for node `ino` in `newparent`, in the same zone (else EXDEV).
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> FsResult<Attr> {
        self.writable_check()?;
        let i = self.inode(ino)?;
        let np = self.inode(newparent)?;
        let npfd = np.fd()?;
        self.zone_made_elsewhere(&np)?;
        let _gate = self.zone_gate.read();
        let to = self.at(&np, &npfd, newname, Use::New)?;
        if zone::check_link(i.zone_id(), np.zone_id()).is_err() {
            return Err(errno::EXDEV);
        }
        to.link_from(i.fd()?.as_fd())?;
        Ok(self.lookup_at(&np, &to)?.1)
    }
}
